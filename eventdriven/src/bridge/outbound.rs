//! The outbound side: one subscriber per event type, done with an event once the broker has it.
//!
//! The subscriber does not wait for each acknowledgement before it takes the next event: it
//! starts the publish (polled once, so the transport's client has it before the next event's
//! publish, and sends them in that order on its connection) and hands it to a task
//! of its own, the *window*, which waits for the acknowledgements and reports each event
//! done (to the relay's completion tracking) or dead-letters it, in the order they were
//! published. At most [`publish_window`](super::Bridge::publish_window) publishes are in
//! flight; beyond that the subscriber waits, its mailbox fills, and publishers wait for room
//! as for any subscriber. An event with a key waits until no earlier event with the same key
//! is in flight, so a publish that fails and is tried again never lands after a later event
//! of its key.

use std::any::{Any, TypeId};
use std::collections::{HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures_util::stream::{FuturesOrdered, StreamExt as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{Link, Outgoing, INCOMING_HEADER};
use crate::actor::item::{redeliver_event, Payload};
use crate::actor::mailbox::MailboxCore;
use crate::actor::{Begin, Delivery, HandlerOptions, MailboxItem, Routes};
use crate::app::builder::{spec, Wire};
use crate::app::Shared;
use crate::delivery::durable::Codec;
use crate::delivery::{HandlerError, NewDeadLetter, Reason, RetryPolicy};
use crate::message::{Envelope, Event, Metadata};
use crate::{Actor, ActorOptions, Context};

/// A partition key taken from an event.
type KeyFn<E> = Arc<dyn Fn(&E) -> String + Send + Sync>;

/// Makes the outbound subscriber of one event type, given the bridge and its key function.
pub(crate) type ForwardFn = fn(Arc<Link>, Option<&Arc<dyn Any + Send + Sync>>) -> Box<dyn Wire>;

/// An event type to forward to a broker: what the builder wires as its outbound subscriber.
#[derive(Clone)]
pub(crate) struct Forward {
    pub(crate) name: &'static str,
    pub(crate) type_id: TypeId,
    make: ForwardFn,
    /// A `KeyFn<E>`.
    key: Option<Arc<dyn Any + Send + Sync>>,
}

impl Forward {
    pub(crate) fn of<E: Event + Serialize + DeserializeOwned>(key: Option<KeyFn<E>>) -> Self {
        Self {
            name: E::NAME,
            type_id: TypeId::of::<E>(),
            make: |link, key| {
                let key = key.and_then(|k| k.downcast_ref::<KeyFn<E>>().cloned());
                // No retries by the actor: `forward` tries again itself, until its timeout.
                let options = ActorOptions::new().retry(RetryPolicy::none());
                spec(
                    Forwarder::<E> {
                        link,
                        key,
                        window: None,
                    },
                    options,
                )
            },
            key: key.map(|k| Arc::new(k) as Arc<dyn Any + Send + Sync>),
        }
    }

    /// The subscriber, for the builder to wire.
    pub(crate) fn wire(&self, link: Arc<Link>) -> Box<dyn Wire> {
        (self.make)(link, self.key.as_ref())
    }
}

/// The outbound subscriber of event type `E` for one bridge.
pub(crate) struct Forwarder<E> {
    link: Arc<Link>,
    key: Option<KeyFn<E>>,
    /// The publishes in flight; started with the first event.
    window: Option<Window>,
}

/// The outbound subscribers' actor name.
const ACTOR: &str = "bridge.outbound";

static OPTIONS: HandlerOptions = HandlerOptions {
    retry: None,
    idempotent: false,
};

impl<E: Event + Serialize + DeserializeOwned> Actor for Forwarder<E> {
    const NAME: &'static str = ACTOR;
    type Mailbox = Delivery<E>;

    fn __routes(routes: &mut Routes<'_, Self>) {
        routes.event::<E>(|delivery| delivery, Some);
        // The relay decodes stored events by name into their type before publishing them: an
        // outbound type needs a codec, also when no other actor subscribes to it.
        routes.codec(Some(Codec::of::<E>()));
    }

    fn __describe(msg: &Delivery<E>) -> (&'static str, &Metadata, u32) {
        let (name, meta) = msg.describe();
        (name, meta, msg.attempt())
    }

    fn __reject(
        msg: Delivery<E>,
        error: crate::Error,
    ) -> (&'static str, Metadata, Option<crate::actor::item::Payload>) {
        msg.reject(error)
    }

    async fn __handle(
        &mut self,
        msg: Delivery<E>,
        ctx: &mut Context<Self>,
    ) -> Result<(), HandlerError> {
        match ctx.__begin_event(&msg, &OPTIONS, None) {
            Begin::Run => {}
            Begin::Skip | Begin::Park => return Ok(()),
        }
        if msg.env.meta.headers.get(INCOMING_HEADER).is_some() {
            // It came from a broker: sending it out again would echo it forever.
            return Ok(());
        }
        let key = self.key.as_ref().map(|key| key(&msg.env.message));
        let message = encode(&self.link, &msg.env, key.clone()).map_err(HandlerError::new)?;
        let window = self
            .window
            .get_or_insert_with(|| Window::start(&self.link, ctx.shared.clone(), ctx.me.clone()));
        let room = window
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HandlerError::new("the bridge's outbound window is closed"))?;
        if let Some(key) = &key {
            window.keys.hold(key).await;
        }
        // Polled once here, so the publish is sent before the next event's is: in order on
        // the transport's connection.
        let mut publish: Pin<Box<dyn Future<Output = Result<(), String>> + Send>> =
            Box::pin(publish(self.link.clone(), message, E::NAME));
        let started = match poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await {
            Poll::Ready(result) => Started::Done(result),
            Poll::Pending => Started::Running(publish),
        };
        // Owed until the window reports it: shutdown's drain waits for it.
        ctx.me.counters().retrying.fetch_add(1, Ordering::SeqCst);
        let sent = window.tx.send(InFlight {
            started,
            meta: ctx.meta.clone(),
            name: E::NAME,
            payload: Payload {
                value: msg.env.clone(),
                redeliver: redeliver_event::<E>,
            },
            key,
            _room: room,
        });
        match sent {
            Ok(()) => {
                ctx.completes_later = true;
                Ok(())
            }
            Err(mpsc::error::SendError(inflight)) => {
                ctx.me.counters().retrying.fetch_sub(1, Ordering::SeqCst);
                if let Some(key) = &inflight.key {
                    window.keys.release(key);
                }
                Err(HandlerError::new("the bridge's outbound window stopped"))
            }
        }
    }
}

/// The event as a broker message.
fn encode<E: Event + Serialize>(
    link: &Link,
    env: &Envelope<E>,
    key: Option<String>,
) -> Result<Outgoing, String> {
    link.encode(E::NAME, E::VERSION, &env.meta, &env.message, key)
        .map_err(|e| format!("`{}` does not encode: {e}", E::NAME))
}

/// Publishes one message and waits for the broker's acknowledgement, trying again with
/// backoff until the bridge's publish timeout.
async fn publish(link: Arc<Link>, message: Outgoing, name: &'static str) -> Result<(), String> {
    let counters = &link.counters;
    let deadline = Instant::now() + link.publish_timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let error = match tokio::time::timeout_at(deadline, link.transport.publish(&message)).await
        {
            Ok(Ok(())) => {
                counters.published.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Ok(Err(e)) => {
                let permanent = !matches!(e, super::TransportError::Unavailable(_));
                (e.to_string(), permanent)
            }
            Err(_) => ("no acknowledgement".to_owned(), false),
        };
        let (error, permanent) = error;
        counters.publish_errors.fetch_add(1, Ordering::Relaxed);
        if permanent || Instant::now() + pause >= deadline {
            counters
                .publish_dead_lettered
                .fetch_add(1, Ordering::Relaxed);
            return Err(if permanent {
                format!(
                    "refused by the {} broker (bridge `{}`): {error}",
                    link.transport.kind(),
                    link.name
                )
            } else {
                format!(
                    "not published to the {} broker within {:?} (bridge `{}`): {error}",
                    link.transport.kind(),
                    link.publish_timeout,
                    link.name
                )
            });
        }
        tracing::warn!(bridge = link.name, message_name = name, %error, "publish failed; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// A publish as the subscriber started it.
enum Started {
    /// It completed at its first poll.
    Done(Result<(), String>),
    Running(Pin<Box<dyn Future<Output = Result<(), String>> + Send>>),
}

impl Started {
    async fn finish(self) -> Result<(), String> {
        match self {
            Started::Done(result) => result,
            Started::Running(publish) => publish.await,
        }
    }
}

/// One event whose publish is in flight.
struct InFlight {
    started: Started,
    /// The event's metadata, with the attempt of this delivery.
    meta: Metadata,
    name: &'static str,
    /// The event, for the dead letters (retryable from there).
    payload: Payload,
    key: Option<String>,
    /// Its place in the window, given back once it is reported.
    _room: OwnedSemaphorePermit,
}

/// The keys with a publish in flight.
#[derive(Default)]
struct Keys {
    held: Mutex<HashSet<String>>,
    freed: Notify,
}

impl Keys {
    /// Waits until no publish of `key` is in flight, and marks one.
    async fn hold(&self, key: &str) {
        loop {
            let freed = self.freed.notified();
            {
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                if !held.contains(key) {
                    held.insert(key.to_owned());
                    return;
                }
            }
            freed.await;
        }
    }

    fn release(&self, key: &str) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        self.freed.notify_waiters();
    }
}

/// One subscriber's publishes in flight, and the task that reports them.
struct Window {
    room: Arc<Semaphore>,
    keys: Arc<Keys>,
    tx: mpsc::UnboundedSender<InFlight>,
}

impl Window {
    fn start(link: &Link, shared: Arc<Shared>, me: Arc<MailboxCore>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = Arc::new(Keys::default());
        tokio::spawn(report(shared, me, rx, keys.clone()));
        Self {
            room: Arc::new(Semaphore::new(link.publish_window)),
            keys,
            tx,
        }
    }
}

/// Waits for the publishes in flight and reports each, in the order they were started: done
/// (for the relay's checkpoint) on the broker's acknowledgement, dead-lettered on failure.
/// Past the shutdown deadline, what is still in flight is dead-lettered. Ends once the
/// subscriber is gone and nothing is in flight.
async fn report(
    shared: Arc<Shared>,
    me: Arc<MailboxCore>,
    mut rx: mpsc::UnboundedReceiver<InFlight>,
    keys: Arc<Keys>,
) {
    let mut running = FuturesOrdered::new();
    let mut waiting: VecDeque<InFlight> = VecDeque::new();
    let mut open = true;
    while open || !waiting.is_empty() {
        tokio::select! {
            biased;
            Some(result) = running.next(), if !running.is_empty() => {
                let inflight = waiting.pop_front().expect("one entry per publish");
                settle(&shared, &me, &keys, inflight, result).await;
            }
            next = rx.recv(), if open => match next {
                Some(mut inflight) => {
                    let started = std::mem::replace(&mut inflight.started, Started::Done(Ok(())));
                    running.push_back(started.finish());
                    waiting.push_back(inflight);
                }
                None => open = false,
            },
            () = shared.abandoned() => {
                drop(running);
                for inflight in waiting.drain(..) {
                    let error = "not acknowledged by the broker by the shutdown deadline";
                    settle(&shared, &me, &keys, inflight, Err(error.to_owned())).await;
                }
                // Whatever comes after the deadline goes to the dead letters at once.
                while let Some(inflight) = rx.recv().await {
                    let error = "not published: the shutdown deadline had passed";
                    settle(&shared, &me, &keys, inflight, Err(error.to_owned())).await;
                }
                return;
            }
        }
    }
}

/// Reports one event: done, or dead-lettered with `error`.
async fn settle(
    shared: &Shared,
    me: &Arc<MailboxCore>,
    keys: &Keys,
    inflight: InFlight,
    result: Result<(), String>,
) {
    let InFlight {
        meta,
        name,
        payload,
        key,
        _room,
        ..
    } = inflight;
    match result {
        Ok(()) => shared.routes.completions.done(meta.id),
        Err(error) => {
            tracing::error!(
                actor = ACTOR,
                message_name = name,
                id = %meta.id,
                error = %error,
                "outbound event dead-lettered"
            );
            let reason = if shared.is_abandoned() {
                Reason::Shutdown
            } else {
                Reason::Failed
            };
            // Dead-lettered is done, for the relay (`Shared::dead_letter` reports it).
            shared
                .dead_letter(NewDeadLetter {
                    actor: ACTOR,
                    message: name,
                    meta,
                    reason,
                    error,
                    first_failure: Some(SystemTime::now()),
                    payload: Some(payload),
                    target: Some(me.clone()),
                    stored: false,
                })
                .await;
        }
    }
    if let Some(key) = &key {
        keys.release(key);
    }
    me.counters().retrying.fetch_sub(1, Ordering::SeqCst);
}
