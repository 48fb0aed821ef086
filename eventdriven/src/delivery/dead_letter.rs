//! The dead-letter queue: where a message that was accepted but could not be handled ends
//! up, with why. Nothing leaves the app silently.
//!
//! A message is dead-lettered when its handler fails past its retry policy (or with an error
//! the policy calls permanent), panics past it, expires before it is handled, or is still
//! queued when its actor stops or the shutdown deadline passes. Events and never-handled
//! commands keep their payload and can be delivered again with
//! [`App::retry_dead_letter`](crate::App::retry_dead_letter).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::SystemTime;

use crate::actor::item::Payload;
use crate::actor::mailbox::MailboxCore;
use crate::delivery::durable::StoreWriter;
use crate::message::{Envelope, Event, Message, Metadata};

/// Why a message was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The handler returned an error on every allowed attempt (or a permanent one).
    Failed,
    /// The handler panicked on every allowed attempt.
    Panicked,
    /// Its time to live passed before it was handled.
    Expired,
    /// Its actor stopped (supervision gave up on it) before handling it.
    Stopped,
    /// The shutdown deadline passed before it was handled.
    Shutdown,
}

impl Reason {
    const ALL: [Reason; 5] = [
        Reason::Failed,
        Reason::Panicked,
        Reason::Expired,
        Reason::Stopped,
        Reason::Shutdown,
    ];

    /// The reason whose `Display` text `text` is.
    pub(crate) fn from_text(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.to_string() == text)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Failed => "failed",
            Reason::Panicked => "panicked",
            Reason::Expired => "expired",
            Reason::Stopped => "actor stopped",
            Reason::Shutdown => "shutdown deadline",
        })
    }
}

/// A message that could not be handled, with why.
#[derive(Clone)]
pub struct DeadLetter {
    /// Its number in this queue, for [`DeadLetters::get`] and retries.
    pub seq: u64,
    /// The actor (subscriber or handler) that could not handle it.
    pub actor: &'static str,
    /// The message's name.
    pub message: &'static str,
    /// The original metadata (its `attempt` is the last one made).
    pub meta: Metadata,
    /// Why it is here.
    pub reason: Reason,
    /// The last error's text.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the first attempt failed.
    pub first_failure: SystemTime,
    /// When the last attempt failed (or the message was given up).
    pub last_failure: SystemTime,
    pub(crate) payload: Option<Payload>,
    pub(crate) target: Option<Arc<MailboxCore>>,
    /// Whether the store holds it (to be removed there when it leaves).
    pub(crate) stored: bool,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("seq", &self.seq)
            .field("actor", &self.actor)
            .field("message", &self.message)
            .field("id", &self.meta.id)
            .field("reason", &self.reason)
            .field("error", &self.error)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl DeadLetter {
    /// The dead-lettered event, if this is an event of type `E`.
    pub fn event<E: Event>(&self) -> Option<&E> {
        self.payload
            .as_ref()?
            .value
            .downcast_ref::<Envelope<E>>()
            .map(|env| &env.message)
    }

    /// Whether the message itself was kept, so it can be delivered again.
    pub fn can_retry(&self) -> bool {
        self.payload.is_some() && self.target.is_some()
    }

    /// Whether this is a message of type `M`.
    pub fn is<M: Message>(&self) -> bool {
        self.message == M::NAME
    }
}

/// Which dead letters to list: all fields are optional and combine with "and".
///
/// ```
/// use eventdriven::delivery::Filter;
///
/// let recent_payment_failures = Filter::new().actor("Payments").message("payment.requested");
/// # let _ = recent_payment_failures;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Filter {
    actor: Option<String>,
    message: Option<String>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

impl Filter {
    /// Everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only those of this actor (subscriber or handler).
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Only those of this message name.
    pub fn message(mut self, name: impl Into<String>) -> Self {
        self.message = Some(name.into());
        self
    }

    /// Only those whose last failure is at or after `time`.
    pub fn since(mut self, time: SystemTime) -> Self {
        self.since = Some(time);
        self
    }

    /// Only those whose last failure is before `time`.
    pub fn until(mut self, time: SystemTime) -> Self {
        self.until = Some(time);
        self
    }

    fn matches(&self, dl: &DeadLetter) -> bool {
        self.actor.as_deref().is_none_or(|a| a == dl.actor)
            && self.message.as_deref().is_none_or(|m| m == dl.message)
            && self.since.is_none_or(|t| dl.last_failure >= t)
            && self.until.is_none_or(|t| dl.last_failure < t)
    }
}

/// A dead letter about to be recorded.
pub(crate) struct NewDeadLetter {
    pub(crate) actor: &'static str,
    pub(crate) message: &'static str,
    pub(crate) meta: Metadata,
    pub(crate) reason: Reason,
    pub(crate) error: String,
    pub(crate) first_failure: Option<SystemTime>,
    pub(crate) payload: Option<Payload>,
    pub(crate) target: Option<Arc<MailboxCore>>,
    /// Whether it was written to the store.
    pub(crate) stored: bool,
}

/// A subscriber whose dead-letter count just passed the configured threshold.
pub(crate) struct Crossed {
    pub(crate) actor: &'static str,
    pub(crate) count: usize,
    pub(crate) threshold: usize,
}

#[derive(Default)]
struct Queue {
    letters: Vec<DeadLetter>,
    per_actor: HashMap<&'static str, usize>,
}

/// The app's dead-letter queue (in memory; durable stores arrive with the storage backends).
/// Read it with `app.dead_letters()`.
#[derive(Default)]
pub struct DeadLetters {
    queue: Mutex<Queue>,
    next_seq: AtomicU64,
    threshold: Option<usize>,
    /// With a store: where purged letters are removed too.
    pub(crate) durable: OnceLock<Arc<StoreWriter>>,
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters")
            .field("len", &self.len())
            .finish()
    }
}

impl DeadLetters {
    pub(crate) fn with_threshold(threshold: Option<usize>) -> Self {
        Self {
            threshold,
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every critical section leaves the queue consistent, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a dead letter; says so when its actor's count just passed the threshold.
    pub(crate) fn push(&self, new: NewDeadLetter) -> Option<Crossed> {
        let now = SystemTime::now();
        let letter = DeadLetter {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            actor: new.actor,
            message: new.message,
            attempts: new.meta.attempt,
            meta: new.meta,
            reason: new.reason,
            error: new.error,
            first_failure: new.first_failure.unwrap_or(now),
            last_failure: now,
            payload: new.payload,
            target: new.target,
            stored: new.stored,
        };
        let mut queue = self.lock();
        queue.letters.push(letter);
        let count = queue.per_actor.entry(new.actor).or_default();
        *count += 1;
        let count = *count;
        self.threshold
            .filter(|&threshold| count == threshold + 1)
            .map(|threshold| Crossed {
                actor: new.actor,
                count,
                threshold,
            })
    }

    /// Every dead letter, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        self.lock().letters.clone()
    }

    /// The dead letters that match `filter`, oldest first.
    pub fn list_where(&self, filter: &Filter) -> Vec<DeadLetter> {
        self.lock()
            .letters
            .iter()
            .filter(|dl| filter.matches(dl))
            .cloned()
            .collect()
    }

    /// One dead letter by its number.
    pub fn get(&self, seq: u64) -> Option<DeadLetter> {
        self.lock().letters.iter().find(|dl| dl.seq == seq).cloned()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.lock().letters.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many there are for one actor.
    pub fn count_for(&self, actor: &str) -> usize {
        self.lock()
            .per_actor
            .iter()
            .find(|(a, _)| **a == actor)
            .map_or(0, |(_, n)| *n)
    }

    /// Removes every dead letter; returns how many.
    pub fn purge(&self) -> usize {
        self.purge_where(&Filter::new())
    }

    /// Removes the dead letters whose last failure is before `time`; returns how many.
    pub fn purge_older_than(&self, time: SystemTime) -> usize {
        self.purge_where(&Filter::new().until(time))
    }

    /// Removes the dead letters matching `filter`; returns how many.
    pub fn purge_where(&self, filter: &Filter) -> usize {
        let mut queue = self.lock();
        let before = queue.letters.len();
        let Queue { letters, per_actor } = &mut *queue;
        let durable = self.durable.get();
        letters.retain(|dl| {
            let purge = filter.matches(dl);
            if purge {
                if let Some(n) = per_actor.get_mut(dl.actor) {
                    *n -= 1;
                }
                if let (true, Some(durable)) = (dl.stored, durable) {
                    durable.remove_dead_letter(dl.meta.id, dl.actor);
                }
            }
            !purge
        });
        before - letters.len()
    }

    /// Takes one dead letter out (for a retry), or `None` if it is not there.
    pub(crate) fn take(&self, seq: u64) -> Option<DeadLetter> {
        let mut queue = self.lock();
        let index = queue.letters.iter().position(|dl| dl.seq == seq)?;
        let letter = queue.letters.remove(index);
        if let Some(n) = queue.per_actor.get_mut(letter.actor) {
            *n -= 1;
        }
        Some(letter)
    }

    /// Adds a dead letter read back from the store at start (no threshold event: it was
    /// counted when it failed).
    pub(crate) fn load(&self, new: NewDeadLetter, failed_at: SystemTime) {
        let letter = DeadLetter {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            actor: new.actor,
            message: new.message,
            attempts: new.meta.attempt,
            meta: new.meta,
            reason: new.reason,
            error: new.error,
            first_failure: failed_at,
            last_failure: failed_at,
            payload: new.payload,
            target: new.target,
            stored: true,
        };
        let mut queue = self.lock();
        *queue.per_actor.entry(letter.actor).or_default() += 1;
        queue.letters.push(letter);
    }

    /// Puts a dead letter back (a retry that could not be delivered), keeping its number.
    pub(crate) fn restore(&self, letter: DeadLetter) {
        let mut queue = self.lock();
        *queue.per_actor.entry(letter.actor).or_default() += 1;
        let at = queue.letters.partition_point(|dl| dl.seq < letter.seq);
        queue.letters.insert(at, letter);
    }

    /// The numbers of one actor's retryable dead letters.
    pub(crate) fn retryable_for(&self, actor: &str) -> Vec<u64> {
        self.lock()
            .letters
            .iter()
            .filter(|dl| dl.actor == actor && dl.can_retry())
            .map(|dl| dl.seq)
            .collect()
    }
}

/// Published when a subscriber's dead-letter count passes the threshold set with
/// `AppBuilder::dead_letter_threshold`; subscribe to it to raise an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterThresholdExceeded {
    /// The subscriber or handler.
    pub actor: &'static str,
    /// Its dead letters now.
    pub count: usize,
    /// The threshold it passed.
    pub threshold: usize,
}

impl Message for DeadLetterThresholdExceeded {
    const NAME: &'static str = "eventdriven.dead_letter_threshold_exceeded";
}

#[diagnostic::do_not_recommend]
impl Event for DeadLetterThresholdExceeded {}
