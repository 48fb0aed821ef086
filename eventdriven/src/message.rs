//! Messages: the [`Command`], [`Event`] and [`Query`] traits, their [`Envelope`] and
//! [`Metadata`].
//!
//! The traits are implemented by `#[derive(Command)]`, `#[derive(Event)]` and
//! `#[derive(Query)]`; writing the impls by hand works too, but the derives also check the
//! bounds at the type's definition, where an error is easiest to read.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// A type that travels through the bus: it has a stable name and a schema version.
///
/// The name identifies the message outside the process (stores, brokers, logs), so it must not
/// change when the Rust type is renamed or moved; give it explicitly with
/// `#[command(name = "...")]` (or `event`, `query`) to decouple the two.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a message: add `#[derive(Command)]`, `#[derive(Event)]` or `#[derive(Query)]` to its definition",
    label = "not a message"
)]
pub trait Message: Send + 'static {
    /// The stable name, `"order.placed"` or the type's name by default.
    const NAME: &'static str;
    /// The schema version of the payload, 1 by default.
    const VERSION: u32 = 1;
    /// How long a message of this type lives by default (`ttl = "30s"`): one not handled in
    /// time is dead-lettered as expired. `Envelope::with_ttl` sets it per message.
    const TTL: Option<std::time::Duration> = None;
}

/// A request to do something, handled by exactly one `#[handle]` method, which returns
/// [`Command::Reply`].
///
/// ```
/// use eventdriven::prelude::*;
///
/// #[derive(Command, Debug)]
/// #[command(reply = Result<u64, String>, name = "account.withdraw")]
/// struct Withdraw { amount: u64 }
///
/// assert_eq!(<Withdraw as Message>::NAME, "account.withdraw");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command: add `#[derive(Command)]` to its definition",
    label = "not a command",
    note = "commands are sent with `send`/`tell` to one `#[handle]` method; events are published with `publish` to `#[subscribe]` methods, queries asked with `query` of a `#[query]` method"
)]
pub trait Command: Message {
    /// What the handler returns to the sender; `()` by default.
    type Reply: Send + 'static;
}

/// A fact that happened, delivered to every `#[subscribe]` method for it (zero or more).
///
/// Publishing allocates the event once and shares it with every subscriber behind an `Arc`,
/// so subscribers receive `&E`. `Clone` lets a subscriber keep its own copy.
///
/// ```
/// use eventdriven::prelude::*;
///
/// #[derive(Event, Clone, Debug)]
/// #[event(name = "order.placed", version = 2)]
/// struct OrderPlaced { order: u64 }
///
/// assert_eq!(<OrderPlaced as Message>::VERSION, 2);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event: add `#[derive(Event)]` to its definition",
    label = "not an event",
    note = "events are published with `publish` to `#[subscribe]` methods; commands are sent with `send`/`tell` to a `#[handle]` method, queries asked with `query` of a `#[query]` method"
)]
pub trait Event: Message + Clone + Sync {}

/// A request for data without effects, answered by exactly one `#[query]` method (which takes
/// `&self`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a query: add `#[derive(Query)]` to its definition",
    label = "not a query",
    note = "queries are asked with `query` and answered by one `#[query]` method; commands are sent with `send`/`tell` to a `#[handle]` method, events published with `publish` to `#[subscribe]` methods"
)]
pub trait Query: Message {
    /// What the handler returns; `()` by default.
    type Reply: Send + 'static;
}

/// A 128-bit message identifier, unique within and (with overwhelming probability) across
/// processes. Displayed in the 8-4-4-4-12 hex form.
///
/// Generating one costs a thread-local increment: the high half is a random per-thread seed,
/// the low half a per-thread counter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    hi: u64,
    lo: u64,
}

thread_local! {
    static ID_STATE: Cell<(u64, u64)> = Cell::new((thread_seed(), 0));
}

fn thread_seed() -> u64 {
    // RandomState draws its keys from the OS once per thread; the global counter keeps two
    // threads apart even if those keys ever coincided.
    static THREADS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(THREADS.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

impl MessageId {
    /// A new unique id.
    pub fn new() -> Self {
        ID_STATE.with(|state| {
            let (seed, count) = state.get();
            state.set((seed, count.wrapping_add(1)));
            Self {
                hi: seed,
                lo: count,
            }
        })
    }

    /// The id as one number.
    pub const fn as_u128(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }

    /// An id from a number, for ids that come from outside (stores, brokers).
    pub const fn from_u128(value: u128) -> Self {
        Self {
            hi: (value >> 64) as u64,
            lo: value as u64,
        }
    }

    /// The 8-4-4-4-12 lowercase hex form (ASCII), written without the formatting machinery:
    /// ids are written for every message that leaves the process or reaches a store.
    pub(crate) fn hex(self) -> [u8; 36] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut v = self.as_u128();
        let mut out = [b'-'; 36];
        for i in (0..36).rev() {
            if matches!(i, 8 | 13 | 18 | 23) {
                continue;
            }
            out[i] = DIGITS[(v & 0xf) as usize];
            v >>= 4;
        }
        out
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ascii(&self.hex()))
    }
}

/// Text written by hand into a byte buffer, all ASCII.
pub(crate) fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("written as ASCII")
}

/// The text of an id that is not in the 8-4-4-4-12 hex form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a message id (8-4-4-4-12 hex digits): {0:?}")]
pub struct ParseMessageIdError(String);

impl std::str::FromStr for MessageId {
    type Err = ParseMessageIdError;

    /// Parses the form `Display` writes (hyphens optional), as ids come back from a store.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut value: u128 = 0;
        let mut digits = 0;
        for byte in text.bytes().filter(|&b| b != b'-') {
            let digit = match byte {
                b'0'..=b'9' => byte - b'0',
                b'a'..=b'f' => byte - b'a' + 10,
                b'A'..=b'F' => byte - b'A' + 10,
                _ => return Err(ParseMessageIdError(text.to_owned())),
            };
            digits += 1;
            if digits > 32 {
                return Err(ParseMessageIdError(text.to_owned()));
            }
            value = (value << 4) | u128::from(digit);
        }
        if digits != 32 {
            return Err(ParseMessageIdError(text.to_owned()));
        }
        Ok(Self::from_u128(value))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// String headers carried with a message (tenant, trace context, ...).
///
/// One pointer wide, and empty headers cost no allocation: every message carries its
/// metadata through its mailbox, so the common case (no headers) is kept small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
// The box is the point: one word in every message instead of a `Vec`'s three.
#[allow(clippy::box_collection)]
pub struct Headers(Option<Box<Vec<(String, String)>>>);

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Self(None)
    }

    fn entries(&self) -> &[(String, String)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        let entries = self.0.get_or_insert_with(Box::default);
        match entries.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => entries.push((name, value)),
        }
    }

    /// All headers in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }
}

/// A point in wall-clock time with nanosecond resolution: nanoseconds since the Unix epoch in
/// one word (half a `SystemTime`), displayed as RFC 3339 in UTC.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use eventdriven::message::Timestamp;
///
/// let t = Timestamp::from_system_time(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
/// assert_eq!(t.to_string(), "2023-11-14T22:13:20.123000000Z");
/// assert_eq!(t.to_system_time(), SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
/// assert!(t + Duration::from_secs(1) > t);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(NonZeroU64);

impl Timestamp {
    /// Now, from the system's wall clock. (On x86_64 Linux with the kernel on the TSC clock
    /// source, read through the time-stamp counter: a quarter of `SystemTime::now()`'s cost,
    /// and within microseconds of it.)
    #[inline]
    pub fn now() -> Self {
        Self::from_unix_nanos(crate::clock::now_nanos())
    }

    /// Now, on tokio's clock: the wall-clock time when first asked in this process, moved on by
    /// the tokio `Instant`s since. It keeps wall time in a normal run, and it follows virtual
    /// time when a test pauses tokio's clock, so deadlines stored as timestamps (sagas, process
    /// managers) can be tested with `tokio::time::pause()`.
    pub fn now_on_tokio_clock() -> Self {
        static BASE: std::sync::OnceLock<(Timestamp, tokio::time::Instant)> =
            std::sync::OnceLock::new();
        let (wall, at) = *BASE.get_or_init(|| (Timestamp::now(), tokio::time::Instant::now()));
        let now = tokio::time::Instant::now();
        if now >= at {
            wall + (now - at)
        } else {
            Self::from_unix_nanos(
                wall.as_unix_nanos()
                    .saturating_sub((at - now).as_nanos() as u64),
            )
        }
    }

    /// From a `SystemTime` (clamped to the epoch + 1 ns .. year 2554).
    pub fn from_system_time(time: SystemTime) -> Self {
        let nanos = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self(NonZeroU64::new(nanos).unwrap_or(NonZeroU64::MIN))
    }

    /// From nanoseconds since the Unix epoch (0 becomes 1 ns).
    pub const fn from_unix_nanos(nanos: u64) -> Self {
        match NonZeroU64::new(nanos) {
            Some(n) => Self(n),
            None => Self(NonZeroU64::MIN),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_unix_nanos(self) -> u64 {
        self.0.get()
    }

    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.0.get())
    }

    /// The RFC 3339 form in UTC to the nanosecond (`2026-11-23T14:05:00.000000000Z`, ASCII),
    /// written by hand, not with `write!`: a time is written for every event that leaves the
    /// process.
    pub(crate) fn rfc3339(self) -> [u8; 30] {
        let nanos = self.0.get();
        let secs = nanos / 1_000_000_000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since the epoch (Howard Hinnant's `civil_from_days`).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // From 1970 to 2554 (all a u64 of nanoseconds holds) a year is 4 digits.
        let mut text = *b"0000-00-00T00:00:00.000000000Z";
        let mut put = |at: usize, width: usize, mut value: u64| {
            for slot in text[at..at + width].iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year as u64);
        put(5, 2, month as u64);
        put(8, 2, day as u64);
        put(11, 2, rem / 3600);
        put(14, 2, rem % 3600 / 60);
        put(17, 2, rem % 60);
        put(20, 9, nanos % 1_000_000_000);
        text
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        let add = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Timestamp::from_unix_nanos(self.0.get().saturating_add(add))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ascii(&self.rfc3339()))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

/// What every message carries besides its payload.
///
/// A message sent from inside a handler (`ctx.publish`, `ctx.send`, `ctx.query`) is *caused*
/// by the message being handled: its `causation_id` is that message's `id` and it inherits its
/// `correlation_id`, so one business flow shares a correlation id from end to end.
#[derive(Clone, Debug)]
pub struct Metadata {
    /// This message's unique id.
    pub id: MessageId,
    /// The id shared by every message of one flow: the root message's id unless set.
    pub correlation_id: MessageId,
    /// The id of the message whose handler sent this one; `None` for a root message.
    pub causation_id: Option<MessageId>,
    /// When the message was created.
    pub timestamp: Timestamp,
    /// Delivery attempt, starting at 1.
    pub attempt: u32,
    /// Free-form string headers.
    pub headers: Headers,
    /// When the message expires: one not handled by then is dead-lettered as expired instead.
    pub expires_at: Option<Timestamp>,
}

impl Metadata {
    /// Sets the type's default time to live if the message has none yet.
    #[inline]
    pub(crate) fn apply_ttl<M: Message>(&mut self) {
        if let (Some(ttl), None) = (M::TTL, self.expires_at) {
            self.expires_at = Some(Timestamp::now() + ttl);
        }
    }

    /// Metadata for a root message: a new id that is also its correlation id.
    pub fn new() -> Self {
        let id = MessageId::new();
        // Sent from inside a span (a request's, say): the handler's span becomes its child.
        crate::observe::link_sender(id);
        Self {
            id,
            correlation_id: id,
            causation_id: None,
            timestamp: Timestamp::now(),
            attempt: 1,
            headers: Headers::new(),
            expires_at: None,
        }
    }

    /// Whether the message has expired at `now`.
    #[inline]
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now > at)
    }

    /// Metadata for a message caused by the one that carries `self`.
    pub fn caused_by(cause: &Metadata) -> Self {
        let id = MessageId::new();
        // Sent from inside a handler: its span becomes the parent of the new message's.
        crate::observe::link_sender(id);
        Self {
            id,
            correlation_id: cause.correlation_id,
            causation_id: Some(cause.id),
            timestamp: Timestamp::now(),
            attempt: 1,
            headers: Headers::new(),
            expires_at: None,
        }
    }
}

impl Default for Metadata {
    fn default() -> Self {
        Self::new()
    }
}

/// A message with its [`Metadata`]. `app.send(cmd)` wraps `cmd` in a fresh envelope; build one
/// yourself to set a correlation id or headers and pass it to `send_envelope` and friends.
///
/// ```
/// use eventdriven::{Envelope, MessageId};
///
/// let flow = MessageId::new();
/// let env = Envelope::new("payload").with_correlation_id(flow).with_header("tenant", "acme");
/// assert_eq!(env.meta.correlation_id, flow);
/// assert_eq!(env.meta.headers.get("tenant"), Some("acme"));
/// ```
#[derive(Clone, Debug)]
pub struct Envelope<M> {
    /// Id, correlation, causation, timestamp, attempt and headers.
    pub meta: Metadata,
    /// The payload.
    pub message: M,
}

impl<M> Envelope<M> {
    /// Wraps `message` with new root metadata.
    pub fn new(message: M) -> Self {
        Self {
            meta: Metadata::new(),
            message,
        }
    }

    /// Wraps `message` with the given metadata.
    pub fn with_meta(message: M, meta: Metadata) -> Self {
        Self { meta, message }
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: MessageId) -> Self {
        self.meta.correlation_id = id;
        self
    }

    /// Gives the message a time to live: if it is not handled within `ttl` from now, it is
    /// not handled at all and lands in the dead letters as expired.
    pub fn with_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.meta.expires_at = Some(Timestamp::now() + ttl);
        self
    }

    /// Sets a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.headers.insert(name, value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_threads() {
        let mut all: Vec<MessageId> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| MessageId::new()).collect::<Vec<_>>()))
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }

    #[test]
    fn id_round_trips_and_displays_as_uuid() {
        let id = MessageId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(MessageId::from_u128(id.as_u128()), id);
        assert_eq!("01234567-89ab-cdef-0011-223344556677".parse(), Ok(id));
        assert_eq!("0123456789ABCDEF0011223344556677".parse(), Ok(id));
        for bad in [
            "",
            "0123",
            "01234567-89ab-cdef-0011-2233445566778",
            "0123456789abcdef001122334455667g",
        ] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn caused_by_links_causation_and_correlation() {
        let root = Metadata::new();
        let child = Metadata::caused_by(&root);
        assert_eq!(root.correlation_id, root.id);
        assert_eq!(child.causation_id, Some(root.id));
        assert_eq!(child.correlation_id, root.id);
        assert_ne!(child.id, root.id);
    }

    #[test]
    fn metadata_stays_small_enough_to_move_without_memcpy() {
        // Every message carries its metadata through its mailbox by value; at 88 bytes an
        // `Ask` of a small command stays under the 128 bytes the compiler moves inline.
        assert_eq!(std::mem::size_of::<Metadata>(), 88);
        assert_eq!(std::mem::size_of::<Option<Timestamp>>(), 8);
        assert_eq!(std::mem::size_of::<Headers>(), 8);
    }

    #[test]
    fn timestamps_display_as_rfc3339() {
        assert_eq!(
            Timestamp::from_unix_nanos(0).to_string(),
            "1970-01-01T00:00:00.000000001Z"
        );
        assert_eq!(
            Timestamp::from_unix_nanos(951_782_400_000_000_000).to_string(),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            Timestamp::from_unix_nanos(u64::MAX).to_string(),
            "2554-07-21T23:34:33.709551615Z"
        );
    }

    #[test]
    fn headers_replace_and_look_up() {
        let mut h = Headers::new();
        h.insert("a", "1");
        h.insert("a", "2");
        assert_eq!(h.get("a"), Some("2"));
        assert_eq!(h.len(), 1);
    }
}
