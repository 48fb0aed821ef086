//! Throughput and per-op time of eventdriven beside raw tokio and other actor frameworks
//! (kameo, actix, ractor, xtra), all contenders of a workload in one criterion group, measured
//! in the same run, so the ratios can be read straight off the report (`scripts/bench_table.py`
//! prints them).
//!
//! | group            | what every contender does per iteration                                |
//! |------------------|------------------------------------------------------------------------|
//! | `tell_1to1`      | 100 000 fire-and-forget messages to one actor, then a flush round trip  |
//! | `ask_round_trip` | one request awaiting its reply                                          |
//! | `fanout_1to8`    | 10 000 events to 8 receivers (pub/sub where the framework has it), then a done marker each receiver acknowledges |
//! | `monolith_10k`   | 10 000 orders through 5 actors (commands, events, queries): eventdriven and hand-wired tokio only |
//!
//! How each framework is driven (mailbox sizes, which have pub/sub, actix's own system) is told
//! in the contender modules under `common/` and in `BENCHMARKS.md`.
//!
//! `tell_1to1` and `ask_round_trip` also hold a control, `tokio_envelope`: the plain tokio
//! consumer with every message wrapped in eventdriven's `Envelope`, which is what an actor's
//! mailbox slot carries; it tells the cost of the envelope from the cost of the rest.
//! `fanout_1to8` holds `tokio_broadcast`: one `tokio::sync::broadcast` channel sized to hold a
//! whole iteration (broadcast has no backpressure; a receiver that lags loses events).
//! `ask_round_trip` also holds `actix_same_thread`: actix with requester and actor on one
//! thread, as against `actix`'s two (system thread and arbiter), whose round trips pay two
//! cross-thread wake-ups.
//!
//! An iteration ends only when the consumers have handled all of it (the flush reply carries
//! the count seen; fan-out receivers count down a latch with what they saw), and the counts are
//! asserted, so no contender can skip work. Timing uses `iter_custom`: the producer measures
//! itself, so setting up and tearing down stay outside the measurement.

mod common;

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};

use common::{actix_fw, monolith, tokio_raw, Runner, CONTENDERS, FAN_N, FAN_SUBS, TELL_N};

/// Benchmarks `make()`'s runner as `id` in `group`, then tears it down.
fn bench(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, make: fn() -> Runner) {
    let mut run = make();
    group.bench_function(id, |b| b.iter_custom(&mut run));
    drop(run);
}

fn tell(c: &mut Criterion) {
    let mut group = c.benchmark_group("tell_1to1");
    group.throughput(Throughput::Elements(TELL_N));
    group.sampling_mode(SamplingMode::Flat);
    for contender in CONTENDERS {
        bench(&mut group, contender.name, contender.tell);
    }
    bench(&mut group, "tokio_envelope", tokio_raw::tell_envelope);
    group.finish();
}

fn ask(c: &mut Criterion) {
    let mut group = c.benchmark_group("ask_round_trip");
    group.throughput(Throughput::Elements(1));
    for contender in CONTENDERS {
        bench(&mut group, contender.name, contender.ask);
    }
    bench(&mut group, "tokio_envelope", tokio_raw::ask_envelope);
    bench(&mut group, "actix_same_thread", actix_fw::ask_same_thread);
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_1to8");
    group.throughput(Throughput::Elements(FAN_N * FAN_SUBS as u64));
    group.sampling_mode(SamplingMode::Flat);
    for contender in CONTENDERS {
        bench(&mut group, contender.name, contender.fanout);
    }
    bench(&mut group, "tokio_broadcast", tokio_raw::fanout_broadcast);
    group.finish();
}

fn monolith(c: &mut Criterion) {
    let mut group = c.benchmark_group("monolith_10k");
    group.throughput(Throughput::Elements(monolith::ORDERS));
    group.sampling_mode(SamplingMode::Flat);
    bench(&mut group, "eventdriven", monolith::eventdriven);
    bench(&mut group, "tokio", monolith::tokio);
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

fn main() {
    // What `criterion_group!`/`criterion_main!` expand to, written out: the macros generate an
    // undocumented `pub fn`, which the workspace's `missing_docs` lint rejects.
    let mut c = config().configure_from_args();
    tell(&mut c);
    ask(&mut c);
    fan_out(&mut c);
    monolith(&mut c);
    c.final_summary();
}
