//! How values are written into database columns and read back: shared by the SQL backends
//! (compiled only with one of them).

use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};
use crate::message::{Headers, MessageId, Metadata, Timestamp};

/// Headers as a JSON array of `[name, value]` pairs (order and repeats kept); `None` if empty.
pub(crate) fn headers_to_json(headers: &Headers) -> Option<String> {
    if headers.is_empty() {
        return None;
    }
    let pairs: Vec<(&str, &str)> = headers.iter().collect();
    Some(serde_json::to_string(&pairs).expect("string pairs always encode"))
}

/// The inverse of [`headers_to_json`].
pub(crate) fn headers_from_json(text: Option<&str>) -> StoreResult<Headers> {
    let mut headers = Headers::new();
    if let Some(text) = text {
        let pairs: Vec<(String, String)> = serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("headers {text:?}: {e}")))?;
        for (name, value) in pairs {
            headers.insert(name, value);
        }
    }
    Ok(headers)
}

/// All of a message's metadata, for tables that keep it in one column.
#[derive(Serialize, Deserialize)]
struct MetaRecord {
    id: String,
    correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causation_id: Option<String>,
    timestamp: u64,
    attempt: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

/// Metadata as one JSON text.
pub(crate) fn meta_to_json(meta: &Metadata) -> String {
    let record = MetaRecord {
        id: meta.id.to_string(),
        correlation_id: meta.correlation_id.to_string(),
        causation_id: meta.causation_id.map(|id| id.to_string()),
        timestamp: meta.timestamp.as_unix_nanos(),
        attempt: meta.attempt,
        headers: meta
            .headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        expires_at: meta.expires_at.map(Timestamp::as_unix_nanos),
    };
    serde_json::to_string(&record).expect("metadata always encodes")
}

/// The inverse of [`meta_to_json`].
pub(crate) fn meta_from_json(text: &str) -> StoreResult<Metadata> {
    let record: MetaRecord = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("metadata {text:?}: {e}")))?;
    let mut headers = Headers::new();
    for (name, value) in record.headers {
        headers.insert(name, value);
    }
    Ok(Metadata {
        id: parse_id(&record.id)?,
        correlation_id: parse_id(&record.correlation_id)?,
        causation_id: record.causation_id.as_deref().map(parse_id).transpose()?,
        timestamp: timestamp(record.timestamp)?,
        attempt: record.attempt,
        headers,
        expires_at: record.expires_at.map(timestamp).transpose()?,
    })
}

/// A message id from its stored text.
pub(crate) fn parse_id(text: &str) -> StoreResult<MessageId> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{e}")))
}

/// A timestamp from stored nanoseconds since the epoch.
pub(crate) fn timestamp(nanos: u64) -> StoreResult<Timestamp> {
    if nanos == 0 {
        return Err(StoreError::Corrupt("timestamp 0".to_owned()));
    }
    Ok(Timestamp::from_unix_nanos(nanos))
}

/// A number the store was given (a position, a version, a timestamp) as the signed 64-bit
/// integer both SQL backends store; an error, not a wrapped value, if it does not fit.
pub(crate) fn to_i64(value: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(value).map_err(|_| {
        StoreError::Database(
            format!("{what} {value} does not fit the database's signed 64-bit integers").into(),
        )
    })
}

/// A bound for a query (`after`, `until`, a limit): values past `i64::MAX` mean the same as
/// `i64::MAX`, since no stored value is larger.
pub(crate) fn clamp_i64<T: TryInto<i64>>(value: T) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// A stored signed integer read back as the unsigned number it was written from.
pub(crate) fn to_u64(value: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

/// A stored schema version read back.
pub(crate) fn to_u32(value: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{what} {value} is not a 32-bit unsigned number")))
}

/// A stored timestamp (nanoseconds) read back.
pub(crate) fn to_timestamp(value: i64, what: &str) -> StoreResult<Timestamp> {
    timestamp(to_u64(value, what)?)
}

/// A JSON value as the text a column holds.
pub(crate) fn json_to_text(name: &str, value: &serde_json::Value) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode {
        name: name.to_owned(),
        source,
    })
}

/// A JSON column's text parsed back.
pub(crate) fn json_from_text(text: &str, what: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A database failure.
pub(crate) fn db(error: sqlx::Error) -> StoreError {
    StoreError::Database(Box::new(error))
}

/// Whether `error` is a unique-key violation.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

/// One column of a row, or [`StoreError::Corrupt`] if it is missing or of another type.
pub(crate) fn column<'r, R, T>(row: &'r R, name: &'static str) -> StoreResult<T>
where
    R: sqlx::Row,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column `{name}`: {e}")))
}

/// An event about to be appended, in the column types both SQL backends write.
#[derive(Clone)]
pub(crate) struct NewEvent {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) schema_version: i64,
    pub(crate) payload: String,
    pub(crate) correlation_id: String,
    pub(crate) causation_id: Option<String>,
    pub(crate) headers: Option<String>,
    pub(crate) timestamp: i64,
}

impl NewEvent {
    /// Encodes `data`; `attempt` and `expires_at` are not stored (an event is a fact, not a
    /// delivery).
    pub(crate) fn encode(data: &super::EventData) -> StoreResult<Self> {
        let meta = &data.metadata;
        Ok(Self {
            id: meta.id.to_string(),
            name: data.name.clone(),
            schema_version: i64::from(data.schema_version),
            payload: json_to_text(&data.name, &data.payload)?,
            correlation_id: meta.correlation_id.to_string(),
            causation_id: meta.causation_id.map(|id| id.to_string()),
            headers: headers_to_json(&meta.headers),
            timestamp: to_i64(meta.timestamp.as_unix_nanos(), "timestamp")?,
        })
    }
}

/// A stored event from the columns `position, stream, version, id, name, schema_version,
/// payload, correlation_id, causation_id, headers, timestamp` (ids and payload as text), or
/// [`StoreError::Corrupt`] if one does not parse.
pub(crate) fn event_from_row<R: SqlRow>(row: &R) -> StoreResult<super::StoredEvent>
where
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(super::StoredEvent {
        position: to_u64(row.int("position")?, "position")?,
        stream: row.text("stream")?,
        version: to_u64(row.int("version")?, "version")?,
        name: row.text("name")?,
        schema_version: to_u32(row.int("schema_version")?, "schema version")?,
        payload: json_from_text(&row.text("payload")?, "payload")?,
        metadata: Metadata {
            id: parse_id(&row.text("id")?)?,
            correlation_id: parse_id(&row.text("correlation_id")?)?,
            causation_id: row
                .opt_text("causation_id")?
                .as_deref()
                .map(parse_id)
                .transpose()?,
            timestamp: to_timestamp(row.int("timestamp")?, "timestamp")?,
            attempt: 1,
            headers: headers_from_json(row.opt_text("headers")?.as_deref())?,
            expires_at: None,
        },
    })
}

/// The row types both SQL backends read columns of: `BIGINT`/`INTEGER`, text and nullable
/// text.
pub(crate) trait SqlRow: sqlx::Row
where
    &'static str: sqlx::ColumnIndex<Self>,
{
    /// An integer column.
    fn int(&self, name: &'static str) -> StoreResult<i64>;
    /// A text column.
    fn text(&self, name: &'static str) -> StoreResult<String>;
    /// A nullable text column.
    fn opt_text(&self, name: &'static str) -> StoreResult<Option<String>>;
}

impl<R> SqlRow for R
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, name: &'static str) -> StoreResult<i64> {
        column(self, name)
    }

    fn text(&self, name: &'static str) -> StoreResult<String> {
        column(self, name)
    }

    fn opt_text(&self, name: &'static str) -> StoreResult<Option<String>> {
        column(self, name)
    }
}

/// A snapshot from the columns `stream, version, schema_version, state, taken_at` (state as
/// text).
pub(crate) fn snapshot_from_row<R: SqlRow>(row: &R) -> StoreResult<super::Snapshot>
where
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(super::Snapshot {
        stream: row.text("stream")?,
        version: to_u64(row.int("version")?, "snapshot version")?,
        schema_version: to_u32(row.int("schema_version")?, "snapshot schema version")?,
        state: json_from_text(&row.text("state")?, "snapshot state")?,
        taken_at: to_timestamp(row.int("taken_at")?, "snapshot time")?,
    })
}

/// A whole message from the columns `name, schema_version, payload, metadata` (payload and
/// metadata as text).
fn message_from_row<R: SqlRow>(row: &R) -> StoreResult<super::EventData>
where
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(super::EventData {
        name: row.text("name")?,
        schema_version: to_u32(row.int("schema_version")?, "schema version")?,
        payload: json_from_text(&row.text("payload")?, "payload")?,
        metadata: meta_from_json(&row.text("metadata")?)?,
    })
}

/// A dead letter from the message's columns and `recipient, reason, failed_at`.
pub(crate) fn dead_letter_from_row<R: SqlRow>(row: &R) -> StoreResult<super::StoredDeadLetter>
where
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(super::StoredDeadLetter {
        message: message_from_row(row)?,
        recipient: row.text("recipient")?,
        reason: row.text("reason")?,
        failed_at: to_timestamp(row.int("failed_at")?, "failure time")?,
    })
}

/// A scheduled message from the message's columns and `kind, due`.
pub(crate) fn schedule_from_row<R: SqlRow>(row: &R) -> StoreResult<super::StoredSchedule>
where
    &'static str: sqlx::ColumnIndex<R>,
{
    Ok(super::StoredSchedule {
        message: message_from_row(row)?,
        kind: row.text("kind")?,
        due: to_timestamp(row.int("due")?, "due time")?,
    })
}

/// A saga instance from its row.
pub(crate) fn saga_from_row<R: SqlRow>(row: &R) -> StoreResult<super::SagaRecord>
where
    &'static str: sqlx::ColumnIndex<R>,
{
    let data = row.text("data")?;
    Ok(super::SagaRecord {
        saga: row.text("saga")?,
        id: row.text("id")?,
        status: row.text("status")?,
        step: to_u32(row.int("step")?, "saga step")?,
        data: json_from_text(&data, "saga data")?,
        error: row.opt_text("error")?,
        started_at: to_timestamp(row.int("started_at")?, "saga start")?,
        updated_at: to_timestamp(row.int("updated_at")?, "saga update")?,
        deadline: row
            .opt_text("deadline")?
            .map(|d| {
                d.parse::<i64>()
                    .map_err(|e| StoreError::Corrupt(format!("saga deadline {d:?}: {e}")))
                    .and_then(|d| to_timestamp(d, "saga deadline"))
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_json() {
        let mut meta = Metadata::caused_by(&Metadata::new());
        meta.headers.insert("tenant", "acme");
        meta.attempt = 3;
        meta.expires_at = Some(meta.timestamp);
        let back = meta_from_json(&meta_to_json(&meta)).unwrap();
        assert_eq!(back.id, meta.id);
        assert_eq!(back.correlation_id, meta.correlation_id);
        assert_eq!(back.causation_id, meta.causation_id);
        assert_eq!(back.timestamp, meta.timestamp);
        assert_eq!(back.attempt, 3);
        assert_eq!(back.headers, meta.headers);
        assert_eq!(back.expires_at, meta.expires_at);
    }

    #[test]
    fn headers_round_trip_and_empty_is_null() {
        assert_eq!(headers_to_json(&Headers::new()), None);
        let mut headers = Headers::new();
        headers.insert("a", "1");
        let text = headers_to_json(&headers).unwrap();
        assert_eq!(headers_from_json(Some(&text)).unwrap(), headers);
    }

    #[test]
    fn corrupt_metadata_is_an_error_not_a_panic() {
        assert!(matches!(meta_from_json("{"), Err(StoreError::Corrupt(_))));
    }
}
