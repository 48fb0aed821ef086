//! The interval join: a left and a right event with the same key and event times at most
//! `within` apart make one output.

use std::collections::BTreeMap;
use std::time::Duration;

use super::engine::{since, Engine};
use super::{KeyFn, Pipe};
use crate::message::Timestamp;

/// What a join makes of a matching pair.
pub(crate) type JoinFn<K, TL, TR, O> = Box<dyn FnMut(&K, &TL, &TR) -> O + Send>;

/// The join's state: each side's events that may still find a partner.
pub(crate) struct IntervalJoin<L, R, K, TL, TR, O> {
    pub(crate) left_pipe: Pipe<L, TL>,
    pub(crate) left_key: KeyFn<TL, K>,
    pub(crate) right_pipe: Pipe<R, TR>,
    pub(crate) right_key: KeyFn<TR, K>,
    pub(crate) within: Duration,
    pub(crate) lateness: Duration,
    pub(crate) join: JoinFn<K, TL, TR, O>,
    pub(crate) lefts: BTreeMap<K, Vec<(Timestamp, TL)>>,
    pub(crate) rights: BTreeMap<K, Vec<(Timestamp, TR)>>,
}

/// Whether `a` and `b` are at most `within` apart.
fn close(a: Timestamp, b: Timestamp, within: Duration) -> bool {
    since(a, b).max(since(b, a)) <= within
}

/// Drops what no event that is not late can match any more: one at `t` matches events up to
/// `t + within`, and an event is late once it is more than `lateness` behind the watermark.
fn evict<K: Ord, T>(
    side: &mut BTreeMap<K, Vec<(Timestamp, T)>>,
    watermark: Timestamp,
    keep: Duration,
) {
    side.retain(|_, items| {
        items.retain(|(t, _)| *t + keep >= watermark);
        !items.is_empty()
    });
}

impl<L, R, K, TL, TR, O> Engine<L, R, O> for IntervalJoin<L, R, K, TL, TR, O>
where
    L: Send + 'static,
    R: Send + 'static,
    K: Ord + Clone + Send + 'static,
    TL: Send + 'static,
    TR: Send + 'static,
    O: Send + 'static,
{
    fn left(&mut self, t: Timestamp, event: &L, out: &mut Vec<O>) {
        let Some(value) = (self.left_pipe)(event) else {
            return;
        };
        let key = (self.left_key)(&value);
        if let Some(rights) = self.rights.get(&key) {
            for (tr, right) in rights {
                if close(t, *tr, self.within) {
                    out.push((self.join)(&key, &value, right));
                }
            }
        }
        self.lefts.entry(key).or_default().push((t, value));
    }

    fn right(&mut self, t: Timestamp, event: &R, out: &mut Vec<O>) {
        let Some(value) = (self.right_pipe)(event) else {
            return;
        };
        let key = (self.right_key)(&value);
        if let Some(lefts) = self.lefts.get(&key) {
            for (tl, left) in lefts {
                if close(t, *tl, self.within) {
                    out.push((self.join)(&key, left, &value));
                }
            }
        }
        self.rights.entry(key).or_default().push((t, value));
    }

    fn advance(&mut self, watermark: Timestamp, _: &mut Vec<O>) {
        let keep = self.within + self.lateness;
        evict(&mut self.lefts, watermark, keep);
        evict(&mut self.rights, watermark, keep);
    }

    fn due(&self) -> Option<Timestamp> {
        let keep = self.within + self.lateness + Duration::from_nanos(1);
        let first = |side: Option<Timestamp>| side.map(|t| t + keep);
        let l = self.lefts.values().flatten().map(|(t, _)| *t).min();
        let r = self.rights.values().flatten().map(|(t, _)| *t).min();
        match (first(l), first(r)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_nanos((1_000_000 + secs) * 1_000_000_000)
    }

    /// An id and a time in seconds.
    type E = (u32, u64);

    /// Orders and payments, joined within 60 s, lateness 10 s, into their times.
    fn join() -> IntervalJoin<E, E, u32, E, E, (u64, u64)> {
        IntervalJoin {
            left_pipe: Box::new(|e| Some(*e)),
            left_key: Box::new(|e| e.0),
            right_pipe: Box::new(|e| Some(*e)),
            right_key: Box::new(|e| e.0),
            within: Duration::from_secs(60),
            lateness: Duration::from_secs(10),
            join: Box::new(|_, l, r| (l.1, r.1)),
            lefts: BTreeMap::new(),
            rights: BTreeMap::new(),
        }
    }

    #[test]
    fn pairs_within_the_bound_either_way_and_forgets_what_can_no_longer_match() {
        let mut j = join();
        let mut out = Vec::new();
        j.left(at(100), &(1, 100), &mut out);
        j.right(at(160), &(1, 160), &mut out); // 60 s after: inside
        j.right(at(39), &(1, 39), &mut out); // 61 s before: outside
        j.right(at(40), &(2, 40), &mut out); // another key
        assert_eq!(out, [(100, 160)]);
        // The order at 100 may still meet a payment at up to 160 that is not late: kept
        // while the watermark is at most 100 + 60 + 10.
        assert_eq!(
            j.due(),
            Some(at(39) + Duration::from_secs(70) + Duration::from_nanos(1))
        );
        j.advance(at(170), &mut out);
        assert!(j.lefts.contains_key(&1));
        j.advance(at(171), &mut out);
        assert!(!j.lefts.contains_key(&1));
        assert_eq!(
            j.rights.get(&1).map(Vec::len),
            Some(1),
            "the one at 160 stays"
        );
    }
}
