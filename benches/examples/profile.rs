//! Runs one contender's workload for a fixed number of iterations, for a profiler:
//!
//! ```text
//! cargo build --release -p eventdriven-benches --example profile
//! valgrind --tool=callgrind target/release/examples/profile eventdriven tell 3
//! perf record -e cpu-clock target/release/examples/profile eventdriven ask 2000000
//! ```
//!
//! Arguments: the contender (`eventdriven`, `tokio`), the workload (`tell`: iterations of
//! 100 000 messages; `ask`: round trips; `fanout`: iterations of 10 000 events to 8
//! subscribers), and how many iterations. Instruction counts from callgrind are stable run to
//! run on a noisy machine, unlike times.

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let who = args.next().unwrap_or_else(|| "eventdriven".into());
    let workload = args.next().unwrap_or_else(|| "tell".into());
    let iters: u64 = args.next().map_or(3, |n| n.parse().expect("iterations"));
    let (mut run, per_iter) = match (who.as_str(), workload.as_str()) {
        ("eventdriven", "tell") => (common::ed::tell(), common::TELL_N),
        ("tokio", "tell") => (common::tokio_raw::tell(), common::TELL_N),
        ("eventdriven", "ask") => (common::ed::ask(), 1),
        ("tokio", "ask") => (common::tokio_raw::ask(), 1),
        ("eventdriven", "fanout") => (
            common::ed::fanout(),
            common::FAN_N * common::FAN_SUBS as u64,
        ),
        ("tokio", "fanout") => (
            common::tokio_raw::fanout(),
            common::FAN_N * common::FAN_SUBS as u64,
        ),
        (who, workload) => panic!(
            "unknown contender or workload {who} {workload}: eventdriven|tokio tell|ask|fanout"
        ),
    };
    let took = run(iters);
    println!(
        "{who} {workload}: {iters} x {per_iter} messages in {took:?} ({:.1} ns/msg)",
        took.as_nanos() as f64 / (iters * per_iter) as f64
    );
}
