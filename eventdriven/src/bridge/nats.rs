//! The NATS JetStream transport (feature `nats`), on `async-nats`.
//!
//! - **Subjects**: an event named `order.placed` is published on `<prefix>.order.placed`
//!   (prefix `eventdriven` by default), with its id as `Nats-Msg-Id`, so JetStream stores a
//!   publish repeated after a lost acknowledgement once (within the stream's duplicate
//!   window). A partition key travels in the `eventdriven-key` header (JetStream keeps the
//!   order of each subject; it has no partitions).
//! - **Stream**: one stream (`EVENTDRIVEN` by default) over `<prefix>.>`, file storage,
//!   created when the app starts if it does not exist.
//! - **Consumers**: a bridge's group is a durable pull consumer filtered on the consumed
//!   name patterns (`order.*` becomes `<prefix>.order.*`); every process with the same group
//!   pulls from it, so they share the messages. Explicit acks; `nak` with a delay for a
//!   redelivery; `term` for what was dead-lettered; `+WPI` (in progress) while subscribers
//!   work. Acks and terms wait for the server's confirmation, so a process never has more
//!   than the bridge's `max_in_flight` messages unacked at the server. The consumer's own redelivery limit is off: the bridge counts deliveries and
//!   dead-letters, so a message is never dropped silently at the broker.
//! - **Lag**: the consumer's `num_pending` (not yet delivered) and `num_ack_pending`.
//! - **Reconnection**: the client reconnects by itself, forever, every 100 ms to 1 s; a
//!   publish or fetch during an outage fails and is tried again by the bridge.

use std::str::FromStr;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures_util::StreamExt;

use super::{
    Batch, BoxFuture, Lag, Outgoing, Received, Subscription, Topology, Transport, TransportError,
};

/// A NATS server with JetStream, as a bridge's [`Transport`].
///
/// ```
/// use eventdriven::bridge::nats::Nats;
///
/// let nats = Nats::new("nats://127.0.0.1:4222").stream("SHOP").subject_prefix("shop");
/// # let _ = nats;
/// ```
#[derive(Debug)]
pub struct Nats {
    url: String,
    stream: String,
    prefix: String,
    memory: bool,
    max_bytes: i64,
    duplicate_window: Duration,
    max_ack_pending: Option<i64>,
    state: OnceLock<State>,
}

#[derive(Debug)]
struct State {
    client: async_nats::Client,
    js: jetstream::Context,
    consumer: Mutex<Option<consumer::PullConsumer>>,
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

/// `_` for a character NATS does not allow in a subject token.
fn token_char(c: char) -> char {
    if c.is_whitespace() || c == '*' || c == '>' || c.is_control() {
        '_'
    } else {
        c
    }
}

/// A name JetStream accepts for a stream or durable consumer.
fn check_name(what: &str, name: &str) -> Result<(), TransportError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(TransportError::Config(format!(
            "the NATS {what} name `{name}` must be letters, digits, `-` and `_`"
        )));
    }
    Ok(())
}

impl Nats {
    /// The server at `url` (`nats://host:port`); stream `EVENTDRIVEN`, subject prefix
    /// `eventdriven`, file storage, the server's size limits, duplicate window 2 min.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "EVENTDRIVEN".to_owned(),
            prefix: "eventdriven".to_owned(),
            memory: false,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(120),
            max_ack_pending: None,
            state: OnceLock::new(),
        }
    }

    /// The JetStream stream's name.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// The first subject token(s) of every event's subject.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Keeps the stream in memory instead of files (lost when the server stops).
    pub fn in_memory(mut self) -> Self {
        self.memory = true;
        self
    }

    /// The most bytes the stream keeps (oldest messages go first).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self
    }

    /// How long JetStream remembers message ids to drop a repeated publish.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// The most messages delivered and not yet acked for the whole group (all processes);
    /// the server's default (1,000) otherwise. Each process also takes at most the bridge's
    /// `max_in_flight`.
    pub fn max_ack_pending(mut self, n: u32) -> Self {
        self.max_ack_pending = Some(i64::from(n));
        self
    }

    fn state(&self) -> Result<&State, TransportError> {
        self.state
            .get()
            .ok_or_else(|| TransportError::Unavailable("not connected".to_owned()))
    }

    fn subject(&self, name: &str) -> Result<String, TransportError> {
        if name.split('.').any(str::is_empty) {
            return Err(TransportError::Refused(format!(
                "the event name `{name}` has an empty segment: no NATS subject can carry it"
            )));
        }
        // Built in one pass: this runs for every publish.
        let mut subject = String::with_capacity(self.prefix.len() + 1 + name.len());
        subject.push_str(&self.prefix);
        subject.push('.');
        subject.extend(name.chars().map(token_char));
        Ok(subject)
    }

    fn consumer_config(&self, topology: &Topology) -> consumer::pull::Config {
        let mut filters: Vec<String> = topology
            .consume
            .iter()
            .map(|pattern| format!("{}.{pattern}", self.prefix))
            .collect();
        let mut config = consumer::pull::Config {
            durable_name: Some(topology.group.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: topology.ack_wait,
            max_deliver: -1,
            ..Default::default()
        };
        if let Some(n) = self.max_ack_pending {
            config.max_ack_pending = n;
        }
        if filters.len() == 1 {
            config.filter_subject = filters.remove(0);
        } else {
            config.filter_subjects = filters;
        }
        config
    }

    async fn consumer(
        &self,
        topology: &Topology,
    ) -> Result<consumer::PullConsumer, TransportError> {
        let state = self.state()?;
        let stream = state
            .js
            .get_stream(&self.stream)
            .await
            .map_err(unavailable)?;
        let consumer = stream
            .get_or_create_consumer(&topology.group, self.consumer_config(topology))
            .await
            .map_err(unavailable)?;
        *state
            .consumer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(consumer.clone());
        Ok(consumer)
    }
}

impl Transport for Nats {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn connect<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            check_name("stream", &self.stream)?;
            if !topology.consume.is_empty() {
                check_name("consumer (the bridge's group)", &topology.group)?;
            }
            if self.state.get().is_none() {
                let client = async_nats::ConnectOptions::new()
                    .name(format!("eventdriven bridge {}", topology.bridge))
                    .max_reconnects(None)
                    .connection_timeout(Duration::from_secs(5))
                    .reconnect_delay_callback(|attempts| {
                        Duration::from_millis(100 * (1 << attempts.min(4)) as u64)
                            .min(Duration::from_secs(1))
                    })
                    .connect(self.url.as_str())
                    .await
                    .map_err(unavailable)?;
                let js = jetstream::new(client.clone());
                let _ = self.state.set(State {
                    client,
                    js,
                    consumer: Mutex::new(None),
                });
            }
            let state = self.state()?;
            state
                .js
                .get_or_create_stream(stream::Config {
                    name: self.stream.clone(),
                    subjects: vec![format!("{}.>", self.prefix)],
                    storage: if self.memory {
                        stream::StorageType::Memory
                    } else {
                        stream::StorageType::File
                    },
                    max_bytes: self.max_bytes,
                    duplicate_window: self.duplicate_window,
                    ..Default::default()
                })
                .await
                .map_err(|e| TransportError::Refused(format!("stream {}: {e}", self.stream)))?;
            if !topology.consume.is_empty() {
                self.consumer(topology).await?;
            }
            Ok(())
        })
    }

    fn publish<'a>(&'a self, message: &'a Outgoing) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let state = self.state()?;
            let mut headers = HeaderMap::new();
            let mut add = |name: &str, value: &str| -> Result<(), TransportError> {
                let name = HeaderName::from_str(name).map_err(|_| {
                    TransportError::Refused(format!("`{name}` cannot be a NATS header name"))
                })?;
                let value = HeaderValue::from_str(value).map_err(|_| {
                    TransportError::Refused(format!(
                        "the value of header `{name}` cannot be a NATS header value (line breaks?)"
                    ))
                })?;
                headers.append(name, value);
                Ok(())
            };
            for (name, value) in &message.headers {
                add(name, value)?;
            }
            if let Some(key) = &message.key {
                add("eventdriven-key", key)?;
            }
            let publish = jetstream::message::PublishMessage::build()
                .payload(bytes::Bytes::copy_from_slice(&message.body))
                .headers(headers)
                .message_id(message.id.to_string());
            let ack = state
                .js
                .send_publish(self.subject(&message.name)?, publish)
                .await
                .map_err(|e| match e.kind() {
                    jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                        TransportError::Refused(e.to_string())
                    }
                    _ => unavailable(e),
                })?;
            ack.await.map_err(unavailable)?;
            Ok(())
        })
    }

    fn subscribe<'a>(
        &'a self,
        topology: &'a Topology,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        Box::pin(async move {
            let consumer = self.consumer(topology).await?;
            Ok(Box::new(NatsSubscription { consumer }) as Box<dyn Subscription>)
        })
    }

    fn lag(&self) -> BoxFuture<'_, Result<Option<Lag>, TransportError>> {
        Box::pin(async move {
            let consumer = self
                .state()?
                .consumer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let Some(consumer) = consumer else {
                return Ok(None);
            };
            let info = consumer.get_info().await.map_err(unavailable)?;
            Ok(Some(Lag::new(
                info.num_pending,
                info.num_ack_pending as u64,
            )))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(state) = self.state.get() {
                if let Err(error) = state.client.flush().await {
                    tracing::warn!(%error, "NATS connection not flushed at close");
                }
            }
        })
    }
}

struct NatsSubscription {
    consumer: consumer::PullConsumer,
}

impl Subscription for NatsSubscription {
    fn round_trips(&self) -> bool {
        true
    }

    fn fetch(&mut self, max: usize) -> BoxFuture<'_, Result<Box<dyn Batch>, TransportError>> {
        Box::pin(async move {
            let batch = self
                .consumer
                .batch()
                .max_messages(max)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(unavailable)?;
            Ok(Box::new(NatsBatch(batch)) as Box<dyn Batch>)
        })
    }
}

struct NatsBatch(consumer::pull::Batch);

impl Batch for NatsBatch {
    fn next(&mut self) -> BoxFuture<'_, Option<Result<Box<dyn Received>, TransportError>>> {
        Box::pin(async move {
            self.0.next().await.map(|message| {
                message
                    .map(|m| Box::new(NatsMessage(m)) as Box<dyn Received>)
                    .map_err(unavailable)
            })
        })
    }
}

struct NatsMessage(jetstream::Message);

impl NatsMessage {
    async fn send(&self, kind: AckKind) -> Result<(), TransportError> {
        self.0.ack_with(kind).await.map_err(unavailable)
    }

    /// Settles it and waits for the server to confirm: the server processes acks apart from
    /// pull requests, so only a confirmed ack makes room for the next message at once.
    async fn settle(&self, kind: AckKind) -> Result<(), TransportError> {
        self.0.double_ack_with(kind).await.map_err(unavailable)
    }
}

impl Received for NatsMessage {
    fn body(&self) -> &[u8] {
        &self.0.payload
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        let Some(headers) = &self.0.headers else {
            return Vec::new();
        };
        headers
            .iter()
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |value| (name.as_ref(), value.as_str()))
            })
            .collect()
    }

    fn deliveries(&self) -> u32 {
        self.0
            .info()
            .map_or(1, |info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
    }

    fn locator(&self) -> String {
        match self.0.info() {
            Ok(info) => format!(
                "NATS subject {}, stream {} sequence {}",
                self.0.subject, info.stream, info.stream_sequence
            ),
            Err(_) => format!("NATS subject {}", self.0.subject),
        }
    }

    fn ack(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.settle(AckKind::Ack))
    }

    fn nack(&self, delay: Duration) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.send(AckKind::Nak((!delay.is_zero()).then_some(delay))))
    }

    fn reject(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.settle(AckKind::Term))
    }

    fn in_progress(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(self.send(AckKind::Progress))
    }
}
