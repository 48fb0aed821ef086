//! CloudEvents 1.0 in JSON: how events leave the process (to brokers) and come back.
//!
//! Two modes, as the CloudEvents spec has them:
//! - **structured**: one JSON document holds the attributes and the event (`data`);
//! - **binary**: the attributes are message headers (`ce-id`, `ce-type`, …) and the body is
//!   the event's JSON.
//!
//! The event's stable name is the CloudEvents `type`, and its metadata travels as attributes:
//! `id` (the message id), `source`, `time`, and the extensions `schemaversion`,
//! `correlationid`, `causationid`, plus one `edheader<n>` pair per header. Decoding refuses
//! anything it cannot trust with a [`CodecError`] that says what is wrong — a malformed
//! document, a missing or bad attribute, an unsupported spec version or content type, an
//! oversize message — and never panics: a bridge dead-letters such input with the reason.
//!
//! ```
//! use eventdriven::codec::{self, Limits};
//! use eventdriven::store::EventData;
//!
//! let event = EventData::json("order.placed", 2, &serde_json::json!({ "order": 7 })).unwrap();
//! let bytes = codec::to_structured(&event, "/orders");
//! let back = codec::from_structured(&bytes, &Limits::default()).unwrap();
//! assert_eq!((back.name.as_str(), back.schema_version), ("order.placed", 2));
//! assert_eq!(back.metadata.id, event.metadata.id);
//! assert_eq!(back.payload["order"], 7);
//! ```

use serde_json::{Map, Value};

use crate::message::{Headers, MessageId, Metadata, Timestamp};
use crate::store::EventData;

/// The CloudEvents version written and accepted.
pub const SPEC_VERSION: &str = "1.0";

/// The content type of the event data.
pub const CONTENT_TYPE: &str = "application/json";

/// What decoding refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest message accepted, in bytes (body and header values together).
    pub max_bytes: usize,
}

impl Default for Limits {
    /// 1 MiB.
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
        }
    }
}

/// Why an incoming message is not an event this process can take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Larger than the limit.
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    Oversize {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON, or not a JSON object.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A required attribute is missing.
    #[error("missing CloudEvents attribute `{0}`")]
    Missing(&'static str),
    /// An attribute has a value this codec cannot use.
    #[error("bad CloudEvents attribute `{name}`: {reason}")]
    Bad {
        /// The attribute.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another CloudEvents version.
    #[error("unsupported CloudEvents specversion `{0}` (this codec speaks 1.0)")]
    SpecVersion(String),
    /// Data that is not JSON.
    #[error("unsupported datacontenttype `{0}` (this codec reads application/json)")]
    ContentType(String),
}

/// The attributes of `event` as (name, value) pairs, `data` aside.
fn attributes(event: &EventData, source: &str) -> Vec<(String, String)> {
    let meta = &event.metadata;
    let mut attributes = vec![
        ("specversion".to_owned(), SPEC_VERSION.to_owned()),
        ("id".to_owned(), meta.id.to_string()),
        ("source".to_owned(), source.to_owned()),
        ("type".to_owned(), event.name.clone()),
        ("time".to_owned(), meta.timestamp.to_string()),
        ("datacontenttype".to_owned(), CONTENT_TYPE.to_owned()),
        ("schemaversion".to_owned(), event.schema_version.to_string()),
        ("correlationid".to_owned(), meta.correlation_id.to_string()),
    ];
    if let Some(cause) = meta.causation_id {
        attributes.push(("causationid".to_owned(), cause.to_string()));
    }
    for (i, (name, value)) in meta.headers.iter().enumerate() {
        attributes.push((format!("edheader{i}name"), name.to_owned()));
        attributes.push((format!("edheader{i}value"), value.to_owned()));
    }
    attributes
}

/// The event as one CloudEvents JSON document (structured mode).
pub fn to_structured(event: &EventData, source: &str) -> Vec<u8> {
    let mut document = Map::new();
    for (name, value) in attributes(event, source) {
        document.insert(name, Value::String(value));
    }
    document.insert("data".to_owned(), event.payload.clone());
    serde_json::to_vec(&Value::Object(document)).expect("a JSON value always encodes")
}

/// The event as CloudEvents binary mode: headers (`ce-<attribute>`, and `content-type`) and
/// the body (the event's JSON).
pub fn to_binary(event: &EventData, source: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let headers = attributes(event, source)
        .into_iter()
        .map(|(name, value)| match name.as_str() {
            "datacontenttype" => ("content-type".to_owned(), value),
            _ => (format!("ce-{name}"), value),
        })
        .collect();
    let body = serde_json::to_vec(&event.payload).expect("a JSON value always encodes");
    (headers, body)
}

/// Reads a structured-mode CloudEvents document.
pub fn from_structured(bytes: &[u8], limits: &Limits) -> Result<EventData, CodecError> {
    check_size(bytes.len(), limits)?;
    let document: Value =
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let Value::Object(mut document) = document else {
        return Err(CodecError::Malformed("not a JSON object".to_owned()));
    };
    let data = document.remove("data").unwrap_or(Value::Null);
    let attribute = |name: &'static str| -> Result<Option<String>, CodecError> {
        match document.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(CodecError::Bad {
                name: name.to_owned(),
                reason: format!("expected a string, found {other}"),
            }),
        }
    };
    let mut headers = Vec::new();
    for i in 0.. {
        let name = document.get(&format!("edheader{i}name"));
        let value = document.get(&format!("edheader{i}value"));
        match (name, value) {
            (Some(Value::String(n)), Some(Value::String(v))) => {
                headers.push((n.clone(), v.clone()))
            }
            (None, None) => break,
            _ => {
                return Err(CodecError::Bad {
                    name: format!("edheader{i}"),
                    reason: "a header needs a name and a value, both strings".to_owned(),
                })
            }
        }
    }
    build(&attribute, headers, data)
}

/// Reads a binary-mode CloudEvents message: its headers and body.
pub fn from_binary<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
    limits: &Limits,
) -> Result<EventData, CodecError> {
    let headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let size = body.len()
        + headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>();
    check_size(size, limits)?;
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let attribute = |name: &'static str| -> Result<Option<String>, CodecError> {
        Ok(match name {
            "datacontenttype" => find("content-type"),
            _ => find(&format!("ce-{name}")),
        })
    };
    let mut extra = Vec::new();
    for i in 0.. {
        match (
            find(&format!("ce-edheader{i}name")),
            find(&format!("ce-edheader{i}value")),
        ) {
            (Some(n), Some(v)) => extra.push((n, v)),
            (None, None) => break,
            _ => {
                return Err(CodecError::Bad {
                    name: format!("edheader{i}"),
                    reason: "a header needs a name and a value".to_owned(),
                })
            }
        }
    }
    let data = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| CodecError::Malformed(e.to_string()))?
    };
    build(&attribute, extra, data)
}

fn check_size(size: usize, limits: &Limits) -> Result<(), CodecError> {
    if size > limits.max_bytes {
        return Err(CodecError::Oversize {
            size,
            limit: limits.max_bytes,
        });
    }
    Ok(())
}

/// The event from its attributes, checked.
fn build(
    attribute: &dyn Fn(&'static str) -> Result<Option<String>, CodecError>,
    headers: Vec<(String, String)>,
    data: Value,
) -> Result<EventData, CodecError> {
    let required = |name: &'static str| attribute(name)?.ok_or(CodecError::Missing(name));
    let spec = required("specversion")?;
    if spec != SPEC_VERSION {
        return Err(CodecError::SpecVersion(spec));
    }
    if let Some(content_type) = attribute("datacontenttype")? {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media != CONTENT_TYPE && !media.ends_with("+json") {
            return Err(CodecError::ContentType(content_type));
        }
    }
    let id = parse_id("id", &required("id")?)?;
    required("source")?;
    let name = required("type")?;
    if name.is_empty() {
        return Err(CodecError::Bad {
            name: "type".to_owned(),
            reason: "empty".to_owned(),
        });
    }
    let schema_version = match attribute("schemaversion")? {
        Some(v) => v.parse().map_err(|_| CodecError::Bad {
            name: "schemaversion".to_owned(),
            reason: format!("`{v}` is not a number"),
        })?,
        None => 1,
    };
    let timestamp = match attribute("time")? {
        Some(t) => parse_time(&t)?,
        None => Timestamp::now(),
    };
    let correlation_id = match attribute("correlationid")? {
        Some(c) => parse_id("correlationid", &c)?,
        None => id,
    };
    let causation_id = attribute("causationid")?
        .map(|c| parse_id("causationid", &c))
        .transpose()?;
    let mut meta_headers = Headers::new();
    for (n, v) in headers {
        meta_headers.insert(n, v);
    }
    let mut metadata = Metadata::new();
    metadata.id = id;
    metadata.correlation_id = correlation_id;
    metadata.causation_id = causation_id;
    metadata.timestamp = timestamp;
    metadata.headers = meta_headers;
    Ok(EventData {
        name,
        schema_version,
        payload: data,
        metadata,
    })
}

fn parse_id(name: &str, text: &str) -> Result<MessageId, CodecError> {
    text.parse().map_err(|_| CodecError::Bad {
        name: name.to_owned(),
        reason: format!("`{text}` is not a message id (8-4-4-4-12 hex)"),
    })
}

/// An RFC 3339 time in UTC with a `Z` (what `Timestamp` writes), to nanoseconds.
fn parse_time(text: &str) -> Result<Timestamp, CodecError> {
    let bad = || CodecError::Bad {
        name: "time".to_owned(),
        reason: format!("`{text}` is not an RFC 3339 UTC time like 2026-11-23T14:05:00Z"),
    };
    let rest = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, clock) = rest.split_once('T').ok_or_else(bad)?;
    let mut date = date
        .splitn(3, '-')
        .map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (y, m, d) = (
        date.next().ok_or_else(bad)??,
        date.next().ok_or_else(bad)??,
        date.next().ok_or_else(bad)??,
    );
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = hms
        .splitn(3, ':')
        .map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (h, min, s) = (
        hms.next().ok_or_else(bad)??,
        hms.next().ok_or_else(bad)??,
        hms.next().ok_or_else(bad)??,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || s > 60 {
        return Err(bad());
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let nanos: i64 = format!("{fraction:0<9}").parse().map_err(|_| bad())?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + h * 3_600 + min * 60 + s;
    if seconds < 0 {
        return Err(bad());
    }
    let total = (seconds as u64)
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(nanos as u64))
        .ok_or_else(bad)?;
    Ok(Timestamp::from_unix_nanos(total))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> EventData {
        let mut event = EventData::json("order.placed", 3, &json!({ "order": 7 })).unwrap();
        event.metadata = Metadata::caused_by(&Metadata::new());
        event.metadata.headers.insert("tenant", "acme");
        event
    }

    fn same(a: &EventData, b: &EventData) {
        assert_eq!(
            (&a.name, a.schema_version, &a.payload),
            (&b.name, b.schema_version, &b.payload)
        );
        let (x, y) = (&a.metadata, &b.metadata);
        assert_eq!(
            (x.id, x.correlation_id, x.causation_id),
            (y.id, y.correlation_id, y.causation_id)
        );
        assert_eq!((x.timestamp, &x.headers), (y.timestamp, &y.headers));
    }

    #[test]
    fn structured_and_binary_round_trip() {
        let event = event();
        same(
            &from_structured(&to_structured(&event, "/s"), &Limits::default()).unwrap(),
            &event,
        );
        let (headers, body) = to_binary(&event, "/s");
        let back = from_binary(
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            &body,
            &Limits::default(),
        )
        .unwrap();
        same(&back, &event);
    }

    #[test]
    fn times_parse_to_the_nanosecond() {
        let t = Timestamp::from_unix_nanos(1_795_440_283_732_668_256);
        assert_eq!(parse_time(&t.to_string()).unwrap(), t);
        assert_eq!(
            parse_time("1970-01-01T00:00:01Z").unwrap(),
            Timestamp::from_unix_nanos(1_000_000_000)
        );
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn bad_input_is_a_clear_error_never_a_panic() {
        let limits = Limits { max_bytes: 200 };
        let cases: Vec<(&[u8], &str)> = vec![
            (b"{not json", "malformed message"),
            (b"[1, 2]", "not a JSON object"),
            (br#"{"specversion":"1.0","source":"/s","type":"t"}"#, "missing CloudEvents attribute `id`"),
            (br#"{"specversion":"0.3","id":"x","source":"/s","type":"t"}"#, "specversion `0.3`"),
            (br#"{"specversion":"1.0","id":"nope","source":"/s","type":"t"}"#, "not a message id"),
            (br#"{"specversion":"1.0","id":7,"source":"/s","type":"t"}"#, "expected a string"),
            (
                br#"{"specversion":"1.0","id":"00000000-0000-0000-0000-000000000001","source":"/s","type":"t","datacontenttype":"text/xml"}"#,
                "unsupported datacontenttype",
            ),
        ];
        for (input, expected) in cases {
            let error = from_structured(input, &limits).unwrap_err().to_string();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
        let big = vec![b' '; 201];
        assert_eq!(
            from_structured(&big, &limits).unwrap_err(),
            CodecError::Oversize {
                size: 201,
                limit: 200
            }
        );
        assert!(from_binary([("ce-specversion", "1.0")], b"{", &limits).is_err());
    }
}
