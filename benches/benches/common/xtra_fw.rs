//! xtra: actors spawned with `xtra::spawn_tokio(actor, Mailbox::bounded(CAPACITY))` on the same
//! tokio runtime; `address.send(msg).detach().await` (tell: waits for room in the mailbox, not
//! for the handler) and `address.send(msg).await` (ask). The fan-out uses xtra's own
//! broadcast: the 8 receivers share one address, each with its own clone of the mailbox (and
//! so its own broadcast queue of `CAPACITY`), and the producer calls `address.broadcast(msg)`.
//!
//! xtra 0.6 keeps a mailbox as a binary heap ordered by priority alone, so messages of equal
//! priority are **not** handled in the order they were sent (the ending `Flush` overtook
//! hundreds of `Inc`s in a trial run). To end an iteration the same way as the others, the
//! bulk messages (`Inc`, `Tick`) are sent with priority 1 and the ending (`Flush`, `Done`) with
//! the default 0, which xtra handles after every queued message of higher priority.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use xtra::{Actor, Address, Context, Handler, Mailbox};

use super::{
    expect_pings, on_runtime, rss_bytes, runtime, time_round_trips, under_load, wait_pinged, Latch,
    Loaded, Runner, SpawnReport, CAPACITY, FAN_N, FAN_SUBS, IDLE_CAPACITY, LOAD_HANDLED, TELL_N,
};

/// Fire-and-forget work item.
pub(crate) struct Inc(u64);
/// Ends a `tell` iteration.
pub(crate) struct Flush;
/// A request whose reply is awaited.
pub(crate) struct Add(u64);
/// The fanned-out event.
#[derive(Clone)]
pub(crate) struct Tick(u64);
/// Ends a fan-out iteration.
#[derive(Clone)]
pub(crate) struct Done;
/// Load for actor B.
pub(crate) struct Load;
/// Sent once to every idle actor.
pub(crate) struct Ping;

/// Target of `tell_1to1` and `ask_round_trip`.
#[derive(Default)]
pub(crate) struct Counter {
    seen: u64,
    sum: u64,
}

impl Actor for Counter {
    type Stop = ();

    async fn stopped(self) {}
}

impl Handler<Inc> for Counter {
    type Return = ();

    async fn handle(&mut self, msg: Inc, _: &mut Context<Self>) {
        self.seen += 1;
        self.sum = self.sum.wrapping_add(msg.0);
    }
}

impl Handler<Flush> for Counter {
    type Return = u64;

    async fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> u64 {
        black_box(self.sum);
        std::mem::take(&mut self.seen)
    }
}

impl Handler<Add> for Counter {
    type Return = u64;

    async fn handle(&mut self, msg: Add, _: &mut Context<Self>) -> u64 {
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
    type Stop = ();

    async fn stopped(self) {}
}

impl Handler<Tick> for Sub {
    type Return = ();

    async fn handle(&mut self, msg: Tick, _: &mut Context<Self>) {
        self.seen += 1;
        self.sum = self.sum.wrapping_add(msg.0);
    }
}

impl Handler<Done> for Sub {
    type Return = ();

    async fn handle(&mut self, _: Done, _: &mut Context<Self>) {
        black_box(self.sum);
        self.latch.arrive(std::mem::take(&mut self.seen));
    }
}

/// Actor B of the loaded latency run.
pub(crate) struct Sink;

impl Actor for Sink {
    type Stop = ();

    async fn stopped(self) {}
}

impl Handler<Load> for Sink {
    type Return = ();

    async fn handle(&mut self, _: Load, _: &mut Context<Self>) {
        LOAD_HANDLED.fetch_add(1, Ordering::Relaxed);
    }
}

/// An idle actor.
pub(crate) struct Idle;

impl Actor for Idle {
    type Stop = ();

    async fn stopped(self) {}
}

impl Handler<Ping> for Idle {
    type Return = ();

    async fn handle(&mut self, _: Ping, _: &mut Context<Self>) {
        super::pinged();
    }
}

/// Sends `msg` without waiting for the handler (only for room in the mailbox).
async fn tell_to<A: Handler<M>, M: Send + 'static>(addr: &Address<A>, msg: M) {
    let _reply = addr.send(msg).detach().await.expect("xtra send");
}

/// [`tell_to`] with priority 1: handled before any queued message of the default priority 0.
async fn tell_first<A: Handler<M>, M: Send + 'static>(addr: &Address<A>, msg: M) {
    let _reply = addr
        .send(msg)
        .priority(1)
        .detach()
        .await
        .expect("xtra send");
}

async fn add(addr: &Address<Counter>, i: u64) -> u64 {
    addr.send(Add(i)).await.expect("xtra send")
}

fn counter_rig() -> (Runtime, Address<Counter>) {
    let rt = runtime();
    let addr =
        rt.block_on(async { xtra::spawn_tokio(Counter::default(), Mailbox::bounded(CAPACITY)) });
    (rt, addr)
}

/// `tell_1to1`: N x `send(Inc).priority(1).detach()`, then `send(Flush)`.
pub(crate) fn tell() -> Runner {
    let (rt, addr) = counter_rig();
    Box::new(move |iters| {
        let addr = addr.clone();
        on_runtime(&rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..TELL_N {
                    tell_first(&addr, Inc(i)).await;
                }
                let seen = addr.send(Flush).await.expect("xtra send");
                assert_eq!(seen, TELL_N);
            }
            start.elapsed()
        })
    })
}

/// `ask_round_trip`: `send(Add).await`.
pub(crate) fn ask() -> Runner {
    let (rt, addr) = counter_rig();
    Box::new(move |iters| {
        let addr = addr.clone();
        on_runtime(&rt, async move {
            let start = Instant::now();
            for i in 0..iters {
                black_box(add(&addr, i).await);
            }
            start.elapsed()
        })
    })
}

/// `fanout_1to8`: N x `broadcast(Tick).priority(1)` to 8 actors on one address, then
/// `broadcast(Done)`.
pub(crate) fn fanout() -> Runner {
    let rt = runtime();
    let latch = Latch::new(FAN_SUBS);
    let addr: Address<Sub> = rt.block_on(async {
        let (addr, mailbox) = Mailbox::bounded(CAPACITY);
        // Every receiver needs its own mailbox clone (its own broadcast queue); the original
        // goes to the last one, so no unread queue holds the broadcasts back.
        let mut mailboxes: Vec<Mailbox<Sub>> = (1..FAN_SUBS).map(|_| mailbox.clone()).collect();
        mailboxes.push(mailbox);
        for mailbox in mailboxes {
            let sub = Sub {
                seen: 0,
                sum: 0,
                latch: latch.clone(),
            };
            tokio::spawn(xtra::run(mailbox, sub));
        }
        addr
    });
    let expected = FAN_N * FAN_SUBS as u64;
    Box::new(move |iters| {
        let (addr, latch) = (addr.clone(), latch.clone());
        on_runtime(&rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..FAN_N {
                    addr.broadcast(Tick(i))
                        .priority(1)
                        .await
                        .expect("xtra broadcast");
                }
                addr.broadcast(Done).await.expect("xtra broadcast");
                assert_eq!(latch.wait().await, expected);
            }
            start.elapsed()
        })
    })
}

/// `n` timed `send(Add)` round trips.
pub(crate) fn ask_latency(n: usize) -> Vec<u64> {
    let (rt, addr) = counter_rig();
    on_runtime(&rt, async move {
        let addr = &addr;
        time_round_trips(n, |i| add(addr, i)).await
    })
}

/// `n` timed `send(Add)` round trips to A while a task keeps B's mailbox full.
pub(crate) fn ask_latency_loaded(n: usize) -> Loaded {
    let rt = runtime();
    on_runtime(&rt, async move {
        let addr = xtra::spawn_tokio(Counter::default(), Mailbox::bounded(CAPACITY));
        let sink = xtra::spawn_tokio(Sink, Mailbox::bounded(CAPACITY));
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn({
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    tell_to(&sink, Load).await;
                }
            }
        });
        let loaded = {
            let addr = &addr;
            under_load(time_round_trips(n, |i| add(addr, i))).await
        };
        stop.store(true, Ordering::Relaxed);
        load.await.expect("load task");
        loaded
    })
}

/// `n` x `spawn_tokio(Idle, Mailbox::bounded(16))`, then one `send(Ping).detach()` to each.
pub(crate) fn spawn_idle(n: usize) -> SpawnReport {
    let rt = runtime();
    let report = on_runtime(&rt, async move {
        expect_pings(n);
        let rss_before = rss_bytes();
        let start = Instant::now();
        let actors: Vec<Address<Idle>> = (0..n)
            .map(|_| xtra::spawn_tokio(Idle, Mailbox::bounded(IDLE_CAPACITY)))
            .collect();
        let spawn = start.elapsed();
        for actor in &actors {
            tell_to(actor, Ping).await;
        }
        wait_pinged().await;
        let ready = start.elapsed();
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    std::mem::forget(rt);
    report
}
