//! The handler's view of the app: send, publish and query on behalf of the message being
//! handled, schedule messages, and read its metadata. Also where a failed handler's message
//! goes next: a retry after its backoff, or the dead letters.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::item::{redeliver_ask, redeliver_event, Ask, Delivery, Parked, Payload, Reply};
use super::mailbox::{MailboxCore, QueueTx, Slot};
use super::Actor;
use crate::app::routing::Sender;
use crate::app::Shared;
use crate::delivery::{HandlerError, NewDeadLetter, Reason, RetryPolicy, Scheduled};
use crate::error::{Error, Result, TrySendError};
use crate::message::{Command, Envelope, Event, Message, MessageId, Metadata, Query};

/// Per-handler options from the handler's attribute (`#[subscribe(retry = 3, idempotent)]`).
/// Built by generated code as a `static`; its address identifies the subscription.
#[doc(hidden)]
#[derive(Debug)]
pub struct HandlerOptions {
    /// Overrides the actor's and the app's retry policy.
    pub retry: Option<RetryPolicy>,
    /// Skip message ids this subscriber already handled.
    pub idempotent: bool,
}

impl HandlerOptions {
    /// No options.
    pub const DEFAULT: HandlerOptions = HandlerOptions {
        retry: None,
        idempotent: false,
    };
}

/// How a command handler with a retry policy failed. Used by generated code.
#[doc(hidden)]
pub enum AskFailure<R> {
    /// It returned an `Err` reply (its text is `error`).
    Returned {
        /// The error's text.
        error: String,
        /// The reply, which goes to the sender if no retry follows.
        value: R,
    },
    /// It panicked.
    Panicked(String),
}

/// Tells an `Err` reply from an `Ok` one, for command handlers with a retry policy: a
/// `Result` reply with an `Err` is a failure; any other reply never is. Generated code calls
/// `(&ReplyProbe(&value)).failure()`, which resolves to [`FailedReply`] for `Result`s and to
/// [`NeverFails`] otherwise.
#[doc(hidden)]
pub struct ReplyProbe<'a, R>(pub &'a R);

/// See [`ReplyProbe`].
#[doc(hidden)]
pub trait FailedReply {
    /// The error's text, if the reply is an `Err`.
    fn failure(&self) -> Option<String>;
}

impl<T, E: std::fmt::Display> FailedReply for ReplyProbe<'_, std::result::Result<T, E>> {
    fn failure(&self) -> Option<String> {
        self.0.as_ref().err().map(|e| format!("{e:#}"))
    }
}

/// See [`ReplyProbe`].
#[doc(hidden)]
pub trait NeverFails {
    /// Never a failure.
    fn failure(&self) -> Option<String>;
}

impl<R> NeverFails for &ReplyProbe<'_, R> {
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Checks that a command whose handler retries can be kept for the retry.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` must be `Clone` for its handler to retry it",
    label = "not `Clone`",
    note = "a retried command is handled again from a copy: derive `Clone`, or drop `retry` from `#[handle]`"
)]
pub trait RetryableCommand: Clone {}
impl<C: Clone> RetryableCommand for C {}

/// A copy of a command kept for a retry.
#[doc(hidden)]
pub fn keep<C: RetryableCommand>(command: &C) -> C {
    command.clone()
}

/// The hash of an ordered subscription's key. Used by generated code, which passes the key
/// closure from `#[subscribe(ordered, key = ...)]` so its parameter type is inferred.
#[doc(hidden)]
pub fn sequence_key<E, K: std::hash::Hash>(key: impl Fn(&E) -> K, event: &E) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key(event))
}

/// The event being handled, kept so a failure can retry or dead-letter it.
struct Inflight {
    payload: Payload,
    attempt: u32,
    options: &'static HandlerOptions,
    /// The key hash of the `ordered` subscription's sequence the event belongs to (the
    /// subscription is `options`, by address).
    sequence_key: Option<u64>,
}

impl Inflight {
    /// The sequence of an `ordered` subscription the event belongs to.
    fn sequence(&self) -> Option<Sequence> {
        self.sequence_key
            .map(|key| (self.options as *const HandlerOptions as usize, key))
    }
}

/// One key of one ordered subscription: the handler's options (by address) and the key's hash.
type Sequence = (usize, u64);

/// A sequence whose head failed: later messages of the sequence wait behind it, in order.
struct Blocked<M> {
    head: MessageId,
    parked: VecDeque<M>,
}

/// What the generated code does with an event.
#[doc(hidden)]
pub enum Begin {
    /// Handle it.
    Run,
    /// An idempotent subscriber already handled this id.
    Skip,
    /// An earlier message of its sequence failed: keep it behind that one
    /// (`Context::__park`).
    Park,
}

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
    inflight: Option<Inflight>,
    /// Retry and ordering state, allocated on first need (see [`Rare`]).
    rare: Option<Box<Rare<A>>>,
    /// This actor's own queue, for command retries.
    self_tx: QueueTx<Slot<A::Mailbox>>,
    /// The message just handled was parked instead: it is not finished with yet.
    pub(crate) just_parked: bool,
    /// The handler succeeded but the event is not done with yet: the handler handed it to a
    /// task of its own (counted in the mailbox's `retrying`), which reports it done later (the
    /// bridge's outbound window, waiting for the broker's acknowledgement).
    pub(crate) completes_later: bool,
    _actor: PhantomData<fn() -> A>,
}

/// What only retries and ordered subscriptions use. Most actors never need it, and every
/// actor's task would carry it inline (some 200 bytes of every idle actor), so it lives
/// behind a box made on first need.
pub(crate) struct Rare<A: Actor> {
    /// The actor's own retry policy (from `ActorOptions`), before the app's.
    retry: Option<RetryPolicy>,
    /// When each message now waiting for a retry first failed.
    first_failures: HashMap<MessageId, SystemTime>,
    /// Sequences of ordered subscriptions whose head failed.
    blocked: HashMap<Sequence, Blocked<A::Mailbox>>,
    /// Messages released from a sequence, handled before the next mailbox message.
    ready: VecDeque<A::Mailbox>,
    /// When the handler panicked, within the supervision policy's window.
    pub(crate) panics: VecDeque<tokio::time::Instant>,
}

impl<A: Actor> Default for Rare<A> {
    fn default() -> Self {
        Self {
            retry: None,
            first_failures: HashMap::new(),
            blocked: HashMap::new(),
            ready: VecDeque::new(),
            panics: VecDeque::new(),
        }
    }
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        me: Arc<MailboxCore>,
        self_tx: QueueTx<Slot<A::Mailbox>>,
        retry: Option<RetryPolicy>,
    ) -> Self {
        Self {
            shared,
            me,
            meta: Metadata::new(),
            message: "",
            inflight: None,
            rare: retry.map(|retry| {
                Box::new(Rare {
                    retry: Some(retry),
                    ..Rare::default()
                })
            }),
            self_tx,
            just_parked: false,
            completes_later: false,
            _actor: PhantomData,
        }
    }

    pub(crate) fn rare(&mut self) -> &mut Rare<A> {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The actor's own retry policy.
    fn own_retry(&self) -> Option<&RetryPolicy> {
        self.rare.as_ref().and_then(|rare| rare.retry.as_ref())
    }

    fn first_failures(&self) -> Option<&HashMap<MessageId, SystemTime>> {
        self.rare
            .as_ref()
            .map(|rare| &rare.first_failures)
            .filter(|failures| !failures.is_empty())
    }

    fn blocked(&self, sequence: &Sequence) -> Option<&Blocked<A::Mailbox>> {
        self.rare.as_ref()?.blocked.get(sequence)
    }

    /// The next message released from a sequence, handled before anything newer.
    #[inline]
    pub(crate) fn next_ready(&mut self) -> Option<A::Mailbox> {
        self.rare.as_mut()?.ready.pop_front()
    }

    /// Every message released from a sequence and not handled yet (at the actor's end).
    pub(crate) fn take_ready(&mut self) -> VecDeque<A::Mailbox> {
        self.rare
            .as_mut()
            .map(|rare| std::mem::take(&mut rare.ready))
            .unwrap_or_default()
    }

    fn sender(&self) -> Sender<'_> {
        Sender {
            me: Some(&self.me),
            timeout: Some(self.shared.config.send_timeout),
        }
    }

    fn caused<M: Message>(&self, message: M) -> Envelope<M> {
        Envelope::with_meta(message, Metadata::caused_by(&self.meta))
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
        let env = self.caused(event);
        self.shared.routes.publish(env, self.sender()).await
    }

    /// [`publish`](Self::publish) with metadata of your own (for example events a repository
    /// stored with their ids, so a subscriber deduplicates them with what a relay delivers).
    pub async fn publish_envelope<E: Event>(&mut self, env: Envelope<E>) -> Result<()> {
        self.shared.routes.publish(env, self.sender()).await
    }

    /// Like [`publish`](Self::publish) but returns [`Error::Full`] (with the event) instead of
    /// waiting when a subscriber's mailbox is full.
    pub fn try_publish<E: Event>(&mut self, event: E) -> Result<(), TrySendError<E>> {
        let env = self.caused(event);
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
        let env = self.caused(command);
        let route = self.shared.routes.command::<C>()?;
        self.refuse_self::<C>(route.core(route.pick(&env.message)))?;
        self.shared.routes.ask(route, env, self.sender()).await
    }

    /// Sends a command caused by the current message without waiting for its reply.
    pub async fn tell<C: Command>(&mut self, command: C) -> Result<()> {
        let env = self.caused(command);
        let route = self.shared.routes.command::<C>()?;
        self.shared.routes.tell(route, env, self.sender()).await
    }

    /// Asks a query caused by the current message and waits for the answer (at most the send
    /// timeout).
    pub async fn query<Q: Query>(&mut self, query: Q) -> Result<Q::Reply> {
        let env = self.caused(query);
        let route = self.shared.routes.query::<Q>()?;
        self.refuse_self::<Q>(route.core(route.pick(&env.message)))?;
        self.shared.routes.ask(route, env, self.sender()).await
    }

    /// Publishes an event caused by the current message after `delay`. Cancel it with the
    /// returned handle.
    pub fn publish_after<E: Event>(&mut self, event: E, delay: Duration) -> Scheduled {
        let env = self.caused(event);
        self.shared
            .schedule_publish(env, tokio::time::Instant::now() + delay)
    }

    /// Sends a command caused by the current message after `delay`, without waiting for its
    /// reply. Cancel it with the returned handle.
    pub fn tell_after<C: Command>(&mut self, command: C, delay: Duration) -> Scheduled {
        let env = self.caused(command);
        self.shared
            .schedule_tell(env, tokio::time::Instant::now() + delay)
    }

    fn refuse_self<M: Message>(&self, to: &Arc<MailboxCore>) -> Result<()> {
        if Arc::ptr_eq(to, &self.me) {
            return Err(Error::SelfRequest {
                actor: A::NAME,
                message: M::NAME,
            });
        }
        Ok(())
    }

    /// Whether a successfully handled message needs [`settle`](Self::settle): an idempotent
    /// subscriber's id to remember, a sequence to release, a retry's first failure to forget.
    /// Plain successes skip the call.
    #[inline]
    pub(crate) fn needs_settling(&self) -> bool {
        self.inflight
            .as_ref()
            .is_some_and(|i| i.options.idempotent || i.sequence_key.is_some())
            || self.first_failures().is_some()
    }

    /// A plain success: lets go of the event kept for a retry.
    #[inline]
    pub(crate) fn settled(&mut self) {
        self.inflight = None;
    }

    /// Settles the message just handled: on success, remembers its id for an idempotent
    /// subscriber; on failure, schedules a retry after the backoff or dead-letters it.
    pub(crate) async fn settle(&mut self, outcome: std::result::Result<(), HandlerError>) {
        let inflight = self.inflight.take();
        let id = self.meta.id;
        let error = match outcome {
            Err(error) if error.settled => return,
            Ok(()) => {
                if let Some(inflight) = inflight {
                    if inflight.options.idempotent {
                        self.shared.processed.insert(A::NAME, id);
                        if let Some(durable) = &self.shared.durable {
                            if let Err(error) = durable.store.record_processed(A::NAME, id).await {
                                tracing::error!(%error, actor = A::NAME, %id, "processed id not written to the store");
                            }
                        }
                    }
                    if let Some(sequence) = inflight.sequence() {
                        self.release(sequence, id);
                    }
                }
                if self.first_failures().is_some() {
                    self.rare().first_failures.remove(&id);
                }
                return;
            }
            Err(error) => error,
        };
        let reason = if error.panicked() {
            Reason::Panicked
        } else {
            Reason::Failed
        };
        let Some(inflight) = inflight else {
            // A command or query: its sender has the error (or, after a panic, `NoReply`);
            // the message is recorded by its metadata.
            self.dead_letter(reason, error.message().to_owned(), None, None)
                .await;
            return;
        };
        let first = *self
            .rare()
            .first_failures
            .entry(id)
            .or_insert_with(SystemTime::now);
        if let Some(sequence) = inflight.sequence() {
            // Later messages of this sequence wait behind this one, through its retries and,
            // if it is dead-lettered, until it is retried from the dead letters.
            self.rare()
                .blocked
                .entry(sequence)
                .or_insert_with(|| Blocked {
                    head: id,
                    parked: VecDeque::new(),
                });
        }
        let policy = inflight.options.retry.as_ref().or(self.own_retry()).or(self
            .shared
            .config
            .retry
            .as_ref());
        match policy.and_then(|p| p.next_delay(inflight.attempt, &error).map(|d| (p, d))) {
            Some((policy, delay)) => {
                tracing::warn!(
                    actor = A::NAME,
                    message_name = self.message,
                    id = %id,
                    attempt = inflight.attempt,
                    max_attempts = policy.max_attempts(),
                    ?delay,
                    error = %error,
                    "handler failed; retrying after the backoff"
                );
                self.schedule_retry(inflight.payload, inflight.attempt + 1, delay);
            }
            None => {
                self.rare().first_failures.remove(&id);
                tracing::error!(
                    actor = A::NAME,
                    message_name = self.message,
                    id = %id,
                    attempts = inflight.attempt,
                    error = %error,
                    "handler failed; message dead-lettered"
                );
                self.dead_letter(
                    reason,
                    error.message().to_owned(),
                    Some(inflight.payload),
                    Some(first),
                )
                .await;
            }
        }
    }

    /// Puts `msg` back into this actor's own queue after `delay` (no room taken: it was
    /// accepted once). Counted as pending until then; the shutdown deadline cuts it short and
    /// the message goes to the dead letters.
    fn schedule_own(&self, msg: A::Mailbox, delay: Duration) {
        let shared = self.shared.clone();
        let me = self.me.clone();
        let tx = self.self_tx.clone();
        let counters = me.counters();
        counters.retried.fetch_add(1, Ordering::Relaxed);
        counters.retrying.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shared.abandoned() => {}
            }
            let rejected = if shared.is_abandoned() {
                Some((msg, Reason::Shutdown))
            } else {
                me.count_unreserved();
                match tx.send(Slot::Msg {
                    msg,
                    reserved: false,
                }) {
                    Ok(()) => None,
                    Err(slot) => {
                        me.uncount_unreserved();
                        match slot {
                            Slot::Msg { msg, .. } => Some((msg, Reason::Stopped)),
                            Slot::Stop => None,
                        }
                    }
                }
            };
            if let Some((msg, reason)) = rejected {
                let error = Error::Stopped {
                    actor: A::NAME,
                    message: A::__describe(&msg).0,
                };
                let text = format!("retry not delivered: {error}");
                let (message, meta, payload) = A::__reject(msg, error);
                me.counters().dead_lettered.fetch_add(1, Ordering::Relaxed);
                shared
                    .dead_letter(NewDeadLetter {
                        actor: A::NAME,
                        message,
                        meta,
                        reason,
                        error: text,
                        first_failure: None,
                        target: payload.as_ref().map(|_| me.clone()),
                        payload,
                        stored: false,
                    })
                    .await;
            }
            me.counters().retrying.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// The head of `sequence` succeeded: what waited behind it is handled next, in order.
    fn release(&mut self, sequence: Sequence, id: MessageId) {
        if self.blocked(&sequence).is_some_and(|b| b.head == id) {
            let blocked = self.rare().blocked.remove(&sequence).expect("checked");
            self.me
                .parked
                .fetch_sub(blocked.parked.len() as u64, Ordering::SeqCst);
            self.me
                .ready
                .fetch_add(blocked.parked.len() as u64, Ordering::SeqCst);
            self.rare().ready.extend(blocked.parked);
        }
    }

    /// Everything still parked behind a failed head (at the actor's end).
    pub(crate) fn take_parked(&mut self) -> Vec<A::Mailbox> {
        let parked: Vec<_> = match &mut self.rare {
            Some(rare) => rare.blocked.drain().flat_map(|(_, b)| b.parked).collect(),
            None => Vec::new(),
        };
        self.me
            .parked
            .fetch_sub(parked.len() as u64, Ordering::SeqCst);
        parked
    }

    /// Puts the message back into this actor's mailbox after `delay`, without taking room
    /// (it was accepted once already). Counted as pending, so shutdown waits for it; the
    /// shutdown deadline cuts the wait short and the message goes to the dead letters.
    fn schedule_retry(&self, payload: Payload, attempt: u32, delay: Duration) {
        let shared = self.shared.clone();
        let me = self.me.clone();
        let counters = me.counters();
        counters.retried.fetch_add(1, Ordering::Relaxed);
        counters.retrying.fetch_add(1, Ordering::SeqCst);
        let meta = {
            let mut meta = self.meta.clone();
            meta.attempt = attempt;
            meta
        };
        let message = self.message;
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shared.abandoned() => {}
            }
            let pushed = if shared.is_abandoned() {
                Err(Error::ShuttingDown { message })
            } else {
                (payload.redeliver)(&shared.routes, &me, payload.value.clone(), attempt, false)
            };
            if let Err(e) = pushed {
                me.counters().dead_lettered.fetch_add(1, Ordering::Relaxed);
                let reason = if shared.is_abandoned() {
                    Reason::Shutdown
                } else {
                    Reason::Stopped
                };
                shared
                    .dead_letter(NewDeadLetter {
                        actor: me.actor,
                        message,
                        meta,
                        reason,
                        error: format!("retry not delivered: {e}"),
                        first_failure: None,
                        payload: Some(payload),
                        target: Some(me.clone()),
                        stored: false,
                    })
                    .await;
            }
            me.counters().retrying.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// Dead-letters the message whose handler shutdown dropped.
    pub(crate) async fn abandon_current(&mut self) {
        let payload = self.inflight.take().map(|inflight| inflight.payload);
        self.dead_letter(
            Reason::Shutdown,
            "handler dropped: still running after the shutdown deadline".to_owned(),
            payload,
            None,
        )
        .await;
    }

    async fn dead_letter(
        &mut self,
        reason: Reason,
        error: String,
        payload: Option<Payload>,
        first: Option<SystemTime>,
    ) {
        let target = payload.as_ref().map(|_| self.me.clone());
        self.me
            .counters()
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed);
        self.shared
            .dead_letter(NewDeadLetter {
                actor: A::NAME,
                message: self.message,
                meta: self.meta.clone(),
                reason,
                error,
                first_failure: first,
                payload,
                target,
                stored: false,
            })
            .await;
    }
}

/// Hooks the generated `__handle` calls around each handler.
#[doc(hidden)]
impl<A: Actor> Context<A> {
    /// Starts handling a command or query: takes its metadata, returns payload and reply.
    #[inline]
    pub fn __begin_ask<M: Message, R>(&mut self, ask: Ask<M, R>) -> (M, Reply<R>) {
        self.meta = ask.env.meta;
        self.message = M::NAME;
        self.inflight = None;
        (ask.env.message, ask.reply)
    }

    /// Starts handling an event: copies its metadata and keeps it for a retry or the dead
    /// letters. `key` is the hash of its sequence key for an `ordered` subscription.
    #[inline]
    pub fn __begin_event<E: Event>(
        &mut self,
        delivery: &Delivery<E>,
        options: &'static HandlerOptions,
        key: Option<u64>,
    ) -> Begin {
        self.meta.clone_from(&delivery.env.meta);
        self.meta.attempt = delivery.attempt;
        self.message = E::NAME;
        self.inflight = None;
        if options.idempotent && self.shared.processed.contains(A::NAME, self.meta.id) {
            tracing::debug!(actor = A::NAME, message_name = E::NAME, id = %self.meta.id, "already handled; skipped");
            return Begin::Skip;
        }
        let sequence = key.map(|key| (options as *const HandlerOptions as usize, key));
        if let Some(sequence) = sequence {
            if self
                .blocked(&sequence)
                .is_some_and(|b| b.head != self.meta.id)
            {
                return Begin::Park;
            }
        }
        self.inflight = Some(Inflight {
            payload: Payload {
                value: delivery.env.clone(),
                redeliver: redeliver_event::<E>,
            },
            attempt: delivery.attempt,
            options,
            sequence_key: key,
        });
        Begin::Run
    }

    /// A command handler with a retry policy failed (returned `Err` or panicked): retries it
    /// after the backoff with the same reply slot, or dead-letters it and answers the sender
    /// (with the handler's own `Err`, or `Error::DeadLettered` after a panic).
    pub fn __ask_failed<C: Command>(
        &mut self,
        failure: AskFailure<C::Reply>,
        command: C,
        reply: Reply<C::Reply>,
        attempt: u32,
        options: &'static HandlerOptions,
        wrap: fn(Ask<C, C::Reply>) -> A::Mailbox,
    ) -> std::result::Result<(), HandlerError> {
        let (error, panicked) = match &failure {
            AskFailure::Returned { error, .. } => (HandlerError::text(error.clone()), false),
            AskFailure::Panicked(text) => (HandlerError::panic(text.clone()), true),
        };
        let policy = options.retry.as_ref().or(self.own_retry()).or(self
            .shared
            .config
            .retry
            .as_ref());
        let mut meta = self.meta.clone();
        if let Some(delay) = policy.and_then(|p| p.next_delay(attempt, &error)) {
            tracing::warn!(actor = A::NAME, message_name = C::NAME, id = %meta.id, attempt, ?delay, error = %error, "command handler failed; retrying after the backoff");
            meta.attempt = attempt + 1;
            let msg = wrap(Ask {
                env: Envelope::with_meta(command, meta),
                reply,
            });
            self.schedule_own(msg, delay);
        } else {
            tracing::error!(actor = A::NAME, message_name = C::NAME, id = %meta.id, attempts = attempt, error = %error, "command handler failed; dead-lettered");
            meta.attempt = attempt;
            let text = error.message().to_owned();
            let payload = Payload {
                value: Arc::new(Parked::new(Envelope::with_meta(command, meta.clone()))),
                redeliver: redeliver_ask::<C, C::Reply>,
            };
            match failure {
                AskFailure::Returned { value, .. } => reply.send(value),
                AskFailure::Panicked(_) => reply.fail(Error::DeadLettered {
                    actor: A::NAME,
                    message: C::NAME,
                    attempts: attempt,
                    error: text.clone(),
                }),
            }
            let letter = NewDeadLetter {
                actor: A::NAME,
                message: C::NAME,
                meta,
                reason: if panicked {
                    Reason::Panicked
                } else {
                    Reason::Failed
                },
                error: text,
                first_failure: None,
                payload: Some(payload),
                target: Some(self.me.clone()),
                stored: false,
            };
            if let Some(crossed) = self.shared.dead_letters.push(letter) {
                self.shared.threshold_crossed(crossed);
            }
        }
        if panicked {
            let mut settled = error;
            settled.settled = true;
            return Err(settled);
        }
        Ok(())
    }

    /// Keeps a message behind the failed head of its sequence (after `Begin::Park`).
    pub fn __park(&mut self, msg: A::Mailbox, key: u64, options: &'static HandlerOptions) {
        let sequence = (options as *const HandlerOptions as usize, key);
        if let Some(blocked) = self
            .rare
            .as_mut()
            .and_then(|r| r.blocked.get_mut(&sequence))
        {
            self.just_parked = true;
            tracing::debug!(actor = A::NAME, message_name = self.message, id = %self.meta.id, "parked behind a failed message of its sequence");
            self.me.parked.fetch_add(1, Ordering::SeqCst);
            blocked.parked.push_back(msg);
        }
    }
}
