//! The bounded mailbox: a semaphore of free slots in front of a FIFO queue.
//!
//! Splitting room (the semaphore) from the queue lets a publisher reserve room in every
//! subscriber's mailbox before it delivers to any (all-or-nothing fan-out), and lets the room
//! be reserved through a type-erased handle while the queue itself holds the actor's own
//! generated message enum, so a message sits in the mailbox inline, without a `Box`.
//!
//! The queue is two buffers behind one lock ([`Queue`]): senders push onto the shared one, and
//! the actor swaps the whole of it for its own emptied one when it runs out, so the actor
//! takes the lock once per batch rather than once per message, and a sender wakes the actor
//! only when the actor is actually waiting. Nothing is allocated until the first message, and
//! the two buffers are reused from then on.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use once_cell::race::OnceBox;
use tokio::sync::Semaphore;

use super::Actor;
use crate::observe::Counters;

/// A mailbox's configuration: how many messages may wait in it.
///
/// ```
/// use eventdriven::Mailbox;
///
/// assert_eq!(Mailbox::default().capacity(), 1024);
/// assert_eq!(Mailbox::bounded(64).capacity(), 64);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mailbox {
    capacity: usize,
}

impl Mailbox {
    /// The capacity of `Mailbox::default()`.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A mailbox that holds at most `capacity` waiting messages; senders wait (or `try_*`
    /// returns `Full`) beyond that. `build()` rejects a capacity of 0.
    pub const fn bounded(capacity: usize) -> Self {
        Self { capacity }
    }

    /// The configured capacity.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::bounded(Self::DEFAULT_CAPACITY)
    }
}

/// The actor's own counters.
struct Own {
    /// Messages taken out of the mailbox and handled (or rejected): activity, for shutdown.
    done: AtomicU64,
    /// Between taking a message out and finishing with it.
    busy: AtomicBool,
    /// The actor's task has ended.
    stopped: AtomicBool,
    /// The largest queue length the actor has seen.
    peak: AtomicUsize,
    /// Messages taken out with room whose room is not given back yet: the actor returns room
    /// in batches (see [`MailboxCore::release_taken`]).
    taken: AtomicUsize,
    /// Handler panics.
    panics: AtomicU64,
    /// Set by shutdown when a handler outlived the deadline and its grace: the actor drops
    /// the handler's future at its next poll and dead-letters what is left.
    abort: AtomicBool,
    /// The actor task's waker while a handler is pending, so `abort` can reach it.
    waker: Mutex<Option<Waker>>,
}

/// The part of a mailbox every sender shares, whatever the actor's message type.
///
/// Laid out in this order (`repr(C)`) so that what senders write (`room`) and what the actor
/// writes per message (`own`) never share a cache line: 64 bytes of fields that change rarely
/// sit between them. A gap rather than an alignment: a 128-byte-aligned field would also align
/// the `Arc` around the core, costing every actor 128 bytes of padding before it.
#[repr(C)]
pub(crate) struct MailboxCore {
    /// Free slots. A sender takes one before it pushes; the actor gives it back in groups.
    pub(crate) room: Semaphore,
    pub(crate) actor: &'static str,
    pub(crate) capacity: usize,
    /// Messages pushed without taking room (a handler's message to its own actor, retries),
    /// and how many of them the actor has taken out; rare, so off the hot lines.
    unreserved_in: AtomicU64,
    unreserved_out: AtomicU64,
    /// Failures, retries, dead letters and latency: made on first need (one pointer until
    /// then).
    counters: OnceBox<Counters>,
    /// Messages of ordered subscriptions parked behind a failed one.
    pub(crate) parked: AtomicU64,
    /// Messages released from a sequence and not yet handled.
    pub(crate) ready: AtomicU64,
    /// What only the actor's task writes (or others rarely: shutdown's `abort`).
    own: Own,
}

impl MailboxCore {
    pub(crate) fn new(actor: &'static str, capacity: usize) -> Self {
        Self {
            actor,
            capacity,
            room: Semaphore::new(capacity),
            own: Own {
                done: AtomicU64::new(0),
                busy: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                peak: AtomicUsize::new(0),
                taken: AtomicUsize::new(0),
                panics: AtomicU64::new(0),
                abort: AtomicBool::new(false),
                waker: Mutex::new(None),
            },
            unreserved_in: AtomicU64::new(0),
            unreserved_out: AtomicU64::new(0),
            counters: OnceBox::new(),
            parked: AtomicU64::new(0),
            ready: AtomicU64::new(0),
        }
    }

    /// Messages waiting, counting room reserved by a sender that has not pushed yet.
    pub(crate) fn len(&self) -> usize {
        self.capacity.saturating_sub(self.room.available_permits())
    }

    pub(crate) fn peak(&self) -> usize {
        self.own.peak.load(Ordering::Relaxed)
    }

    /// Messages waiting to be taken out: [`len`](Self::len) without those the actor took and
    /// has not given the room of back yet. A gauge for stats; `owed` counts with `len`, which
    /// never misses a message.
    pub(crate) fn queued(&self) -> usize {
        self.len()
            .saturating_sub(self.own.taken.load(Ordering::Relaxed))
    }

    /// Gives back the room of the messages taken out since the last call.
    ///
    /// Returning room costs a lock of the semaphore's waiter list, and wakes a sender waiting
    /// for it; doing it once per batch instead of once per message is what lets a sender that
    /// fills the mailbox push many messages per wake-up rather than one. The room is held a
    /// little longer (never past the actor's next wait: the inbox calls this before it waits
    /// for messages, and the handler guard before a handler's future waits), so the bound only
    /// gets stricter.
    #[inline]
    pub(crate) fn release_taken(&self) {
        let taken = self.own.taken.load(Ordering::Relaxed);
        if taken > 0 {
            self.own.taken.store(0, Ordering::Relaxed);
            self.room.add_permits(taken);
        }
    }

    /// Room is returned once this many messages were taken (see [`RELEASE_EVERY`]).
    /// Computed rather than stored: every idle actor's task would carry the field.
    #[inline]
    fn release_every(&self) -> usize {
        (self.capacity / 4).clamp(1, RELEASE_EVERY)
    }

    /// Messages accepted and not yet finished with: queued (counting room reserved by a
    /// sender that has not pushed yet), in the handler, or waiting for a retry.
    pub(crate) fn owed(&self) -> u64 {
        if self.own.stopped.load(Ordering::SeqCst) {
            return 0;
        }
        // Room first, then `busy`: the actor sets `busy` before it gives the room back, so a
        // message is always seen in one of the two.
        let queued = self.len() as u64;
        let busy = u64::from(self.own.busy.load(Ordering::SeqCst));
        let unreserved = self
            .unreserved_in
            .load(Ordering::SeqCst)
            .saturating_sub(self.unreserved_out.load(Ordering::SeqCst));
        queued + busy + unreserved + self.retrying()
    }

    /// Whether shutdown asked the running handler to be dropped.
    #[inline]
    pub(crate) fn aborting(&self) -> bool {
        self.own.abort.load(Ordering::Acquire)
    }

    /// Remembers the actor task's waker while its handler is pending.
    pub(crate) fn park(&self, waker: &Waker) {
        let mut slot = self
            .own
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &mut *slot {
            Some(w) if w.will_wake(waker) => {}
            other => *other = Some(waker.clone()),
        }
    }

    /// Drops the running handler at its next poll, and wakes the task so that poll comes.
    pub(crate) fn abort_handler(&self) {
        self.own.abort.store(true, Ordering::Release);
        let waker = self
            .own
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Work the actor still owes: retries waiting for their backoff, and released messages
    /// not yet handled. (Messages parked behind a dead-lettered one are not owed: they wait
    /// for a person to retry the head.)
    pub(crate) fn retrying(&self) -> u64 {
        let waiting = self
            .counters
            .get()
            .map_or(0, |c| c.retrying.load(Ordering::SeqCst));
        waiting + self.ready.load(Ordering::SeqCst)
    }

    /// The actor's rarely written figures, made now if they were not yet.
    #[inline]
    pub(crate) fn counters(&self) -> &Counters {
        self.counters.get_or_init(|| Box::new(Counters::default()))
    }

    /// The actor's rarely written figures, if anything was counted yet.
    pub(crate) fn counters_if_any(&self) -> Option<&Counters> {
        self.counters.get()
    }

    /// Handler panics so far.
    pub(crate) fn panics(&self) -> u64 {
        self.own.panics.load(Ordering::Relaxed)
    }

    /// Counts a handler panic.
    pub(crate) fn count_panic(&self) {
        self.own.panics.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn done(&self) -> u64 {
        self.own.done.load(Ordering::SeqCst)
    }

    /// Counts a message pushed without room (before the push, so it is never unseen).
    pub(crate) fn count_unreserved(&self) {
        self.unreserved_in.fetch_add(1, Ordering::SeqCst);
    }

    /// Takes back [`count_unreserved`](Self::count_unreserved) when the push failed.
    pub(crate) fn uncount_unreserved(&self) {
        self.unreserved_in.fetch_sub(1, Ordering::SeqCst);
    }

    /// The actor finished with a message it took out.
    #[inline]
    pub(crate) fn finish(&self) {
        let own = &self.own;
        // Only the actor's task writes these: plain stores, no read-modify-write. `done`
        // before `busy`, both released: whoever sees `busy` cleared sees the new `done`.
        own.done
            .store(own.done.load(Ordering::Relaxed) + 1, Ordering::Release);
        own.busy.store(false, Ordering::Release);
    }

    /// A message was parked behind a failed one of its sequence: not finished, not owed.
    pub(crate) fn park_done(&self) {
        self.own.busy.store(false, Ordering::Release);
    }

    /// The actor takes a message released from a sequence (busy first, so it is never
    /// unseen).
    pub(crate) fn take_ready(&self) {
        self.own.busy.store(true, Ordering::Relaxed);
        self.ready.fetch_sub(1, Ordering::SeqCst);
    }

    /// The actor's task has ended: nothing more is owed.
    pub(crate) fn mark_stopped(&self) {
        self.own.stopped.store(true, Ordering::SeqCst);
    }
}

/// What travels in the queue.
pub(crate) enum Slot<T> {
    /// A message; `reserved` says whether its sender took a slot of room, which the actor
    /// returns on receipt. A handler's message to its own actor takes none (it could never
    /// get one while its own mailbox is full).
    Msg { msg: T, reserved: bool },
    /// Ends the actor's loop; sent by shutdown after the mailboxes drained.
    Stop,
}

/// An actor's queue: what senders push, and the actor's waker while it waits for them.
pub(crate) struct Queue<T> {
    state: Mutex<QueueState<T>>,
}

struct QueueState<T> {
    items: VecDeque<T>,
    /// Set while the actor waits for a message: the next push takes it and wakes the actor.
    waiting: Option<Waker>,
    /// The actor stopped taking messages: pushes fail.
    closed: bool,
}

impl<T> Queue<T> {
    fn new() -> Self {
        Self {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                waiting: None,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState<T>> {
        // Nothing panics while the lock is held (pushes and swaps), but a poisoned lock would
        // still hold a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes everything queued into `into` (which must be empty) by swapping buffers, or
    /// registers the actor's waker when there is nothing.
    fn poll_take(&self, into: &mut VecDeque<T>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        debug_assert!(into.is_empty());
        let mut state = self.lock();
        if state.items.is_empty() {
            match &mut state.waiting {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                other => *other = Some(cx.waker().clone()),
            }
            Poll::Pending
        } else {
            std::mem::swap(&mut state.items, into);
            Poll::Ready(())
        }
    }

    /// Appends `value`, waking the actor if it waits; hands `value` back if the actor has
    /// stopped taking messages.
    #[inline]
    fn push(&self, value: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed {
            return Err(value);
        }
        state.items.push_back(value);
        let waiting = state.waiting.take();
        drop(state);
        if let Some(waker) = waiting {
            waker.wake();
        }
        Ok(())
    }

    /// Refuses further pushes and returns what is still queued.
    fn close(&self) -> VecDeque<T> {
        let mut state = self.lock();
        state.closed = true;
        state.waiting = None;
        std::mem::take(&mut state.items)
    }
}

/// The sending side of an actor's queue; cloned into every port.
pub(crate) struct QueueTx<T>(Arc<Queue<T>>);

impl<T> Clone for QueueTx<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> QueueTx<T> {
    /// Appends `value`, waking the actor if it waits; hands `value` back if the actor has
    /// stopped taking messages.
    #[inline]
    pub(crate) fn send(&self, value: T) -> Result<(), T> {
        self.0.push(value)
    }
}

/// What a mailbox item carries that a pool partitions by: the command, query or event.
pub(crate) trait Routed {
    type Payload;
    fn payload(&self) -> &Self::Payload;
}

/// A type-erased way to put a message of type `M` into an actor's mailbox, or into one of a
/// pool's mailboxes.
pub(crate) trait Deliver<M: Routed>: Send + Sync {
    /// Which mailbox `payload` goes to: always 0 for a single actor; by key (so one key keeps
    /// its order) or round-robin for a pool.
    fn pick(&self, payload: &M::Payload) -> usize;
    /// The mailbox at `index`.
    fn core(&self, index: usize) -> &Arc<MailboxCore>;
    /// The index of `core`, if it is one of ours.
    fn index_of(&self, core: &Arc<MailboxCore>) -> Option<usize>;
    /// Pushes `msg` into mailbox `index`. The caller holds a slot of room there (forgotten,
    /// so the actor returns it) when `reserved`. Fails only if the actor's task is gone.
    fn push(&self, index: usize, msg: M, reserved: bool) -> Result<(), M>;
    /// The actor's name.
    fn actor(&self) -> &'static str {
        self.core(0).actor
    }
}

/// Takes a message of type `M` back out of the actor's enum (when a push fails).
pub(crate) type Unwrap<A, M> = fn(<A as Actor>::Mailbox) -> Option<M>;

/// The sending side of one actor's mailbox for one message type.
pub(crate) struct Port<A: Actor, M> {
    pub(crate) core: Arc<MailboxCore>,
    pub(crate) tx: QueueTx<Slot<A::Mailbox>>,
    pub(crate) wrap: fn(M) -> A::Mailbox,
    pub(crate) unwrap: Unwrap<A, M>,
}

impl<A: Actor, M: Routed + Send + 'static> Port<A, M> {
    #[inline]
    fn send(&self, msg: M, reserved: bool) -> Result<(), M> {
        if !reserved {
            self.core.count_unreserved();
        }
        match self.tx.send(Slot::Msg {
            msg: (self.wrap)(msg),
            reserved,
        }) {
            Ok(()) => Ok(()),
            Err(slot) => {
                if !reserved {
                    self.core.uncount_unreserved();
                }
                match slot {
                    Slot::Msg { msg, .. } => Err((self.unwrap)(msg).expect("the port wrapped it")),
                    Slot::Stop => unreachable!("a port only sends messages"),
                }
            }
        }
    }
}

impl<A: Actor, M: Routed + Send + 'static> Deliver<M> for Port<A, M> {
    #[inline]
    fn pick(&self, _: &M::Payload) -> usize {
        0
    }

    #[inline]
    fn core(&self, _: usize) -> &Arc<MailboxCore> {
        &self.core
    }

    fn index_of(&self, core: &Arc<MailboxCore>) -> Option<usize> {
        Arc::ptr_eq(&self.core, core).then_some(0)
    }

    #[inline]
    fn push(&self, _: usize, msg: M, reserved: bool) -> Result<(), M> {
        self.send(msg, reserved)
    }
}

/// Maps a message to its partition key's hash.
pub(crate) type KeyFn<P> = Arc<dyn Fn(&P) -> u64 + Send + Sync>;

/// How a pool picks the instance for a message.
pub(crate) enum Picker<P> {
    /// The next instance in turn.
    RoundRobin(AtomicUsize),
    /// The instance of the message's key: one key always lands on one instance.
    Keyed(KeyFn<P>),
}

/// The sending side of a pool of actors for one message type.
pub(crate) struct PoolPort<A: Actor, M: Routed> {
    pub(crate) members: Vec<Port<A, M>>,
    pub(crate) picker: Picker<M::Payload>,
}

impl<A: Actor, M> Deliver<M> for PoolPort<A, M>
where
    M: Routed + Send + 'static,
    M::Payload: 'static,
{
    fn pick(&self, payload: &M::Payload) -> usize {
        let n = self.members.len();
        match &self.picker {
            Picker::RoundRobin(next) => next.fetch_add(1, Ordering::Relaxed) % n,
            Picker::Keyed(key) => (key(payload) % n as u64) as usize,
        }
    }

    fn core(&self, index: usize) -> &Arc<MailboxCore> {
        &self.members[index].core
    }

    fn index_of(&self, core: &Arc<MailboxCore>) -> Option<usize> {
        self.members.iter().position(|m| Arc::ptr_eq(&m.core, core))
    }

    fn push(&self, index: usize, msg: M, reserved: bool) -> Result<(), M> {
        self.members[index].send(msg, reserved)
    }
}

/// The actor's receiving side.
pub(crate) struct Inbox<A: Actor> {
    pub(crate) core: Arc<MailboxCore>,
    queue: Arc<Queue<Slot<A::Mailbox>>>,
    /// Slots taken from the queue in one go, the next one first. Their room is given back as
    /// the actor takes them (in groups, see [`MailboxCore::release_every`]), so the mailbox's
    /// bound holds.
    batch: VecDeque<Slot<A::Mailbox>>,
}

impl<A: Actor> Drop for Inbox<A> {
    fn drop(&mut self) {
        // The actor's task is gone (or the runtime dropped it): later sends fail instead of
        // queueing for nobody.
        self.queue.close();
    }
}

/// How much room the actor holds back at most before it gives it back to senders (at most
/// a quarter of the capacity, so a small mailbox keeps most of its room available).
const RELEASE_EVERY: usize = 64;

/// Creates a mailbox: the shared core, the sender to clone into ports, the actor's inbox.
pub(crate) fn mailbox<A: Actor>(
    capacity: usize,
) -> (Arc<MailboxCore>, QueueTx<Slot<A::Mailbox>>, Inbox<A>) {
    let core = Arc::new(MailboxCore::new(A::NAME, capacity));
    let queue = Arc::new(Queue::new());
    (
        core.clone(),
        QueueTx(queue.clone()),
        Inbox {
            core,
            queue,
            batch: VecDeque::new(),
        },
    )
}

impl<A: Actor> Inbox<A> {
    /// The next message, or `None` once a `Stop` arrives.
    #[inline]
    pub(crate) async fn recv(&mut self) -> Option<A::Mailbox> {
        // Take part in tokio's cooperative scheduling as a channel receive does: a mailbox
        // that never runs dry must not keep the worker thread from its other tasks.
        tokio::task::coop::consume_budget().await;
        if self.batch.is_empty() {
            // Nothing taken may hold room while the actor waits.
            self.core.release_taken();
            let (queue, batch) = (&self.queue, &mut self.batch);
            poll_fn(|cx| queue.poll_take(batch, cx)).await;
            let own = &self.core.own;
            let depth = self.batch.len();
            if depth > own.peak.load(Ordering::Relaxed) {
                own.peak.store(depth, Ordering::Relaxed);
            }
        }
        match self.batch.pop_front()? {
            Slot::Msg { msg, reserved } => {
                let own = &self.core.own;
                // Before the room is given back (a release): whoever sees the room sees
                // `busy`, so the message is never unseen between the two.
                own.busy.store(true, Ordering::Relaxed);
                if reserved {
                    let taken = own.taken.load(Ordering::Relaxed) + 1;
                    own.taken.store(taken, Ordering::Relaxed);
                    if taken >= self.core.release_every() {
                        self.core.release_taken();
                    }
                } else {
                    self.core.unreserved_out.fetch_add(1, Ordering::SeqCst);
                }
                Some(msg)
            }
            Slot::Stop => None,
        }
    }

    /// Refuses new messages and returns whatever was still queued.
    pub(crate) fn close(&mut self) -> Vec<A::Mailbox> {
        self.core.release_taken();
        self.core.room.close();
        let queued = self.queue.close();
        let mut left = Vec::new();
        for slot in self.batch.drain(..).chain(queued) {
            if let Slot::Msg { msg, reserved } = slot {
                if !reserved {
                    self.core.unreserved_out.fetch_add(1, Ordering::SeqCst);
                }
                left.push(msg);
            }
        }
        left
    }
}

/// Sends `Stop` to an actor. Takes no room: shutdown must reach a full mailbox.
pub(crate) trait Stop: Send + Sync {
    /// Queues `Stop` behind whatever is queued (nothing if the actor has already stopped).
    fn stop(&self);
}

impl<T: Send> Stop for Queue<Slot<T>> {
    fn stop(&self) {
        let _ = self.push(Slot::Stop);
    }
}

/// The app's way to stop one actor: the actor's queue itself, so it costs no allocation.
pub(crate) type StopHandle = Arc<dyn Stop>;

pub(crate) fn stop_handle<A: Actor>(tx: QueueTx<Slot<A::Mailbox>>) -> StopHandle {
    tx.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_mailbox_stays_small() {
        // Every actor has one of each; 100,000 idle actors multiply them. The queue allocates
        // nothing until the first message.
        assert!(std::mem::size_of::<MailboxCore>() <= 200);
        assert_eq!(std::mem::align_of::<MailboxCore>(), 8);
        assert!(std::mem::size_of::<Queue<Slot<[u64; 2]>>>() <= 64);
    }

    #[test]
    fn senders_and_the_actor_write_to_different_cache_lines() {
        let room_end = std::mem::offset_of!(MailboxCore, room) + std::mem::size_of::<Semaphore>();
        let own = std::mem::offset_of!(MailboxCore, own);
        assert!(
            own >= room_end + 64,
            "room ends at {room_end}, the actor's line starts at {own}"
        );
    }
}
