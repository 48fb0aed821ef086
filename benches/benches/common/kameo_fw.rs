//! kameo: actors spawned with `spawn_with_mailbox(.., mailbox::bounded(CAPACITY))` on the same
//! tokio runtime, `actor_ref.tell(msg).await` and `actor_ref.ask(msg).await`. kameo has no
//! pub/sub in its core crate (the `kameo_actors` crate's `PubSub` is an extra actor in between),
//! so the fan-out producer tells each of the 8 actors.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kameo::actor::{Actor, ActorRef, Spawn};
use kameo::error::Infallible;
use kameo::mailbox;
use kameo::message::{Context, Message};
use tokio::runtime::Runtime;

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
    type Args = Self;
    type Error = Infallible;

    async fn on_start(args: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(args)
    }
}

impl Message<Inc> for Counter {
    type Reply = ();

    async fn handle(&mut self, msg: Inc, _: &mut Context<Self, ()>) {
        self.seen += 1;
        self.sum = self.sum.wrapping_add(msg.0);
    }
}

impl Message<Flush> for Counter {
    type Reply = u64;

    async fn handle(&mut self, _: Flush, _: &mut Context<Self, u64>) -> u64 {
        black_box(self.sum);
        std::mem::take(&mut self.seen)
    }
}

impl Message<Add> for Counter {
    type Reply = u64;

    async fn handle(&mut self, msg: Add, _: &mut Context<Self, u64>) -> u64 {
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
    type Args = Self;
    type Error = Infallible;

    async fn on_start(args: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(args)
    }
}

impl Message<Tick> for Sub {
    type Reply = ();

    async fn handle(&mut self, msg: Tick, _: &mut Context<Self, ()>) {
        self.seen += 1;
        self.sum = self.sum.wrapping_add(msg.0);
    }
}

impl Message<Done> for Sub {
    type Reply = ();

    async fn handle(&mut self, _: Done, _: &mut Context<Self, ()>) {
        black_box(self.sum);
        self.latch.arrive(std::mem::take(&mut self.seen));
    }
}

/// Actor B of the loaded latency run.
pub(crate) struct Sink;

impl Actor for Sink {
    type Args = Self;
    type Error = Infallible;

    async fn on_start(args: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(args)
    }
}

impl Message<Load> for Sink {
    type Reply = ();

    async fn handle(&mut self, _: Load, _: &mut Context<Self, ()>) {
        LOAD_HANDLED.fetch_add(1, Ordering::Relaxed);
    }
}

/// An idle actor.
pub(crate) struct Idle;

impl Actor for Idle {
    type Args = Self;
    type Error = Infallible;

    async fn on_start(args: Self, _: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(args)
    }
}

impl Message<Ping> for Idle {
    type Reply = ();

    async fn handle(&mut self, _: Ping, _: &mut Context<Self, ()>) {
        super::pinged();
    }
}

fn spawn_counter() -> ActorRef<Counter> {
    Counter::spawn_with_mailbox(Counter::default(), mailbox::bounded(CAPACITY))
}

async fn tell_to<A: Message<M>, M: Send + 'static>(actor: &ActorRef<A>, msg: M) {
    if actor.tell(msg).await.is_err() {
        panic!("kameo tell failed");
    }
}

async fn add(actor: &ActorRef<Counter>, i: u64) -> u64 {
    actor
        .ask(Add(i))
        .await
        .unwrap_or_else(|_| panic!("kameo ask failed"))
}

fn counter_rig() -> (Runtime, ActorRef<Counter>) {
    let rt = runtime();
    let actor = rt.block_on(async { spawn_counter() });
    (rt, actor)
}

/// `tell_1to1`: N x `tell(Inc)`, then `ask(Flush)`.
pub(crate) fn tell() -> Runner {
    let (rt, actor) = counter_rig();
    Box::new(move |iters| {
        let actor = actor.clone();
        on_runtime(&rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..TELL_N {
                    tell_to(&actor, Inc(i)).await;
                }
                let seen = actor
                    .ask(Flush)
                    .await
                    .unwrap_or_else(|_| panic!("kameo ask failed"));
                assert_eq!(seen, TELL_N);
            }
            start.elapsed()
        })
    })
}

/// `ask_round_trip`: `ask(Add)`.
pub(crate) fn ask() -> Runner {
    let (rt, actor) = counter_rig();
    Box::new(move |iters| {
        let actor = actor.clone();
        on_runtime(&rt, async move {
            let start = Instant::now();
            for i in 0..iters {
                black_box(add(&actor, i).await);
            }
            start.elapsed()
        })
    })
}

/// `fanout_1to8`: N x `tell(Tick)` to each of 8 actors, then `tell(Done)` to each.
pub(crate) fn fanout() -> Runner {
    let rt = runtime();
    let latch = Latch::new(FAN_SUBS);
    let subs: Vec<ActorRef<Sub>> = rt.block_on(async {
        (0..FAN_SUBS)
            .map(|_| {
                let sub = Sub {
                    seen: 0,
                    sum: 0,
                    latch: latch.clone(),
                };
                Sub::spawn_with_mailbox(sub, mailbox::bounded(CAPACITY))
            })
            .collect()
    });
    let expected = FAN_N * FAN_SUBS as u64;
    Box::new(move |iters| {
        let (subs, latch) = (subs.clone(), latch.clone());
        on_runtime(&rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..FAN_N {
                    for sub in &subs {
                        tell_to(sub, Tick(i)).await;
                    }
                }
                for sub in &subs {
                    tell_to(sub, Done).await;
                }
                assert_eq!(latch.wait().await, expected);
            }
            start.elapsed()
        })
    })
}

/// `n` timed `ask(Add)` round trips.
pub(crate) fn ask_latency(n: usize) -> Vec<u64> {
    let (rt, actor) = counter_rig();
    on_runtime(&rt, async move {
        let actor = &actor;
        time_round_trips(n, |i| add(actor, i)).await
    })
}

/// `n` timed `ask(Add)` round trips to A while a task keeps telling `Load` to B.
pub(crate) fn ask_latency_loaded(n: usize) -> Loaded {
    let rt = runtime();
    on_runtime(&rt, async move {
        let actor = spawn_counter();
        let sink = Sink::spawn_with_mailbox(Sink, mailbox::bounded(CAPACITY));
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
            let actor = &actor;
            under_load(time_round_trips(n, |i| add(actor, i))).await
        };
        stop.store(true, Ordering::Relaxed);
        load.await.expect("load task");
        loaded
    })
}

/// `n` x `Idle::spawn_with_mailbox(Idle, mailbox::bounded(16))`, then one `tell(Ping)` to each.
pub(crate) fn spawn_idle(n: usize) -> SpawnReport {
    let rt = runtime();
    let report = on_runtime(&rt, async move {
        expect_pings(n);
        let rss_before = rss_bytes();
        let start = Instant::now();
        let actors: Vec<ActorRef<Idle>> = (0..n)
            .map(|_| Idle::spawn_with_mailbox(Idle, mailbox::bounded(IDLE_CAPACITY)))
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
