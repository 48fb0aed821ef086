//! The bridge conformance suite: one set of tests, run against every broker transport
//! (`per_broker!`; today NATS JetStream, Redis Streams, RabbitMQ, Kafka and SQS), on real servers
//! started by the project's scripts.
//!
//! - a round trip between two apps, every CloudEvents attribute checked on the wire, in
//!   structured and binary mode, correlation and causation preserved;
//! - events appended to a store reach the broker through the relay, also across SIGKILLs of
//!   the process that appends and relays them;
//! - two OS processes of one consumer group split 10,000 events: none lost, none twice;
//! - the messages a consumer process held when it was killed (SIGKILL) go to another process
//!   of its group after the ack wait;
//! - the broker killed for 5 s mid-stream and restarted (Kafka and SQS: frozen for 5 s, see
//!   the test): everything arrives;
//! - malformed, unknown, oversize, incomplete, undecodable and invalid (refused by the app's
//!   validation hook) input is dead-lettered with the reason and the consumer goes on;
//! - a failing subscriber is retried, then dead-lettered, and the broker acked;
//! - a message not done in time is redelivered by the broker, and dead-lettered after the
//!   bridge's redelivery policy;
//! - a slow subscriber with a tiny mailbox bounds what is in flight; lag is reported;
//! - an app shut down mid-stream loses nothing: another process of the group takes the rest;
//! - name patterns and partition keys choose what goes out, and how;
//! - an event the broker never acknowledged is dead-lettered, and a retry publishes it.

#![cfg(any(
    feature = "nats",
    feature = "redis",
    feature = "amqp",
    feature = "kafka",
    feature = "sqs"
))]

mod brokers;
// The child processes and temp dirs of the kill -9 tests (with code for `eventdriven-tests`'
// `postgres` feature, which this package does not have).
#[allow(unexpected_cfgs)]
#[path = "../../tests/kill/mod.rs"]
mod kill;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brokers::{eventually, per_broker, Broker, Kind, Tap};
use eventdriven::bridge::{Mode, INCOMING_HEADER};
use eventdriven::codec::{self, Limits};
use eventdriven::delivery::{Backoff, RetryPolicy};
use eventdriven::prelude::*;
use eventdriven::projection::Relay;
use eventdriven::store::{EventData, ExpectedVersion, Store};
use kill::{ChildGuard, TempDir, XorShift};
use serde_json::{json, Value};

per_broker!(
    round_trip_keeps_every_attribute,
    stored_events_reach_the_broker_through_the_relay,
    two_processes_split_the_work,
    work_sharing_child,
    a_killed_consumers_messages_go_to_the_others,
    stuck_consumer_child,
    a_broker_outage_loses_nothing,
    malformed_input_is_dead_lettered_and_the_consumer_goes_on,
    a_failing_subscriber_is_retried_then_dead_lettered,
    a_message_not_done_in_time_is_redelivered_then_dead_lettered,
    a_slow_subscriber_bounds_what_is_in_flight,
    shutdown_mid_stream_loses_nothing,
    name_patterns_and_keys_choose_what_goes_out,
    an_unreachable_broker_dead_letters_outbound_events_for_a_retry,
    a_broker_that_cannot_be_reached_fails_the_build,
    stored_events_reach_the_broker_across_kill_9,
    relay_crash_child,
);

const WAIT: Duration = Duration::from_secs(30);

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "order.placed", version = 2)]
struct OrderPlaced {
    order: u64,
}

/// Records every `order.placed` with its metadata.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(u64, Metadata)>>>);

impl Seen {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn orders(&self) -> Vec<u64> {
        self.0.lock().unwrap().iter().map(|(o, _)| *o).collect()
    }
}

struct Recorder {
    seen: Seen,
}

#[handlers]
impl Recorder {
    #[subscribe(idempotent)]
    fn placed(&mut self, event: &OrderPlaced, ctx: &mut Context<Self>) {
        self.seen
            .0
            .lock()
            .unwrap()
            .push((event.order, ctx.metadata().clone()));
    }
}

async fn recorder_app(broker: &Broker, group: &str, seen: &Seen) -> App {
    App::builder()
        .actor(Recorder { seen: seen.clone() })
        .bridge(broker.bridge("in").consume_matching("order.*").group(group))
        .build()
        .await
        .unwrap()
}

async fn producer_app(broker: &Broker) -> App {
    App::builder()
        .bridge(broker.bridge("out").publish::<OrderPlaced>())
        .build()
        .await
        .unwrap()
}

/// Makes consumer group `group` exist at the broker before the events it must get are
/// published, by starting one consumer of it once: RabbitMQ keeps only what reaches a queue,
/// and a group's queue is declared by its first consumer (the other brokers keep the stream
/// and read it from its start).
async fn prepare_group(broker: &Broker, group: &str) {
    let seen = Seen::default();
    recorder_app(broker, group, &seen)
        .await
        .shutdown()
        .await
        .unwrap();
}

async fn settled(app: &App, name: &str) -> bool {
    let bridge = app.bridge(name).unwrap();
    for _ in 0..300 {
        if let Ok(Some(lag)) = bridge.lag().await {
            if lag.pending == 0 && lag.unacked == 0 {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn round_trip_keeps_every_attribute(kind: Kind) {
    for mode in [Mode::Structured, Mode::Binary] {
        let Some(broker) = Broker::shared(kind) else {
            return;
        };
        let seen = Seen::default();
        let consumer = recorder_app(&broker, "rt", &seen).await;
        let mut tap = Tap::new(&broker).await;
        let producer = App::builder()
            .bridge(
                broker
                    .bridge("out")
                    .mode(mode)
                    .source("/shop/orders")
                    .publish::<OrderPlaced>(),
            )
            .build()
            .await
            .unwrap();

        let cause = Metadata::new();
        let mut meta = Metadata::caused_by(&cause);
        meta.headers.insert("tenant", "acme");
        producer
            .publish_envelope(Envelope::with_meta(OrderPlaced { order: 7 }, meta.clone()))
            .await
            .unwrap();

        // On the wire: CloudEvents 1.0, every attribute.
        let raw = tap.next().await;
        assert_eq!(raw.name(), "order.placed");
        let (headers, body, header) = (&raw.headers, &raw.body, |name: &str| raw.header(name));
        let attributes: HashMap<String, String> = match mode {
            Mode::Structured => {
                assert_eq!(
                    header("content-type").as_deref(),
                    Some("application/cloudevents+json")
                );
                let document: Value = serde_json::from_slice(body).unwrap();
                assert_eq!(document["data"], json!({ "order": 7 }));
                document
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            }
            _ => {
                assert_eq!(
                    serde_json::from_slice::<Value>(body).unwrap(),
                    json!({ "order": 7 })
                );
                assert_eq!(header("content-type").as_deref(), Some("application/json"));
                headers
                    .iter()
                    .filter_map(|(n, v)| Some((n.strip_prefix("ce-")?.to_owned(), v.clone())))
                    .collect()
            }
        };
        let expect = [
            ("specversion", "1.0".to_owned()),
            ("id", meta.id.to_string()),
            ("source", "/shop/orders".to_owned()),
            ("type", "order.placed".to_owned()),
            ("time", meta.timestamp.to_string()),
            ("schemaversion", "2".to_owned()),
            ("correlationid", cause.correlation_id.to_string()),
            ("causationid", cause.id.to_string()),
        ];
        for (name, value) in expect {
            assert_eq!(
                attributes.get(name),
                Some(&value),
                "{mode:?}: attribute {name}"
            );
        }

        // In the other app: the same event with the same metadata.
        assert!(
            eventually(WAIT, || seen.len() == 1).await,
            "{mode:?}: not received"
        );
        let (order, got) = seen.0.lock().unwrap()[0].clone();
        assert_eq!(order, 7);
        assert_eq!(
            (got.id, got.correlation_id, got.causation_id, got.timestamp),
            (
                meta.id,
                cause.correlation_id,
                Some(cause.id),
                meta.timestamp
            )
        );
        assert_eq!(got.headers.get("tenant"), Some("acme"));
        assert_eq!(got.headers.get(INCOMING_HEADER), Some("in"));

        assert!(settled(&consumer, "in").await, "{mode:?}: not acked");
        // The broker may deliver before the producer has its publish acknowledged.
        let out = producer.bridge("out").unwrap();
        assert!(
            eventually(WAIT, || out.stats().published == 1).await,
            "{mode:?}: publish not acknowledged"
        );
        let (out, inn) = (
            producer.bridge("out").unwrap().stats(),
            consumer.bridge("in").unwrap().stats(),
        );
        assert_eq!((out.published, inn.received, inn.acked), (1, 1, 1));
        producer.shutdown().await.unwrap();
        consumer.shutdown().await.unwrap();
    }
}

async fn stored_events_reach_the_broker_through_the_relay(kind: Kind) {
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    let store = Store::memory();
    prepare_group(&broker, "relayed").await;
    let producer = producer_app(&broker).await;
    let relay = Relay::new(store.clone(), &producer).start().await.unwrap();
    let mut last = 0;
    for order in 0..50 {
        let event = EventData::from_event(&OrderPlaced { order }).unwrap();
        let at = store
            .append(
                &format!("order-{order}"),
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .unwrap();
        last = at.last_position;
    }
    // The relay's checkpoint passes an event only once the broker acknowledged it.
    assert!(relay.wait_for(last, WAIT).await);
    assert_eq!(producer.bridge("out").unwrap().stats().published, 50);
    relay.stop().await;
    producer.shutdown().await.unwrap();

    let seen = Seen::default();
    let consumer = recorder_app(&broker, "relayed", &seen).await;
    assert!(eventually(WAIT, || seen.len() == 50).await);
    let mut orders = seen.orders();
    orders.sort_unstable();
    assert_eq!(orders, (0..50).collect::<Vec<_>>());
    consumer.shutdown().await.unwrap();
}

// --- two processes ---------------------------------------------------------------------------

const EVENTS: u64 = 10_000;
const CHILD_DIR: &str = "EVENTDRIVEN_BRIDGE_CHILD_DIR";
const CHILD_NAME: &str = "EVENTDRIVEN_BRIDGE_CHILD_NAME";
const CHILD_URL: &str = "EVENTDRIVEN_BRIDGE_CHILD_URL";
const CHILD_SPACE: &str = "EVENTDRIVEN_BRIDGE_CHILD_SPACE";

/// The lines of the children's logs: one order per handled event.
fn handled_by(dir: &std::path::Path, name: &str) -> Vec<u64> {
    std::fs::read_to_string(dir.join(format!("{name}.handled")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

async fn two_processes_split_the_work(kind: Kind) {
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    let dir = TempDir::new("eventdriven-bridge-work");
    let dir_text = dir.0.to_str().unwrap().to_owned();
    let test = format!("{}::work_sharing_child", format!("{kind:?}").to_lowercase());
    let mut children: Vec<ChildGuard> = ["a", "b"]
        .iter()
        .map(|name| {
            ChildGuard::spawn(
                &test,
                dir.0.join(format!("{name}.log")),
                &[
                    (CHILD_DIR, &dir_text),
                    (CHILD_NAME, name),
                    (CHILD_URL, &broker.url),
                    (CHILD_SPACE, &broker.space),
                ],
            )
        })
        .collect();
    // Both consume before the first event, so the split is the broker's doing.
    let ready = || {
        ["a", "b"]
            .iter()
            .all(|n| dir.0.join(format!("{n}.ready")).exists())
    };
    assert!(
        eventually(Duration::from_secs(60), ready).await,
        "children not ready: {}",
        children.iter().map(ChildGuard::output).collect::<String>()
    );

    let producer = producer_app(&broker).await;
    for order in 0..EVENTS {
        producer.publish(OrderPlaced { order }).await.unwrap();
    }
    let all = || {
        let mut union: HashSet<u64> = handled_by(&dir.0, "a").into_iter().collect();
        union.extend(handled_by(&dir.0, "b"));
        union.len() as u64 == EVENTS
    };
    let arrived = eventually(Duration::from_secs(120), all).await;
    std::fs::write(dir.0.join("stop"), b"").unwrap();
    for child in &mut children {
        let status = child.wait_for(Duration::from_secs(30));
        assert!(
            status.is_some_and(|s| s.success()),
            "child failed: {status:?}\n{}",
            child.output()
        );
    }
    let (a, b) = (handled_by(&dir.0, "a"), handled_by(&dir.0, "b"));
    assert!(
        arrived,
        "lost events: a {} + b {} of {EVENTS}",
        a.len(),
        b.len()
    );
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len() as u64, EVENTS, "some events lost");
    assert_eq!(
        (a.len() + b.len()) as u64,
        EVENTS,
        "some events handled twice (a {}, b {})",
        a.len(),
        b.len()
    );
    assert!(
        !a.is_empty() && !b.is_empty(),
        "one process did all the work: a {}, b {}",
        a.len(),
        b.len()
    );
    eprintln!("split: a {} / b {}", a.len(), b.len());
    producer.shutdown().await.unwrap();
}

struct Sink {
    out: Arc<Mutex<std::fs::File>>,
}

#[handlers]
impl Sink {
    #[subscribe(idempotent)]
    fn placed(&mut self, event: &OrderPlaced) {
        writeln!(self.out.lock().unwrap(), "{}", event.order).unwrap();
    }
}

/// Run alone with the `EVENTDRIVEN_BRIDGE_CHILD_*` variables by
/// [`two_processes_split_the_work`]: one consumer process. Without them, a no-op.
async fn work_sharing_child(kind: Kind) {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let var = |name: &str| std::env::var(name).unwrap();
    let name = var(CHILD_NAME);
    let broker = Broker::at(kind, var(CHILD_URL), var(CHILD_SPACE));
    let out = std::fs::File::create(dir.join(format!("{name}.handled"))).unwrap();
    let app = App::builder()
        .actor(Sink {
            out: Arc::new(Mutex::new(out)),
        })
        .bridge(
            broker
                .bridge("in")
                .consume::<OrderPlaced>()
                .group("workers")
                .max_in_flight(32),
        )
        .build()
        .await
        .unwrap();
    std::fs::write(dir.join(format!("{name}.ready")), b"").unwrap();
    let stop = dir.join("stop");
    assert!(
        eventually(Duration::from_secs(180), || stop.exists()).await,
        "never told to stop"
    );
    println!("{name}: {:?}", app.bridge("in").unwrap().stats());
    app.shutdown().await.unwrap();
}

// --- a consumer killed while it holds messages ---------------------------------------------------

/// Takes every event and never finishes it (writing its order down first).
struct Stuck {
    out: Arc<Mutex<std::fs::File>>,
}

#[handlers]
impl Stuck {
    #[subscribe]
    async fn placed(&mut self, event: &OrderPlaced) {
        writeln!(self.out.lock().unwrap(), "{}", event.order).unwrap();
        std::future::pending::<()>().await;
    }
}

/// The events a consumer holds (received, never acked) when it is killed are delivered to
/// another process of its group once the ack wait is over (Redis: claimed from the dead
/// consumer's pending list; NATS: redelivered by the server).
async fn a_killed_consumers_messages_go_to_the_others(kind: Kind) {
    const N: u64 = 20;
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    let dir = TempDir::new("eventdriven-bridge-stuck");
    let dir_text = dir.0.to_str().unwrap().to_owned();
    let test = format!(
        "{}::stuck_consumer_child",
        format!("{kind:?}").to_lowercase()
    );
    let mut child = ChildGuard::spawn(
        &test,
        dir.0.join("stuck.log"),
        &[
            (CHILD_DIR, &dir_text),
            (CHILD_NAME, "stuck"),
            (CHILD_URL, &broker.url),
            (CHILD_SPACE, &broker.space),
        ],
    );
    let ready = dir.0.join("stuck.ready");
    assert!(
        eventually(Duration::from_secs(60), || ready.exists()).await,
        "child not ready: {}",
        child.output()
    );
    let producer = producer_app(&broker).await;
    for order in 0..N {
        producer.publish(OrderPlaced { order }).await.unwrap();
    }
    // It holds a message (more wait in its mailbox and in flight), then dies.
    assert!(
        eventually(WAIT, || !handled_by(&dir.0, "stuck").is_empty()).await,
        "the child took nothing: {}",
        child.output()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.child.kill().unwrap();
    assert!(child.wait_for(Duration::from_secs(10)).is_some());

    let seen = Seen::default();
    let consumer = App::builder()
        .actor(Recorder { seen: seen.clone() })
        .bridge(
            broker
                .bridge("in")
                .consume::<OrderPlaced>()
                .group("stuck")
                .ack_wait(Duration::from_secs(1)),
        )
        .build()
        .await
        .unwrap();
    let all = || seen.orders().into_iter().collect::<HashSet<_>>().len() as u64 == N;
    assert!(
        eventually(WAIT, all).await,
        "{} of {N} after the kill ({} held by the killed process)",
        seen.len(),
        handled_by(&dir.0, "stuck").len()
    );
    assert!(settled(&consumer, "in").await);
    let stats = consumer.bridge("in").unwrap().stats();
    assert!(
        stats.received >= N && consumer.dead_letters().is_empty(),
        "{stats:?}"
    );
    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

/// Run alone by [`a_killed_consumers_messages_go_to_the_others`] with its variables: a consumer
/// whose subscriber never finishes, until it is killed. Without them, a no-op.
async fn stuck_consumer_child(kind: Kind) {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let var = |name: &str| std::env::var(name).unwrap();
    let name = var(CHILD_NAME);
    let broker = Broker::at(kind, var(CHILD_URL), var(CHILD_SPACE));
    let out = std::fs::File::create(dir.join(format!("{name}.handled"))).unwrap();
    let _app = App::builder()
        .actor(Stuck {
            out: Arc::new(Mutex::new(out)),
        })
        .bridge(
            broker
                .bridge("in")
                .consume::<OrderPlaced>()
                .group("stuck")
                .ack_wait(Duration::from_secs(1))
                .max_in_flight(8),
        )
        .build()
        .await
        .unwrap();
    std::fs::write(dir.join(format!("{name}.ready")), b"").unwrap();
    // Until killed (a bound in case the parent is gone).
    tokio::time::sleep(Duration::from_secs(120)).await;
    panic!("never killed");
}

// --- outage ------------------------------------------------------------------------------------

/// The broker goes away for 5 s mid-stream and comes back; every event arrives.
///
/// NATS, Redis and RabbitMQ are killed (SIGKILL) and restarted on their data. The suite's
/// Kafka broker (tansu, as `scripts/with-kafka.sh` installs it) and SQS server (fauxqs, as
/// `scripts/with-sqs.sh` installs it) keep their data in memory only,
/// so a restarted one would start empty: it is frozen with SIGSTOP for the 5 s instead and
/// resumed with SIGCONT. Its connections stay open but nothing answers, so the bridge's
/// requests (publishes, fetches, commits, heartbeats) time out or wait meanwhile, which is
/// an outage for the client; what this does not show for Kafka and SQS is reconnecting to a
/// broker process that was restarted.
async fn a_broker_outage_loses_nothing(kind: Kind) {
    const N: u64 = 2_000;
    let Some(mut broker) = Broker::own(kind) else {
        return;
    };
    let seen = Seen::default();
    let consumer = App::builder()
        .actor(Recorder { seen: seen.clone() })
        .bridge(
            broker
                .bridge("in")
                .consume::<OrderPlaced>()
                .ack_wait(Duration::from_secs(5)),
        )
        .build()
        .await
        .unwrap();
    let producer = producer_app(&broker).await;
    let publishing = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for order in 0..N {
                producer.publish(OrderPlaced { order }).await.unwrap();
                if order % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    assert!(eventually(WAIT, || seen.len() >= 300).await);
    let restart = kind.keeps_data_across_restart();
    if restart {
        broker.stop();
    } else {
        broker.pause();
    }
    let at_stop = seen.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    if restart {
        broker.restart();
    } else {
        broker.resume();
    }
    tokio::time::timeout(Duration::from_secs(90), publishing)
        .await
        .expect("publishing finished")
        .unwrap();
    let all = || seen.orders().into_iter().collect::<HashSet<_>>().len() as u64 == N;
    let arrived = eventually(Duration::from_secs(90), all).await;
    let (out, inn) = (
        producer.bridge("out").unwrap().stats(),
        consumer.bridge("in").unwrap().stats(),
    );
    eprintln!("outage: {at_stop} seen at the stop; producer {out:?}; consumer {inn:?}");
    assert!(arrived, "only {} of {N} arrived", seen.len());
    assert!(at_stop < N as usize, "the outage was not mid-stream");
    assert_eq!(out.published, N);
    assert!(producer.dead_letters().is_empty() && consumer.dead_letters().is_empty());
    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

// --- bad input -----------------------------------------------------------------------------------

async fn malformed_input_is_dead_lettered_and_the_consumer_goes_on(kind: Kind) {
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    let seen = Seen::default();
    let consumer = App::builder()
        .actor(Recorder { seen: seen.clone() })
        .validate(|e: &OrderPlaced| match e.order {
            13 => Err("order 13 is not accepted".to_owned()),
            _ => Ok(()),
        })
        .bridge(
            broker
                .bridge("in")
                .consume_matching("order.*")
                .limits(Limits { max_bytes: 2048 }),
        )
        .build()
        .await
        .unwrap();
    let structured = |name: &str, version: u32, data: Value| {
        codec::to_structured(&EventData::json(name, version, &data).unwrap(), "/test")
    };
    // (event name, headers, body, what the dead letter says)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "order.placed",
            vec![],
            b"\x00\xffgarbage".to_vec(),
            "malformed message",
        ),
        (
            "order.cancelled",
            vec![],
            structured("order.cancelled", 1, json!({})),
            "no subscriber for incoming event `order.cancelled`",
        ),
        (
            "order.placed",
            vec![],
            structured(
                "order.placed",
                2,
                json!({ "order": 1, "pad": "x".repeat(4096) }),
            ),
            "over the limit of 2048 bytes",
        ),
        (
            "order.placed",
            vec![],
            br#"{"specversion":"1.0","type":"order.placed","source":"/x"}"#.to_vec(),
            "missing CloudEvents attribute `id`",
        ),
        (
            "order.placed",
            vec![],
            structured("order.placed", 2, json!({ "wrong": true })),
            "does not decode",
        ),
        (
            "order.placed",
            vec![
                ("ce-specversion", "1.0"),
                ("ce-id", "nope"),
                ("ce-source", "/x"),
                ("ce-type", "order.placed"),
            ],
            br#"{"order":1}"#.to_vec(),
            "not a message id",
        ),
        (
            "order.placed",
            vec![],
            structured("order.placed", 2, json!({ "order": 13 })),
            "invalid: order 13 is not accepted",
        ),
    ];
    for (name, headers, body, _) in &cases {
        broker.publish_raw(name, headers, body).await;
    }
    broker
        .publish_raw(
            "order.placed",
            &[],
            &structured("order.placed", 2, json!({ "order": 42 })),
        )
        .await;

    assert!(
        eventually(WAIT, || seen.len() == 1).await,
        "the good event after the bad ones"
    );
    assert_eq!(seen.orders(), vec![42]);
    assert!(eventually(WAIT, || consumer.dead_letters().len() == cases.len()).await);
    let letters = consumer.dead_letters().list();
    for (_, _, _, reason) in &cases {
        assert!(
            letters
                .iter()
                .any(|l| l.actor == "bridge.in" && l.error.contains(reason)),
            "no dead letter says {reason:?}: {letters:#?}"
        );
    }
    assert!(
        settled(&consumer, "in").await,
        "bad input left at the broker"
    );
    // Nothing loops: a second later, still one delivery each.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = consumer.bridge("in").unwrap().stats();
    assert_eq!(
        (stats.received, stats.dead_lettered, stats.acked),
        (cases.len() as u64 + 1, cases.len() as u64, 1)
    );
    consumer.shutdown().await.unwrap();
}

// --- failures ------------------------------------------------------------------------------------

struct Flaky {
    attempts: Arc<AtomicU32>,
    seen: Seen,
}

#[handlers]
impl Flaky {
    #[subscribe(retry = 2, backoff = "10ms")]
    fn placed(&mut self, event: &OrderPlaced, ctx: &mut Context<Self>) -> Result<(), String> {
        if event.order == 1 {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            return Err("card declined".to_owned());
        }
        self.seen
            .0
            .lock()
            .unwrap()
            .push((event.order, ctx.metadata().clone()));
        Ok(())
    }
}

async fn a_failing_subscriber_is_retried_then_dead_lettered(kind: Kind) {
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    let (attempts, seen) = (Arc::new(AtomicU32::new(0)), Seen::default());
    let consumer = App::builder()
        .actor(Flaky {
            attempts: attempts.clone(),
            seen: seen.clone(),
        })
        .bridge(broker.bridge("in").consume::<OrderPlaced>())
        .build()
        .await
        .unwrap();
    let producer = producer_app(&broker).await;
    producer.publish(OrderPlaced { order: 1 }).await.unwrap();
    producer.publish(OrderPlaced { order: 2 }).await.unwrap();

    assert!(eventually(WAIT, || seen.len() == 1).await);
    assert!(eventually(WAIT, || consumer.dead_letters().len() == 1).await);
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "the first try and two retries"
    );
    let letter = &consumer.dead_letters().list()[0];
    assert_eq!((letter.actor, letter.message), ("Flaky", "order.placed"));
    assert!(letter.error.contains("card declined"), "{letter:?}");
    assert!(letter.can_retry());
    // Dead-lettered is done: the broker was acked, nothing is delivered again.
    assert!(settled(&consumer, "in").await);
    let stats = consumer.bridge("in").unwrap().stats();
    assert_eq!((stats.received, stats.acked, stats.nacked), (2, 2, 0));
    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

struct Slow {
    runs: Arc<Mutex<HashMap<u64, u32>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[handlers]
impl Slow {
    #[subscribe]
    async fn placed(&mut self, event: &OrderPlaced) {
        let run = {
            let mut runs = self.runs.lock().unwrap();
            let run = runs.entry(event.order).or_default();
            *run += 1;
            *run
        };
        match (event.order, run) {
            // Slower than the handling timeout once, then quick.
            (1, 1) => tokio::time::sleep(Duration::from_millis(1500)).await,
            // Never done until the test opens the gate.
            (2, _) => drop(self.gate.acquire().await.unwrap()),
            _ => {}
        }
    }
}

async fn a_message_not_done_in_time_is_redelivered_then_dead_lettered(kind: Kind) {
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let consumer = App::builder()
        .actor(Slow {
            runs: runs.clone(),
            gate: gate.clone(),
        })
        .bridge(
            broker
                .bridge("in")
                .consume::<OrderPlaced>()
                .handle_timeout(Duration::from_secs(1))
                .redelivery(
                    RetryPolicy::retries(2).backoff(Backoff::fixed(Duration::from_millis(100))),
                ),
        )
        .build()
        .await
        .unwrap();
    let producer = producer_app(&broker).await;
    producer.publish(OrderPlaced { order: 1 }).await.unwrap();
    // Not done within 1 s: nacked, delivered again, then acked.
    let bridge = consumer.bridge("in").unwrap();
    assert!(
        eventually(WAIT, || bridge.stats().acked == 1).await,
        "{:?}",
        bridge.stats()
    );
    assert!(settled(&consumer, "in").await);
    let stats = bridge.stats();
    assert!(stats.nacked >= 1 && stats.received >= 2, "{stats:?}");
    assert!(consumer.dead_letters().is_empty());

    producer.publish(OrderPlaced { order: 2 }).await.unwrap();
    // Never done: three deliveries (the redelivery policy's attempts), then dead-lettered.
    assert!(eventually(WAIT, || !consumer.dead_letters().is_empty()).await);
    let letter = &consumer.dead_letters().list()[0];
    assert_eq!(
        (letter.actor, letter.message),
        ("bridge.in", "order.placed")
    );
    assert!(
        letter.error.contains("not done within 1s")
            && letter.error.contains("gave up after 3 deliveries"),
        "{letter:?}"
    );
    assert!(settled(&consumer, "in").await);
    gate.add_permits(100);
    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

// --- backpressure and shutdown -------------------------------------------------------------------

struct Sluggish {
    handled: Arc<AtomicU64>,
    delay: Duration,
}

#[handlers]
impl Sluggish {
    #[subscribe]
    async fn placed(&mut self, _: &OrderPlaced) {
        tokio::time::sleep(self.delay).await;
        self.handled.fetch_add(1, Ordering::SeqCst);
    }
}

async fn a_slow_subscriber_bounds_what_is_in_flight(kind: Kind) {
    const N: u64 = 200;
    const IN_FLIGHT: usize = 4;
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    prepare_group(&broker, "in").await;
    let producer = producer_app(&broker).await;
    for order in 0..N {
        producer.publish(OrderPlaced { order }).await.unwrap();
    }
    let handled = Arc::new(AtomicU64::new(0));
    let consumer = App::builder()
        .actor_with(
            Sluggish {
                handled: handled.clone(),
                // Slow enough that the first look at the lag, which can take a second on a
                // busy machine (Kafka's offset calls), still sees more than half pending.
                delay: Duration::from_millis(20),
            },
            Mailbox::bounded(2),
        )
        .bridge(
            broker
                .bridge("in")
                .consume::<OrderPlaced>()
                .max_in_flight(IN_FLIGHT),
        )
        .build()
        .await
        .unwrap();
    let bridge = consumer.bridge("in").unwrap();
    // An SQS ack is a delete sent in a batch: up to `max_in_flight` settled messages may
    // still wait for theirs, unacked at the broker, beside those in flight.
    let unacked_at_most = match kind {
        #[cfg(feature = "sqs")]
        Kind::Sqs => 2 * IN_FLIGHT as u64,
        _ => IN_FLIGHT as u64,
    };
    let mut max_pending = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(60);
    while handled.load(Ordering::SeqCst) < N {
        assert!(tokio::time::Instant::now() < until, "not all handled");
        let lag = bridge.lag().await.unwrap().expect("a lag");
        max_pending = max_pending.max(lag.pending);
        assert!(lag.unacked <= unacked_at_most, "{lag:?}");
        assert!(bridge.stats().in_flight <= IN_FLIGHT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = bridge.stats();
    assert!(
        stats.peak_in_flight <= IN_FLIGHT && stats.peak_in_flight >= 2,
        "{stats:?}"
    );
    assert!(
        max_pending > N / 2,
        "lag reported: at most {max_pending} pending seen"
    );
    assert!(consumer.stats().actors[0].peak <= 2);
    assert!(settled(&consumer, "in").await);
    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

async fn shutdown_mid_stream_loses_nothing(kind: Kind) {
    const N: u64 = 300;
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    prepare_group(&broker, "g").await;
    let producer = producer_app(&broker).await;
    for order in 0..N {
        producer.publish(OrderPlaced { order }).await.unwrap();
    }
    let first = Seen::default();
    let one = App::builder()
        .actor_with(
            Recorder {
                seen: first.clone(),
            },
            Mailbox::bounded(4),
        )
        .bridge(
            broker
                .bridge("in")
                .consume::<OrderPlaced>()
                .group("g")
                .max_in_flight(8),
        )
        .build()
        .await
        .unwrap();
    assert!(eventually(WAIT, || first.len() >= 50).await);
    one.shutdown().await.unwrap();
    let stats = one.bridge("in").unwrap().stats();
    assert_eq!(stats.in_flight, 0, "settled at shutdown: {stats:?}");
    assert_eq!(stats.acked as usize, first.len(), "acked what was handled");

    let second = Seen::default();
    let two = App::builder()
        .actor(Recorder {
            seen: second.clone(),
        })
        .bridge(broker.bridge("in").consume::<OrderPlaced>().group("g"))
        .build()
        .await
        .unwrap();
    let all = || {
        let mut union: HashSet<u64> = first.orders().into_iter().collect();
        union.extend(second.orders());
        union.len() as u64 == N
    };
    assert!(
        eventually(WAIT, all).await,
        "{} + {} of {N}",
        first.len(),
        second.len()
    );
    assert_eq!((first.len() + second.len()) as u64, N, "none twice");
    producer.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

// --- choosing what goes out ----------------------------------------------------------------------

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "order.shipped")]
struct OrderShipped {
    order: u64,
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "order.cancelled")]
struct OrderCancelled {
    order: u64,
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "payment.completed")]
struct PaymentCompleted {
    order: u64,
}

/// Subscribes to `order.cancelled`, which makes the type known to the app.
struct Cancellations;

#[handlers]
impl Cancellations {
    #[subscribe]
    fn cancelled(&mut self, _: &OrderCancelled) {}
}

async fn name_patterns_and_keys_choose_what_goes_out(kind: Kind) {
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    let mut tap = Tap::new(&broker).await;
    let producer = App::builder()
        .actor(Cancellations)
        .bridge(
            broker
                .bridge("out")
                .event::<OrderShipped>()
                .event::<PaymentCompleted>()
                .publish_matching("order.*")
                .publish_keyed(|ev: &OrderPlaced| format!("customer-{}", ev.order % 3)),
        )
        .build()
        .await
        .unwrap();
    producer.publish(OrderPlaced { order: 4 }).await.unwrap();
    producer
        .publish(PaymentCompleted { order: 4 })
        .await
        .unwrap();
    producer.publish(OrderShipped { order: 4 }).await.unwrap();
    producer.publish(OrderCancelled { order: 4 }).await.unwrap();

    let mut got = Vec::new();
    for _ in 0..3 {
        let message = tap.next().await;
        got.push((message.name(), message.key.clone()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("order.cancelled".to_owned(), None),
            ("order.placed".to_owned(), Some("customer-1".to_owned())),
            ("order.shipped".to_owned(), None),
        ]
    );
    // `payment.completed` matches no pattern: it stays home.
    assert!(tap.try_next(Duration::from_millis(500)).await.is_none());
    assert_eq!(producer.bridge("out").unwrap().stats().published, 3);
    producer.shutdown().await.unwrap();
}

async fn an_unreachable_broker_dead_letters_outbound_events_for_a_retry(kind: Kind) {
    let Some(mut broker) = Broker::own(kind) else {
        return;
    };
    let producer = App::builder()
        .bridge(
            broker
                .bridge("out")
                .publish::<OrderPlaced>()
                .publish_timeout(Duration::from_secs(1)),
        )
        .build()
        .await
        .unwrap();
    broker.stop();
    producer.publish(OrderPlaced { order: 9 }).await.unwrap();
    assert!(eventually(WAIT, || producer.dead_letters().len() == 1).await);
    let letter = &producer.dead_letters().list()[0];
    assert_eq!(
        (letter.actor, letter.message),
        ("bridge.outbound", "order.placed")
    );
    assert!(letter.error.contains("not published"), "{letter:?}");
    assert!(letter.can_retry());

    broker.restart();
    let seen = Seen::default();
    let consumer = recorder_app(&broker, "late", &seen).await;
    // The producer's client reconnects within a second or so; until then a retry may fail
    // again (within its 1 s timeout) and come back as a dead letter: retry that one too. A
    // retry that timed out may still have reached the broker (at least once); the next retry
    // then sends a copy, which the idempotent subscriber drops. A retry starts only from a
    // letter, so at most one is under way: one publish confirmed and no letter left means no
    // retry is pending.
    let published = || producer.bridge("out").unwrap().stats().published;
    let settled = || seen.len() == 1 && published() == 1 && producer.dead_letters().is_empty();
    for _ in 0..20 {
        if let Some(letter) = producer.dead_letters().list().first() {
            producer.retry_dead_letter(letter.seq).await.unwrap();
        }
        if eventually(Duration::from_secs(3), settled).await {
            break;
        }
    }
    assert_eq!((seen.len(), published()), (1, 1));
    assert_eq!(seen.orders(), vec![9]);
    assert!(producer.dead_letters().is_empty());
    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

async fn a_broker_that_cannot_be_reached_fails_the_build(kind: Kind) {
    let Some(mut broker) = Broker::own(kind) else {
        return;
    };
    broker.stop();
    let started = tokio::time::Instant::now();
    let built = App::builder()
        .bridge(
            broker
                .bridge("out")
                .publish::<OrderPlaced>()
                .connect_timeout(Duration::from_secs(3)),
        )
        .build()
        .await;
    let Err(error) = built else {
        panic!("built without a broker");
    };
    assert!(error.to_string().contains("bridge `out`"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

// --- store to broker across kill -9 --------------------------------------------------------------

const CRASH_DIR: &str = "EVENTDRIVEN_BRIDGE_CRASH_DIR";
const CRASH_ROUND: &str = "EVENTDRIVEN_BRIDGE_CRASH_ROUND";
/// Rounds killed at a random moment, before one that drains.
const CRASH_ROUNDS: u64 = 5;

/// Appends events to a SQLite store and relays them to the broker, round after round, each
/// process killed with SIGKILL at a random moment; a last process only relays until the head.
/// Every stored event must reach the broker (the relay's checkpoint waits for the broker's
/// acknowledgement through the outbound subscriber).
async fn stored_events_reach_the_broker_across_kill_9(kind: Kind) {
    let Some(broker) = Broker::shared(kind) else {
        return;
    };
    prepare_group(&broker, "crash").await;
    let dir = TempDir::new("eventdriven-bridge-crash");
    let dir_text = dir.0.to_str().unwrap().to_owned();
    let test = format!("{}::relay_crash_child", format!("{kind:?}").to_lowercase());
    let seed = kill::seed("EVENTDRIVEN_BRIDGE_CRASH_SEED");
    eprintln!("kill moments from seed {seed} (EVENTDRIVEN_BRIDGE_CRASH_SEED={seed} replays them)");
    let mut random = XorShift(seed);
    for round in 0..=CRASH_ROUNDS {
        let round_text = round.to_string();
        let mut child = ChildGuard::spawn(
            &test,
            dir.0.join(format!("round{round}.log")),
            &[
                (CRASH_DIR, &dir_text),
                (CRASH_ROUND, &round_text),
                (CHILD_URL, &broker.url),
                (CHILD_SPACE, &broker.space),
            ],
        );
        if round < CRASH_ROUNDS {
            // Killed once it is appending (its ready file), after a random moment.
            let ready = dir.0.join(format!("round{round}.ready"));
            assert!(
                eventually(Duration::from_secs(60), || ready.exists()).await,
                "round {round} never started: {}",
                child.output()
            );
            tokio::time::sleep(Duration::from_millis(random.in_range(&(100..=600)))).await;
            child.child.kill().unwrap();
            assert!(child.wait_for(Duration::from_secs(10)).is_some());
        } else {
            let status = child.wait_for(Duration::from_secs(120));
            assert!(
                status.is_some_and(|s| s.success()),
                "the draining round failed: {status:?}\n{}",
                child.output()
            );
        }
    }

    let store = Store::sqlite(dir.0.join("events.db")).await.unwrap();
    let mut stored = HashSet::new();
    let mut position = 0;
    loop {
        let page = store.read_all(position, 1000).await.unwrap();
        let Some(last) = page.last() else {
            break;
        };
        position = last.position;
        stored.extend(page.iter().map(|e| e.metadata.id));
    }
    assert!(stored.len() > 100, "only {} events stored", stored.len());

    let seen = Seen::default();
    let consumer = recorder_app(&broker, "crash", &seen).await;
    let all = || {
        let arrived: HashSet<_> = seen.0.lock().unwrap().iter().map(|(_, m)| m.id).collect();
        stored.is_subset(&arrived)
    };
    assert!(
        eventually(Duration::from_secs(60), all).await,
        "{} stored, {} at the broker",
        stored.len(),
        seen.len()
    );
    eprintln!(
        "{} stored events all reached the broker ({} deliveries)",
        stored.len(),
        seen.len()
    );
    consumer.shutdown().await.unwrap();
}

/// Run alone by [`stored_events_reach_the_broker_across_kill_9`] with its variables: one
/// round. Without them, a no-op.
async fn relay_crash_child(kind: Kind) {
    let Ok(dir) = std::env::var(CRASH_DIR) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let var = |name: &str| std::env::var(name).unwrap();
    let round: u64 = var(CRASH_ROUND).parse().unwrap();
    let broker = Broker::at(kind, var(CHILD_URL), var(CHILD_SPACE));
    let store = Store::sqlite(dir.join("events.db")).await.unwrap();
    let app = producer_app(&broker).await;
    let relay = Relay::new(store.clone(), &app)
        .poll_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    if round < CRASH_ROUNDS {
        std::fs::write(dir.join(format!("round{round}.ready")), b"").unwrap();
        // Until killed (a bound in case the parent is gone).
        for i in 0..60_000u64 {
            let order = round * 1_000_000 + i;
            let event = EventData::from_event(&OrderPlaced { order }).unwrap();
            store
                .append(
                    &format!("order-{order}"),
                    ExpectedVersion::NoStream,
                    vec![event],
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("round {round} was never killed");
    }
    let head = store.head().await.unwrap();
    assert!(
        relay.wait_for(head, Duration::from_secs(60)).await,
        "relay stuck before {head}"
    );
    relay.stop().await;
    app.shutdown().await.unwrap();
}

// --- broker-specific settings ----------------------------------------------------------------------

/// What only one broker has, beyond the shared suite.
#[cfg(feature = "redis")]
mod redis_only {
    use super::*;
    use eventdriven::bridge::{redis::Redis, Bridge};

    /// `max_len` caps the stream with `XADD ... MAXLEN ~`: Redis trims whole nodes, so the
    /// stream keeps at least the cap and somewhat more, never everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn max_len_caps_the_stream() {
        const N: u64 = 1_000;
        const CAP: usize = 100;
        let Some(broker) = Broker::shared(Kind::Redis) else {
            return;
        };
        let producer = App::builder()
            .bridge(
                Bridge::new(
                    "out",
                    Redis::new(broker.url.clone())
                        .stream(broker.space.clone())
                        .max_len(CAP),
                )
                .publish::<OrderPlaced>(),
            )
            .build()
            .await
            .unwrap();
        for order in 0..N {
            producer.publish(OrderPlaced { order }).await.unwrap();
        }
        let bridge = producer.bridge("out").unwrap();
        assert!(eventually(WAIT, || bridge.stats().published == N).await);
        let client = ::redis::Client::open(broker.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let len: u64 = ::redis::cmd("XLEN")
            .arg(&broker.space)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            (CAP as u64..N / 2).contains(&len),
            "{len} entries kept of {N}, cap ~{CAP}"
        );
        producer.shutdown().await.unwrap();
    }
}

/// What only Kafka has, beyond the shared suite.
#[cfg(feature = "kafka")]
mod kafka_only {
    use super::*;

    /// One key's events land on one partition, and a partition's messages are handed to the
    /// bridge one at a time: each key's events are handled in the order they were published,
    /// while the keys' partitions run side by side.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_keys_events_are_handled_in_order() {
        const KEYS: u64 = 5;
        const PER_KEY: u64 = 200;
        let Some(broker) = Broker::shared(Kind::Kafka) else {
            return;
        };
        let seen = Seen::default();
        let consumer = App::builder()
            .actor(Recorder { seen: seen.clone() })
            .bridge(
                broker
                    .bridge("in")
                    .consume::<OrderPlaced>()
                    .max_in_flight(64),
            )
            .build()
            .await
            .unwrap();
        let producer = App::builder()
            .bridge(
                broker
                    .bridge("out")
                    .publish_keyed(|ev: &OrderPlaced| format!("customer-{}", ev.order % KEYS)),
            )
            .build()
            .await
            .unwrap();
        for order in 0..KEYS * PER_KEY {
            producer.publish(OrderPlaced { order }).await.unwrap();
        }
        assert!(
            eventually(Duration::from_secs(60), || seen.len() as u64
                == KEYS * PER_KEY)
            .await,
            "{} of {}",
            seen.len(),
            KEYS * PER_KEY
        );
        let orders = seen.orders();
        for key in 0..KEYS {
            let of_key: Vec<u64> = orders.iter().copied().filter(|o| o % KEYS == key).collect();
            assert_eq!(of_key.len() as u64, PER_KEY, "key {key}");
            assert!(
                of_key.windows(2).all(|w| w[0] < w[1]),
                "key {key} out of order: {of_key:?}"
            );
        }
        let stats = consumer.bridge("in").unwrap().stats();
        assert!(
            stats.peak_in_flight >= 2,
            "partitions side by side: {stats:?}"
        );
        producer.shutdown().await.unwrap();
        consumer.shutdown().await.unwrap();
    }
}

/// What only SQS has, beyond the shared suite.
#[cfg(feature = "sqs")]
mod sqs_only {
    use super::*;
    use eventdriven::bridge::{sqs::Sqs, Bridge};

    /// SQS is point to point: a process consumes its own queue and routes what another
    /// consumes to that one's queue (`publish_to`); its own queue gets nothing of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn publish_to_routes_events_to_another_queue() {
        let Some(broker) = Broker::shared(Kind::Sqs) else {
            return;
        };
        let (mine, theirs) = (
            format!("{}_mine", broker.space),
            format!("{}_theirs", broker.space),
        );
        let producer = App::builder()
            .actor(Cancellations)
            .bridge(
                Bridge::new(
                    "out",
                    Sqs::new(broker.url.clone())
                        .queue(mine.clone())
                        .publish_to("order.placed", theirs.clone()),
                )
                .publish::<OrderPlaced>()
                .publish::<OrderShipped>()
                .consume::<OrderCancelled>(),
            )
            .build()
            .await
            .unwrap();
        // Published before the consumer of `theirs` ever started: the queue keeps it.
        producer.publish(OrderPlaced { order: 5 }).await.unwrap();
        producer.publish(OrderShipped { order: 5 }).await.unwrap();
        let seen = Seen::default();
        let consumer = App::builder()
            .actor(Recorder { seen: seen.clone() })
            .bridge(
                Bridge::new("in", Sqs::new(broker.url.clone()).queue(theirs.clone()))
                    .consume::<OrderPlaced>(),
            )
            .build()
            .await
            .unwrap();
        assert!(eventually(WAIT, || seen.len() == 1).await);
        assert_eq!(seen.orders(), vec![5]);
        let tap = |queue: &str| Broker::at(Kind::Sqs, broker.url.clone(), queue.to_owned());
        let mut own = Tap::new(&tap(&mine)).await;
        assert_eq!(own.next().await.name(), "order.shipped");
        assert!(own.try_next(Duration::from_millis(300)).await.is_none());
        producer.shutdown().await.unwrap();
        consumer.shutdown().await.unwrap();
    }

    /// On a FIFO queue the key is the message group: each key's events are handled in the order
    /// they were published, several keys side by side; a publish repeated with the same event id
    /// is stored once (the event id is the deduplication id).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_fifo_queue_keeps_each_keys_order() {
        const KEYS: u64 = 5;
        const PER_KEY: u64 = 100;
        let Some(broker) = Broker::shared(Kind::Sqs) else {
            return;
        };
        let queue = format!("{}.fifo", broker.space);
        let sqs = || Sqs::new(broker.url.clone()).queue(queue.clone());
        let seen = Seen::default();
        let consumer = App::builder()
            .actor(Recorder { seen: seen.clone() })
            .bridge(
                Bridge::new("in", sqs())
                    .consume::<OrderPlaced>()
                    .max_in_flight(32),
            )
            .build()
            .await
            .unwrap();
        let producer = App::builder()
            .bridge(
                Bridge::new("out", sqs())
                    .publish_keyed(|ev: &OrderPlaced| format!("customer-{}", ev.order % KEYS)),
            )
            .build()
            .await
            .unwrap();
        for order in 0..KEYS * PER_KEY {
            producer.publish(OrderPlaced { order }).await.unwrap();
        }
        // The same event (same id) published again: SQS drops the copy.
        let again = Envelope::new(OrderPlaced {
            order: KEYS * PER_KEY,
        });
        producer.publish_envelope(again.clone()).await.unwrap();
        producer.publish_envelope(again).await.unwrap();
        let total = KEYS * PER_KEY + 1;
        assert!(
            eventually(Duration::from_secs(60), || seen.len() as u64 >= total).await,
            "{} of {total}",
            seen.len()
        );
        assert!(settled(&consumer, "in").await);
        // What the queue took (the test server's record): the copy is not there.
        let mut tap = Tap::new(&Broker::at(Kind::Sqs, broker.url.clone(), queue.clone())).await;
        let mut stored = 0;
        while tap.try_next(Duration::from_millis(200)).await.is_some() {
            stored += 1;
        }
        assert_eq!(stored, total, "the copy was stored once");
        let orders = seen.orders();
        assert_eq!(orders.len() as u64, total);
        for key in 0..KEYS {
            let of_key: Vec<u64> = orders
                .iter()
                .copied()
                .filter(|o| o % KEYS == key && *o < KEYS * PER_KEY)
                .collect();
            assert_eq!(of_key.len() as u64, PER_KEY, "key {key}");
            assert!(
                of_key.windows(2).all(|w| w[0] < w[1]),
                "key {key} out of order: {of_key:?}"
            );
        }
        let stats = consumer.bridge("in").unwrap().stats();
        assert!(stats.peak_in_flight >= 2, "keys side by side: {stats:?}");
        producer.shutdown().await.unwrap();
        consumer.shutdown().await.unwrap();
    }
}
