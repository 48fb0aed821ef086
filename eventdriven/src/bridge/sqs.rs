//! The Amazon SQS transport (feature `sqs`), on `aws-sdk-sqs` (tested with fauxqs 1.9, a
//! local SQS server speaking the SQS JSON protocol).
//!
//! - **One queue**: every event goes to one queue (`eventdriven` by default, a name or a
//!   queue URL), created when the bridge connects and it does not exist yet
//!   ([`create_queue`](Sqs::create_queue)). A name ending in `.fifo` is a FIFO queue. Events
//!   of chosen names can go to other queues instead ([`publish_to`](Sqs::publish_to)): SQS is
//!   point to point, so processes that send each other events consume a queue each. Sends
//!   are batched: publishes that wait together go out in one `SendMessageBatch` (up to 10
//!   messages and 200 KiB), and each publish completes when SQS accepted its entry.
//! - **Layout**: the body is the CloudEvent (structured mode: the JSON document; binary mode:
//!   the data), the rest are message attributes of type `String`: `eventdriven-name` (the
//!   event's name), `eventdriven-key` (the partition key, if any), `content-type`, and in
//!   binary mode the `ce-*` attributes. SQS allows 10 message attributes per message: the
//!   ones beyond the ninth (and any an SQS attribute cannot carry, such as an empty value)
//!   travel together as a JSON array of `[name, value]` pairs in `eventdriven-headers`, which
//!   the transport unpacks on receipt. SQS bodies are text: the bridge's bodies are JSON (a
//!   body that is not UTF-8 is refused).
//! - **Keys and order**: on a FIFO queue the partition key is the `MessageGroupId` (events
//!   without a key are grouped by their name) and the event id the
//!   `MessageDeduplicationId`, so SQS keeps one key's events in order and stores a publish
//!   repeated within its 5-minute deduplication window once; publishes to a FIFO queue are
//!   sent one batch at a time, in order. A standard queue has no groups: the key travels in
//!   the `eventdriven-key` attribute only, the order is SQS's best effort, and a repeated
//!   publish is stored twice (idempotent subscribers drop the copy).
//! - **Consumers**: every process that consumes the queue competes for its messages (SQS has
//!   no consumer groups: the queue is the group, and the bridge's `group` is not used; give
//!   groups that must each see every event queues of their own). `ReceiveMessage` long-polls
//!   for up to a second, at most 10 messages and never more than the bridge has room for, with
//!   the bridge's ack wait as the visibility timeout (whole seconds, at least 1). While the
//!   queue fills every receive, a fetch spreads the bridge's room over up to 4 receives at
//!   once (the first long-polls, the others take what is there). SQS cannot
//!   filter by name: messages whose name no pattern of the bridge matches are deleted as they
//!   are read, so keep other traffic on queues of its own.
//! - **Settling**: ack and reject delete the message (batched with `DeleteMessageBatch`; a
//!   rejected message was dead-lettered here). The ack is done once the delete is handed to
//!   the transport's deleter, not when SQS answered: at most `max_in_flight` deletes are under
//!   way (an ack waits for room beyond that), so a process holds at most twice `max_in_flight`
//!   messages unacked at SQS, half of them handled. A delete that fails means a redelivery
//!   after the visibility timeout (at least once); closing the transport waits for the deletes
//!   under way. Batches (sends and deletes) go out full while calls are under way, a partial
//!   one only when none is. A nack sets its visibility timeout to the delay
//!   (whole seconds, rounded up), after which SQS delivers it again; an in-progress signal sets
//!   it to the ack wait again. A message not deleted within its visibility timeout (a process
//!   that died, or hung) is delivered again by SQS. The delivery count is SQS's
//!   `ApproximateReceiveCount`, shared by every process.
//! - **Lag**: `pending` is the queue's `ApproximateNumberOfMessages`, `unacked` its
//!   `ApproximateNumberOfMessagesNotVisible` (received by any process and not deleted, or
//!   nacked and waiting for their delay), from `GetQueueAttributes`.
//! - **Reconnection**: SQS is HTTP: every call stands alone, so there is no connection to
//!   lose. Calls are bounded (3 s to connect, 5 s per attempt, 10 s per call with the SDK's
//!   retries, and the transport's own 15 s limit around each, also for a client given with
//!   [`with_client`](Sqs::with_client)); a failed publish is tried again by the bridge, a
//!   failed receive is repeated, and a delete that did not happen means a redelivery (at
//!   least once). A queue that disappeared (a local server restarted without its data) is
//!   looked up, and created, again on the next call.
//! - **Build**: `aws-sdk-sqs` without its default TLS stack (rustls on aws-lc, which needs
//!   cmake), with smithy's hyper client for plain HTTP: [`Sqs::new`] talks to local SQS
//!   servers (fauxqs, ElasticMQ, LocalStack) over `http://`. To reach AWS over HTTPS, build
//!   the client yourself (aws-config and a TLS feature of `aws-sdk-sqs` in your own
//!   `Cargo.toml`) and pass it to [`Sqs::with_client`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, RwLock, Semaphore};
use tokio::task::JoinSet;

use super::calls::run_batches;
use super::{
    Batch, BoxFuture, Lag, Outgoing, Pattern, Received, Subscription, Topology, Transport,
    TransportError,
};

/// The `aws-sdk-sqs` crate this transport is built on, for [`Sqs::with_client`].
pub use aws_sdk_sqs;

/// The attribute with the event's name.
const NAME_ATTRIBUTE: &str = "eventdriven-name";
/// The attribute with the partition key.
const KEY_ATTRIBUTE: &str = "eventdriven-key";
/// The attribute with the headers that do not fit in attributes of their own.
const HEADERS_ATTRIBUTE: &str = "eventdriven-headers";
/// SQS's limit of message attributes per message.
const MAX_ATTRIBUTES: usize = 10;
/// SQS's limit of entries per batch.
const MAX_BATCH: usize = 10;
/// The most bytes (bodies and attributes) put in one `SendMessageBatch` (SQS: 256 KiB).
const MAX_BATCH_BYTES: usize = 200 * 1024;
/// Batches sent to a standard queue at once.
const CONCURRENT_BATCHES: usize = 8;
/// How long one call to SQS may take, all attempts included (beside the SDK's own limits).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a receive waits for the first message (SQS long polling, whole seconds).
const WAIT_SECONDS: i32 = 1;
/// Receives in flight at once, at most, while the queue fills every one of them.
const MAX_RECEIVES: usize = 4;
/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY: u64 = 43_200;

/// An Amazon SQS queue, as a bridge's [`Transport`].
///
/// ```
/// use eventdriven::bridge::sqs::Sqs;
///
/// // A local SQS server (fauxqs, ElasticMQ, LocalStack) over plain HTTP.
/// let sqs = Sqs::new("http://127.0.0.1:4566").queue("shop");
/// // A FIFO queue: one key's events in order, deduplicated by event id.
/// let fifo = Sqs::new("http://127.0.0.1:4566").queue("shop.fifo");
/// # let _ = (sqs, fifo);
/// ```
///
/// In a bridge:
///
/// ```no_run
/// # async fn run() -> eventdriven::Result<()> {
/// use eventdriven::prelude::*;
/// use eventdriven::bridge::{sqs::Sqs, Bridge, Mode};
///
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "payment.completed")]
/// struct PaymentCompleted { order: u64 }
///
/// #[subscribe(idempotent)]
/// async fn ship(ev: &PaymentCompleted) { println!("ship order {}", ev.order); }
///
/// let sqs = Sqs::new("http://127.0.0.1:4566").queue("payments");
/// let bridge = Bridge::new("orders", sqs)
///     .mode(Mode::Binary)                // ce-* attributes as SQS message attributes
///     .consume_matching("payment.*")     // every process of the queue shares the work
///     .ack_wait(std::time::Duration::from_secs(30)) // the visibility timeout
///     .max_in_flight(64);
/// let app = App::builder().subscriber(ship).bridge(bridge).build().await?;
/// app.shutdown().await
/// # }
/// ```
pub struct Sqs {
    inner: Arc<Inner>,
    /// The batching sender, started with the first publish.
    sender: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// The batching deleter, started with the first receive.
    deleter: OnceLock<mpsc::UnboundedSender<Deletion>>,
    /// Room for deletes under way (the bridge's `max_in_flight`, set by the first subscribe),
    /// and how much: every place free again means no delete is under way.
    deleting_room: OnceLock<(Arc<Semaphore>, u32)>,
    /// The consumed patterns, once the bridge connected.
    patterns: OnceLock<Vec<Pattern>>,
}

impl fmt::Debug for Sqs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sqs")
            .field("endpoint", &self.inner.endpoint)
            .field("queue", &self.inner.queues[0].spec)
            .field(
                "publish_to",
                &self
                    .inner
                    .routes
                    .iter()
                    .map(|(p, q)| (p.as_str(), self.inner.queues[*q].spec.as_str()))
                    .collect::<Vec<_>>(),
            )
            .field("create", &self.inner.create)
            .finish_non_exhaustive()
    }
}

/// What the transport's tasks share.
struct Inner {
    /// The endpoint given to [`Sqs::new`] (for logs), or `None` with a client given.
    endpoint: Option<String>,
    /// The settings of the client [`Sqs::new`] makes (with its first use).
    settings: Settings,
    client: OnceLock<aws_sdk_sqs::Client>,
    /// The transport's queue first (consumed, and the default for publishing), then those
    /// of [`Sqs::publish_to`].
    queues: Vec<Queue>,
    /// Name patterns and the index in `queues` their events go to, first match wins.
    routes: Vec<(Pattern, usize)>,
    create: bool,
    /// Settings that could not be taken (a bad pattern), reported by `connect`.
    errors: Vec<String>,
}

/// One queue the transport uses.
struct Queue {
    /// Its name, or its URL.
    spec: String,
    /// Its URL once known; forgotten when SQS says the queue does not exist.
    url: RwLock<Option<String>>,
}

impl Queue {
    fn new(spec: String) -> Self {
        Self {
            spec,
            url: RwLock::new(None),
        }
    }

    fn fifo(&self) -> bool {
        self.spec.ends_with(".fifo")
    }

    /// The queue's name (the last segment of a URL).
    fn name(&self) -> &str {
        self.spec.rsplit('/').next().unwrap_or(&self.spec)
    }
}

/// The client [`Sqs::new`] makes.
#[derive(Clone)]
struct Settings {
    endpoint: String,
    region: String,
    access_key: String,
    secret_key: String,
}

impl Sqs {
    /// The SQS server at `endpoint` (`http://host:port`; `sqs://host:port` means the same),
    /// over plain HTTP (TLS is not compiled in: see [`with_client`](Self::with_client) for
    /// AWS), region `us-east-1`, credentials `test` / `test` (local servers do not check
    /// them), queue `eventdriven`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        let endpoint = match endpoint.strip_prefix("sqs://") {
            Some(rest) => format!("http://{rest}"),
            None => endpoint,
        };
        let settings = Settings {
            endpoint: endpoint.clone(),
            region: "us-east-1".to_owned(),
            access_key: "test".to_owned(),
            secret_key: "test".to_owned(),
        };
        Self::make(Some(endpoint), settings, None)
    }

    /// SQS through `client`, made by the application (with aws-config, its credentials
    /// chain, and a TLS connector for AWS's `https://` endpoints). Give it timeouts: the
    /// transport bounds each call to 15 s itself, so a hung server cannot stall it, but the
    /// client's own are what decide when a call is tried again.
    ///
    /// ```no_run
    /// use eventdriven::bridge::sqs::{aws_sdk_sqs, Sqs};
    ///
    /// # async fn run(config: aws_sdk_sqs::Config) {
    /// // `config` from `aws_config::load_from_env().await` (your own dependency).
    /// let sqs = Sqs::with_client(aws_sdk_sqs::Client::from_conf(config)).queue("orders");
    /// # let _ = sqs;
    /// # }
    /// ```
    pub fn with_client(client: aws_sdk_sqs::Client) -> Self {
        let settings = Settings {
            endpoint: String::new(),
            region: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
        };
        Self::make(None, settings, Some(client))
    }

    fn make(
        endpoint: Option<String>,
        settings: Settings,
        client: Option<aws_sdk_sqs::Client>,
    ) -> Self {
        let cell = OnceLock::new();
        if let Some(client) = client {
            let _ = cell.set(client);
        }
        Self {
            inner: Arc::new(Inner {
                endpoint,
                settings,
                client: cell,
                queues: vec![Queue::new("eventdriven".to_owned())],
                routes: Vec::new(),
                create: true,
                errors: Vec::new(),
            }),
            sender: OnceLock::new(),
            deleter: OnceLock::new(),
            deleting_room: OnceLock::new(),
            patterns: OnceLock::new(),
        }
    }

    /// The settings, while they are made: the builder methods take `self`, and `inner` is
    /// shared only from the first publish or receive on, after the transport went to its
    /// bridge.
    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("configured before use")
    }

    /// The queue: a name (looked up with `GetQueueUrl`, and created if missing) or a queue
    /// URL (used as it is, never created). A name ending in `.fifo` is a FIFO queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.inner_mut().queues[0] = Queue::new(queue.into());
        self
    }

    /// Publishes the events whose names match `pattern` (as in
    /// [`Bridge::publish_matching`](super::Bridge::publish_matching)) to `queue` (a name or a
    /// URL, created if missing like the transport's own) instead of the transport's queue;
    /// the first route that matches wins. SQS is point to point: two processes that send each
    /// other events consume a queue each and route what the other consumes to its queue.
    ///
    /// ```
    /// use eventdriven::bridge::sqs::Sqs;
    ///
    /// // The orders process consumes `orders`; what fulfillment consumes goes to its queue.
    /// let sqs = Sqs::new("http://127.0.0.1:4566")
    ///     .queue("orders")
    ///     .publish_to("order.*", "fulfillment");
    /// # let _ = sqs;
    /// ```
    pub fn publish_to(mut self, pattern: &str, queue: impl Into<String>) -> Self {
        let inner = self.inner_mut();
        match Pattern::parse(pattern) {
            Ok(pattern) => {
                inner.queues.push(Queue::new(queue.into()));
                let index = inner.queues.len() - 1;
                inner.routes.push((pattern, index));
            }
            Err(e) => inner.errors.push(e),
        }
        self
    }

    /// Whether `connect` creates the queue when it does not exist (default `true`; with
    /// `false` a missing queue fails the app's `build()`).
    pub fn create_queue(mut self, create: bool) -> Self {
        self.inner_mut().create = create;
        self
    }

    /// The region of the client [`new`](Self::new) makes (default `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.inner_mut().settings.region = region.into();
        self
    }

    /// The static credentials of the client [`new`](Self::new) makes (default `test` /
    /// `test`).
    pub fn credentials(
        mut self,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        let settings = &mut self.inner_mut().settings;
        settings.access_key = access_key.into();
        settings.secret_key = secret_key.into();
        self
    }

    fn sender(&self) -> &mpsc::UnboundedSender<Pending> {
        self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_batches(self.inner.clone(), rx));
            tx
        })
    }

    fn deleter(&self) -> mpsc::UnboundedSender<Deletion> {
        self.deleter
            .get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(delete_batches(self.inner.clone(), rx));
                tx
            })
            .clone()
    }
}

impl Inner {
    /// The index in `queues` of the queue an event named `name` goes to.
    fn route(&self, name: &str) -> usize {
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(name))
            .map_or(0, |(_, queue)| *queue)
    }

    fn client(&self) -> &aws_sdk_sqs::Client {
        self.client.get_or_init(|| {
            let settings = self.settings.clone();
            let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(10))
                .build();
            let config = aws_sdk_sqs::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(settings.endpoint)
                .region(Region::new(settings.region))
                .credentials_provider(Credentials::new(
                    settings.access_key,
                    settings.secret_key,
                    None,
                    None,
                    "eventdriven",
                ))
                .http_client(aws_smithy_http_client::Builder::new().build_http())
                .timeout_config(timeouts)
                .build();
            aws_sdk_sqs::Client::from_conf(config)
        })
    }

    /// The URL of queue `q`: looked up (and the queue created) the first time, and again
    /// after SQS said it does not exist.
    async fn url(&self, q: usize) -> Result<String, TransportError> {
        let queue = &self.queues[q];
        if let Some(url) = queue.url.read().await.as_ref() {
            return Ok(url.clone());
        }
        let mut cached = queue.url.write().await;
        if let Some(url) = cached.as_ref() {
            return Ok(url.clone());
        }
        let url = if queue.spec.starts_with("http://") || queue.spec.starts_with("https://") {
            queue.spec.clone()
        } else {
            self.look_up(queue).await?
        };
        *cached = Some(url.clone());
        Ok(url)
    }

    async fn look_up(&self, queue: &Queue) -> Result<String, TransportError> {
        let name = queue.name();
        let found = bounded(self.client().get_queue_url().queue_name(name).send()).await?;
        match found {
            Ok(out) => return Ok(out.queue_url().unwrap_or_default().to_owned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist()) => {}
            Err(e) => return Err(sdk_error(e)),
        }
        if !self.create {
            return Err(TransportError::Config(format!(
                "the SQS queue `{name}` does not exist (and the transport does not create it)"
            )));
        }
        let mut create = self.client().create_queue().queue_name(name);
        if queue.fifo() {
            create = create.attributes(QueueAttributeName::FifoQueue, "true");
        }
        let created = bounded(create.send()).await?.map_err(sdk_error)?;
        Ok(created.queue_url().unwrap_or_default().to_owned())
    }

    /// Notes an error of a call on queue `q`: a queue that does not exist is looked up again
    /// next time.
    async fn failed<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        q: usize,
        error: SdkError<E>,
    ) -> TransportError {
        let missing = error.as_service_error().is_some_and(|e| {
            e.code()
                .is_some_and(|c| c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist"))
        });
        if missing {
            let queue = &self.queues[q];
            *queue.url.write().await = None;
            return TransportError::Unavailable(format!(
                "the SQS queue `{}` does not exist (it is looked up again)",
                queue.name()
            ));
        }
        sdk_error(error)
    }
}

/// Runs one SDK call within [`CALL_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = T>) -> Result<T, TransportError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| {
        TransportError::Unavailable(format!("SQS did not answer within {CALL_TIMEOUT:?}"))
    })
}

/// An SDK error as a transport error: a request SQS refused for what it is (a client error
/// other than throttling) is `Refused`, everything else `Unavailable` (tried again).
fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: SdkError<E>,
) -> TransportError {
    let refused = match &error {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let throttled = service
                .err()
                .code()
                .is_some_and(|c| c.contains("Throttl") || c.contains("RequestThrottled"));
            (400..500).contains(&status) && status != 429 && !throttled
        }
        _ => false,
    };
    let text = DisplayErrorContext(&error).to_string();
    if refused {
        TransportError::Refused(text)
    } else {
        TransportError::Unavailable(text)
    }
}

fn unavailable(e: impl fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

/// Whether `name` can be an SQS message attribute name.
fn attribute_name_ok(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name.len() <= 256
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("a data type is set")
}

/// A message's attributes: name, key and headers, those beyond SQS's limit packed in one.
fn attributes(message: &Outgoing) -> Vec<(String, String)> {
    let mut own: Vec<(String, String)> = vec![(NAME_ATTRIBUTE.to_owned(), message.name.clone())];
    if let Some(key) = &message.key {
        own.push((KEY_ATTRIBUTE.to_owned(), key.clone()));
    }
    let mut packed = Vec::new();
    for (name, value) in &message.headers {
        let reserved = [NAME_ATTRIBUTE, KEY_ATTRIBUTE, HEADERS_ATTRIBUTE]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r));
        if reserved {
            continue;
        }
        if attribute_name_ok(name) && !value.is_empty() {
            own.push((name.clone(), value.clone()));
        } else {
            packed.push((name.clone(), value.clone()));
        }
    }
    let room = if packed.is_empty() && own.len() <= MAX_ATTRIBUTES {
        MAX_ATTRIBUTES
    } else {
        MAX_ATTRIBUTES - 1
    };
    if own.len() > room {
        packed.splice(0..0, own.drain(room..));
    }
    if !packed.is_empty() {
        let json = serde_json::to_string(&packed).expect("strings serialize");
        own.push((HEADERS_ATTRIBUTE.to_owned(), json));
    }
    own
}

/// A received message's headers: its string attributes, the packed ones unpacked.
fn headers_of(message: &Message) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let mut packed = None;
    if let Some(map) = message.message_attributes() {
        for (name, value) in map {
            let Some(text) = value.string_value() else {
                continue;
            };
            if name == HEADERS_ATTRIBUTE {
                packed = Some(text.to_owned());
            } else {
                headers.push((name.clone(), text.to_owned()));
            }
        }
    }
    if let Some(pairs) = packed.and_then(|p| serde_json::from_str::<Vec<(String, String)>>(&p).ok())
    {
        headers.extend(pairs);
    }
    headers
}

/// A publish waiting to be sent in a batch.
struct Pending {
    /// The index of its queue.
    queue: usize,
    entry: SendMessageBatchRequestEntry,
    bytes: usize,
    done: oneshot::Sender<Result<(), TransportError>>,
}

/// Sends what waits in batches: up to [`MAX_BATCH`] entries for one queue of at most
/// [`MAX_BATCH_BYTES`] together, several batches at once to standard queues, one after the
/// other (in order) where a FIFO queue is among them.
async fn send_batches(inner: Arc<Inner>, rx: mpsc::UnboundedReceiver<Pending>) {
    let at_once = if inner.queues.iter().any(Queue::fifo) {
        1
    } else {
        CONCURRENT_BATCHES
    };
    run_batches(rx, at_once, take_sends, move |queue, batch| {
        let inner = inner.clone();
        async move { send_batch(&inner, queue, batch).await }
    })
    .await;
}

/// The next batch of sends from the front of `waiting`, if it is complete or `partial`.
fn take_sends(waiting: &mut VecDeque<Pending>, partial: bool) -> Option<(usize, Vec<Pending>)> {
    // Publishes the bridge gave up on (timed out) are not sent late.
    waiting.retain(|p| !p.done.is_closed());
    let queue = waiting.front()?.queue;
    let (mut n, mut bytes) = (0, 0);
    for pending in &*waiting {
        let fits = n == 0 || bytes + pending.bytes <= MAX_BATCH_BYTES;
        if n == MAX_BATCH || pending.queue != queue || !fits {
            break;
        }
        n += 1;
        bytes += pending.bytes;
    }
    let complete = n == MAX_BATCH || n < waiting.len();
    (complete || partial).then(|| (queue, waiting.drain(..n).collect()))
}

async fn send_batch(inner: &Inner, queue: usize, batch: Vec<Pending>) {
    let url = match inner.url(queue).await {
        Ok(url) => url,
        Err(e) => return fail_all(batch, &e),
    };
    let mut request = inner.client().send_message_batch().queue_url(url);
    let mut waiting = HashMap::with_capacity(batch.len());
    for (i, pending) in batch.into_iter().enumerate() {
        let id = i.to_string();
        let mut entry = pending.entry;
        entry.id = id.clone();
        request = request.entries(entry);
        waiting.insert(id, pending.done);
    }
    let sent = match bounded(request.send()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return tell_waiting(waiting, &inner.failed(queue, e).await),
        Err(e) => return tell_waiting(waiting, &e),
    };
    for failed in sent.failed() {
        if let Some(done) = waiting.remove(failed.id()) {
            let text = format!(
                "SQS did not take the message: {} {}",
                failed.code(),
                failed.message().unwrap_or_default()
            );
            let error = if failed.sender_fault() {
                TransportError::Refused(text)
            } else {
                TransportError::Unavailable(text)
            };
            let _ = done.send(Err(error));
        }
    }
    for ok in sent.successful() {
        if let Some(done) = waiting.remove(ok.id()) {
            let _ = done.send(Ok(()));
        }
    }
    for (_, done) in waiting {
        let _ = done.send(Err(unavailable("SQS did not report on the message")));
    }
}

/// Tells every entry of a batch call that failed as a whole (by entry id) its error.
fn tell_waiting(
    waiting: HashMap<String, oneshot::Sender<Result<(), TransportError>>>,
    error: &TransportError,
) {
    for (_, done) in waiting {
        let _ = done.send(Err(error.clone()));
    }
}

fn fail_all(batch: Vec<Pending>, error: &TransportError) {
    for pending in batch {
        let _ = pending.done.send(Err(error.clone()));
    }
}

/// A delete waiting to be sent in a batch.
struct Deletion {
    url: String,
    receipt: String,
    /// Its place among the deletes under way, given back when SQS answered.
    room: OwnedSemaphorePermit,
}

/// Deletes what waits in batches of up to [`MAX_BATCH`] of one queue URL, several at once.
async fn delete_batches(inner: Arc<Inner>, rx: mpsc::UnboundedReceiver<Deletion>) {
    run_batches(rx, CONCURRENT_BATCHES, take_deletes, move |url, batch| {
        let inner = inner.clone();
        async move { delete_batch(&inner, url, batch).await }
    })
    .await;
}

/// The next batch of deletes from the front of `waiting`, if it is complete or `partial`.
fn take_deletes(
    waiting: &mut VecDeque<Deletion>,
    partial: bool,
) -> Option<(String, Vec<Deletion>)> {
    let url = waiting.front()?.url.clone();
    let n = waiting
        .iter()
        .take(MAX_BATCH)
        .take_while(|d| d.url == url)
        .count();
    let complete = n == MAX_BATCH || n < waiting.len();
    (complete || partial).then(|| (url, waiting.drain(..n).collect()))
}

async fn delete_batch(inner: &Inner, url: String, batch: Vec<Deletion>) {
    let count = batch.len();
    let mut request = inner.client().delete_message_batch().queue_url(url);
    // Held until SQS answered.
    let mut rooms = Vec::with_capacity(count);
    for (i, deletion) in batch.into_iter().enumerate() {
        rooms.push(deletion.room);
        let entry = DeleteMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .receipt_handle(deletion.receipt)
            .build()
            .expect("id and receipt handle are set");
        request = request.entries(entry);
    }
    // A delete that did not happen means a redelivery after the visibility timeout, which
    // idempotent subscribers absorb: at least once holds, so it is only told.
    match bounded(request.send()).await {
        Ok(Ok(deleted)) => {
            for failed in deleted.failed() {
                tracing::warn!(
                    code = failed.code(),
                    reason = failed.message().unwrap_or_default(),
                    "SQS did not delete a settled message; it is delivered again"
                );
            }
        }
        Ok(Err(e)) => {
            let error = inner.failed(0, e).await;
            tracing::warn!(%error, count, "SQS deletes failed; the messages are delivered again");
        }
        Err(error) => {
            tracing::warn!(%error, count, "SQS deletes failed; the messages are delivered again");
        }
    }
    drop(rooms);
}

impl Transport for Sqs {
    fn kind(&self) -> &'static str {
        "sqs"
    }

    fn connect<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            if let Some(error) = self.inner.errors.first() {
                return Err(TransportError::Config(error.clone()));
            }
            if let Some(endpoint) = self.inner.endpoint.as_deref() {
                if !endpoint.starts_with("http://") {
                    return Err(TransportError::Config(format!(
                        "SQS endpoint `{endpoint}`: `Sqs::new` speaks plain HTTP only (`http://` \
                         or `sqs://`; no TLS is compiled in); for AWS, build a client with TLS \
                         and pass it to `Sqs::with_client`"
                    )));
                }
            }
            if self.inner.queues.iter().any(|q| q.spec.is_empty()) {
                return Err(TransportError::Config(
                    "an SQS queue name is empty".to_owned(),
                ));
            }
            let patterns = topology
                .consume
                .iter()
                .map(|p| Pattern::parse(p).map_err(TransportError::Config))
                .collect::<Result<Vec<_>, _>>()?;
            let _ = self.patterns.set(patterns);
            // Every queue looked up (and created): what is routed to another process's queue
            // is kept for it before it ever started.
            for q in 1..self.inner.queues.len() {
                self.inner.url(q).await?;
            }
            let url = self.inner.url(0).await?;
            // A reachable server and a queue that exists (a URL given is not looked up).
            let checked = bounded(
                self.inner
                    .client()
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .send(),
            )
            .await?;
            match checked {
                Ok(_) => Ok(()),
                Err(e) => Err(self.inner.failed(0, e).await),
            }
        })
    }

    fn publish<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), TransportError>> {
        let (done, result) = oneshot::channel();
        let attributes = attributes(message);
        let queue = self.inner.route(&message.name);
        // SQS bodies are text. The bridge's are JSON; anything else is refused, not altered.
        let body = match std::str::from_utf8(&message.body) {
            Ok(body) => body.to_owned(),
            Err(_) => {
                return Box::pin(async {
                    Err(TransportError::Refused(
                        "an SQS message body is text, and this one is not UTF-8".to_owned(),
                    ))
                })
            }
        };
        let bytes = body.len()
            + attributes
                .iter()
                .map(|(n, v)| n.len() + v.len() + 6)
                .sum::<usize>();
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id("0")
            .message_body(body);
        for (name, value) in &attributes {
            entry = entry.message_attributes(name, string_attribute(value));
        }
        if self.inner.queues[queue].fifo() {
            let group = message.key.clone().unwrap_or_else(|| message.name.clone());
            entry = entry
                .message_group_id(group)
                .message_deduplication_id(message.id.to_string());
        }
        let entry = entry.build().expect("id and body are set");
        let queued = self.sender().send(Pending {
            queue,
            entry,
            bytes,
            done,
        });
        Box::pin(async move {
            if queued.is_err() {
                return Err(unavailable("the SQS sender stopped"));
            }
            result
                .await
                .unwrap_or_else(|_| Err(unavailable("the SQS sender stopped")))
        })
    }

    fn subscribe<'a>(
        &'a self,
        topology: &'a Topology,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        Box::pin(async move {
            let patterns =
                self.patterns.get().cloned().ok_or_else(|| {
                    TransportError::Config("the bridge is not connected".to_owned())
                })?;
            // Checks the queue (a server that lost it creates it again).
            self.inner.url(0).await?;
            let visibility = topology
                .ack_wait
                .as_secs_f64()
                .ceil()
                .clamp(1.0, MAX_VISIBILITY as f64);
            Ok(Box::new(SqsSubscription {
                receiver: Arc::new(Receiver {
                    inner: self.inner.clone(),
                    deleter: self.deleter(),
                    deleting_room: self
                        .deleting_room
                        .get_or_init(|| {
                            let places = u32::try_from(topology.max_in_flight.clamp(1, 1 << 20))
                                .unwrap_or(1);
                            (Arc::new(Semaphore::new(places as usize)), places)
                        })
                        .0
                        .clone(),
                    patterns,
                    visibility: visibility as i32,
                }),
                busy: Arc::new(AtomicBool::new(false)),
            }) as Box<dyn Subscription>)
        })
    }

    fn lag(&self) -> BoxFuture<'_, Result<Option<Lag>, TransportError>> {
        Box::pin(async move {
            let url = self.inner.url(0).await?;
            let got = bounded(
                self.inner
                    .client()
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    .send(),
            )
            .await?;
            let got = match got {
                Ok(got) => got,
                Err(e) => return Err(self.inner.failed(0, e).await),
            };
            let count = |name: &QueueAttributeName| {
                got.attributes()
                    .and_then(|a| a.get(name))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            Ok(Some(Lag::new(
                count(&QueueAttributeName::ApproximateNumberOfMessages),
                count(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            )))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // HTTP: no connection to close. Every publish was awaited by the bridge; the deletes
        // of settled messages may still be on their way (the bridge bounds the wait).
        Box::pin(async {
            if let Some((room, places)) = self.deleting_room.get() {
                // Every place free: no delete under way (none starts once the bridge stopped).
                let _ = room.acquire_many(*places).await;
            }
        })
    }
}

struct SqsSubscription {
    receiver: Arc<Receiver>,
    /// Whether the last fetch's first receive came back full: the queue has more, so the
    /// next fetch asks with several receives side by side.
    busy: Arc<AtomicBool>,
}

/// What a receive needs, shared by the receives of a subscription.
struct Receiver {
    inner: Arc<Inner>,
    deleter: mpsc::UnboundedSender<Deletion>,
    deleting_room: Arc<Semaphore>,
    patterns: Vec<Pattern>,
    /// The visibility timeout of received messages, in seconds (the ack wait).
    visibility: i32,
}

impl Receiver {
    /// Whether the bridge consumes `message` (by its name; one without a name is handed over,
    /// for the bridge to decode or dead-letter).
    fn wanted(&self, headers: &[(String, String)]) -> bool {
        let name = headers
            .iter()
            .find(|(n, _)| n == NAME_ATTRIBUTE)
            .or_else(|| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("ce-type"))
            })
            .map(|(_, v)| v.as_str());
        name.is_none_or(|name| self.patterns.iter().any(|p| p.matches(name)))
    }

    /// One `ReceiveMessage` of at most `max` (≤ 10) messages, waiting up to `wait` seconds
    /// for the first.
    async fn receive(
        &self,
        url: String,
        max: usize,
        wait: i32,
    ) -> Result<VecDeque<SqsMessage>, TransportError> {
        let max = i32::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1);
        let received = bounded(
            self.inner
                .client()
                .receive_message()
                .queue_url(url.clone())
                .max_number_of_messages(max)
                .wait_time_seconds(wait)
                .visibility_timeout(self.visibility)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send(),
        )
        .await?;
        let received = match received {
            Ok(r) => r,
            Err(e) => return Err(self.inner.failed(0, e).await),
        };
        let mut messages = VecDeque::new();
        for message in received.messages() {
            let Some(receipt) = message.receipt_handle() else {
                continue;
            };
            let headers = headers_of(message);
            let settle = Settle {
                inner: self.inner.clone(),
                deleter: self.deleter.clone(),
                deleting_room: self.deleting_room.clone(),
                url: url.clone(),
                receipt: receipt.to_owned(),
                visibility: self.visibility,
            };
            if !self.wanted(&headers) {
                // Not for this bridge: done as read.
                if let Err(error) = settle.delete().await {
                    tracing::debug!(%error, "unconsumed SQS message not deleted");
                }
                continue;
            }
            let deliveries = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(1)
                .max(1);
            messages.push_back(SqsMessage {
                body: message.body().unwrap_or_default().as_bytes().to_vec(),
                headers,
                deliveries,
                id: message.message_id().unwrap_or_default().to_owned(),
                settle,
            });
        }
        Ok(messages)
    }
}

impl Subscription for SqsSubscription {
    fn round_trips(&self) -> bool {
        true
    }

    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Box<dyn Batch>, TransportError>> {
        Box::pin(async move {
            let url = self.receiver.inner.url(0).await?;
            // One receive takes 10 at most. While the queue fills them, the room there is goes
            // to several side by side; the first long-polls, the others take what is there at
            // once, so a queue that ran dry holds the batch no longer than one receive does.
            let calls = if self.busy.load(Ordering::Relaxed) {
                max.div_ceil(MAX_BATCH).clamp(1, MAX_RECEIVES)
            } else {
                1
            };
            let mut receives = JoinSet::new();
            let mut left = max.max(1);
            for call in 0..calls {
                let (receiver, url, busy) = (self.receiver.clone(), url.clone(), self.busy.clone());
                let asked = left.min(MAX_BATCH);
                left -= asked;
                receives.spawn(async move {
                    if call > 0 {
                        return receiver.receive(url, asked, 0).await;
                    }
                    let got = receiver.receive(url, asked, WAIT_SECONDS).await;
                    let full = got.as_ref().is_ok_and(|m| m.len() >= asked);
                    busy.store(full, Ordering::Relaxed);
                    got
                });
            }
            Ok(Box::new(SqsBatch {
                messages: VecDeque::new(),
                receives,
                error: None,
            }) as Box<dyn Batch>)
        })
    }
}

/// The messages of one fetch: what its receives brought, handed out as they come.
struct SqsBatch {
    messages: VecDeque<SqsMessage>,
    /// The fetch's receives still under way.
    receives: JoinSet<Result<VecDeque<SqsMessage>, TransportError>>,
    /// The first receive that failed, told once the others are handed out.
    error: Option<TransportError>,
}

impl Batch for SqsBatch {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Box<dyn Received>, TransportError>>> {
        Box::pin(async move {
            loop {
                // Taken when polled and not before; `join_next` is cancel safe, so a dropped
                // call loses nothing either.
                if let Some(message) = self.messages.pop_front() {
                    return Some(Ok(Box::new(message) as Box<dyn Received>));
                }
                let received = match self.receives.join_next().await {
                    None => return self.error.take().map(Err),
                    Some(Ok(received)) => received,
                    Some(Err(e)) => Err(unavailable(format!("an SQS receive ended: {e}"))),
                };
                match received {
                    Ok(messages) => self.messages.extend(messages),
                    Err(e) => {
                        self.error.get_or_insert(e);
                    }
                }
            }
        })
    }
}

impl Drop for SqsBatch {
    /// Messages received but never handed out (the bridge stopped mid-batch) are made
    /// visible again at once, for another process; so are those of receives still under way,
    /// once they arrive.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let messages = std::mem::take(&mut self.messages);
        let mut receives = std::mem::take(&mut self.receives);
        if messages.is_empty() && receives.is_empty() {
            return;
        }
        runtime.spawn(async move {
            let mut left = messages;
            loop {
                for message in left.drain(..) {
                    let _ = message.settle.change_visibility(0).await;
                }
                match receives.join_next().await {
                    None => return,
                    Some(Ok(Ok(received))) => left = received,
                    Some(_) => {}
                }
            }
        });
    }
}

/// How to settle one received message.
struct Settle {
    inner: Arc<Inner>,
    deleter: mpsc::UnboundedSender<Deletion>,
    deleting_room: Arc<Semaphore>,
    url: String,
    receipt: String,
    visibility: i32,
}

impl Settle {
    /// Hands the delete to the deleter, which sends it in a batch with others: done once
    /// handed over, not once SQS answered. At most the bridge's `max_in_flight` deletes are
    /// under way; beyond that this waits for room.
    async fn delete(&self) -> Result<(), TransportError> {
        let room = self
            .deleting_room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| unavailable("the SQS deleter stopped"))?;
        let handed = self.deleter.send(Deletion {
            url: self.url.clone(),
            receipt: self.receipt.clone(),
            room,
        });
        handed.map_err(|_| unavailable("the SQS deleter stopped"))
    }

    async fn change_visibility(&self, seconds: i32) -> Result<(), TransportError> {
        let changed = bounded(
            self.inner
                .client()
                .change_message_visibility()
                .queue_url(self.url.clone())
                .receipt_handle(self.receipt.clone())
                .visibility_timeout(seconds)
                .send(),
        )
        .await?;
        match changed {
            Ok(_) => Ok(()),
            Err(e) => Err(self.inner.failed(0, e).await),
        }
    }
}

struct SqsMessage {
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    deliveries: u32,
    id: String,
    settle: Settle,
}

impl Received for SqsMessage {
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
            "SQS queue {}, message id {}",
            self.settle.inner.queues[0].name(),
            self.id
        )
    }

    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.settle.delete())
    }

    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        let seconds = delay.as_secs_f64().ceil().min(MAX_VISIBILITY as f64) as i32;
        Box::pin(self.settle.change_visibility(seconds))
    }

    fn reject(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        // Dead-lettered here: gone from the queue.
        Box::pin(self.settle.delete())
    }

    fn in_progress(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.settle.change_visibility(self.settle.visibility))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;

    fn outgoing(headers: &[(&str, &str)], key: Option<&str>) -> Outgoing {
        Outgoing {
            name: "order.placed".to_owned(),
            id: MessageId::new(),
            key: key.map(str::to_owned),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn attributes_fit_sqs_limit_and_unpack() {
        let many: Vec<(String, String)> = (0..12)
            .map(|i| (format!("ce-x{i}"), format!("v{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut with_empty = refs.clone();
        with_empty.push(("ce-empty", ""));
        let attrs = attributes(&outgoing(&with_empty, Some("k")));
        assert_eq!(attrs.len(), MAX_ATTRIBUTES);
        assert_eq!(
            attrs[0],
            (NAME_ATTRIBUTE.to_owned(), "order.placed".to_owned())
        );
        assert_eq!(attrs[1], (KEY_ATTRIBUTE.to_owned(), "k".to_owned()));
        let packed = &attrs.last().unwrap().1;
        let pairs: Vec<(String, String)> = serde_json::from_str(packed).unwrap();
        let mut all: Vec<(String, String)> = attrs[2..MAX_ATTRIBUTES - 1].to_vec();
        all.extend(pairs);
        all.sort();
        let mut expected: Vec<(String, String)> = many.clone();
        expected.push(("ce-empty".to_owned(), String::new()));
        expected.sort();
        assert_eq!(all, expected);

        let few = attributes(&outgoing(&[("content-type", "application/json")], None));
        assert_eq!(few.len(), 2);
    }

    #[test]
    fn attribute_names_follow_sqs_rules() {
        assert!(attribute_name_ok("ce-id"));
        assert!(attribute_name_ok("eventdriven.key_1"));
        for bad in ["", "AWS.x", "amazon.y", ".a", "a.", "a..b", "a b", "é"] {
            assert!(!attribute_name_ok(bad), "{bad:?}");
        }
    }
}
