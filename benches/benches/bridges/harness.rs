//! What every broker's benchmarks share: the event, the raw encoding, the two workloads and
//! the criterion set-up. A broker is a [`Broker`]: its raw client, and a bridge over the same
//! namespace.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use eventdriven::bridge::{Bridge, BridgeHandle};
use eventdriven::prelude::*;
use eventdriven::{MessageId, Timestamp};
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// Events per iteration, unless the broker says otherwise ([`Broker::EVENTS`]).
pub(crate) const EVENTS: u64 = 2_000;
/// Publishes in flight at once in the raw pipelined rows (`ED_BRIDGE_WINDOW`).
pub(crate) fn window() -> usize {
    std::env::var("ED_BRIDGE_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(64)
}
/// Messages a consumer holds unacked at once: the bridge's `max_in_flight` default, and the
/// raw consumers' concurrency.
pub(crate) const IN_FLIGHT: usize = 32;
/// The longest any wait of the benchmark may take.
const WAIT: Duration = Duration::from_secs(120);
/// The CloudEvents `source` of the raw rows (the bridges use `/eventdriven/<bridge>`, as long).
pub(crate) const SOURCE: &str = "/eventdriven/bench";
/// The event's name, and its subject / routing key.
pub(crate) const NAME: &str = "bench.tick";

/// The benchmarked event: ~200 bytes of JSON data.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "bench.tick")]
pub(crate) struct Tick {
    seq: u64,
    pad: String,
}

impl Tick {
    pub(crate) fn new(seq: u64) -> Self {
        Self {
            seq,
            pad: "x".repeat(180),
        }
    }
}

/// The CloudEvents document the raw rows send: the attributes the bridge's structured mode
/// writes, built with serde as a hand-written producer would.
#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: &'a str,
    source: &'static str,
    #[serde(rename = "type")]
    ty: &'static str,
    time: &'a str,
    datacontenttype: &'static str,
    schemaversion: &'static str,
    correlationid: &'a str,
    data: &'a Tick,
}

/// What the raw consumers decode.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    ty: String,
    data: Tick,
}

/// One raw message: its id (the broker's deduplication id where it has one) and body.
pub(crate) struct Encoded {
    // Kafka and SQS (standard queue) publishes carry no id of their own, as the bridge's.
    #[cfg_attr(not(any(feature = "nats", feature = "amqp")), allow(dead_code))]
    pub(crate) id: String,
    pub(crate) body: Vec<u8>,
}

/// Encodes event `seq` as the raw rows send it.
pub(crate) fn encode(seq: u64) -> Encoded {
    let id = MessageId::new().to_string();
    let time = Timestamp::now().to_string();
    let tick = Tick::new(seq);
    let body = serde_json::to_vec(&CloudEvent {
        specversion: "1.0",
        id: &id,
        source: SOURCE,
        ty: NAME,
        time: &time,
        datacontenttype: "application/json",
        schemaversion: "1",
        correlationid: &id,
        data: &tick,
    })
    .expect("encodes");
    Encoded { id, body }
}

/// Decodes a raw message as a consumer must (panics on anything else: the benchmark sent it).
pub(crate) fn decode(body: &[u8]) {
    let incoming: Incoming = serde_json::from_slice(body).expect("a CloudEvents document");
    assert_eq!(incoming.ty, NAME);
    std::hint::black_box(incoming.data.seq);
}

/// A count that can be waited for.
#[derive(Default)]
pub(crate) struct Count {
    n: AtomicU64,
    changed: Notify,
}

impl Count {
    pub(crate) fn add(&self) {
        self.n.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub(crate) fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }

    /// Waits until the count is at least `target` (at most [`WAIT`]).
    pub(crate) async fn reach(&self, target: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.get() < target {
            if tokio::time::timeout_at(deadline, self.changed.notified())
                .await
                .is_err()
            {
                panic!("only {} of {target} events within {WAIT:?}", self.get());
            }
        }
    }
}

/// A broker: its raw client, over a namespace of the benchmark's own, and a bridge over the
/// same namespace.
pub(crate) trait Broker: Sized + Send + Sync + 'static {
    /// The row's name (`nats`).
    const NAME: &'static str;
    /// The variable with the broker's URL (set by the broker's `scripts/with-*.sh`).
    const URL_VAR: &'static str;
    /// Events per iteration (fewer where one-at-a-time publishing is very slow).
    const EVENTS: u64 = EVENTS;

    /// Connects the raw client and creates the namespace `space` (a stream and its subjects,
    /// an exchange) as the bridge would.
    fn connect(url: &str, space: &str) -> impl Future<Output = Self> + Send;

    /// A bridge named `name` over the same namespace, nothing published or consumed yet.
    fn bridge(&self, name: &str) -> Bridge;

    /// Empties the namespace (between iterations, outside the timing).
    fn purge(&self) -> impl Future<Output = ()> + Send;

    /// Publishes one message and waits for the broker's acknowledgement.
    fn publish(&self, message: Encoded) -> impl Future<Output = ()> + Send + '_;

    /// Most messages the raw client sends in one call in the pipelined rows (SQS: 10, one
    /// `SendMessageBatch`, as the bridge sends them); 1 where the client has no batch call.
    const BATCH: usize = 1;
    /// Whether the bridge's ack completes before the broker confirmed it (SQS hands deletes
    /// to a batching deleter): the end-to-end row then also waits until the broker reports
    /// nothing unacked, as the raw consumer counts a message only once its ack answered.
    const ACKS_LATER: bool = false;

    /// Publishes up to [`BATCH`](Self::BATCH) messages in one call and waits for the
    /// broker's acknowledgement of all.
    fn publish_batch(&self, messages: Vec<Encoded>) -> impl Future<Output = ()> + Send + '_ {
        async move {
            for message in messages {
                self.publish(message).await;
            }
        }
    }

    /// Starts a consumer of `group` (created before this returns, so it gets every later
    /// message) that takes up to [`IN_FLIGHT`] messages at once, decodes each, acks it, and
    /// then counts it in `seen`.
    fn consume(
        &self,
        group: &str,
        seen: Arc<Count>,
    ) -> impl Future<Output = tokio::task::JoinHandle<()>> + Send;

    /// Deletes the namespace.
    fn remove(&self) -> impl Future<Output = ()> + Send;
}

/// A name no earlier run used (the brokers outlive runs).
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}{}x{}x{}",
        std::process::id(),
        Timestamp::now().as_unix_nanos() % 1_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Counts what the consuming app's subscriber handled.
struct Sink {
    seen: Arc<Count>,
}

#[handlers]
impl Sink {
    #[subscribe]
    async fn on(&mut self, tick: &Tick) {
        std::hint::black_box(tick.seq);
        self.seen.add();
    }
}

/// Waits until `ready` holds for the bridge's stats, polling every millisecond (tokio's timer
/// resolution: at most ~1 ms added to an iteration of tens of ms).
async fn until(bridge: &BridgeHandle, ready: impl Fn(&eventdriven::bridge::BridgeStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = bridge.stats();
        if ready(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bridge `{}` not there within {WAIT:?}: {stats:?}",
            bridge.name()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the broker reports nothing unacked for the bridge's group, asking every
/// millisecond.
async fn settled_at_broker(bridge: &BridgeHandle) {
    let deadline = Instant::now() + WAIT;
    loop {
        let lag = bridge.lag().await.expect("the lag").expect("a lag");
        if lag.unacked == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bridge `{}`: still unacked at the broker after {WAIT:?}: {lag:?}",
            bridge.name()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Publishes `n` events through the raw client, one at a time (`window` 1) or with up to
/// `window` events in flight (in calls of [`Broker::BATCH`], the window rounded up to whole
/// calls), each encoded as it goes.
async fn raw_publish<B: Broker>(broker: &B, n: u64, window: usize) {
    if window <= 1 {
        for seq in 0..n {
            broker.publish(encode(seq)).await;
        }
    } else if B::BATCH <= 1 {
        // `buffered` starts the publishes in order and keeps `window` of them going.
        futures_util::stream::iter(0..n)
            .map(|seq| broker.publish(encode(seq)))
            .buffered(window)
            .for_each(|()| async {})
            .await;
    } else {
        let batch = B::BATCH as u64;
        futures_util::stream::iter((0..n).step_by(B::BATCH))
            .map(|first| broker.publish_batch((first..n.min(first + batch)).map(encode).collect()))
            .buffered(window.div_ceil(B::BATCH))
            .for_each(|()| async {})
            .await;
    }
}

/// The benchmarks and the runtime they run on.
pub(crate) struct Run {
    criterion: Criterion,
    rt: Runtime,
}

impl Run {
    pub(crate) fn new() -> Self {
        let criterion = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .configure_from_args();
        // Two workers, as in the other benches.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        Self { criterion, rt }
    }

    /// Both groups of broker `B`, if its server is there.
    pub(crate) fn broker<B: Broker>(&mut self) {
        let Some(url) = std::env::var(B::URL_VAR).ok().filter(|u| !u.is_empty()) else {
            eprintln!(
                "!!!!!!!! SKIPPED: the {} bridge benchmarks ({} is not set; run through \
                 scripts/bench-bridges.sh) !!!!!!!!",
                B::NAME,
                B::URL_VAR
            );
            return;
        };
        self.publish::<B>(&url);
        self.end_to_end::<B>(&url);
    }

    fn publish<B: Broker>(&mut self, url: &str) {
        let rt = &self.rt;
        let mut group = self
            .criterion
            .benchmark_group(format!("bridge_{}_publish", B::NAME));
        group
            .throughput(Throughput::Elements(B::EVENTS))
            .sampling_mode(SamplingMode::Flat);

        let broker = rt.block_on(B::connect(url, &unique("bp")));
        let app = rt.block_on(async {
            App::builder()
                .bridge(broker.bridge("out").publish::<Tick>())
                .build()
                .await
                .expect("the producing app starts")
        });
        let bridge = app.bridge("out").expect("the bridge");
        group.bench_function("eventdriven", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        broker.purge().await;
                        let target = bridge.stats().published + B::EVENTS;
                        let start = Instant::now();
                        for seq in 0..B::EVENTS {
                            app.publish(Tick::new(seq)).await.expect("published");
                        }
                        until(&bridge, |s| s.published >= target).await;
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
        rt.block_on(async {
            app.shutdown().await.expect("shuts down");
            broker.remove().await;
        });

        for (row, window) in [("raw_sequential", 1), ("raw_pipelined", window())] {
            let broker = rt.block_on(B::connect(url, &unique("rp")));
            group.bench_function(row, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            broker.purge().await;
                            let start = Instant::now();
                            raw_publish(&broker, B::EVENTS, window).await;
                            total += start.elapsed();
                        }
                        total
                    })
                })
            });
            rt.block_on(broker.remove());
        }
        group.finish();
    }

    fn end_to_end<B: Broker>(&mut self, url: &str) {
        let rt = &self.rt;
        let mut group = self
            .criterion
            .benchmark_group(format!("bridge_{}_e2e", B::NAME));
        group
            .throughput(Throughput::Elements(B::EVENTS))
            .sampling_mode(SamplingMode::Flat);

        let broker = rt.block_on(B::connect(url, &unique("be")));
        let seen = Arc::new(Count::default());
        let (producer, consumer) = rt.block_on(async {
            let consumer = App::builder()
                .actor(Sink { seen: seen.clone() })
                .bridge(
                    broker
                        .bridge("in")
                        .consume::<Tick>()
                        .group("bench")
                        .max_in_flight(IN_FLIGHT),
                )
                .build()
                .await
                .expect("the consuming app starts");
            let producer = App::builder()
                .bridge(broker.bridge("out").publish::<Tick>())
                .build()
                .await
                .expect("the producing app starts");
            (producer, consumer)
        });
        let inbound = consumer.bridge("in").expect("the bridge");
        group.bench_function("eventdriven", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let target = seen.get() + B::EVENTS;
                        let acked = inbound.stats().acked + B::EVENTS;
                        let start = Instant::now();
                        for seq in 0..B::EVENTS {
                            producer.publish(Tick::new(seq)).await.expect("published");
                        }
                        seen.reach(target).await;
                        until(&inbound, |s| s.acked >= acked && s.in_flight == 0).await;
                        if B::ACKS_LATER {
                            settled_at_broker(&inbound).await;
                        }
                        total += start.elapsed();
                        broker.purge().await;
                    }
                    total
                })
            })
        });
        rt.block_on(async {
            producer.shutdown().await.expect("shuts down");
            consumer.shutdown().await.expect("shuts down");
            broker.remove().await;
        });

        for (row, window) in [("raw_sequential", 1), ("raw_pipelined", window())] {
            let broker = rt.block_on(B::connect(url, &unique("re")));
            let seen = Arc::new(Count::default());
            let task = rt.block_on(broker.consume("bench", seen.clone()));
            group.bench_function(row, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let target = seen.get() + B::EVENTS;
                            let start = Instant::now();
                            raw_publish(&broker, B::EVENTS, window).await;
                            seen.reach(target).await;
                            total += start.elapsed();
                            broker.purge().await;
                        }
                        total
                    })
                })
            });
            task.abort();
            rt.block_on(broker.remove());
        }
        group.finish();
    }

    pub(crate) fn finish(self) {
        self.criterion.final_summary();
    }
}
