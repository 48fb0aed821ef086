#![doc = include_str!("../../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod actor;
pub mod aggregate;
pub mod app;
#[cfg(feature = "bridge")]
pub mod bridge;
mod clock;
pub mod codec;
pub mod consistency;
pub mod delivery;
pub mod error;
pub mod message;
pub mod observe;
pub mod projection;
pub mod saga;
pub mod store;
pub mod stream;
pub mod testing;
mod worker;

pub use actor::ReplyFuture;
pub use actor::{Actor, Context, Mailbox};
pub use app::{
    ActorOptions, ActorStats, App, AppBuilder, Handled, IncomingError, Stats, IDEMPOTENCY_KEY,
};
pub use delivery::{DeadLetter, DeadLetters};
pub use error::{Error, Result, TrySendError};
pub use message::{
    Command, Envelope, Event, Headers, Message, MessageId, Metadata, ParseMessageIdError, Query,
    Timestamp,
};

pub use eventdriven_macros::{handle, handlers, query, subscribe, Command, Event, Events, Query};

/// What every application needs: `use eventdriven::prelude::*;`.
pub mod prelude {
    pub use crate::aggregate::{Aggregate, Events};
    pub use crate::{
        handle, handlers, query, subscribe, App, Command, Context, Envelope, Event, Mailbox,
        Message, Metadata, Query,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Paths used by the generated code; not part of the public API.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
