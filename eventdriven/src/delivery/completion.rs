//! Knowing when an event has been dealt with by every subscriber: handled, or dead-lettered.
//!
//! The relay publishes stored events and must not move its checkpoint past one before every
//! subscriber is done with it, or a crash in between would lose it. It tracks the event's id
//! with the number of subscribers it was delivered to; each subscriber's task marks it done
//! once the handler succeeded (or skipped it as a duplicate) or the event was dead-lettered;
//! a retry still to come does not count. Untracked ids cost one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::message::MessageId;

/// Ids being tracked, with how many subscribers have yet to be done.
#[derive(Default)]
pub(crate) struct Completions {
    /// How many ids are tracked: the fast path when none is.
    active: AtomicUsize,
    waiting: Mutex<HashMap<MessageId, (usize, oneshot::Sender<()>)>>,
}

impl Completions {
    /// Tracks `id` until `count` subscribers are done with it; the receiver completes then
    /// (at once for 0).
    pub(crate) fn track(&self, id: MessageId, count: usize) -> oneshot::Receiver<()> {
        let (done, all_done) = oneshot::channel();
        if count == 0 {
            let _ = done.send(());
            return all_done;
        }
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.insert(id, (count, done)).is_none() {
            self.active.fetch_add(1, Ordering::SeqCst);
        }
        all_done
    }

    /// Stops tracking `id` (the tracker gave up waiting).
    pub(crate) fn forget(&self, id: MessageId) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.remove(&id).is_some() {
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// One subscriber is done with `id`.
    #[inline]
    pub(crate) fn done(&self, id: MessageId) {
        if self.active.load(Ordering::SeqCst) != 0 {
            self.done_tracked(id);
        }
    }

    #[cold]
    fn done_tracked(&self, id: MessageId) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((left, _)) = waiting.get_mut(&id) else {
            return;
        };
        *left -= 1;
        if *left == 0 {
            if let Some((_, done)) = waiting.remove(&id) {
                self.active.fetch_sub(1, Ordering::SeqCst);
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_after_every_subscriber_and_ignores_others() {
        let completions = Completions::default();
        let id = MessageId::new();
        let mut all = completions.track(id, 2);
        completions.done(MessageId::new());
        completions.done(id);
        assert!(all.try_recv().is_err());
        completions.done(id);
        assert!(all.try_recv().is_ok());
        assert_eq!(completions.active.load(Ordering::SeqCst), 0);
        // Nothing to wait for.
        assert!(completions.track(id, 0).try_recv().is_ok());
    }
}
