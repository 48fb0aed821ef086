//! Runs one contender's `tell_1to1` workload for a fixed number of iterations, for a profiler:
//!
//! ```text
//! cargo build --release -p eventdriven-benches --example profile_tell
//! valgrind --tool=callgrind target/release/examples/profile_tell eventdriven 3
//! ```
//!
//! The first argument picks the contender (`eventdriven`, `tokio`), the second how many
//! iterations of 100 000 messages to run. Instruction counts from callgrind are stable run to
//! run on a noisy machine, unlike times.

#[path = "../benches/common/mod.rs"]
#[allow(dead_code)]
mod common;

fn main() {
    let mut args = std::env::args().skip(1);
    let who = args.next().unwrap_or_else(|| "eventdriven".into());
    let iters: u64 = args.next().map_or(3, |n| n.parse().expect("iterations"));
    let mut run = match who.as_str() {
        "eventdriven" => common::ed::tell(),
        "tokio" => common::tokio_raw::tell(),
        other => panic!("unknown contender {other}: eventdriven or tokio"),
    };
    let took = run(iters);
    println!(
        "{who}: {iters} x {} messages in {took:?} ({:.1} ns/msg)",
        common::TELL_N,
        took.as_nanos() as f64 / (iters * common::TELL_N) as f64
    );
}
