//! Delivery machinery: the dead-letter queue.
//!
//! A message that was accepted but could not be handled (its subscriber returned an error or
//! panicked, its actor stopped before handling it) is never dropped: it lands here with the
//! error, so nothing leaves the app silently.

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::message::{Envelope, Event, Metadata};

/// A message that could not be handled, with why.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The actor that failed to handle it.
    pub actor: &'static str,
    /// The message's name.
    pub message: &'static str,
    /// The message's metadata.
    pub meta: Metadata,
    /// What went wrong: the handler's error or panic text.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub at: SystemTime,
    /// The event itself; `None` for commands and queries (their sender got the error).
    payload: Option<Arc<dyn Any + Send + Sync>>,
}

impl DeadLetter {
    /// The dead-lettered event, if this is an event of type `E`.
    pub fn event<E: Event>(&self) -> Option<&E> {
        self.payload
            .as_deref()?
            .downcast_ref::<Envelope<E>>()
            .map(|env| &env.message)
    }
}

/// The app's dead-letter queue (in memory). Read it with `app.dead_letters()`.
#[derive(Debug, Default)]
pub struct DeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
}

impl DeadLetters {
    fn lock(&self) -> MutexGuard<'_, Vec<DeadLetter>> {
        // A panic while holding this lock cannot leave the Vec half-written.
        self.letters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(
        &self,
        actor: &'static str,
        message: &'static str,
        meta: &Metadata,
        error: String,
        payload: Option<Arc<dyn Any + Send + Sync>>,
    ) {
        self.lock().push(DeadLetter {
            actor,
            message,
            meta: meta.clone(),
            error,
            attempts: meta.attempt,
            at: SystemTime::now(),
            payload,
        });
    }

    /// Every dead letter, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        self.lock().clone()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
