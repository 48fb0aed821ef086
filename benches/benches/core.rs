//! Core hot paths of eventdriven beside raw tokio channels doing the same work.
//!
//! Every workload is one criterion group with the benchmarks `eventdriven` and `tokio`, measured
//! in the same run on the same runtime (tokio multi-thread, 2 worker threads), so their ratio
//! can be read straight off the report (`scripts/bench_table.py` prints it).
//!
//! | group            | `eventdriven`                                 | `tokio`                                    |
//! |------------------|-----------------------------------------------|--------------------------------------------|
//! | `tell_1to1`      | N x `app.tell(Inc)`, then `app.send(Flush)`   | N x `mpsc::channel(1024)`, then a flush with a `oneshot` |
//! | `ask_round_trip` | `app.send(Add)` awaiting the reply            | `mpsc::channel(1024)` + `oneshot` reply    |
//! | `fanout_1to8`    | N x `app.publish(Tick)` to 8 subscribers, then `publish(Done)` | N x an `Arc` clone into each of 8 `mpsc::channel(1024)`, then a done marker |
//!
//! `tell_1to1` and `ask_round_trip` also hold a control, `tokio_envelope`: the plain tokio
//! consumer, but every message is wrapped in eventdriven's [`Envelope`] (fresh [`Metadata`] per
//! message, moved with it), which is what an actor's mailbox slot carries. It tells the cost of
//! the envelope apart from the cost of the rest of the runtime.
//!
//! An iteration ends only when the consumer(s) have handled every message of it: the tell
//! workloads end with a request whose reply carries the count seen, the fan-out ones with a
//! marker each subscriber acknowledges through a [`Latch`]. Both sides pay the same ending, and
//! the counts are checked (outside the hot loop) so neither side can skip work.
//!
//! Timing uses `iter_custom`: the producer runs as a task on the runtime (so it competes with
//! the consumers for the same 2 workers, as application code would) and measures itself, so
//! building the app, spawning and joining stay outside the measurement.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use eventdriven::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, Notify};

/// Messages per iteration of `tell_1to1`.
const TELL_N: u64 = 100_000;
/// Events per iteration of `fanout_1to8`.
const FAN_N: u64 = 10_000;
/// Subscribers in `fanout_1to8`.
const FAN_SUBS: usize = 8;
/// Mailbox / channel capacity on both sides.
const CAPACITY: usize = 1024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `body` as a task on `rt` (not on the bench thread) and returns the time it measured.
fn on_runtime<F>(rt: &Runtime, body: F) -> Duration
where
    F: std::future::Future<Output = Duration> + Send + 'static,
{
    rt.block_on(async { tokio::spawn(body).await.expect("bench task panicked") })
}

// ---------------------------------------------------------------------------------------------
// Shared: a latch the fan-out consumers count down on.
// ---------------------------------------------------------------------------------------------

/// Counts the consumers that finished an iteration and wakes the producer when all did.
/// Also sums what they saw, so the producer can check that nothing was skipped.
struct Latch {
    parties: usize,
    arrived: AtomicUsize,
    seen: AtomicU64,
    notify: Notify,
}

impl Latch {
    fn new(parties: usize) -> Arc<Self> {
        Arc::new(Self {
            parties,
            arrived: AtomicUsize::new(0),
            seen: AtomicU64::new(0),
            notify: Notify::new(),
        })
    }

    fn arrive(&self, seen: u64) {
        self.seen.fetch_add(seen, Ordering::Relaxed);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            // Stores a permit if the producer is not waiting yet.
            self.notify.notify_one();
        }
    }

    /// Waits until every party arrived, resets, and returns the total they saw.
    async fn wait(&self) -> u64 {
        self.notify.notified().await;
        debug_assert_eq!(self.arrived.load(Ordering::Acquire), self.parties);
        self.arrived.store(0, Ordering::Relaxed);
        self.seen.swap(0, Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// eventdriven actors
// ---------------------------------------------------------------------------------------------

/// Fire-and-forget work item.
#[derive(Command, Debug)]
struct Inc(u64);

/// Ends a `tell` iteration: replies with the number of `Inc` seen since the last flush.
#[derive(Command, Debug)]
#[command(reply = u64)]
struct Flush;

/// A request whose reply is awaited.
#[derive(Command, Debug)]
#[command(reply = u64)]
struct Add(u64);

/// The fanned-out event.
#[derive(Event, Clone, Debug)]
struct Tick(u64);

/// Ends a fan-out iteration.
#[derive(Event, Clone, Debug)]
struct Done;

/// Target of `tell_1to1` and `ask_round_trip`.
#[derive(Default)]
struct Counter {
    seen: u64,
    sum: u64,
}

#[handlers]
impl Counter {
    #[handle]
    fn inc(&mut self, cmd: Inc) {
        self.seen += 1;
        self.sum = self.sum.wrapping_add(cmd.0);
    }

    #[handle]
    fn flush(&mut self, _cmd: Flush) -> u64 {
        black_box(self.sum);
        std::mem::take(&mut self.seen)
    }

    #[handle]
    fn add(&mut self, cmd: Add) -> u64 {
        self.sum = self.sum.wrapping_add(cmd.0);
        self.sum
    }
}

/// One of the `fanout_1to8` subscribers.
struct Sub {
    seen: u64,
    sum: u64,
    latch: Arc<Latch>,
}

#[handlers]
impl Sub {
    #[subscribe]
    fn on_tick(&mut self, ev: &Tick) {
        self.seen += 1;
        self.sum = self.sum.wrapping_add(ev.0);
    }

    #[subscribe]
    fn on_done(&mut self, _ev: &Done) {
        black_box(self.sum);
        self.latch.arrive(std::mem::take(&mut self.seen));
    }
}

// ---------------------------------------------------------------------------------------------
// tokio consumers doing the same work
// ---------------------------------------------------------------------------------------------

/// What the plain tokio counter receives: the bare payload, 16 bytes.
enum CounterMsg {
    Inc(u64),
    Flush(oneshot::Sender<u64>),
    Add(u64, oneshot::Sender<u64>),
}

/// The control: the same consumer, but each message carries eventdriven's [`Envelope`] (its
/// [`Metadata`] created per message and moved with it), as the actor's mailbox does.
enum EnvelopeMsg {
    Inc(Envelope<Inc>),
    Flush(oneshot::Sender<u64>),
    Add(Envelope<Add>, oneshot::Sender<u64>),
}

fn spawn_tokio_counter() -> mpsc::Sender<CounterMsg> {
    let (tx, mut rx) = mpsc::channel::<CounterMsg>(CAPACITY);
    tokio::spawn(async move {
        let (mut seen, mut sum) = (0u64, 0u64);
        while let Some(msg) = rx.recv().await {
            match msg {
                CounterMsg::Inc(v) => {
                    seen += 1;
                    sum = sum.wrapping_add(v);
                }
                CounterMsg::Flush(reply) => {
                    black_box(sum);
                    let _ = reply.send(std::mem::take(&mut seen));
                }
                CounterMsg::Add(v, reply) => {
                    sum = sum.wrapping_add(v);
                    let _ = reply.send(sum);
                }
            }
        }
    });
    tx
}

fn spawn_tokio_envelope_counter() -> mpsc::Sender<EnvelopeMsg> {
    let (tx, mut rx) = mpsc::channel::<EnvelopeMsg>(CAPACITY);
    tokio::spawn(async move {
        let (mut seen, mut sum) = (0u64, 0u64);
        while let Some(msg) = rx.recv().await {
            match msg {
                EnvelopeMsg::Inc(env) => {
                    black_box(&env.meta);
                    seen += 1;
                    sum = sum.wrapping_add(env.message.0);
                }
                EnvelopeMsg::Flush(reply) => {
                    black_box(sum);
                    let _ = reply.send(std::mem::take(&mut seen));
                }
                EnvelopeMsg::Add(env, reply) => {
                    black_box(&env.meta);
                    sum = sum.wrapping_add(env.message.0);
                    let _ = reply.send(sum);
                }
            }
        }
    });
    tx
}

enum FanMsg {
    Tick(Arc<Tick>),
    Done,
}

fn spawn_tokio_subs(latch: &Arc<Latch>) -> Vec<mpsc::Sender<FanMsg>> {
    (0..FAN_SUBS)
        .map(|_| {
            let (tx, mut rx) = mpsc::channel::<FanMsg>(CAPACITY);
            let latch = latch.clone();
            tokio::spawn(async move {
                let (mut seen, mut sum) = (0u64, 0u64);
                while let Some(msg) = rx.recv().await {
                    match msg {
                        FanMsg::Tick(ev) => {
                            seen += 1;
                            sum = sum.wrapping_add(ev.0);
                        }
                        FanMsg::Done => {
                            black_box(sum);
                            latch.arrive(std::mem::take(&mut seen));
                        }
                    }
                }
            });
            tx
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

fn tell(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("tell_1to1");
    group.throughput(Throughput::Elements(TELL_N));

    let app = rt.block_on(async {
        App::builder()
            .actor_with(Counter::default(), Mailbox::bounded(CAPACITY))
            .build()
            .await
            .expect("build app")
    });
    group.bench_function("eventdriven", |b| {
        b.iter_custom(|iters| {
            let app = app.clone();
            on_runtime(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..TELL_N {
                        app.tell(Inc(i)).await.expect("tell");
                    }
                    let seen = app.send(Flush).await.expect("flush");
                    assert_eq!(seen, TELL_N);
                }
                start.elapsed()
            })
        })
    });

    let tx = rt.block_on(async { spawn_tokio_counter() });
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            let tx = tx.clone();
            on_runtime(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..TELL_N {
                        tx.send(CounterMsg::Inc(i)).await.expect("send");
                    }
                    let (reply, seen) = oneshot::channel();
                    tx.send(CounterMsg::Flush(reply)).await.expect("send");
                    assert_eq!(seen.await.expect("flush"), TELL_N);
                }
                start.elapsed()
            })
        })
    });

    let env_tx = rt.block_on(async { spawn_tokio_envelope_counter() });
    group.bench_function("tokio_envelope", |b| {
        b.iter_custom(|iters| {
            let tx = env_tx.clone();
            on_runtime(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..TELL_N {
                        let msg = EnvelopeMsg::Inc(Envelope::new(Inc(i)));
                        tx.send(msg).await.expect("send");
                    }
                    let (reply, seen) = oneshot::channel();
                    tx.send(EnvelopeMsg::Flush(reply)).await.expect("send");
                    assert_eq!(seen.await.expect("flush"), TELL_N);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    drop(env_tx);

    drop(tx);
    rt.block_on(app.shutdown()).expect("shutdown");
}

fn ask(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("ask_round_trip");
    group.throughput(Throughput::Elements(1));

    let app = rt.block_on(async {
        App::builder()
            .actor_with(Counter::default(), Mailbox::bounded(CAPACITY))
            .build()
            .await
            .expect("build app")
    });
    group.bench_function("eventdriven", |b| {
        b.iter_custom(|iters| {
            let app = app.clone();
            on_runtime(&rt, async move {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(app.send(Add(i)).await.expect("send"));
                }
                start.elapsed()
            })
        })
    });

    let tx = rt.block_on(async { spawn_tokio_counter() });
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            let tx = tx.clone();
            on_runtime(&rt, async move {
                let start = Instant::now();
                for i in 0..iters {
                    let (reply, rx) = oneshot::channel();
                    tx.send(CounterMsg::Add(i, reply)).await.expect("send");
                    black_box(rx.await.expect("reply"));
                }
                start.elapsed()
            })
        })
    });

    let env_tx = rt.block_on(async { spawn_tokio_envelope_counter() });
    group.bench_function("tokio_envelope", |b| {
        b.iter_custom(|iters| {
            let tx = env_tx.clone();
            on_runtime(&rt, async move {
                let start = Instant::now();
                for i in 0..iters {
                    let (reply, rx) = oneshot::channel();
                    let msg = EnvelopeMsg::Add(Envelope::new(Add(i)), reply);
                    tx.send(msg).await.expect("send");
                    black_box(rx.await.expect("reply"));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    drop(env_tx);

    drop(tx);
    rt.block_on(app.shutdown()).expect("shutdown");
}

fn fan_out(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("fanout_1to8");
    group.throughput(Throughput::Elements(FAN_N * FAN_SUBS as u64));
    let expected = FAN_N * FAN_SUBS as u64;

    let latch = Latch::new(FAN_SUBS);
    let app = rt.block_on(async {
        let mut builder = App::builder();
        for _ in 0..FAN_SUBS {
            let sub = Sub {
                seen: 0,
                sum: 0,
                latch: latch.clone(),
            };
            builder = builder.actor_with(sub, Mailbox::bounded(CAPACITY));
        }
        builder.build().await.expect("build app")
    });
    group.bench_function("eventdriven", |b| {
        b.iter_custom(|iters| {
            let (app, latch) = (app.clone(), latch.clone());
            on_runtime(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..FAN_N {
                        app.publish(Tick(i)).await.expect("publish");
                    }
                    app.publish(Done).await.expect("publish");
                    assert_eq!(latch.wait().await, expected);
                }
                start.elapsed()
            })
        })
    });

    let txs = rt.block_on(async { spawn_tokio_subs(&latch) });
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            let (txs, latch) = (txs.clone(), latch.clone());
            on_runtime(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    for i in 0..FAN_N {
                        let ev = Arc::new(Tick(i));
                        for tx in &txs {
                            tx.send(FanMsg::Tick(ev.clone())).await.expect("send");
                        }
                    }
                    for tx in &txs {
                        tx.send(FanMsg::Done).await.expect("send");
                    }
                    assert_eq!(latch.wait().await, expected);
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    drop(txs);
    rt.block_on(app.shutdown()).expect("shutdown");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
}

fn main() {
    // What `criterion_group!`/`criterion_main!` expand to, written out: the macros generate an
    // undocumented `pub fn`, which the workspace's `missing_docs` lint rejects.
    let mut c = config().configure_from_args();
    tell(&mut c);
    ask(&mut c);
    fan_out(&mut c);
    c.final_summary();
}
