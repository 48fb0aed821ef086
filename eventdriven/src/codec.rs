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

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::message::{ascii, Headers, MessageId, Metadata, Timestamp};
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

/// An event's parts as they are encoded, its data in any serializable form: the bridges
/// write a typed event without making a [`Value`] of it first.
pub(crate) struct Parts<'a, D: ?Sized> {
    pub(crate) name: &'a str,
    pub(crate) schema_version: u32,
    pub(crate) meta: &'a Metadata,
    /// The CloudEvents `source`.
    pub(crate) source: &'a str,
    pub(crate) data: &'a D,
}

/// Message headers as (name, value) pairs.
type HeaderPairs = Vec<(String, String)>;

impl<'a> Parts<'a, Value> {
    fn of(event: &'a EventData, source: &'a str) -> Self {
        Self {
            name: &event.name,
            schema_version: event.schema_version,
            meta: &event.metadata,
            source,
            data: &event.payload,
        }
    }
}

impl<D: Serialize + ?Sized> Parts<'_, D> {
    /// One CloudEvents JSON document (structured mode).
    pub(crate) fn structured(&self) -> serde_json::Result<Vec<u8>> {
        // Room for the attributes and a small event, so most documents are written without
        // growing the buffer.
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }

    /// CloudEvents binary mode: the attributes as `ce-<attribute>` headers (the content type
    /// as `content-type`), the data as the body.
    pub(crate) fn binary(&self) -> serde_json::Result<(HeaderPairs, Vec<u8>)> {
        let meta = self.meta;
        let mut headers = vec![
            ("ce-specversion".to_owned(), SPEC_VERSION.to_owned()),
            ("ce-id".to_owned(), meta.id.to_string()),
            ("ce-source".to_owned(), self.source.to_owned()),
            ("ce-type".to_owned(), self.name.to_owned()),
            ("ce-time".to_owned(), meta.timestamp.to_string()),
            ("content-type".to_owned(), CONTENT_TYPE.to_owned()),
            (
                "ce-schemaversion".to_owned(),
                self.schema_version.to_string(),
            ),
            (
                "ce-correlationid".to_owned(),
                meta.correlation_id.to_string(),
            ),
        ];
        if let Some(cause) = meta.causation_id {
            headers.push(("ce-causationid".to_owned(), cause.to_string()));
        }
        for (i, (name, value)) in meta.headers.iter().enumerate() {
            headers.push((format!("ce-edheader{i}name"), name.to_owned()));
            headers.push((format!("ce-edheader{i}value"), value.to_owned()));
        }
        Ok((headers, serde_json::to_vec(self.data)?))
    }
}

/// A value written as a JSON string in its `Display` form, with no `String` in between.
struct Text<T>(T);

impl<T: fmt::Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// The structured-mode document, written straight from the parts.
impl<D: Serialize + ?Sized> Serialize for Parts<'_, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Ids and the time from stack buffers: through `collect_str` they would cost a
        // formatter each, a measurable part of a fast broker's publish.
        let meta = self.meta;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", SPEC_VERSION)?;
        map.serialize_entry("id", ascii(&meta.id.hex()))?;
        map.serialize_entry("source", self.source)?;
        map.serialize_entry("type", self.name)?;
        map.serialize_entry("time", ascii(&meta.timestamp.rfc3339()))?;
        map.serialize_entry("datacontenttype", CONTENT_TYPE)?;
        map.serialize_entry("schemaversion", &Text(self.schema_version))?;
        map.serialize_entry("correlationid", ascii(&meta.correlation_id.hex()))?;
        if let Some(cause) = meta.causation_id {
            map.serialize_entry("causationid", ascii(&cause.hex()))?;
        }
        for (i, (name, value)) in meta.headers.iter().enumerate() {
            map.serialize_entry(&Text(format_args!("edheader{i}name")), name)?;
            map.serialize_entry(&Text(format_args!("edheader{i}value")), value)?;
        }
        map.serialize_entry("data", self.data)?;
        map.end()
    }
}

/// The event as one CloudEvents JSON document (structured mode).
pub fn to_structured(event: &EventData, source: &str) -> Vec<u8> {
    Parts::of(event, source)
        .structured()
        .expect("a JSON value always encodes")
}

/// The event as CloudEvents binary mode: headers (`ce-<attribute>`, and `content-type`) and
/// the body (the event's JSON).
pub fn to_binary(event: &EventData, source: &str) -> (Vec<(String, String)>, Vec<u8>) {
    Parts::of(event, source)
        .binary()
        .expect("a JSON value always encodes")
}

/// The attributes [`build`] reads, in the order it takes them.
const ATTRIBUTES: [&str; 9] = [
    "specversion",
    "datacontenttype",
    "id",
    "source",
    "type",
    "schemaversion",
    "time",
    "correlationid",
    "causationid",
];

/// A member of a structured document, told by its name alone (no `String` made of it).
enum Member {
    /// One of [`ATTRIBUTES`], by index.
    Attribute(usize),
    /// `edheader<n>name` (false) or `edheader<n>value` (true).
    Header(usize, bool),
    Data,
    Other,
}

impl Member {
    fn of(key: &str) -> Self {
        if key == "data" {
            return Self::Data;
        }
        if let Some(i) = ATTRIBUTES.iter().position(|a| *a == key) {
            return Self::Attribute(i);
        }
        let Some(rest) = key.strip_prefix("edheader") else {
            return Self::Other;
        };
        let (digits, is_value) = match (rest.strip_suffix("name"), rest.strip_suffix("value")) {
            (Some(digits), _) => (digits, false),
            (_, Some(digits)) => (digits, true),
            _ => return Self::Other,
        };
        // Only the form the encoder writes: `edheader01name` is not header 1.
        let canonical = (digits == "0" || !digits.starts_with('0'))
            && (1..=9).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit());
        match digits.parse() {
            Ok(i) if canonical => Self::Header(i, is_value),
            _ => Self::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Member;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Member, E> {
                Ok(Member::of(key))
            }
        }
        deserializer.deserialize_identifier(Name)
    }
}

/// A structured document read in one pass: the attributes, the header pairs and the data;
/// any other member skipped. A member given twice counts with its last value, as in a JSON
/// object read whole.
#[derive(Default)]
struct Document {
    attributes: [Option<Value>; ATTRIBUTES.len()],
    /// (index, whether it is the value, the member).
    headers: Vec<(usize, bool, Value)>,
    data: Option<Value>,
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Document;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CloudEvents JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
                let mut document = Document::default();
                while let Some(member) = map.next_key::<Member>()? {
                    match member {
                        Member::Attribute(i) => document.attributes[i] = Some(map.next_value()?),
                        Member::Header(i, is_value) => {
                            document.headers.push((i, is_value, map.next_value()?));
                        }
                        Member::Data => document.data = Some(map.next_value()?),
                        Member::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(document)
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// Reads a structured-mode CloudEvents document.
pub fn from_structured(bytes: &[u8], limits: &Limits) -> Result<EventData, CodecError> {
    check_size(bytes.len(), limits)?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(CodecError::Malformed("not a JSON object".to_owned()));
    }
    let mut document: Document =
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let mut attributes: [Option<String>; ATTRIBUTES.len()] = Default::default();
    for (i, slot) in attributes.iter_mut().enumerate() {
        *slot = match document.attributes[i].take() {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(other) => {
                return Err(CodecError::Bad {
                    name: ATTRIBUTES[i].to_owned(),
                    reason: format!("expected a string, found {other}"),
                })
            }
        };
    }
    let mut member = |i: usize, is_value: bool| {
        let at = document
            .headers
            .iter()
            .rposition(|(j, v, _)| (*j, *v) == (i, is_value))?;
        Some(document.headers.remove(at).2)
    };
    let mut headers = Vec::new();
    for i in 0.. {
        match (member(i, false), member(i, true)) {
            (Some(Value::String(n)), Some(Value::String(v))) => headers.push((n, v)),
            (None, None) => break,
            _ => {
                return Err(CodecError::Bad {
                    name: format!("edheader{i}"),
                    reason: "a header needs a name and a value, both strings".to_owned(),
                })
            }
        }
    }
    build(attributes, headers, document.data.unwrap_or(Value::Null))
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
    let attributes = ATTRIBUTES.map(|name| match name {
        "datacontenttype" => find("content-type"),
        _ => find(&format!("ce-{name}")),
    });
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
    build(attributes, extra, data)
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

/// The event from its attributes (in the order of [`ATTRIBUTES`]), checked.
fn build(
    attributes: [Option<String>; ATTRIBUTES.len()],
    headers: Vec<(String, String)>,
    data: Value,
) -> Result<EventData, CodecError> {
    let [spec, content_type, id, source, name, schema_version, time, correlation, causation] =
        attributes;
    let required = |value: Option<String>, name| value.ok_or(CodecError::Missing(name));
    let spec = required(spec, "specversion")?;
    if spec != SPEC_VERSION {
        return Err(CodecError::SpecVersion(spec));
    }
    if let Some(content_type) = content_type {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media != CONTENT_TYPE && !media.ends_with("+json") {
            return Err(CodecError::ContentType(content_type));
        }
    }
    let id = parse_id("id", &required(id, "id")?)?;
    required(source, "source")?;
    let name = required(name, "type")?;
    if name.is_empty() {
        return Err(CodecError::Bad {
            name: "type".to_owned(),
            reason: "empty".to_owned(),
        });
    }
    let schema_version = match schema_version {
        Some(v) => v.parse().map_err(|_| CodecError::Bad {
            name: "schemaversion".to_owned(),
            reason: format!("`{v}` is not a number"),
        })?,
        None => 1,
    };
    let timestamp = match time {
        Some(t) => parse_time(&t)?,
        None => Timestamp::now(),
    };
    let correlation_id = match correlation {
        Some(c) => parse_id("correlationid", &c)?,
        None => id,
    };
    let causation_id = causation.map(|c| parse_id("causationid", &c)).transpose()?;
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
    let nanos = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0_i64, |n, digit| n * 10 + i64::from(digit - b'0'));
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
    fn structured_reads_members_in_any_order_and_skips_the_rest() {
        let document = br#"{
            "data": {"order": 7},
            "edheader1value": "eu", "edheader0name": "tenant", "edheader01name": "ignored",
            "edheader1name": "region", "edheader0value": "acme",
            "extension": {"nested": [1, 2, {"deep": null}]},
            "type": "order.placed", "source": "/s", "specversion": "1.0",
            "id": "00000000-0000-0000-0000-000000000001",
            "id": "00000000-0000-0000-0000-000000000002",
            "time": "2026-11-23T14:05:00.5Z", "schemaversion": "4", "causationid": null
        }"#;
        let event = from_structured(document, &Limits::default()).unwrap();
        assert_eq!(
            (event.name.as_str(), event.schema_version),
            ("order.placed", 4)
        );
        assert_eq!(event.payload, json!({ "order": 7 }));
        // A member given twice counts with its last value.
        assert_eq!(event.metadata.id, MessageId::from_u128(2));
        assert_eq!(event.metadata.correlation_id, event.metadata.id);
        assert_eq!(event.metadata.causation_id, None);
        assert_eq!(
            event.metadata.timestamp,
            parse_time("2026-11-23T14:05:00.500000000Z").unwrap()
        );
        let headers: Vec<_> = event.metadata.headers.iter().collect();
        assert_eq!(headers, [("tenant", "acme"), ("region", "eu")]);

        let half = br#"{"specversion":"1.0","id":"00000000-0000-0000-0000-000000000001",
            "source":"/s","type":"t","edheader0name":"tenant"}"#;
        let error = from_structured(half, &Limits::default()).unwrap_err();
        assert!(error.to_string().contains("edheader0"), "{error}");
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
