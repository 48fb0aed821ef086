//! eventdriven: `#[handlers]` actors with `Mailbox::bounded`, driven through `App`
//! (`tell`, `send`, `publish`) only, the public API.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventdriven::prelude::*;
use tokio::runtime::Runtime;

use super::{
    expect_pings, on_runtime, rss_bytes, runtime, time_round_trips, under_load, wait_pinged, Latch,
    Loaded, Runner, SpawnReport, CAPACITY, FAN_N, FAN_SUBS, IDLE_CAPACITY, LOAD_HANDLED, TELL_N,
};

/// Fire-and-forget work item.
#[derive(Command, Debug)]
pub(crate) struct Inc(pub(crate) u64);

/// Ends a `tell` iteration: replies with the number of `Inc` seen since the last flush.
#[derive(Command, Debug)]
#[command(reply = u64)]
pub(crate) struct Flush;

/// A request whose reply is awaited.
#[derive(Command, Debug)]
#[command(reply = u64)]
pub(crate) struct Add(pub(crate) u64);

/// The fanned-out event.
#[derive(Event, Clone, Debug)]
pub(crate) struct Tick(pub(crate) u64);

/// Ends a fan-out iteration.
#[derive(Event, Clone, Debug)]
pub(crate) struct Done;

/// What the background producer publishes to actor B in the loaded latency run.
#[derive(Event, Clone, Debug)]
pub(crate) struct Load;

/// Sent once to every idle actor.
#[derive(Event, Clone, Debug)]
pub(crate) struct Ping;

/// Target of `tell_1to1` and `ask_round_trip`.
#[derive(Default)]
pub(crate) struct Counter {
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
pub(crate) struct Sub {
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

/// Actor B of the loaded latency run: counts what it gets.
pub(crate) struct Sink;

#[handlers]
impl Sink {
    #[subscribe]
    fn on_load(&mut self, _ev: &Load) {
        LOAD_HANDLED.fetch_add(1, Ordering::Relaxed);
    }
}

/// An actor that does nothing but acknowledge its `Ping`.
pub(crate) struct Idle;

#[handlers]
impl Idle {
    #[subscribe]
    fn on_ping(&mut self, _ev: &Ping) {
        super::pinged();
    }
}

/// A runtime and an app on it; shuts the app down when dropped.
struct Rig {
    rt: Runtime,
    app: App,
}

impl Rig {
    /// Builds the app `build` returns on a fresh runtime.
    fn new(build: impl std::future::Future<Output = eventdriven::Result<App>>) -> Self {
        let rt = runtime();
        let app = rt.block_on(build).expect("build app");
        Self { rt, app }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.app.shutdown());
    }
}

async fn counter_app() -> eventdriven::Result<App> {
    App::builder()
        .actor_with(Counter::default(), Mailbox::bounded(CAPACITY))
        .build()
        .await
}

/// `tell_1to1`: N x `app.tell(Inc)`, then `app.send(Flush)`.
pub(crate) fn tell() -> Runner {
    let rig = Rig::new(counter_app());
    Box::new(move |iters| {
        let app = rig.app.clone();
        on_runtime(&rig.rt, async move {
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
}

/// `ask_round_trip`: `app.send(Add)` awaiting the reply.
pub(crate) fn ask() -> Runner {
    let rig = Rig::new(counter_app());
    Box::new(move |iters| {
        let app = rig.app.clone();
        on_runtime(&rig.rt, async move {
            let start = Instant::now();
            for i in 0..iters {
                black_box(app.send(Add(i)).await.expect("send"));
            }
            start.elapsed()
        })
    })
}

/// `fanout_1to8`: N x `app.publish(Tick)` to 8 subscribers, then `publish(Done)`.
pub(crate) fn fanout() -> Runner {
    let latch = Latch::new(FAN_SUBS);
    let mut builder = App::builder();
    for _ in 0..FAN_SUBS {
        let sub = Sub {
            seen: 0,
            sum: 0,
            latch: latch.clone(),
        };
        builder = builder.actor_with(sub, Mailbox::bounded(CAPACITY));
    }
    let rig = Rig::new(builder.build());
    let expected = FAN_N * FAN_SUBS as u64;
    Box::new(move |iters| {
        let (app, latch) = (rig.app.clone(), latch.clone());
        on_runtime(&rig.rt, async move {
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
}

/// `n` timed `app.send(Add)` round trips.
pub(crate) fn ask_latency(n: usize) -> Vec<u64> {
    let rig = Rig::new(counter_app());
    let app = rig.app.clone();
    on_runtime(&rig.rt, async move {
        let app = &app;
        time_round_trips(n, |i| async move { app.send(Add(i)).await.expect("send") }).await
    })
}

/// `n` timed `app.send(Add)` round trips to A while a task keeps publishing `Load` to B.
pub(crate) fn ask_latency_loaded(n: usize) -> Loaded {
    let rig = Rig::new(
        App::builder()
            .actor_with(Counter::default(), Mailbox::bounded(CAPACITY))
            .actor_with(Sink, Mailbox::bounded(CAPACITY))
            .build(),
    );
    let app = rig.app.clone();
    on_runtime(&rig.rt, async move {
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn({
            let (app, stop) = (app.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    app.publish(Load).await.expect("publish");
                }
            }
        });
        let loaded = {
            let app = &app;
            under_load(time_round_trips(n, |i| async move {
                app.send(Add(i)).await.expect("send")
            }))
            .await
        };
        stop.store(true, Ordering::Relaxed);
        load.await.expect("load task");
        loaded
    })
}

/// `n` x `.actor_with(Idle, Mailbox::bounded(16))`, `build().await`, then one `publish(Ping)`
/// that every one of them handles.
pub(crate) fn spawn_idle(n: usize) -> SpawnReport {
    let rt = runtime();
    let report = on_runtime(&rt, async move {
        expect_pings(n);
        let rss_before = rss_bytes();
        let start = Instant::now();
        let mut builder = App::builder();
        for _ in 0..n {
            builder = builder.actor_with(Idle, Mailbox::bounded(IDLE_CAPACITY));
        }
        let app = builder.build().await.expect("build app");
        let spawn = start.elapsed();
        app.publish(Ping).await.expect("publish");
        wait_pinged().await;
        let ready = start.elapsed();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rss_after = rss_bytes();
        // Keep the actors alive until measured; the process exits right after.
        std::mem::forget(app);
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
