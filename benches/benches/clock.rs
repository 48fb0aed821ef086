//! The cost of stamping a message: `Timestamp::now()` (the time-stamp counter scaled from a
//! per-thread anchor, where the kernel keeps time with it) against `SystemTime::now()`, which
//! it replaces, and a whole fresh `Metadata` (id and timestamp), which every send makes.
//!
//! ```text
//! cargo bench -p eventdriven-benches --bench clock
//! ```

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::Criterion;
use eventdriven::message::{Metadata, Timestamp};

fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("SystemTime::now", |b| {
        b.iter(|| black_box(Timestamp::from_system_time(SystemTime::now())));
    });
    group.bench_function("Timestamp::now", |b| b.iter(|| black_box(Timestamp::now())));
    group.bench_function("Metadata::new", |b| b.iter(|| black_box(Metadata::new())));
    group.finish();
}

fn main() {
    // `criterion_group!`/`criterion_main!` written out: they generate an undocumented `pub fn`.
    let mut c = Criterion::default().configure_from_args();
    clock(&mut c);
    c.final_summary();
}
