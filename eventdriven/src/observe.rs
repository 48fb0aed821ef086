//! What the app measures about itself, and how it reaches tracing and metrics.
//!
//! - **Counters** per actor (handled, failed, retried, dead-lettered, panics) and mailbox
//!   gauges (depth, peak, capacity) are always kept; [`App::stats`](crate::App::stats) reads
//!   them.
//! - **Handler latency** (from taking a message out of the mailbox to the handler's end,
//!   waits included) is measured when the builder asks for it
//!   ([`AppBuilder::handler_latency`](crate::AppBuilder::handler_latency), or
//!   [`metrics`](crate::AppBuilder::metrics) with the `metrics` feature): two clock reads and
//!   a few single-writer stores per message, into a histogram of the actor's own
//!   ([`LatencySummary`] in its [`ActorStats`](crate::ActorStats)).
//! - **Spans**: with a `tracing` subscriber listening at `INFO`, each handled message runs
//!   inside a `handle` span (actor, message name, id, correlation and causation ids,
//!   attempt) whose parent is the span of the handler that sent it, so one request's whole
//!   flow reads as one trace (also through `tracing-opentelemetry`). Without a subscriber at
//!   that level, no span is made and nothing is recorded.
//!
//! With the `metrics` feature, [`AppBuilder::metrics`](crate::AppBuilder::metrics) exports the
//! same figures through the [`metrics`](https://docs.rs/metrics) facade to whatever recorder
//! the application installed (Prometheus, StatsD, ...); see [`METRICS`] for the names.
//!
//! ```
//! use eventdriven::prelude::*;
//!
//! #[derive(Event, Clone, Debug)]
//! struct Ping;
//!
//! struct Pong;
//!
//! #[handlers]
//! impl Pong {
//!     #[subscribe]
//!     fn ping(&mut self, _: &Ping) -> Result<(), String> {
//!         Err("not today".into())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> eventdriven::Result<()> {
//! let app = App::builder().actor(Pong).handler_latency(true).build().await?;
//! app.publish(Ping).await?;
//! app.shutdown().await?; // drains the mailboxes
//!
//! let pong = &app.stats().actors[0];
//! assert_eq!((pong.actor, pong.handled, pong.failed, pong.dead_lettered), ("Pong", 1, 1, 1));
//! let latency = pong.latency.expect("measured");
//! assert_eq!(latency.count, 1);
//! assert!(latency.p50 <= latency.max);
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::message::MessageId;

/// Handler latency of one actor, from [`ActorStats`](crate::ActorStats).
///
/// Quantiles come from a histogram with eight buckets per power of two, so each is within
/// 1/16 (6.25 %) of the true value; `max` and `mean` are exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencySummary {
    /// Messages measured.
    pub count: u64,
    /// Their mean latency.
    pub mean: Duration,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The longest.
    pub max: Duration,
    /// All latencies added up (for a Prometheus summary's `_sum`).
    pub sum: Duration,
}

/// Exact buckets below this many nanoseconds, then eight per power of two.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two.
const SUB_BITS: u32 = 3;
/// Powers of two above `LINEAR` covered: up to 2^40 ns (about 18 minutes); longer latencies
/// count in the last bucket (and in `max`, exactly).
const OCTAVES: usize = 36;
const BUCKETS: usize = LINEAR as usize + OCTAVES * (1 << SUB_BITS);

/// A latency histogram written by one actor's task and read by anyone.
///
/// Only the actor's task writes, one message at a time, so each field is updated with a load
/// and a store (no read-modify-write instruction); readers see each field's latest value,
/// possibly from two messages apart, which a statistic tolerates.
pub(crate) struct Latency {
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Latency {
    fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < LINEAR {
            return ns as usize;
        }
        let octave = 63 - ns.leading_zeros(); // >= 4
        let sub = (ns >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        let index = LINEAR as usize + (octave as usize - 4) * (1 << SUB_BITS) + sub as usize;
        index.min(BUCKETS - 1)
    }

    /// The middle of bucket `index`'s range, in nanoseconds.
    fn value(index: usize) -> u64 {
        if index < LINEAR as usize {
            return index as u64;
        }
        let above = index - LINEAR as usize;
        let octave = (above >> SUB_BITS) as u32 + 4;
        let sub = (above & ((1 << SUB_BITS) - 1)) as u64;
        let width = 1u64 << (octave - SUB_BITS);
        (1u64 << octave) + sub * width + width / 2
    }

    /// Records one latency. Only the actor's own task calls this.
    #[inline]
    pub(crate) fn record(&self, ns: u64) {
        fn bump(cell: &AtomicU64, by: u64) {
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(by),
                Ordering::Relaxed,
            );
        }
        bump(&self.buckets[Self::bucket(ns)], 1);
        bump(&self.count, 1);
        bump(&self.sum_ns, ns);
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.store(ns, Ordering::Relaxed);
        }
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let max = self.max_ns.load(Ordering::Relaxed);
        let quantile = |q: f64| {
            if total == 0 {
                return Duration::ZERO;
            }
            // The rank of the quantile, 1-based: the smallest value with at least q of all
            // values at or below it.
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for (index, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return Duration::from_nanos(Self::value(index).min(max));
                }
            }
            Duration::from_nanos(max)
        };
        let sum = self.sum_ns.load(Ordering::Relaxed);
        LatencySummary {
            count: total,
            mean: Duration::from_nanos(sum.checked_div(total).unwrap_or(0)),
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            max: Duration::from_nanos(max),
            sum: Duration::from_nanos(sum),
        }
    }
}

/// An actor's rarely written figures, made the first time one is needed, so an actor that
/// never fails (and whose latency is not measured) carries only a null pointer for them.
#[derive(Default)]
pub(crate) struct Counters {
    /// Handler runs that ended in an error or a panic.
    pub(crate) failed: AtomicU64,
    /// Retries scheduled after a failure.
    pub(crate) retried: AtomicU64,
    /// Messages of this actor that went to the dead letters.
    pub(crate) dead_lettered: AtomicU64,
    /// Failed messages waiting for their retry's backoff.
    pub(crate) retrying: AtomicU64,
    latency: OnceLock<Box<Latency>>,
}

impl Counters {
    /// The latency histogram, made on first use.
    #[inline]
    pub(crate) fn latency(&self) -> &Latency {
        self.latency.get_or_init(|| Box::new(Latency::new()))
    }

    /// The latency histogram if anything was measured.
    pub(crate) fn latency_if_any(&self) -> Option<&Latency> {
        self.latency.get().map(|l| &**l)
    }
}

/// How long a message's sender's span is kept for the message's handler to attach to.
const LINK_RETENTION: Duration = Duration::from_secs(2);
/// The most spans kept for messages not handled yet.
const LINK_CAPACITY: usize = 16_384;

/// The spans of handlers that sent messages, by the message's id, for the handlers of those
/// messages to make their spans children of: the causation chain, as a trace.
///
/// Only filled while a subscriber listens at `INFO`. An entry holds its span open (a span
/// closes when its last handle drops), so entries leave after [`LINK_RETENTION`] or when
/// [`LINK_CAPACITY`] newer ones came; a message handled later than that starts a trace of its
/// own (its span still records the causation and correlation ids).
struct Links {
    by_id: HashMap<MessageId, tracing::Span>,
    order: VecDeque<(MessageId, std::time::Instant)>,
}

fn links() -> &'static Mutex<Links> {
    static LINKS: OnceLock<Mutex<Links>> = OnceLock::new();
    LINKS.get_or_init(|| {
        Mutex::new(Links {
            by_id: HashMap::new(),
            order: VecDeque::new(),
        })
    })
}

impl Links {
    fn expire(&mut self, now: std::time::Instant) {
        while let Some(&(id, at)) = self.order.front() {
            if self.order.len() <= LINK_CAPACITY && now.duration_since(at) < LINK_RETENTION {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(&id);
        }
    }
}

/// Remembers the current span as the sender of message `id`, if a subscriber listens.
#[inline]
pub(crate) fn link_sender(id: MessageId) {
    if !tracing::level_enabled!(tracing::Level::INFO) {
        return;
    }
    link_sender_slow(id);
}

#[cold]
fn link_sender_slow(id: MessageId) {
    let span = tracing::Span::current();
    if span.is_none() {
        return;
    }
    let now = std::time::Instant::now();
    let mut links = links().lock().unwrap_or_else(|e| e.into_inner());
    links.expire(now);
    if links.by_id.insert(id, span).is_none() {
        links.order.push_back((id, now));
    }
}

/// The span of the handler that sent message `id`, if it is still known.
pub(crate) fn sender_span(id: MessageId) -> Option<tracing::Span> {
    let mut links = links().lock().unwrap_or_else(|e| e.into_inner());
    links.expire(std::time::Instant::now());
    links.by_id.get(&id).cloned()
}

/// Drops every remembered span (the app is shutting down): their spans may close.
pub(crate) fn forget_senders() {
    let mut links = links().lock().unwrap_or_else(|e| e.into_inner());
    links.by_id.clear();
    links.order.clear();
}

/// Every metric [`AppBuilder::metrics`](crate::AppBuilder::metrics) exports: name, kind, what
/// it measures. Labels: `actor` on the per-actor ones, `bridge` on the bridge ones,
/// `quantile` (`0.5`, `0.9`, `0.99`, `1`) on the latency gauges, as in a Prometheus summary.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "eventdriven_handled_total",
        "counter",
        "Messages an actor handled (successfully or not).",
    ),
    (
        "eventdriven_failed_total",
        "counter",
        "Handler runs that failed (error or panic).",
    ),
    (
        "eventdriven_retried_total",
        "counter",
        "Retries scheduled after a failure.",
    ),
    (
        "eventdriven_dead_lettered_total",
        "counter",
        "An actor's messages that went to the dead letters.",
    ),
    (
        "eventdriven_panics_total",
        "counter",
        "Handlers that panicked.",
    ),
    (
        "eventdriven_mailbox_depth",
        "gauge",
        "Messages waiting in an actor's mailbox.",
    ),
    (
        "eventdriven_mailbox_capacity",
        "gauge",
        "An actor's mailbox capacity.",
    ),
    (
        "eventdriven_mailbox_peak",
        "gauge",
        "The most messages ever waiting at once in an actor's mailbox.",
    ),
    (
        "eventdriven_handler_latency_seconds",
        "gauge",
        "Handler latency quantiles since the start (label quantile; 1 is the maximum).",
    ),
    (
        "eventdriven_handler_latency_seconds_count",
        "counter",
        "Handler runs measured.",
    ),
    (
        "eventdriven_handler_latency_seconds_sum",
        "gauge",
        "Handler latency, all runs added up.",
    ),
    (
        "eventdriven_dead_letters",
        "gauge",
        "Dead letters held now (all sources).",
    ),
    (
        "eventdriven_scheduled",
        "gauge",
        "Scheduled messages not yet due.",
    ),
    (
        "eventdriven_bridge_published_total",
        "counter",
        "Events a bridge published and the broker acknowledged.",
    ),
    (
        "eventdriven_bridge_received_total",
        "counter",
        "Messages a bridge received from the broker.",
    ),
    (
        "eventdriven_bridge_acked_total",
        "counter",
        "Messages a bridge acked after every subscriber was done.",
    ),
    (
        "eventdriven_bridge_nacked_total",
        "counter",
        "Messages a bridge nacked for a later redelivery.",
    ),
    (
        "eventdriven_bridge_dead_lettered_total",
        "counter",
        "A bridge's dead letters, inbound and outbound.",
    ),
    (
        "eventdriven_bridge_in_flight",
        "gauge",
        "Messages a bridge took from the broker and has not settled.",
    ),
    (
        "eventdriven_bridge_lag",
        "gauge",
        "Messages waiting at the broker for the bridge's consumer group.",
    ),
    (
        "eventdriven_projection_position",
        "gauge",
        "The last store position a projection applied (label projection).",
    ),
    (
        "eventdriven_projection_lag",
        "gauge",
        "Stored events a projection has not applied yet.",
    ),
    (
        "eventdriven_projection_applied_total",
        "counter",
        "Events a projection applied since it started.",
    ),
    (
        "eventdriven_sagas",
        "gauge",
        "Saga instances in the store by saga type and status (labels saga, status).",
    ),
];

/// The exporter behind [`AppBuilder::metrics`](crate::AppBuilder::metrics).
#[cfg(feature = "metrics")]
pub(crate) mod export {
    use std::time::Duration;

    use metrics::{counter, gauge};

    use crate::app::{App, WeakApp};

    /// Describes the metrics to the recorder, then exports every `every` until shutdown.
    pub(crate) fn start(app: &App, every: Duration) {
        for &(name, kind, help) in super::METRICS {
            match kind {
                "counter" => metrics::describe_counter!(name, help),
                _ => metrics::describe_gauge!(name, help),
            }
        }
        let weak: WeakApp = app.downgrade();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            // Saga statuses exported before: one that has no instance now reads 0.
            let mut exported = std::collections::BTreeSet::new();
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { break };
                if app.is_shutting_down() {
                    break; // `shutdown` exports the last figures itself.
                }
                once(&app);
                lag(&app).await;
                sagas(&app, &mut exported).await;
            }
        });
    }

    /// Exports the figures [`App::stats`] has (everything but the bridges' lag).
    pub(crate) fn once(app: &App) {
        let stats = app.stats();
        for a in &stats.actors {
            let actor = a.actor;
            counter!("eventdriven_handled_total", "actor" => actor).absolute(a.handled);
            counter!("eventdriven_failed_total", "actor" => actor).absolute(a.failed);
            counter!("eventdriven_retried_total", "actor" => actor).absolute(a.retried);
            counter!("eventdriven_dead_lettered_total", "actor" => actor).absolute(a.dead_lettered);
            counter!("eventdriven_panics_total", "actor" => actor).absolute(a.panics);
            gauge!("eventdriven_mailbox_depth", "actor" => actor).set(a.queued as f64);
            gauge!("eventdriven_mailbox_capacity", "actor" => actor).set(a.capacity as f64);
            gauge!("eventdriven_mailbox_peak", "actor" => actor).set(a.peak as f64);
            if let Some(l) = a.latency {
                for (quantile, value) in [
                    ("0.5", l.p50),
                    ("0.9", l.p90),
                    ("0.99", l.p99),
                    ("1", l.max),
                ] {
                    gauge!("eventdriven_handler_latency_seconds", "actor" => actor, "quantile" => quantile)
                        .set(value.as_secs_f64());
                }
                counter!("eventdriven_handler_latency_seconds_count", "actor" => actor)
                    .absolute(l.count);
                gauge!("eventdriven_handler_latency_seconds_sum", "actor" => actor)
                    .set(l.sum.as_secs_f64());
            }
        }
        gauge!("eventdriven_dead_letters").set(stats.dead_letters as f64);
        gauge!("eventdriven_scheduled").set(stats.scheduled as f64);
        #[cfg(feature = "bridge")]
        for (name, b) in stats.bridges {
            counter!("eventdriven_bridge_published_total", "bridge" => name.clone())
                .absolute(b.published);
            counter!("eventdriven_bridge_received_total", "bridge" => name.clone())
                .absolute(b.received);
            counter!("eventdriven_bridge_acked_total", "bridge" => name.clone()).absolute(b.acked);
            counter!("eventdriven_bridge_nacked_total", "bridge" => name.clone())
                .absolute(b.nacked);
            counter!("eventdriven_bridge_dead_lettered_total", "bridge" => name.clone())
                .absolute(b.dead_lettered + b.publish_dead_lettered);
            gauge!("eventdriven_bridge_in_flight", "bridge" => name).set(b.in_flight as f64);
        }
        for p in stats.projections {
            gauge!("eventdriven_projection_position", "projection" => p.name.clone())
                .set(p.position as f64);
            gauge!("eventdriven_projection_lag", "projection" => p.name.clone())
                .set(p.lag() as f64);
            counter!("eventdriven_projection_applied_total", "projection" => p.name)
                .absolute(p.applied);
        }
    }

    /// Counts the saga instances of each store by type and status. A status exported before
    /// (`exported`) and empty now is set to 0: a gauge keeps its last value, and an instance
    /// that moved on from `running` would still count there.
    async fn sagas(app: &App, exported: &mut std::collections::BTreeSet<(String, String)>) {
        let mut counts = std::collections::BTreeMap::<(String, String), u64>::new();
        for store in app.saga_stores() {
            let listed =
                tokio::time::timeout(Duration::from_secs(5), store.list_sagas(None, usize::MAX))
                    .await;
            match listed {
                Ok(Ok(records)) => {
                    for record in records {
                        *counts.entry((record.saga, record.status)).or_default() += 1;
                    }
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "saga counts not read");
                    return;
                }
                Err(_) => {
                    tracing::debug!("saga counts not read within 5 s");
                    return;
                }
            }
        }
        for key in exported.iter() {
            counts.entry(key.clone()).or_default();
        }
        exported.extend(counts.keys().cloned());
        for ((saga, status), count) in counts {
            gauge!("eventdriven_sagas", "saga" => saga, "status" => status).set(count as f64);
        }
    }

    /// Asks each consuming bridge's broker for its lag (bounded by the bridge's own timeout).
    async fn lag(app: &App) {
        #[cfg(feature = "bridge")]
        for bridge in app.bridges() {
            match bridge.lag().await {
                Ok(Some(lag)) => {
                    gauge!("eventdriven_bridge_lag", "bridge" => bridge.name().to_owned())
                        .set(lag.pending as f64);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(bridge = bridge.name(), %error, "lag not known");
                }
            }
        }
        #[cfg(not(feature = "bridge"))]
        let _ = app;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        let mut last = 0;
        for ns in [
            0,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1_000,
            65_535,
            1 << 30,
            1 << 39,
        ] {
            let index = Latency::bucket(ns);
            assert!(index >= last, "{ns} went to bucket {index} below {last}");
            last = index;
            let middle = Latency::value(index);
            let error = middle.abs_diff(ns) as f64 / ns.max(1) as f64;
            assert!(error <= 1.0 / 16.0 + 1e-9, "{ns} -> {middle}");
        }
        assert_eq!(Latency::bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_follow_the_recorded_values() {
        let latency = Latency::new();
        for us in 1..=100u64 {
            latency.record(us * 1_000);
        }
        let s = latency.summary();
        assert_eq!(s.count, 100);
        assert_eq!(s.max, Duration::from_micros(100));
        assert_eq!(s.mean, Duration::from_nanos(50_500));
        let near = |d: Duration, us: u64| {
            let want = us as f64 * 1_000.0;
            (d.as_nanos() as f64 - want).abs() / want <= 1.0 / 16.0
        };
        assert!(near(s.p50, 50), "{s:?}");
        assert!(near(s.p90, 90), "{s:?}");
        assert!(near(s.p99, 99), "{s:?}");
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }
}
