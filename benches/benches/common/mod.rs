//! What the bench targets share: the workloads' sizes, the runtime, a latch, percentile and RSS
//! helpers, and one module per contender implementing every workload the same way.
//!
//! Each bench target (`core`, `latency`, `spawn`, `guard`) includes this module and uses a part
//! of it, hence the `dead_code` allowance below.
//!
//! Every contender module exposes the same functions (collected in [`CONTENDERS`]):
//!
//! - `tell()`, `ask()`, `fanout()`: set up the actors on a fresh runtime (or actix system)
//!   and return a [`Runner`], a closure that runs `iters` iterations of the workload and returns
//!   the time the producer measured. Dropping the runner tears everything down.
//! - `ask_latency(n)` and `ask_latency_loaded(n)`: `n` timed round trips, one by one; the second
//!   with a background producer keeping another actor's mailbox full meanwhile.
//! - `spawn_idle(n)`: spawns `n` idle actors and reports the time and the RSS they took.
#![allow(dead_code)]

pub(crate) mod actix_fw;
pub(crate) mod ed;
pub(crate) mod kameo_fw;
pub(crate) mod monolith;
pub(crate) mod ractor_fw;
pub(crate) mod tokio_raw;
pub(crate) mod xtra_fw;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// Messages per iteration of `tell_1to1`.
pub(crate) const TELL_N: u64 = 100_000;
/// Events per iteration of `fanout_1to8`.
pub(crate) const FAN_N: u64 = 10_000;
/// Subscribers in `fanout_1to8`.
pub(crate) const FAN_SUBS: usize = 8;
/// Mailbox / channel capacity wherever the framework has bounded mailboxes.
pub(crate) const CAPACITY: usize = 1024;
/// Mailbox capacity of the idle actors of `spawn_idle`, where the framework has bounded ones.
pub(crate) const IDLE_CAPACITY: usize = 16;
/// Worker threads of the tokio runtime every tokio-based contender runs on.
pub(crate) const WORKERS: usize = 2;

/// Runs `iters` iterations of a workload and returns the time the producer measured.
pub(crate) type Runner = Box<dyn FnMut(u64) -> Duration>;

/// A tokio multi-thread runtime with [`WORKERS`] workers.
pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `body` as a task on `rt` (not on the calling thread) and returns its output.
pub(crate) fn on_runtime<F>(rt: &Runtime, body: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(async { tokio::spawn(body).await.expect("bench task panicked") })
}

/// One contender: its name in the reports and its implementation of every workload.
pub(crate) struct Contender {
    /// Benchmark id in criterion and key in the JSON reports.
    pub(crate) name: &'static str,
    /// `tell_1to1`.
    pub(crate) tell: fn() -> Runner,
    /// `ask_round_trip`.
    pub(crate) ask: fn() -> Runner,
    /// `fanout_1to8`.
    pub(crate) fanout: fn() -> Runner,
    /// `n` round-trip latencies in ns, unloaded.
    pub(crate) ask_latency: fn(usize) -> Vec<u64>,
    /// `n` round-trip latencies in ns to actor A while actor B is saturated.
    pub(crate) ask_latency_loaded: fn(usize) -> Loaded,
    /// Spawns `n` idle actors.
    pub(crate) spawn_idle: fn(usize) -> SpawnReport,
}

/// Every contender, eventdriven first.
pub(crate) const CONTENDERS: &[Contender] = &[
    Contender {
        name: "eventdriven",
        tell: ed::tell,
        ask: ed::ask,
        fanout: ed::fanout,
        ask_latency: ed::ask_latency,
        ask_latency_loaded: ed::ask_latency_loaded,
        spawn_idle: ed::spawn_idle,
    },
    Contender {
        name: "tokio",
        tell: tokio_raw::tell,
        ask: tokio_raw::ask,
        fanout: tokio_raw::fanout,
        ask_latency: tokio_raw::ask_latency,
        ask_latency_loaded: tokio_raw::ask_latency_loaded,
        spawn_idle: tokio_raw::spawn_idle,
    },
    Contender {
        name: "kameo",
        tell: kameo_fw::tell,
        ask: kameo_fw::ask,
        fanout: kameo_fw::fanout,
        ask_latency: kameo_fw::ask_latency,
        ask_latency_loaded: kameo_fw::ask_latency_loaded,
        spawn_idle: kameo_fw::spawn_idle,
    },
    Contender {
        name: "actix",
        tell: actix_fw::tell,
        ask: actix_fw::ask,
        fanout: actix_fw::fanout,
        ask_latency: actix_fw::ask_latency,
        ask_latency_loaded: actix_fw::ask_latency_loaded,
        spawn_idle: actix_fw::spawn_idle,
    },
    Contender {
        name: "ractor",
        tell: ractor_fw::tell,
        ask: ractor_fw::ask,
        fanout: ractor_fw::fanout,
        ask_latency: ractor_fw::ask_latency,
        ask_latency_loaded: ractor_fw::ask_latency_loaded,
        spawn_idle: ractor_fw::spawn_idle,
    },
    Contender {
        name: "xtra",
        tell: xtra_fw::tell,
        ask: xtra_fw::ask,
        fanout: xtra_fw::fanout,
        ask_latency: xtra_fw::ask_latency,
        ask_latency_loaded: xtra_fw::ask_latency_loaded,
        spawn_idle: xtra_fw::spawn_idle,
    },
];

/// The contender called `name`.
pub(crate) fn contender(name: &str) -> Option<&'static Contender> {
    CONTENDERS.iter().find(|c| c.name == name)
}

// ---------------------------------------------------------------------------------------------
// Latch
// ---------------------------------------------------------------------------------------------

/// Counts the consumers that finished an iteration and wakes the producer when all did.
/// Also sums what they saw, so the producer can check that nothing was skipped.
pub(crate) struct Latch {
    parties: usize,
    arrived: AtomicUsize,
    seen: AtomicU64,
    notify: Notify,
}

impl Latch {
    /// A latch waiting for `parties` arrivals.
    pub(crate) fn new(parties: usize) -> Arc<Self> {
        Arc::new(Self {
            parties,
            arrived: AtomicUsize::new(0),
            seen: AtomicU64::new(0),
            notify: Notify::new(),
        })
    }

    /// One party is done and saw `seen` messages.
    pub(crate) fn arrive(&self, seen: u64) {
        self.seen.fetch_add(seen, Ordering::Relaxed);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            // Stores a permit if the producer is not waiting yet.
            self.notify.notify_one();
        }
    }

    /// Waits until every party arrived, resets, and returns the total they saw.
    pub(crate) async fn wait(&self) -> u64 {
        self.notify.notified().await;
        debug_assert_eq!(self.arrived.load(Ordering::Acquire), self.parties);
        self.arrived.store(0, Ordering::Relaxed);
        self.seen.swap(0, Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Latency under load
// ---------------------------------------------------------------------------------------------

/// Result of `ask_latency_loaded`: the round trips to A, and what the background producer got
/// through to B meanwhile (so a contender cannot look good by starving the load).
pub(crate) struct Loaded {
    /// Round-trip latencies to A, in ns.
    pub(crate) samples: Vec<u64>,
    /// Messages B handled while the round trips ran.
    pub(crate) load_handled: u64,
    /// How long the round trips took in total.
    pub(crate) elapsed: Duration,
}

/// Round trips not recorded before the timed ones (warm-up).
pub(crate) const LATENCY_WARMUP: usize = 10_000;

/// Times `n` round trips made by `round_trip(i)`, after [`LATENCY_WARMUP`] untimed ones.
pub(crate) async fn time_round_trips<F, Fut>(n: usize, mut round_trip: F) -> Vec<u64>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = u64>,
{
    for i in 0..LATENCY_WARMUP {
        std::hint::black_box(round_trip(i as u64).await);
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        std::hint::black_box(round_trip(i as u64).await);
        samples.push(start.elapsed().as_nanos() as u64);
    }
    samples
}

/// Counter the saturated actor B bumps per message, read around the timed round trips.
pub(crate) static LOAD_HANDLED: AtomicU64 = AtomicU64::new(0);

/// Runs `timed` (the round trips to A) while the load is running and reports what B handled.
pub(crate) async fn under_load<Fut>(timed: Fut) -> Loaded
where
    Fut: Future<Output = Vec<u64>>,
{
    // Let the load fill B's mailbox first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = LOAD_HANDLED.load(Ordering::Relaxed);
    let start = Instant::now();
    let samples = timed.await;
    let elapsed = start.elapsed();
    let load_handled = LOAD_HANDLED.load(Ordering::Relaxed) - before;
    Loaded {
        samples,
        load_handled,
        elapsed,
    }
}

/// Percentiles of a set of latencies, in ns.
pub(crate) struct Percentiles {
    pub(crate) p50: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    pub(crate) mean: f64,
}

impl Percentiles {
    /// Sorts `samples` and reads the percentiles off them (nearest rank).
    pub(crate) fn of(mut samples: Vec<u64>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: *samples.last().expect("non-empty"),
            mean: samples.iter().sum::<u64>() as f64 / samples.len() as f64,
        }
    }

    /// The percentiles as a JSON object (no serde in this package).
    pub(crate) fn json(&self) -> String {
        format!(
            "{{\"p50\": {}, \"p90\": {}, \"p99\": {}, \"p999\": {}, \"max\": {}, \"mean\": {:.1}}}",
            self.p50, self.p90, self.p99, self.p999, self.max, self.mean
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Spawning idle actors
// ---------------------------------------------------------------------------------------------

/// What `spawn_idle` measured.
pub(crate) struct SpawnReport {
    /// Actors spawned.
    pub(crate) count: usize,
    /// From the first spawn call until the last one returned (eventdriven: `build().await`).
    pub(crate) spawn: Duration,
    /// From the first spawn call until every actor handled one `Ping`.
    pub(crate) ready: Duration,
    /// Resident set size before spawning, bytes.
    pub(crate) rss_before: u64,
    /// Resident set size once every actor handled its `Ping`, bytes.
    pub(crate) rss_after: u64,
}

impl SpawnReport {
    /// The report as one line of JSON.
    pub(crate) fn json(&self, name: &str) -> String {
        format!(
            "{{\"contender\": \"{name}\", \"count\": {}, \"spawn_ns\": {}, \"ready_ns\": {}, \
             \"rss_before\": {}, \"rss_after\": {}}}",
            self.count,
            self.spawn.as_nanos(),
            self.ready.as_nanos(),
            self.rss_before,
            self.rss_after
        )
    }
}

/// Idle actors that handled their `Ping` (each contender runs in its own process).
pub(crate) static PINGED: AtomicUsize = AtomicUsize::new(0);
/// Woken when [`PINGED`] reaches the target of [`wait_pinged`].
pub(crate) static ALL_PINGED: Notify = Notify::const_new();
/// The number of pings [`pinged`] waits for.
static PING_TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Called by an idle actor's handler.
pub(crate) fn pinged() {
    if PINGED.fetch_add(1, Ordering::AcqRel) + 1 == PING_TARGET.load(Ordering::Acquire) {
        ALL_PINGED.notify_one();
    }
}

/// Sets the number of pings to wait for; call before spawning.
pub(crate) fn expect_pings(n: usize) {
    PINGED.store(0, Ordering::Release);
    PING_TARGET.store(n, Ordering::Release);
}

/// Waits until [`expect_pings`]'s number of actors called [`pinged`].
pub(crate) async fn wait_pinged() {
    ALL_PINGED.notified().await;
    assert_eq!(
        PINGED.load(Ordering::Acquire),
        PING_TARGET.load(Ordering::Acquire)
    );
}

/// Resident set size of this process in bytes (`/proc/self/statm`, 4 KiB pages).
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("statm resident field");
    resident * 4096
}

/// Where the non-criterion targets write their JSON: `$CARGO_TARGET_DIR/ed-bench`, or beside
/// the running executable's target directory (`target/release/deps/<bench>` → `target`).
pub(crate) fn report_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .expect("target directory");
    let dir = target.join("ed-bench");
    std::fs::create_dir_all(&dir).expect("create report directory");
    dir
}
