//! The handler's view of the app: send, publish and query on behalf of the message being
//! handled, and read its metadata.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use super::mailbox::MailboxCore;
use super::Actor;
use crate::app::routing::{Ask, Sender};
use crate::app::Shared;
use crate::error::{Error, Result, TrySendError};
use crate::message::{Command, Envelope, Event, Metadata, Query};

/// Passed to every handler that asks for it (`ctx: &mut Context<Self>`).
///
/// Messages sent through the context are caused by the message being handled: they carry its
/// correlation id and have its id as their causation id. Sends wait for mailbox room at most the
/// app's send timeout (`AppBuilder::send_timeout`), so a cycle of actors with full mailboxes
/// ends in [`Error::Timeout`] instead of a hang; a message an actor sends to itself is queued
/// without waiting, so publishing an event the actor subscribes to never deadlocks.
pub struct Context<A: Actor> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) me: Arc<MailboxCore>,
    pub(crate) meta: Metadata,
    pub(crate) message: &'static str,
    /// The event being handled, kept so a failure can dead-letter it.
    pub(crate) event: Option<Arc<dyn Any + Send + Sync>>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(shared: Arc<Shared>, me: Arc<MailboxCore>) -> Self {
        Self {
            shared,
            me,
            meta: Metadata::new(),
            message: "",
            event: None,
            _actor: PhantomData,
        }
    }

    fn sender(&self) -> Sender<'_> {
        Sender {
            me: Some(&self.me),
            timeout: Some(self.shared.config.send_timeout),
        }
    }

    /// The metadata of the message being handled.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The name of the actor.
    pub fn actor_name(&self) -> &'static str {
        A::NAME
    }

    /// Publishes an event caused by the current message to every subscriber; waits for room in
    /// all their mailboxes first (all-or-nothing).
    pub async fn publish<E: Event>(&mut self, event: E) -> Result<()> {
        let env = Envelope::with_meta(event, Metadata::caused_by(&self.meta));
        self.shared.routes.publish(env, self.sender()).await
    }

    /// Like [`publish`](Self::publish) but returns [`Error::Full`] (with the event) instead of
    /// waiting when a subscriber's mailbox is full.
    pub fn try_publish<E: Event>(&mut self, event: E) -> Result<(), TrySendError<E>> {
        let env = Envelope::with_meta(event, Metadata::caused_by(&self.meta));
        self.shared
            .routes
            .try_publish(env, self.sender())
            .map_err(|e| TrySendError {
                message: e.message.message,
                error: e.error,
            })
    }

    /// Sends a command caused by the current message and waits for its reply (at most the
    /// send timeout, room and reply together).
    pub async fn send<C: Command>(&mut self, command: C) -> Result<C::Reply> {
        let env = Envelope::with_meta(command, Metadata::caused_by(&self.meta));
        let route = self.shared.routes.command::<C>()?;
        self.refuse_self::<C>(route.core())?;
        self.shared.routes.ask(route, env, self.sender()).await
    }

    /// Sends a command caused by the current message without waiting for its reply.
    pub async fn tell<C: Command>(&mut self, command: C) -> Result<()> {
        let env = Envelope::with_meta(command, Metadata::caused_by(&self.meta));
        let route = self.shared.routes.command::<C>()?;
        self.shared.routes.tell(route, env, self.sender()).await
    }

    /// Asks a query caused by the current message and waits for the answer (at most the send
    /// timeout).
    pub async fn query<Q: Query>(&mut self, query: Q) -> Result<Q::Reply> {
        let env = Envelope::with_meta(query, Metadata::caused_by(&self.meta));
        let route = self.shared.routes.query::<Q>()?;
        self.refuse_self::<Q>(route.core())?;
        self.shared.routes.ask(route, env, self.sender()).await
    }

    fn refuse_self<M: crate::Message>(&self, to: &Arc<MailboxCore>) -> Result<()> {
        if Arc::ptr_eq(to, &self.me) {
            return Err(Error::SelfRequest {
                actor: A::NAME,
                message: M::NAME,
            });
        }
        Ok(())
    }
}

/// Hooks the generated `__handle` calls around each handler.
#[doc(hidden)]
impl<A: Actor> Context<A> {
    /// Starts handling a command or query: takes its metadata, returns payload and reply.
    #[inline]
    pub fn __begin_ask<M: crate::Message, R>(
        &mut self,
        ask: Ask<M, R>,
    ) -> (M, crate::app::routing::Reply<R>) {
        self.meta = ask.env.meta;
        self.message = M::NAME;
        self.event = None;
        (ask.env.message, ask.reply)
    }

    /// Starts handling an event: copies its metadata and keeps it for the dead letters.
    #[inline]
    pub fn __begin_event<E: Event>(&mut self, event: &Arc<Envelope<E>>) {
        self.meta.clone_from(&event.meta);
        self.message = E::NAME;
        self.event = Some(event.clone() as Arc<dyn Any + Send + Sync>);
    }

    /// Ends an event handler: a failure goes to the dead letters.
    #[inline]
    pub fn __end_event(&mut self, outcome: std::result::Result<(), String>) {
        let event = self.event.take();
        if let Err(error) = outcome {
            tracing::error!(
                actor = A::NAME,
                message_name = self.message,
                id = %self.meta.id,
                %error,
                "subscriber failed; event dead-lettered"
            );
            self.shared
                .dead_letters
                .push(A::NAME, self.message, &self.meta, error, event);
        }
    }
}
