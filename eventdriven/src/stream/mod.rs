//! Stream processing over bus events: `map`, `filter`, `key_by`, tumbling, sliding and
//! session windows with `aggregate`/`reduce`, and a join of two event types on a key within a
//! time bound. What a stream makes is published as events, so actors, projections and bridges
//! consume it like anything else on the bus.
//!
//! A stream is declared on the builder with [`AppBuilder::stream`](crate::AppBuilder::stream)
//! and runs as one subscriber actor, `stream:<name>` in [`App::stats`](crate::App::stats)
//! (`stream` in dead letters): it has a bounded mailbox like every actor, so a slow stream
//! slows its publishers down instead of queueing without end, and what it publishes waits for
//! room in its subscribers' mailboxes.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use eventdriven::prelude::*;
//! use eventdriven::stream::{Stream, Tumbling, Window};
//! use eventdriven::Timestamp;
//!
//! #[derive(Event, Clone, Debug)]
//! struct OrderPlaced { customer: u32, cents: u64, at: Timestamp }
//!
//! #[derive(Event, Clone, Debug, PartialEq)]
//! struct CustomerMinute { customer: u32, minute_start: Timestamp, cents: u64 }
//!
//! #[derive(Clone, Default)]
//! struct Report(Arc<Mutex<Vec<CustomerMinute>>>);
//!
//! #[handlers]
//! impl Report {
//!     #[subscribe]
//!     fn on_minute(&mut self, ev: &CustomerMinute) { self.0.lock().unwrap().push(ev.clone()); }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> eventdriven::Result<()> {
//! let report = Report::default();
//! let app = App::builder()
//!     .actor(report.clone())
//!     .stream(|orders: Stream<OrderPlaced>| {
//!         orders
//!             .event_time(|o| o.at)
//!             .key_by(|o| o.customer)
//!             .window(Tumbling::of(Duration::from_secs(60)))
//!             .aggregate(0, |cents, o| *cents += o.cents)
//!             .map(|w: Window<u32, u64>| CustomerMinute {
//!                 customer: w.key,
//!                 minute_start: w.start,
//!                 cents: w.value,
//!             })
//!             .publish()
//!     })
//!     .build()
//!     .await?;
//!
//! let minute = |m: u64| Timestamp::from_unix_nanos(m * 60_000_000_000);
//! let at = |s: u64| Timestamp::from_unix_nanos(s * 1_000_000_000);
//! app.publish(OrderPlaced { customer: 7, cents: 500, at: at(600) }).await?;
//! app.publish(OrderPlaced { customer: 7, cents: 250, at: at(630) }).await?;
//! // Event time 12:00 passes the end of minute 10: its window closes and is published.
//! app.publish(OrderPlaced { customer: 7, cents: 100, at: at(720) }).await?;
//! // Shutdown publishes the windows still open (minute 12) before the app stops.
//! app.shutdown().await?;
//!
//! assert_eq!(*report.0.lock().unwrap(), [
//!     CustomerMinute { customer: 7, minute_start: minute(10), cents: 750 },
//!     CustomerMinute { customer: 7, minute_start: minute(12), cents: 100 },
//! ]);
//! # Ok(())
//! # }
//! ```
//!
//! # Time
//!
//! By default a stream runs on **event time**: each event's time is its metadata timestamp,
//! or what [`Stream::event_time`] reads from the event. The **watermark** is the latest event
//! time seen minus the [`out_of_orderness`](Stream::out_of_orderness) allowed; a window
//! `[start, end)` closes (is published) once the watermark reaches `end`. An event more than
//! the [`allowed_lateness`](Stream::allowed_lateness) behind the watermark is **late**: it goes
//! to the dead letters with the reason (`late event: ...`), or is published as a
//! [`LateEvent`] with [`publish_late`](Stream::publish_late); it is never dropped silently. An
//! event behind the watermark but within the allowed lateness still counts: its window, if
//! already published, is published again with the new value and the next
//! [`Window::revision`].
//!
//! Only events move event time: a stream that receives nothing keeps its windows open. With
//! [`advance_when_idle`](Stream::advance_when_idle), once nothing arrived for that long the
//! watermark moves on with tokio's clock from the last event time seen, so the last windows
//! close without another event. [`processing_time`](Stream::processing_time) places events at
//! their arrival on tokio's clock instead; windows then close on a timer, also when no event
//! arrives, and nothing is late.
//!
//! # Shutdown
//!
//! [`App::shutdown`](crate::App::shutdown) drains the mailboxes, then has every stream publish
//! its open windows, as if the watermark passed the end of time (a last, partial window is
//! published rather than lost), drains what that publishes, and repeats while streams fed by
//! other streams still have windows open (at most 8 rounds, within the shutdown deadline).
//! Join buffers hold nothing to publish and are let go.
//!
//! # Checkpoints
//!
//! With [`WindowedStream::aggregate_checkpointed`] and a store on the app
//! ([`AppBuilder::store`](crate::AppBuilder::store)), a stream writes its open windows and its
//! watermark to the store's snapshots after each message it handles, and reads them back when
//! the app starts: a window that spans a restart or a crash closes with the events of both
//! runs. Such a stream keeps its open windows in the store at shutdown instead of publishing
//! them.

mod engine;
mod join;
mod runner;
mod window;

use std::sync::Arc;
use std::time::Duration;

pub(crate) use runner::Hook;
pub use window::{Session, Sliding, Tumbling, WindowKind};

use serde::de::DeserializeOwned;
use serde::Serialize;

use engine::{Codec, Engine, Stateless, Then};
use join::IntervalJoin;
use runner::StreamSpec;
use window::{FixedWindows, Folding, Kind, Sessions};

use crate::app::builder::Wire;
use crate::message::{Event, Message, Timestamp};
use crate::Mailbox;

/// One step of a stream before its windows: an event in, a value or nothing out.
pub(crate) type Pipe<E, T> = Box<dyn FnMut(&E) -> Option<T> + Send>;
/// The key of a value.
pub(crate) type KeyFn<T, K> = Box<dyn FnMut(&T) -> K + Send>;
/// The event time of an event.
pub(crate) type TimeFn<E> = Box<dyn FnMut(&E) -> Timestamp + Send>;

/// Which clock places events in windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeMode {
    /// The event's own time; windows close as the watermark passes them.
    Event,
    /// Arrival on tokio's clock; windows close on a timer.
    Processing,
}

/// A stream's time and delivery settings.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) mode: TimeMode,
    pub(crate) out_of_orderness: Duration,
    pub(crate) lateness: Duration,
    pub(crate) idle: Option<Duration>,
    pub(crate) publish_late: bool,
    pub(crate) mailbox: Mailbox,
    /// The state is checkpointed in the app's store.
    pub(crate) checkpoint: bool,
}

/// The checkpoint codecs of a window's state, either kind.
struct Codecs<K, T, A> {
    fixed: Codec<window::FixedState<K, A>>,
    session: Codec<window::SessionState<K, T>>,
}

/// The input of a stream that is not a join (never constructed).
#[derive(Clone, Copy, Debug)]
pub enum NoJoin {}

impl Message for NoJoin {
    const NAME: &'static str = "eventdriven.stream.no_join";
}
#[diagnostic::do_not_recommend]
impl Event for NoJoin {}

/// A typed stream of the events of type `E`, carried as values of type `T` after
/// [`map`](Self::map). Given to the closure of
/// [`AppBuilder::stream`](crate::AppBuilder::stream), or made with [`Stream::new`] for the
/// other side of a [`join`](KeyedStream::join).
#[must_use = "a stream does nothing until `publish` and `AppBuilder::stream`"]
pub struct Stream<E, T = E> {
    settings: Settings,
    time: Option<TimeFn<E>>,
    pipe: Pipe<E, T>,
}

impl<E: Event> Stream<E> {
    /// The stream of every published `E`, on event time from the events' metadata
    /// timestamps, with no out-of-orderness or lateness allowed.
    pub fn new() -> Self {
        Self {
            settings: Settings {
                name: Arc::from(E::NAME),
                mode: TimeMode::Event,
                out_of_orderness: Duration::ZERO,
                lateness: Duration::ZERO,
                idle: None,
                publish_late: false,
                mailbox: Mailbox::default(),
                checkpoint: false,
            },
            time: None,
            pipe: Box::new(|e: &E| Some(e.clone())),
        }
    }
}

impl<E: Event> Default for Stream<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: Event, T: Send + 'static> Stream<E, T> {
    /// The stream's name: `stream:<name>` in stats, in logs, in the reasons of its dead
    /// letters and, checkpointed, in the store (the event's name by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Arc::from(name.into());
        self
    }

    /// Event time read from each event (instead of its metadata timestamp).
    pub fn event_time(mut self, time: impl FnMut(&E) -> Timestamp + Send + 'static) -> Self {
        self.settings.mode = TimeMode::Event;
        self.time = Some(Box::new(time));
        self
    }

    /// Places events at their arrival on tokio's clock: windows close on a timer, nothing is
    /// late.
    pub fn processing_time(mut self) -> Self {
        self.settings.mode = TimeMode::Processing;
        self.time = None;
        self
    }

    /// How far behind the latest event time seen an event may be and still be on time: the
    /// watermark is the latest event time minus this. Windows close that much later.
    pub fn out_of_orderness(mut self, bound: Duration) -> Self {
        self.settings.out_of_orderness = bound;
        self
    }

    /// How far behind the watermark an event may be and still count (updating a window
    /// already published, see [`Window::revision`]); later than that it is late. Windows are
    /// kept that long after they close.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.settings.lateness = lateness;
        self
    }

    /// Once no event arrived for `idle` (on tokio's clock), event time moves on with tokio's
    /// clock from the latest event time seen, so the last windows close without a new event.
    pub fn advance_when_idle(mut self, idle: Duration) -> Self {
        self.settings.idle = Some(idle);
        self
    }

    /// Publishes late events as [`LateEvent<E>`] instead of dead-lettering them (while no
    /// actor subscribes to `LateEvent<E>`, they are still dead-lettered, so none is lost).
    pub fn publish_late(mut self) -> Self {
        self.settings.publish_late = true;
        self
    }

    /// The stream's mailbox (default [`Mailbox::DEFAULT_CAPACITY`]).
    pub fn mailbox(mut self, mailbox: Mailbox) -> Self {
        self.settings.mailbox = mailbox;
        self
    }

    /// Turns each value into another.
    pub fn map<U: Send + 'static>(
        self,
        mut f: impl FnMut(T) -> U + Send + 'static,
    ) -> Stream<E, U> {
        let mut pipe = self.pipe;
        Stream {
            settings: self.settings,
            time: self.time,
            pipe: Box::new(move |e| pipe(e).map(&mut f)),
        }
    }

    /// Keeps the values `keep` accepts.
    pub fn filter(mut self, mut keep: impl FnMut(&T) -> bool + Send + 'static) -> Self {
        let mut pipe = self.pipe;
        self.pipe = Box::new(move |e| pipe(e).filter(&mut keep));
        self
    }

    /// Groups the values by `key`: windows and joins are per key.
    pub fn key_by<K: Ord + Clone + Send + 'static>(
        self,
        key: impl FnMut(&T) -> K + Send + 'static,
    ) -> KeyedStream<E, K, T> {
        KeyedStream {
            stream: self,
            key: Box::new(key),
        }
    }

    /// Publishes each value as it comes (no windows, no time).
    pub fn publish(self) -> Pipeline
    where
        T: Event,
    {
        Pipeline::of::<E, NoJoin, T>(
            self.settings,
            Box::new(Stateless { pipe: self.pipe }),
            self.time,
            None,
            None,
        )
    }
}

/// A stream grouped by a key of type `K`: made by [`Stream::key_by`].
#[must_use = "a stream does nothing until `publish` and `AppBuilder::stream`"]
pub struct KeyedStream<E, K, T = E> {
    stream: Stream<E, T>,
    key: KeyFn<T, K>,
}

impl<E: Event, K: Ord + Clone + Send + 'static, T: Send + 'static> KeyedStream<E, K, T> {
    /// Groups each key's values in windows of time: [`Tumbling`], [`Sliding`] or
    /// [`Session`].
    pub fn window(self, window: impl Into<WindowKind>) -> WindowedStream<E, K, T> {
        WindowedStream {
            keyed: self,
            kind: window.into(),
        }
    }

    /// Pairs each value with every value of `other` of the same key whose time is at most
    /// `within` before or after its own (an interval join). The pair becomes an output with
    /// [`JoinedStream::map`]. Both sides share one watermark, set by this stream's settings
    /// (`out_of_orderness`, `allowed_lateness`, time mode); `other` gives only how its events
    /// are timed ([`Stream::event_time`]), mapped, filtered and keyed. A value waits for
    /// partners until the watermark is `within` plus the allowed lateness past it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use eventdriven::prelude::*;
    /// use eventdriven::stream::Stream;
    /// use eventdriven::Timestamp;
    ///
    /// #[derive(Event, Clone, Debug)]
    /// struct Ordered { order: u32, at: Timestamp }
    ///
    /// #[derive(Event, Clone, Debug)]
    /// struct Paid { order: u32, at: Timestamp }
    ///
    /// #[derive(Event, Clone, Debug)]
    /// struct PaidInTime { order: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> eventdriven::Result<()> {
    /// let app = App::builder()
    ///     .stream(|orders: Stream<Ordered>| {
    ///         orders
    ///             .event_time(|o| o.at)
    ///             .key_by(|o| o.order)
    ///             .join(
    ///                 Stream::<Paid>::new().event_time(|p| p.at).key_by(|p| p.order),
    ///                 Duration::from_secs(15 * 60),
    ///             )
    ///             .map(|order, _ordered, _paid| PaidInTime { order: *order })
    ///             .publish()
    ///     })
    ///     .build()
    ///     .await?;
    /// # app.shutdown().await
    /// # }
    /// ```
    pub fn join<R: Event, U: Send + 'static>(
        self,
        other: KeyedStream<R, K, U>,
        within: Duration,
    ) -> JoinedStream<E, R, K, T, U> {
        JoinedStream {
            left: self,
            right: other,
            within,
        }
    }
}

/// A keyed stream in windows: made by [`KeyedStream::window`]; aggregate each window.
#[must_use = "a stream does nothing until `publish` and `AppBuilder::stream`"]
pub struct WindowedStream<E, K, T = E> {
    keyed: KeyedStream<E, K, T>,
    kind: WindowKind,
}

impl<E: Event, K: Ord + Clone + Send + 'static, T: Send + 'static> WindowedStream<E, K, T> {
    /// Folds each window's values into an accumulator starting from `init`; each window
    /// closes into a [`Window`] with the result.
    pub fn aggregate<A: Clone + Send + 'static>(
        self,
        init: A,
        fold: impl FnMut(&mut A, &T) + Send + 'static,
    ) -> Results<E, NoJoin, Window<K, A>> {
        self.build(init, Box::new(fold), None)
    }

    /// [`aggregate`](Self::aggregate), with the open windows and the watermark checkpointed
    /// in the app's store (when [`AppBuilder::store`](crate::AppBuilder::store) gave one),
    /// so windows that span a restart, or a crash, close with the right totals.
    ///
    /// The checkpoint is written after each event or timer tick the stream handled, once
    /// its outputs are published, and read back when the app starts, under the stream's
    /// [`name`](Stream::name): give each checkpointed stream its own name. At shutdown such
    /// a stream keeps its open windows in the store for the next start instead of publishing
    /// them. Keys, values (which session windows keep until they close) and accumulators
    /// must be serde types.
    ///
    /// Events in flight when the app stops are not in the checkpoint: the bus in process is
    /// not durable. Windows published just before a crash may be published again after it
    /// (at least once).
    pub fn aggregate_checkpointed<A>(
        self,
        init: A,
        fold: impl FnMut(&mut A, &T) + Send + 'static,
    ) -> Results<E, NoJoin, Window<K, A>>
    where
        K: Serialize + DeserializeOwned,
        T: Serialize + DeserializeOwned,
        A: Clone + Send + Serialize + DeserializeOwned + 'static,
    {
        let codecs = Codecs {
            fixed: window::fixed_codec::<K, A>(),
            session: window::session_codec::<K, T>(),
        };
        self.build(init, Box::new(fold), Some(codecs))
    }

    fn build<A: Clone + Send + 'static>(
        self,
        init: A,
        fold: window::FoldFn<A, T>,
        codecs: Option<Codecs<K, T, A>>,
    ) -> Results<E, NoJoin, Window<K, A>> {
        let KeyedStream { stream, key } = self.keyed;
        let mut settings = stream.settings;
        settings.checkpoint = codecs.is_some();
        let error = self.kind.check();
        let folding = Folding {
            pipe: stream.pipe,
            key,
            init,
            fold,
        };
        let engine: Box<dyn Engine<E, NoJoin, Window<K, A>>> = match self.kind.0 {
            Kind::Fixed { size, slide } => {
                let mut w = FixedWindows::new(folding, size, slide, settings.lateness);
                w.codec = codecs.map(|c| c.fixed);
                Box::new(w)
            }
            Kind::Session { gap } => {
                let mut w = Sessions::new(folding, gap, settings.lateness);
                w.codec = codecs.map(|c| c.session);
                Box::new(w)
            }
        };
        Results {
            settings,
            engine,
            left_time: stream.time,
            right_time: None,
            error,
        }
    }

    /// Combines each window's values pairwise with `combine`.
    pub fn reduce(
        self,
        mut combine: impl FnMut(&T, &T) -> T + Send + 'static,
    ) -> Results<E, NoJoin, Window<K, T>>
    where
        T: Clone,
    {
        self.aggregate(None, move |acc: &mut Option<T>, v: &T| {
            *acc = Some(match acc.take() {
                None => v.clone(),
                Some(a) => combine(&a, v),
            });
        })
        .filter_map(|w| {
            let Window {
                key,
                start,
                end,
                value,
                revision,
            } = w;
            // A window exists once a value fell in it.
            value.map(|value| Window {
                key,
                start,
                end,
                value,
                revision,
            })
        })
    }

    /// Counts each window's values.
    pub fn count(self) -> Results<E, NoJoin, Window<K, u64>> {
        self.aggregate(0, |n, _| *n += 1)
    }
}

/// Two keyed streams joined within a time bound: made by [`KeyedStream::join`].
#[must_use = "a stream does nothing until `publish` and `AppBuilder::stream`"]
pub struct JoinedStream<L, R, K, TL = L, TR = R> {
    left: KeyedStream<L, K, TL>,
    right: KeyedStream<R, K, TR>,
    within: Duration,
}

impl<L, R, K, TL, TR> JoinedStream<L, R, K, TL, TR>
where
    L: Event,
    R: Event,
    K: Ord + Clone + Send + 'static,
    TL: Send + 'static,
    TR: Send + 'static,
{
    /// What each matching pair (with its key) becomes.
    pub fn map<O: Send + 'static>(
        self,
        join: impl FnMut(&K, &TL, &TR) -> O + Send + 'static,
    ) -> Results<L, R, O> {
        let (left, right) = (self.left, self.right);
        let settings = left.stream.settings;
        let right_time = match settings.mode {
            TimeMode::Event => right.stream.time,
            TimeMode::Processing => None,
        };
        Results {
            engine: Box::new(IntervalJoin {
                left_pipe: left.stream.pipe,
                left_key: left.key,
                right_pipe: right.stream.pipe,
                right_key: right.key,
                within: self.within,
                lateness: settings.lateness,
                join: Box::new(join),
                lefts: Default::default(),
                rights: Default::default(),
            }),
            settings,
            left_time: left.stream.time,
            right_time,
            error: None,
        }
    }
}

/// What a windowed or joined stream makes, of type `O`: map and filter it, then
/// [`publish`](Self::publish) it.
#[must_use = "a stream does nothing until `publish` and `AppBuilder::stream`"]
pub struct Results<L, R, O> {
    settings: Settings,
    engine: Box<dyn Engine<L, R, O>>,
    left_time: Option<TimeFn<L>>,
    right_time: Option<TimeFn<R>>,
    error: Option<String>,
}

impl<L: Event, R: Event, O: Send + 'static> Results<L, R, O> {
    fn then<P: Send + 'static>(
        self,
        step: impl FnMut(O) -> Option<P> + Send + 'static,
    ) -> Results<L, R, P> {
        Results {
            settings: self.settings,
            engine: Box::new(Then {
                inner: self.engine,
                step: Box::new(step),
                buf: Vec::new(),
            }),
            left_time: self.left_time,
            right_time: self.right_time,
            error: self.error,
        }
    }

    /// Turns each output into another.
    pub fn map<P: Send + 'static>(
        self,
        mut f: impl FnMut(O) -> P + Send + 'static,
    ) -> Results<L, R, P> {
        self.then(move |o| Some(f(o)))
    }

    /// Keeps the outputs `keep` accepts.
    pub fn filter(self, mut keep: impl FnMut(&O) -> bool + Send + 'static) -> Results<L, R, O> {
        self.then(move |o| keep(&o).then_some(o))
    }

    /// Turns each output into another, or drops it.
    pub fn filter_map<P: Send + 'static>(
        self,
        f: impl FnMut(O) -> Option<P> + Send + 'static,
    ) -> Results<L, R, P> {
        self.then(f)
    }

    /// Publishes every output as an event: the stream is complete, for
    /// [`AppBuilder::stream`](crate::AppBuilder::stream).
    pub fn publish(self) -> Pipeline
    where
        O: Event,
    {
        Pipeline::of(
            self.settings,
            self.engine,
            self.left_time,
            self.right_time,
            self.error,
        )
    }
}

/// A complete stream, for [`AppBuilder::stream`](crate::AppBuilder::stream).
#[must_use = "give it to `AppBuilder::stream`"]
pub struct Pipeline {
    pub(crate) wire: Box<dyn Wire>,
}

impl Pipeline {
    fn of<L: Event, R: Event, O: Event>(
        settings: Settings,
        engine: Box<dyn Engine<L, R, O>>,
        left_time: Option<TimeFn<L>>,
        right_time: Option<TimeFn<R>>,
        error: Option<String>,
    ) -> Self {
        Self {
            wire: Box::new(StreamSpec {
                settings,
                engine,
                left_time,
                right_time,
                error,
            }),
        }
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// One key's window, closed: what [`WindowedStream::aggregate`] makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window<K, A> {
    /// The key.
    pub key: K,
    /// The window's start (inclusive).
    pub start: Timestamp,
    /// The window's end (exclusive); for a session, its last event's time plus the gap.
    pub end: Timestamp,
    /// The aggregate of the window's values.
    pub value: A,
    /// 0 when the window closes; 1, 2, ... for each update by an event that came after it
    /// closed but within the allowed lateness.
    pub revision: u32,
}

/// An event that came later than a stream's allowed lateness, published instead of
/// dead-lettered with [`Stream::publish_late`]. Subscribe to `LateEvent<E>` to handle them.
#[derive(Clone, Debug)]
pub struct LateEvent<E> {
    /// The event.
    pub event: E,
    /// Its event time.
    pub event_time: Timestamp,
    /// The stream's watermark when it arrived.
    pub watermark: Timestamp,
    /// The stream's name.
    pub stream: Arc<str>,
}

impl<E: Event> Message for LateEvent<E> {
    const NAME: &'static str = "eventdriven.stream.late";
}
#[diagnostic::do_not_recommend]
impl<E: Event> Event for LateEvent<E> {}
