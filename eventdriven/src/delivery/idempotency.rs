//! Idempotent consumers and commands: a subscriber marked `#[subscribe(idempotent)]` skips a
//! message id it already handled successfully, and a command sent with an idempotency key
//! runs once per key; both within a window of ids and time.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::message::{Command, MessageId};

/// How long and how many processed ids are remembered per subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyWindow {
    /// The most ids kept per subscriber; the oldest go first.
    pub max_ids: usize,
    /// How long an id is kept.
    pub max_age: Duration,
}

impl Default for IdempotencyWindow {
    /// 100,000 ids or one hour, whichever ends first.
    fn default() -> Self {
        Self {
            max_ids: 100_000,
            max_age: Duration::from_secs(3600),
        }
    }
}

/// Where processed message ids are kept. In memory by default; the storage backends provide
/// durable ones.
pub trait ProcessedIds: Send + Sync + 'static {
    /// Whether `subscriber` already handled `id` (within the window).
    fn contains(&self, subscriber: &'static str, id: MessageId) -> bool;
    /// Records that `subscriber` handled `id`.
    fn insert(&self, subscriber: &'static str, id: MessageId);
}

#[derive(Default)]
struct Seen {
    ids: HashSet<MessageId>,
    order: VecDeque<(MessageId, Instant)>,
}

/// Processed ids in memory, per subscriber, bounded by an [`IdempotencyWindow`].
#[derive(Default)]
pub struct MemoryProcessedIds {
    window: IdempotencyWindow,
    seen: Mutex<HashMap<&'static str, Seen>>,
}

impl MemoryProcessedIds {
    /// An empty store with the given window.
    pub fn new(window: IdempotencyWindow) -> Self {
        Self {
            window,
            seen: Mutex::default(),
        }
    }

    fn evict(&self, seen: &mut Seen, now: Instant) {
        while let Some(&(id, at)) = seen.order.front() {
            if seen.order.len() > self.window.max_ids
                || now.duration_since(at) > self.window.max_age
            {
                seen.order.pop_front();
                seen.ids.remove(&id);
            } else {
                break;
            }
        }
    }
}

impl ProcessedIds for MemoryProcessedIds {
    fn contains(&self, subscriber: &'static str, id: MessageId) -> bool {
        let mut all = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(seen) = all.get_mut(subscriber) else {
            return false;
        };
        self.evict(seen, Instant::now());
        seen.ids.contains(&id)
    }

    fn insert(&self, subscriber: &'static str, id: MessageId) {
        let mut all = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = all.entry(subscriber).or_default();
        let now = Instant::now();
        if seen.ids.insert(id) {
            seen.order.push_back((id, now));
        }
        self.evict(seen, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_by_count_and_by_age() {
        let store = MemoryProcessedIds::new(IdempotencyWindow {
            max_ids: 2,
            max_age: Duration::from_secs(10),
        });
        let ids: Vec<_> = (0..3).map(|_| MessageId::new()).collect();
        for id in &ids {
            store.insert("sub", *id);
        }
        assert!(!store.contains("sub", ids[0]), "evicted by count");
        assert!(store.contains("sub", ids[1]));
        assert!(!store.contains("other", ids[1]), "per subscriber");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!store.contains("sub", ids[2]), "evicted by age");
    }
}

/// Replies of commands sent with an idempotency key, kept for the window: a repeated key gets
/// the stored reply, and a concurrent duplicate waits for the first one's reply instead of
/// running the command again. In memory; durable stores arrive with the storage backends.
pub(crate) struct IdempotentReplies {
    window: IdempotencyWindow,
    entries: Mutex<Replies>,
}

type ReplyCell = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
struct Replies {
    cells: HashMap<(TypeId, String), ReplyCell>,
    order: VecDeque<((TypeId, String), Instant)>,
}

impl IdempotentReplies {
    pub(crate) fn new(window: IdempotencyWindow) -> Self {
        Self {
            window,
            entries: Mutex::default(),
        }
    }

    /// The reply cell of `key` for command `C`, new or shared with earlier senders.
    pub(crate) fn cell<C: Command>(&self, key: &str) -> Arc<OnceCell<C::Reply>>
    where
        C::Reply: Sync,
    {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        while let Some((oldest, at)) = entries.order.front() {
            if entries.order.len() > self.window.max_ids
                || now.duration_since(*at) > self.window.max_age
            {
                let oldest = oldest.clone();
                entries.cells.remove(&oldest);
                entries.order.pop_front();
            } else {
                break;
            }
        }
        let id = (TypeId::of::<C>(), key.to_owned());
        if let Some(cell) = entries.cells.get(&id) {
            return cell
                .clone()
                .downcast::<OnceCell<C::Reply>>()
                .unwrap_or_else(|_| unreachable!("cells are keyed by the command's TypeId"));
        }
        let cell = Arc::new(OnceCell::new());
        entries.cells.insert(id.clone(), cell.clone());
        entries.order.push_back((id, now));
        cell
    }
}
