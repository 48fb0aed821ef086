//! Projections: read models folded from the event store, with a checkpoint.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::aggregate::{Events, Upcasters};
use crate::store::{Store, StoreError, StoreTx, StoredEvent};
use crate::worker::Worker;

/// Why a projection could not apply an event. The projector keeps the event (and everything
/// after it) and tries again after a pause; it never skips it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProjectionError(pub String);

impl ProjectionError {
    /// An error with this text.
    pub fn new(error: impl fmt::Display) -> Self {
        Self(error.to_string())
    }
}

impl From<StoreError> for ProjectionError {
    fn from(e: StoreError) -> Self {
        Self::new(e)
    }
}

/// What a projection gets besides the event: the transaction its batch runs in (commit is the
/// projector's), and where the event sits in the store.
pub struct ProjectionContext<'a> {
    tx: &'a mut StoreTx,
    event: &'a StoredEvent,
}

impl ProjectionContext<'_> {
    /// The transaction of this batch: write the read model through it for exactly-once effects
    /// (it commits together with the checkpoint).
    pub fn tx(&mut self) -> &mut StoreTx {
        self.tx
    }

    /// The event as stored: position, stream, version, metadata.
    pub fn stored(&self) -> &StoredEvent {
        self.event
    }
}

/// A read model kept from the event store. See the [module docs](super).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use eventdriven::prelude::*;
/// use eventdriven::projection::{Projection, ProjectionContext, ProjectionError, Projector};
/// use eventdriven::store::Store;
///
/// #[derive(Event, Clone, Debug, Serialize, Deserialize)]
/// #[event(name = "product.created")]
/// struct ProductCreated { sku: String }
///
/// #[derive(Events, Clone, Debug)]
/// enum CatalogEvent { Created(ProductCreated) }
///
/// /// Counts products (in memory: at-least-once).
/// #[derive(Clone, Default)]
/// struct ProductCount(Arc<Mutex<u64>>);
///
/// impl Projection for ProductCount {
///     type Event = CatalogEvent;
///     fn name(&self) -> &str { "product-count" }
///     async fn apply(&mut self, _: CatalogEvent, _: &mut ProjectionContext<'_>) -> Result<(), ProjectionError> {
///         *self.0.lock().unwrap() += 1;
///         Ok(())
///     }
///     async fn reset(&mut self, _: &mut ProjectionContext<'_>) -> Result<(), ProjectionError> {
///         *self.0.lock().unwrap() = 0;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let store = Store::memory();
/// let count = ProductCount::default();
/// let handle = Projector::new(store.clone()).start(count.clone()).await?;
/// let data = eventdriven::store::EventData::from_event(&ProductCreated { sku: "w-1".into() })?;
/// let appended = store.append("product-w-1", eventdriven::store::ExpectedVersion::NoStream, vec![data]).await?;
/// assert!(handle.wait_for(appended.last_position, std::time::Duration::from_secs(5)).await);
/// assert_eq!(*count.0.lock().unwrap(), 1);
/// handle.stop().await;
/// # Ok(())
/// # }
/// ```
pub trait Projection: Send + 'static {
    /// The events it reads: a `#[derive(Events)]` enum. Stored events of other names are
    /// passed over.
    type Event: Events;

    /// Its name: the key of its checkpoint in the store. Keep it stable.
    fn name(&self) -> &str;

    /// Applies one event, in position order.
    fn apply(
        &mut self,
        event: Self::Event,
        ctx: &mut ProjectionContext<'_>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Empties the read model, before a rebuild replays every event from position 0 (in the
    /// same transaction as the checkpoint's reset).
    fn reset(
        &mut self,
        ctx: &mut ProjectionContext<'_>,
    ) -> impl Future<Output = Result<(), ProjectionError>> + Send;
}

/// What a projection is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectionState {
    /// Reading events it has not applied yet.
    CatchingUp,
    /// Applied every event stored so far; waiting for new ones.
    Live,
    /// Replaying from position 0 after a reset, up to the head it had when the rebuild began.
    Rebuilding {
        /// The head of the store when the rebuild began.
        until: u64,
    },
    /// Its last batch failed; it will try the same events again.
    Failed {
        /// The error.
        error: String,
        /// The position of the event that failed.
        at: u64,
    },
    /// Stopped.
    Stopped,
}

/// A projection's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The position of the last event applied and committed (its checkpoint).
    pub position: u64,
    /// The last position it saw in the store.
    pub head: u64,
    /// What it is doing.
    pub state: ProjectionState,
    /// Events applied since it started (a rebuild counts again).
    pub applied: u64,
}

impl ProjectionStatus {
    /// How many stored events it has not applied yet (as of the last head it saw).
    pub fn lag(&self) -> u64 {
        self.head.saturating_sub(self.position)
    }
}

/// Runs projections over a store. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Projector {
    store: Store,
    upcasters: Upcasters,
    batch: usize,
    poll: Duration,
}

impl Projector {
    /// A projector over `store`: batches of 100 events, a poll every 500 ms for other
    /// processes' appends (this process's wake it at once), no upcasters.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            upcasters: Upcasters::new(),
            batch: 100,
            poll: Duration::from_millis(500),
        }
    }

    /// Applies `upcasters` to every event read.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// How many events one transaction applies (at least 1).
    pub fn batch(mut self, events: usize) -> Self {
        self.batch = events.max(1);
        self
    }

    /// How often the store is read when this process appended nothing (appends by other
    /// processes are seen within this interval).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Starts `projection` from its checkpoint (0 if it has none).
    pub async fn start<P: Projection>(
        &self,
        projection: P,
    ) -> Result<ProjectionHandle, StoreError> {
        let name = projection.name().to_owned();
        let position = self.store.load_checkpoint(&name).await?.unwrap_or(0);
        let head = self.store.head().await?;
        let (status, _) = watch::channel(ProjectionStatus {
            name,
            position,
            head,
            state: ProjectionState::CatchingUp,
            applied: 0,
        });
        let status = Arc::new(status);
        let (commands, inbox) = mpsc::unbounded_channel();
        let (projector, watched) = (self.clone(), status.clone());
        // Stopped through `Control::Stop`, in order with the rebuilds.
        let worker = Worker::spawn("projection", move |_| {
            run(projector, projection, position, watched, inbox)
        });
        Ok(ProjectionHandle {
            status,
            commands,
            worker,
        })
    }
}

enum Control {
    Rebuild(oneshot::Sender<Result<(), ProjectionError>>),
    Stop,
}

/// A running projection: its progress, a rebuild, a stop. Cheap to clone.
#[derive(Clone)]
pub struct ProjectionHandle {
    status: Arc<watch::Sender<ProjectionStatus>>,
    commands: mpsc::UnboundedSender<Control>,
    worker: Worker,
}

impl fmt::Debug for ProjectionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProjectionHandle")
            .field(&self.status())
            .finish()
    }
}

impl ProjectionHandle {
    /// Its progress now.
    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// Waits until the projection applied every event up to `position` (at most `timeout`);
    /// `false` if it did not in time.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut status = self.status.subscribe();
        tokio::time::timeout(timeout, status.wait_for(|s| s.position >= position))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Waits until `check` holds for the status (at most `timeout`): for example until the
    /// projection is `Live` again after a rebuild. `false` if not in time.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&ProjectionStatus) -> bool,
    ) -> bool {
        let mut status = self.status.subscribe();
        tokio::time::timeout(timeout, status.wait_for(|s| check(s)))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Empties the read model and replays every event from position 0, while the app runs.
    /// Returns once the reset committed; [`status`](Self::status) shows the replay's progress
    /// (`Rebuilding { until }`, then `Live`).
    pub async fn rebuild(&self) -> Result<(), ProjectionError> {
        let (done, reset) = oneshot::channel();
        self.commands
            .send(Control::Rebuild(done))
            .map_err(|_| ProjectionError::new("the projection has stopped"))?;
        reset
            .await
            .map_err(|_| ProjectionError::new("the projection stopped during the rebuild"))?
    }

    /// Stops the projection after its current batch and waits for it (at most 10 s).
    pub async fn stop(&self) {
        let _ = self.commands.send(Control::Stop);
        self.worker.stop().await;
    }
}

/// The projector's loop for one projection.
async fn run<P: Projection>(
    projector: Projector,
    mut projection: P,
    mut position: u64,
    status: Arc<watch::Sender<ProjectionStatus>>,
    mut commands: mpsc::UnboundedReceiver<Control>,
) {
    let store = &projector.store;
    let name = projection.name().to_owned();
    let mut pause = Duration::from_millis(100);
    let mut rebuilding_until = None;
    // A command that arrived while waiting, handled at the top of the loop.
    let mut pending = None;
    loop {
        // Before reading, so an append committed after the read still wakes us.
        let appended = store.appended();
        tokio::pin!(appended);
        appended.as_mut().enable();

        match pending.take().map_or_else(|| commands.try_recv(), Ok) {
            Ok(Control::Stop) => break,
            Ok(Control::Rebuild(done)) => {
                let result = reset(store, &mut projection, &name).await;
                if result.is_ok() {
                    position = 0;
                    let until = store.head().await.unwrap_or(0);
                    rebuilding_until = Some(until);
                    status.send_modify(|s| {
                        s.position = 0;
                        s.state = ProjectionState::Rebuilding { until };
                    });
                }
                let _ = done.send(result);
                continue;
            }
            Err(_) => {}
        }

        let page = match store.read_all(position, projector.batch).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(projection = name, %error, "cannot read the store; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let Some(last) = page.last().map(|e| e.position) else {
            status.send_modify(|s| s.state = ProjectionState::Live);
            rebuilding_until = None;
            tokio::select! {
                () = &mut appended => {}
                () = tokio::time::sleep(projector.poll) => {}
                command = commands.recv() => match command {
                    Some(Control::Stop) | None => break,
                    rebuild => pending = rebuild,
                },
            }
            continue;
        };
        match apply_batch(&projector, &mut projection, &name, position, page).await {
            Ok(applied) => {
                position = last;
                pause = Duration::from_millis(100);
                let head = store.head().await.unwrap_or(last).max(last);
                status.send_modify(|s| {
                    s.position = last;
                    s.head = head;
                    s.applied += applied;
                    s.state = match rebuilding_until {
                        Some(until) if last < until => ProjectionState::Rebuilding { until },
                        _ => ProjectionState::CatchingUp,
                    };
                });
            }
            Err((_, error)) if error.0 == MOVED => {
                // Start again after what the other copy applied.
                tracing::warn!(
                    projection = name,
                    "{error}; continuing from the stored checkpoint"
                );
                if let Ok(Some(stored)) = store.load_checkpoint(&name).await {
                    position = stored;
                    status.send_modify(|s| s.position = stored);
                }
                tokio::time::sleep(pause).await;
            }
            Err((at, error)) => {
                tracing::error!(projection = name, position = at, %error, "projection failed; trying the same events again");
                status.send_modify(|s| {
                    s.state = ProjectionState::Failed {
                        error: error.to_string(),
                        at,
                    }
                });
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    command = commands.recv() => if matches!(command, Some(Control::Stop) | None) { break },
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
    status.send_modify(|s| s.state = ProjectionState::Stopped);
}

/// Applies a page of events and moves the checkpoint, in one transaction. On error, the
/// position of the event that failed.
/// The error of a batch whose checkpoint another copy of the projection moved.
const MOVED: &str = "the checkpoint moved: another copy of this projection runs";

async fn apply_batch<P: Projection>(
    projector: &Projector,
    projection: &mut P,
    name: &str,
    from: u64,
    page: Vec<StoredEvent>,
) -> Result<u64, (u64, ProjectionError)> {
    let first = page.first().map_or(0, |e| e.position);
    let last = page.last().map_or(0, |e| e.position);
    let mut tx = projector
        .store
        .begin()
        .await
        .map_err(|e| (first, e.into()))?;
    // Another copy of this projection may have applied these events already.
    match tx.claim_checkpoint(name, from).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = tx.rollback().await;
            return Err((first, ProjectionError::new(MOVED)));
        }
        Err(e) => {
            let _ = tx.rollback().await;
            return Err((first, e.into()));
        }
    }
    let mut applied = 0;
    for mut stored in page {
        let at = stored.position;
        if let Err(e) = projector.upcasters.upcast(&mut stored) {
            let _ = tx.rollback().await;
            return Err((at, e.into()));
        }
        let event = match P::Event::decode(&stored) {
            Ok(event) => event,
            // Not one of this projection's events.
            Err(StoreError::UnknownEvent { .. }) => continue,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err((at, e.into()));
            }
        };
        let mut ctx = ProjectionContext {
            tx: &mut tx,
            event: &stored,
        };
        if let Err(e) = projection.apply(event, &mut ctx).await {
            let _ = tx.rollback().await;
            return Err((at, e));
        }
        applied += 1;
    }
    let saved = tx.save_checkpoint(name, last).await;
    match saved {
        Ok(()) => tx.commit().await.map_err(|e| match e {
            // The memory store checks the claim at commit.
            StoreError::CheckpointMoved { .. } => (first, ProjectionError::new(MOVED)),
            e => (first, e.into()),
        })?,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err((first, e.into()));
        }
    }
    Ok(applied)
}

/// Empties the read model and sets the checkpoint to 0, in one transaction.
async fn reset<P: Projection>(
    store: &Store,
    projection: &mut P,
    name: &str,
) -> Result<(), ProjectionError> {
    let mut tx = store.begin().await?;
    // The reset has no event of its own: a placeholder at position 0.
    let placeholder = StoredEvent {
        position: 0,
        stream: String::new(),
        version: 0,
        name: String::new(),
        schema_version: 0,
        payload: serde_json::Value::Null,
        metadata: crate::Metadata::new(),
    };
    let mut ctx = ProjectionContext {
        tx: &mut tx,
        event: &placeholder,
    };
    if let Err(e) = projection.reset(&mut ctx).await {
        let _ = tx.rollback().await;
        return Err(e);
    }
    tx.save_checkpoint(name, 0).await?;
    tx.commit().await?;
    Ok(())
}
