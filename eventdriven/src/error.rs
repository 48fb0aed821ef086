//! Errors of the bus: each variant says what happened, to which message and which actor.

use std::fmt;
use std::time::Duration;

/// What can go wrong when building an app or moving a message through it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event failed its type's validation hook ([`AppBuilder::validate`](crate::AppBuilder::validate)):
    /// it was not published.
    #[error("`{message}` is invalid: {reason}")]
    Invalid {
        /// The event's name.
        message: &'static str,
        /// What the hook said.
        reason: String,
    },
    /// No actor handles this command or query.
    #[error("no handler for `{message}`: add a `#[handle]` (command) or `#[query]` method for it to an actor registered with the app builder")]
    NoHandler {
        /// The message's name.
        message: &'static str,
    },
    /// Two actors handle the same command or query (found by `build()`).
    #[error("`{message}` has two handlers, in `{first}` and in `{second}`: a command or query must have exactly one")]
    DuplicateHandler {
        /// The message's name.
        message: &'static str,
        /// The actor registered first.
        first: &'static str,
        /// The actor registered second.
        second: &'static str,
    },
    /// `try_*` found a recipient's mailbox full.
    #[error("the mailbox of `{actor}` is full; `{message}` was not delivered to any recipient")]
    Full {
        /// The actor whose mailbox is full.
        actor: &'static str,
        /// The message's name.
        message: &'static str,
    },
    /// A send from inside a handler waited longer than the send timeout, for mailbox room or
    /// for the reply. This is how a cycle of actors with full mailboxes ends.
    #[error("timed out after {timeout:?} delivering `{message}` to `{actor}` (full mailbox or no reply; a cycle between actors ends here)")]
    Timeout {
        /// The recipient.
        actor: &'static str,
        /// The message's name.
        message: &'static str,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The recipient has stopped and takes no more messages.
    #[error("`{actor}` has stopped; `{message}` was not delivered")]
    Stopped {
        /// The stopped actor.
        actor: &'static str,
        /// The message's name.
        message: &'static str,
    },
    /// The app is shutting down and takes no new messages from outside.
    #[error("the app is shutting down; `{message}` was not accepted")]
    ShuttingDown {
        /// The message's name.
        message: &'static str,
    },
    /// The handler ended without a reply: it panicked (see the dead letters) or its actor was
    /// stopped.
    #[error("`{actor}` did not reply to `{message}`: its handler panicked or the actor stopped (see the dead letters)")]
    NoReply {
        /// The actor that held the request.
        actor: &'static str,
        /// The message's name.
        message: &'static str,
    },
    /// A handler asked a command or query of its own actor and would wait for itself.
    #[error("`{actor}` sent `{message}` to itself and would wait for its own reply: call the method directly instead")]
    SelfRequest {
        /// The actor.
        actor: &'static str,
        /// The message's name.
        message: &'static str,
    },
    /// `shutdown` did not drain every mailbox before its deadline.
    #[error("shutdown deadline of {deadline:?} passed with {unhandled} messages still unhandled")]
    ShutdownTimeout {
        /// The deadline.
        deadline: Duration,
        /// Messages accepted but not handled.
        unhandled: u64,
    },
    /// A message handled to completion may not be redelivered from the dead letters again.
    #[error("`{message}` was already taken out of the dead letters")]
    AlreadyRedelivered {
        /// The message's name.
        message: &'static str,
    },
    /// The message's time to live passed before it was handled.
    #[error("`{message}` expired before `{actor}` handled it")]
    Expired {
        /// The actor that would have handled it.
        actor: &'static str,
        /// The message's name.
        message: &'static str,
    },
    /// The message exhausted its retries (or failed permanently) and is in the dead letters.
    #[error("`{actor}` failed to handle `{message}` after {attempts} attempt(s): {error}")]
    DeadLettered {
        /// The actor.
        actor: &'static str,
        /// The message's name.
        message: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// No dead letter has this number (never, or it was retried or purged).
    #[error("no dead letter #{seq}: it was retried, purged, or never existed")]
    NoDeadLetter {
        /// The number asked for.
        seq: u64,
    },
    /// The dead letter kept no payload to deliver again (a command or query that was being
    /// handled when it failed; its sender got the error).
    #[error("dead letter #{seq} (`{message}`) cannot be retried: only its metadata was kept")]
    NotRetryable {
        /// The dead letter's number.
        seq: u64,
        /// The message's name.
        message: &'static str,
    },
    /// The app's configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a `try_*` call did not deliver, with the message handed back so nothing is lost.
pub struct TrySendError<M> {
    /// The message, untouched.
    pub message: M,
    /// Why it was not delivered ([`Error::Full`], [`Error::NoHandler`], ...).
    pub error: Error,
}

impl<M> TrySendError<M> {
    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        self.message
    }

    /// Whether a recipient's mailbox was full (trying later may succeed).
    pub fn is_full(&self) -> bool {
        matches!(self.error, Error::Full { .. })
    }
}

impl<M> fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrySendError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<M> fmt::Display for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<M> std::error::Error for TrySendError<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<M> From<TrySendError<M>> for Error {
    fn from(e: TrySendError<M>) -> Self {
        e.error
    }
}
