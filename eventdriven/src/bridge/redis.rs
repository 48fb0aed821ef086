//! The Redis Streams transport (feature `redis`), on the `redis` crate (Redis 7 or later).
//!
//! - **One stream**: every event goes to one stream (key `eventdriven` by default) with
//!   `XADD`, its name in the `eventdriven-name` field (the subject, as it were), a partition
//!   key in `eventdriven-key` (Redis Streams have no partitions: one stream keeps one order),
//!   the message headers as fields of their own (structured mode: `content-type`; binary
//!   mode: the `ce-*` attributes and `content-type`) and the body in `body`. The broker's
//!   acknowledgement is `XADD`'s reply. [`max_len`](Redis::max_len) caps the stream with
//!   `MAXLEN ~`. Redis does not deduplicate: a publish repeated after a lost reply is stored
//!   twice, and idempotent subscribers (the event id is kept) remove the copy.
//! - **Consumer groups**: a bridge's group is a Redis consumer group on the stream, created
//!   from the stream's start (`XGROUP CREATE ... 0 MKSTREAM`, when the app starts and again
//!   after a server that lost it); every process of the app is a consumer of its own (a name
//!   unique per process) reading with `XREADGROUP ... COUNT n BLOCK`, so they share the
//!   messages. Redis cannot filter a stream by name: each group reads the whole stream and the
//!   transport acks the messages its patterns do not match as it reads them. Keep unrelated
//!   traffic on streams of its own.
//! - **Settling**: ack and reject are `XACK`; acks that wait together go out in one `XACK` of
//!   up to 64 ids (one at once while none is under way, so a lone ack is not held back), and
//!   each is done when its `XACK` answered. A nack leaves the message pending and sets its
//!   idle time (`XCLAIM ... IDLE ... JUSTID`) so that it is taken again once the delay is over;
//!   in-progress signals reset the idle time (`XCLAIM ... JUSTID`, which does not count as a
//!   delivery).
//! - **Redelivery, also of dead processes' messages**: before reading new messages (at most
//!   every 100 ms while the last look found less than a full batch), every consumer claims
//!   pending messages idle for the ack wait or longer (`XPENDING ... IDLE`, then `XCLAIM`),
//!   whichever consumer they belonged to: nacked ones once their delay is over (up to 100 ms
//!   late), and those of a process that was killed. The delivery count is Redis's own counter,
//!   so the bridge's redelivery policy also covers crash loops. A nack's delay is at most the
//!   ack wait (Redis cannot set an idle time below zero): for longer backoffs raise the
//!   bridge's [`ack_wait`](super::Bridge::ack_wait).
//! - **Lag**: the group's `lag` (entries not yet read by the group, names it skips included;
//!   the stream's length where Redis cannot tell) and `pending` from `XINFO GROUPS`.
//! - **Reconnection**: the client's connection manager reconnects by itself; a publish or
//!   fetch during an outage fails and is tried again by the bridge. Blocking reads have a
//!   connection of their own so they never hold up publishes and acks.
//! - **Shutdown**: a consumer's pending messages that it did not settle are made claimable at
//!   once for the other processes, and a consumer with nothing pending leaves the group.
//!
//! See `docs/decisions.md` for why the redelivery delay and the reclaiming work this way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::streams::{
    StreamClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply, StreamReadReply,
};
use ::redis::{RedisError, Value};

use tokio::sync::{mpsc, oneshot};

use super::calls::run_batches;
use super::{
    Batch, BoxFuture, Lag, Outgoing, Pattern, Received, Subscription, Topology, Transport,
    TransportError,
};

/// The field with the event's name.
const NAME_FIELD: &str = "eventdriven-name";
/// The field with the partition key.
const KEY_FIELD: &str = "eventdriven-key";
/// The field with the body.
const BODY_FIELD: &str = "body";

/// A Redis server (7 or later) with Streams, as a bridge's [`Transport`].
///
/// ```
/// use eventdriven::bridge::redis::Redis;
///
/// let redis = Redis::new("redis://127.0.0.1:6379").stream("shop").max_len(1_000_000);
/// # let _ = redis;
/// ```
///
/// In a bridge:
///
/// ```no_run
/// # async fn run() -> eventdriven::Result<()> {
/// use eventdriven::prelude::*;
/// use eventdriven::bridge::{redis::Redis, Bridge};
///
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "payment.completed")]
/// struct PaymentCompleted { order: u64 }
///
/// #[subscribe(idempotent)]
/// async fn ship(ev: &PaymentCompleted) { println!("ship order {}", ev.order); }
///
/// let bridge = Bridge::new("orders", Redis::new("redis://127.0.0.1:6379").stream("shop"))
///     .consume::<PaymentCompleted>()
///     .group("orders"); // one Redis consumer group: the processes share the work
/// let app = App::builder().subscriber(ship).bridge(bridge).build().await?;
/// app.shutdown().await
/// # }
/// ```
#[derive(Debug)]
pub struct Redis {
    url: String,
    stream: String,
    max_len: Option<usize>,
    block: Duration,
    consumer: String,
    state: OnceLock<State>,
}

#[derive(Debug)]
struct State {
    client: ::redis::Client,
    conn: ConnectionManager,
    group: OnceLock<Group>,
}

/// The consumer group this process reads for, once the bridge consumes.
#[derive(Debug)]
struct Group {
    name: String,
    ack_wait: Duration,
    patterns: Vec<Pattern>,
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

/// A client error as a transport error: only what the server will never accept is refused.
fn from_redis(e: RedisError) -> TransportError {
    match e.code() {
        Some("WRONGTYPE") => TransportError::Refused(e.to_string()),
        _ => unavailable(e),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A consumer name no other process (nor other transport of this one) uses.
fn consumer_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "pid{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Redis {
    /// The server at `url` (`redis://[user:password@]host:port[/db]`; TLS is not compiled
    /// in); stream `eventdriven`, no length cap, reads blocking at most 1 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "eventdriven".to_owned(),
            max_len: None,
            block: Duration::from_secs(1),
            consumer: consumer_name(),
            state: OnceLock::new(),
        }
    }

    /// The stream's key.
    pub fn stream(mut self, key: impl Into<String>) -> Self {
        self.stream = key.into();
        self
    }

    /// Caps the stream at about `entries` entries (`XADD ... MAXLEN ~`): older entries are
    /// trimmed, delivered or not, so size it well above the consumers' worst lag.
    pub fn max_len(mut self, entries: usize) -> Self {
        self.max_len = Some(entries);
        self
    }

    /// How long one read waits on the server for new messages (at least 10 ms); also how
    /// often an idle consumer looks for messages to claim.
    pub fn block(mut self, wait: Duration) -> Self {
        self.block = wait.max(Duration::from_millis(10));
        self
    }

    fn state(&self) -> Result<&State, TransportError> {
        self.state
            .get()
            .ok_or_else(|| TransportError::Unavailable("not connected".to_owned()))
    }

    fn config(response_timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1))
    }

    /// Creates the group from the stream's start if it does not exist.
    async fn ensure_group(
        &self,
        conn: &mut ConnectionManager,
        group: &str,
    ) -> Result<(), TransportError> {
        let created: Result<(), RedisError> = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(from_redis(e)),
        }
    }

    fn settler(&self, state: &State, group: &Group) -> Arc<Settler> {
        let (acks, waiting) = mpsc::unbounded_channel();
        let target = Arc::new((state.conn.clone(), self.stream.clone(), group.name.clone()));
        tokio::spawn(run_batches(
            waiting,
            ACK_CALLS,
            take_acks,
            move |(), batch| {
                let target = target.clone();
                async move {
                    let (conn, stream, group) = &*target;
                    ack_batch(conn, stream, group, batch).await;
                }
            },
        ));
        Arc::new(Settler {
            conn: state.conn.clone(),
            stream: self.stream.clone(),
            group: group.name.clone(),
            consumer: self.consumer.clone(),
            ack_wait: millis(group.ack_wait),
            acks,
        })
    }
}

impl Transport for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn connect<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            if self.stream.is_empty() {
                return Err(TransportError::Config(
                    "the Redis stream key is empty".to_owned(),
                ));
            }
            if !topology.consume.is_empty() && topology.group.is_empty() {
                return Err(TransportError::Config(
                    "the Redis consumer group (the bridge's group) is empty".to_owned(),
                ));
            }
            if self.state.get().is_none() {
                let client = ::redis::Client::open(self.url.as_str())
                    .map_err(|e| TransportError::Config(format!("Redis URL: {e}")))?;
                let conn = client
                    .get_connection_manager_with_config(Self::config(Duration::from_secs(5)))
                    .await
                    .map_err(from_redis)?;
                let _ = self.state.set(State {
                    client,
                    conn,
                    group: OnceLock::new(),
                });
            }
            let state = self.state()?;
            if !topology.consume.is_empty() {
                let patterns = topology
                    .consume
                    .iter()
                    .map(|p| Pattern::parse(p).map_err(TransportError::Config))
                    .collect::<Result<Vec<_>, _>>()?;
                self.ensure_group(&mut state.conn.clone(), &topology.group)
                    .await?;
                let _ = state.group.set(Group {
                    name: topology.group.clone(),
                    ack_wait: topology.ack_wait,
                    patterns,
                });
            }
            Ok(())
        })
    }

    fn publish<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let state = self.state()?;
            // Sized up front: growing the command's buffers argument by argument took 7 % of
            // the publish benchmark's process (perf, `bridge_redis_publish/eventdriven`).
            let fields = 2 + usize::from(message.key.is_some()) + message.headers.len();
            let bytes = self.stream.len()
                + message.name.len()
                + message.key.as_ref().map_or(0, String::len)
                + message.body.len()
                + message
                    .headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>()
                + 64;
            let mut xadd = ::redis::Cmd::with_capacity(6 + 2 * fields, bytes);
            xadd.arg("XADD").arg(&self.stream);
            if let Some(n) = self.max_len {
                xadd.arg("MAXLEN").arg("~").arg(n);
            }
            xadd.arg("*").arg(NAME_FIELD).arg(&message.name);
            if let Some(key) = &message.key {
                xadd.arg(KEY_FIELD).arg(key);
            }
            for (name, value) in &message.headers {
                xadd.arg(name).arg(value);
            }
            xadd.arg(BODY_FIELD).arg(&message.body);
            let _id: String = xadd
                .query_async(&mut state.conn.clone())
                .await
                .map_err(from_redis)?;
            Ok(())
        })
    }

    fn subscribe<'a>(
        &'a self,
        topology: &'a Topology,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        Box::pin(async move {
            let state = self.state()?;
            let group = state
                .group
                .get()
                .ok_or_else(|| TransportError::Config("the bridge consumes nothing".to_owned()))?;
            debug_assert_eq!(group.name, topology.group);
            // A server that lost its data (no persistence) lost the group too.
            self.ensure_group(&mut state.conn.clone(), &group.name)
                .await?;
            let reader = state
                .client
                .get_connection_manager_with_config(Self::config(
                    self.block + Duration::from_secs(5),
                ))
                .await
                .map_err(from_redis)?;
            Ok(Box::new(RedisSubscription {
                reader,
                settler: self.settler(state, group),
                patterns: group.patterns.clone(),
                block: millis(self.block),
                reclaim_at: tokio::time::Instant::now(),
            }) as Box<dyn Subscription>)
        })
    }

    fn lag(&self) -> BoxFuture<'_, Result<Option<Lag>, TransportError>> {
        Box::pin(async move {
            let state = self.state()?;
            let Some(group) = state.group.get() else {
                return Ok(None);
            };
            let mut conn = state.conn.clone();
            let groups: StreamInfoGroupsReply = ::redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&self.stream)
                .query_async(&mut conn)
                .await
                .map_err(from_redis)?;
            let Some(info) = groups.groups.iter().find(|g| g.name == group.name) else {
                return Ok(None);
            };
            let pending = match info.lag {
                Some(lag) => lag as u64,
                // Redis cannot tell (entries deleted in the middle): the stream's length
                // bounds it.
                None => ::redis::cmd("XLEN")
                    .arg(&self.stream)
                    .query_async(&mut conn)
                    .await
                    .map_err(from_redis)?,
            };
            Ok(Some(Lag::new(pending, info.pending as u64)))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(state) = self.state() else { return };
            let Some(group) = state.group.get() else {
                return;
            };
            // Whatever this consumer still holds (handling cut short) is for the others, now
            // rather than after the ack wait; a consumer holding nothing leaves the group.
            let settler = self.settler(state, group);
            let mut conn = state.conn.clone();
            let held: Result<StreamPendingCountReply, _> = ::redis::cmd("XPENDING")
                .arg(&self.stream)
                .arg(&group.name)
                .arg("-")
                .arg("+")
                .arg(10_000)
                .arg(&self.consumer)
                .query_async(&mut conn)
                .await;
            let result = match held {
                Ok(held) if held.ids.is_empty() => ::redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&self.stream)
                    .arg(&group.name)
                    .arg(&self.consumer)
                    .query_async::<Value>(&mut conn)
                    .await
                    .map(drop)
                    .map_err(from_redis),
                Ok(held) => {
                    let ids: Vec<String> = held.ids.into_iter().map(|p| p.id).collect();
                    settler.release(&ids, Duration::ZERO).await
                }
                Err(e) => Err(from_redis(e)),
            };
            if let Err(error) = result {
                tracing::warn!(%error, "Redis consumer not released at close; its messages go to the others after the ack wait");
            }
        })
    }
}

/// What settling a message needs: the shared connection and where the message is pending.
struct Settler {
    conn: ConnectionManager,
    stream: String,
    group: String,
    consumer: String,
    /// The ack wait in ms: the idle time after which any consumer claims a pending message.
    ack_wait: u64,
    /// Acks wait here to go out together, in one `XACK` of many ids.
    acks: mpsc::UnboundedSender<Ack>,
}

/// An ack waiting for its `XACK`.
struct Ack {
    id: String,
    done: oneshot::Sender<Result<(), TransportError>>,
}

/// `XACK`s under way at once, at most.
const ACK_CALLS: usize = 4;
/// Ids in one `XACK`, at most.
const MAX_ACKS: usize = 64;

/// The next `XACK`'s acks: [`MAX_ACKS`] of them, or with `partial` what there is.
fn take_acks(waiting: &mut VecDeque<Ack>, partial: bool) -> Option<((), Vec<Ack>)> {
    // Acks the bridge gave up waiting for are sent all the same: the work is done.
    let n = waiting.len().min(MAX_ACKS);
    (n > 0 && (n == MAX_ACKS || partial)).then(|| ((), waiting.drain(..n).collect()))
}

/// One `XACK` for the ids of `batch`, each told the outcome.
async fn ack_batch(conn: &ConnectionManager, stream: &str, group: &str, batch: Vec<Ack>) {
    let mut xack = ::redis::Cmd::with_capacity(3 + batch.len(), 32 * (batch.len() + 2));
    xack.arg("XACK").arg(stream).arg(group);
    for ack in &batch {
        xack.arg(&ack.id);
    }
    let acked = xack
        .query_async::<Value>(&mut conn.clone())
        .await
        .map(drop)
        .map_err(from_redis);
    for ack in batch {
        let _ = ack.done.send(acked.clone());
    }
}

impl Settler {
    /// Acks `id`, in an `XACK` with the acks that wait beside it: one goes out at once while
    /// no `XACK` is under way, and while some are, acks gather for the next.
    async fn ack(&self, id: &str) -> Result<(), TransportError> {
        let (done, acked) = oneshot::channel();
        let ack = Ack {
            id: id.to_owned(),
            done,
        };
        if self.acks.send(ack).is_err() {
            return Err(TransportError::Unavailable(
                "the Redis acker stopped".to_owned(),
            ));
        }
        acked.await.unwrap_or_else(|_| {
            Err(TransportError::Unavailable(
                "the Redis acker stopped".to_owned(),
            ))
        })
    }

    /// Keeps `ids` pending for this consumer, claimable by any consumer after `delay` (at
    /// most the ack wait): their idle time becomes the ack wait less the delay. Not a
    /// delivery (`JUSTID`).
    async fn release(&self, ids: &[String], delay: Duration) -> Result<(), TransportError> {
        if ids.is_empty() {
            return Ok(());
        }
        if millis(delay) > self.ack_wait {
            tracing::debug!(
                ?delay,
                ack_wait_ms = self.ack_wait,
                "Redis redelivery delay capped at the ack wait"
            );
        }
        let idle = self.ack_wait.saturating_sub(millis(delay));
        self.claim(ids, idle).await
    }

    /// Claims `ids` for this consumer with an idle time of `idle` ms, without counting a
    /// delivery.
    async fn claim(&self, ids: &[String], idle: u64) -> Result<(), TransportError> {
        ::redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(0)
            .arg(ids)
            .arg("IDLE")
            .arg(idle)
            .arg("JUSTID")
            .query_async::<Value>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(from_redis)
    }
}

struct RedisSubscription {
    /// A connection of its own: a blocking read holds up its connection.
    reader: ConnectionManager,
    settler: Arc<Settler>,
    patterns: Vec<Pattern>,
    block: u64,
    /// When pending messages are next looked at for reclaiming (see [`RECLAIM_EVERY`]).
    reclaim_at: tokio::time::Instant,
}

/// How often a consumer looks for pending messages to reclaim, unless the last look found a
/// full batch. A look is a round trip (`XPENDING`) that a busy consumer would otherwise make
/// before every read; a nacked message is due again up to this much after its delay.
const RECLAIM_EVERY: Duration = Duration::from_millis(100);

impl RedisSubscription {
    /// Pending messages idle for the ack wait or longer (nacked and due, or held by a
    /// consumer that is gone), claimed for this consumer, each with its delivery count.
    async fn reclaim(&self, max: usize) -> Result<Vec<(StreamId, u32)>, TransportError> {
        let s = &self.settler;
        let mut conn = s.conn.clone();
        let due: StreamPendingCountReply = ::redis::cmd("XPENDING")
            .arg(&s.stream)
            .arg(&s.group)
            .arg("IDLE")
            .arg(s.ack_wait)
            .arg("-")
            .arg("+")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        if due.ids.is_empty() {
            return Ok(Vec::new());
        }
        let counts: HashMap<String, usize> = due
            .ids
            .iter()
            .map(|p| (p.id.clone(), p.times_delivered))
            .collect();
        // With the ack wait as minimum idle time, a message another consumer claimed (or
        // signalled progress on) meanwhile is left alone. Entries trimmed from the stream
        // leave the pending list here.
        let claimed: StreamClaimReply = ::redis::cmd("XCLAIM")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(s.ack_wait)
            .arg(counts.keys().collect::<Vec<_>>())
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let mut claimed: Vec<(StreamId, u32)> = claimed
            .ids
            .into_iter()
            .map(|entry| {
                let before = counts.get(&entry.id).copied().unwrap_or(0);
                let deliveries = u32::try_from(before + 1).unwrap_or(u32::MAX);
                (entry, deliveries)
            })
            .collect();
        claimed.sort_by(|a, b| stream_order(&a.0.id, &b.0.id));
        Ok(claimed)
    }

    /// New messages for the group, waiting up to the block time if `wait`.
    async fn read(&mut self, max: usize, wait: bool) -> Result<Vec<StreamId>, TransportError> {
        let s = &self.settler;
        let mut read = ::redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(max);
        if wait {
            read.arg("BLOCK").arg(self.block);
        }
        read.arg("STREAMS").arg(&s.stream).arg(">");
        let reply: Option<StreamReadReply> = read
            .query_async(&mut self.reader)
            .await
            .map_err(from_redis)?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Whether the bridge consumes this entry; what it does not is acked as it is read.
    fn wanted(&self, entry: &StreamId) -> bool {
        match field(entry, NAME_FIELD) {
            // No name: not one of ours to filter; the bridge core dead-letters it if it
            // cannot read it.
            None => true,
            Some(name) => self.patterns.iter().any(|p| p.matches(&name)),
        }
    }
}

/// Orders stream ids (`ms-seq`) numerically.
fn stream_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a).cmp(&parse(b))
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    entry
        .map
        .get(name)
        .and_then(bytes)
        .and_then(|b| String::from_utf8(b).ok())
}

impl Subscription for RedisSubscription {
    fn round_trips(&self) -> bool {
        true
    }

    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Box<dyn Batch>, TransportError>> {
        Box::pin(async move {
            let max = max.max(1);
            let now = tokio::time::Instant::now();
            let mut entries = Vec::new();
            if now >= self.reclaim_at {
                entries = self.reclaim(max).await?;
                if entries.len() < max {
                    self.reclaim_at = now + RECLAIM_EVERY;
                }
            }
            if entries.len() < max {
                let fresh = self.read(max - entries.len(), entries.is_empty()).await?;
                entries.extend(fresh.into_iter().map(|entry| (entry, 1)));
            }
            let mut messages = VecDeque::with_capacity(entries.len());
            for (entry, deliveries) in entries {
                if !self.wanted(&entry) {
                    if let Err(error) = self.settler.ack(&entry.id).await {
                        // Claimed again after the ack wait, and skipped again.
                        tracing::debug!(%error, "skipped Redis message not acked");
                    }
                    continue;
                }
                messages.push_back(RedisMessage::new(entry, deliveries, self.settler.clone()));
            }
            Ok(Box::new(RedisBatch {
                messages,
                settler: self.settler.clone(),
            }) as Box<dyn Batch>)
        })
    }
}

struct RedisBatch {
    messages: VecDeque<RedisMessage>,
    settler: Arc<Settler>,
}

impl Batch for RedisBatch {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Box<dyn Received>, TransportError>>> {
        super::next_at_hand(&mut self.messages, |m| Box::new(m))
    }
}

impl Drop for RedisBatch {
    /// Messages read but never handed out (the bridge stopped mid-batch) are made claimable
    /// at once instead of after the ack wait.
    fn drop(&mut self) {
        if self.messages.is_empty() {
            return;
        }
        let ids: Vec<String> = self.messages.drain(..).map(|m| m.id).collect();
        let settler = self.settler.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = settler.release(&ids, Duration::ZERO).await {
                    tracing::debug!(%error, "unhandled Redis messages not released");
                }
            });
        }
    }
}

struct RedisMessage {
    id: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    deliveries: u32,
    settler: Arc<Settler>,
}

impl RedisMessage {
    fn new(entry: StreamId, deliveries: u32, settler: Arc<Settler>) -> Self {
        let mut headers = Vec::with_capacity(entry.map.len());
        let mut body = Vec::new();
        for (name, value) in &entry.map {
            if name == BODY_FIELD {
                body = bytes(value).unwrap_or_default();
            } else if let Some(text) = bytes(value).and_then(|b| String::from_utf8(b).ok()) {
                headers.push((name.clone(), text));
            }
        }
        Self {
            id: entry.id,
            headers,
            body,
            deliveries,
            settler,
        }
    }
}

impl Received for RedisMessage {
    fn body(&self) -> &[u8] {
        &self.body
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    fn deliveries(&self) -> u32 {
        self.deliveries
    }

    fn locator(&self) -> String {
        format!(
            "Redis stream {} entry {}, group {}",
            self.settler.stream, self.id, self.settler.group
        )
    }

    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.settler.ack(&self.id))
    }

    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            self.settler
                .release(std::slice::from_ref(&self.id), delay)
                .await
        })
    }

    fn reject(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        // Dead-lettered here: gone from the group, like an ack.
        Box::pin(self.settler.ack(&self.id))
    }

    fn in_progress(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move { self.settler.claim(std::slice::from_ref(&self.id), 0).await })
    }
}
