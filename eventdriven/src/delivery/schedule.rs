//! Scheduled and delayed messages: delivered at a time, cancellable until then.
//!
//! Timers are tokio's, so tests run them in virtual time with `tokio::time::pause()`. A
//! scheduled message that is still pending when the app shuts down is dead-lettered (reason
//! `Shutdown`), never dropped, unless the app's store keeps it for the next start (see
//! [`durable`](super::durable)).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::durable::StoreWriter;
use crate::message::Metadata;

/// A pending scheduled message; [`cancel`](Scheduled::cancel) it before it is due to stop it.
#[derive(Debug)]
pub struct Scheduled {
    id: u64,
    scheduler: Weak<Scheduler>,
}

impl Scheduled {
    /// Cancels the message; `true` if it had not been delivered yet.
    pub fn cancel(&self) -> bool {
        match self.scheduler.upgrade() {
            Some(scheduler) => scheduler.cancel(self.id),
            None => false,
        }
    }
}

struct Pending {
    message: &'static str,
    meta: Metadata,
    abort: Option<AbortHandle>,
    /// Where the message is also kept, if it is.
    durable: Option<Arc<StoreWriter>>,
}

/// The messages waiting for their time.
#[derive(Default)]
pub(crate) struct Scheduler {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
}

/// What was still pending at shutdown.
pub(crate) struct Unsent {
    pub(crate) message: &'static str,
    pub(crate) meta: Metadata,
}

impl Scheduler {
    /// Runs `deliver` at `at` unless cancelled first. `durable` is where the message is also
    /// kept (removed from there on cancel; left there at shutdown).
    pub(crate) fn schedule<F>(
        self: &Arc<Self>,
        message: &'static str,
        meta: Metadata,
        at: Instant,
        durable: Option<Arc<StoreWriter>>,
        deliver: F,
    ) -> Scheduled
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.lock();
        pending.insert(
            id,
            Pending {
                message,
                meta,
                abort: None,
                durable,
            },
        );
        let scheduler = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            // Whoever removes the entry owns the message: here the timer, or `cancel`.
            let due = scheduler
                .upgrade()
                .is_some_and(|s| s.lock().remove(&id).is_some());
            if due {
                deliver.await;
            }
        });
        if let Some(entry) = pending.get_mut(&id) {
            entry.abort = Some(task.abort_handle());
        }
        Scheduled {
            id,
            scheduler: Arc::downgrade(self),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cancel(&self, id: u64) -> bool {
        match self.lock().remove(&id) {
            Some(entry) => {
                if let Some(abort) = entry.abort {
                    abort.abort();
                }
                if let Some(durable) = entry.durable {
                    durable.remove_schedule(entry.meta.id);
                }
                true
            }
            None => false,
        }
    }

    /// How many messages are waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Cancels everything still pending and returns what only memory held, for the dead
    /// letters (what the store keeps is scheduled again at the next start).
    pub(crate) fn drain(&self) -> Vec<Unsent> {
        self.lock()
            .drain()
            .filter_map(|(_, entry)| {
                if let Some(abort) = entry.abort {
                    abort.abort();
                }
                entry.durable.is_none().then_some(Unsent {
                    message: entry.message,
                    meta: entry.meta,
                })
            })
            .collect()
    }
}
