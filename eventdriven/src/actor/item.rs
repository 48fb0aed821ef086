//! What sits in a mailbox: a command or query with its reply slot ([`Ask`]), or one
//! subscriber's delivery of a shared event ([`Delivery`]); and how either is taken back out
//! when it cannot be handled (dead letters, redelivery).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};

use tokio::sync::oneshot;

use super::mailbox::MailboxCore;
use crate::app::routing::RouteTable;
use crate::error::{Error, Result};
use crate::message::{Envelope, Event, Message, Metadata};

/// A command or query in a mailbox, with where its reply goes. Used by generated code.
#[doc(hidden)]
pub struct Ask<M, R> {
    pub(crate) env: Envelope<M>,
    pub(crate) reply: Reply<R>,
}

/// Where a handler's return value goes. Used by generated code.
#[doc(hidden)]
pub enum Reply<R> {
    /// Sent with `tell`: nobody waits.
    Ignore,
    /// Sent with `send`/`query`: the caller waits on the other end.
    To(oneshot::Sender<Result<R>>),
}

impl<R> Reply<R> {
    /// Hands the handler's return value to whoever waits for it.
    #[inline]
    pub fn send(self, value: R) {
        if let Reply::To(tx) = self {
            // The caller may have given up (timeout, dropped future); that is its choice.
            let _ = tx.send(Ok(value));
        }
    }

    /// Tells whoever waits that the request was not handled.
    pub(crate) fn fail(self, error: Error) {
        if let Reply::To(tx) = self {
            let _ = tx.send(Err(error));
        }
    }
}

/// The reply to a command or query accepted by `try_send`/`try_query`.
#[must_use = "the reply arrives only if the future is awaited"]
pub struct ReplyFuture<R> {
    pub(crate) rx: oneshot::Receiver<Result<R>>,
    pub(crate) actor: &'static str,
    pub(crate) message: &'static str,
}

impl<R> Future for ReplyFuture<R> {
    type Output = Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let (actor, message) = (self.actor, self.message);
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(reply)) => Poll::Ready(reply),
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::NoReply { actor, message })),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<M, R> super::mailbox::Routed for Ask<M, R> {
    type Payload = M;

    #[inline]
    fn payload(&self) -> &M {
        &self.env.message
    }
}

impl<E> super::mailbox::Routed for Delivery<E> {
    type Payload = E;

    #[inline]
    fn payload(&self) -> &E {
        &self.env.message
    }
}

/// One subscriber's delivery of an event: the event is shared, the attempt is this
/// subscriber's own. Used by generated code.
#[doc(hidden)]
pub struct Delivery<E> {
    pub(crate) env: Arc<Envelope<E>>,
    pub(crate) attempt: u32,
}

impl<E> Delivery<E> {
    /// The event.
    #[inline]
    pub fn event(&self) -> &E {
        &self.env.message
    }
}

/// Puts a dead-lettered or retried message back into one actor's mailbox.
///
/// `reserved` says whether the caller took a slot of room for it.
pub(crate) type RedeliverFn =
    fn(&RouteTable, &Arc<MailboxCore>, Arc<dyn Any + Send + Sync>, u32, bool) -> Result<()>;

/// A message taken out of a mailbox without being handled, kept so it can be delivered again.
#[doc(hidden)]
#[derive(Clone)]
pub struct Payload {
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    pub(crate) redeliver: RedeliverFn,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Payload")
    }
}

/// A command or query kept for redelivery: taken at most once.
pub(crate) struct Parked<M>(Mutex<Option<Envelope<M>>>);

impl<M> Parked<M> {
    pub(crate) fn new(env: Envelope<M>) -> Self {
        Self(Mutex::new(Some(env)))
    }

    fn take(&self) -> Option<Envelope<M>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

pub(crate) fn redeliver_event<E: Event>(
    routes: &RouteTable,
    to: &Arc<MailboxCore>,
    value: Arc<dyn Any + Send + Sync>,
    attempt: u32,
    reserved: bool,
) -> Result<()> {
    let env = value
        .downcast::<Envelope<E>>()
        .unwrap_or_else(|_| unreachable!("an event payload holds Envelope<E>"));
    let (port, index) = routes.subscriber_port::<E>(to).ok_or(Error::Stopped {
        actor: to.actor,
        message: E::NAME,
    })?;
    port.push(index, Delivery { env, attempt }, reserved)
        .map_err(|_| Error::Stopped {
            actor: to.actor,
            message: E::NAME,
        })
}

pub(crate) fn redeliver_ask<M: Message, R: Send + 'static>(
    routes: &RouteTable,
    to: &Arc<MailboxCore>,
    value: Arc<dyn Any + Send + Sync>,
    attempt: u32,
    reserved: bool,
) -> Result<()> {
    let stopped = || Error::Stopped {
        actor: to.actor,
        message: M::NAME,
    };
    let parked = value
        .downcast::<Parked<M>>()
        .unwrap_or_else(|_| unreachable!("an ask payload holds Parked<M>"));
    let port = routes.ask_port::<M, R>().ok_or_else(stopped)?;
    let index = port.index_of(to).ok_or_else(stopped)?;
    let mut env = parked
        .take()
        .ok_or(Error::AlreadyRedelivered { message: M::NAME })?;
    env.meta.attempt = attempt;
    port.push(
        index,
        Ask {
            env,
            reply: Reply::Ignore,
        },
        reserved,
    )
    .map_err(|_| stopped())
}

/// What the runtime needs from each kind of mailbox item, whatever its message type.
/// Generated code forwards to it from each variant of the actor's enum.
#[doc(hidden)]
pub trait MailboxItem: Send + 'static {
    /// The message's name and metadata (with this delivery's attempt).
    fn describe(&self) -> (&'static str, &Metadata);
    /// This delivery's attempt, 1 for the first.
    fn attempt(&self) -> u32;
    /// Takes the item out unhandled: a waiting sender gets `error`; the message is kept for
    /// the dead letters.
    fn reject(self, error: Error) -> (&'static str, Metadata, Option<Payload>);
}

impl<M: Message, R: Send + 'static> MailboxItem for Ask<M, R> {
    #[inline]
    fn describe(&self) -> (&'static str, &Metadata) {
        (M::NAME, &self.env.meta)
    }

    #[inline]
    fn attempt(&self) -> u32 {
        self.env.meta.attempt
    }

    fn reject(self, error: Error) -> (&'static str, Metadata, Option<Payload>) {
        self.reply.fail(error);
        let meta = self.env.meta.clone();
        let payload = Payload {
            value: Arc::new(Parked::new(self.env)),
            redeliver: redeliver_ask::<M, R>,
        };
        (M::NAME, meta, Some(payload))
    }
}

impl<E: Event> MailboxItem for Delivery<E> {
    #[inline]
    fn describe(&self) -> (&'static str, &Metadata) {
        (E::NAME, &self.env.meta)
    }

    #[inline]
    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn reject(self, _error: Error) -> (&'static str, Metadata, Option<Payload>) {
        let mut meta = self.env.meta.clone();
        meta.attempt = self.attempt;
        let payload = Payload {
            value: self.env,
            redeliver: redeliver_event::<E>,
        };
        (E::NAME, meta, Some(payload))
    }
}
