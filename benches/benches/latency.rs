//! Round-trip latency percentiles (p50, p90, p99, p99.9, max) of every contender, which
//! criterion's means and medians of batches do not show.
//!
//! For each contender: [`LATENCY_WARMUP`] untimed round trips, then `ED_LATENCY_N` (default
//! 100 000) round trips timed one by one (`Instant` around each `send`/`ask`/`call`) —
//!
//! - **unloaded**: nothing else runs;
//! - **loaded**: a background producer keeps a second actor B saturated (eventdriven:
//!   `publish`; the others: their tell into B's bounded mailbox; ractor and actix, whose tell
//!   has no back-pressure: windows of 1024 tells followed by one round trip to B) while the
//!   round trips go to actor A. B's throughput meanwhile is reported too.
//!
//! The whole thing is repeated `ED_LATENCY_ROUNDS` (default 3) times, contenders interleaved;
//! the report gives, per percentile, the median over the rounds. Arguments that are not flags
//! select contenders by name. Results go to stdout and `$CARGO_TARGET_DIR/ed-bench/latency.json`,
//! which `scripts/bench_table.py` reads.
//!
//! ```text
//! cargo bench -p eventdriven-benches --bench latency [-- eventdriven tokio]
//! ```

mod common;

use std::fmt::Write as _;

use common::{actix_fw, report_dir, Percentiles, CONTENDERS, LATENCY_WARMUP};

/// Name of the extra actix variant with requester and actor on one thread.
const SAME_THREAD: &str = "actix_same_thread";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median of `values` (upper median for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Rounds {
    unloaded: Vec<Percentiles>,
    loaded: Vec<Percentiles>,
    load_rate: Vec<f64>,
}

/// Reads one statistic off a [`Percentiles`].
type Field = fn(&Percentiles) -> f64;

fn pick(rounds: &[Percentiles], field: Field) -> f64 {
    median(rounds.iter().map(field).collect())
}

fn percentile_json(rounds: &[Percentiles]) -> String {
    let fields: [(&str, Field); 6] = [
        ("p50", |p| p.p50 as f64),
        ("p90", |p| p.p90 as f64),
        ("p99", |p| p.p99 as f64),
        ("p999", |p| p.p999 as f64),
        ("max", |p| p.max as f64),
        ("mean", |p| p.mean),
    ];
    let mut out = String::from("{");
    for (i, (name, field)) in fields.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(out, "{sep}\"{name}\": {:.1}", pick(rounds, *field)).expect("write");
    }
    let per_round: Vec<String> = rounds.iter().map(Percentiles::json).collect();
    write!(out, ", \"rounds\": [{}]}}", per_round.join(", ")).expect("write");
    out
}

fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1000.0)
}

fn main() {
    let n = env_usize("ED_LATENCY_N", 100_000);
    let rounds = env_usize("ED_LATENCY_ROUNDS", 3).max(1);
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let contenders: Vec<_> = CONTENDERS
        .iter()
        .filter(|c| wanted.is_empty() || wanted.iter().any(|w| w == c.name))
        .collect();
    eprintln!(
        "latency: {} contenders x {rounds} rounds x ({LATENCY_WARMUP} warm-up + {n} timed) \
         round trips, unloaded and loaded",
        contenders.len()
    );

    // actix with requester and actor on one thread, unloaded only (see `core`'s ask group).
    let same_thread_wanted = contenders.iter().any(|c| c.name == "actix");
    let mut same_thread: Vec<Percentiles> = Vec::new();
    let mut results: Vec<Rounds> = contenders
        .iter()
        .map(|_| Rounds {
            unloaded: Vec::new(),
            loaded: Vec::new(),
            load_rate: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        for (contender, result) in contenders.iter().zip(&mut results) {
            let unloaded = Percentiles::of((contender.ask_latency)(n));
            let loaded = (contender.ask_latency_loaded)(n);
            let rate = loaded.load_handled as f64 / loaded.elapsed.as_secs_f64();
            let loaded_p = Percentiles::of(loaded.samples);
            eprintln!(
                "  round {}: {:<12} unloaded p50 {:>9} p99 {:>9} | loaded p50 {:>9} p99 {:>9}, \
                 B handled {:.2} M msg/s",
                round + 1,
                contender.name,
                us(unloaded.p50 as f64),
                us(unloaded.p99 as f64),
                us(loaded_p.p50 as f64),
                us(loaded_p.p99 as f64),
                rate / 1e6
            );
            result.unloaded.push(unloaded);
            result.loaded.push(loaded_p);
            result.load_rate.push(rate);
        }
        if same_thread_wanted {
            let unloaded = Percentiles::of(actix_fw::ask_latency_same_thread(n));
            eprintln!(
                "  round {}: {:<12} unloaded p50 {:>9} p99 {:>9}",
                round + 1,
                SAME_THREAD,
                us(unloaded.p50 as f64),
                us(unloaded.p99 as f64),
            );
            same_thread.push(unloaded);
        }
    }

    println!();
    println!("Round-trip latency, median over {rounds} rounds of {n} round trips each:");
    println!();
    println!(
        "| contender | p50 | p90 | p99 | p99.9 | loaded p50 | loaded p99 | loaded p99.9 \
         | B's load (msg/s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut json = Vec::new();
    for (contender, result) in contenders.iter().zip(&results) {
        let u = |f: Field| us(pick(&result.unloaded, f));
        let l = |f: Field| us(pick(&result.loaded, f));
        let rate = median(result.load_rate.clone());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} M |",
            contender.name,
            u(|p| p.p50 as f64),
            u(|p| p.p90 as f64),
            u(|p| p.p99 as f64),
            u(|p| p.p999 as f64),
            l(|p| p.p50 as f64),
            l(|p| p.p99 as f64),
            l(|p| p.p999 as f64),
            rate / 1e6
        );
        json.push(format!(
            "\"{}\": {{\"unloaded\": {}, \"loaded\": {}, \"load_msgs_per_s\": {:.0}}}",
            contender.name,
            percentile_json(&result.unloaded),
            percentile_json(&result.loaded),
            rate
        ));
    }
    if !same_thread.is_empty() {
        let u = |f: Field| us(pick(&same_thread, f));
        println!(
            "| {SAME_THREAD} | {} | {} | {} | {} | – | – | – | – |",
            u(|p| p.p50 as f64),
            u(|p| p.p90 as f64),
            u(|p| p.p99 as f64),
            u(|p| p.p999 as f64),
        );
        json.push(format!(
            "\"{SAME_THREAD}\": {{\"unloaded\": {}}}",
            percentile_json(&same_thread)
        ));
    }
    let path = report_dir().join("latency.json");
    let body = format!(
        "{{\"round_trips\": {n}, \"rounds\": {rounds}, \"contenders\": {{{}}}}}\n",
        json.join(", ")
    );
    std::fs::write(&path, body).expect("write latency.json");
    println!();
    println!("(written to {})", path.display());
}
