//! Bridges: events leave the process for a broker, and come back from it, as CloudEvents.
//!
//! A [`Bridge`] is the broker-agnostic part, shared by every broker: which events go out and
//! which come in, how they are encoded ([`codec`](crate::codec), structured or binary
//! [`Mode`]), when the broker is acknowledged, what is dead-lettered and why, how many
//! messages may be in flight, and how the bridge starts and stops with the app. A broker is
//! only a [`Transport`]: publish one message and wait for the broker's acknowledgement,
//! fetch messages for a consumer group, ack / nack with a delay / reject one, report lag.
//! The NATS JetStream transport is [`nats::Nats`] (feature `nats`), the Redis Streams one
//! [`redis::Redis`] (feature `redis`), the RabbitMQ one [`amqp::Amqp`] (feature `amqp`), the
//! Kafka one [`kafka::Kafka`] (feature `kafka`), the Amazon SQS one [`sqs::Sqs`] (feature
//! `sqs`).
//!
//! # Outbound: at least once from the event store to the broker
//!
//! Each outbound event type gets a subscriber on the bus (one actor per type, named
//! `bridge.outbound`) that encodes the event and is done with it only once the broker
//! acknowledged the publish; while the broker is away it tries again with backoff, up to the
//! bridge's publish timeout, then the event goes to the dead letters (retryable with
//! [`App::retry_dead_letter`]). The event's id is the broker message id where the broker
//! deduplicates (JetStream's `Nats-Msg-Id`), so a publish repeated after a lost ack is
//! stored once.
//!
//! - **With a store and the [`Relay`](crate::projection::Relay)**, the relay moves its
//!   checkpoint only past events every subscriber is done with, the outbound subscriber
//!   included: an event appended to the store reaches the broker at least once, also across a
//!   crash (kill -9) and restart.
//! - **Without a store**, an event published on the bus reaches the broker at least once as
//!   long as the process lives (the publisher waits for room in the outbound subscriber's
//!   mailbox like for any subscriber); events still queued when the process is killed are
//!   lost, as for every in-process subscriber.
//!
//! Publishes are pipelined: up to [`publish_window`](Bridge::publish_window) events of one
//! type are in flight at once, handed to the transport in the order they were published
//! (each publish is polled once before the next event is taken), and each is done only
//! when the broker acknowledged it (they are reported in that order), so the relay's
//! checkpoint still never passes an event the broker does not have. The brokers store them
//! in the order sent; only a publish that fails and is tried again (a lost connection) can
//! land after events sent behind it. Events with a key never do: each waits until no earlier
//! event with its key is in flight, so per-key order holds also across failures; with
//! `publish_window(1)` every event waits for the one before it.
//!
//! An event that came in through a bridge is not sent out again (that would echo it back to
//! the broker forever): the outbound subscriber skips events carrying the
//! [`INCOMING_HEADER`] header, which the inbound side sets. Events that handlers publish in
//! reaction to it are new events and do go out.
//!
//! # Inbound: acked after every local subscriber is done
//!
//! Messages of the consumed names are fetched for the bridge's consumer group (N processes
//! with the same group share the work), decoded, and published on the bus with
//! [`App::publish_incoming`] with the metadata they came with (so an idempotent subscriber
//! recognises a redelivery). The broker is acked once every subscriber is done with the
//! event: it handled it, or, after its own retry policy, dead-lettered it with the error.
//! Retries of a failing subscriber therefore happen in the process that has the message
//! (only the failing subscriber runs again), while the broker keeps the message unacked —
//! a crash during those retries means the broker delivers it again. Input that can never be
//! handled — bytes that are not a CloudEvent, an unknown event name, a payload that does not
//! decode, an oversize message — is dead-lettered with the reason and rejected at the broker
//! so it does not loop; never a panic, never a silent drop. A message the app cannot take
//! now (it is shutting down), or that is not done within the bridge's handling timeout, is
//! nacked with the [`redelivery`](Bridge::redelivery) backoff; after that policy's attempts
//! it is dead-lettered and rejected.
//!
//! Completion is tracked by event id: if the broker delivers a message again while the first
//! delivery is still being handled here (its ack wait passed without progress signals), the
//! two deliveries share one tracker and the earlier one is nacked; idempotent subscribers
//! keep the effect single.
//!
//! At most [`max_in_flight`](Bridge::max_in_flight) messages are taken from the broker and
//! not yet acked; a full mailbox holds up `publish_incoming`, so consumption slows to the
//! pace of the slowest subscriber. [`BridgeHandle::lag`] asks the broker how many messages
//! wait for the group (the hook for the `metrics` facade); [`BridgeHandle::stats`] counts
//! what the bridge did.
//!
//! # Shutdown
//!
//! [`App::shutdown`] stops fetching first, lets the mailboxes drain (so in-flight inbound
//! messages are acked and queued outbound events published), then waits (bounded) for the
//! bridge's tasks and closes the connection. A message fetched but not yet published on the
//! bus is nacked at once, for another process.
//!
//! # Names and patterns
//!
//! Events are chosen by type ([`Bridge::publish`], [`Bridge::consume`]) or by name pattern
//! ([`Bridge::publish_matching`], [`Bridge::consume_matching`]). A pattern is the event's
//! dotted name where a `*` segment matches one segment and a final `>` matches one or more
//! (NATS subject wildcards): `order.*` matches `order.placed` but not `order.line.added`;
//! `order.>` matches both. Outbound patterns select among the event types the app knows how
//! to encode: those its actors subscribe to (serde types) and those registered with
//! [`Bridge::event`].

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(any(feature = "redis", feature = "sqs"))]
mod calls;
mod inbound;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
mod outbound;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqs")]
pub mod sqs;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{CodecError, Limits};
use crate::delivery::{Backoff, RetryPolicy};
use crate::message::{Event, MessageId};
use crate::store::EventData;
use crate::App;

pub(crate) use outbound::Forward;

/// The header an event that came in through a bridge carries on the local bus, with the
/// bridge's name as its value. The outbound side does not send such an event out again.
pub const INCOMING_HEADER: &str = "eventdriven-bridge";

/// A boxed future, as the object-safe [`Transport`] traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How events are laid out in broker messages (CloudEvents 1.0 JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// One JSON document holds the attributes and the event (`content-type:
    /// application/cloudevents+json`).
    #[default]
    Structured,
    /// The attributes are message headers (`ce-id`, `ce-type`, ...), the body is the event.
    Binary,
}

/// Why a transport could not do something. Transports wrap their client's errors in it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The broker could not be reached, or did not answer in time.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the request.
    #[error("broker refused: {0}")]
    Refused(String),
    /// The bridge's settings do not fit this broker.
    #[error("bad bridge configuration: {0}")]
    Config(String),
}

/// A message to publish: one encoded event.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Outgoing {
    /// The event's stable name (the CloudEvents `type`); transports derive the subject or
    /// topic from it.
    pub name: String,
    /// The event's id: the broker's deduplication id where it has one.
    pub id: MessageId,
    /// The partition or routing key, if the bridge has one for this type.
    pub key: Option<String>,
    /// Message headers (binary mode: the CloudEvents attributes; structured mode: the
    /// content type).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// What a bridge asks of its transport when it starts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Topology {
    /// The bridge's name.
    pub bridge: String,
    /// The consumer group: processes with the same group share the inbound messages.
    pub group: String,
    /// Name patterns to consume (empty: no inbound side).
    pub consume: Vec<String>,
    /// Most messages taken from the broker and not yet acked, per process.
    pub max_in_flight: usize,
    /// How long the broker waits for an ack before it delivers a message again.
    pub ack_wait: Duration,
    /// How long `build()` waits for [`Transport::connect`] (the bridge's connect timeout).
    pub connect_timeout: Duration,
}

/// A broker, as the bridge core sees it. Implement it to bridge another broker; every
/// method may be called from several tasks at once.
pub trait Transport: Send + Sync + 'static {
    /// A short name for logs and dead letters (`nats`).
    fn kind(&self) -> &'static str;

    /// Connects and prepares what `topology` needs (streams, consumers). Called once, when
    /// the app is built; the transport reconnects by itself afterwards.
    fn connect<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>>;

    /// Publishes one message and completes once the broker has it (acknowledged it).
    ///
    /// The message is lent, not given: the bridge tries a failed publish again with the same
    /// message, so a transport copies only what its client must own.
    fn publish<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), TransportError>>;

    /// The consumer of `topology`'s group, for the inbound side.
    fn subscribe<'a>(
        &'a self,
        topology: &'a Topology,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>>;

    /// Messages waiting for the group (not yet delivered), and delivered but not yet acked;
    /// `None` where the broker cannot tell.
    fn lag(&self) -> BoxFuture<'_, Result<Option<Lag>, TransportError>>;

    /// Flushes what is buffered and closes the connection.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// A consumer group's subscription.
pub trait Subscription: Send {
    /// Asks for at most `max` messages; the returned batch yields them as they arrive and
    /// ends when it has `max` or after a short wait (about a second) without messages.
    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Box<dyn Batch>, TransportError>>;

    /// Whether each fetch asks the broker (a pull request, a read) rather than taking what
    /// the client already holds. If so, and the last fetch brought all it asked for, the
    /// bridge waits a few milliseconds for room to free up (up to half of `max_in_flight`)
    /// before the next fetch, so that a backlog comes in fewer, larger fetches.
    fn round_trips(&self) -> bool {
        false
    }
}

/// Messages of one [`Subscription::fetch`].
pub trait Batch: Send {
    /// The next message; `None` once the batch is over.
    ///
    /// The message is the batch's until the future is polled: a future dropped unpolled (the
    /// bridge stopping) leaves it in the batch, whose drop gives it back to the broker.
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Box<dyn Received>, TransportError>>>;
}

/// [`Batch::next`] for a batch of messages at hand: the front one, taken when the future is
/// polled and not before.
#[cfg_attr(
    not(any(feature = "redis", feature = "amqp", feature = "kafka")),
    allow(dead_code)
)]
pub(crate) fn next_at_hand<'a, T: Send + 'a>(
    messages: &'a mut std::collections::VecDeque<T>,
    received: impl FnOnce(T) -> Box<dyn Received> + Send + 'a,
) -> BoxFuture<'a, Option<Result<Box<dyn Received>, TransportError>>> {
    Box::pin(async move { messages.pop_front().map(|m| Ok(received(m))) })
}

/// One message from the broker, to settle with exactly one of `ack`, `nack`, `reject`.
pub trait Received: Send + Sync {
    /// The body.
    fn body(&self) -> &[u8];
    /// The headers (names as sent).
    fn headers(&self) -> Vec<(&str, &str)>;
    /// How many times the broker delivered it, this time included (1 the first time).
    fn deliveries(&self) -> u32;
    /// Where it is at the broker (subject, stream sequence), for dead letters and logs.
    fn locator(&self) -> String;
    /// Done: the broker forgets it.
    ///
    /// The bridge holds the message's place among its `max_in_flight` until this completes.
    /// A transport may complete it once the ack is on its way rather than confirmed, bounding
    /// the acks under way itself (SQS hands deletes to a batching deleter); an ack that is
    /// lost means a redelivery, which at least once allows.
    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>>;
    /// Not now: deliver it again after `delay`.
    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), TransportError>>;
    /// Never: do not deliver it again (it was dead-lettered here).
    fn reject(&self) -> BoxFuture<'_, Result<(), TransportError>>;
    /// Still working on it: the broker should not deliver it again yet.
    fn in_progress(&self) -> BoxFuture<'_, Result<(), TransportError>>;
}

/// A consumer group's backlog at the broker, from [`BridgeHandle::lag`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lag {
    /// Messages not yet delivered to any process of the group.
    pub pending: u64,
    /// Messages delivered and not yet acked.
    pub unacked: u64,
}

impl Lag {
    /// A lag of `pending` undelivered and `unacked` delivered messages.
    pub fn new(pending: u64, unacked: u64) -> Self {
        Self { pending, unacked }
    }
}

/// A name pattern: dotted segments, `*` matches one segment, a final `>` one or more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern(String);

impl Pattern {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<&str> = text.split('.').collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let ok = match *segment {
                "" => false,
                "*" => true,
                ">" => last,
                s => !s.contains(['*', '>']) && !s.chars().any(char::is_whitespace),
            };
            if !ok {
                return Err(format!(
                    "bad event name pattern `{text}`: use dotted segments, `*` for one \
                     segment, a final `>` for the rest (like `order.*` or `order.>`)"
                ));
            }
        }
        Ok(Self(text.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        let mut names = name.split('.');
        for segment in self.0.split('.') {
            match (segment, names.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (s, Some(n)) if s == n => {}
                _ => return false,
            }
        }
        names.next().is_none()
    }
}

/// What a bridge did so far, from [`BridgeHandle::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Events published to the broker and acknowledged by it.
    pub published: u64,
    /// Publish attempts that failed (each is tried again until the publish timeout).
    pub publish_errors: u64,
    /// Outbound events dead-lettered after the publish timeout.
    pub publish_dead_lettered: u64,
    /// Messages received from the broker (redeliveries included).
    pub received: u64,
    /// Messages acked after every subscriber was done.
    pub acked: u64,
    /// Messages nacked for a later redelivery.
    pub nacked: u64,
    /// Inbound messages dead-lettered (and rejected at the broker).
    pub dead_lettered: u64,
    /// Messages taken from the broker and not yet settled, now.
    pub in_flight: usize,
    /// The most ever in flight at once; never above `max_in_flight`.
    pub peak_in_flight: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    publish_dead_lettered: AtomicU64,
    received: AtomicU64,
    acked: AtomicU64,
    nacked: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

impl Counters {
    fn snapshot(&self) -> BridgeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BridgeStats {
            published: get(&self.published),
            publish_errors: get(&self.publish_errors),
            publish_dead_lettered: get(&self.publish_dead_lettered),
            received: get(&self.received),
            acked: get(&self.acked),
            nacked: get(&self.nacked),
            dead_lettered: get(&self.dead_lettered),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
        }
    }
}

/// What the bridge's outbound subscribers and inbound tasks share.
pub(crate) struct Link {
    pub(crate) name: String,
    /// `bridge.<name>`: the source of its inbound dead letters.
    pub(crate) dead_letter_source: String,
    pub(crate) source: String,
    pub(crate) mode: Mode,
    pub(crate) limits: Limits,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) counters: Counters,
    pub(crate) publish_timeout: Duration,
    /// Publishes of one event type in flight at once.
    pub(crate) publish_window: usize,
    pub(crate) handle_timeout: Duration,
    pub(crate) redelivery: RetryPolicy,
    pub(crate) topology: Topology,
}

impl Link {
    /// An event as a broker message, in the bridge's mode: written from its parts, its data
    /// in any serializable form (the outbound side writes the typed event as it is).
    pub(crate) fn encode<D: serde::Serialize + ?Sized>(
        &self,
        name: &str,
        schema_version: u32,
        meta: &crate::Metadata,
        data: &D,
        key: Option<String>,
    ) -> serde_json::Result<Outgoing> {
        let parts = crate::codec::Parts {
            name,
            schema_version,
            meta,
            source: &self.source,
            data,
        };
        let (headers, body) = match self.mode {
            Mode::Structured => (
                vec![(
                    "content-type".to_owned(),
                    "application/cloudevents+json".to_owned(),
                )],
                parts.structured()?,
            ),
            Mode::Binary => parts.binary()?,
        };
        Ok(Outgoing {
            name: name.to_owned(),
            id: meta.id,
            key,
            headers,
            body,
        })
    }

    /// A broker message as an event: binary mode when it has a `ce-specversion` header,
    /// structured otherwise.
    pub(crate) fn decode(&self, message: &dyn Received) -> Result<EventData, CodecError> {
        let headers = message.headers();
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("ce-specversion"))
        {
            crate::codec::from_binary(headers, message.body(), &self.limits)
        } else {
            let size = message.body().len()
                + headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>();
            if size > self.limits.max_bytes {
                return Err(CodecError::Oversize {
                    size,
                    limit: self.limits.max_bytes,
                });
            }
            crate::codec::from_structured(message.body(), &self.limits)
        }
    }
}

/// Configures one bridge between the app and a broker; give it to
/// [`AppBuilder::bridge`](crate::AppBuilder::bridge). See the [module docs](self).
///
/// ```no_run
/// # #[cfg(feature = "nats")]
/// # async fn run() -> eventdriven::Result<()> {
/// use eventdriven::prelude::*;
/// use eventdriven::bridge::{nats::Nats, Bridge, Mode};
///
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "order.placed")]
/// struct OrderPlaced { order: u64 }
///
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "payment.completed")]
/// struct PaymentCompleted { order: u64 }
///
/// #[subscribe(idempotent)]
/// async fn ship(ev: &PaymentCompleted) { println!("ship order {}", ev.order); }
///
/// let bridge = Bridge::new("orders", Nats::new("nats://127.0.0.1:4222").stream("SHOP"))
///     .mode(Mode::Binary)
///     .publish_keyed(|ev: &OrderPlaced| ev.order.to_string()) // out: order.placed
///     .consume_matching("payment.*")                          // in: payment.completed, ...
///     .group("orders")                                        // processes share the work
///     .max_in_flight(64);
/// let app = App::builder().subscriber(ship).bridge(bridge).build().await?;
/// app.publish(OrderPlaced { order: 7 }).await?;                // goes to the broker too
/// println!("{:?}", app.bridge("orders").unwrap().lag().await);
/// app.shutdown().await // drains, then closes the bridge
/// # }
/// ```
#[must_use = "give the bridge to `AppBuilder::bridge`"]
pub struct Bridge {
    name: String,
    transport: Arc<dyn Transport>,
    source: Option<String>,
    mode: Mode,
    limits: Limits,
    group: Option<String>,
    max_in_flight: usize,
    ack_wait: Duration,
    publish_timeout: Duration,
    publish_window: usize,
    handle_timeout: Duration,
    connect_timeout: Duration,
    redelivery: RetryPolicy,
    outbound: Vec<Forward>,
    outbound_patterns: Vec<Pattern>,
    /// Event types registered for patterns, beyond the subscribed ones.
    known: Vec<Forward>,
    consume: Vec<Pattern>,
    errors: Vec<String>,
}

impl fmt::Debug for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bridge")
            .field("name", &self.name)
            .field("transport", &self.transport.kind())
            .field("mode", &self.mode)
            .field(
                "publish",
                &self.outbound.iter().map(|f| f.name).collect::<Vec<_>>(),
            )
            .field("consume", &self.consume)
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// A bridge named `name` (unique in the app; its consumer group unless
    /// [`group`](Self::group) says otherwise) over `transport`. Defaults: structured mode,
    /// source `/eventdriven/<name>`, 1 MiB messages, 32 messages in flight, ack wait 30 s,
    /// publish timeout 60 s, 64 publishes in flight per event type, handling timeout 5 min,
    /// redelivery 5 more attempts with backoff 1 s to 60 s.
    pub fn new(name: impl Into<String>, transport: impl Transport) -> Self {
        let name = name.into();
        Self {
            transport: Arc::new(transport),
            source: None,
            mode: Mode::default(),
            limits: Limits::default(),
            group: None,
            max_in_flight: 32,
            ack_wait: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(60),
            publish_window: 64,
            handle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            redelivery: RetryPolicy::retries(5).backoff(Backoff::exponential(
                Duration::from_secs(1),
                Duration::from_secs(60),
            )),
            outbound: Vec::new(),
            outbound_patterns: Vec::new(),
            known: Vec::new(),
            consume: Vec::new(),
            errors: Vec::new(),
            name,
        }
    }

    /// The CloudEvents `source` of outbound events.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Structured (default) or binary CloudEvents. Inbound messages are read in either mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The largest inbound message accepted; larger ones are dead-lettered.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The consumer group (durable consumer, queue group): every process of the app with the
    /// same group shares the inbound messages, each handled by one of them.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// At most `n` messages (at least 1) taken from the broker and not yet acked, in this
    /// process. (On SQS an ack is a delete handed to a batching deleter: as many handled
    /// messages again may wait for their delete, see `bridge::sqs`.)
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How long the broker waits for an ack before delivering a message again. While the
    /// subscribers work on a message, the bridge tells the broker so every half of it.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait.max(Duration::from_millis(100));
        self
    }

    /// How long an outbound event is tried (with backoff) while the broker does not
    /// acknowledge it, before it goes to the dead letters.
    ///
    /// An event given up on may still reach the broker (its request was on the way): retrying
    /// its dead letter then sends it again, with the same id, for idempotent subscribers (and
    /// JetStream's duplicate window) to drop.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// At most `n` outbound events of one type (at least 1) published and not yet acknowledged
    /// by the broker at once. They are sent in order; an event with a key waits while an
    /// earlier one with the same key is in flight. With 1, each event waits for the previous
    /// one's acknowledgement, which keeps every event in order also across a failed publish
    /// (see the [module docs](self)).
    pub fn publish_window(mut self, n: usize) -> Self {
        self.publish_window = n.max(1);
        self
    }

    /// How long the bridge waits for the subscribers of one inbound message before nacking it
    /// for a redelivery.
    pub fn handle_timeout(mut self, timeout: Duration) -> Self {
        self.handle_timeout = timeout;
        self
    }

    /// How long `build()` waits for the broker.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The attempts and backoff of broker redeliveries (a message the app could not take, or
    /// that timed out); after the last attempt it is dead-lettered and rejected.
    pub fn redelivery(mut self, policy: RetryPolicy) -> Self {
        self.redelivery = policy;
        self
    }

    /// Publishes every event of type `E` to the broker. (`DeserializeOwned` too: the relay
    /// decodes stored events into their type before the bridge sees them.)
    pub fn publish<E: Event + Serialize + DeserializeOwned>(mut self) -> Self {
        self.outbound.push(Forward::of::<E>(None));
        self
    }

    /// Publishes every event of type `E` with a partition / routing key taken from it (per-key
    /// order where the broker partitions).
    pub fn publish_keyed<E, K>(mut self, key: impl Fn(&E) -> K + Send + Sync + 'static) -> Self
    where
        E: Event + Serialize + DeserializeOwned,
        K: ToString,
    {
        let key = Arc::new(move |e: &E| key(e).to_string());
        self.outbound.push(Forward::of::<E>(Some(key)));
        self
    }

    /// Publishes the events whose names match `pattern` (see the [module docs](self)), among
    /// the types the app subscribes to and those given with [`event`](Self::event).
    pub fn publish_matching(mut self, pattern: &str) -> Self {
        match Pattern::parse(pattern) {
            Ok(p) => self.outbound_patterns.push(p),
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// Makes event type `E` known to [`publish_matching`](Self::publish_matching) patterns
    /// (types an actor of the app subscribes to are known already).
    pub fn event<E: Event + Serialize + DeserializeOwned>(mut self) -> Self {
        self.known.push(Forward::of::<E>(None));
        self
    }

    /// Consumes events of type `E` from the broker (some actor of the app must subscribe to
    /// it; see [`App::publish_incoming`]).
    pub fn consume<E: Event>(self) -> Self {
        self.consume_matching(E::NAME)
    }

    /// Consumes the events whose names match `pattern`. A consumed event no actor of the app
    /// subscribes to is dead-lettered with the reason.
    pub fn consume_matching(mut self, pattern: &str) -> Self {
        match Pattern::parse(pattern) {
            Ok(p) => self.consume.push(p),
            Err(e) => self.errors.push(e),
        }
        self
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Checks the settings and makes the shared link; the outbound forwards come back beside
    /// it for the builder to wire.
    pub(crate) fn into_parts(self) -> Result<Parts, String> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(format!("bridge `{}`: {e}", self.name));
        }
        if self.name.is_empty() {
            return Err("a bridge needs a name".to_owned());
        }
        let group = self.group.unwrap_or_else(|| self.name.clone());
        let topology = Topology {
            bridge: self.name.clone(),
            group,
            consume: self.consume.iter().map(|p| p.as_str().to_owned()).collect(),
            max_in_flight: self.max_in_flight,
            ack_wait: self.ack_wait,
            connect_timeout: self.connect_timeout,
        };
        let link = Arc::new(Link {
            dead_letter_source: format!("bridge.{}", self.name),
            source: self
                .source
                .unwrap_or_else(|| format!("/eventdriven/{}", self.name)),
            name: self.name,
            mode: self.mode,
            limits: self.limits,
            transport: self.transport,
            counters: Counters::default(),
            publish_timeout: self.publish_timeout,
            publish_window: self.publish_window,
            handle_timeout: self.handle_timeout,
            redelivery: self.redelivery,
            topology,
        });
        Ok(Parts {
            link,
            outbound: self.outbound,
            patterns: self.outbound_patterns,
            known: self.known,
            connect_timeout: self.connect_timeout,
        })
    }
}

/// A bridge taken apart by the builder.
pub(crate) struct Parts {
    pub(crate) link: Arc<Link>,
    pub(crate) outbound: Vec<Forward>,
    pub(crate) patterns: Vec<Pattern>,
    pub(crate) known: Vec<Forward>,
    pub(crate) connect_timeout: Duration,
}

impl Parts {
    /// The forwards to wire: the types given, then the known and subscribed types whose names
    /// match a pattern (`subscribed`: the app's codecs' forwards), each type once.
    pub(crate) fn forwards(&self, subscribed: &[Forward]) -> Vec<Forward> {
        let mut chosen: Vec<Forward> = Vec::new();
        let mut add = |forward: &Forward| {
            if !chosen.iter().any(|f| f.type_id == forward.type_id) {
                chosen.push(forward.clone());
            }
        };
        self.outbound.iter().for_each(&mut add);
        for forward in self.known.iter().chain(subscribed) {
            if self.patterns.iter().any(|p| p.matches(forward.name)) {
                add(forward);
            }
        }
        chosen
    }

    /// Connects the transport (at most the connect timeout).
    pub(crate) async fn connect(&self) -> Result<(), String> {
        let link = &self.link;
        match tokio::time::timeout(self.connect_timeout, link.transport.connect(&link.topology))
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("bridge `{}`: {e}", link.name)),
            Err(_) => Err(format!(
                "bridge `{}`: the {} broker did not answer within {:?}",
                link.name,
                link.transport.kind(),
                self.connect_timeout
            )),
        }
    }
}

/// A running bridge, from [`App::bridge`]. Cheap to clone.
#[derive(Clone)]
pub struct BridgeHandle {
    link: Arc<Link>,
    inbound: Option<Arc<inbound::Inbound>>,
    finished: Arc<Mutex<bool>>,
}

impl fmt::Debug for BridgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeHandle")
            .field("name", &self.link.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl BridgeHandle {
    /// Starts the inbound side (if the bridge consumes anything).
    pub(crate) fn start(link: Arc<Link>, app: &App) -> Self {
        let inbound =
            (!link.topology.consume.is_empty()).then(|| inbound::start(link.clone(), app));
        Self {
            link,
            inbound,
            finished: Arc::new(Mutex::new(false)),
        }
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.link.name
    }

    /// What the bridge did so far.
    pub fn stats(&self) -> BridgeStats {
        self.link.counters.snapshot()
    }

    /// The consumer group's backlog at the broker (at most 5 s); `None` when the bridge
    /// consumes nothing or the broker cannot tell.
    pub async fn lag(&self) -> Result<Option<Lag>, TransportError> {
        if self.inbound.is_none() {
            return Ok(None);
        }
        match tokio::time::timeout(Duration::from_secs(5), self.link.transport.lag()).await {
            Ok(lag) => lag,
            Err(_) => Err(TransportError::Unavailable(
                "no answer about the lag within 5 s".to_owned(),
            )),
        }
    }

    /// Stops fetching from the broker (shutdown's first step); messages in flight go on.
    pub(crate) fn stop_intake(&self) {
        if let Some(inbound) = &self.inbound {
            inbound.signal_stop();
        }
    }

    /// Waits (at most `grace`) for the inbound tasks to settle their messages, then closes
    /// the connection.
    pub(crate) async fn finish(&self, grace: Duration) {
        {
            let mut finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
            if *finished {
                return;
            }
            *finished = true;
        }
        if let Some(inbound) = &self.inbound {
            inbound.stop_within(grace).await;
        }
        if tokio::time::timeout(grace, self.link.transport.close())
            .await
            .is_err()
        {
            tracing::warn!(
                bridge = self.link.name,
                "the broker connection did not close in time"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::{next_at_hand, BoxFuture, Pattern, Received, TransportError};

    /// A message of nothing, to count what a batch hands out.
    struct Nothing;

    impl Received for Nothing {
        fn body(&self) -> &[u8] {
            &[]
        }
        fn headers(&self) -> Vec<(&str, &str)> {
            Vec::new()
        }
        fn deliveries(&self) -> u32 {
            1
        }
        fn locator(&self) -> String {
            String::new()
        }
        fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            Box::pin(async { Ok(()) })
        }
        fn nack(&self, _: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
            Box::pin(async { Ok(()) })
        }
        fn reject(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            Box::pin(async { Ok(()) })
        }
        fn in_progress(&self) -> BoxFuture<'_, Result<(), TransportError>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn a_message_leaves_its_batch_only_when_polled() {
        let mut messages: VecDeque<Nothing> = [Nothing, Nothing].into();
        // Dropped unpolled, as when the stop signal wins the race: the batch keeps it.
        drop(next_at_hand(&mut messages, |m| Box::new(m)));
        assert_eq!(messages.len(), 2);
        assert!(next_at_hand(&mut messages, |m| Box::new(m)).await.is_some());
        assert_eq!(messages.len(), 1);
    }

    #[test]
    fn patterns_match_by_segment() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("order.*").matches("order.placed"));
        assert!(!p("order.*").matches("order.line.added"));
        assert!(!p("order.*").matches("order"));
        assert!(p("order.>").matches("order.line.added"));
        assert!(!p("order.>").matches("order"));
        assert!(p("order.placed").matches("order.placed"));
        assert!(!p("order.placed").matches("order.placed.v2"));
        assert!(p("*.placed").matches("order.placed"));
        assert!(p(">").matches("anything.at.all"));
        for bad in ["", "order.", "order.>.x", "ord*", "a b"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
