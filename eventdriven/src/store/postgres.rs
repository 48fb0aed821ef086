//! The PostgreSQL backend.
//!
//! # Positions become visible in order
//!
//! Positions come from an identity column (a sequence). A sequence alone is not enough for
//! [`read_all`](PostgresStore::read_all): transaction A may take position 10 and transaction
//! B position 11, and B may commit first. A reader that pages in between sees 11, continues
//! after 11, and skips 10 for ever once A commits.
//!
//! So every append transaction first takes one transaction-scoped advisory lock,
//! `pg_advisory_xact_lock(APPEND_LOCK)`, and only then reads the stream's version and inserts.
//! Appends therefore take their positions one transaction after another, and the next append
//! gets the lock only once the previous one has ended: PostgreSQL releases a transaction's
//! locks after its commit became visible to other sessions (`ProcArrayEndTransaction` comes
//! before the locks are released in `CommitTransaction`). Every position a reader can see is
//! thus preceded by positions that are visible already, or by ones that will never exist (an
//! append that rolled back leaves a gap, which no reader waits for).
//!
//! The cost: appends to the whole store are serialised, streams or not, each holding the
//! lock for its transaction's duration (a few round trips: lock, version, one `INSERT` for the
//! batch, commit). Reads never take the lock. Batching events per append keeps throughput up.
//! The lock is per database, so stores in other databases do not contend.
//!
//! The unique (stream, version) key stays as a safety net: a violation (SQLSTATE 23505) is
//! reported as a [`ConcurrencyConflict`], not a database error.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

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

/// The advisory lock every append transaction holds (see the module docs): "evdrappd".
const APPEND_LOCK: i64 = 0x6576_6472_6170_7064;
/// The advisory lock migrations hold, so processes starting together apply each step once:
/// "evdrmigr".
const MIGRATION_LOCK: i64 = 0x6576_6472_6d69_6772;
/// How long a task waits for a connection from the pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pool's size.
const MAX_CONNECTIONS: u32 = 16;

/// The schema, one step per migration; step `i` is version `i + 1`. Append new steps, never
/// edit old ones.
const MIGRATIONS: &[&[&str]] = &[
    &[
        // `read_all` pages by `position`, the primary key: no other index needed. `read_stream`
        // and the stream's version use the unique index of (stream, version).
        "CREATE TABLE eventdriven_events (
        position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        stream TEXT NOT NULL,
        version BIGINT NOT NULL,
        id UUID NOT NULL,
        name TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        payload JSONB NOT NULL,
        correlation_id UUID NOT NULL,
        causation_id UUID,
        headers TEXT,
        timestamp BIGINT NOT NULL,
        CONSTRAINT eventdriven_events_stream_version UNIQUE (stream, version)
    )",
        "CREATE TABLE eventdriven_snapshots (
        stream TEXT PRIMARY KEY,
        version BIGINT NOT NULL,
        schema_version BIGINT NOT NULL,
        state JSONB NOT NULL,
        taken_at BIGINT NOT NULL
    )",
        "CREATE TABLE eventdriven_checkpoints (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL
    )",
        "CREATE TABLE eventdriven_processed (
        consumer TEXT NOT NULL,
        id UUID NOT NULL,
        recorded_at BIGINT NOT NULL,
        PRIMARY KEY (consumer, id)
    )",
        "CREATE INDEX eventdriven_processed_recorded_at
        ON eventdriven_processed (consumer, recorded_at)",
        "CREATE TABLE eventdriven_dead_letters (
        id UUID NOT NULL,
        recipient TEXT NOT NULL,
        name TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        payload JSONB NOT NULL,
        metadata TEXT NOT NULL,
        reason TEXT NOT NULL,
        failed_at BIGINT NOT NULL,
        PRIMARY KEY (id, recipient)
    )",
        // Listing orders by (failed_at, id, recipient) with recipients compared byte-wise, as
        // the other backends do whatever the database's collation.
        "CREATE INDEX eventdriven_dead_letters_failed_at
        ON eventdriven_dead_letters (failed_at, id, recipient COLLATE \"C\")",
        "CREATE TABLE eventdriven_schedules (
        id UUID PRIMARY KEY,
        due BIGINT NOT NULL,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        schema_version BIGINT NOT NULL,
        payload JSONB NOT NULL,
        metadata TEXT NOT NULL
    )",
        "CREATE INDEX eventdriven_schedules_due ON eventdriven_schedules (due, id)",
    ],
    &[
        "CREATE TABLE eventdriven_sagas (
        saga TEXT NOT NULL,
        id TEXT NOT NULL,
        status TEXT NOT NULL,
        step BIGINT NOT NULL,
        data JSONB NOT NULL,
        error TEXT,
        started_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        deadline BIGINT,
        PRIMARY KEY (saga, id)
    )",
        "CREATE INDEX eventdriven_sagas_status ON eventdriven_sagas (status, saga, id)",
    ],
];

/// `SELECT` of every event column (ids and payload as text, as `event_from_row` reads them)
/// followed by `$rest`.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT position, stream, version, id::text AS id, name, schema_version, ",
            "payload::text AS payload, correlation_id::text AS correlation_id, ",
            "causation_id::text AS causation_id, headers, timestamp FROM eventdriven_events ",
            $rest
        )
    };
}

pub(crate) struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub(crate) async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url).map_err(db)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db)?;
        migrate(&pool).await?;
        Ok(Self { pool })
    }

    pub(crate) async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> StoreResult<Appended> {
        // Everything that can fail without the database fails before the lock is taken.
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

    /// The pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction on the pool.
    pub(crate) async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(db)
    }

    /// Turns a unique violation of `append_in` (a writer without the lock got in) into the
    /// conflict with the version that writer left.
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
            "WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
        ))
        .bind(stream)
        .bind(clamp_i64(from))
        .bind(clamp_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn stream_version(&self, stream: &str) -> StoreResult<u64> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        stream_version(&mut conn, stream).await
    }

    pub(crate) async fn read_all(&self, after: u64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let rows = sqlx::query(select_events!(
            "WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(clamp_i64(after))
        .bind(clamp_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(event_from_row).collect()
    }

    pub(crate) async fn head(&self) -> StoreResult<u64> {
        let head: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM eventdriven_events")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        to_u64(head, "position")
    }

    pub(crate) async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        let state = json_to_text(&snapshot.stream, &snapshot.state)?;
        sqlx::query(
            "INSERT INTO eventdriven_snapshots (stream, version, schema_version, state, taken_at) \
             VALUES ($1, $2, $3, $4::jsonb, $5) \
             ON CONFLICT (stream) DO UPDATE SET version = excluded.version, \
             schema_version = excluded.schema_version, state = excluded.state, \
             taken_at = excluded.taken_at",
        )
        .bind(&snapshot.stream)
        .bind(to_i64(snapshot.version, "snapshot version")?)
        .bind(i64::from(snapshot.schema_version))
        .bind(state)
        .bind(to_i64(snapshot.taken_at.as_unix_nanos(), "snapshot time")?)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn load_snapshot(&self, stream: &str) -> StoreResult<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT stream, version, schema_version, state::text AS state, taken_at \
             FROM eventdriven_snapshots WHERE stream = $1",
        )
        .bind(stream)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    pub(crate) async fn save_checkpoint(&self, name: &str, position: u64) -> StoreResult<()> {
        save_checkpoint_on(&self.pool, name, position).await
    }

    pub(crate) async fn load_checkpoint(&self, name: &str) -> StoreResult<Option<u64>> {
        load_checkpoint_on(&self.pool, name).await
    }

    pub(crate) async fn record_processed(
        &self,
        consumer: &str,
        id: MessageId,
    ) -> StoreResult<bool> {
        record_processed_on(&self.pool, consumer, id).await
    }

    pub(crate) async fn is_processed(&self, consumer: &str, id: MessageId) -> StoreResult<bool> {
        let found = sqlx::query(
            "SELECT 1 FROM eventdriven_processed WHERE consumer = $1 AND id = $2::uuid",
        )
        .bind(consumer)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
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
            "SELECT consumer, id::text AS id FROM eventdriven_processed \
             WHERE recorded_at >= $1 ORDER BY recorded_at LIMIT $2",
        )
        .bind(clamp_i64(since.as_unix_nanos()))
        .bind(clamp_i64(limit))
        .fetch_all(&self.pool)
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
        let done = sqlx::query(
            "DELETE FROM eventdriven_processed WHERE consumer = $1 AND recorded_at < $2",
        )
        .bind(consumer)
        .bind(clamp_i64(before.as_unix_nanos()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn put_dead_letter(&self, letter: StoredDeadLetter) -> StoreResult<()> {
        let message = &letter.message;
        sqlx::query(
            "INSERT INTO eventdriven_dead_letters \
             (id, recipient, name, schema_version, payload, metadata, reason, failed_at) \
             VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6, $7, $8) \
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
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn dead_letters(&self, limit: usize) -> StoreResult<Vec<StoredDeadLetter>> {
        let rows = sqlx::query(
            "SELECT name, schema_version, payload::text AS payload, metadata, recipient, reason, \
             failed_at FROM eventdriven_dead_letters \
             ORDER BY failed_at, id, recipient COLLATE \"C\" LIMIT $1",
        )
        .bind(clamp_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    pub(crate) async fn remove_dead_letter(
        &self,
        id: MessageId,
        recipient: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM eventdriven_dead_letters WHERE id = $1::uuid AND recipient = $2",
        )
        .bind(id.to_string())
        .bind(recipient)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn save_saga(&self, record: &SagaRecord) -> StoreResult<()> {
        save_saga_on(&self.pool, record, true).await.map(drop)
    }

    pub(crate) async fn create_saga(&self, record: &SagaRecord) -> StoreResult<bool> {
        save_saga_on(&self.pool, record, false).await
    }

    pub(crate) async fn load_saga(&self, saga: &str, id: &str) -> StoreResult<Option<SagaRecord>> {
        let row = sqlx::query("SELECT saga, id, status, step, data::text AS data, error, started_at, updated_at, deadline::text AS deadline FROM eventdriven_sagas WHERE saga = $1 AND id = $2")
            .bind(saga)
            .bind(id)
            .fetch_optional(&self.pool)
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
                sqlx::query("SELECT saga, id, status, step, data::text AS data, error, started_at, updated_at, deadline::text AS deadline FROM eventdriven_sagas WHERE saga = $1 ORDER BY saga, id COLLATE \"C\" LIMIT $2")
                    .bind(saga)
                    .bind(clamp_i64(limit))
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query("SELECT saga, id, status, step, data::text AS data, error, started_at, updated_at, deadline::text AS deadline FROM eventdriven_sagas ORDER BY saga, id COLLATE \"C\" LIMIT $1")
                    .bind(clamp_i64(limit))
                    .fetch_all(&self.pool)
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
             VALUES ($1::uuid, $2, $3, $4, $5, $6::jsonb, $7) \
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
        .execute(&self.pool)
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
            "SELECT name, schema_version, payload::text AS payload, metadata, kind, due \
             FROM eventdriven_schedules WHERE due <= $1 ORDER BY due, id LIMIT $2",
        )
        .bind(clamp_i64(until.as_unix_nanos()))
        .bind(clamp_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(schedule_from_row).collect()
    }

    pub(crate) async fn remove_schedule(&self, id: MessageId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM eventdriven_schedules WHERE id = $1::uuid")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

/// Why `append_in` failed.
pub(crate) enum AppendError {
    /// A conflict or another store error, final.
    Store(StoreError),
    /// The unique (stream, version) key refused a row: the transaction is aborted and the
    /// actual version must be read outside it.
    Taken,
}

impl From<StoreError> for AppendError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Appends inside the transaction `conn` is in: takes the append lock (held until that
/// transaction ends), checks the expected version, inserts the batch. Commits nothing.
pub(crate) async fn append_in(
    conn: &mut sqlx::PgConnection,
    stream: &str,
    expected: ExpectedVersion,
    rows: &[NewEvent],
) -> Result<Appended, AppendError> {
    // Positions are taken and committed in order: see the module docs.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let actual = stream_version(&mut *conn, stream).await?;
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

    // The batch in one statement: one array per column, unnested in order, so the
    // identity column numbers the rows in version order.
    let mut ids = Vec::with_capacity(rows.len());
    let mut names = Vec::with_capacity(rows.len());
    let mut schema_versions = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut correlation_ids = Vec::with_capacity(rows.len());
    let mut causation_ids = Vec::with_capacity(rows.len());
    let mut headers = Vec::with_capacity(rows.len());
    let mut timestamps = Vec::with_capacity(rows.len());
    for row in rows.iter().cloned() {
        ids.push(row.id);
        names.push(row.name);
        schema_versions.push(row.schema_version);
        payloads.push(row.payload);
        correlation_ids.push(row.correlation_id);
        causation_ids.push(row.causation_id);
        headers.push(row.headers);
        timestamps.push(row.timestamp);
    }
    let count = ids.len() as u64;
    let inserted: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(
        "INSERT INTO eventdriven_events (stream, version, id, name, schema_version, payload, \
             correlation_id, causation_id, headers, timestamp) \
             SELECT $1, $2 + e.ord, e.id::uuid, e.name, e.schema_version, e.payload::jsonb, \
             e.correlation_id::uuid, e.causation_id::uuid, e.headers, e.timestamp \
             FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], \
             $8::text[], $9::text[], $10::bigint[]) WITH ORDINALITY \
             AS e(id, name, schema_version, payload, correlation_id, causation_id, headers, \
             timestamp, ord) \
             ORDER BY e.ord \
             RETURNING position",
    )
    .bind(stream)
    .bind(to_i64(actual, "version")?)
    .bind(ids)
    .bind(names)
    .bind(schema_versions)
    .bind(payloads)
    .bind(correlation_ids)
    .bind(causation_ids)
    .bind(headers)
    .bind(timestamps)
    .fetch_all(&mut *conn)
    .await;
    let positions = match inserted {
        Ok(positions) => positions,
        // The safety net should a writer ever get in without the lock: a conflict, with
        // the version that writer left.
        Err(e) if is_unique_violation(&e) => return Err(AppendError::Taken),
        Err(e) => return Err(db(e).into()),
    };
    let (Some(&first), Some(&last)) = (positions.iter().min(), positions.iter().max()) else {
        return Err(
            StoreError::Corrupt("an append of events returned no positions".to_owned()).into(),
        );
    };
    Ok(Appended {
        version: actual + count,
        first_position: to_u64(first, "position")?,
        last_position: to_u64(last, "position")?,
    })
}

/// `save_checkpoint` on any executor: the pool, or a transaction's connection.
pub(crate) async fn save_checkpoint_on<'c, E: sqlx::Executor<'c, Database = sqlx::Postgres>>(
    exec: E,
    name: &str,
    position: u64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO eventdriven_checkpoints (name, position) VALUES ($1, $2) \
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
pub(crate) async fn load_checkpoint_on<'c, E: sqlx::Executor<'c, Database = sqlx::Postgres>>(
    exec: E,
    name: &str,
) -> StoreResult<Option<u64>> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM eventdriven_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(exec)
            .await
            .map_err(db)?;
    position
        .map(|p| to_u64(p, "checkpoint position"))
        .transpose()
}

/// `record_processed` on any executor: the pool, or a transaction's connection.
pub(crate) async fn record_processed_on<'c, E: sqlx::Executor<'c, Database = sqlx::Postgres>>(
    exec: E,
    consumer: &str,
    id: MessageId,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO eventdriven_processed (consumer, id, recorded_at) \
         VALUES ($1, $2::uuid, $3) ON CONFLICT (consumer, id) DO NOTHING",
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
pub(crate) async fn save_saga_on<'c, E: sqlx::Executor<'c, Database = sqlx::Postgres>>(
    exec: E,
    record: &SagaRecord,
    replace: bool,
) -> StoreResult<bool> {
    const REPLACE: &str = "INSERT INTO eventdriven_sagas \
         (saga, id, status, step, data, error, started_at, updated_at, deadline) \
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9) \
         ON CONFLICT (saga, id) DO UPDATE SET status = excluded.status, \
         step = excluded.step, data = excluded.data, error = excluded.error, \
         started_at = excluded.started_at, updated_at = excluded.updated_at, \
         deadline = excluded.deadline";
    const CREATE: &str = "INSERT INTO eventdriven_sagas \
         (saga, id, status, step, data, error, started_at, updated_at, deadline) \
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9) \
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
    conn: &mut sqlx::PgConnection,
    name: &str,
    expected: u64,
) -> StoreResult<bool> {
    // The row exists before it is locked, so two claimers of a new checkpoint meet on it.
    sqlx::query(
        "INSERT INTO eventdriven_checkpoints (name, position) VALUES ($1, 0) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let position: i64 = sqlx::query_scalar(
        "SELECT position FROM eventdriven_checkpoints WHERE name = $1 FOR UPDATE",
    )
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

/// The stream's version (0: no stream) as `conn` sees it.
async fn stream_version(conn: &mut sqlx::PgConnection, stream: &str) -> StoreResult<u64> {
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) FROM eventdriven_events WHERE stream = $1",
    )
    .bind(stream)
    .fetch_one(conn)
    .await
    .map_err(db)?;
    to_u64(version, "version")
}

/// Applies the migrations this database lacks, each in its own transaction that first takes
/// the migration advisory lock, so processes starting together apply each step once.
async fn migrate(pool: &PgPool) -> StoreResult<()> {
    // The bookkeeping table, under the lock too: concurrent `CREATE TABLE IF NOT EXISTS` can
    // fail, and checking first spares a "relation already exists" notice at every connect.
    let mut tx = pool.begin().await.map_err(db)?;
    lock_migrations(&mut tx).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('eventdriven_migrations') IS NOT NULL")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
    if !exists {
        sqlx::query(
            "CREATE TABLE eventdriven_migrations (
                version BIGINT PRIMARY KEY,
                applied_at BIGINT NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;

    for (index, statements) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        let mut tx = pool.begin().await.map_err(db)?;
        lock_migrations(&mut tx).await?;
        let applied = sqlx::query("SELECT 1 FROM eventdriven_migrations WHERE version = $1")
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
        sqlx::query("INSERT INTO eventdriven_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(to_i64(Timestamp::now().as_unix_nanos(), "time")?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
    }
    Ok(())
}

/// Takes the migration lock until the transaction ends.
async fn lock_migrations(conn: &mut sqlx::PgConnection) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}
