//! The outbound side: one subscriber per event type, done with an event once the broker has it.

use std::any::{Any, TypeId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::{Link, INCOMING_HEADER};
use crate::actor::{Begin, Delivery, HandlerOptions, MailboxItem, Routes};
use crate::app::builder::{spec, Wire};
use crate::delivery::durable::Codec;
use crate::delivery::{HandlerError, RetryPolicy};
use crate::message::{Envelope, Event, Metadata};
use crate::store::EventData;
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
                spec(Forwarder::<E> { link, key }, options)
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
}

static OPTIONS: HandlerOptions = HandlerOptions {
    retry: None,
    idempotent: false,
};

impl<E: Event + Serialize + DeserializeOwned> Actor for Forwarder<E> {
    const NAME: &'static str = "bridge.outbound";
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
        forward(&self.link, &msg.env, self.key.as_ref())
            .await
            .map_err(HandlerError::new)
    }
}

/// Publishes one event and waits for the broker's acknowledgement, trying again with backoff
/// until the bridge's publish timeout.
async fn forward<E: Event + Serialize>(
    link: &Link,
    env: &Envelope<E>,
    key: Option<&KeyFn<E>>,
) -> Result<(), String> {
    if env.meta.headers.get(INCOMING_HEADER).is_some() {
        // It came from a broker: sending it out again would echo it forever.
        return Ok(());
    }
    let mut data = EventData::json(E::NAME, E::VERSION, &env.message)
        .map_err(|e| format!("`{}` does not encode: {e}", E::NAME))?;
    data.metadata = env.meta.clone();
    let message = link.encode(&data, key.map(|key| key(&env.message)));
    let counters = &link.counters;
    let deadline = Instant::now() + link.publish_timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let error = match tokio::time::timeout_at(deadline, link.transport.publish(message.clone()))
            .await
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
        tracing::warn!(bridge = link.name, message_name = E::NAME, %error, "publish failed; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
