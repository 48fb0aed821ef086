//! Windowed aggregation: tumbling and sliding windows (one accumulator per key and window),
//! session windows (the key's events until a gap, folded when the session closes).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::engine::{nanos, Codec, Engine, Json};
use super::{KeyFn, Pipe, Window};
use crate::message::Timestamp;

/// A fold of one value into a window's accumulator.
pub(crate) type FoldFn<A, T> = Box<dyn FnMut(&mut A, &T) + Send>;

/// What every kind of window does with an event: turn it into a keyed value, fold values
/// into an accumulator starting from `init`.
pub(crate) struct Folding<E, K, T, A> {
    pub(crate) pipe: Pipe<E, T>,
    pub(crate) key: KeyFn<T, K>,
    pub(crate) init: A,
    pub(crate) fold: FoldFn<A, T>,
}

impl<E, K, T, A> Folding<E, K, T, A> {
    /// The event's value and its key, unless the stream's steps drop it.
    fn keyed(&mut self, event: &E) -> Option<(K, T)> {
        let value = (self.pipe)(event)?;
        Some(((self.key)(&value), value))
    }
}

/// How events are grouped in time: made from [`Tumbling`], [`Sliding`] or [`Session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowKind(pub(crate) Kind);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Windows of `size` starting every `slide` (tumbling: `slide == size`).
    Fixed { size: Duration, slide: Duration },
    /// A key's events closer than `gap` to each other.
    Session { gap: Duration },
}

impl WindowKind {
    /// What is wrong with it, if anything.
    pub(crate) fn check(&self) -> Option<String> {
        match self.0 {
            Kind::Fixed { size, .. } if size.is_zero() => {
                Some("a window of size 0 holds nothing: give it a size".to_owned())
            }
            Kind::Fixed { slide, .. } if slide.is_zero() => {
                Some("a sliding window must slide by more than 0".to_owned())
            }
            Kind::Fixed { size, slide } if slide > size => Some(format!(
                "a sliding window of {size:?} sliding by {slide:?} leaves gaps: slide by at most its size"
            )),
            Kind::Session { gap } if gap.is_zero() => {
                Some("a session gap of 0 ends every session at once: give a gap".to_owned())
            }
            _ => None,
        }
    }
}

/// Fixed windows that do not overlap: `[0, size)`, `[size, 2 size)`, ... from the Unix epoch.
///
/// ```
/// use std::time::Duration;
/// use eventdriven::stream::Tumbling;
///
/// let per_minute = Tumbling::of(Duration::from_secs(60));
/// # let _ = per_minute;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tumbling {
    size: Duration,
}

impl Tumbling {
    /// Windows of `size`.
    pub const fn of(size: Duration) -> Self {
        Self { size }
    }
}

impl From<Tumbling> for WindowKind {
    fn from(w: Tumbling) -> Self {
        WindowKind(Kind::Fixed {
            size: w.size,
            slide: w.size,
        })
    }
}

/// Fixed windows of `size` starting every `slide` (aligned on the Unix epoch), so one event
/// belongs to `size / slide` windows.
///
/// ```
/// use std::time::Duration;
/// use eventdriven::stream::Sliding;
///
/// // The last five minutes, every minute.
/// let recent = Sliding::of(Duration::from_secs(300)).every(Duration::from_secs(60));
/// # let _ = recent;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sliding {
    size: Duration,
    slide: Duration,
}

impl Sliding {
    /// Windows of `size`, one starting every `size` until [`every`](Self::every) says otherwise.
    pub const fn of(size: Duration) -> Self {
        Self { size, slide: size }
    }

    /// A new window starts every `slide`.
    pub const fn every(mut self, slide: Duration) -> Self {
        self.slide = slide;
        self
    }
}

impl From<Sliding> for WindowKind {
    fn from(w: Sliding) -> Self {
        WindowKind(Kind::Fixed {
            size: w.size,
            slide: w.slide,
        })
    }
}

/// A key's events closer than `gap` to each other: a session is
/// `[first event, last event + gap)` and closes once `gap` passed without an event of its key.
/// An event that falls between two sessions merges them.
///
/// ```
/// use std::time::Duration;
/// use eventdriven::stream::Session;
///
/// let visits = Session::with_gap(Duration::from_secs(30 * 60));
/// # let _ = visits;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    gap: Duration,
}

impl Session {
    /// Sessions that end after `gap` without an event.
    pub const fn with_gap(gap: Duration) -> Self {
        Self { gap }
    }
}

impl From<Session> for WindowKind {
    fn from(w: Session) -> Self {
        WindowKind(Kind::Session { gap: w.gap })
    }
}

/// One window's accumulator.
#[derive(Serialize, Deserialize)]
pub(crate) struct Slot<A> {
    acc: A,
    /// Changed since it was last published (new, or updated by a late event).
    dirty: bool,
    revision: u32,
}

/// Tumbling and sliding windows, keyed.
pub(crate) struct FixedWindows<E, K, T, A> {
    folding: Folding<E, K, T, A>,
    size: u64,
    slide: u64,
    lateness: u64,
    /// By window end first, so the windows to close are at the front.
    windows: FixedState<K, A>,
    dirty: usize,
    pub(crate) codec: Option<Codec<FixedState<K, A>>>,
}

/// Tumbling and sliding windows' state: by (end, key, start).
pub(crate) type FixedState<K, A> = BTreeMap<(Timestamp, K, Timestamp), Slot<A>>;

/// A window in a checkpoint: end and start in nanoseconds.
#[derive(Serialize, Deserialize)]
struct SavedWindow<K, A> {
    key: K,
    start: u64,
    end: u64,
    slot: Slot<A>,
}

pub(crate) fn fixed_codec<K, A>() -> Codec<FixedState<K, A>>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    A: Clone + Serialize + DeserializeOwned,
{
    Codec {
        save: |windows| {
            let saved: Vec<_> = windows
                .iter()
                .map(|((end, key, start), slot)| SavedWindow {
                    key: key.clone(),
                    start: start.as_unix_nanos(),
                    end: end.as_unix_nanos(),
                    slot: Slot {
                        acc: slot.acc.clone(),
                        dirty: slot.dirty,
                        revision: slot.revision,
                    },
                })
                .collect();
            serde_json::to_value(saved)
        },
        load: |json| {
            let saved: Vec<SavedWindow<K, A>> = serde_json::from_value(json)?;
            Ok(saved
                .into_iter()
                .map(|w| {
                    let at = Timestamp::from_unix_nanos;
                    ((at(w.end), w.key, at(w.start)), w.slot)
                })
                .collect())
        },
    }
}

impl<E, K, T, A> FixedWindows<E, K, T, A> {
    pub(crate) fn new(
        folding: Folding<E, K, T, A>,
        size: Duration,
        slide: Duration,
        lateness: Duration,
    ) -> Self {
        Self {
            folding,
            size: nanos(size),
            slide: nanos(slide),
            lateness: nanos(lateness),
            windows: BTreeMap::new(),
            dirty: 0,
            codec: None,
        }
    }
}

impl<E, R, K, T, A> Engine<E, R, Window<K, A>> for FixedWindows<E, K, T, A>
where
    E: Send + 'static,
    K: Ord + Clone + Send + 'static,
    T: Send + 'static,
    A: Clone + Send + 'static,
{
    fn left(&mut self, t: Timestamp, event: &E, _: &mut Vec<Window<K, A>>) {
        let Some((key, value)) = self.folding.keyed(event) else {
            return;
        };
        let t = t.as_unix_nanos();
        // The latest window holding `t` starts at the last multiple of `slide`; earlier ones
        // every `slide` before it, while they still reach `t`.
        let mut start = t - t % self.slide;
        loop {
            let end = start.saturating_add(self.size);
            if end <= t {
                break;
            }
            let slot = self
                .windows
                .entry((
                    Timestamp::from_unix_nanos(end),
                    key.clone(),
                    Timestamp::from_unix_nanos(start),
                ))
                .or_insert_with(|| Slot {
                    acc: self.folding.init.clone(),
                    dirty: false,
                    revision: 0,
                });
            (self.folding.fold)(&mut slot.acc, &value);
            if !slot.dirty {
                slot.dirty = true;
                self.dirty += 1;
            }
            match start.checked_sub(self.slide) {
                Some(s) => start = s,
                None => break,
            }
        }
    }

    fn advance(&mut self, watermark: Timestamp, out: &mut Vec<Window<K, A>>) {
        let mut purge = Vec::new();
        for ((end, key, start), slot) in self.windows.iter_mut() {
            if *end > watermark {
                break;
            }
            if slot.dirty {
                out.push(Window {
                    key: key.clone(),
                    start: *start,
                    end: *end,
                    value: slot.acc.clone(),
                    revision: slot.revision,
                });
                slot.dirty = false;
                slot.revision += 1;
                self.dirty -= 1;
            }
            if *end + Duration::from_nanos(self.lateness) <= watermark {
                purge.push((*end, key.clone(), *start));
            }
        }
        for k in purge {
            self.windows.remove(&k);
        }
    }

    fn due(&self) -> Option<Timestamp> {
        let lateness = Duration::from_nanos(self.lateness);
        let mut due: Option<Timestamp> = None;
        for ((end, _, _), slot) in &self.windows {
            if due.is_some_and(|d| *end >= d) {
                break;
            }
            let at = if slot.dirty { *end } else { *end + lateness };
            due = Some(due.map_or(at, |d| d.min(at)));
        }
        due
    }

    fn open(&self) -> usize {
        self.dirty
    }

    fn save(&self) -> Option<serde_json::Result<Json>> {
        self.codec.as_ref().map(|codec| (codec.save)(&self.windows))
    }

    fn restore(&mut self, state: Json) -> serde_json::Result<()> {
        if let Some(codec) = &self.codec {
            self.windows = (codec.load)(state)?;
            self.dirty = self.windows.values().filter(|s| s.dirty).count();
        }
        Ok(())
    }
}

/// One key's session (times in nanoseconds since the epoch).
#[derive(Serialize, Deserialize)]
pub(crate) struct Sess<T> {
    #[serde(with = "nanos_serde")]
    start: Timestamp,
    #[serde(with = "nanos_serde")]
    last: Timestamp,
    items: Vec<T>,
    dirty: bool,
    revision: u32,
}

/// Session windows, keyed: the events are kept until the session closes, then folded, since
/// a late event may merge two sessions.
pub(crate) struct Sessions<E, K, T, A> {
    folding: Folding<E, K, T, A>,
    gap: Duration,
    lateness: Duration,
    /// Each key's sessions, by start.
    sessions: SessionState<K, T>,
    dirty: usize,
    pub(crate) codec: Option<Codec<SessionState<K, T>>>,
}

/// Session windows' state: each key's sessions, by start.
pub(crate) type SessionState<K, T> = BTreeMap<K, Vec<Sess<T>>>;

pub(crate) fn session_codec<K, T>() -> Codec<SessionState<K, T>>
where
    K: Ord + Serialize + DeserializeOwned,
    T: Serialize + DeserializeOwned,
{
    Codec {
        save: |sessions| serde_json::to_value(sessions.iter().collect::<Vec<_>>()),
        load: |json| {
            let saved: Vec<(K, Vec<Sess<T>>)> = serde_json::from_value(json)?;
            Ok(saved.into_iter().collect())
        },
    }
}

/// A timestamp as its nanoseconds.
mod nanos_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::message::Timestamp;

    pub(super) fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.as_unix_nanos())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        u64::deserialize(d).map(Timestamp::from_unix_nanos)
    }
}

impl<E, K, T, A> Sessions<E, K, T, A> {
    pub(crate) fn new(folding: Folding<E, K, T, A>, gap: Duration, lateness: Duration) -> Self {
        Self {
            folding,
            gap,
            lateness,
            sessions: BTreeMap::new(),
            dirty: 0,
            codec: None,
        }
    }
}

impl<E, R, K, T, A> Engine<E, R, Window<K, A>> for Sessions<E, K, T, A>
where
    E: Send + 'static,
    K: Ord + Clone + Send + 'static,
    T: Send + 'static,
    A: Clone + Send + 'static,
{
    fn left(&mut self, t: Timestamp, event: &E, _: &mut Vec<Window<K, A>>) {
        let Some((key, value)) = self.folding.keyed(event) else {
            return;
        };
        let gap = self.gap;
        let sessions = self.sessions.entry(key).or_default();
        // Every session that `[t, t + gap)` touches merges with the new event.
        let mut merged = Sess {
            start: t,
            last: t,
            items: Vec::new(),
            dirty: true,
            revision: 0,
        };
        let mut kept = Vec::with_capacity(sessions.len() + 1);
        for s in sessions.drain(..) {
            if t < s.last + gap && s.start < t + gap {
                merged.start = merged.start.min(s.start);
                merged.last = merged.last.max(s.last);
                merged.revision = merged.revision.max(s.revision);
                if s.dirty {
                    self.dirty -= 1;
                }
                merged.items.extend(s.items);
            } else {
                kept.push(s);
            }
        }
        merged.items.push(value);
        self.dirty += 1;
        let at = kept.partition_point(|s| s.start < merged.start);
        kept.insert(at, merged);
        *sessions = kept;
    }

    fn advance(&mut self, watermark: Timestamp, out: &mut Vec<Window<K, A>>) {
        let (gap, lateness) = (self.gap, self.lateness);
        let from = out.len();
        for (key, sessions) in self.sessions.iter_mut() {
            sessions.retain_mut(|s| {
                let end = s.last + gap;
                if end > watermark {
                    return true;
                }
                if s.dirty {
                    let folding = &mut self.folding;
                    let mut acc = folding.init.clone();
                    for item in &s.items {
                        (folding.fold)(&mut acc, item);
                    }
                    out.push(Window {
                        key: key.clone(),
                        start: s.start,
                        end,
                        value: acc,
                        revision: s.revision,
                    });
                    s.dirty = false;
                    s.revision += 1;
                    self.dirty -= 1;
                }
                end + lateness > watermark
            });
        }
        self.sessions.retain(|_, sessions| !sessions.is_empty());
        // Several keys may close at once: publish them in time order, then by key.
        out[from..].sort_by(|a, b| (a.end, &a.key).cmp(&(b.end, &b.key)));
    }

    fn due(&self) -> Option<Timestamp> {
        self.sessions
            .values()
            .flatten()
            .map(|s| {
                let end = s.last + self.gap;
                if s.dirty {
                    end
                } else {
                    end + self.lateness
                }
            })
            .min()
    }

    fn open(&self) -> usize {
        self.dirty
    }

    fn save(&self) -> Option<serde_json::Result<Json>> {
        self.codec
            .as_ref()
            .map(|codec| (codec.save)(&self.sessions))
    }

    fn restore(&mut self, state: Json) -> serde_json::Result<()> {
        if let Some(codec) = &self.codec {
            self.sessions = (codec.load)(state)?;
            self.dirty = self.sessions.values().flatten().filter(|s| s.dirty).count();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole number of hours after the epoch, so windows are aligned on it.
    const B: u64 = 300 * 3600;

    /// `B + secs`.
    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_nanos((B + secs) * 1_000_000_000)
    }

    type E = (u32, u64);

    /// (key, start, end, value, revision) of each window, in seconds after `B`.
    fn plain(out: &[Window<u32, u64>]) -> Vec<(u32, u64, u64, u64, u32)> {
        let secs = |t: Timestamp| t.as_unix_nanos() / 1_000_000_000 - B;
        out.iter()
            .map(|w| (w.key, secs(w.start), secs(w.end), w.value, w.revision))
            .collect()
    }

    /// Sums the values per key.
    fn folding() -> Folding<E, u32, E, u64> {
        Folding {
            pipe: Box::new(|e: &E| Some(*e)),
            key: Box::new(|e: &E| e.0),
            init: 0,
            fold: Box::new(|acc: &mut u64, e: &E| *acc += e.1),
        }
    }

    fn fixed(size: u64, slide: u64, lateness: u64) -> Box<dyn Engine<E, E, Window<u32, u64>>> {
        let d = Duration::from_secs;
        Box::new(FixedWindows::new(folding(), d(size), d(slide), d(lateness)))
    }

    #[test]
    fn a_sliding_window_takes_an_event_in_every_window_that_holds_it() {
        let mut w = fixed(60, 20, 0);
        let mut out = Vec::new();
        w.left(at(45), &(1, 1), &mut out);
        assert_eq!(w.open(), 3);
        assert_eq!(w.due(), Some(at(60)));
        w.advance(at(200), &mut out);
        assert_eq!(
            plain(&out),
            [(1, 0, 60, 1, 0), (1, 20, 80, 1, 0), (1, 40, 100, 1, 0)]
        );
        assert_eq!((w.open(), w.due()), (0, None));
    }

    #[test]
    fn a_closed_window_is_kept_for_the_lateness_and_published_again_when_updated() {
        let mut w = fixed(60, 60, 30);
        let mut out = Vec::new();
        w.left(at(10), &(1, 1), &mut out);
        w.advance(at(60), &mut out);
        assert_eq!(plain(&out), [(1, 0, 60, 1, 0)]);
        // Kept until its end plus the lateness.
        assert_eq!(w.due(), Some(at(90)));
        w.left(at(50), &(1, 10), &mut out);
        assert_eq!(w.due(), Some(at(60)), "updated: due at once");
        w.advance(at(70), &mut out);
        assert_eq!(plain(&out)[1], (1, 0, 60, 11, 1));
        w.advance(at(90), &mut out);
        assert_eq!(
            (out.len(), w.due()),
            (2, None),
            "purged, not published again"
        );
    }

    #[test]
    fn a_session_that_bridges_two_merges_them() {
        let d = Duration::from_secs;
        let mut w: Box<dyn Engine<E, E, Window<u32, u64>>> =
            Box::new(Sessions::new(folding(), d(30), d(0)));
        let mut out = Vec::new();
        w.left(at(0), &(1, 1), &mut out);
        w.left(at(50), &(1, 10), &mut out);
        assert_eq!(w.open(), 2);
        w.left(at(25), &(1, 100), &mut out);
        assert_eq!(w.open(), 1);
        // Exactly a gap after the last event is a new session.
        w.left(at(110), &(1, 1000), &mut out);
        assert_eq!(w.due(), Some(at(80)));
        w.advance(at(80), &mut out);
        assert_eq!(plain(&out), [(1, 0, 80, 111, 0)]);
    }

    #[test]
    fn window_state_goes_through_a_checkpoint_unchanged() {
        let d = Duration::from_secs;
        let mut w = FixedWindows::new(folding(), d(60), d(60), d(0));
        w.codec = Some(fixed_codec());
        let mut out = Vec::new();
        Engine::<E, E, _>::left(&mut w, at(10), &(1, 1), &mut out);
        Engine::<E, E, _>::left(&mut w, at(70), &(2, 5), &mut out);
        let saved = Engine::<E, E, _>::save(&w).unwrap().unwrap();

        let mut back = FixedWindows::new(folding(), d(60), d(60), d(0));
        back.codec = Some(fixed_codec());
        Engine::<E, E, _>::restore(&mut back, saved).unwrap();
        assert_eq!(Engine::<E, E, _>::open(&back), 2);
        Engine::<E, E, _>::advance(&mut back, at(200), &mut out);
        assert_eq!(plain(&out), [(1, 0, 60, 1, 0), (2, 60, 120, 5, 0)]);
    }
}
