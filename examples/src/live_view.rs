//! A live view of a running app: one small web page, refreshed every second, and a Prometheus
//! endpoint beside it (feature `live-view`).
//!
//! | route                               | what                                                  |
//! |-------------------------------------|-------------------------------------------------------|
//! | `GET /`                             | the page (HTML with its CSS and script inline)        |
//! | `GET /api/stats`                    | what the page shows, as JSON ([`Snapshot`])           |
//! | `POST /api/dead-letters/{seq}/retry`| [`App::retry_dead_letter`]: `{"retried": seq}`        |
//! | `POST /api/dead-letters/purge`      | purges every dead letter: `{"purged": n}`             |
//! | `GET /metrics`                      | the Prometheus text format of the app's metrics       |
//!
//! Errors are JSON too, `{"error": "..."}`, with a 400 (not a number), 404 (no such dead
//! letter or route) or 409 (a dead letter that kept only its metadata).
//!
//! The page shows, per actor, its mailbox depth against its capacity, the peak, the
//! throughput (messages handled per second over the last few seconds, from the `handled`
//! counter's deltas, sampled once a second), the handled, failed and dead-lettered counts and
//! the handler latency's p50 and p99 (when the app measures it:
//! [`AppBuilder::handler_latency`](eventdriven::AppBuilder::handler_latency), or
//! [`metrics`](eventdriven::AppBuilder::metrics)); then the dead letters, each with a Retry
//! button, and a Purge button; then the saga instances, the unfinished ones first, then the
//! newest. Its elements carry stable ids and `data-` attributes (`#actors tr[data-actor]`,
//! `#dead-letters tr[data-seq]`, `#sagas tr[data-saga-id]`, `td[data-col]`) for tests.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use eventdriven::saga::{SagaStatus, Sagas};
use eventdriven::App;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::net::TcpListener;

/// The page: no external assets, so it works offline and in a sandboxed browser.
const PAGE: &str = include_str!("live_view.html");

/// How far back the throughput looks, at most (one sample a second).
const WINDOW: usize = 5;
/// The most saga instances the page lists.
const SAGAS_SHOWN: usize = 15;
/// The most dead letters the page lists (the oldest first).
const DEAD_LETTERS_SHOWN: usize = 50;

/// The live view of one app: what it serves, and where it reads it.
#[derive(Clone)]
pub struct LiveView {
    inner: Arc<Inner>,
}

struct Inner {
    title: String,
    app: App,
    sagas: Sagas,
    prometheus: PrometheusHandle,
    started: Instant,
    /// `handled` per actor (in the app's actor order), once a second, the newest last.
    samples: Mutex<VecDeque<(Instant, Vec<u64>)>>,
}

impl LiveView {
    /// A view titled `title` of `app`, its saga instances in `sagas`, and the metrics of the
    /// Prometheus recorder behind `prometheus` (the app built with
    /// [`metrics`](eventdriven::AppBuilder::metrics)).
    pub fn new(
        title: impl Into<String>,
        app: App,
        sagas: Sagas,
        prometheus: PrometheusHandle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                title: title.into(),
                app,
                sagas,
                prometheus,
                started: Instant::now(),
                samples: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// Serves the view on `listener` until `shutdown` completes (requests in flight are
    /// finished first).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // The throughput's samples, taken once a second while serving (also if this future
        // is dropped before it ends).
        let _sampler = AbortOnDrop(tokio::spawn({
            let view = self.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    view.sample();
                }
            }
        }));
        let router = Router::new()
            .route("/", get(page))
            .route("/api/stats", get(stats))
            .route("/api/dead-letters/{seq}/retry", post(retry))
            .route("/api/dead-letters/purge", post(purge))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .with_state(self);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }

    fn sample(&self) {
        let handled = self
            .inner
            .app
            .stats()
            .actors
            .iter()
            .map(|a| a.handled)
            .collect();
        let mut samples = self.samples();
        samples.push_back((Instant::now(), handled));
        while samples.len() > WINDOW + 1 {
            samples.pop_front();
        }
    }

    fn samples(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Vec<u64>)>> {
        // A sample is pushed whole or not at all: a poisoned lock still holds good samples.
        self.inner
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What the page shows, now.
    pub async fn snapshot(&self) -> Result<Snapshot, String> {
        let inner = &self.inner;
        let stats = inner.app.stats();
        let now = Instant::now();
        // Messages per second since the oldest sample of the window (none yet: 0).
        let rates: Vec<f64> = {
            let samples = self.samples();
            match samples.front() {
                Some((at, handled)) if now.duration_since(*at) >= Duration::from_millis(500) => {
                    let secs = now.duration_since(*at).as_secs_f64();
                    stats
                        .actors
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            let before = handled.get(i).copied().unwrap_or(0);
                            a.handled.saturating_sub(before) as f64 / secs
                        })
                        .collect()
                }
                _ => vec![0.0; stats.actors.len()],
            }
        };
        let actors = stats
            .actors
            .iter()
            .zip(rates)
            .map(|(a, throughput)| ActorRow {
                actor: a.actor,
                queued: a.queued,
                capacity: a.capacity,
                peak: a.peak,
                throughput: (throughput * 10.0).round() / 10.0,
                handled: a.handled,
                failed: a.failed,
                retried: a.retried,
                dead_lettered: a.dead_lettered,
                panics: a.panics,
                latency: a.latency.map(|l| Latency {
                    count: l.count,
                    mean_us: micros(l.mean),
                    p50_us: micros(l.p50),
                    p99_us: micros(l.p99),
                    max_us: micros(l.max),
                }),
            })
            .collect();

        let letters = inner.app.dead_letters().list();
        let wall = SystemTime::now();
        let dead_letters = letters
            .iter()
            .take(DEAD_LETTERS_SHOWN)
            .map(|dl| DeadLetterRow {
                seq: dl.seq,
                actor: dl.actor,
                message: dl.message,
                reason: dl.reason.to_string(),
                error: dl.error.clone(),
                attempts: dl.attempts,
                age_s: wall
                    .duration_since(dl.last_failure)
                    .unwrap_or_default()
                    .as_secs(),
                can_retry: dl.can_retry(),
            })
            .collect();

        let mut sagas = inner
            .sagas
            .list(None, usize::MAX)
            .await
            .map_err(|e| format!("listing the saga instances: {e}"))?;
        let mut counts = SagaCounts::default();
        for saga in &sagas {
            match saga.status {
                SagaStatus::Running => counts.running += 1,
                SagaStatus::Compensating => counts.compensating += 1,
                SagaStatus::Completed => counts.completed += 1,
                SagaStatus::Compensated => counts.compensated += 1,
                SagaStatus::NeedsAttention => counts.needs_attention += 1,
            }
        }
        let total = sagas.len();
        // Unfinished first, then the newest.
        sagas.sort_by_key(|s| (s.step.is_none(), s.age));
        let sagas = sagas
            .into_iter()
            .take(SAGAS_SHOWN)
            .map(|s| SagaRow {
                id: s.id,
                saga: s.saga,
                status: s.status.as_str(),
                step: s.step,
                age_s: s.age.as_secs(),
                last_error: s.last_error,
            })
            .collect();

        Ok(Snapshot {
            title: inner.title.clone(),
            uptime_s: inner.started.elapsed().as_secs(),
            actors,
            dead_letter_count: letters.len(),
            dead_letters,
            scheduled: stats.scheduled,
            saga_count: total,
            saga_counts: counts,
            sagas,
        })
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `d` in microseconds, to a tenth.
fn micros(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

/// What `GET /api/stats` answers.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// The view's title.
    pub title: String,
    /// Seconds since the view was made.
    pub uptime_s: u64,
    /// One row per actor, in the app's order.
    pub actors: Vec<ActorRow>,
    /// Dead letters in all.
    pub dead_letter_count: usize,
    /// The oldest dead letters (up to 50).
    pub dead_letters: Vec<DeadLetterRow>,
    /// Scheduled messages not yet due.
    pub scheduled: usize,
    /// Saga instances in all.
    pub saga_count: usize,
    /// Saga instances by status.
    pub saga_counts: SagaCounts,
    /// The unfinished saga instances, then the newest (up to 15 in all).
    pub sagas: Vec<SagaRow>,
}

/// An actor's figures.
#[derive(Debug, Serialize)]
pub struct ActorRow {
    /// The actor's name.
    pub actor: &'static str,
    /// Messages waiting in its mailbox.
    pub queued: usize,
    /// Its mailbox's capacity.
    pub capacity: usize,
    /// The most messages ever waiting at once.
    pub peak: usize,
    /// Messages handled per second over the last few seconds.
    pub throughput: f64,
    /// Messages handled.
    pub handled: u64,
    /// Handler runs that failed.
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Messages that went to the dead letters.
    pub dead_lettered: u64,
    /// Handlers that panicked.
    pub panics: u64,
    /// Handler latency, when measured and once something was handled.
    pub latency: Option<Latency>,
}

/// Handler latency, in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Messages measured.
    pub count: u64,
    /// The mean.
    pub mean_us: f64,
    /// The median.
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
    /// The longest.
    pub max_us: f64,
}

/// A dead letter.
#[derive(Debug, Serialize)]
pub struct DeadLetterRow {
    /// Its number, for a retry.
    pub seq: u64,
    /// The actor that could not handle it.
    pub actor: &'static str,
    /// The message's name.
    pub message: &'static str,
    /// Why it is here.
    pub reason: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// Seconds since its last failure.
    pub age_s: u64,
    /// Whether the message was kept, so it can be retried.
    pub can_retry: bool,
}

/// A saga instance.
#[derive(Debug, Serialize)]
pub struct SagaRow {
    /// The instance's id.
    pub id: String,
    /// The saga type.
    pub saga: String,
    /// `running`, `compensating`, `completed`, `compensated` or `needs_attention`.
    pub status: &'static str,
    /// The step it is at, while running or compensating.
    pub step: Option<String>,
    /// Seconds since it started.
    pub age_s: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// Saga instances by status.
#[derive(Debug, Default, Serialize)]
pub struct SagaCounts {
    /// Running their steps.
    pub running: usize,
    /// Undoing their steps.
    pub compensating: usize,
    /// Every step done.
    pub completed: usize,
    /// Undone after a failure.
    pub compensated: usize,
    /// A compensation failed: someone has to look.
    pub needs_attention: usize,
}

/// An error answer: a status and `{"error": "..."}`.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

async fn page(State(view): State<LiveView>) -> Html<String> {
    Html(PAGE.replace("{{title}}", &escape(&view.inner.title)))
}

async fn stats(State(view): State<LiveView>) -> Result<Json<Snapshot>, Failure> {
    let snapshot = view.snapshot().await;
    snapshot
        .map(Json)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e))
}

async fn retry(
    State(view): State<LiveView>,
    Path(seq): Path<String>,
) -> Result<Json<Retried>, Failure> {
    let seq: u64 = seq.parse().map_err(|_| {
        let what = format!("`{seq}` is not a dead letter's number (a whole number is)");
        Failure(StatusCode::BAD_REQUEST, what)
    })?;
    match view.inner.app.retry_dead_letter(seq).await {
        Ok(()) => Ok(Json(Retried { retried: seq })),
        Err(e @ eventdriven::Error::NoDeadLetter { .. }) => {
            Err(Failure(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e @ eventdriven::Error::NotRetryable { .. }) => {
            Err(Failure(StatusCode::CONFLICT, e.to_string()))
        }
        Err(e) => Err(Failure(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

#[derive(Serialize)]
struct Retried {
    retried: u64,
}

async fn purge(State(view): State<LiveView>) -> Json<Purged> {
    let purged = view.inner.app.dead_letters().purge();
    Json(Purged { purged })
}

#[derive(Serialize)]
struct Purged {
    purged: usize,
}

async fn metrics(State(view): State<LiveView>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        view.inner.prometheus.render(),
    )
}

async fn not_found() -> Failure {
    Failure(StatusCode::NOT_FOUND, "no such page".to_owned())
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
