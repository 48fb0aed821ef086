//! The SQLite backend: one database file in WAL mode.
//!
//! # Writers are serialised
//!
//! Every write goes through `writer`, a pool of exactly one connection, and every
//! multi-statement write transaction starts with `BEGIN IMMEDIATE`:
//!
//! - SQLite allows one writer at a time anyway. With one write connection per store, tasks of
//!   this process queue for it in the pool (first come, first served, bounded by the pool's
//!   acquire timeout) instead of racing inside SQLite, where a deferred transaction that read
//!   the stream's version and then tries to write fails at once with `SQLITE_BUSY` when another
//!   connection wrote in between (in WAL mode the busy timeout cannot help such a transaction,
//!   as its snapshot is already stale).
//! - `BEGIN IMMEDIATE` takes the write lock before the first read, so another process (or
//!   another [`Store`](super::Store) opened on the same file) makes us wait, within the busy
//!   timeout, at `BEGIN` rather than fail halfway through an append. Single-statement writes
//!   (upserts, deletes) take the write lock before reading anything and wait the same way.
//!
//! A `tokio::sync::Mutex` around one shared pool would serialise this process's writers too,
//! but would leave read and write connections mixed and the wait for the lock unbounded; the
//! single-connection pool gives the same order with a bounded wait.
//!
//! Reads use `readers`, a few more connections: in WAL mode they never block the writer or
//! each other, and each statement reads one committed snapshot.
//!
//! # Positions
//!
//! `position` is an `INTEGER PRIMARY KEY AUTOINCREMENT`: assigned under the single write lock,
//! so in commit order, and never reused (not even after the last events are deleted by hand).
//! An append that rolls back also rolls back the counter, so positions stay dense.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::record::{
    clamp_i64, db, dead_letter_from_row, event_from_row, is_unique_violation, json_to_text,
    meta_to_json, parse_id, saga_from_row, schedule_from_row, snapshot_from_row, to_i64, to_u64,
    NewEvent,
};
use super::{
    Appended, ConcurrencyConflict, EventData, ExpectedVersion, SagaRecord, Snapshot, StoreError,
    StoreResult, StoredDeadLetter, StoredEvent, StoredSchedule,
};
use crate::message::{MessageId, Timestamp};

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a task waits for a connection from a pool (for writes: its turn to write).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections for reads.
const READERS: u32 = 4;

/// The schema, one step per migration; step `i` is version `i + 1`. Append new steps, never
/// edit old ones.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE eventdriven_events (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        version INTEGER NOT NULL,
        id TEXT NOT NULL,
        name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        payload TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        causation_id TEXT,
        headers TEXT,
        timestamp INTEGER NOT NULL,
        CONSTRAINT eventdriven_events_stream_version UNIQUE (stream, version)
    )",
        // `read_all` pages by `position`, the rowid: no other index needed. `read_stream` and the
        // stream's version use the unique index of (stream, version).
        "CREATE TABLE eventdriven_snapshots (
        stream TEXT PRIMARY KEY NOT NULL,
        version INTEGER NOT NULL,
        schema_version INTEGER NOT NULL,
        state TEXT NOT NULL,
        taken_at INTEGER NOT NULL
    )",
        "CREATE TABLE eventdriven_checkpoints (
        name TEXT PRIMARY KEY NOT NULL,
        position INTEGER NOT NULL
    )",
        "CREATE TABLE eventdriven_processed (
        consumer TEXT NOT NULL,
        id TEXT NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (consumer, id)
    )",
        "CREATE INDEX eventdriven_processed_recorded_at
        ON eventdriven_processed (consumer, recorded_at)",
        "CREATE TABLE eventdriven_dead_letters (
        id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL,
        reason TEXT NOT NULL,
        failed_at INTEGER NOT NULL,
        PRIMARY KEY (id, recipient)
    )",
        "CREATE INDEX eventdriven_dead_letters_failed_at
        ON eventdriven_dead_letters (failed_at, id, recipient)",
        "CREATE TABLE eventdriven_schedules (
        id TEXT PRIMARY KEY NOT NULL,
        due INTEGER NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        payload TEXT NOT NULL,
        metadata TEXT NOT NULL
    )",
        "CREATE INDEX eventdriven_schedules_due ON eventdriven_schedules (due, id)",
    ],
    &[
        "CREATE TABLE eventdriven_sagas (
        saga TEXT NOT NULL,
        id TEXT NOT NULL,
        status TEXT NOT NULL,
        step INTEGER NOT NULL,
        data TEXT NOT NULL,
        error TEXT,
        started_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        deadline INTEGER,
        PRIMARY KEY (saga, id)
    )",
        "CREATE INDEX eventdriven_sagas_status ON eventdriven_sagas (status, saga, id)",
    ],
];

/// `SELECT` of every event column (as `event_from_row` reads them) followed by `$rest`.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT position, stream, version, id, name, schema_version, payload, ",
            "correlation_id, causation_id, headers, timestamp FROM eventdriven_events ",
            $rest
        )
    };
}

pub(crate) struct SqliteStore {
    /// The one connection that writes (see the module docs).
    writer: SqlitePool,
    /// Connections for reads.
    readers: SqlitePool,
}

impl SqliteStore {
    pub(crate) async fn open(path: &Path) -> StoreResult<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Database(Box::new(e)))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // WAL mode is a property of the file: the writer sets it, and the readers, which
        // connect after the writer did, find it.
        let writer = connect_writer(options.clone().journal_mode(SqliteJournalMode::Wal)).await?;
        migrate(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(Self { writer, readers })
    }

    pub(crate) async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> StoreResult<Appended> {
        // Everything that can fail without the database fails before the write lock is taken.
        let rows = events
            .iter()
            .map(NewEvent::encode)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut tx = self.begin().await?;
        match append_in(&mut tx, stream, expected, &rows).await {
            Ok(appended) => {
                tx.commit().await.map_err(db)?;
                Ok(appended)
            }
            Err(e) => {
                // Nothing was written; dropping the transaction would roll it back as well.
                let _ = tx.rollback().await;
                Err(self.settle_conflict(stream, expected, e).await)
            }
        }
    }

    /// The read connections.
    pub(crate) fn readers(&self) -> &SqlitePool {
        &self.readers
    }

    /// A write transaction: `BEGIN IMMEDIATE` on the one write connection (see the module docs).
    pub(crate) async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }

    /// Turns a unique violation of `append_in` (another writer got in) into the conflict with
    /// the version that writer left.
    pub(crate) async fn settle_conflict(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        error: AppendError,
    ) -> StoreError {
        match error {
            AppendError::Store(e) => e,
            AppendError::Taken => match self.stream_version(stream).await {
                Ok(actual) => conflict(stream, expected, actual),
                Err(e) => e,
            },
        }
    }

    pub(crate) async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let rows = sqlx::query(select_events!(
            "WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?"
        ))
        .bind(stream)
        .bind(clamp_i64(from))
        .bind(clamp_i64(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn stream_version(&self, stream: &str) -> StoreResult<u64> {
        let mut conn = self.readers.acquire().await.map_err(db)?;
        stream_version(&mut conn, stream).await
    }

    pub(crate) async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let rows = sqlx::query(select_events!(
            "WHERE position > ? ORDER BY position LIMIT ?"
        ))
        .bind(clamp_i64(after))
        .bind(clamp_i64(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn head(&self) -> StoreResult<u64> {
        let head: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM eventdriven_events")
                .fetch_one(&self.readers)
                .await
                .map_err(db)?;
        to_u64(head, "position")
    }

    pub(crate) async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        let state = json_to_text(&snapshot.stream, &snapshot.state)?;
        sqlx::query(
            "INSERT INTO eventdriven_snapshots (stream, version, schema_version, state, taken_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (stream) DO UPDATE SET version = excluded.version, \
             schema_version = excluded.schema_version, state = excluded.state, \
             taken_at = excluded.taken_at",
        )
        .bind(&snapshot.stream)
        .bind(to_i64(snapshot.version, "snapshot version")?)
        .bind(i64::from(snapshot.schema_version))
        .bind(state)
        .bind(to_i64(snapshot.taken_at.as_unix_nanos(), "snapshot time")?)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn load_snapshot(&self, stream: &str) -> StoreResult<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT stream, version, schema_version, state, taken_at \
             FROM eventdriven_snapshots WHERE stream = ?",
        )
        .bind(stream)
        .fetch_optional(&self.readers)
        .await
        .map_err(db)?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    pub(crate) async fn save_checkpoint(&self, name: &str, position: u64) -> StoreResult<()> {
        save_checkpoint_on(&self.writer, name, position).await
    }

    pub(crate) async fn load_checkpoint(&self, name: &str) -> StoreResult<Option<u64>> {
        load_checkpoint_on(&self.readers, name).await
    }

    pub(crate) async fn record_processed(
        &self,
        consumer: &str,
        id: MessageId,
    ) -> StoreResult<bool> {
        record_processed_on(&self.writer, consumer, id).await
    }

    pub(crate) async fn is_processed(&self, consumer: &str, id: MessageId) -> StoreResult<bool> {
        let found =
            sqlx::query("SELECT 1 FROM eventdriven_processed WHERE consumer = ? AND id = ?")
                .bind(consumer)
                .bind(id.to_string())
                .fetch_optional(&self.readers)
                .await
                .map_err(db)?;
        Ok(found.is_some())
    }

    pub(crate) async fn processed_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<(String, MessageId)>> {
        let rows = sqlx::query(
            "SELECT consumer, id AS id FROM eventdriven_processed \
             WHERE recorded_at >= ? ORDER BY recorded_at LIMIT ?",
        )
        .bind(clamp_i64(since.as_unix_nanos()))
        .bind(clamp_i64(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let consumer: String = super::record::column(row, "consumer")?;
                let id: String = super::record::column(row, "id")?;
                Ok((consumer, parse_id(&id)?))
            })
            .collect()
    }

    pub(crate) async fn prune_processed(
        &self,
        consumer: &str,
        before: Timestamp,
    ) -> StoreResult<u64> {
        let done =
            sqlx::query("DELETE FROM eventdriven_processed WHERE consumer = ? AND recorded_at < ?")
                .bind(consumer)
                .bind(clamp_i64(before.as_unix_nanos()))
                .execute(&self.writer)
                .await
                .map_err(db)?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn put_dead_letter(&self, letter: StoredDeadLetter) -> StoreResult<()> {
        let message = &letter.message;
        sqlx::query(
            "INSERT INTO eventdriven_dead_letters \
             (id, recipient, name, schema_version, payload, metadata, reason, failed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id, recipient) DO UPDATE SET name = excluded.name, \
             schema_version = excluded.schema_version, payload = excluded.payload, \
             metadata = excluded.metadata, reason = excluded.reason, \
             failed_at = excluded.failed_at",
        )
        .bind(message.metadata.id.to_string())
        .bind(&letter.recipient)
        .bind(&message.name)
        .bind(i64::from(message.schema_version))
        .bind(json_to_text(&message.name, &message.payload)?)
        .bind(meta_to_json(&message.metadata))
        .bind(&letter.reason)
        .bind(to_i64(letter.failed_at.as_unix_nanos(), "failure time")?)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<StoredDeadLetter>> {
        let rows = sqlx::query(
            "SELECT name, schema_version, payload, metadata, recipient, reason, failed_at \
             FROM eventdriven_dead_letters ORDER BY failed_at, id, recipient LIMIT ?",
        )
        .bind(clamp_i64(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    pub(crate) async fn remove_dead_letter(
        &self,
        id: MessageId,
        recipient: &str,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM eventdriven_dead_letters WHERE id = ? AND recipient = ?")
                .bind(id.to_string())
                .bind(recipient)
                .execute(&self.writer)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn save_saga(&self, record: &SagaRecord) -> StoreResult<()> {
        save_saga_on(&self.writer, record, true).await.map(drop)
    }

    pub(crate) async fn create_saga(&self, record: &SagaRecord) -> StoreResult<bool> {
        save_saga_on(&self.writer, record, false).await
    }

    pub(crate) async fn load_saga(&self, saga: &str, id: &str) -> StoreResult<Option<SagaRecord>> {
        let row = sqlx::query("SELECT saga, id, status, step, data, error, started_at, updated_at, CAST(deadline AS TEXT) AS deadline FROM eventdriven_sagas WHERE saga = ? AND id = ?")
            .bind(saga)
            .bind(id)
            .fetch_optional(&self.readers)
            .await
            .map_err(db)?;
        row.as_ref().map(saga_from_row).transpose()
    }

    pub(crate) async fn list_sagas(
        &self,
        saga: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SagaRecord>> {
        let rows = match saga {
            Some(saga) => {
                sqlx::query("SELECT saga, id, status, step, data, error, started_at, updated_at, CAST(deadline AS TEXT) AS deadline FROM eventdriven_sagas WHERE saga = ? ORDER BY saga, id LIMIT ?")
                    .bind(saga)
                    .bind(clamp_i64(limit))
                    .fetch_all(&self.readers)
                    .await
            }
            None => {
                sqlx::query("SELECT saga, id, status, step, data, error, started_at, updated_at, CAST(deadline AS TEXT) AS deadline FROM eventdriven_sagas ORDER BY saga, id LIMIT ?")
                    .bind(clamp_i64(limit))
                    .fetch_all(&self.readers)
                    .await
            }
        }
        .map_err(db)?;
        rows.iter().map(saga_from_row).collect()
    }

    pub(crate) async fn put_schedule(&self, schedule: StoredSchedule) -> StoreResult<()> {
        let message = &schedule.message;
        sqlx::query(
            "INSERT INTO eventdriven_schedules \
             (id, due, kind, name, schema_version, payload, metadata) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET due = excluded.due, kind = excluded.kind, \
             name = excluded.name, schema_version = excluded.schema_version, \
             payload = excluded.payload, metadata = excluded.metadata",
        )
        .bind(message.metadata.id.to_string())
        .bind(to_i64(schedule.due.as_unix_nanos(), "due time")?)
        .bind(&schedule.kind)
        .bind(&message.name)
        .bind(i64::from(message.schema_version))
        .bind(json_to_text(&message.name, &message.payload)?)
        .bind(meta_to_json(&message.metadata))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn due_schedules(
        &self,
        until: Timestamp,
        limit: usize,
    ) -> StoreResult<Vec<StoredSchedule>> {
        let rows = sqlx::query(
            "SELECT name, schema_version, payload, metadata, kind, due \
             FROM eventdriven_schedules WHERE due <= ? ORDER BY due, id LIMIT ?",
        )
        .bind(clamp_i64(until.as_unix_nanos()))
        .bind(clamp_i64(limit))
        .fetch_all(&self.readers)
        .await
        .map_err(db)?;
        rows.iter().map(schedule_from_row).collect()
    }

    pub(crate) async fn remove_schedule(&self, id: MessageId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM eventdriven_schedules WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

/// `save_checkpoint` on any executor: the pool, or a transaction's connection.
pub(crate) async fn save_checkpoint_on<'c, E: sqlx::Executor<'c, Database = sqlx::Sqlite>>(
    exec: E,
    name: &str,
    position: u64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO eventdriven_checkpoints (name, position) VALUES (?, ?) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
    )
    .bind(name)
    .bind(to_i64(position, "checkpoint position")?)
    .execute(exec)
    .await
    .map_err(db)?;
    Ok(())
}

/// `load_checkpoint` on any executor: the pool, or a transaction's connection.
pub(crate) async fn load_checkpoint_on<'c, E: sqlx::Executor<'c, Database = sqlx::Sqlite>>(
    exec: E,
    name: &str,
) -> StoreResult<Option<u64>> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM eventdriven_checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(exec)
            .await
            .map_err(db)?;
    position
        .map(|p| to_u64(p, "checkpoint position"))
        .transpose()
}

/// `record_processed` on any executor: the pool, or a transaction's connection.
pub(crate) async fn record_processed_on<'c, E: sqlx::Executor<'c, Database = sqlx::Sqlite>>(
    exec: E,
    consumer: &str,
    id: MessageId,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO eventdriven_processed (consumer, id, recorded_at) VALUES (?, ?, ?) \
         ON CONFLICT (consumer, id) DO NOTHING",
    )
    .bind(consumer)
    .bind(id.to_string())
    .bind(to_i64(Timestamp::now().as_unix_nanos(), "time")?)
    .execute(exec)
    .await
    .map_err(db)?;
    Ok(done.rows_affected() == 1)
}

/// `save_saga` on any executor: the pool, or a transaction's connection.
pub(crate) async fn save_saga_on<'c, E: sqlx::Executor<'c, Database = sqlx::Sqlite>>(
    exec: E,
    record: &SagaRecord,
    replace: bool,
) -> StoreResult<bool> {
    const REPLACE: &str = "INSERT INTO eventdriven_sagas \
         (saga, id, status, step, data, error, started_at, updated_at, deadline) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (saga, id) DO UPDATE SET status = excluded.status, \
         step = excluded.step, data = excluded.data, error = excluded.error, \
         started_at = excluded.started_at, updated_at = excluded.updated_at, \
         deadline = excluded.deadline";
    const CREATE: &str = "INSERT INTO eventdriven_sagas \
         (saga, id, status, step, data, error, started_at, updated_at, deadline) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         \
         ON CONFLICT (saga, id) DO NOTHING";
    let done = sqlx::query(if replace { REPLACE } else { CREATE })
        .bind(&record.saga)
        .bind(&record.id)
        .bind(&record.status)
        .bind(i64::from(record.step))
        .bind(json_to_text(&record.saga, &record.data)?)
        .bind(&record.error)
        .bind(to_i64(record.started_at.as_unix_nanos(), "saga start")?)
        .bind(to_i64(record.updated_at.as_unix_nanos(), "saga update")?)
        .bind(
            record
                .deadline
                .map(|d| to_i64(d.as_unix_nanos(), "saga deadline"))
                .transpose()?,
        )
        .execute(exec)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

/// Takes the checkpoint `name` for this transaction (locking its row where the database
/// can) and tells whether it still is at `expected` (a missing one counts as 0).
pub(crate) async fn claim_checkpoint_on(
    conn: &mut sqlx::SqliteConnection,
    name: &str,
    expected: u64,
) -> StoreResult<bool> {
    // The row exists before it is locked, so two claimers of a new checkpoint meet on it.
    sqlx::query(
        "INSERT INTO eventdriven_checkpoints (name, position) VALUES (?, 0) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let position: i64 =
        sqlx::query_scalar("SELECT position FROM eventdriven_checkpoints WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    Ok(to_u64(position, "checkpoint position")? == expected)
}

fn conflict(stream: &str, expected: ExpectedVersion, actual: u64) -> StoreError {
    ConcurrencyConflict {
        stream: stream.to_owned(),
        expected,
        actual,
    }
    .into()
}

/// Connects the write connection. Switching a new database into WAL mode needs an exclusive
/// lock that SQLite does not wait for with the busy timeout, so when several stores (or
/// processes) open a new file at once, all but one get `SQLITE_BUSY`: they retry, within
/// [`BUSY_TIMEOUT`], until the file is in WAL mode (after which the switch is a no-op).
async fn connect_writer(options: SqliteConnectOptions) -> StoreResult<SqlitePool> {
    let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(2);
    loop {
        let connected = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await;
        match connected {
            Ok(pool) => return Ok(pool),
            Err(e) if is_busy(&e) && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(db(e)),
        }
    }
}

/// Whether `error` is `SQLITE_BUSY` or `SQLITE_LOCKED` (with any extended code).
fn is_busy(error: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// Why `append_in` failed.
pub(crate) enum AppendError {
    /// A conflict or another store error, final.
    Store(StoreError),
    /// The unique (stream, version) key refused a row: another writer got in; the transaction
    /// is spoilt and the actual version must be read outside it.
    Taken,
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Appends inside the write transaction `conn` is in: checks the expected version, inserts the
/// rows in version order. Commits nothing.
pub(crate) async fn append_in(
    conn: &mut sqlx::SqliteConnection,
    stream: &str,
    expected: ExpectedVersion,
    rows: &[NewEvent],
) -> Result<Appended, AppendError> {
    let actual = stream_version(conn, stream).await?;
    if !expected.accepts(actual) {
        return Err(conflict(stream, expected, actual).into());
    }
    if rows.is_empty() {
        let head: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM eventdriven_events")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
        let head = to_u64(head, "position")?;
        return Ok(Appended {
            version: actual,
            first_position: head + 1,
            last_position: head,
        });
    }
    let mut first_position = None;
    let mut last_position = 0;
    for (i, row) in rows.iter().enumerate() {
        let version = to_i64(actual + i as u64 + 1, "version")?;
        let inserted = sqlx::query(
            "INSERT INTO eventdriven_events (stream, version, id, name, schema_version, \
             payload, correlation_id, causation_id, headers, timestamp) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(stream)
        .bind(version)
        .bind(&row.id)
        .bind(&row.name)
        .bind(row.schema_version)
        .bind(&row.payload)
        .bind(&row.correlation_id)
        .bind(&row.causation_id)
        .bind(&row.headers)
        .bind(row.timestamp)
        .execute(&mut *conn)
        .await;
        match inserted {
            Ok(done) => {
                let position = to_u64(done.last_insert_rowid(), "position")?;
                first_position.get_or_insert(position);
                last_position = position;
            }
            // The unique (stream, version) key is the safety net should another writer have
            // got in (it cannot while writers are serialised).
            Err(e) if is_unique_violation(&e) => return Err(AppendError::Taken),
            Err(e) => return Err(db(e).into()),
        }
    }
    Ok(Appended {
        version: actual + rows.len() as u64,
        first_position: first_position.unwrap_or(last_position + 1),
        last_position,
    })
}

/// The stream's version (0: no stream) as `conn` sees it.
async fn stream_version(conn: &mut sqlx::SqliteConnection, stream: &str) -> StoreResult<u64> {
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) FROM eventdriven_events WHERE stream = ?",
    )
    .bind(stream)
    .fetch_one(conn)
    .await
    .map_err(db)?;
    to_u64(version, "version")
}

/// Applies the migrations this database lacks, each in its own `BEGIN IMMEDIATE` transaction,
/// so two processes opening a new file together apply each step once.
async fn migrate(writer: &SqlitePool) -> StoreResult<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS eventdriven_migrations (
            version INTEGER PRIMARY KEY NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .execute(writer)
    .await
    .map_err(db)?;
    for (index, statements) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let applied = sqlx::query("SELECT 1 FROM eventdriven_migrations WHERE version = ?")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_some();
        if applied {
            tx.rollback().await.map_err(db)?;
            continue;
        }
        for statement in *statements {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        sqlx::query("INSERT INTO eventdriven_migrations (version, applied_at) VALUES (?, ?)")
            .bind(version)
            .bind(to_i64(Timestamp::now().as_unix_nanos(), "time")?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A file in a new temp directory, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new() -> Self {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "eventdriven-sqlite-unit-{}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                Timestamp::now().as_unix_nanos()
            ));
            Self(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("store.db")
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn event(n: u64) -> EventData {
        EventData::json("unit", 1, &serde_json::json!({ "n": n })).unwrap()
    }

    async fn insert_raw(store: &SqliteStore, stream: &str, id: &str, version: i64, payload: &str) {
        sqlx::query(
            "INSERT INTO eventdriven_events (stream, version, id, name, schema_version, payload, \
             correlation_id, causation_id, headers, timestamp) \
             VALUES (?, ?, ?, 'bad', 1, ?, ?, NULL, NULL, 1)",
        )
        .bind(stream)
        .bind(version)
        .bind(id)
        .bind(payload)
        .bind(MessageId::new().to_string())
        .execute(&store.writer)
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn rows_that_do_not_parse_are_corrupt_not_a_panic() {
        let dir = TempFile::new();
        let store = SqliteStore::open(&dir.file()).await.unwrap();
        let good = MessageId::new().to_string();
        insert_raw(&store, "bad-id", "not-an-id", 1, "{}").await;
        insert_raw(&store, "bad-json", &good, 1, "{").await;
        insert_raw(&store, "bad-version", &good, -1, "{}").await;
        sqlx::query(
            "INSERT INTO eventdriven_events (stream, version, id, name, schema_version, payload, \
             correlation_id, timestamp) VALUES ('bad-type', 1, ?, 'bad', 'one', '{}', ?, 1)",
        )
        .bind(&good)
        .bind(&good)
        .execute(&store.writer)
        .await
        .unwrap();
        assert!(matches!(
            store.stream_version("bad-version").await,
            Err(StoreError::Corrupt(_))
        ));
        for stream in ["bad-id", "bad-json", "bad-type"] {
            let read = store.read_stream(stream, 1, 10).await;
            assert!(
                matches!(read, Err(StoreError::Corrupt(_))),
                "{stream}: {read:?}"
            );
        }
        assert!(matches!(
            store.read_all(0, 10).await,
            Err(StoreError::Corrupt(_))
        ));
        sqlx::query(
            "INSERT INTO eventdriven_schedules (id, due, kind, name, schema_version, payload, \
             metadata) VALUES (?, 5, 'publish', 'bad', 1, '{}', 'not json')",
        )
        .bind(&good)
        .execute(&store.writer)
        .await
        .unwrap();
        assert!(matches!(
            store
                .due_schedules(Timestamp::from_unix_nanos(10), 10)
                .await,
            Err(StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn values_past_i64_are_an_error_not_a_wrapped_number() {
        let dir = TempFile::new();
        let store = SqliteStore::open(&dir.file()).await.unwrap();
        assert!(matches!(
            store.save_checkpoint("c", u64::MAX).await,
            Err(StoreError::Database(_))
        ));
        assert_eq!(store.load_checkpoint("c").await.unwrap(), None);
    }

    /// Two stores on one file (as two processes would be) and several tasks on each append to
    /// one stream: `BEGIN IMMEDIATE` and the busy timeout make them wait, never fail.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_stores_on_one_file_never_fail_with_busy() {
        let dir = TempFile::new();
        let stores = [
            std::sync::Arc::new(SqliteStore::open(&dir.file()).await.unwrap()),
            std::sync::Arc::new(SqliteStore::open(&dir.file()).await.unwrap()),
        ];
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let store = stores[task as usize % 2].clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..20 {
                    loop {
                        let version = store.stream_version("shared").await.unwrap();
                        match store
                            .append(
                                "shared",
                                ExpectedVersion::Exact(version),
                                vec![event(task * 100 + n)],
                            )
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::Conflict(_)) => tokio::task::yield_now().await,
                            Err(e) => panic!("append failed: {e}"),
                        }
                    }
                }
            }));
        }
        for task in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(60), task)
                .await
                .expect("a writer hung")
                .unwrap();
        }
        let events = stores[1].read_stream("shared", 1, 1000).await.unwrap();
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=160).collect::<Vec<_>>());
        assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    }
}
