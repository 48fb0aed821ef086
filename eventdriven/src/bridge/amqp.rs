//! The RabbitMQ transport (feature `amqp`): AMQP 0.9.1 on the `lapin` client (tested with
//! RabbitMQ 3.10).
//!
//! - **One topic exchange**: every event is published to one durable topic exchange
//!   (`eventdriven` by default) with the event's name as routing key, persistent delivery
//!   mode, the event id as `message_id`, the name as `type`, and publisher confirms: the
//!   publish completes when the broker confirmed it (for a persistent message in a durable
//!   queue, once it is stored). The routing key is always the name, so that consumers'
//!   bindings select by name; a partition key travels in the `eventdriven-key` header (RabbitMQ
//!   has no partitions: one queue keeps one order). Structured mode sets `content-type`;
//!   binary mode puts the `ce-*` attributes in the headers table and `content-type` in the
//!   property. RabbitMQ does not deduplicate: a publish repeated after a lost confirm is stored
//!   twice, and idempotent subscribers (the event id is kept) remove the copy. An event no
//!   queue is bound for is dropped by the exchange, as RabbitMQ does: a consumer group's queue
//!   exists from the first time one of its processes started, so start each group once before
//!   it must keep events.
//! - **One queue per group**: a bridge's group is a durable classic queue named
//!   `<exchange>.<group>`, bound to the exchange with the consumed patterns (`*` stays, a
//!   final `>` becomes `#`, which also matches the bare prefix: `order.>` binds `order.#`,
//!   which routes an event named `order` too); every process of the group consumes from it, so
//!   they share the messages (competing consumers). `basic.qos` with the bridge's
//!   `max_in_flight` as prefetch bounds what the broker sends ahead; acks are manual.
//! - **Settling**: ack is `basic.ack`, reject is `basic.reject` without requeue (the bridge
//!   dead-lettered it). RabbitMQ has no per-message redelivery delay: a nack holds the
//!   delivery, unacked, for the delay and then returns it with `basic.nack` (requeue). Held
//!   messages count against the prefetch meanwhile, and return to the queue at once if the
//!   connection drops. A classic queue only flags a delivery as redelivered: the transport
//!   counts the deliveries of each message (by `message_id`, else `ce-id`) it received itself, and a
//!   redelivery it has not seen counts as the second (a quorum queue's `x-delivery-count`,
//!   where one was declared elsewhere, is used instead). So the bridge's redelivery policy is
//!   exact for nacks in one process, and a message that crashes process after process is
//!   seen as delivered twice by each. In-progress signals do nothing: RabbitMQ waits for an
//!   ack as long as the consumer's connection lives (its `consumer_timeout`, 30 min by
//!   default, aside).
//! - **Lag**: `pending` is the queue's ready messages (a passive `queue.declare`); `unacked`
//!   is what this process holds (RabbitMQ tells the other consumers' count only through its
//!   management API).
//! - **Reconnection**: a closed connection or channel is noticed by the next publish, fetch or
//!   settle, which fails (the bridge tries again); the next call connects anew and declares
//!   the exchange, queue and bindings again. The broker returns the dead channel's unacked
//!   deliveries to the queue (at least once).
//!
//! See `docs/decisions.md` for why the delay and the queue type work this way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    ExchangeKind,
};

use super::{
    Batch, BoxFuture, Lag, Outgoing, Received, Subscription, Topology, Transport, TransportError,
};

/// The header with the partition key.
const KEY_HEADER: &str = "eventdriven-key";
/// The header a quorum queue counts earlier deliveries in.
const DELIVERY_COUNT: &str = "x-delivery-count";
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a publish may wait for the broker's confirm (a connection that died without a
/// word would keep it waiting).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a batch waits for the first message.
const FETCH_WAIT: Duration = Duration::from_secs(1);

/// A RabbitMQ broker (AMQP 0.9.1), as a bridge's [`Transport`].
///
/// ```
/// use eventdriven::bridge::amqp::Amqp;
///
/// let rabbit = Amqp::new("amqp://guest:guest@127.0.0.1:5672/%2f").exchange("shop");
/// # let _ = rabbit;
/// ```
///
/// In a bridge:
///
/// ```no_run
/// # async fn run() -> eventdriven::Result<()> {
/// use eventdriven::prelude::*;
/// use eventdriven::bridge::{amqp::Amqp, Bridge, Mode};
///
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "payment.completed")]
/// struct PaymentCompleted { order: u64 }
///
/// #[subscribe(idempotent)]
/// async fn ship(ev: &PaymentCompleted) { println!("ship order {}", ev.order); }
///
/// let rabbit = Amqp::new("amqp://guest:guest@127.0.0.1:5672/%2f").exchange("shop");
/// let bridge = Bridge::new("orders", rabbit)
///     .mode(Mode::Binary)                // ce-* attributes in the AMQP headers
///     .consume_matching("payment.*")     // binds queue `shop.orders` with `payment.*`
///     .group("orders")                   // one queue: the processes share the work
///     .max_in_flight(64);                // the consumer's prefetch
/// let app = App::builder().subscriber(ship).bridge(bridge).build().await?;
/// app.shutdown().await
/// # }
/// ```
#[derive(Debug)]
pub struct Amqp {
    url: String,
    exchange: String,
    /// The current connection, replaced when it dies.
    live: tokio::sync::Mutex<Option<Live>>,
    group: OnceLock<Group>,
    /// Other groups' queues this process declares (`keep_for`), so events published before
    /// those groups' processes ever started are kept for them.
    kept: Vec<(String, Vec<String>)>,
    /// Deliveries this process holds and has not settled.
    held: Arc<AtomicU64>,
    /// Deliveries seen here per message id, for messages not yet acked or rejected.
    counts: Arc<Counts>,
}

/// How many times this process received each message it has not settled for good: classic
/// queues tell only whether a delivery is a redelivery.
#[derive(Debug, Default)]
struct Counts(Mutex<HashMap<String, u32>>);

impl Counts {
    /// Most message ids remembered; beyond, the oldest knowledge is dropped (counts restart
    /// at 2 for a redelivery, never lower).
    const MAX: usize = 100_000;

    fn delivered(&self, id: Option<&str>, redelivered: bool) -> u32 {
        let Some(id) = id else {
            return if redelivered { 2 } else { 1 };
        };
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= Self::MAX {
            counts.clear();
        }
        let count = match (redelivered, counts.get(id)) {
            (false, _) => 1,
            (true, Some(n)) => n.saturating_add(1),
            (true, None) => 2,
        };
        counts.insert(id.to_owned(), count);
        count
    }

    fn forget(&self, id: Option<&str>) {
        if let Some(id) = id {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        }
    }
}

/// A connection and its publishing channel (confirms on).
#[derive(Clone, Debug)]
struct Live {
    connection: Arc<Connection>,
    publisher: Channel,
}

impl Live {
    fn alive(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }
}

/// The queue of this process's group, once the bridge consumes.
#[derive(Debug)]
struct Group {
    queue: String,
    bindings: Vec<String>,
    prefetch: u16,
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

/// A bridge name pattern as a topic binding key: a final `>` is `#`.
fn binding_key(pattern: &str) -> String {
    match pattern.strip_suffix('>') {
        Some(head) => format!("{head}#"),
        None => pattern.to_owned(),
    }
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => String::from_utf8(b.as_slice().to_vec()).ok(),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        AMQPValue::ShortShortInt(i) => Some(i.to_string()),
        AMQPValue::ShortShortUInt(i) => Some(i.to_string()),
        AMQPValue::ShortInt(i) => Some(i.to_string()),
        AMQPValue::ShortUInt(i) => Some(i.to_string()),
        AMQPValue::LongInt(i) => Some(i.to_string()),
        AMQPValue::LongUInt(i) => Some(i.to_string()),
        AMQPValue::LongLongInt(i) => Some(i.to_string()),
        _ => None,
    }
}

fn count(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::ShortShortInt(i) => u64::try_from(*i).ok(),
        AMQPValue::ShortShortUInt(i) => Some(u64::from(*i)),
        AMQPValue::ShortInt(i) => u64::try_from(*i).ok(),
        AMQPValue::ShortUInt(i) => Some(u64::from(*i)),
        AMQPValue::LongInt(i) => u64::try_from(*i).ok(),
        AMQPValue::LongUInt(i) => Some(u64::from(*i)),
        AMQPValue::LongLongInt(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

impl Amqp {
    /// The broker at `url` (`amqp://user:password@host:port/vhost`, the default vhost being
    /// `%2f`; TLS is not compiled in); exchange `eventdriven`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            exchange: "eventdriven".to_owned(),
            live: tokio::sync::Mutex::new(None),
            group: OnceLock::new(),
            kept: Vec::new(),
            held: Arc::new(AtomicU64::new(0)),
            counts: Arc::default(),
        }
    }

    /// The topic exchange events are published to; a group's queue is named
    /// `<exchange>.<group>`.
    pub fn exchange(mut self, name: impl Into<String>) -> Self {
        self.exchange = name.into();
        self
    }

    /// Declares the queue of consumer group `group` with the bindings of `patterns` (event
    /// names or patterns, as its consuming bridge would give them) whenever this transport
    /// connects, so the events this process publishes are kept for that group even before
    /// any of its processes started. Without it, an event published while no queue is bound
    /// for it is dropped by the exchange (RabbitMQ's rule). Call once per group to keep for.
    ///
    /// ```
    /// use eventdriven::bridge::amqp::Amqp;
    ///
    /// // The orders process keeps `order.placed` for the fulfillment group from the start.
    /// let amqp = Amqp::new("amqp://guest:guest@127.0.0.1:5672/%2f")
    ///     .exchange("shop")
    ///     .keep_for("fulfillment", ["order.placed"]);
    /// # let _ = amqp;
    /// ```
    pub fn keep_for<P: AsRef<str>>(
        mut self,
        group: &str,
        patterns: impl IntoIterator<Item = P>,
    ) -> Self {
        let bindings = patterns
            .into_iter()
            .map(|p| binding_key(p.as_ref()))
            .collect();
        self.kept.push((group.to_owned(), bindings));
        self
    }

    /// The live connection, connecting (and declaring the topology) if there is none or it
    /// died.
    async fn live(&self) -> Result<Live, TransportError> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref().filter(|l| l.alive()) {
            return Ok(l.clone());
        }
        if let Some(dead) = live.take() {
            // Whatever it still holds goes back to the queue on the broker's side.
            let _ = tokio::time::timeout(
                Duration::from_millis(200),
                dead.connection.close(200, "reconnecting".into()),
            )
            .await;
        }
        let fresh = tokio::time::timeout(CONNECT_TIMEOUT, self.open())
            .await
            .map_err(|_| unavailable(format!("no connection within {CONNECT_TIMEOUT:?}")))??;
        *live = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forgets `dead` (if it is still the current connection) so the next call reconnects.
    async fn forget(&self, dead: &Live) {
        let mut live = self.live.lock().await;
        if live
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.connection, &dead.connection))
        {
            *live = None;
        }
    }

    async fn open(&self) -> Result<Live, TransportError> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(unavailable)?;
        let publisher = connection.create_channel().await.map_err(unavailable)?;
        publisher
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(refused)?;
        if let Some(group) = self.group.get() {
            declare_queue(&publisher, &self.exchange, group).await?;
        }
        for (group, bindings) in &self.kept {
            let group = Group {
                queue: format!("{}.{group}", self.exchange),
                bindings: bindings.clone(),
                prefetch: 0,
            };
            declare_queue(&publisher, &self.exchange, &group).await?;
        }
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        Ok(Live {
            connection: Arc::new(connection),
            publisher,
        })
    }
}

/// An error of a declaration: the broker refused it (another type of queue or exchange under
/// that name), or the connection is gone.
fn refused(e: lapin::Error) -> TransportError {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(_) => TransportError::Refused(e.to_string()),
        _ => unavailable(e),
    }
}

/// Declares the group's durable classic queue and binds it with the group's patterns.
async fn declare_queue(
    channel: &Channel,
    exchange: &str,
    group: &Group,
) -> Result<(), TransportError> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    channel
        .queue_declare(
            group.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .map_err(refused)?;
    for key in &group.bindings {
        channel
            .queue_bind(
                group.queue.as_str().into(),
                exchange.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(refused)?;
    }
    Ok(())
}

impl Transport for Amqp {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn connect<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            if self.exchange.is_empty() {
                return Err(TransportError::Config(
                    "the RabbitMQ exchange name is empty".to_owned(),
                ));
            }
            if !topology.consume.is_empty() {
                if topology.group.is_empty() {
                    return Err(TransportError::Config(
                        "the RabbitMQ queue's group (the bridge's group) is empty".to_owned(),
                    ));
                }
                let _ = self.group.set(Group {
                    queue: format!("{}.{}", self.exchange, topology.group),
                    bindings: topology.consume.iter().map(|p| binding_key(p)).collect(),
                    prefetch: u16::try_from(topology.max_in_flight).unwrap_or(u16::MAX),
                });
            }
            self.live().await.map(drop)
        })
    }

    fn publish<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let live = self.live().await?;
            let mut headers = FieldTable::default();
            let mut content_type = None;
            for (name, value) in &message.headers {
                if name.eq_ignore_ascii_case("content-type") {
                    content_type = Some(ShortString::from(value.as_str()));
                } else {
                    headers.insert(
                        name.as_str().into(),
                        AMQPValue::LongString(value.as_str().into()),
                    );
                }
            }
            if let Some(key) = &message.key {
                headers.insert(
                    KEY_HEADER.into(),
                    AMQPValue::LongString(key.as_str().into()),
                );
            }
            let mut properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(message.id.to_string().into())
                .with_type(message.name.as_str().into())
                .with_headers(headers);
            if let Some(content_type) = content_type {
                properties = properties.with_content_type(content_type);
            }
            let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, async {
                live.publisher
                    .basic_publish(
                        self.exchange.as_str().into(),
                        message.name.as_str().into(),
                        BasicPublishOptions::default(),
                        &message.body,
                        properties,
                    )
                    .await?
                    .await
            })
            .await;
            let Ok(confirmed) = confirmed else {
                self.forget(&live).await;
                return Err(unavailable(format!(
                    "no confirm from the broker within {CONFIRM_TIMEOUT:?}"
                )));
            };
            match confirmed {
                Ok(Confirmation::Ack(_)) => Ok(()),
                Ok(Confirmation::Nack(_)) => Err(unavailable("the broker nacked the publish")),
                Ok(Confirmation::NotRequested) => Err(unavailable("the publish was not confirmed")),
                Err(e) => {
                    self.forget(&live).await;
                    Err(unavailable(e))
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
            let live = self.live().await?;
            let subscribed = async {
                let channel = live
                    .connection
                    .create_channel()
                    .await
                    .map_err(unavailable)?;
                channel
                    .basic_qos(group.prefetch, BasicQosOptions::default())
                    .await
                    .map_err(unavailable)?;
                // A broker that lost its data lost the queue too.
                declare_queue(&channel, &self.exchange, group).await?;
                let consumer = channel
                    .basic_consume(
                        group.queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(unavailable)?;
                Ok::<_, TransportError>((channel, consumer))
            }
            .await;
            match subscribed {
                Ok((channel, consumer)) => Ok(Box::new(AmqpSubscription {
                    channel,
                    consumer,
                    queue: group.queue.clone(),
                    held: self.held.clone(),
                    counts: self.counts.clone(),
                }) as Box<dyn Subscription>),
                Err(e) => {
                    self.forget(&live).await;
                    Err(e)
                }
            }
        })
    }

    fn lag(&self) -> BoxFuture<'_, Result<Option<Lag>, TransportError>> {
        Box::pin(async move {
            let Some(group) = self.group.get() else {
                return Ok(None);
            };
            let live = self.live().await?;
            // A channel of its own: a passive declare of a missing queue closes its channel.
            let channel = live
                .connection
                .create_channel()
                .await
                .map_err(unavailable)?;
            let queue = channel
                .queue_declare(
                    group.queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            let _ = channel.close(200, "lag".into()).await;
            let queue = queue.map_err(refused)?;
            Ok(Some(Lag::new(
                u64::from(queue.message_count()),
                self.held.load(Ordering::Relaxed),
            )))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Deliveries not settled go back to the queue, for the other processes.
            if let Some(live) = self.live.lock().await.take() {
                if let Err(error) = live.connection.close(200, "bye".into()).await {
                    tracing::debug!(%error, "RabbitMQ connection not closed cleanly");
                }
            }
        })
    }
}

struct AmqpSubscription {
    /// Kept open while the consumer runs.
    channel: Channel,
    consumer: Consumer,
    queue: String,
    held: Arc<AtomicU64>,
    counts: Arc<Counts>,
}

impl Subscription for AmqpSubscription {
    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Box<dyn Batch>, TransportError>> {
        Box::pin(async move {
            let max = max.max(1);
            let mut messages = VecDeque::with_capacity(max);
            // The first message waits up to a second; the rest are those already here.
            let mut next = tokio::time::timeout(FETCH_WAIT, self.consumer.next())
                .await
                .ok();
            while let Some(item) = next.take() {
                match item {
                    None => return Err(unavailable("the RabbitMQ consumer was cancelled")),
                    Some(Err(e)) => return Err(unavailable(e)),
                    Some(Ok(delivery)) => {
                        messages.push_back(AmqpMessage::new(delivery, self));
                    }
                }
                if messages.len() < max {
                    next = futures_util::FutureExt::now_or_never(self.consumer.next());
                }
            }
            if messages.is_empty() && !self.channel.status().connected() {
                return Err(unavailable("the RabbitMQ channel is closed"));
            }
            Ok(Box::new(AmqpBatch { messages }) as Box<dyn Batch>)
        })
    }
}

struct AmqpBatch {
    messages: VecDeque<AmqpMessage>,
}

impl Batch for AmqpBatch {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Box<dyn Received>, TransportError>>> {
        super::next_at_hand(&mut self.messages, |m| Box::new(m))
    }
}

impl Drop for AmqpBatch {
    /// Messages received but never handed out (the bridge stopped mid-batch) go back to the
    /// queue at once.
    fn drop(&mut self) {
        for message in self.messages.drain(..) {
            message.release_later(Duration::ZERO);
        }
    }
}

struct AmqpMessage {
    acker: lapin::Acker,
    id: Option<String>,
    counts: Arc<Counts>,
    delivery_tag: u64,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    deliveries: u32,
    routing_key: String,
    queue: String,
    held: Arc<AtomicU64>,
}

impl AmqpMessage {
    fn new(delivery: lapin::message::Delivery, subscription: &AmqpSubscription) -> Self {
        subscription.held.fetch_add(1, Ordering::Relaxed);
        let properties = &delivery.properties;
        let mut headers = Vec::new();
        if let Some(content_type) = properties.content_type() {
            headers.push(("content-type".to_owned(), content_type.as_str().to_owned()));
        }
        let mut earlier = None;
        if let Some(table) = properties.headers() {
            for (name, value) in table.inner() {
                if name.as_str() == DELIVERY_COUNT {
                    earlier = count(value);
                } else if let Some(value) = text(value) {
                    headers.push((name.as_str().to_owned(), value));
                }
            }
        }
        // The message id the bridge sets; a foreign binary-mode producer's `ce-id` otherwise.
        let id = properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .or_else(|| {
                headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("ce-id"))
                    .map(|(_, value)| value.clone())
            });
        let counted = subscription
            .counts
            .delivered(id.as_deref(), delivery.redelivered);
        // A quorum queue (declared by someone else) counts for every process.
        let deliveries = match earlier {
            Some(n) => u32::try_from(n.saturating_add(1)).unwrap_or(u32::MAX),
            None => counted,
        };
        Self {
            acker: delivery.acker,
            id,
            counts: subscription.counts.clone(),
            delivery_tag: delivery.delivery_tag,
            headers,
            body: delivery.data,
            deliveries,
            routing_key: delivery.routing_key.as_str().to_owned(),
            queue: subscription.queue.clone(),
            held: subscription.held.clone(),
        }
    }

    /// Settles once: the held count goes down whatever the broker answers (a failed settle
    /// means the channel is gone, and the broker requeued the delivery).
    fn settled(&self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.counts.forget(self.id.as_deref());
    }

    /// Returns the delivery to the queue after `delay`, holding it unacked until then.
    fn release_later(&self, delay: Duration) {
        let acker = self.acker.clone();
        let held = self.held.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime: the delivery goes back when the channel closes.
            held.fetch_sub(1, Ordering::Relaxed);
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let options = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            if let Err(error) = acker.nack(options).await {
                tracing::debug!(%error, "RabbitMQ nack failed; the broker requeues at channel close");
            }
            held.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

impl Received for AmqpMessage {
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
            "RabbitMQ queue {}, routing key {}, delivery tag {}",
            self.queue, self.routing_key, self.delivery_tag
        )
    }

    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let acked = self.acker.ack(BasicAckOptions::default()).await;
            self.settled();
            acked.map(drop).map_err(unavailable)
        })
    }

    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        self.release_later(delay);
        Box::pin(async { Ok(()) })
    }

    fn reject(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            // Dead-lettered here: gone from the queue.
            let rejected = self
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            self.settled();
            rejected.map(drop).map_err(unavailable)
        })
    }

    fn in_progress(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }
}
