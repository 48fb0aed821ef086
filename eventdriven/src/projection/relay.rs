//! The relay: the event store as the outbox of the bus.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::aggregate::Upcasters;
use crate::store::Store;
use crate::worker::{self, Progress, Worker};
use crate::App;

/// Publishes every stored event on the bus, in position order, at least once. See the
/// [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use eventdriven::prelude::*;
/// use eventdriven::projection::Relay;
/// use eventdriven::store::{EventData, ExpectedVersion, Store};
///
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "order.placed")]
/// struct OrderPlaced { order: u64 }
///
/// #[subscribe]
/// async fn confirm(event: &OrderPlaced) {
///     println!("order {} placed", event.order);
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let store = Store::memory();
/// let app = App::builder().subscriber(confirm).build().await?;
/// let relay = Relay::new(store.clone(), &app).start().await?;
///
/// let placed = EventData::from_event(&OrderPlaced { order: 7 })?;
/// let at = store.append("order-7", ExpectedVersion::NoStream, vec![placed]).await?;
/// assert!(relay.wait_for(at.last_position, Duration::from_secs(5)).await);
/// relay.stop().await;
/// app.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Relay {
    store: Store,
    app: App,
    name: String,
    upcasters: Upcasters,
    batch: usize,
    poll: Duration,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.name)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay from `store` to `app`'s bus, named `relay` (its checkpoint's key), batches of
    /// 100 events, a poll every 500 ms for other processes' appends.
    pub fn new(store: Store, app: &App) -> Self {
        Self {
            store,
            app: app.clone(),
            name: "relay".to_owned(),
            upcasters: Upcasters::new(),
            batch: 100,
            poll: Duration::from_millis(500),
        }
    }

    /// Its name: the key of its checkpoint. Two relays of one store need two names.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Applies `upcasters` to every event before it is decoded.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// How many events one read fetches (at least 1).
    pub fn batch(mut self, events: usize) -> Self {
        self.batch = events.max(1);
        self
    }

    /// How often the store is read when this process appended nothing.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Starts relaying from the checkpoint (0 if there is none).
    pub async fn start(self) -> crate::store::StoreResult<RelayHandle> {
        let position = self.store.load_checkpoint(&self.name).await?.unwrap_or(0);
        let progress = Progress::new(position);
        let skipped = Arc::new(AtomicU64::new(0));
        let (at, counted) = (progress.clone(), skipped.clone());
        let worker = Worker::spawn("relay", move |stopped| {
            run(self, position, at, stopped, counted)
        });
        Ok(RelayHandle {
            progress,
            skipped,
            worker,
        })
    }
}

/// A running relay. Cheap to clone.
#[derive(Clone)]
pub struct RelayHandle {
    progress: Progress,
    skipped: Arc<AtomicU64>,
    worker: Worker,
}

impl fmt::Debug for RelayHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayHandle")
            .field("position", &self.position())
            .field("skipped", &self.skipped())
            .finish()
    }
}

impl RelayHandle {
    /// The position of the last event published and checkpointed.
    pub fn position(&self) -> u64 {
        self.progress.get()
    }

    /// Events passed over because no actor of this app subscribes to their type.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Waits until every event up to `position` was published (at most `timeout`); `false`
    /// if not in time.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        self.progress.wait_for(position, timeout).await
    }

    /// Stops after the current batch and waits for the task (at most 10 s).
    pub async fn stop(&self) {
        self.worker.stop().await;
    }
}

async fn run(
    relay: Relay,
    mut position: u64,
    status: Progress,
    mut stop: watch::Receiver<bool>,
    skipped: Arc<AtomicU64>,
) {
    let store = &relay.store;
    let mut pause = Duration::from_millis(50);
    while !*stop.borrow() {
        let appended = store.appended();
        tokio::pin!(appended);
        appended.as_mut().enable();

        let page = match store.read_all(position, relay.batch).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(relay = relay.name, %error, "cannot read the store; trying again");
                worker::pause(&mut stop, pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if page.is_empty() {
            tokio::select! {
                () = &mut appended => {}
                () = tokio::time::sleep(relay.poll) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        // Published in order; the checkpoint moves only past events every subscriber is done
        // with (handled or dead-lettered), so a crash never loses one still in a mailbox.
        let mut delivered = position;
        let mut pending = Vec::new();
        for mut stored in page {
            let at = stored.position;
            let published = match relay.upcasters.upcast(&mut stored) {
                Ok(()) => relay.app.publish_stored(stored).await,
                Err(e) => Some(Err(e.to_string())),
            };
            match published {
                Some(Ok(done)) => {
                    pending.push(done);
                    delivered = at;
                }
                // No actor of this app subscribes to its type: nothing to deliver.
                None => {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    delivered = at;
                }
                Some(Err(error)) => {
                    // Not past this event: it is published again, nothing is skipped.
                    tracing::warn!(relay = relay.name, position = at, %error, "event not relayed; trying again");
                    break;
                }
            }
        }
        let mut all_done = true;
        for done in pending {
            if !until_done(&relay, &mut stop, done).await {
                all_done = false;
                break;
            }
        }
        if all_done {
            position = delivered;
        }
        let saved = status.get();
        if position > saved {
            match store.save_checkpoint(&relay.name, position).await {
                Ok(()) => {
                    status.set(position);
                    pause = Duration::from_millis(50);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(relay = relay.name, %error, "checkpoint not saved; trying again")
                }
            }
        }
        worker::pause(&mut stop, pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Waits until a relayed event's subscribers are all done with it; `false` if asked to stop
/// first (or the app went away), in which case the checkpoint stays where it was.
async fn until_done(
    relay: &Relay,
    stop: &mut watch::Receiver<bool>,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> bool {
    loop {
        tokio::select! {
            finished = &mut done => return finished.is_ok(),
            () = tokio::time::sleep(Duration::from_secs(30)) => tracing::warn!(
                relay = relay.name,
                "a relayed event is not handled after 30 s; the checkpoint waits for it"
            ),
            _ = stop.changed() => return false,
        }
    }
}
