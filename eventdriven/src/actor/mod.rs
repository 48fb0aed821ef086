//! Actors: state owned by one task, fed by a bounded mailbox, one message at a time.
//!
//! Users do not implement [`Actor`] by hand: `#[handlers]` on an `impl` block generates it,
//! together with the actor's message enum (one variant per handler) that its mailbox holds.

mod context;
pub(crate) mod item;
pub(crate) mod mailbox;
pub(crate) mod supervise;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

pub use context::Context;
#[doc(hidden)]
pub use context::{
    keep, sequence_key, AskFailure, Begin, FailedReply, HandlerOptions, NeverFails, ReplyProbe,
    RetryableCommand,
};
pub use item::ReplyFuture;
#[doc(hidden)]
pub use item::{Ask, Delivery, MailboxItem, Reply};
pub use mailbox::Mailbox;
#[doc(hidden)]
pub use supervise::catch;
pub(crate) use supervise::run;
pub use supervise::{ActorFailed, OnPanic, Supervision};

use crate::app::routing::{Recipient, TableBuilder};
use crate::delivery::HandlerError;
use crate::error::Error;
use crate::message::{Command, Event, Metadata, Query};
use mailbox::Routed;

/// A value that owns its state and handles messages one at a time, so handlers take
/// `&mut self` without locks. Implemented by `#[handlers]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an actor: add `#[handlers]` to an `impl {Self}` block with `#[handle]`, `#[subscribe]` or `#[query]` methods",
    label = "not an actor"
)]
pub trait Actor: Sized + Send + 'static {
    /// The actor's name in logs, errors and stats: the type's name.
    const NAME: &'static str;

    /// The generated message enum: one variant per handler, holding the message inline.
    #[doc(hidden)]
    type Mailbox: Send + 'static;

    /// Registers the messages this actor handles.
    #[doc(hidden)]
    fn __routes(routes: &mut Routes<'_, Self>);

    /// The name, metadata and attempt of a message in the mailbox.
    #[doc(hidden)]
    fn __describe(msg: &Self::Mailbox) -> (&'static str, &Metadata, u32);

    /// Takes a message out unhandled (see [`MailboxItem::reject`]).
    #[doc(hidden)]
    fn __reject(
        msg: Self::Mailbox,
        error: Error,
    ) -> (&'static str, Metadata, Option<item::Payload>);

    /// Runs the handler for `msg`; an event handler's error comes back for the retry policy.
    #[doc(hidden)]
    fn __handle(
        &mut self,
        msg: Self::Mailbox,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// `Some(Self::default)` when the actor is `Default`: a panicking handler restarts the
    /// actor from it unless the builder was given another factory.
    #[doc(hidden)]
    fn __default_factory() -> Option<fn() -> Self> {
        None
    }
}

/// Partition keys of a pool, per message type: `KeyFn<M>` under `TypeId::of::<M>()`.
pub(crate) type Keys = HashMap<TypeId, Box<dyn Any + Send + Sync>>;

/// One mailbox's shared part and sending side.
pub(crate) type Member<A> = (
    Arc<mailbox::MailboxCore>,
    mailbox::QueueTx<mailbox::Slot<<A as Actor>::Mailbox>>,
);

/// Collects the routes of one actor (or one pool of actors) while the app is built. Used by
/// generated code.
#[doc(hidden)]
pub struct Routes<'a, A: Actor> {
    pub(crate) table: &'a mut TableBuilder,
    /// One mailbox for an actor, one per instance for a pool.
    pub(crate) members: &'a [Member<A>],
    /// `Some` for a pool.
    pub(crate) keys: Option<&'a Keys>,
}

impl<A: Actor> Routes<'_, A> {
    fn recipient<M>(&self, wrap: fn(M) -> A::Mailbox, unwrap: mailbox::Unwrap<A, M>) -> Recipient<M>
    where
        M: Routed + Send + 'static,
        M::Payload: 'static,
    {
        let mut ports = self.members.iter().map(|(core, tx)| mailbox::Port::<A, M> {
            core: core.clone(),
            tx: tx.clone(),
            wrap,
            unwrap,
        });
        let Some(keys) = self.keys else {
            return Arc::new(ports.next().expect("an actor has one mailbox"));
        };
        let picker = match keys.get(&TypeId::of::<M::Payload>()) {
            Some(key) => mailbox::Picker::Keyed(
                key.downcast_ref::<mailbox::KeyFn<M::Payload>>()
                    .expect("keys hold KeyFn<M> under TypeId::of::<M>()")
                    .clone(),
            ),
            None => mailbox::Picker::RoundRobin(AtomicUsize::new(0)),
        };
        Arc::new(mailbox::PoolPort {
            members: ports.collect(),
            picker,
        })
    }

    /// `A` handles command `C`.
    pub fn command<C: Command>(
        &mut self,
        wrap: fn(Ask<C, C::Reply>) -> A::Mailbox,
        unwrap: mailbox::Unwrap<A, Ask<C, C::Reply>>,
    ) {
        let recipient = self.recipient(wrap, unwrap);
        self.table.command::<C>(A::NAME, recipient);
    }

    /// `A` answers query `Q`.
    pub fn query<Q: Query>(
        &mut self,
        wrap: fn(Ask<Q, Q::Reply>) -> A::Mailbox,
        unwrap: mailbox::Unwrap<A, Ask<Q, Q::Reply>>,
    ) {
        let recipient = self.recipient(wrap, unwrap);
        self.table.query::<Q>(A::NAME, recipient);
    }

    /// `A` subscribes to event `E`.
    pub fn event<E: Event>(
        &mut self,
        wrap: fn(Delivery<E>) -> A::Mailbox,
        unwrap: mailbox::Unwrap<A, Delivery<E>>,
    ) {
        let recipient = self.recipient(wrap, unwrap);
        self.table.event::<E>(recipient);
    }

    /// How a subscribed event type is stored, if serde can store it.
    pub fn codec(&mut self, codec: Option<crate::delivery::durable::Codec>) {
        if let Some(codec) = codec {
            self.table.codecs.add(codec);
        }
    }
}

/// What a `#[subscribe]` method may return: `()` or `Result<(), E>` with a displayable `E`
/// (`anyhow::Error`, any `std::error::Error`). An `Err` sends the event to the dead letters.
#[diagnostic::on_unimplemented(
    message = "a `#[subscribe]` handler must return `()` or `Result<(), E>` where `E: Display + Send + 'static`, not `{Self}`",
    label = "return `()`, or `Result<(), E>` to report a failure",
    note = "an `Err` is retried by the handler's retry policy, then sent to the dead letters with the error's text"
)]
pub trait SubscribeResult {
    /// `Err` when the handler failed.
    fn into_outcome(self) -> Result<(), HandlerError>;
}

impl SubscribeResult for () {
    #[inline]
    fn into_outcome(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: std::fmt::Display + Send + 'static> SubscribeResult for Result<(), E> {
    #[inline]
    fn into_outcome(self) -> Result<(), HandlerError> {
        self.map_err(HandlerError::new)
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
