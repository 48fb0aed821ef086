//! Durable storage: the event store, snapshots and checkpoints, and the durable side of
//! delivery (processed message ids, dead letters, scheduled messages).
//!
//! One [`Store`] handle, three backends:
//!
//! | backend | open with | for |
//! |---|---|---|
//! | memory | [`Store::memory`] or `"memory:"` | tests; gone with the process |
//! | SQLite | [`Store::sqlite`] or `"sqlite:PATH"` | the embedded default: one file, WAL mode, created on first use (feature `sqlite`, on by default) |
//! | PostgreSQL | [`Store::postgres`] or `"postgres://…"` | production (feature `postgres`) |
//!
//! Each backend runs its embedded migrations when opened, and all three pass one conformance
//! suite (`tests/store.rs`).
//!
//! # The event store
//!
//! Events are appended to a *stream* (one aggregate instance, say `account-42`) with an
//! [`ExpectedVersion`]; a batch is stored all or nothing, and a stream that moved on since the
//! caller read it fails with a [`ConcurrencyConflict`]. Every stored event has its stream
//! version (1, 2, …) and a *global position* that orders all events of the store.
//! [`Store::read_all`] pages through them by position and never skips an event that commits
//! late: positions become visible in order (see the backends for how).
//!
//! ```
//! use eventdriven::store::{EventData, ExpectedVersion, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), eventdriven::store::StoreError> {
//! let store = Store::memory();
//! let opened = EventData::json("account.opened", 1, &serde_json::json!({ "owner": "ada" }))?;
//! let appended = store.append("account-1", ExpectedVersion::NoStream, vec![opened]).await?;
//! assert_eq!(appended.version, 1);
//!
//! // A second writer that still believes the stream is new loses.
//! let again = EventData::json("account.opened", 1, &serde_json::json!({ "owner": "bob" }))?;
//! let conflict = store.append("account-1", ExpectedVersion::NoStream, vec![again]).await;
//! assert!(matches!(conflict, Err(eventdriven::store::StoreError::Conflict(_))));
//!
//! let events = store.read_stream("account-1", 1, 100).await?;
//! assert_eq!(events[0].payload["owner"], "ada");
//! # Ok(())
//! # }
//! ```

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod record;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tx;

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::message::{Event, MessageId, Metadata, Timestamp};

/// What the writer believes the stream's version is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// Append whatever the version.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be at exactly this version (`Exact(0)` is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` (0: no stream) satisfies this expectation.
    pub fn accepts(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(version) => actual == version,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// An append found the stream at another version than the writer expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream `{stream}` expected at {expected}, but it is at version {actual}")]
pub struct ConcurrencyConflict {
    /// The stream.
    pub stream: String,
    /// What the writer expected.
    pub expected: ExpectedVersion,
    /// The stream's version when the append was tried (0: the stream does not exist).
    pub actual: u64,
}

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An append's expected version did not match.
    #[error(transparent)]
    Conflict(#[from] ConcurrencyConflict),
    /// A value could not be encoded as JSON.
    #[error("cannot encode `{name}` as JSON: {source}")]
    Encode {
        /// The message or state type's name.
        name: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A stored payload does not decode into the type asked for.
    #[error("cannot decode `{name}` (schema version {schema_version}): {source}")]
    Decode {
        /// The stored name.
        name: String,
        /// The stored schema version.
        schema_version: u32,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A stored event's name is none of the types the reader knows.
    #[error("unknown event `{name}` (schema version {schema_version}): no variant of the aggregate's events has this name")]
    UnknownEvent {
        /// The stored name.
        name: String,
        /// The stored schema version.
        schema_version: u32,
    },
    /// A stored event has another schema version than its Rust type, and no upcaster bridges
    /// the difference.
    #[error("`{name}` is stored at schema version {stored} but the type is at version {current}: register an upcaster from version {stored} (`Upcasters::add`)")]
    SchemaVersion {
        /// The stored name.
        name: String,
        /// The version after every registered upcaster ran.
        stored: u32,
        /// The type's `Message::VERSION`.
        current: u32,
    },
    /// An upcaster refused a stored payload.
    #[error("upcasting `{name}` from schema version {from} failed: {message}")]
    Upcast {
        /// The stored name.
        name: String,
        /// The version the failing upcaster starts from.
        from: u32,
        /// The upcaster's error.
        message: String,
    },
    /// A reader's checkpoint moved while a transaction that claimed it ran: another reader of
    /// the same name (a second copy of a projection) got there first.
    #[error(
        "checkpoint `{name}` moved from {expected} to {actual}: another reader of that name runs"
    )]
    CheckpointMoved {
        /// The checkpoint's name.
        name: String,
        /// Where the transaction found it.
        expected: u64,
        /// Where it is now.
        actual: u64,
    },
    /// A row in the database is not what this crate wrote (a bad id, a bad number).
    #[error("corrupt row in the store: {0}")]
    Corrupt(String),
    /// The URL given to [`Store::open`] names no backend this build has.
    #[error("unsupported store URL `{0}`: use `memory:`, `sqlite:PATH` (feature `sqlite`) or `postgres://…` (feature `postgres`)")]
    Url(String),
    /// The database failed (connection, I/O, constraint).
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub use tx::{StoreTx, OUTBOX_STREAM};

/// Short for `Result<T, StoreError>`.
pub type StoreResult<T> = Result<T, StoreError>;

/// An event (or any message) encoded for storage: its stable name, schema version, JSON payload
/// and metadata.
#[derive(Clone, Debug)]
pub struct EventData {
    /// The stable name (`Message::NAME`).
    pub name: String,
    /// The payload's schema version (`Message::VERSION`).
    pub schema_version: u32,
    /// The payload.
    pub payload: serde_json::Value,
    /// Id, correlation, causation, headers, timestamp.
    pub metadata: Metadata,
}

impl EventData {
    /// Encodes a typed event with fresh root metadata.
    pub fn from_event<E: Event + Serialize>(event: &E) -> StoreResult<Self> {
        Self::from_event_with(event, Metadata::new())
    }

    /// Encodes a typed event with the given metadata.
    pub fn from_event_with<E: Event + Serialize>(
        event: &E,
        metadata: Metadata,
    ) -> StoreResult<Self> {
        let mut data = Self::json(E::NAME, E::VERSION, event)?;
        data.metadata = metadata;
        Ok(data)
    }

    /// Encodes any serializable value under a name and schema version, with fresh metadata.
    pub fn json<T: Serialize + ?Sized>(
        name: &str,
        schema_version: u32,
        value: &T,
    ) -> StoreResult<Self> {
        let payload = serde_json::to_value(value).map_err(|source| StoreError::Encode {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            schema_version,
            payload,
            metadata: Metadata::new(),
        })
    }
}

/// An event as the store holds it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Its place in the order of all events of the store (1, 2, …; gaps possible where an
    /// append rolled back, never reordering).
    pub position: u64,
    /// The stream it belongs to.
    pub stream: String,
    /// Its version within the stream (the first event is 1).
    pub version: u64,
    /// The stable name.
    pub name: String,
    /// The payload's schema version.
    pub schema_version: u32,
    /// The payload.
    pub payload: serde_json::Value,
    /// Id, correlation and causation ids, headers and timestamp as appended (`attempt` is 1,
    /// `expires_at` is not stored).
    pub metadata: Metadata,
}

impl StoredEvent {
    /// Decodes the payload into `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> StoreResult<T> {
        T::deserialize(&self.payload).map_err(|source| StoreError::Decode {
            name: self.name.clone(),
            schema_version: self.schema_version,
            source,
        })
    }
}

/// What an append did. An empty batch gives an empty range: `first_position` is
/// `last_position + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the append.
    pub version: u64,
    /// The global position of the first appended event.
    pub first_position: u64,
    /// The global position of the last appended event.
    pub last_position: u64,
}

/// The state of one stream (an aggregate) at a version, kept so loading need not replay every
/// event.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The stream.
    pub stream: String,
    /// The stream version the state includes.
    pub version: u64,
    /// The state's schema version: a snapshot of another schema is ignored on load.
    pub schema_version: u32,
    /// The state.
    pub state: serde_json::Value,
    /// When it was taken.
    pub taken_at: Timestamp,
}

/// A message that could not be handled, kept durably until it is retried or purged.
#[derive(Clone, Debug)]
pub struct StoredDeadLetter {
    /// The message.
    pub message: EventData,
    /// The actor or consumer it was meant for.
    pub recipient: String,
    /// Why it ended here.
    pub reason: String,
    /// When it failed for the last time.
    pub failed_at: Timestamp,
}

/// A message to be delivered at a time, kept durably until it is due.
#[derive(Clone, Debug)]
pub struct StoredSchedule {
    /// The message (its metadata id identifies the schedule).
    pub message: EventData,
    /// How it is to be delivered (for example `publish`, `tell`); the app decides the words.
    pub kind: String,
    /// When it is due.
    pub due: Timestamp,
}

/// `url` with its password, if any, replaced by `***`, for error messages and logs.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@').and_then(|at| {
        authority[..at]
            .find(':')
            .map(|colon| (scheme_end + colon + 1, scheme_end + at))
    }) {
        Some((from, to)) => format!("{}***{}", &url[..from], &url[to..]),
        None => url.to_owned(),
    }
}

/// One saga instance as stored: written after every step, read back to resume it.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaRecord {
    /// The saga type's name.
    pub saga: String,
    /// The instance's id (unique per saga type).
    pub id: String,
    /// Its status, as the saga runner names it (`running`, `compensating`, `completed`, ...).
    pub status: String,
    /// The step it is at: the next to run, or the next to compensate.
    pub step: u32,
    /// The saga's data.
    pub data: serde_json::Value,
    /// The last error, if any.
    pub error: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it was last written.
    pub updated_at: Timestamp,
    /// When it must be finished by, if it has a deadline.
    pub deadline: Option<Timestamp>,
}

/// A handle to a store; cheap to clone, shared by everything that uses it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// Woken after every append this process commits through any handle of the store, so
    /// readers that tail it (relays, projections) need not poll for their own process's
    /// events.
    appended: tokio::sync::Notify,
}

// One per store, behind the handle's `Arc`: the memory variant's size costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Memory(memory::MemoryStore),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresStore),
}

/// Calls the same method on whichever backend the store has.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match &$self.inner.backend {
            Backend::Memory(store) => store.$method($($arg),*).await,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(store) => store.$method($($arg),*).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Store").field(&self.backend_name()).finish()
    }
}

impl Store {
    /// Whether `other` is a handle of this same store.
    pub(crate) fn same_as(&self, other: &Store) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Store {
    /// A store in memory: for tests; everything is gone with the last handle.
    pub fn memory() -> Self {
        Self::from(Backend::Memory(memory::MemoryStore::default()))
    }

    /// Opens (creating it if missing) the SQLite database at `path`, in WAL mode, and runs the
    /// migrations.
    #[cfg(feature = "sqlite")]
    pub async fn sqlite(path: impl AsRef<std::path::Path>) -> StoreResult<Self> {
        Ok(Self::from(Backend::Sqlite(
            sqlite::SqliteStore::open(path.as_ref()).await?,
        )))
    }

    /// Connects to PostgreSQL at `url` (`postgres://user@host:port/db`) and runs the
    /// migrations.
    #[cfg(feature = "postgres")]
    pub async fn postgres(url: &str) -> StoreResult<Self> {
        Ok(Self::from(Backend::Postgres(
            postgres::PostgresStore::connect(url).await?,
        )))
    }

    /// Opens a store by URL: `memory:`, `sqlite:PATH` (or `sqlite://PATH`), `postgres://…`
    /// (or `postgresql://…`). SQLite always means a file: `sqlite::memory:` is refused (use
    /// `memory:` for a store that lives in memory).
    pub async fn open(url: &str) -> StoreResult<Self> {
        if url == "memory:" || url == "memory://" {
            return Ok(Self::memory());
        }
        #[cfg(feature = "sqlite")]
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path == ":memory:" {
                return Err(StoreError::Url(redact(url)));
            }
            return Self::sqlite(path).await;
        }
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Self::postgres(url).await;
        }
        Err(StoreError::Url(redact(url)))
    }

    fn from(backend: Backend) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                appended: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Completes at the next append this process commits to the store (through any handle).
    /// Readers that tail the store create the future before reading, then await it (with a
    /// timeout, to see other processes' appends too).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.appended.notified()
    }

    /// The SQLite store's pool of read connections, for queries on read models kept in the
    /// same file (write through a [`StoreTx`]); `None` on another backend.
    #[cfg(feature = "sqlite")]
    pub fn sqlite_readers(&self) -> Option<&sqlx::SqlitePool> {
        match &self.inner.backend {
            Backend::Sqlite(store) => Some(store.readers()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The PostgreSQL store's connection pool, for queries on read models kept in the same
    /// database; `None` on another backend.
    #[cfg(feature = "postgres")]
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.inner.backend {
            Backend::Postgres(store) => Some(store.pool()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// `"memory"`, `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.inner.backend {
            Backend::Memory(_) => "memory",
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Appends `events` to `stream`, all or nothing, if the stream is at `expected`.
    ///
    /// An empty batch checks the expectation and appends nothing.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> StoreResult<Appended> {
        let appended = dispatch!(self.append(stream, expected, events))?;
        if appended.last_position >= appended.first_position {
            self.inner.appended.notify_waiters();
        }
        Ok(appended)
    }

    /// Up to `limit` events of `stream` from version `from` (inclusive; the first is 1), in
    /// version order. A missing stream reads as empty.
    pub async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        dispatch!(self.read_stream(stream, from, limit))
    }

    /// The stream's current version; 0 if it does not exist.
    pub async fn stream_version(&self, stream: &str) -> StoreResult<u64> {
        dispatch!(self.stream_version(stream))
    }

    /// Up to `limit` events of all streams after global position `after` (0: from the start),
    /// in position order. Never skips an event: one whose append commits later than a
    /// following position's cannot exist, because positions become visible in order.
    pub async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        dispatch!(self.read_all(after, limit))
    }

    /// The position of the last event stored; 0 if none.
    pub async fn head(&self) -> StoreResult<u64> {
        dispatch!(self.head())
    }

    /// Stores `snapshot`, replacing the stream's previous one.
    pub async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        dispatch!(self.save_snapshot(snapshot))
    }

    /// The stream's latest snapshot, if any.
    pub async fn load_snapshot(&self, stream: &str) -> StoreResult<Option<Snapshot>> {
        dispatch!(self.load_snapshot(stream))
    }

    /// Records how far the reader `name` (a projection, a relay) got.
    pub async fn save_checkpoint(&self, name: &str, position: u64) -> StoreResult<()> {
        dispatch!(self.save_checkpoint(name, position))
    }

    /// How far the reader `name` got; `None` if it never saved a checkpoint.
    pub async fn load_checkpoint(&self, name: &str) -> StoreResult<Option<u64>> {
        dispatch!(self.load_checkpoint(name))
    }

    /// Records that `consumer` processed message `id`. `false` if it was already recorded.
    pub async fn record_processed(&self, consumer: &str, id: MessageId) -> StoreResult<bool> {
        dispatch!(self.record_processed(consumer, id))
    }

    /// Whether `consumer` processed message `id`.
    pub async fn is_processed(&self, consumer: &str, id: MessageId) -> StoreResult<bool> {
        dispatch!(self.is_processed(consumer, id))
    }

    /// Up to `limit` processed ids of every consumer recorded at or after `since`, oldest
    /// first, as (consumer, id).
    pub async fn processed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<(String, MessageId)>> {
        dispatch!(self.processed_since(since, limit))
    }

    /// Forgets the ids `consumer` recorded before `before`; returns how many.
    pub async fn prune_processed(&self, consumer: &str, before: Timestamp) -> StoreResult<u64> {
        dispatch!(self.prune_processed(consumer, before))
    }

    /// Stores a dead letter (replacing one with the same message id and recipient).
    pub async fn put_dead_letter(&self, letter: StoredDeadLetter) -> StoreResult<()> {
        dispatch!(self.put_dead_letter(letter))
    }

    /// Up to `limit` dead letters, oldest failure first.
    pub async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<StoredDeadLetter>> {
        dispatch!(self.dead_letters(limit))
    }

    /// Removes the dead letter of message `id` for `recipient`; `false` if there was none.
    pub async fn remove_dead_letter(&self, id: MessageId, recipient: &str) -> StoreResult<bool> {
        dispatch!(self.remove_dead_letter(id, recipient))
    }

    /// Stores a saga instance, replacing what was stored for its saga type and id.
    pub async fn save_saga(&self, record: &SagaRecord) -> StoreResult<()> {
        dispatch!(self.save_saga(record))
    }

    /// Stores a new saga instance; `false` (storing nothing) if one with its type and id exists.
    pub async fn create_saga(&self, record: &SagaRecord) -> StoreResult<bool> {
        dispatch!(self.create_saga(record))
    }

    /// The saga instance `id` of type `saga`, if stored.
    pub async fn load_saga(&self, saga: &str, id: &str) -> StoreResult<Option<SagaRecord>> {
        dispatch!(self.load_saga(saga, id))
    }

    /// Up to `limit` saga instances (of type `saga`, or of every type), by type and id.
    pub async fn list_sagas(
        &self,
        saga: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SagaRecord>> {
        dispatch!(self.list_sagas(saga, limit))
    }

    /// Stores a scheduled message (replacing one with the same message id).
    pub async fn put_schedule(&self, schedule: StoredSchedule) -> StoreResult<()> {
        dispatch!(self.put_schedule(schedule))
    }

    /// Up to `limit` scheduled messages due at or before `until`, earliest first.
    pub async fn due_schedules(
        &self,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<StoredSchedule>> {
        dispatch!(self.due_schedules(until, limit))
    }

    /// Removes the scheduled message `id`; `false` if there was none (already delivered or
    /// cancelled).
    pub async fn remove_schedule(&self, id: MessageId) -> StoreResult<bool> {
        dispatch!(self.remove_schedule(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_errors_hide_the_password() {
        assert_eq!(
            redact("postgres://ada:secret@db:5432/app"),
            "postgres://ada:***@db:5432/app"
        );
        assert_eq!(redact("postgres://ada@db/app"), "postgres://ada@db/app");
        assert_eq!(redact("sqlite:events.db"), "sqlite:events.db");
        assert_eq!(redact("mysql://u:p@h/d?x=a@b"), "mysql://u:***@h/d?x=a@b");
    }

    #[tokio::test]
    async fn unknown_and_in_memory_sqlite_urls_are_refused() {
        for url in ["mysql://u:p@h/d", "sqlite::memory:", "sqlite:"] {
            let err = Store::open(url).await.unwrap_err();
            assert!(matches!(err, StoreError::Url(_)), "{url}: {err}");
            assert!(!err.to_string().contains(":p@"), "{err}");
        }
    }
}
