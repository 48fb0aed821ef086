//! The baseline: hand-written tokio tasks, `mpsc::channel(CAPACITY)` mailboxes and `oneshot`
//! replies, doing the same work as the actors. Also the `tokio_envelope` control: the same
//! consumer with every message wrapped in eventdriven's `Envelope`, as an actor's mailbox slot is.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventdriven::Envelope;
use tokio::sync::{mpsc, oneshot};

use super::{
    expect_pings, on_runtime, rss_bytes, runtime, time_round_trips, under_load, wait_pinged, Latch,
    Loaded, Runner, SpawnReport, CAPACITY, FAN_N, FAN_SUBS, IDLE_CAPACITY, LOAD_HANDLED, TELL_N,
};

/// What the plain tokio counter receives: the bare payload.
pub(crate) enum CounterMsg {
    Inc(u64),
    Flush(oneshot::Sender<u64>),
    Add(u64, oneshot::Sender<u64>),
}

/// Spawns the counter task on the current runtime.
pub(crate) fn spawn_counter() -> mpsc::Sender<CounterMsg> {
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

async fn add(tx: &mpsc::Sender<CounterMsg>, i: u64) -> u64 {
    let (reply, rx) = oneshot::channel();
    tx.send(CounterMsg::Add(i, reply)).await.expect("send");
    rx.await.expect("reply")
}

/// `tell_1to1`: N x `send(Inc)` into the channel, then a flush with a `oneshot`.
pub(crate) fn tell() -> Runner {
    let rt = runtime();
    let tx = rt.block_on(async { spawn_counter() });
    Box::new(move |iters| {
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
}

/// `ask_round_trip`: `send(Add)` with a `oneshot`, awaiting it.
pub(crate) fn ask() -> Runner {
    let rt = runtime();
    let tx = rt.block_on(async { spawn_counter() });
    Box::new(move |iters| {
        let tx = tx.clone();
        on_runtime(&rt, async move {
            let start = Instant::now();
            for i in 0..iters {
                black_box(add(&tx, i).await);
            }
            start.elapsed()
        })
    })
}

#[derive(Clone, Debug)]
enum FanMsg {
    Tick(Arc<u64>),
    Done,
}

/// `fanout_1to8`: N x an `Arc` cloned into each of 8 channels, then a done marker.
pub(crate) fn fanout() -> Runner {
    let rt = runtime();
    let latch = Latch::new(FAN_SUBS);
    let txs: Vec<mpsc::Sender<FanMsg>> = rt.block_on(async {
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
                                sum = sum.wrapping_add(*ev);
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
    });
    let expected = FAN_N * FAN_SUBS as u64;
    Box::new(move |iters| {
        let (txs, latch) = (txs.clone(), latch.clone());
        on_runtime(&rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..FAN_N {
                    let ev = Arc::new(i);
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
}

/// `fanout_1to8` through one `tokio::sync::broadcast` channel (a control, not a contender):
/// each event is written once into a shared ring that all 8 receivers read. A broadcast
/// channel has no backpressure: a receiver that falls more than the capacity behind loses
/// events (`Lagged`). So that none is lost, its capacity holds a whole iteration (10 001
/// slots), which makes it unbounded in effect for this workload.
pub(crate) fn fanout_broadcast() -> Runner {
    let rt = runtime();
    let latch = Latch::new(FAN_SUBS);
    let tx = rt.block_on(async {
        let (tx, _) = tokio::sync::broadcast::channel::<FanMsg>(FAN_N as usize + 1);
        for _ in 0..FAN_SUBS {
            let mut rx = tx.subscribe();
            let latch = latch.clone();
            tokio::spawn(async move {
                let (mut seen, mut sum) = (0u64, 0u64);
                while let Ok(msg) = rx.recv().await {
                    match msg {
                        FanMsg::Tick(ev) => {
                            seen += 1;
                            sum = sum.wrapping_add(*ev);
                        }
                        FanMsg::Done => {
                            black_box(sum);
                            latch.arrive(std::mem::take(&mut seen));
                        }
                    }
                }
            });
        }
        tx
    });
    let expected = FAN_N * FAN_SUBS as u64;
    Box::new(move |iters| {
        let (tx, latch) = (tx.clone(), latch.clone());
        on_runtime(&rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..FAN_N {
                    tx.send(FanMsg::Tick(Arc::new(i))).expect("send");
                }
                tx.send(FanMsg::Done).expect("send");
                assert_eq!(latch.wait().await, expected);
            }
            start.elapsed()
        })
    })
}

/// `n` timed round trips to the counter task.
pub(crate) fn ask_latency(n: usize) -> Vec<u64> {
    let rt = runtime();
    let tx = rt.block_on(async { spawn_counter() });
    on_runtime(&rt, async move {
        let tx = &tx;
        time_round_trips(n, |i| add(tx, i)).await
    })
}

/// `n` timed round trips to the counter task while a task keeps B's channel full.
pub(crate) fn ask_latency_loaded(n: usize) -> Loaded {
    let rt = runtime();
    on_runtime(&rt, async move {
        let tx = spawn_counter();
        let (load_tx, mut load_rx) = mpsc::channel::<()>(CAPACITY);
        tokio::spawn(async move {
            while let Some(()) = load_rx.recv().await {
                LOAD_HANDLED.fetch_add(1, Ordering::Relaxed);
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn({
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    load_tx.send(()).await.expect("send");
                }
            }
        });
        let loaded = {
            let tx = &tx;
            under_load(time_round_trips(n, |i| add(tx, i))).await
        };
        stop.store(true, Ordering::Relaxed);
        load.await.expect("load task");
        loaded
    })
}

/// `n` tasks, each awaiting its own `mpsc::channel(16)`, then one message to each.
pub(crate) fn spawn_idle(n: usize) -> SpawnReport {
    let rt = runtime();
    let report = on_runtime(&rt, async move {
        expect_pings(n);
        let rss_before = rss_bytes();
        let start = Instant::now();
        let mut txs = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, mut rx) = mpsc::channel::<()>(IDLE_CAPACITY);
            tokio::spawn(async move {
                while let Some(()) = rx.recv().await {
                    super::pinged();
                }
            });
            txs.push(tx);
        }
        let spawn = start.elapsed();
        for tx in &txs {
            tx.send(()).await.expect("send");
        }
        wait_pinged().await;
        let ready = start.elapsed();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rss_after = rss_bytes();
        std::mem::forget(txs);
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

// ---------------------------------------------------------------------------------------------
// The `tokio_envelope` control
// ---------------------------------------------------------------------------------------------

/// The control's messages: each carries an eventdriven [`Envelope`] (fresh metadata per
/// message, moved with it), as the actor's mailbox does.
enum EnvelopeMsg {
    Inc(Envelope<u64>),
    Flush(oneshot::Sender<u64>),
    Add(Envelope<u64>, oneshot::Sender<u64>),
}

fn spawn_envelope_counter() -> mpsc::Sender<EnvelopeMsg> {
    let (tx, mut rx) = mpsc::channel::<EnvelopeMsg>(CAPACITY);
    tokio::spawn(async move {
        let (mut seen, mut sum) = (0u64, 0u64);
        while let Some(msg) = rx.recv().await {
            match msg {
                EnvelopeMsg::Inc(env) => {
                    let env = black_box(env);
                    seen += 1;
                    sum = sum.wrapping_add(env.message);
                }
                EnvelopeMsg::Flush(reply) => {
                    black_box(sum);
                    let _ = reply.send(std::mem::take(&mut seen));
                }
                EnvelopeMsg::Add(env, reply) => {
                    let env = black_box(env);
                    sum = sum.wrapping_add(env.message);
                    let _ = reply.send(sum);
                }
            }
        }
    });
    tx
}

/// `tell_1to1` for the control.
pub(crate) fn tell_envelope() -> Runner {
    let rt = runtime();
    let tx = rt.block_on(async { spawn_envelope_counter() });
    Box::new(move |iters| {
        let tx = tx.clone();
        on_runtime(&rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for i in 0..TELL_N {
                    tx.send(EnvelopeMsg::Inc(Envelope::new(i)))
                        .await
                        .expect("send");
                }
                let (reply, seen) = oneshot::channel();
                tx.send(EnvelopeMsg::Flush(reply)).await.expect("send");
                assert_eq!(seen.await.expect("flush"), TELL_N);
            }
            start.elapsed()
        })
    })
}

/// `ask_round_trip` for the control.
pub(crate) fn ask_envelope() -> Runner {
    let rt = runtime();
    let tx = rt.block_on(async { spawn_envelope_counter() });
    Box::new(move |iters| {
        let tx = tx.clone();
        on_runtime(&rt, async move {
            let start = Instant::now();
            for i in 0..iters {
                let (reply, rx) = oneshot::channel();
                tx.send(EnvelopeMsg::Add(Envelope::new(i), reply))
                    .await
                    .expect("send");
                black_box(rx.await.expect("reply"));
            }
            start.elapsed()
        })
    })
}
