//! What every operator chain compiles to: an engine fed with timestamped inputs and the
//! watermark, which produces the stream's outputs.

use std::time::Duration;

use super::Pipe;
use crate::message::Timestamp;

/// A stream's state and operators, between the runner (time, mailbox, publishing) and the
/// outputs. `L` and `R` are the input event types (`R` only for a join), `O` the output.
pub(crate) trait Engine<L, R, O>: Send + 'static {
    /// An event of the (left) input at time `t`.
    fn left(&mut self, t: Timestamp, event: &L, out: &mut Vec<O>);

    /// An event of the right input of a join at time `t`.
    fn right(&mut self, _t: Timestamp, _event: &R, _out: &mut Vec<O>) {}

    /// The watermark moved to `watermark`: close what ends at or before it.
    fn advance(&mut self, _watermark: Timestamp, _out: &mut Vec<O>) {}

    /// The earliest time at which [`advance`](Self::advance) has something to do.
    fn due(&self) -> Option<Timestamp> {
        None
    }

    /// Windows not yet published (what closing everything would publish).
    fn open(&self) -> usize {
        0
    }

    /// Whether inputs are placed in time at all (a stateless chain is not: no lateness).
    fn timed(&self) -> bool {
        true
    }

    /// The state as JSON, for a checkpoint; `None` when it is not checkpointed.
    fn save(&self) -> Option<serde_json::Result<Json>> {
        None
    }

    /// Takes back the state of a checkpoint made by [`save`](Self::save).
    fn restore(&mut self, _state: Json) -> serde_json::Result<()> {
        Ok(())
    }
}

/// A JSON value.
pub(crate) type Json = serde_json::Value;

/// How an engine's state of type `S` goes to and from a checkpoint: functions made where the
/// serde bounds hold.
pub(crate) struct Codec<S> {
    pub(crate) save: fn(&S) -> serde_json::Result<Json>,
    pub(crate) load: fn(Json) -> serde_json::Result<S>,
}

/// `map` and `filter` without windows: one input, at most one output, no time.
pub(crate) struct Stateless<E, T> {
    pub(crate) pipe: Pipe<E, T>,
}

impl<E: Send + 'static, R, T: Send + 'static> Engine<E, R, T> for Stateless<E, T> {
    fn left(&mut self, _: Timestamp, event: &E, out: &mut Vec<T>) {
        out.extend((self.pipe)(event));
    }

    fn timed(&self) -> bool {
        false
    }
}

/// An engine whose outputs go through `map`/`filter` steps.
pub(crate) struct Then<L, R, X, O> {
    pub(crate) inner: Box<dyn Engine<L, R, X>>,
    pub(crate) step: Box<dyn FnMut(X) -> Option<O> + Send>,
    pub(crate) buf: Vec<X>,
}

impl<L, R, X, O> Then<L, R, X, O> {
    fn drain(&mut self, out: &mut Vec<O>) {
        out.extend(self.buf.drain(..).filter_map(&mut self.step));
    }
}

impl<L, R, X, O> Engine<L, R, O> for Then<L, R, X, O>
where
    L: 'static,
    R: 'static,
    X: Send + 'static,
    O: Send + 'static,
{
    fn left(&mut self, t: Timestamp, event: &L, out: &mut Vec<O>) {
        self.inner.left(t, event, &mut self.buf);
        self.drain(out);
    }

    fn right(&mut self, t: Timestamp, event: &R, out: &mut Vec<O>) {
        self.inner.right(t, event, &mut self.buf);
        self.drain(out);
    }

    fn advance(&mut self, watermark: Timestamp, out: &mut Vec<O>) {
        self.inner.advance(watermark, &mut self.buf);
        self.drain(out);
    }

    fn due(&self) -> Option<Timestamp> {
        self.inner.due()
    }

    fn open(&self) -> usize {
        self.inner.open()
    }

    fn timed(&self) -> bool {
        self.inner.timed()
    }

    fn save(&self) -> Option<serde_json::Result<Json>> {
        self.inner.save()
    }

    fn restore(&mut self, state: Json) -> serde_json::Result<()> {
        self.inner.restore(state)
    }
}

/// A duration in nanoseconds (saturating).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `t - d`, saturating at the epoch.
pub(crate) fn minus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_unix_nanos(t.as_unix_nanos().saturating_sub(nanos(d)))
}

/// `a - b`, or zero when `b` is later.
pub(crate) fn since(a: Timestamp, b: Timestamp) -> Duration {
    Duration::from_nanos(a.as_unix_nanos().saturating_sub(b.as_unix_nanos()))
}
