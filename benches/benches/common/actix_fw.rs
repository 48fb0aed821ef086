//! actix: run the way actix is meant to be run, in its own `System` (a single-threaded tokio
//! runtime per thread) rather than on the shared 2-worker tokio runtime. The producer runs in
//! `System::block_on` on the calling thread; the actors live on one `Arbiter` (a second thread),
//! so two threads do the work, as the two tokio workers do for the other contenders.
//!
//! Mailboxes are set to `CAPACITY` with `ctx.set_mailbox_capacity`, which `addr.send` (ask)
//! respects. actix's fire-and-forget, `addr.do_send`, ignores the capacity ("the message is
//! always queued, even if the mailbox for the receiver is full"), so `tell` and the fan-out are
//! effectively unbounded; there is no fire-and-forget with back-pressure (a dropped `send`
//! future cancels its message). actix has no pub/sub in its core crate (`actix-broker` is a
//! separate crate), so the fan-out producer `do_send`s to each of the 8 actors.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{
    expect_pings, rss_bytes, time_round_trips, wait_pinged, Latch, Loaded, Runner, SpawnReport,
    CAPACITY, FAN_N, FAN_SUBS, IDLE_CAPACITY, LOAD_HANDLED, TELL_N,
};

/// Fire-and-forget work item.
pub(crate) struct Inc(u64);
impl Message for Inc {
    type Result = ();
}

/// Ends a `tell` iteration.
pub(crate) struct Flush;
impl Message for Flush {
    type Result = u64;
}

/// A request whose reply is awaited.
pub(crate) struct Add(u64);
impl Message for Add {
    type Result = u64;
}

/// The fanned-out event.
pub(crate) struct Tick(u64);
impl Message for Tick {
    type Result = ();
}

/// Ends a fan-out iteration.
pub(crate) struct Done;
impl Message for Done {
    type Result = ();
}

/// Load for actor B.
pub(crate) struct Load;
impl Message for Load {
    type Result = ();
}

/// Sent once to every idle actor.
pub(crate) struct Ping;
impl Message for Ping {
    type Result = ();
}

/// Target of `tell_1to1` and `ask_round_trip`.
#[derive(Default)]
pub(crate) struct Counter {
    seen: u64,
    sum: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Inc> for Counter {
    type Result = ();

    fn handle(&mut self, msg: Inc, _: &mut Context<Self>) {
        self.seen += 1;
        self.sum = self.sum.wrapping_add(msg.0);
    }
}

impl Handler<Flush> for Counter {
    type Result = u64;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> u64 {
        black_box(self.sum);
        std::mem::take(&mut self.seen)
    }
}

impl Handler<Add> for Counter {
    type Result = u64;

    fn handle(&mut self, msg: Add, _: &mut Context<Self>) -> u64 {
        self.sum = self.sum.wrapping_add(msg.0);
        self.sum
    }
}

/// One of the fan-out receivers.
pub(crate) struct Sub {
    seen: u64,
    sum: u64,
    latch: Arc<Latch>,
}

impl Actor for Sub {
    type Context = Context<Self>;
}

impl Handler<Tick> for Sub {
    type Result = ();

    fn handle(&mut self, msg: Tick, _: &mut Context<Self>) {
        self.seen += 1;
        self.sum = self.sum.wrapping_add(msg.0);
    }
}

impl Handler<Done> for Sub {
    type Result = ();

    fn handle(&mut self, _: Done, _: &mut Context<Self>) {
        black_box(self.sum);
        self.latch.arrive(std::mem::take(&mut self.seen));
    }
}

/// Actor B of the loaded latency run.
pub(crate) struct Sink;

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<Load> for Sink {
    type Result = ();

    fn handle(&mut self, _: Load, _: &mut Context<Self>) {
        LOAD_HANDLED.fetch_add(1, Ordering::Relaxed);
    }
}

impl Handler<Flush> for Sink {
    type Result = u64;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> u64 {
        0
    }
}

/// An idle actor.
pub(crate) struct Idle;

impl Actor for Idle {
    type Context = Context<Self>;
}

impl Handler<Ping> for Idle {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {
        super::pinged();
    }
}

/// A system (this thread) and one arbiter (another thread); stops the arbiter when dropped.
struct Rig {
    sys: SystemRunner,
    arbiter: Option<Arbiter>,
}

impl Rig {
    fn new() -> Self {
        let sys = System::new();
        let arbiter = Arbiter::new();
        Self {
            sys,
            arbiter: Some(arbiter),
        }
    }

    fn handle(&self) -> ArbiterHandle {
        self.arbiter.as_ref().expect("arbiter").handle()
    }

    /// Starts `actor` on the arbiter with a mailbox of `capacity`.
    fn start<A>(&self, actor: A, capacity: usize) -> Addr<A>
    where
        A: Actor<Context = Context<A>> + Send,
    {
        A::start_in_arbiter(&self.handle(), move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            actor
        })
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(arbiter) = self.arbiter.take() {
            arbiter.stop();
            let _ = arbiter.join();
        }
        System::current().stop();
    }
}

async fn add(addr: &Addr<Counter>, i: u64) -> u64 {
    addr.send(Add(i)).await.expect("actix send")
}

/// `tell_1to1`: N x `do_send(Inc)`, then `send(Flush).await`.
pub(crate) fn tell() -> Runner {
    let rig = Rig::new();
    let addr = rig.start(Counter::default(), CAPACITY);
    Box::new(move |iters| {
        rig.sys.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..TELL_N {
                    addr.do_send(Inc(i));
                }
                let seen = addr.send(Flush).await.expect("actix send");
                assert_eq!(seen, TELL_N);
            }
            start.elapsed()
        })
    })
}

/// `ask_round_trip`: `send(Add).await`.
pub(crate) fn ask() -> Runner {
    let rig = Rig::new();
    let addr = rig.start(Counter::default(), CAPACITY);
    Box::new(move |iters| {
        rig.sys.block_on(async {
            let start = Instant::now();
            for i in 0..iters {
                black_box(add(&addr, i).await);
            }
            start.elapsed()
        })
    })
}

/// The `ask_round_trip` variant `actix_same_thread`: requester and actor both on the system's
/// thread (actix's default when everything is started from `System::block_on`), so a round
/// trip involves no cross-thread wake-up.
pub(crate) fn ask_same_thread() -> Runner {
    let sys = System::new();
    let addr = sys.block_on(async { start_here(Counter::default()) });
    Box::new(move |iters| {
        sys.block_on(async {
            let start = Instant::now();
            for i in 0..iters {
                black_box(add(&addr, i).await);
            }
            start.elapsed()
        })
    })
}

/// `n` timed round trips of [`ask_same_thread`].
pub(crate) fn ask_latency_same_thread(n: usize) -> Vec<u64> {
    let sys = System::new();
    let addr = sys.block_on(async { start_here(Counter::default()) });
    let samples = sys.block_on(async {
        let addr = &addr;
        time_round_trips(n, |i| add(addr, i)).await
    });
    System::current().stop();
    samples
}

/// Starts `actor` on the current (system) thread with a mailbox of `CAPACITY`.
fn start_here<A>(actor: A) -> Addr<A>
where
    A: Actor<Context = Context<A>>,
{
    A::create(move |ctx| {
        ctx.set_mailbox_capacity(CAPACITY);
        actor
    })
}

/// `fanout_1to8`: N x `do_send(Tick)` to each of 8 actors on one arbiter, then `do_send(Done)`.
pub(crate) fn fanout() -> Runner {
    let rig = Rig::new();
    let latch = Latch::new(FAN_SUBS);
    let subs: Vec<Addr<Sub>> = (0..FAN_SUBS)
        .map(|_| {
            let sub = Sub {
                seen: 0,
                sum: 0,
                latch: latch.clone(),
            };
            rig.start(sub, CAPACITY)
        })
        .collect();
    let expected = FAN_N * FAN_SUBS as u64;
    Box::new(move |iters| {
        rig.sys.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..FAN_N {
                    for sub in &subs {
                        sub.do_send(Tick(i));
                    }
                }
                for sub in &subs {
                    sub.do_send(Done);
                }
                assert_eq!(latch.wait().await, expected);
            }
            start.elapsed()
        })
    })
}

/// `n` timed `send(Add)` round trips from the system thread to the arbiter.
pub(crate) fn ask_latency(n: usize) -> Vec<u64> {
    let rig = Rig::new();
    let addr = rig.start(Counter::default(), CAPACITY);
    rig.sys.block_on(async {
        let addr = &addr;
        time_round_trips(n, |i| add(addr, i)).await
    })
}

/// `n` timed `send(Add)` round trips to A while a task on the system thread loads B, both
/// actors on the arbiter. `do_send` has no back-pressure, so the load goes in windows: 1024
/// `do_send(Load)`, then a `send(Flush)` round trip to B before the next window.
pub(crate) fn ask_latency_loaded(n: usize) -> Loaded {
    let rig = Rig::new();
    let addr = rig.start(Counter::default(), CAPACITY);
    let sink = rig.start(Sink, CAPACITY);
    rig.sys.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let load = actix::spawn({
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..CAPACITY {
                        sink.do_send(Load);
                    }
                    sink.send(Flush).await.expect("actix send");
                }
            }
        });
        let loaded = {
            let addr = &addr;
            super::under_load(time_round_trips(n, |i| add(addr, i))).await
        };
        stop.store(true, Ordering::Relaxed);
        load.await.expect("load task");
        loaded
    })
}

/// `n` x `Idle::create` (mailbox capacity 16) on the system's thread, then one `do_send(Ping)`
/// to each.
pub(crate) fn spawn_idle(n: usize) -> SpawnReport {
    let sys = System::new();
    let report = sys.block_on(async move {
        expect_pings(n);
        let rss_before = rss_bytes();
        let start = Instant::now();
        let actors: Vec<Addr<Idle>> = (0..n)
            .map(|_| {
                Idle::create(|ctx| {
                    ctx.set_mailbox_capacity(IDLE_CAPACITY);
                    Idle
                })
            })
            .collect();
        let spawn = start.elapsed();
        for actor in &actors {
            actor.do_send(Ping);
        }
        wait_pinged().await;
        let ready = start.elapsed();
        actix::clock::sleep(Duration::from_millis(50)).await;
        let rss_after = rss_bytes();
        std::mem::forget(actors);
        SpawnReport {
            count: n,
            spawn,
            ready,
            rss_before,
            rss_after,
        }
    });
    std::mem::forget(sys);
    report
}
