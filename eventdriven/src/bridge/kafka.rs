//! The Kafka transport (feature `kafka`), on the `rdkafka` client with its bundled librdkafka
//! (tested with tansu 0.6, a Kafka-protocol broker).
//!
//! - **One topic**: every event goes to one topic (`eventdriven` by default), created with
//!   [`partitions`](Kafka::partitions) partitions (4 by default) when the bridge connects and
//!   it does not exist yet. A partition key becomes the Kafka message key, so the events of
//!   one key land on one partition in order; events without a key are spread over the
//!   partitions. The event's name travels in the `eventdriven-name` header. Structured mode
//!   puts the CloudEvent (JSON) in the value and `content-type` in a header; binary mode puts
//!   the attributes in `ce_*` headers, as the CloudEvents Kafka binding spells them (the bridge
//!   core's `ce-*` names are translated both ways). The publish completes on the broker's
//!   delivery report with `acks=all`, from an idempotent producer (no duplicates from the
//!   client's own retries; a publish the bridge repeats after a lost report may still be
//!   stored twice, and idempotent subscribers remove the copy).
//! - **Consumer groups**: a bridge's group is a Kafka consumer group subscribed to the topic,
//!   its processes sharing the partitions. Kafka's group ids are cluster-wide where the other
//!   brokers' groups belong to one stream or exchange: the group id is `<topic>.<group>` (set
//!   `group.id` with [`set`](Kafka::set) to use another). A new group reads the topic from its
//!   start. Kafka cannot filter by name: each group reads the whole topic and the transport
//!   counts the messages its patterns do not match as done as it reads them. `connect` waits
//!   (within the bridge's connect timeout) until the group gave this process its partitions,
//!   so an app that is built consumes. The group's timeouts default to 6 s session, 1 s
//!   heartbeat, 6 s poll interval (librdkafka's defaults take about 25 s to join and keep a
//!   dead member for 45 s); see [`session_timeout`](Kafka::session_timeout).
//! - **Acks are offsets**: Kafka keeps one committed offset per partition and group, below
//!   which everything counts as consumed. The transport tracks every message it read per
//!   partition and commits only up to the lowest one not settled yet, so nothing unsettled is
//!   skipped after a crash or a rebalance. As a partition's messages are handled one at a time
//!   (below), what is settled is below that point, so a clean shutdown or a rebalance hands
//!   over without handling anything twice. (Settled out of order, with
//!   [`in_flight_per_partition`](Kafka::in_flight_per_partition) above 1, the offsets above
//!   that point are listed in the commit's metadata, and the partition's next owner skips
//!   them; a broker that drops commit metadata, as tansu 0.6 does, loses that list.) Commits go
//!   out every 100 ms while something changed, and synchronously when partitions are revoked
//!   and at close.
//! - **Settling**: ack and reject count the message done. Kafka has no per-message nack: a
//!   nacked message is held (its offset stays uncommitted) and handed to the bridge again in
//!   this process after the delay, its delivery count one higher. If the process dies or loses
//!   the partition meanwhile, the group's next owner reads it again from the committed offset
//!   (its delivery count then starts again at 1: Kafka does not count deliveries). Messages of
//!   revoked partitions still in flight are never committed by their old owner: their acks are
//!   ignored and the new owner handles them again (at least once). In-progress signals do
//!   nothing: a task of the transport polls the consumer all the time, so the group does not
//!   think a long handling is a dead process.
//! - **Order and backpressure**: a partition's messages are handed to the bridge one at a
//!   time, in offset order ([`in_flight_per_partition`](Kafka::in_flight_per_partition)
//!   allows more), so per-key order holds end to end and commits are exact; a nacked message
//!   holds up its partition for its delay. The bridge's `max_in_flight` bounds what is handed
//!   out; what is read ahead waits in the transport, and when
//!   [`read_ahead`](Kafka::read_ahead) messages wait, the assigned partitions are paused (the
//!   consumer goes on polling for the group's sake) until the bridge took half.
//! - **Lag**: `pending` is, over the topic's partitions, the high watermark less the group's
//!   committed offset (the low watermark where nothing is committed), less what this process
//!   read and holds or settled above it; `unacked` is what this process read and has not
//!   settled (other processes' messages count as pending: Kafka does not tell).
//! - **Reconnection**: librdkafka reconnects by itself (backoff at most 1 s); a publish during
//!   an outage waits in the client's queue until the broker answers or the publish times out
//!   (30 s by default, [`message_timeout`](Kafka::message_timeout)), and the bridge tries
//!   again after that.
//!
//! - **Build**: librdkafka is compiled from the sources `rdkafka` bundles (a C compiler and
//!   `make`; no system library), with LZ4 and Snappy but without zlib and zstd: to consume
//!   topics that other producers compress with gzip or zstd, turn on `rdkafka`'s `libz` or
//!   `zstd` feature in your own `Cargo.toml` (cargo merges the features).
//!
//! See `docs/decisions.md` for why offsets, nacks and rebalances are handled this way.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::{
    Batch, BoxFuture, Lag, Outgoing, Pattern, Received, Subscription, Topology, Transport,
    TransportError,
};

/// The header with the event's name.
const NAME_HEADER: &str = "eventdriven-name";
/// How long a batch waits for the first message.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// How often the consumer's task commits what changed and looks at the pause.
const TICK: Duration = Duration::from_millis(100);
/// How long one request to the broker (metadata, offsets, a synchronous commit) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest commit metadata written (brokers accept 4096 bytes by default); ranges beyond
/// it are left out, and those messages are handled again by the next owner.
const MAX_METADATA: usize = 3000;
/// The prefix of the commit metadata this transport writes.
const METADATA_PREFIX: &str = "eventdriven-done:";

/// A Kafka cluster (or a Kafka-protocol broker), as a bridge's [`Transport`].
///
/// ```
/// use std::time::Duration;
/// use eventdriven::bridge::kafka::Kafka;
///
/// let kafka = Kafka::new("kafka://127.0.0.1:9092")
///     .topic("shop")
///     .partitions(8)
///     .session_timeout(Duration::from_secs(10));
/// # let _ = kafka;
/// ```
///
/// In a bridge:
///
/// ```no_run
/// # async fn run() -> eventdriven::Result<()> {
/// use eventdriven::prelude::*;
/// use eventdriven::bridge::{kafka::Kafka, Bridge, Mode};
///
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "payment.completed")]
/// struct PaymentCompleted { order: u64 }
///
/// #[subscribe(idempotent)]
/// async fn ship(ev: &PaymentCompleted) { println!("ship order {}", ev.order); }
///
/// let bridge = Bridge::new("orders", Kafka::new("127.0.0.1:9092").topic("shop"))
///     .mode(Mode::Binary)                                      // ce_* headers
///     .publish_keyed(|ev: &PaymentCompleted| ev.order.to_string()) // the Kafka message key
///     .consume::<PaymentCompleted>()
///     .group("orders") // one Kafka consumer group: the processes share the partitions
///     .max_in_flight(64);
/// let app = App::builder().subscriber(ship).bridge(bridge).build().await?;
/// app.shutdown().await
/// # }
/// ```
pub struct Kafka {
    servers: String,
    topic: String,
    partitions: i32,
    replication: i32,
    session_timeout: Duration,
    heartbeat_interval: Duration,
    max_poll_interval: Duration,
    message_timeout: Duration,
    idempotent: bool,
    per_partition: usize,
    read_ahead: usize,
    settings: Vec<(String, String)>,
    /// The producer, once connected; replaced after a fatal error.
    producer: Mutex<Option<FutureProducer>>,
    group: OnceLock<Group>,
}

impl fmt::Debug for Kafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kafka")
            .field("servers", &self.servers)
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// The consumer of this process's group, once the bridge consumes.
struct Group {
    /// Taken (and closed) by `close`.
    consumer: Mutex<Option<Arc<KafkaConsumer>>>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

type KafkaConsumer = StreamConsumer<GroupContext>;

fn unavailable(e: impl fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

/// A client error as a transport error: only what the broker will never accept is refused.
fn from_kafka(e: &KafkaError) -> TransportError {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidTopic
            | C::InvalidRecord
            | C::PolicyViolation,
        ) => TransportError::Refused(e.to_string()),
        _ => unavailable(e),
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Kafka {
    /// The cluster at `servers`: bootstrap servers as `host:port[,host:port...]`, optionally
    /// written as a URL (`kafka://host:port`); plaintext (TLS and SASL are not compiled in).
    /// Topic `eventdriven` with 4 partitions and replication factor 1 if the bridge creates
    /// it; group timeouts 6 s session, 1 s heartbeat, 6 s poll interval; publishes time out
    /// after 30 s; idempotent producer.
    pub fn new(servers: impl Into<String>) -> Self {
        Self {
            servers: servers.into(),
            topic: "eventdriven".to_owned(),
            partitions: 4,
            replication: 1,
            session_timeout: Duration::from_secs(6),
            heartbeat_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(6),
            message_timeout: Duration::from_secs(30),
            idempotent: true,
            per_partition: 1,
            read_ahead: 2048,
            settings: Vec::new(),
            producer: Mutex::new(None),
            group: OnceLock::new(),
        }
    }

    /// The topic events are published to and consumed from.
    pub fn topic(mut self, name: impl Into<String>) -> Self {
        self.topic = name.into();
        self
    }

    /// The partitions of the topic when the bridge creates it (at least 1); an existing topic
    /// is used as it is. More partitions let more processes of a group share the work.
    pub fn partitions(mut self, n: u16) -> Self {
        self.partitions = i32::from(n.max(1));
        self
    }

    /// The replication factor of the topic when the bridge creates it (at least 1).
    pub fn replication(mut self, n: u16) -> Self {
        self.replication = i32::from(n.max(1));
        self
    }

    /// How long the group waits for a silent process before it gives its partitions to the
    /// others (`session.timeout.ms`; 6 s by default). The poll interval is raised to it if
    /// lower.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How often a process tells the group it lives (`heartbeat.interval.ms`; 1 s by default).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Longest time between two polls of the consumer before the process leaves the group
    /// (`max.poll.interval.ms`; 6 s by default). The transport polls all the time, so it
    /// matters only for a wedged process; it also bounds how long a rebalance waits for the
    /// members to rejoin.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval;
        self
    }

    /// How long a publish may wait for the broker before it fails (`message.timeout.ms`; 30 s
    /// by default); the bridge tries again until its own publish timeout.
    pub fn message_timeout(mut self, timeout: Duration) -> Self {
        self.message_timeout = timeout;
        self
    }

    /// Whether the producer is idempotent (`enable.idempotence`; on by default): the broker
    /// drops the duplicates of the client's own retries. Turn it off for brokers without
    /// idempotent producers.
    pub fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }

    /// At most `n` messages of one partition handed to the bridge at once (1 by default, at
    /// least 1). With 1, a partition's messages are handled one after the other, in offset
    /// order: per-key order holds end to end, every commit is exact, and a process works on
    /// as many messages at once as it has partitions (within the bridge's `max_in_flight`).
    /// More lets a partition's messages be handled side by side and settle out of order: the
    /// settled ones above the commit point then travel in the commit's metadata, which a
    /// broker that drops commit metadata (tansu 0.6 does) loses, so they are handled again
    /// after a handover.
    pub fn in_flight_per_partition(mut self, n: usize) -> Self {
        self.per_partition = n.max(1);
        self
    }

    /// How many messages read from the broker may wait in this process for the bridge to take
    /// them (2,048 by default, at least the bridge's `max_in_flight`): past that, the assigned
    /// partitions are paused until half were taken. They are pending, not in flight: read
    /// ahead so that each partition's next message is at hand when the one before is done.
    ///
    /// They are held in memory, so lower it for large messages. Too low costs throughput:
    /// librdkafka drops what it fetched for a partition when it is paused, and fetches it
    /// again on resume.
    pub fn read_ahead(mut self, n: usize) -> Self {
        self.read_ahead = n.max(1);
        self
    }

    /// Sets a librdkafka property on the producer and the consumer (after the transport's
    /// own settings, so it wins), such as `client.id` or `fetch.max.bytes`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// The bootstrap servers without a URL scheme.
    fn bootstrap(&self) -> String {
        self.servers
            .split(',')
            .map(|s| {
                let s = s.trim();
                let s = s
                    .strip_prefix("kafka://")
                    .or_else(|| s.strip_prefix("tcp://"))
                    .unwrap_or(s);
                s.trim_end_matches('/')
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "1000")
            .set("socket.keepalive.enable", "true");
        config
    }

    fn with_settings(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        config
    }

    fn producer(&self) -> Result<FutureProducer, TransportError> {
        let mut config = self.config();
        config
            .set("acks", "all")
            .set("enable.idempotence", self.idempotent.to_string())
            .set("message.timeout.ms", millis(self.message_timeout))
            .set("linger.ms", "1");
        self.with_settings(config)
            .create()
            .map_err(|e| TransportError::Config(format!("Kafka producer: {e}")))
    }

    /// Creates the topic if it does not exist.
    async fn ensure_topic(&self) -> Result<(), TransportError> {
        let admin: AdminClient<DefaultClientContext> =
            self.with_settings(self.config())
                .create()
                .map_err(|e| TransportError::Config(format!("Kafka admin client: {e}")))?;
        let topic = NewTopic::new(
            &self.topic,
            self.partitions,
            TopicReplication::Fixed(self.replication),
        );
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| from_kafka(&e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    let error = format!("topic `{topic}` not created: {code}");
                    return Err(match code {
                        RDKafkaErrorCode::InvalidTopic
                        | RDKafkaErrorCode::InvalidPartitions
                        | RDKafkaErrorCode::InvalidReplicationFactor
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::PolicyViolation => TransportError::Refused(error),
                        _ => unavailable(error),
                    });
                }
            }
        }
        Ok(())
    }

    /// Creates the group's consumer, starts its task, and waits (at most `wait`) for its
    /// first partitions.
    async fn join(&self, topology: &Topology) -> Result<(), TransportError> {
        if self.group.get().is_some() {
            return Ok(());
        }
        let patterns = topology
            .consume
            .iter()
            .map(|p| Pattern::parse(p).map_err(TransportError::Config))
            .collect::<Result<Vec<_>, _>>()?;
        let (assigned, mut assignments) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            topic: self.topic.clone(),
            group: topology.group.clone(),
            per_partition: self.per_partition,
            read_ahead: self.read_ahead.max(topology.max_in_flight),
            pace: Notify::new(),
            patterns,
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            assigned,
        });
        let mut config = self.config();
        config
            .set("group.id", format!("{}.{}", self.topic, topology.group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("heartbeat.interval.ms", millis(self.heartbeat_interval))
            .set(
                "max.poll.interval.ms",
                millis(self.max_poll_interval.max(self.session_timeout)),
            )
            // Read ahead a little, not librdkafka's 100,000 messages: what waits in the
            // client is pending, not in flight.
            .set("queued.min.messages", "1000")
            // With a queue that small, librdkafka's 1 s wait before fetching again once the
            // queue is over it shows as 1 s stalls.
            .set("fetch.queue.backoff.ms", "20");
        let consumer: KafkaConsumer = self
            .with_settings(config)
            .create_with_context(GroupContext {
                shared: shared.clone(),
            })
            .map_err(|e| TransportError::Config(format!("Kafka consumer: {e}")))?;
        consumer
            .subscribe(&[&self.topic])
            .map_err(|e| from_kafka(&e))?;
        let consumer = Arc::new(consumer);
        let (stop, stopped) = watch::channel(false);
        let driver = tokio::spawn(drive(consumer.clone(), shared.clone(), stopped));
        let group = Group {
            consumer: Mutex::new(Some(consumer)),
            shared,
            stop,
            driver: Mutex::new(Some(driver)),
        };
        if self.group.set(group).is_err() {
            return Ok(());
        }
        // Consuming once built: wait for the group's first assignment, within the bridge's
        // connect timeout (less a margin for the answer). A slow group (a dead member it still
        // waits for) is not an error: the partitions come when it is done.
        let wait = topology
            .connect_timeout
            .saturating_sub(Duration::from_millis(500))
            .max(Duration::from_millis(100));
        let joined = tokio::time::timeout(wait, assignments.wait_for(|n| *n > 0)).await;
        if joined.is_err() {
            tracing::warn!(
                group = topology.group,
                ?wait,
                "no Kafka partitions assigned yet; consuming once the group assigns them"
            );
        }
        Ok(())
    }
}

impl Transport for Kafka {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn connect<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            if self.topic.is_empty() {
                return Err(TransportError::Config(
                    "the Kafka topic name is empty".to_owned(),
                ));
            }
            if self.bootstrap().is_empty() {
                return Err(TransportError::Config(
                    "no Kafka bootstrap servers given".to_owned(),
                ));
            }
            if !topology.consume.is_empty() && topology.group.is_empty() {
                return Err(TransportError::Config(
                    "the Kafka consumer group (the bridge's group) is empty".to_owned(),
                ));
            }
            if lock(&self.producer).is_none() {
                let producer = self.producer()?;
                *lock(&self.producer) = Some(producer);
            }
            self.ensure_topic().await?;
            if !topology.consume.is_empty() {
                self.join(topology).await?;
            }
            Ok(())
        })
    }

    fn publish<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let producer = lock(&self.producer)
                .clone()
                .ok_or_else(|| unavailable("not connected"))?;
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 1);
            headers = headers.insert(Header {
                key: NAME_HEADER,
                value: Some(message.name.as_str()),
            });
            for (name, value) in &message.headers {
                let name = match name.strip_prefix("ce-") {
                    Some(attribute) => format!("ce_{attribute}"),
                    None => name.clone(),
                };
                headers = headers.insert(Header {
                    key: &name,
                    value: Some(value.as_str()),
                });
            }
            let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
                .payload(message.body.as_slice())
                .headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key.as_str());
            }
            // Queued at once (or after the message timeout if the client's queue is full),
            // then delivered or failed within the message timeout.
            match producer.send(record, self.message_timeout).await {
                Ok(_) => Ok(()),
                Err((e, _)) => {
                    if let Some((code, reason)) = producer.client().fatal_error() {
                        // An idempotent producer can fail for good (a broker that lost its
                        // state no longer knows its producer id): the next publish gets a
                        // fresh one.
                        tracing::warn!(%code, reason, "Kafka producer failed; making a new one");
                        let mut current = lock(&self.producer);
                        if current
                            .as_ref()
                            .is_some_and(|p| p.client().fatal_error().is_some())
                        {
                            *current = Some(self.producer()?);
                        }
                    }
                    Err(from_kafka(&e))
                }
            }
        })
    }

    fn subscribe<'a>(
        &'a self,
        _topology: &'a Topology,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        Box::pin(async move {
            let group = self
                .group
                .get()
                .ok_or_else(|| TransportError::Config("the bridge consumes nothing".to_owned()))?;
            Ok(Box::new(KafkaSubscription {
                shared: group.shared.clone(),
            }) as Box<dyn Subscription>)
        })
    }

    fn lag(&self) -> BoxFuture<'_, Result<Option<Lag>, TransportError>> {
        Box::pin(async move {
            let Some(group) = self.group.get() else {
                return Ok(None);
            };
            let consumer = lock(&group.consumer)
                .clone()
                .ok_or_else(|| unavailable("the Kafka consumer is closed"))?;
            let topic = self.topic.clone();
            // librdkafka's offset and metadata calls block: off the runtime's threads.
            let marks = tokio::task::spawn_blocking(move || watermarks(&consumer, &topic))
                .await
                .map_err(unavailable)??;
            let inner = lock(&group.shared.inner);
            let (mut pending, mut unacked) = (0u64, 0u64);
            for Marks {
                partition,
                committed,
                high,
            } in marks
            {
                let mut behind = u64::try_from(high - committed).unwrap_or(0);
                if let Some(part) = inner.parts.get(&partition) {
                    // Read but still queued here counts as pending; handed to the bridge (or
                    // held for a nack's delay) as unacked.
                    let open = part.open.range(committed..).count();
                    let handed = open.saturating_sub(part.queue.len()) as u64;
                    let done = part.done.range(committed..).count() as u64;
                    behind = behind.saturating_sub(handed + done);
                    unacked += part.busy as u64;
                }
                pending += behind;
            }
            Ok(Some(Lag::new(pending, unacked)))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(group) = self.group.get() {
                let _ = group.stop.send(true);
                let driver = lock(&group.driver).take();
                if let Some(driver) = driver {
                    let _ = driver.await;
                }
                // What was settled is committed; what was not goes to the group's other
                // processes (or this app's next start) from the committed offset. Closing the
                // consumer leaves the group at once instead of after the session timeout.
                let consumer = lock(&group.consumer).take();
                if let Some(consumer) = consumer {
                    let shared = group.shared.clone();
                    // Dropping the last handle closes the consumer (librdkafka's close: the
                    // revocation, a last commit, leaving the group); it blocks, so off the
                    // runtime's threads.
                    let closed = tokio::task::spawn_blocking(move || {
                        shared.commit(consumer.as_ref(), None, CommitMode::Sync);
                        drop(consumer);
                    })
                    .await;
                    if let Err(error) = closed {
                        tracing::debug!(%error, "Kafka consumer not closed cleanly");
                    }
                }
            }
            let producer = lock(&self.producer).clone();
            if let Some(producer) = producer {
                let _ = tokio::task::spawn_blocking(move || producer.flush(REQUEST_TIMEOUT)).await;
            }
        })
    }
}

/// A partition, the group's committed offset in it and its high watermark.
struct Marks {
    partition: i32,
    committed: i64,
    high: i64,
}

/// Per partition of `topic`: the group's committed offset (the low watermark where it has
/// none) and the high watermark.
fn watermarks(consumer: &KafkaConsumer, topic: &str) -> Result<Vec<Marks>, TransportError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| from_kafka(&e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut list = TopicPartitionList::new();
    for &partition in &partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, REQUEST_TIMEOUT)
        .map_err(|e| from_kafka(&e))?;
    let mut marks = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| from_kafka(&e))?;
        let at = committed
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low)
            .clamp(low, high);
        marks.push(Marks {
            partition,
            committed: at,
            high,
        });
    }
    Ok(marks)
}

/// What the consumer's task, the rebalance callbacks and the messages share.
struct Shared {
    topic: String,
    group: String,
    /// Most messages of one partition handed out at once.
    per_partition: usize,
    /// Most messages queued before the partitions are paused.
    read_ahead: usize,
    /// The bridge took enough to resume paused partitions.
    pace: Notify,
    patterns: Vec<Pattern>,
    inner: Mutex<Inner>,
    /// Messages are ready to fetch.
    ready: Notify,
    /// How many assignments the group made to this process.
    assigned: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    /// The assigned partitions.
    parts: HashMap<i32, Part>,
    /// Messages queued in the partitions (read, or due again after a nack, and not yet
    /// fetched by the bridge).
    queued: usize,
    /// Where the next fetch starts among the partitions, so that each gets its turn.
    cursor: usize,
    /// The last generation given to a partition: messages of an older one are stale.
    generation: u64,
    /// Something to commit.
    dirty: bool,
    /// The assigned partitions are paused (too many messages ready).
    paused: bool,
}

/// One assigned partition's offsets.
#[derive(Default)]
struct Part {
    generation: u64,
    /// Read and not settled: ready, fetched, or waiting for a nack's delay.
    open: BTreeSet<i64>,
    /// Settled, above the lowest open offset (so not committed yet).
    done: BTreeSet<i64>,
    /// One past the highest offset read.
    next: Option<i64>,
    /// Read (or due again after a nack) and not yet fetched by the bridge, in offset order.
    queue: VecDeque<Arc<Data>>,
    /// Handed to the bridge and not settled (a nacked one until its delay is over).
    busy: usize,
    /// Offsets the previous owner settled above its committed offset (its commit metadata).
    skip: BTreeSet<i64>,
}

impl Part {
    /// The offset to commit: the lowest still open, else one past the last read.
    fn commit_point(&self) -> Option<i64> {
        self.open.first().copied().or(self.next)
    }

    /// The settled offsets above the commit point, as ranges in the commit's metadata.
    fn metadata(&self, from: i64) -> String {
        let mut text = String::from(METADATA_PREFIX);
        let mut run: Option<(i64, i64)> = None;
        let push = |text: &mut String, (a, b): (i64, i64)| {
            let item = if a == b {
                format!("{},", a - from)
            } else {
                format!("{}-{},", a - from, b - from)
            };
            if text.len() + item.len() <= MAX_METADATA {
                text.push_str(&item);
                true
            } else {
                false
            }
        };
        for &offset in self.done.range(from..) {
            run = match run {
                Some((a, b)) if offset == b + 1 => Some((a, offset)),
                Some(range) => {
                    if !push(&mut text, range) {
                        return text;
                    }
                    Some((offset, offset))
                }
                None => Some((offset, offset)),
            };
        }
        if let Some(range) = run {
            push(&mut text, range);
        }
        text
    }

    fn settle(&mut self, offset: i64) {
        if self.open.remove(&offset) {
            self.done.insert(offset);
        }
        if let Some(point) = self.commit_point() {
            self.done = self.done.split_off(&point);
        }
    }
}

/// Reads the settled offsets from a commit's metadata written at offset `from`.
fn parse_metadata(text: &str, from: i64) -> BTreeSet<i64> {
    let mut skip = BTreeSet::new();
    let Some(list) = text.strip_prefix(METADATA_PREFIX) else {
        return skip;
    };
    for item in list.split(',').filter(|i| !i.is_empty()) {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) else {
            continue;
        };
        if a < 0 || b < a || b - a > 1_000_000 {
            continue;
        }
        skip.extend((a..=b).map(|d| from + d));
    }
    skip
}

/// One message read from the topic.
struct Data {
    partition: i32,
    offset: i64,
    generation: u64,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    deliveries: u32,
}

impl Shared {
    /// Commits the commit points (and the settled offsets above them) of `only` (all assigned
    /// partitions if `None`) that changed.
    fn commit(
        &self,
        consumer: &impl Consumer<GroupContext>,
        only: Option<&[i32]>,
        mode: CommitMode,
    ) {
        let list = {
            let mut inner = lock(&self.inner);
            inner.dirty = false;
            let mut list = TopicPartitionList::new();
            for (&partition, part) in &inner.parts {
                if only.is_some_and(|only| !only.contains(&partition)) {
                    continue;
                }
                let Some(point) = part.commit_point() else {
                    continue;
                };
                let mut element = list.add_partition(&self.topic, partition);
                if element.set_offset(Offset::Offset(point)).is_err() {
                    continue;
                }
                element.set_metadata(part.metadata(point));
            }
            list
        };
        if list.count() == 0 {
            return;
        }
        if let Err(error) = consumer.commit(&list, mode) {
            tracing::debug!(group = self.group, %error, "Kafka offsets not committed");
            lock(&self.inner).dirty = true;
        }
    }

    /// Takes a message read by the consumer: ready for the bridge, or done at once (a name the
    /// bridge does not consume, or settled by the partition's previous owner).
    fn take(&self, message: &rdkafka::message::BorrowedMessage<'_>) {
        let (partition, offset) = (message.partition(), message.offset());
        let mut headers = Vec::new();
        let mut name = None;
        if let Some(list) = message.headers() {
            for header in list.iter() {
                let Some(value) = header.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                    continue;
                };
                let key = match header.key.strip_prefix("ce_") {
                    Some(attribute) => format!("ce-{attribute}"),
                    None => header.key.to_owned(),
                };
                if key == NAME_HEADER || (name.is_none() && key.eq_ignore_ascii_case("ce-type")) {
                    name = Some(value.to_owned());
                }
                headers.push((key, value.to_owned()));
            }
        }
        // No name: not one of ours to filter; the bridge core dead-letters it if it cannot
        // read it.
        let wanted = name
            .as_deref()
            .is_none_or(|name| self.patterns.iter().any(|p| p.matches(name)));
        let mut inner = lock(&self.inner);
        let Some(part) = inner.parts.get_mut(&partition) else {
            // Revoked meanwhile: the new owner reads it.
            return;
        };
        if part.next.is_some_and(|next| offset < next) {
            // Read again (a seek after a pause): it is open or settled already.
            return;
        }
        part.next = Some(offset + 1);
        let skipped = part.skip.remove(&offset);
        if !wanted || skipped {
            if part.open.is_empty() {
                part.done.clear();
            } else {
                part.done.insert(offset);
            }
            inner.dirty = true;
            return;
        }
        part.open.insert(offset);
        let data = Data {
            partition,
            offset,
            generation: part.generation,
            headers,
            body: message.payload().unwrap_or_default().to_vec(),
            deliveries: 1,
        };
        part.queue.push_back(Arc::new(data));
        inner.queued += 1;
        drop(inner);
        self.ready.notify_one();
    }

    /// Settles a message: done (ack, reject) unless its partition was revoked since.
    fn settle(&self, data: &Data) {
        let mut inner = lock(&self.inner);
        match inner.parts.get_mut(&data.partition) {
            Some(part) if part.generation == data.generation => {
                part.settle(data.offset);
                part.busy = part.busy.saturating_sub(1);
                inner.dirty = true;
                drop(inner);
                // The partition may hand out its next message.
                self.ready.notify_one();
            }
            _ => tracing::debug!(
                group = self.group,
                partition = data.partition,
                offset = data.offset,
                "settled after its partition was revoked; its new owner handles it again"
            ),
        }
    }

    /// Queues a message again at the head of its partition (a nack's delay is over, or a
    /// batch was dropped before handing it out), unless its partition was revoked since.
    fn again(&self, data: Arc<Data>, delivered: bool) {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let Some(part) = inner
            .parts
            .get_mut(&data.partition)
            .filter(|p| p.generation == data.generation && p.open.contains(&data.offset))
        else {
            return;
        };
        part.busy = part.busy.saturating_sub(1);
        let data = if delivered {
            Arc::new(Data {
                partition: data.partition,
                offset: data.offset,
                generation: data.generation,
                headers: data.headers.clone(),
                body: data.body.clone(),
                deliveries: data.deliveries.saturating_add(1),
            })
        } else {
            data
        };
        part.queue.push_front(data);
        inner.queued += 1;
        drop(guard);
        self.ready.notify_one();
    }

    /// Takes up to `max` queued messages, at most `per_partition` handed out per partition,
    /// each partition's in offset order.
    fn hand_out(&self, max: usize) -> VecDeque<Arc<Data>> {
        let mut inner = lock(&self.inner);
        let mut ids: Vec<i32> = inner.parts.keys().copied().collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return VecDeque::new();
        }
        let start = inner.cursor % ids.len();
        ids.rotate_left(start);
        inner.cursor = inner.cursor.wrapping_add(1);
        let mut taken = VecDeque::new();
        for id in ids {
            let Some(part) = inner.parts.get_mut(&id) else {
                continue;
            };
            while taken.len() < max && part.busy < self.per_partition {
                let Some(data) = part.queue.pop_front() else {
                    break;
                };
                part.busy += 1;
                taken.push_back(data);
            }
        }
        inner.queued -= taken.len();
        if inner.paused && inner.queued <= self.read_ahead / 2 {
            self.pace.notify_one();
        }
        taken
    }

    /// The group gave this process `partitions`: fresh offsets, and the settled offsets the
    /// previous owner left in its commit metadata.
    fn assigned(&self, consumer: &BaseConsumer<GroupContext>, partitions: &TopicPartitionList) {
        let mut list = TopicPartitionList::new();
        for element in partitions.elements_for_topic(&self.topic) {
            list.add_partition(&self.topic, element.partition());
        }
        let committed = consumer.committed_offsets(list, REQUEST_TIMEOUT);
        if let Err(error) = &committed {
            tracing::debug!(group = self.group, %error, "Kafka commit metadata not read; settled messages may be handled again");
        }
        let mut inner = lock(&self.inner);
        for element in partitions.elements_for_topic(&self.topic) {
            inner.generation += 1;
            let mut part = Part {
                generation: inner.generation,
                ..Part::default()
            };
            if let Ok(committed) = &committed {
                if let Some(c) = committed.find_partition(&self.topic, element.partition()) {
                    if let Offset::Offset(from) = c.offset() {
                        part.skip = parse_metadata(c.metadata(), from);
                    }
                }
            }
            inner.parts.insert(element.partition(), part);
        }
        inner.paused = false;
        drop(inner);
        self.assigned.send_modify(|n| *n += 1);
    }

    /// The group takes `partitions` away: commit what is settled, forget the rest (the new
    /// owner reads it again from the committed offset).
    fn revoked(&self, consumer: &BaseConsumer<GroupContext>, partitions: &TopicPartitionList) {
        let ids: Vec<i32> = partitions
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        if !consumer.assignment_lost() {
            self.commit(consumer, Some(&ids), CommitMode::Sync);
        }
        let mut inner = lock(&self.inner);
        for id in &ids {
            inner.parts.remove(id);
        }
        inner.queued = inner.parts.values().map(|p| p.queue.len()).sum();
        inner.paused = false;
    }
}

/// The consumer's callbacks: rebalances go to [`Shared`].
struct GroupContext {
    shared: Arc<Shared>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.shared.revoked(consumer, partitions);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => self.shared.assigned(consumer, partitions),
            Rebalance::Error(error) => {
                tracing::warn!(group = self.shared.group, %error, "Kafka rebalance failed");
            }
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(error) = result {
            tracing::debug!(group = self.shared.group, %error, "Kafka commit failed");
            lock(&self.shared.inner).dirty = true;
        }
    }
}

/// The consumer's task: polls all the time (messages, rebalances, the group's liveness),
/// commits what changed, pauses the partitions while the bridge has enough ready.
async fn drive(
    consumer: Arc<KafkaConsumer>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            message = consumer.recv() => match message {
                Ok(message) => {
                    shared.take(&message);
                    pace(&consumer, &shared);
                }
                Err(error) => {
                    tracing::debug!(group = shared.group, %error, "Kafka consumer error");
                    tokio::time::sleep(TICK).await;
                }
            },
            () = shared.pace.notified() => pace(&consumer, &shared),
            _ = tick.tick() => {
                if lock(&shared.inner).dirty {
                    shared.commit(consumer.as_ref(), None, CommitMode::Async);
                }
                pace(&consumer, &shared);
            }
        }
    }
}

/// Pauses the assigned partitions while the read-ahead is full, resumes them once the bridge
/// took half.
fn pace(consumer: &KafkaConsumer, shared: &Shared) {
    let (pause, resume) = {
        let inner = lock(&shared.inner);
        let ready = inner.queued;
        (
            !inner.paused && ready >= shared.read_ahead,
            inner.paused && ready <= shared.read_ahead / 2,
        )
    };
    if !pause && !resume {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let done = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match done {
        Ok(()) => lock(&shared.inner).paused = pause,
        Err(error) => tracing::debug!(group = shared.group, %error, "Kafka pause or resume failed"),
    }
}

struct KafkaSubscription {
    shared: Arc<Shared>,
}

impl Subscription for KafkaSubscription {
    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Box<dyn Batch>, TransportError>> {
        Box::pin(async move {
            let max = max.max(1);
            let shared = &self.shared;
            let deadline = tokio::time::Instant::now() + FETCH_WAIT;
            let messages = loop {
                let notified = shared.ready.notified();
                let taken = shared.hand_out(max);
                if !taken.is_empty() {
                    break taken;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    break VecDeque::new();
                }
            };
            Ok(Box::new(KafkaBatch {
                messages,
                shared: shared.clone(),
            }) as Box<dyn Batch>)
        })
    }
}

struct KafkaBatch {
    messages: VecDeque<Arc<Data>>,
    shared: Arc<Shared>,
}

impl Batch for KafkaBatch {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Box<dyn Received>, TransportError>>> {
        let shared = &self.shared;
        super::next_at_hand(&mut self.messages, |data| {
            Box::new(KafkaMessage {
                data,
                shared: shared.clone(),
            })
        })
    }
}

impl Drop for KafkaBatch {
    /// Messages taken but never handed out (the bridge stopped mid-batch) are ready again.
    fn drop(&mut self) {
        for data in self.messages.drain(..).rev() {
            self.shared.again(data, false);
        }
    }
}

struct KafkaMessage {
    data: Arc<Data>,
    shared: Arc<Shared>,
}

impl Received for KafkaMessage {
    fn body(&self) -> &[u8] {
        &self.data.body
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        self.data
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    fn deliveries(&self) -> u32 {
        self.data.deliveries
    }

    fn locator(&self) -> String {
        format!(
            "Kafka topic {} partition {} offset {}, group {}",
            self.shared.topic, self.data.partition, self.data.offset, self.shared.group
        )
    }

    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        self.shared.settle(&self.data);
        Box::pin(async { Ok(()) })
    }

    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        // Held here, uncommitted, until the delay is over.
        let (data, shared) = (self.data.clone(), self.shared.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                shared.again(data, true);
            });
        }
        Box::pin(async { Ok(()) })
    }

    fn reject(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        // Dead-lettered here: done, like an ack.
        self.shared.settle(&self.data);
        Box::pin(async { Ok(()) })
    }

    fn in_progress(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_metadata, Part};

    #[test]
    fn commit_metadata_lists_settled_offsets_above_the_commit_point() {
        let mut part = Part {
            next: Some(10),
            ..Part::default()
        };
        part.open.extend([3, 7]);
        part.done.extend([4, 5, 6, 8, 9]);
        assert_eq!(part.commit_point(), Some(3));
        let text = part.metadata(3);
        assert_eq!(text, "eventdriven-done:1-3,5-6,");
        assert_eq!(
            parse_metadata(&text, 3).into_iter().collect::<Vec<_>>(),
            vec![4, 5, 6, 8, 9]
        );
        part.settle(3);
        assert_eq!(part.commit_point(), Some(7));
        assert_eq!(part.done.iter().copied().collect::<Vec<_>>(), vec![8, 9]);
        part.settle(7);
        assert_eq!(part.commit_point(), Some(10));
        assert!(part.done.is_empty());
        assert!(parse_metadata("something else", 0).is_empty());
        assert!(parse_metadata("eventdriven-done:x,-1,5-2,", 0).is_empty());
    }
}
