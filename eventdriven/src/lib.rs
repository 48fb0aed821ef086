#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod actor;
pub mod app;
pub mod delivery;
pub mod error;
pub mod message;

pub use actor::ReplyFuture;
pub use actor::{Actor, Context, Mailbox};
pub use app::{ActorOptions, ActorStats, App, AppBuilder, Stats, IDEMPOTENCY_KEY};
pub use delivery::{DeadLetter, DeadLetters};
pub use error::{Error, Result, TrySendError};
pub use message::{Command, Envelope, Event, Headers, Message, MessageId, Metadata, Query};

pub use eventdriven_macros::{handlers, subscribe, Command, Event, Query};

/// What every application needs: `use eventdriven::prelude::*;`.
pub mod prelude {
    pub use crate::{
        handlers, subscribe, App, Command, Context, Envelope, Event, Mailbox, Message, Metadata,
        Query,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Paths used by the generated code; not part of the public API.
#[doc(hidden)]
pub mod __private {
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

    /// Checks that an event type is `Clone + Sync`, with advice when it is not.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be an event: events must be `Clone + Send + Sync + 'static`",
        label = "not `Clone + Send + Sync + 'static`",
        note = "an event is shared by every subscriber; derive `Clone` and keep non-thread-safe data (Rc, RefCell) out of it"
    )]
    pub trait EventBounds {}
    impl<T: Clone + Send + Sync + 'static> EventBounds for T {}

    /// Checks that a message type is `Send + 'static`, with advice when it is not.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a message: messages must be `Send + 'static`",
        label = "not `Send + 'static`",
        note = "messages cross tasks and threads; hold owned, thread-safe data (String, Arc) instead of references, Rc or RefCell"
    )]
    pub trait MessageBounds {}
    impl<T: Send + 'static> MessageBounds for T {}
}
