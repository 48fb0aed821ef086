//! The durable side of delivery: with [`AppBuilder::store`](crate::AppBuilder::store), dead
//! letters, processed message ids and scheduled events are written to the store and come back
//! when the app starts again.
//!
//! - **Dead letters** are written before they are listed. An event whose type serde can
//!   store (every `#[subscribe]`d event type that is `Serialize + Deserialize`) keeps its
//!   payload, so it can be retried after a restart; any other message keeps its metadata,
//!   reason and error.
//! - **Processed ids** of idempotent subscribers are written after each success and loaded
//!   (those within the idempotency window) at start, so a redelivered event is still skipped.
//! - **Scheduled messages** (`publish_after`/`publish_at` of events, `tell_after`/`tell_at` of
//!   commands) of a storable type are written when scheduled, removed when delivered or
//!   cancelled, and scheduled again at start; one that came due while the app was down is
//!   delivered at once. One still pending at shutdown stays in the store instead of going to
//!   the dead letters.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::actor::item::{redeliver_event, Payload};
use crate::app::Shared;
use crate::message::{Command, Envelope, Event, Message, MessageId, Timestamp};
use crate::store::{EventData, Store, StoreResult, StoredSchedule};

use super::Scheduled;

/// How a message type is written to a store and read back: found for every subscribed event
/// type and every handled command type that serde can store.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Codec {
    pub(crate) name: &'static str,
    /// How a scheduled message of this type is delivered: `publish` or `tell`.
    pub(crate) kind: &'static str,
    /// Encodes an `Envelope<M>` (as kept in a dead letter's payload or a schedule).
    encode: fn(&dyn Any) -> StoreResult<EventData>,
    /// Decodes into a payload that can be delivered to a subscriber again (events only: a
    /// command's dead letter cannot be answered after a restart).
    decode: Option<fn(&EventData) -> StoreResult<Payload>>,
    /// Decodes and schedules the message for delivery at an instant.
    schedule: fn(&Arc<Shared>, &EventData, Instant) -> StoreResult<Scheduled>,
    /// Decodes and publishes an event on the bus (events only).
    publish: Option<PublishFn>,
    /// Its outbound subscriber, for a bridge's name pattern (events only).
    #[cfg(feature = "bridge")]
    forward: Option<fn() -> crate::bridge::Forward>,
}

/// Decodes a stored event and starts publishing it.
type PublishFn = fn(&Arc<Shared>, &EventData) -> StoreResult<Publishing>;

/// A publish of a decoded stored event, under way; once delivered, what completes when every
/// subscriber is done with it.
pub(crate) type Publishing = std::pin::Pin<
    Box<dyn std::future::Future<Output = crate::Result<tokio::sync::oneshot::Receiver<()>>> + Send>,
>;

/// Encodes the `Envelope<M>` behind `value`.
fn encode<M: Message + Serialize>(value: &dyn Any) -> StoreResult<EventData> {
    let env = value.downcast_ref::<Envelope<M>>().ok_or_else(|| {
        crate::store::StoreError::Corrupt(format!(
            "a `{}` payload that is not an envelope",
            M::NAME
        ))
    })?;
    let mut data = EventData::json(M::NAME, M::VERSION, &env.message)?;
    data.metadata = env.meta.clone();
    Ok(data)
}

impl Codec {
    /// The codec of event type `E`.
    pub fn of<E: Event + Serialize + DeserializeOwned>() -> Self {
        Self {
            name: E::NAME,
            kind: "publish",
            encode: encode::<E>,
            decode: Some(|data| {
                let env = decode::<E>(data)?;
                Ok(Payload {
                    value: Arc::new(env),
                    redeliver: redeliver_event::<E>,
                })
            }),
            schedule: |shared, data, at| Ok(shared.schedule_publish(decode::<E>(data)?, at)),
            publish: Some(|shared, data| {
                let env = decode::<E>(data)?;
                let shared = shared.clone();
                // Tracked before it is published, so no subscriber can be done unseen.
                let done = shared
                    .routes
                    .completions
                    .track(env.meta.id, shared.routes.subscriber_count::<E>());
                Ok(Box::pin(async move {
                    let id = env.meta.id;
                    match shared
                        .routes
                        .publish(env, crate::app::routing::Sender::OUTSIDE)
                        .await
                    {
                        Ok(()) => Ok(done),
                        Err(e) => {
                            shared.routes.completions.forget(id);
                            Err(e)
                        }
                    }
                }))
            }),
            #[cfg(feature = "bridge")]
            forward: Some(|| crate::bridge::Forward::of::<E>(None)),
        }
    }

    /// The codec of command type `C`.
    pub fn command<C: Command + Serialize + DeserializeOwned>() -> Self {
        Self {
            name: C::NAME,
            kind: "tell",
            encode: encode::<C>,
            decode: None,
            schedule: |shared, data, at| Ok(shared.schedule_tell(decode::<C>(data)?, at)),
            publish: None,
            #[cfg(feature = "bridge")]
            forward: None,
        }
    }

    /// Decodes and publishes a stored event; `None` for a command's codec.
    pub(crate) fn publish(
        &self,
        shared: &Arc<Shared>,
        data: &EventData,
    ) -> Option<StoreResult<Publishing>> {
        self.publish.map(|publish| publish(shared, data))
    }

    pub(crate) fn encode(&self, value: &dyn Any) -> StoreResult<EventData> {
        (self.encode)(value)
    }

    /// `None` for a command.
    pub(crate) fn decode(&self, data: &EventData) -> Option<StoreResult<Payload>> {
        self.decode.map(|decode| decode(data))
    }

    pub(crate) fn schedule(
        &self,
        shared: &Arc<Shared>,
        data: &EventData,
        at: Instant,
    ) -> StoreResult<Scheduled> {
        (self.schedule)(shared, data, at)
    }
}

fn decode<E: Message + DeserializeOwned>(data: &EventData) -> StoreResult<Envelope<E>> {
    if data.schema_version != E::VERSION {
        return Err(crate::store::StoreError::SchemaVersion {
            name: data.name.clone(),
            stored: data.schema_version,
            current: E::VERSION,
        });
    }
    let message =
        E::deserialize(&data.payload).map_err(|source| crate::store::StoreError::Decode {
            name: data.name.clone(),
            schema_version: data.schema_version,
            source,
        })?;
    Ok(Envelope::with_meta(message, data.metadata.clone()))
}

/// The codecs of the app's event types, by name.
#[derive(Default)]
pub(crate) struct Codecs {
    by_name: HashMap<&'static str, Codec>,
}

impl Codecs {
    pub(crate) fn add(&mut self, codec: Codec) {
        self.by_name.entry(codec.name).or_insert(codec);
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Codec> {
        self.by_name.get(name)
    }

    /// The outbound subscribers of every event type here, for bridges' name patterns.
    #[cfg(feature = "bridge")]
    pub(crate) fn forwards(&self) -> Vec<crate::bridge::Forward> {
        self.by_name
            .values()
            .filter_map(|codec| codec.forward.map(|forward| forward()))
            .collect()
    }
}

/// A name read from the store, as the `&'static str` the runtime keys by. Each distinct name
/// is allocated once for the life of the process.
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    match names.get(name) {
        Some(interned) => interned,
        None => {
            let interned: &'static str = Box::leak(name.to_owned().into_boxed_str());
            names.insert(interned);
            interned
        }
    }
}

/// A change to the store that need not hold up its caller.
enum Op {
    RemoveDeadLetter(MessageId, &'static str),
    PutSchedule(StoredSchedule),
    RemoveSchedule(MessageId),
    Flush(oneshot::Sender<()>),
}

/// Writes [`Op`]s to the store in the order they were made, on a task of its own. Used where
/// the caller is not async (`publish_after`, `Scheduled::cancel`, purging dead letters);
/// `App::shutdown` waits until every op is written.
pub(crate) struct StoreWriter {
    pub(crate) store: Store,
    tx: mpsc::UnboundedSender<Op>,
}

impl StoreWriter {
    /// Starts the writer's task.
    pub(crate) fn start(store: Store) -> Arc<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let writer = store.clone();
        tokio::spawn(async move {
            while let Some(op) = rx.recv().await {
                let result = match op {
                    Op::RemoveDeadLetter(id, recipient) => {
                        writer.remove_dead_letter(id, recipient).await.map(drop)
                    }
                    Op::PutSchedule(schedule) => writer.put_schedule(schedule).await,
                    Op::RemoveSchedule(id) => writer.remove_schedule(id).await.map(drop),
                    Op::Flush(done) => {
                        let _ = done.send(());
                        Ok(())
                    }
                };
                if let Err(error) = result {
                    tracing::error!(%error, "durable delivery state not written to the store");
                }
            }
        });
        Arc::new(Self { store, tx })
    }

    pub(crate) fn remove_dead_letter(&self, id: MessageId, recipient: &'static str) {
        let _ = self.tx.send(Op::RemoveDeadLetter(id, recipient));
    }

    pub(crate) fn put_schedule(&self, schedule: StoredSchedule) {
        let _ = self.tx.send(Op::PutSchedule(schedule));
    }

    pub(crate) fn remove_schedule(&self, id: MessageId) {
        let _ = self.tx.send(Op::RemoveSchedule(id));
    }

    /// Waits (at most `timeout`) until every op sent so far is written.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Op::Flush(done)).is_ok()
            && tokio::time::timeout(timeout, written).await.is_err()
        {
            tracing::warn!(?timeout, "the store writer did not finish in time");
        }
    }
}

/// The wall-clock time of a tokio instant (for a schedule's due time in the store).
pub(crate) fn wall_time(at: Instant) -> Timestamp {
    let now = Instant::now();
    if at >= now {
        Timestamp::now() + (at - now)
    } else {
        Timestamp::from_unix_nanos(
            Timestamp::now()
                .as_unix_nanos()
                .saturating_sub((now - at).as_nanos() as u64),
        )
    }
}

/// The tokio instant of a wall-clock time (a schedule read back; past times become now).
pub(crate) fn instant(due: Timestamp) -> Instant {
    let wait = due
        .as_unix_nanos()
        .saturating_sub(Timestamp::now().as_unix_nanos());
    Instant::now() + Duration::from_nanos(wait)
}
