//! Background tasks of the runtime (relay, projections, process managers, scheduled checks):
//! how they are stopped, and how their progress is watched.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long `stop` waits for a task to end.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// A spawned task with a stop signal. Cheap to clone; `stop` from any clone ends it.
#[derive(Clone, Debug)]
pub(crate) struct Worker {
    what: &'static str,
    stop: watch::Sender<bool>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Worker {
    /// Spawns `run(stopped)`; `stopped` changes to `true` when the worker is asked to stop.
    pub(crate) fn spawn<F>(what: &'static str, run: impl FnOnce(watch::Receiver<bool>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(stopped));
        Self {
            what,
            stop,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Asks the task to stop and waits for it (at most 10 s).
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            if tokio::time::timeout(STOP_WAIT, task).await.is_err() {
                tracing::error!("{} did not stop within {STOP_WAIT:?}", self.what);
            }
        }
    }
}

/// A position a worker has reached (a checkpoint), to read and wait for.
#[derive(Clone, Debug)]
pub(crate) struct Progress(Arc<watch::Sender<u64>>);

impl Progress {
    pub(crate) fn new(position: u64) -> Self {
        Self(Arc::new(watch::channel(position).0))
    }

    pub(crate) fn get(&self) -> u64 {
        *self.0.borrow()
    }

    pub(crate) fn set(&self, position: u64) {
        self.0.send_replace(position);
    }

    /// Waits until the position is at least `position` (at most `timeout`).
    pub(crate) async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut seen = self.0.subscribe();
        tokio::time::timeout(timeout, seen.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Sleeps for `pause` unless asked to stop first.
pub(crate) async fn pause(stopped: &mut watch::Receiver<bool>, pause: Duration) {
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        _ = stopped.changed() => {}
    }
}
