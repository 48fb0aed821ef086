//! Loading, handling and committing aggregates.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{stream_name, Aggregate, Events, Upcasters, STREAM_HEADER, VERSION_HEADER};
use crate::message::{Metadata, Timestamp};
use crate::store::{ConcurrencyConflict, ExpectedVersion, Snapshot, Store, StoreError};
use crate::App;

/// How many events one read of a stream fetches while loading.
const PAGE: usize = 1_000;

/// Why a command on an aggregate did not commit.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError<E: std::error::Error + 'static> {
    /// The aggregate refused the command: its own error. Nothing was stored.
    #[error(transparent)]
    Rejected(E),
    /// The stream kept moving under the command: every attempt the retry policy allowed
    /// met a concurrent writer. Nothing was stored.
    #[error("{conflict} (gave up after {attempts} attempts)")]
    Conflict {
        /// The last conflict.
        conflict: ConcurrencyConflict,
        /// How many times the command was tried.
        attempts: u32,
    },
    /// The store failed (or a stored event could not be read). Nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An aggregate as loaded from the store.
#[derive(Debug)]
pub struct Loaded<A> {
    /// Its state.
    pub state: A,
    /// Its stream's version (0: no events yet).
    pub version: u64,
    /// The version of the snapshot loading started from, if it used one.
    pub snapshot: Option<u64>,
    /// How many events were applied on top of the snapshot (or from the start).
    pub replayed: u64,
}

/// What a committed command did.
pub struct Committed<A: Aggregate> {
    /// The events appended (empty if the command decided on none).
    pub events: Vec<A::Event>,
    /// The metadata each event was stored (and published) with, in the same order.
    pub metadata: Vec<Metadata>,
    /// The aggregate's state after them.
    pub state: A,
    /// The stream's version after the commit.
    pub version: u64,
    /// The global position of the last event appended (0 if none was): what a projection or
    /// relay must reach to have seen this commit (`wait_for(committed.position, ..)`). On the
    /// memory store inside a larger transaction it is 0 too.
    pub position: u64,
    /// How many attempts it took (1 unless a concurrent writer got in between).
    pub attempts: u32,
    /// Whether a snapshot was taken after this commit.
    pub snapshot_taken: bool,
}

impl<A> fmt::Debug for Committed<A>
where
    A: Aggregate + fmt::Debug,
    A::Event: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed")
            .field("events", &self.events)
            .field("metadata", &self.metadata)
            .field("state", &self.state)
            .field("version", &self.version)
            .field("position", &self.position)
            .field("attempts", &self.attempts)
            .field("snapshot_taken", &self.snapshot_taken)
            .finish()
    }
}

/// Encodes and decodes an aggregate's state for snapshots.
struct SnapshotPolicy<A> {
    every: u64,
    encode: fn(&A) -> serde_json::Result<serde_json::Value>,
    decode: fn(serde_json::Value) -> serde_json::Result<A>,
}

impl<A> Clone for SnapshotPolicy<A> {
    fn clone(&self) -> Self {
        Self {
            every: self.every,
            encode: self.encode,
            decode: self.decode,
        }
    }
}

struct Inner<A: Aggregate> {
    store: Store,
    app: Option<App>,
    upcasters: Upcasters,
    snapshots: Option<SnapshotPolicy<A>>,
    conflict_attempts: u32,
}

impl<A: Aggregate> Clone for Inner<A> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            app: self.app.clone(),
            upcasters: self.upcasters.clone(),
            snapshots: self.snapshots.clone(),
            conflict_attempts: self.conflict_attempts,
        }
    }
}

/// Loads aggregates of type `A` from a [`Store`], runs commands on them and commits the
/// events. Cheap to clone.
///
/// - **Loading** reads the latest snapshot (when snapshots are on and its schema version is
///   `A::SNAPSHOT_VERSION`; any other snapshot is ignored and the state replayed from the
///   first event), then the newer events, each upcast and applied in order.
/// - **Committing** appends with the loaded version as the expected version. Another writer
///   in between makes it a [`ConcurrencyConflict`]; the command is then run again on freshly
///   loaded state, up to [`retry_on_conflict`](Self::retry_on_conflict) times (3 by default).
/// - **After the commit** a snapshot is saved when the stream crossed a multiple of
///   [`snapshot_every`](Self::snapshot_every), and the events are published on the bus of
///   [`publish_to`](Self::publish_to) (or, with [`execute_in`](Self::execute_in) inside a
///   handler, through the handler's context). A failure of either is logged, not returned: the
///   command has committed. (To deliver every stored event even across a crash, relay the
///   store instead of publishing here.)
pub struct Repository<A: Aggregate> {
    inner: Arc<Inner<A>>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Aggregate> fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("store", &self.inner.store)
            .field(
                "snapshot_every",
                &self.inner.snapshots.as_ref().map(|s| s.every),
            )
            .field("conflict_attempts", &self.inner.conflict_attempts)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`: no snapshots, no upcasters, no publishing, three attempts
    /// on a conflict.
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                app: None,
                upcasters: Upcasters::new(),
                snapshots: None,
                conflict_attempts: 3,
            }),
        }
    }

    /// Changes the settings; a repository that was cloned first gets settings of its own
    /// (the clones keep theirs).
    fn configure(mut self, change: impl FnOnce(&mut Inner<A>)) -> Self {
        change(Arc::make_mut(&mut self.inner));
        self
    }

    /// Publishes every committed event on `app`'s bus (after the commit).
    pub fn publish_to(self, app: App) -> Self {
        self.configure(|inner| inner.app = Some(app))
    }

    /// Applies `upcasters` to every event read.
    pub fn upcasters(self, upcasters: Upcasters) -> Self {
        self.configure(|inner| inner.upcasters = upcasters)
    }

    /// How many times a command is tried in all when it meets a concurrent writer (at least 1).
    pub fn retry_on_conflict(self, attempts: u32) -> Self {
        self.configure(|inner| inner.conflict_attempts = attempts.max(1))
    }

    /// Saves a snapshot of the state each time a stream's version crosses a multiple of
    /// `every` events (0 turns snapshots off).
    pub fn snapshot_every(self, every: u64) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        self.configure(|inner| {
            inner.snapshots = (every > 0).then_some(SnapshotPolicy {
                every,
                encode: |state| serde_json::to_value(state),
                decode: serde_json::from_value::<A>,
            });
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Loads instance `id`: latest usable snapshot, then the newer events.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, StoreError> {
        let stream = stream_name::<A>(id);
        let mut loaded = self.start_state(&stream).await?;
        loop {
            let page = self
                .inner
                .store
                .read_stream(&stream, loaded.version + 1, PAGE)
                .await?;
            let full = page.len() == PAGE;
            for mut stored in page {
                self.inner.upcasters.upcast(&mut stored)?;
                let event = A::Event::decode(&stored)?;
                loaded.state.apply(&event);
                loaded.version = stored.version;
                loaded.replayed += 1;
            }
            if !full {
                return Ok(loaded);
            }
        }
    }

    /// The state from the latest snapshot if there is a usable one, else the default.
    async fn start_state(&self, stream: &str) -> Result<Loaded<A>, StoreError> {
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
            snapshot: None,
            replayed: 0,
        };
        let Some(policy) = &self.inner.snapshots else {
            return Ok(loaded);
        };
        let Some(snapshot) = self.inner.store.load_snapshot(stream).await? else {
            return Ok(loaded);
        };
        if snapshot.schema_version != A::SNAPSHOT_VERSION {
            tracing::info!(
                stream,
                stored = snapshot.schema_version,
                current = A::SNAPSHOT_VERSION,
                "snapshot of another schema version ignored; replaying from the first event"
            );
            return Ok(loaded);
        }
        match (policy.decode)(snapshot.state) {
            Ok(state) => {
                loaded.state = state;
                loaded.version = snapshot.version;
                loaded.snapshot = Some(snapshot.version);
            }
            Err(error) => tracing::warn!(
                stream,
                %error,
                "snapshot does not decode into the state; replaying from the first event"
            ),
        }
        Ok(loaded)
    }

    /// Runs `command` on instance `id` and commits the events, retrying on conflicts.
    /// The events' metadata is caused by a fresh root message.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Committed<A>, RepositoryError<A::Error>>
    where
        A::Command: Clone,
    {
        self.execute_caused_by(id, command, &Metadata::new()).await
    }

    /// [`execute`](Self::execute) with the events caused by `cause` (the metadata of the
    /// command being handled, `ctx.metadata()`): they share its correlation id.
    pub async fn execute_caused_by(
        &self,
        id: &str,
        command: A::Command,
        cause: &Metadata,
    ) -> Result<Committed<A>, RepositoryError<A::Error>>
    where
        A::Command: Clone,
    {
        let committed = self.retrying(id, command, cause).await?;
        self.publish(&committed).await;
        Ok(committed)
    }

    /// Runs `command` from inside a handler of actor `B`: the events are caused by the message
    /// being handled and, once committed, published through `ctx` (with the metadata they were
    /// stored with) instead of through [`publish_to`](Self::publish_to)'s app. Retries on
    /// conflicts like [`execute`](Self::execute).
    pub async fn execute_in<B: crate::Actor>(
        &self,
        ctx: &mut crate::Context<B>,
        id: &str,
        command: A::Command,
    ) -> Result<Committed<A>, RepositoryError<A::Error>>
    where
        A::Command: Clone,
    {
        let cause = ctx.metadata().clone();
        let committed = self.retrying(id, command, &cause).await?;
        for (event, meta) in committed.events.iter().zip(&committed.metadata) {
            if let Err(error) = event.clone().publish_in(ctx, meta.clone()).await {
                tracing::warn!(%error, event = event.name(), "committed event not published");
            }
        }
        Ok(committed)
    }

    /// Publishes a commit's events on the app of [`publish_to`](Self::publish_to), if any.
    async fn publish(&self, committed: &Committed<A>) {
        let Some(app) = &self.inner.app else {
            return;
        };
        for (event, meta) in committed.events.iter().zip(&committed.metadata) {
            if let Err(error) = event.clone().publish(app, meta.clone()).await {
                tracing::warn!(%error, event = event.name(), "committed event not published");
            }
        }
    }

    async fn retrying(
        &self,
        id: &str,
        command: A::Command,
        cause: &Metadata,
    ) -> Result<Committed<A>, RepositoryError<A::Error>>
    where
        A::Command: Clone,
    {
        let attempts = self.inner.conflict_attempts;
        for attempt in 1..=attempts {
            match self.try_execute(id, command.clone(), cause, attempt).await {
                Err(RepositoryError::Conflict { conflict, .. }) if attempt < attempts => {
                    tracing::debug!(%conflict, attempt, "conflict; running the command again");
                    // A little jitter so two writers that met do not meet again in lockstep.
                    let jitter = u64::from(Timestamp::now().as_unix_nanos() as u32 % 1_000);
                    tokio::time::sleep(Duration::from_micros(jitter * u64::from(attempt))).await;
                }
                result => return result,
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Runs `command` once: a conflict is returned, not retried. For commands that are not
    /// `Clone`.
    pub async fn execute_once(
        &self,
        id: &str,
        command: A::Command,
        cause: &Metadata,
    ) -> Result<Committed<A>, RepositoryError<A::Error>> {
        let committed = self.try_execute(id, command, cause, 1).await?;
        self.publish(&committed).await;
        Ok(committed)
    }

    async fn try_execute(
        &self,
        id: &str,
        command: A::Command,
        cause: &Metadata,
        attempt: u32,
    ) -> Result<Committed<A>, RepositoryError<A::Error>> {
        let Loaded {
            mut state, version, ..
        } = self.load(id).await?;
        let events = state.handle(command).map_err(RepositoryError::Rejected)?;
        if events.is_empty() {
            return Ok(Committed {
                events,
                metadata: Vec::new(),
                state,
                version,
                position: 0,
                attempts: attempt,
                snapshot_taken: false,
            });
        }
        let stream = stream_name::<A>(id);
        // Each event says where it belongs, also to subscribers on the bus.
        let metas: Vec<Metadata> = (version + 1..)
            .zip(&events)
            .map(|(at, _)| {
                let mut meta = Metadata::caused_by(cause);
                meta.headers.insert(STREAM_HEADER, stream.as_str());
                meta.headers.insert(VERSION_HEADER, at.to_string());
                meta
            })
            .collect();
        let data = events
            .iter()
            .zip(&metas)
            .map(|(event, meta)| event.encode(meta.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let expected = match version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        };
        let appended = match self.inner.store.append(&stream, expected, data).await {
            Ok(appended) => appended,
            Err(StoreError::Conflict(conflict)) => {
                return Err(RepositoryError::Conflict {
                    conflict,
                    attempts: attempt,
                })
            }
            Err(e) => return Err(e.into()),
        };
        for event in &events {
            state.apply(event);
        }
        let snapshot_taken = self
            .maybe_snapshot(&stream, &state, version, appended.version)
            .await;
        Ok(Committed {
            events,
            metadata: metas,
            state,
            version: appended.version,
            position: appended.last_position,
            attempts: attempt,
            snapshot_taken,
        })
    }

    /// Saves a snapshot if the stream crossed a multiple of the policy's interval.
    async fn maybe_snapshot(&self, stream: &str, state: &A, before: u64, after: u64) -> bool {
        let Some(policy) = &self.inner.snapshots else {
            return false;
        };
        if after / policy.every == before / policy.every {
            return false;
        }
        let state = match (policy.encode)(state) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%error, stream, "state does not encode; no snapshot taken");
                return false;
            }
        };
        let snapshot = Snapshot {
            stream: stream.to_owned(),
            version: after,
            schema_version: A::SNAPSHOT_VERSION,
            state,
            taken_at: Timestamp::now(),
        };
        match self.inner.store.save_snapshot(snapshot).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, stream, "snapshot not saved");
                false
            }
        }
    }
}
