//! Paths used by the generated code; not part of the public API. Exposed as
//! `eventdriven::__private`.

pub use crate::actor::item::Payload;
pub use crate::actor::{
    catch, keep, sequence_key, Ask, AskFailure, Begin, Delivery, FailedReply, HandlerOptions,
    MailboxItem, NeverFails, Reply, ReplyProbe, RetryableCommand, Routes, SubscribeResult,
};
pub use crate::delivery::{Backoff, HandlerError, RetryPolicy};
pub use core::time::Duration;
pub use std::sync::Arc;

/// Picks `Some(T::default)` for a `Default` actor and `None` otherwise, by autoref
/// specialisation on a concrete type: [`DefaultFactory`] matches `&Probe<T>` directly when
/// `T: Default`; [`NoFactory`] needs one more autoref and is found only when it does not.
pub struct Probe<T>(pub core::marker::PhantomData<T>);

/// See [`Probe`].
pub trait DefaultFactory<T> {
    /// `Some(T::default)`.
    fn factory(&self) -> Option<fn() -> T>;
}

impl<T: Default> DefaultFactory<T> for Probe<T> {
    fn factory(&self) -> Option<fn() -> T> {
        Some(T::default)
    }
}

/// See [`Probe`].
pub trait NoFactory<T> {
    /// `None`.
    fn factory(&self) -> Option<fn() -> T>;
}

impl<T> NoFactory<T> for &Probe<T> {
    fn factory(&self) -> Option<fn() -> T> {
        None
    }
}

/// Checks, at a `#[derive(Event)]`, that the type is `Clone + Send + Sync + 'static`, so a
/// missing bound is reported once, at the type's name. (A missing `Send` or `Sync` is
/// reported with rustc's own "cannot be sent/shared between threads safely".)
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an event: events must be `Clone + Send + Sync + 'static`",
    label = "not `Clone + Send + Sync + 'static`",
    note = "one published event is shared by all its subscribers, which may run on other threads: derive `Clone`, and hold thread-safe data (`Arc`, not `Rc`; `Mutex`, not `RefCell`)"
)]
pub trait EventBounds {
    /// Compiles only when the bounds hold.
    fn check() {}
}
impl<T: Clone + Send + Sync + 'static> EventBounds for T {}

/// Checks, at a `#[derive(Command)]` or `#[derive(Query)]`, that the type is
/// `Send + 'static`, so a missing bound is reported once, at the type's name.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a message: messages must be `Send + 'static`",
    label = "not `Send + 'static`",
    note = "messages cross tasks and threads; hold owned, thread-safe data (`String`, `Arc`) instead of references, `Rc` or `RefCell`"
)]
pub trait MessageBounds {
    /// Compiles only when the bounds hold.
    fn check() {}
}
impl<T: Send + 'static> MessageBounds for T {}

/// Checks that a `#[subscribe]` handler's argument is an event, at the argument's type.
pub fn assert_event<E: crate::Event>() {}

/// Checks that what a `#[handle]` or `#[query]` method returns (`Self`) is the reply `R` of
/// the message `M` it handles: implemented only when the two are the same type, so a
/// handler returning anything else is reported at its return type, with the expected reply.
#[diagnostic::on_unimplemented(
    message = "this handler returns `{Self}`, but the reply of `{M}` is `{R}`",
    label = "expected `{R}`",
    note = "return `{R}`, or change the reply declared on `{M}` with `#[command(reply = ...)]` or `#[query(reply = ...)]`"
)]
pub trait Returns<M, R> {
    /// The value itself.
    fn into_reply(self) -> R;
}
impl<M, R> Returns<M, R> for R {
    #[inline]
    fn into_reply(self) -> R {
        self
    }
}

// The generated actor reaches the runtime's hooks through the traits below, by autoref
// specialisation on `Probe` (see [`Probe`]): on `Probe<(message, handler's return type)>`
// the `Handle*` traits apply when the handler is right (its message has the kind, its
// return type the reply), the `Unchecked*` ones otherwise; likewise [`CheckedItem`] and
// [`UncheckedItem`] on `Probe<mailbox item>`. So the actor compiles even when a handler is
// wrong, and the only errors are those of the checks it also generates, at the handler's
// own tokens: not in the generated code, and not where the actor is used. The `Unchecked*`
// methods never run: a crate where they are chosen does not compile.

/// The runtime's hooks on a mailbox item, when it is one; see [`Returns`] and above.
pub trait CheckedItem<T> {
    /// The message's name, metadata and attempt.
    fn describe<'a>(&self, item: &'a T) -> (&'static str, &'a crate::Metadata, u32);
    /// This delivery's attempt, 1 for the first.
    fn attempt(&self, item: &T) -> u32;
    /// Takes the item out unhandled.
    fn reject(
        &self,
        item: T,
        error: crate::Error,
    ) -> (&'static str, crate::Metadata, Option<Payload>);
}
impl<T: MailboxItem> CheckedItem<T> for Probe<T> {
    #[inline]
    fn describe<'a>(&self, item: &'a T) -> (&'static str, &'a crate::Metadata, u32) {
        let (name, meta) = item.describe();
        (name, meta, item.attempt())
    }
    #[inline]
    fn attempt(&self, item: &T) -> u32 {
        item.attempt()
    }
    #[inline]
    fn reject(
        &self,
        item: T,
        error: crate::Error,
    ) -> (&'static str, crate::Metadata, Option<Payload>) {
        item.reject(error)
    }
}

/// The item of a wrong handler; never called.
pub trait UncheckedItem<T> {
    /// Never called.
    fn describe<'a>(&self, item: &'a T) -> (&'static str, &'a crate::Metadata, u32);
    /// Never called.
    fn attempt(&self, item: &T) -> u32;
    /// Never called.
    fn reject(
        &self,
        item: T,
        error: crate::Error,
    ) -> (&'static str, crate::Metadata, Option<Payload>);
}
impl<T> UncheckedItem<T> for &Probe<T> {
    fn describe<'a>(&self, _: &'a T) -> (&'static str, &'a crate::Metadata, u32) {
        unreachable!("a wrong handler does not compile")
    }
    fn attempt(&self, _: &T) -> u32 {
        unreachable!("a wrong handler does not compile")
    }
    fn reject(&self, _: T, _: crate::Error) -> (&'static str, crate::Metadata, Option<Payload>) {
        unreachable!("a wrong handler does not compile")
    }
}

/// A `#[handle]` method of command `C` returning `R`, when `R` is `C`'s reply.
pub trait HandleCommand<C, R> {
    /// Registers the route.
    fn route<A: crate::Actor>(
        &self,
        routes: &mut Routes<'_, A>,
        wrap: fn(Ask<C, R>) -> A::Mailbox,
        unwrap: fn(A::Mailbox) -> Option<Ask<C, R>>,
    );
    /// Starts handling it.
    fn begin<A: crate::Actor>(&self, ctx: &mut crate::Context<A>, ask: Ask<C, R>) -> (C, Reply<R>);
    /// A `#[handle(retry = N)]` method failed: retries or dead-letters the command.
    #[allow(clippy::too_many_arguments)]
    fn failed<A: crate::Actor>(
        &self,
        ctx: &mut crate::Context<A>,
        failure: AskFailure<R>,
        command: C,
        reply: Reply<R>,
        attempt: u32,
        options: &'static HandlerOptions,
        wrap: fn(Ask<C, R>) -> A::Mailbox,
    ) -> Result<(), HandlerError>;
}
impl<C: crate::Command<Reply = R>, R> HandleCommand<C, R> for Probe<(C, R)> {
    #[inline]
    fn route<A: crate::Actor>(
        &self,
        routes: &mut Routes<'_, A>,
        wrap: fn(Ask<C, R>) -> A::Mailbox,
        unwrap: fn(A::Mailbox) -> Option<Ask<C, R>>,
    ) {
        routes.command::<C>(wrap, unwrap);
    }
    #[inline]
    fn begin<A: crate::Actor>(&self, ctx: &mut crate::Context<A>, ask: Ask<C, R>) -> (C, Reply<R>) {
        ctx.__begin_ask(ask)
    }
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn failed<A: crate::Actor>(
        &self,
        ctx: &mut crate::Context<A>,
        failure: AskFailure<R>,
        command: C,
        reply: Reply<R>,
        attempt: u32,
        options: &'static HandlerOptions,
        wrap: fn(Ask<C, R>) -> A::Mailbox,
    ) -> Result<(), HandlerError> {
        ctx.__ask_failed(failure, command, reply, attempt, options, wrap)
    }
}

/// A `#[query]` method of query `Q` returning `R`, when `R` is `Q`'s reply.
pub trait HandleQuery<Q, R> {
    /// Registers the route.
    fn route<A: crate::Actor>(
        &self,
        routes: &mut Routes<'_, A>,
        wrap: fn(Ask<Q, R>) -> A::Mailbox,
        unwrap: fn(A::Mailbox) -> Option<Ask<Q, R>>,
    );
    /// Starts handling it.
    fn begin<A: crate::Actor>(&self, ctx: &mut crate::Context<A>, ask: Ask<Q, R>) -> (Q, Reply<R>);
}
impl<Q: crate::Query<Reply = R>, R> HandleQuery<Q, R> for Probe<(Q, R)> {
    #[inline]
    fn route<A: crate::Actor>(
        &self,
        routes: &mut Routes<'_, A>,
        wrap: fn(Ask<Q, R>) -> A::Mailbox,
        unwrap: fn(A::Mailbox) -> Option<Ask<Q, R>>,
    ) {
        routes.query::<Q>(wrap, unwrap);
    }
    #[inline]
    fn begin<A: crate::Actor>(&self, ctx: &mut crate::Context<A>, ask: Ask<Q, R>) -> (Q, Reply<R>) {
        ctx.__begin_ask(ask)
    }
}

/// A wrong `#[handle]` or `#[query]` method; never called (`route` does nothing).
pub trait UncheckedAsk<M, R> {
    /// Does nothing.
    fn route<A: crate::Actor>(
        &self,
        routes: &mut Routes<'_, A>,
        wrap: fn(Ask<M, R>) -> A::Mailbox,
        unwrap: fn(A::Mailbox) -> Option<Ask<M, R>>,
    );
    /// Never called.
    fn begin<A: crate::Actor>(&self, ctx: &mut crate::Context<A>, ask: Ask<M, R>) -> (M, Reply<R>);
    /// Never called.
    #[allow(clippy::too_many_arguments)]
    fn failed<A: crate::Actor>(
        &self,
        ctx: &mut crate::Context<A>,
        failure: AskFailure<R>,
        command: M,
        reply: Reply<R>,
        attempt: u32,
        options: &'static HandlerOptions,
        wrap: fn(Ask<M, R>) -> A::Mailbox,
    ) -> Result<(), HandlerError>;
}
impl<M, R> UncheckedAsk<M, R> for &Probe<(M, R)> {
    fn route<A: crate::Actor>(
        &self,
        _: &mut Routes<'_, A>,
        _: fn(Ask<M, R>) -> A::Mailbox,
        _: fn(A::Mailbox) -> Option<Ask<M, R>>,
    ) {
    }
    fn begin<A: crate::Actor>(&self, _: &mut crate::Context<A>, _: Ask<M, R>) -> (M, Reply<R>) {
        unreachable!("a wrong handler does not compile")
    }
    fn failed<A: crate::Actor>(
        &self,
        _: &mut crate::Context<A>,
        _: AskFailure<R>,
        _: M,
        _: Reply<R>,
        _: u32,
        _: &'static HandlerOptions,
        _: fn(Ask<M, R>) -> A::Mailbox,
    ) -> Result<(), HandlerError> {
        unreachable!("a wrong handler does not compile")
    }
}

/// A `#[subscribe]` method of event `E` returning `R`, when `R` is `()` or a `Result`.
pub trait HandleEvent<E, R> {
    /// Registers the route.
    fn route<A: crate::Actor>(
        &self,
        routes: &mut Routes<'_, A>,
        wrap: fn(Delivery<E>) -> A::Mailbox,
        unwrap: fn(A::Mailbox) -> Option<Delivery<E>>,
    );
    /// Starts handling it: run, skip or park it.
    fn begin<A: crate::Actor>(
        &self,
        ctx: &mut crate::Context<A>,
        delivery: &Delivery<E>,
        options: &'static HandlerOptions,
        key: Option<u64>,
    ) -> Begin;
    /// What the handler's return value means.
    fn outcome(&self, value: R) -> Result<(), HandlerError>;
}
impl<E: crate::Event, R: SubscribeResult> HandleEvent<E, R> for Probe<(E, R)> {
    #[inline]
    fn route<A: crate::Actor>(
        &self,
        routes: &mut Routes<'_, A>,
        wrap: fn(Delivery<E>) -> A::Mailbox,
        unwrap: fn(A::Mailbox) -> Option<Delivery<E>>,
    ) {
        routes.event::<E>(wrap, unwrap);
    }
    #[inline]
    fn begin<A: crate::Actor>(
        &self,
        ctx: &mut crate::Context<A>,
        delivery: &Delivery<E>,
        options: &'static HandlerOptions,
        key: Option<u64>,
    ) -> Begin {
        ctx.__begin_event(delivery, options, key)
    }
    #[inline]
    fn outcome(&self, value: R) -> Result<(), HandlerError> {
        value.into_outcome()
    }
}

/// A wrong `#[subscribe]` method; never called (`route` does nothing).
pub trait UncheckedEvent<E, R> {
    /// Does nothing.
    fn route<A: crate::Actor>(
        &self,
        routes: &mut Routes<'_, A>,
        wrap: fn(Delivery<E>) -> A::Mailbox,
        unwrap: fn(A::Mailbox) -> Option<Delivery<E>>,
    );
    /// Never called.
    fn begin<A: crate::Actor>(
        &self,
        ctx: &mut crate::Context<A>,
        delivery: &Delivery<E>,
        options: &'static HandlerOptions,
        key: Option<u64>,
    ) -> Begin;
    /// Never called.
    fn outcome(&self, value: R) -> Result<(), HandlerError>;
}
impl<E, R> UncheckedEvent<E, R> for &Probe<(E, R)> {
    fn route<A: crate::Actor>(
        &self,
        _: &mut Routes<'_, A>,
        _: fn(Delivery<E>) -> A::Mailbox,
        _: fn(A::Mailbox) -> Option<Delivery<E>>,
    ) {
    }
    fn begin<A: crate::Actor>(
        &self,
        _: &mut crate::Context<A>,
        _: &Delivery<E>,
        _: &'static HandlerOptions,
        _: Option<u64>,
    ) -> Begin {
        unreachable!("a wrong handler does not compile")
    }
    fn outcome(&self, _: R) -> Result<(), HandlerError> {
        unreachable!("a wrong handler does not compile")
    }
}

/// One variant's event of `#[derive(Events)]`. The derive checks each variant's type against
/// this trait once (`assert_variant`), spanned at the type, and reaches the type's name,
/// version, encoding and publishing through [`CheckedVariant`] on `Probe<T>`, falling back to
/// [`UncheckedVariant`] when the check fails, so a type that cannot be stored gets its one
/// error and no cascade.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be one of an aggregate's events: it must be an event that serde can store",
    label = "needs `#[derive(Event, Serialize, Deserialize)]`",
    note = "each variant of a `#[derive(Events)]` enum holds a type with `#[derive(Event, Clone, Serialize, Deserialize)]`"
)]
pub trait VariantEvent: crate::Event + serde::Serialize + serde::de::DeserializeOwned {}

impl<E: crate::Event + serde::Serialize + serde::de::DeserializeOwned> VariantEvent for E {}

/// The one bound check per variant of `#[derive(Events)]`.
pub const fn assert_variant<E: VariantEvent>() {}

/// See [`VariantEvent`].
pub trait CheckedVariant<E> {
    /// `Message::NAME`.
    fn name(&self) -> &'static str;
    /// `Message::VERSION`.
    fn version(&self) -> u32;
    /// Encodes the event with `metadata`.
    fn encode(
        &self,
        event: &E,
        metadata: crate::Metadata,
    ) -> crate::store::StoreResult<crate::store::EventData>;
    /// Decodes a stored event (already upcast): its schema version must be the type's.
    fn decode(&self, event: &crate::store::StoredEvent) -> crate::store::StoreResult<E>;
    /// Publishes the event on the bus.
    fn publish(
        &self,
        event: E,
        app: &crate::App,
        metadata: crate::Metadata,
    ) -> impl std::future::Future<Output = crate::Result<()>> + Send;
    /// Publishes the event from inside a handler.
    fn publish_in<A: crate::Actor>(
        &self,
        event: E,
        ctx: &mut crate::Context<A>,
        metadata: crate::Metadata,
    ) -> impl std::future::Future<Output = crate::Result<()>> + Send;
}

impl<E: VariantEvent> CheckedVariant<E> for Probe<E> {
    fn name(&self) -> &'static str {
        E::NAME
    }

    fn version(&self) -> u32 {
        E::VERSION
    }

    fn encode(
        &self,
        event: &E,
        metadata: crate::Metadata,
    ) -> crate::store::StoreResult<crate::store::EventData> {
        crate::store::EventData::from_event_with(event, metadata)
    }

    fn decode(&self, event: &crate::store::StoredEvent) -> crate::store::StoreResult<E> {
        if event.schema_version != E::VERSION {
            return Err(crate::store::StoreError::SchemaVersion {
                name: event.name.clone(),
                stored: event.schema_version,
                current: E::VERSION,
            });
        }
        event.decode()
    }

    fn publish(
        &self,
        event: E,
        app: &crate::App,
        metadata: crate::Metadata,
    ) -> impl std::future::Future<Output = crate::Result<()>> + Send {
        app.publish_envelope(crate::Envelope::with_meta(event, metadata))
    }

    fn publish_in<A: crate::Actor>(
        &self,
        event: E,
        ctx: &mut crate::Context<A>,
        metadata: crate::Metadata,
    ) -> impl std::future::Future<Output = crate::Result<()>> + Send {
        ctx.publish_envelope(crate::Envelope::with_meta(event, metadata))
    }
}

/// See [`VariantEvent`]: only chosen when the type failed its check, so never run.
pub trait UncheckedVariant<E> {
    /// Never called.
    fn name(&self) -> &'static str {
        unreachable!("a variant that failed its check does not compile")
    }
    /// Never called.
    fn version(&self) -> u32 {
        unreachable!("a variant that failed its check does not compile")
    }
    /// Never called.
    fn encode(
        &self,
        _: &E,
        _: crate::Metadata,
    ) -> crate::store::StoreResult<crate::store::EventData> {
        unreachable!("a variant that failed its check does not compile")
    }
    /// Never called.
    fn decode(&self, _: &crate::store::StoredEvent) -> crate::store::StoreResult<E> {
        unreachable!("a variant that failed its check does not compile")
    }
    /// Never called.
    fn publish(
        &self,
        _: E,
        _: &crate::App,
        _: crate::Metadata,
    ) -> impl std::future::Future<Output = crate::Result<()>> + Send {
        async { unreachable!("a variant that failed its check does not compile") }
    }
    /// Never called.
    fn publish_in<A: crate::Actor>(
        &self,
        _: E,
        _: &mut crate::Context<A>,
        _: crate::Metadata,
    ) -> impl std::future::Future<Output = crate::Result<()>> + Send {
        async { unreachable!("a variant that failed its check does not compile") }
    }
}

impl<E> UncheckedVariant<E> for &Probe<E> {}

/// The store codec of a subscribed event type: `Some` when serde can store it, by autoref
/// specialisation on `Probe<E>` (see [`Probe`]).
pub trait StorableEvent {
    /// The codec.
    fn codec(&self) -> Option<crate::delivery::durable::Codec>;
}

impl<E: crate::Event + serde::Serialize + serde::de::DeserializeOwned> StorableEvent for Probe<E> {
    fn codec(&self) -> Option<crate::delivery::durable::Codec> {
        Some(crate::delivery::durable::Codec::of::<E>())
    }
}

/// See [`StorableEvent`]: an event type serde cannot store has no codec.
pub trait UnstorableEvent {
    /// `None`.
    fn codec(&self) -> Option<crate::delivery::durable::Codec> {
        None
    }
}

impl<E> UnstorableEvent for &Probe<E> {}

/// The store codec of a handled command type: `Some` when serde can store it (for durable
/// scheduled commands), by autoref specialisation on `Probe<C>` (see [`Probe`]).
pub trait StorableCommand {
    /// The codec.
    fn codec(&self) -> Option<crate::delivery::durable::Codec>;
}

impl<C: crate::Command + serde::Serialize + serde::de::DeserializeOwned> StorableCommand
    for Probe<C>
{
    fn codec(&self) -> Option<crate::delivery::durable::Codec> {
        Some(crate::delivery::durable::Codec::command::<C>())
    }
}

/// See [`StorableCommand`]: a command type serde cannot store has no codec.
pub trait UnstorableCommand {
    /// `None`.
    fn codec(&self) -> Option<crate::delivery::durable::Codec> {
        None
    }
}

impl<C> UnstorableCommand for &Probe<C> {}
