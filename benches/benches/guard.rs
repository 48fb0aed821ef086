//! Regression guard: eventdriven's `tell` throughput against raw tokio's in the same process,
//! quick enough for CI (a few seconds), and a non-zero exit if eventdriven falls below a
//! fraction of tokio.
//!
//! Both sides run the `tell_1to1` workload of the `core` bench (100 000 messages to one actor
//! with a bounded mailbox of 1024, then a flush round trip). After one untimed warm-up round
//! each, 5 rounds alternate eventdriven and tokio, each round running the workload for about
//! `ED_GUARD_ROUND_MS` (default 300) ms; the median time per message of each side's rounds is
//! compared. Comparing against tokio in the same process, alternated, cancels most of a shared
//! machine's noise, which absolute thresholds would not survive.
//!
//! ```text
//! cargo bench -p eventdriven-benches --bench guard
//! ED_GUARD_MIN_RATIO=0.25 cargo bench -p eventdriven-benches --bench guard
//! ```
//!
//! ratio = tokio time per message / eventdriven time per message (1.0 = as fast as tokio).
//! Exits with status 1 when the ratio is below `ED_GUARD_MIN_RATIO` (default 0.5) in each of
//! `ED_GUARD_ATTEMPTS` (default 3) attempts: a busy moment of a shared machine can sink one
//! attempt, a regression sinks them all. `scripts/test.sh` (the README's test command, CI)
//! runs it after the tests.

mod common;

use std::time::{Duration, Instant};

use common::{ed, tokio_raw, Runner, TELL_N};

const ROUNDS: usize = 5;

/// Runs whole iterations for about `budget`; returns the measured time per message in ns.
fn round(run: &mut Runner, budget: Duration) -> f64 {
    let wall = Instant::now();
    let (mut measured, mut iters) = (Duration::ZERO, 0u64);
    while iters == 0 || wall.elapsed() < budget {
        measured += run(1);
        iters += 1;
    }
    measured.as_nanos() as f64 / (iters * TELL_N) as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One attempt: warm-up, then `ROUNDS` alternating rounds; the medians per message.
fn attempt(ours: &mut Runner, base: &mut Runner, budget: Duration) -> (f64, f64) {
    round(ours, budget / 3);
    round(base, budget / 3);
    let (mut ed_ns, mut tokio_ns) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        // Alternate which side goes first, so neither always runs on a warmer machine.
        if i % 2 == 0 {
            ed_ns.push(round(ours, budget));
            tokio_ns.push(round(base, budget));
        } else {
            tokio_ns.push(round(base, budget));
            ed_ns.push(round(ours, budget));
        }
        println!(
            "guard round {}: eventdriven {:.1} ns/msg, tokio {:.1} ns/msg",
            i + 1,
            ed_ns[i],
            tokio_ns[i]
        );
    }
    (median(ed_ns), median(tokio_ns))
}

fn main() {
    let min_ratio = env_f64("ED_GUARD_MIN_RATIO", 0.5);
    let budget = Duration::from_millis(env_f64("ED_GUARD_ROUND_MS", 300.0) as u64);
    let attempts = env_f64("ED_GUARD_ATTEMPTS", 3.0).max(1.0) as usize;
    let mut ours = ed::tell();
    let mut base = tokio_raw::tell();
    let mut worst = None;
    for n in 1..=attempts {
        let (ed_median, tokio_median) = attempt(&mut ours, &mut base, budget);
        let ratio = tokio_median / ed_median;
        println!(
            "guard: tell_1to1 median of {ROUNDS} rounds: eventdriven {ed_median:.1} ns/msg, \
             tokio {tokio_median:.1} ns/msg, ratio (tokio/eventdriven) {ratio:.2}, minimum {min_ratio:.2}"
        );
        if ratio >= min_ratio {
            println!("guard: OK");
            return;
        }
        if n < attempts {
            println!("guard: below the minimum; attempt {} of {attempts}", n + 1);
        }
        worst = Some((ratio, ed_median, tokio_median));
    }
    let (ratio, ed_median, tokio_median) = worst.expect("at least one attempt");
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!! PERFORMANCE REGRESSION: eventdriven `tell` runs at {ratio:.2}x of raw tokio,");
    eprintln!(
        "!! below the {min_ratio:.2}x minimum in all {attempts} attempts \
         (last: {ed_median:.1} vs {tokio_median:.1} ns per message)."
    );
    eprintln!("!! Run `scripts/bench.sh tell_1to1` for the full picture (BENCHMARKS.md).");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    std::process::exit(1);
}
