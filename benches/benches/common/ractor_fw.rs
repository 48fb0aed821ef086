//! ractor: actors spawned with `Actor::spawn` on the same tokio runtime, `actor.cast(msg)`
//! (tell) and `call!` (ask, an `RpcReplyPort`). ractor's mailboxes are unbounded (there is no
//! bounded option), so `cast` never waits and a producer is never slowed by a full mailbox.
//! ractor's pub/sub, `OutputPort`, either drops messages past a 10-slot broadcast buffer (v1,
//! the default) or forwards through an extra task (v2), so the fan-out producer casts to each
//! of the 8 actors instead.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::concurrency::JoinHandle;
use ractor::{call, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::runtime::Runtime;

use super::{
    expect_pings, on_runtime, rss_bytes, runtime, time_round_trips, under_load, wait_pinged, Latch,
    Loaded, Runner, SpawnReport, CAPACITY, FAN_N, FAN_SUBS, LOAD_HANDLED, TELL_N,
};

/// The counter's messages.
pub(crate) enum CounterMsg {
    Inc(u64),
    Flush(RpcReplyPort<u64>),
    Add(u64, RpcReplyPort<u64>),
}

/// Target of `tell_1to1` and `ask_round_trip`; its state is `(seen, sum)`.
pub(crate) struct Counter;

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = (u64, u64);
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<CounterMsg>,
        _: (),
    ) -> Result<(u64, u64), ActorProcessingErr> {
        Ok((0, 0))
    }

    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        msg: CounterMsg,
        (seen, sum): &mut (u64, u64),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Inc(v) => {
                *seen += 1;
                *sum = sum.wrapping_add(v);
            }
            CounterMsg::Flush(reply) => {
                black_box(*sum);
                let _ = reply.send(std::mem::take(seen));
            }
            CounterMsg::Add(v, reply) => {
                *sum = sum.wrapping_add(v);
                let _ = reply.send(*sum);
            }
        }
        Ok(())
    }
}

/// The fan-out receivers' messages.
pub(crate) enum SubMsg {
    Tick(u64),
    Done,
}

/// One of the fan-out receivers; its state is `(seen, sum)`.
pub(crate) struct Sub {
    latch: Arc<Latch>,
}

impl Actor for Sub {
    type Msg = SubMsg;
    type State = (u64, u64);
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<SubMsg>,
        _: (),
    ) -> Result<(u64, u64), ActorProcessingErr> {
        Ok((0, 0))
    }

    async fn handle(
        &self,
        _: ActorRef<SubMsg>,
        msg: SubMsg,
        (seen, sum): &mut (u64, u64),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SubMsg::Tick(v) => {
                *seen += 1;
                *sum = sum.wrapping_add(v);
            }
            SubMsg::Done => {
                black_box(*sum);
                self.latch.arrive(std::mem::take(seen));
            }
        }
        Ok(())
    }
}

/// Actor B's messages.
pub(crate) enum SinkMsg {
    Load,
    Flush(RpcReplyPort<()>),
}

/// Actor B of the loaded latency run.
pub(crate) struct Sink;

impl Actor for Sink {
    type Msg = SinkMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<SinkMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<SinkMsg>,
        msg: SinkMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SinkMsg::Load => {
                LOAD_HANDLED.fetch_add(1, Ordering::Relaxed);
            }
            SinkMsg::Flush(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

/// An idle actor; its only message is the unit `Ping`.
pub(crate) struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        super::pinged();
        Ok(())
    }
}

/// A runtime and the actors on it; stops them when dropped.
struct Rig<M: ractor::Message> {
    rt: Runtime,
    actors: Vec<(ActorRef<M>, JoinHandle<()>)>,
}

impl<M: ractor::Message> Drop for Rig<M> {
    fn drop(&mut self) {
        let actors = std::mem::take(&mut self.actors);
        self.rt.block_on(async move {
            for (actor, handle) in actors {
                actor.stop(None);
                let _ = handle.await;
            }
        });
    }
}

fn counter_rig() -> Rig<CounterMsg> {
    let rt = runtime();
    let actor = rt.block_on(Actor::spawn(None, Counter, ())).expect("spawn");
    Rig {
        rt,
        actors: vec![actor],
    }
}

async fn add(actor: &ActorRef<CounterMsg>, i: u64) -> u64 {
    call!(actor, CounterMsg::Add, i).expect("ractor call")
}

/// `tell_1to1`: N x `cast(Inc)`, then `call!(Flush)`.
pub(crate) fn tell() -> Runner {
    let rig = counter_rig();
    Box::new(move |iters| {
        let actor = rig.actors[0].0.clone();
        on_runtime(&rig.rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..TELL_N {
                    actor.cast(CounterMsg::Inc(i)).expect("ractor cast");
                }
                let seen = call!(actor, CounterMsg::Flush).expect("ractor call");
                assert_eq!(seen, TELL_N);
            }
            start.elapsed()
        })
    })
}

/// `ask_round_trip`: `call!(Add)`.
pub(crate) fn ask() -> Runner {
    let rig = counter_rig();
    Box::new(move |iters| {
        let actor = rig.actors[0].0.clone();
        on_runtime(&rig.rt, async move {
            let start = Instant::now();
            for i in 0..iters {
                black_box(add(&actor, i).await);
            }
            start.elapsed()
        })
    })
}

/// `fanout_1to8`: N x `cast(Tick)` to each of 8 actors, then `cast(Done)` to each.
pub(crate) fn fanout() -> Runner {
    let rt = runtime();
    let latch = Latch::new(FAN_SUBS);
    let actors = rt.block_on(async {
        let mut actors = Vec::new();
        for _ in 0..FAN_SUBS {
            let sub = Sub {
                latch: latch.clone(),
            };
            actors.push(Actor::spawn(None, sub, ()).await.expect("spawn"));
        }
        actors
    });
    let rig = Rig { rt, actors };
    let expected = FAN_N * FAN_SUBS as u64;
    Box::new(move |iters| {
        let subs: Vec<ActorRef<SubMsg>> = rig.actors.iter().map(|(a, _)| a.clone()).collect();
        let latch = latch.clone();
        on_runtime(&rig.rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..FAN_N {
                    for sub in &subs {
                        sub.cast(SubMsg::Tick(i)).expect("ractor cast");
                    }
                }
                for sub in &subs {
                    sub.cast(SubMsg::Done).expect("ractor cast");
                }
                assert_eq!(latch.wait().await, expected);
            }
            start.elapsed()
        })
    })
}

/// `n` timed `call!(Add)` round trips.
pub(crate) fn ask_latency(n: usize) -> Vec<u64> {
    let rig = counter_rig();
    let actor = rig.actors[0].0.clone();
    on_runtime(&rig.rt, async move {
        let actor = &actor;
        time_round_trips(n, |i| add(actor, i)).await
    })
}

/// `n` timed `call!(Add)` round trips to A while a task loads B. `cast` has no back-pressure,
/// so the load goes in windows: 1024 `cast(Load)`, then a `call!(Flush)` round trip to B.
pub(crate) fn ask_latency_loaded(n: usize) -> Loaded {
    let rig = counter_rig();
    let actor = rig.actors[0].0.clone();
    on_runtime(&rig.rt, async move {
        let (sink, sink_handle) = Actor::spawn(None, Sink, ()).await.expect("spawn");
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn({
            let (stop, sink) = (stop.clone(), sink.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..CAPACITY {
                        sink.cast(SinkMsg::Load).expect("ractor cast");
                    }
                    call!(sink, SinkMsg::Flush).expect("ractor call");
                }
            }
        });
        let loaded = {
            let actor = &actor;
            under_load(time_round_trips(n, |i| add(actor, i))).await
        };
        stop.store(true, Ordering::Relaxed);
        load.await.expect("load task");
        sink.stop(None);
        let _ = sink_handle.await;
        loaded
    })
}

/// `n` x `Actor::spawn(None, Idle, ()).await` (unbounded mailboxes), then one `cast` to each.
pub(crate) fn spawn_idle(n: usize) -> SpawnReport {
    let rt = runtime();
    let report = on_runtime(&rt, async move {
        expect_pings(n);
        let rss_before = rss_bytes();
        let start = Instant::now();
        let mut actors = Vec::with_capacity(n);
        for _ in 0..n {
            actors.push(Actor::spawn(None, Idle, ()).await.expect("spawn"));
        }
        let spawn = start.elapsed();
        for (actor, _) in &actors {
            actor.cast(()).expect("ractor cast");
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
