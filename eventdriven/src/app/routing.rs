//! The routing table, built once by `build()`, and the delivery paths every send goes through.

use std::any::{Any, TypeId};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, TryAcquireError};
use tokio::time::Instant;

use crate::actor::item::{redeliver_event, Payload};
pub(crate) use crate::actor::item::{Ask, Delivery, Reply, ReplyFuture};
use crate::actor::mailbox::{Deliver, MailboxCore, Routed};
use crate::delivery::{DeadLetters, NewDeadLetter, Reason};
use crate::error::{Error, Result, TrySendError};
use crate::message::{Command, Envelope, Event, Message, Query};

/// Who sends: the actor whose handler sends (to recognise messages to itself), and how long
/// it may wait.
#[derive(Clone, Copy)]
pub(crate) struct Sender<'a> {
    pub(crate) me: Option<&'a Arc<MailboxCore>>,
    pub(crate) timeout: Option<Duration>,
}

impl Sender<'_> {
    pub(crate) const OUTSIDE: Sender<'static> = Sender {
        me: None,
        timeout: None,
    };

    fn is_me(&self, core: &Arc<MailboxCore>) -> bool {
        self.me.is_some_and(|me| Arc::ptr_eq(me, core))
    }
}

pub(crate) type Recipient<M> = Arc<dyn Deliver<M>>;
type AskRecipient<M, R> = Recipient<Ask<M, R>>;
type Subscribers<E> = Vec<Recipient<Delivery<E>>>;

/// `TypeId` is already a hash; hashing it again with SipHash costs more than the lookup.
#[derive(Default)]
pub(crate) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type TypeMap<V> = HashMap<TypeId, V, BuildHasherDefault<TypeIdHasher>>;

struct Single {
    actor: &'static str,
    /// An `AskRecipient<M, M::Reply>`.
    recipient: Box<dyn Any + Send + Sync>,
}

/// Message type to recipients, immutable after `build()`.
#[derive(Default)]
pub(crate) struct RouteTable {
    /// Where a message goes that could not be delivered after it was accepted.
    pub(crate) dead_letters: Arc<DeadLetters>,
    /// Events whose handling someone (the relay) waits for.
    pub(crate) completions: crate::delivery::completion::Completions,
    commands: TypeMap<Single>,
    queries: TypeMap<Single>,
    /// `Subscribers<E>` per event type.
    events: TypeMap<Box<dyn Any + Send + Sync>>,
    /// `Validator<E>` per event type that has one (`AppBuilder::validate`).
    validators: TypeMap<Box<dyn Any + Send + Sync>>,
}

/// An event type's validation hook.
pub(crate) type Validator<E> = Arc<dyn Fn(&E) -> std::result::Result<(), String> + Send + Sync>;

/// Fills a [`RouteTable`] and collects the errors found on the way.
#[derive(Default)]
pub(crate) struct TableBuilder {
    pub(crate) table: RouteTable,
    pub(crate) errors: Vec<Error>,
    /// How each subscribed event type that serde can store is stored.
    pub(crate) codecs: crate::delivery::durable::Codecs,
    /// The names of the checkpointed streams, which must differ.
    pub(crate) checkpoints: std::collections::HashSet<std::sync::Arc<str>>,
}

impl TableBuilder {
    /// Adds a validation hook for `E`; a second one for the same type runs after the first.
    pub(crate) fn validator<E: Event>(&mut self, check: Validator<E>) {
        let check = match self.table.validators.remove(&TypeId::of::<E>()) {
            Some(first) => {
                let first = first
                    .downcast::<Validator<E>>()
                    .expect("the validator map holds Validator<E> under TypeId::of::<E>()");
                Arc::new(move |event: &E| {
                    first(event)?;
                    check(event)
                }) as Validator<E>
            }
            None => check,
        };
        self.table
            .validators
            .insert(TypeId::of::<E>(), Box::new(check));
    }

    fn single<M: Message, R: 'static>(
        map: &mut TypeMap<Single>,
        errors: &mut Vec<Error>,
        actor: &'static str,
        recipient: AskRecipient<M, R>,
    ) {
        match map.entry(TypeId::of::<M>()) {
            Entry::Occupied(first) => errors.push(Error::DuplicateHandler {
                message: M::NAME,
                first: first.get().actor,
                second: actor,
            }),
            Entry::Vacant(slot) => {
                slot.insert(Single {
                    actor,
                    recipient: Box::new(recipient),
                });
            }
        }
    }

    pub(crate) fn command<C: Command>(
        &mut self,
        actor: &'static str,
        recipient: AskRecipient<C, C::Reply>,
    ) {
        Self::single(&mut self.table.commands, &mut self.errors, actor, recipient);
    }

    pub(crate) fn query<Q: Query>(
        &mut self,
        actor: &'static str,
        recipient: AskRecipient<Q, Q::Reply>,
    ) {
        Self::single(&mut self.table.queries, &mut self.errors, actor, recipient);
    }

    pub(crate) fn event<E: Event>(&mut self, recipient: Recipient<Delivery<E>>) {
        self.table
            .events
            .entry(TypeId::of::<E>())
            .or_insert_with(|| Box::new(Subscribers::<E>::new()))
            .downcast_mut::<Subscribers<E>>()
            .expect("the event map holds Subscribers<E> under TypeId::of::<E>()")
            .push(recipient);
    }
}

impl RouteTable {
    fn single<M: Message, R: 'static>(map: &TypeMap<Single>) -> Result<&AskRecipient<M, R>> {
        map.get(&TypeId::of::<M>())
            .map(|single| {
                single
                    .recipient
                    .downcast_ref::<AskRecipient<M, R>>()
                    .expect("the map holds AskRecipient<M, R> under TypeId::of::<M>()")
            })
            .ok_or(Error::NoHandler { message: M::NAME })
    }

    /// The handler of command `C`.
    #[inline]
    pub(crate) fn command<C: Command>(&self) -> Result<&AskRecipient<C, C::Reply>> {
        Self::single::<C, C::Reply>(&self.commands)
    }

    /// The handler of query `Q`.
    #[inline]
    pub(crate) fn query<Q: Query>(&self) -> Result<&AskRecipient<Q, Q::Reply>> {
        Self::single::<Q, Q::Reply>(&self.queries)
    }

    /// The handler of `M` (a command or a query) as a recipient of `Ask<M, R>`.
    pub(crate) fn ask_port<M: Message, R: 'static>(&self) -> Option<&AskRecipient<M, R>> {
        Self::single::<M, R>(&self.commands)
            .or_else(|_| Self::single::<M, R>(&self.queries))
            .ok()
    }

    /// The port through which `to` receives events of type `E`, and `to`'s index in it.
    pub(crate) fn subscriber_port<E: Event>(
        &self,
        to: &Arc<MailboxCore>,
    ) -> Option<(&Recipient<Delivery<E>>, usize)> {
        self.subscribers::<E>()
            .iter()
            .find_map(|sub| sub.index_of(to).map(|index| (sub, index)))
    }

    #[inline]
    /// How many deliveries a publish of `E` makes (a pool counts once).
    pub(crate) fn subscriber_count<E: Event>(&self) -> usize {
        self.subscribers::<E>().len()
    }

    /// Runs `E`'s validation hook, if it has one.
    #[cold]
    pub(crate) fn validate<E: Event>(&self, event: &E) -> Result<()> {
        let Some(check) = self.validators.get(&TypeId::of::<E>()) else {
            return Ok(());
        };
        let check = check
            .downcast_ref::<Validator<E>>()
            .expect("the validator map holds Validator<E> under TypeId::of::<E>()");
        check(event).map_err(|reason| Error::Invalid {
            message: E::NAME,
            reason,
        })
    }

    pub(crate) fn subscribers<E: Event>(&self) -> &[Recipient<Delivery<E>>] {
        self.events
            .get(&TypeId::of::<E>())
            .map(|subs| {
                subs.downcast_ref::<Subscribers<E>>()
                    .expect("the event map holds Subscribers<E> under TypeId::of::<E>()")
                    .as_slice()
            })
            .unwrap_or(&[])
    }

    /// Sends a request and waits for its reply; `from.timeout` bounds room and reply together.
    pub(crate) async fn ask<M: Message, R: Send + 'static>(
        &self,
        to: &AskRecipient<M, R>,
        mut env: Envelope<M>,
        from: Sender<'_>,
    ) -> Result<R> {
        env.meta.apply_ttl::<M>();
        let (tx, rx) = oneshot::channel();
        let ask = Ask {
            env,
            reply: Reply::To(tx),
        };
        let mut deadline = None;
        deliver(to, ask, M::NAME, from, &mut deadline).await?;
        let reply = ReplyFuture {
            rx,
            actor: to.actor(),
            message: M::NAME,
        };
        match from.timeout {
            None => reply.await,
            Some(timeout) => {
                let at = deadline.map_or_else(|| Instant::now() + timeout, |(at, _)| at);
                tokio::time::timeout_at(at, reply)
                    .await
                    .map_err(|_| Error::Timeout {
                        actor: to.actor(),
                        message: M::NAME,
                        timeout,
                    })?
            }
        }
    }

    /// Sends a request whose reply nobody waits for.
    pub(crate) async fn tell<M: Message, R: Send + 'static>(
        &self,
        to: &AskRecipient<M, R>,
        mut env: Envelope<M>,
        from: Sender<'_>,
    ) -> Result<()> {
        env.meta.apply_ttl::<M>();
        let ask = Ask {
            env,
            reply: Reply::Ignore,
        };
        deliver(to, ask, M::NAME, from, &mut None).await
    }

    /// Delivers a request if there is room now; the reply comes through the returned future.
    pub(crate) fn try_ask<M: Message, R: Send + 'static>(
        &self,
        to: &AskRecipient<M, R>,
        mut env: Envelope<M>,
        from: Sender<'_>,
    ) -> Result<ReplyFuture<R>, TrySendError<M>> {
        env.meta.apply_ttl::<M>();
        let (tx, rx) = oneshot::channel();
        let ask = Ask {
            env,
            reply: Reply::To(tx),
        };
        try_deliver_one(to, ask, M::NAME, from).map_err(|e| TrySendError {
            message: e.message.env.message,
            error: e.error,
        })?;
        Ok(ReplyFuture {
            rx,
            actor: to.actor(),
            message: M::NAME,
        })
    }

    /// Delivers a request with no reply if there is room now.
    pub(crate) fn try_tell<M: Message, R: Send + 'static>(
        &self,
        to: &AskRecipient<M, R>,
        mut env: Envelope<M>,
        from: Sender<'_>,
    ) -> Result<(), TrySendError<M>> {
        env.meta.apply_ttl::<M>();
        let ask = Ask {
            env,
            reply: Reply::Ignore,
        };
        try_deliver_one(to, ask, M::NAME, from).map_err(|e| TrySendError {
            message: e.message.env.message,
            error: e.error,
        })
    }

    /// Publishes to every subscriber: room is reserved in all their mailboxes before any
    /// receives the event, so a publish is all-or-nothing. Tries without waiting first; only
    /// when a mailbox is full does it reserve again, waiting.
    pub(crate) async fn publish<E: Event>(&self, env: Envelope<E>, from: Sender<'_>) -> Result<()> {
        match self.try_publish(env, from) {
            Ok(()) => Ok(()),
            Err(TrySendError {
                message,
                error: Error::Full { .. },
            }) => self.publish_waiting(message, from).await,
            Err(e) => Err(e.error),
        }
    }

    async fn publish_waiting<E: Event>(&self, env: Envelope<E>, from: Sender<'_>) -> Result<()> {
        let subs = self.subscribers::<E>();
        let mut held = Reservation::new(subs, from);
        let mut deadline = None;
        for sub in subs {
            let index = sub.pick(&env.message);
            let core = sub.core(index);
            if !from.is_me(core) {
                match core.room.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(TryAcquireError::Closed) => return Err(stopped::<E>(core)),
                    Err(TryAcquireError::NoPermits) => {
                        let deadline = *deadline
                            .get_or_insert_with(|| from.timeout.map(|t| (Instant::now() + t, t)));
                        wait_for_room(core, E::NAME, deadline).await?;
                    }
                }
            }
            held.add(index);
        }
        held.commit(env, &self.dead_letters, &self.completions);
        Ok(())
    }

    /// Publishes if every subscriber has room now; otherwise delivers to none and hands the
    /// envelope back with [`Error::Full`].
    // The large `Err` is the envelope handed back by value: boxing it would allocate on the
    // path that exists to avoid waiting.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_publish<E: Event>(
        &self,
        mut env: Envelope<E>,
        from: Sender<'_>,
    ) -> Result<(), TrySendError<Envelope<E>>> {
        env.meta.apply_ttl::<E>();
        if !self.validators.is_empty() {
            if let Err(error) = self.validate(&env.message) {
                return Err(TrySendError {
                    message: env,
                    error,
                });
            }
        }
        let subs = self.subscribers::<E>();
        let mut held = Reservation::new(subs, from);
        for sub in subs {
            let index = sub.pick(&env.message);
            let core = sub.core(index);
            if !from.is_me(core) {
                if let Err(e) = core.room.try_acquire().map(|permit| permit.forget()) {
                    let error = match e {
                        TryAcquireError::Closed => stopped::<E>(core),
                        TryAcquireError::NoPermits => Error::Full {
                            actor: core.actor,
                            message: E::NAME,
                        },
                    };
                    // Dropping `held` returns the room taken so far.
                    return Err(TrySendError {
                        message: env,
                        error,
                    });
                }
            }
            held.add(index);
        }
        held.commit(env, &self.dead_letters, &self.completions);
        Ok(())
    }
}

fn stopped<M: Message>(core: &MailboxCore) -> Error {
    Error::Stopped {
        actor: core.actor,
        message: M::NAME,
    }
}

/// Waits for a slot of room in `core`'s mailbox until `deadline` (forever without one).
async fn wait_for_room(
    core: &MailboxCore,
    message: &'static str,
    deadline: Option<(Instant, Duration)>,
) -> Result<()> {
    let acquire = core.room.acquire();
    let permit = match deadline {
        None => acquire.await,
        Some((at, timeout)) => {
            tokio::time::timeout_at(at, acquire)
                .await
                .map_err(|_| Error::Timeout {
                    actor: core.actor,
                    message,
                    timeout,
                })?
        }
    };
    permit
        .map_err(|_| Error::Stopped {
            actor: core.actor,
            message,
        })?
        .forget();
    Ok(())
}

/// Delivers to one recipient: at once if there is room (none is needed in the sender's own
/// mailbox), otherwise after waiting for it until the deadline, which is set on first need.
#[inline]
async fn deliver<M: Routed>(
    to: &Recipient<M>,
    msg: M,
    name: &'static str,
    from: Sender<'_>,
    deadline: &mut Option<(Instant, Duration)>,
) -> Result<()> {
    let msg = match try_deliver_one(to, msg, name, from) {
        Ok(()) => return Ok(()),
        Err(TrySendError {
            message,
            error: Error::Full { .. },
        }) => message,
        Err(e) => return Err(e.error),
    };
    let index = to.pick(msg.payload());
    let core = to.core(index);
    if deadline.is_none() {
        *deadline = from.timeout.map(|t| (Instant::now() + t, t));
    }
    wait_for_room(core, name, *deadline).await?;
    to.push(index, msg, true).map_err(|_| Error::Stopped {
        actor: core.actor,
        message: name,
    })
}

/// Delivers to one recipient if it has room now, handing the message back otherwise.
#[inline]
fn try_deliver_one<M: Routed>(
    to: &Recipient<M>,
    msg: M,
    name: &'static str,
    from: Sender<'_>,
) -> Result<(), TrySendError<M>> {
    let index = to.pick(msg.payload());
    let core = to.core(index);
    let reserved = !from.is_me(core);
    if reserved {
        if let Err(e) = core.room.try_acquire().map(|permit| permit.forget()) {
            let error = match e {
                TryAcquireError::Closed => Error::Stopped {
                    actor: core.actor,
                    message: name,
                },
                TryAcquireError::NoPermits => Error::Full {
                    actor: core.actor,
                    message: name,
                },
            };
            return Err(TrySendError {
                message: msg,
                error,
            });
        }
    }
    to.push(index, msg, reserved)
        .map_err(|message| TrySendError {
            message,
            error: Error::Stopped {
                actor: core.actor,
                message: name,
            },
        })
}

/// The mailbox picked in each subscriber so far. Inline for the usual handful of
/// subscribers, so a publish allocates nothing but the shared event.
struct Picks {
    inline: [u32; 16],
    spill: Vec<u32>,
    len: usize,
}

impl Picks {
    fn new() -> Self {
        Self {
            inline: [0; 16],
            spill: Vec::new(),
            len: 0,
        }
    }

    fn push(&mut self, index: usize) {
        let index = u32::try_from(index).expect("fewer than 2^32 pool members");
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = index,
            None => self.spill.push(index),
        }
        self.len += 1;
    }

    fn get(&self, n: usize) -> usize {
        let index = match self.inline.get(n) {
            Some(index) => *index,
            None => self.spill[n - self.inline.len()],
        };
        index as usize
    }
}

/// Room reserved in the first `picks.len` subscribers' mailboxes; returned on drop unless
/// the event was delivered. Makes fan-out all-or-nothing, also when the publishing future is
/// cancelled or times out half-way.
struct Reservation<'a, E> {
    subs: &'a [Recipient<Delivery<E>>],
    from: Sender<'a>,
    picks: Picks,
}

impl<'a, E: Event> Reservation<'a, E> {
    fn new(subs: &'a [Recipient<Delivery<E>>], from: Sender<'a>) -> Self {
        Self {
            subs,
            from,
            picks: Picks::new(),
        }
    }

    fn add(&mut self, index: usize) {
        self.picks.push(index);
    }

    /// Delivers the event to every subscriber; room is reserved in all of them.
    fn commit(
        mut self,
        env: Envelope<E>,
        dead_letters: &DeadLetters,
        completions: &crate::delivery::completion::Completions,
    ) {
        debug_assert_eq!(self.picks.len, self.subs.len());
        let picks = std::mem::replace(&mut self.picks, Picks::new());
        let shared = Arc::new(env);
        for (n, sub) in self.subs.iter().enumerate() {
            let index = picks.get(n);
            let delivery = Delivery {
                env: shared.clone(),
                attempt: 1,
            };
            let reserved = !self.from.is_me(sub.core(index));
            if let Err(Delivery { env: event, .. }) = sub.push(index, delivery, reserved) {
                // Only an actor that stopped between our reservation and the push refuses;
                // the others still get the event, and this one's copy is not lost.
                let core = sub.core(index);
                tracing::error!(
                    actor = core.actor,
                    message_name = E::NAME,
                    "subscriber stopped during publish; dead-lettered"
                );
                completions.done(event.meta.id);
                dead_letters.push(NewDeadLetter {
                    actor: core.actor,
                    message: E::NAME,
                    meta: event.meta.clone(),
                    reason: Reason::Stopped,
                    error: "subscriber stopped during publish".to_owned(),
                    first_failure: None,
                    payload: Some(Payload {
                        value: event,
                        redeliver: redeliver_event::<E>,
                    }),
                    target: Some(core.clone()),
                    stored: false,
                });
            }
        }
    }
}

impl<E> Drop for Reservation<'_, E> {
    fn drop(&mut self) {
        for n in 0..self.picks.len {
            let core = self.subs[n].core(self.picks.get(n));
            if !self.from.is_me(core) {
                core.room.add_permits(1);
            }
        }
    }
}
