//! The `metrics` feature: `AppBuilder::metrics` exports the app's figures to the recorder the
//! application installed; here the Prometheus exporter's, rendered as its scrape page.

#![cfg(feature = "metrics")]

use std::time::Duration;

use std::sync::OnceLock;

use eventdriven::prelude::*;
use eventdriven::projection::{Projection, ProjectionContext, ProjectionError, Projector};
use eventdriven::saga::{Saga, Sagas, StepError};
use eventdriven::store::{EventData, ExpectedVersion, Store};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

#[derive(Event, Clone, Debug)]
struct Tick(u32);

struct Counter;

#[handlers]
impl Counter {
    #[subscribe]
    fn tick(&mut self, tick: &Tick) -> Result<(), String> {
        if tick.0.is_multiple_of(10) {
            return Err(format!("tick {} fails", tick.0));
        }
        Ok(())
    }
}

/// The value of the first sample of `metric` whose labels contain `labels`.
fn sample(page: &str, metric: &str, labels: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.split(['{', ' ']).next() == Some(metric)
                && labels.split(',').all(|label| line.contains(label))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The `metered` saga's instances in a status other than `completed`.
fn not_completed(page: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with("eventdriven_sagas{") && l.contains(r#"saga="metered""#))
        .filter(|l| !l.contains(r#"status="completed""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One test at a time: the figures of the whole process go to one recorder, and the app-wide
/// gauges (dead letters, scheduled) carry no label telling two apps apart.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The binary's recorder, installed once.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this test binary")
    })
}

/// The page once `ready` holds for it, within 30 s.
async fn page_when(ready: impl Fn(&str) -> bool) -> String {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let page = prometheus().render();
            if ready(&page) {
                break page;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the figures within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_reach_the_recorder() {
    let _serial = SERIAL.lock().await;
    let prometheus = prometheus();
    let app = App::builder()
        .actor_with(Counter, Mailbox::bounded(64))
        .metrics(Duration::from_millis(20))
        .build()
        .await
        .expect("app builds");
    for n in 1..=50 {
        app.publish(Tick(n)).await.expect("published");
    }
    let page = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let page = prometheus.render();
            if sample(&page, "eventdriven_handled_total", r#"actor="Counter""#) == Some(50.0) {
                break page;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("50 handled, exported within 30 s");
    let get = |metric: &str, labels: &str| {
        sample(&page, metric, labels).unwrap_or_else(|| panic!("{metric} {labels} in\n{page}"))
    };
    let actor = r#"actor="Counter""#;
    assert_eq!(get("eventdriven_failed_total", actor), 5.0);
    assert_eq!(get("eventdriven_dead_lettered_total", actor), 5.0);
    assert_eq!(get("eventdriven_retried_total", actor), 0.0);
    assert_eq!(get("eventdriven_mailbox_capacity", actor), 64.0);
    assert_eq!(
        get("eventdriven_handler_latency_seconds_count", actor),
        50.0
    );
    let p50 = get(
        "eventdriven_handler_latency_seconds",
        &format!(r#"{actor},quantile="0.5""#),
    );
    let max = get(
        "eventdriven_handler_latency_seconds",
        &format!(r#"{actor},quantile="1""#),
    );
    assert!(p50 > 0.0 && p50 <= max, "p50 {p50}, max {max}");
    assert_eq!(get("eventdriven_dead_letters", ""), 5.0);
    assert!(
        page.contains("# HELP eventdriven_handled_total"),
        "described:\n{page}"
    );
    app.shutdown().await.expect("clean shutdown");
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct Added(u64);

#[derive(Events, Clone, Debug)]
enum Item {
    Added(Added),
}

struct Count;

impl Projection for Count {
    type Event = Item;

    fn name(&self) -> &str {
        "count"
    }

    async fn apply(
        &mut self,
        _: Item,
        _: &mut ProjectionContext<'_>,
    ) -> Result<(), ProjectionError> {
        Ok(())
    }

    async fn reset(&mut self, _: &mut ProjectionContext<'_>) -> Result<(), ProjectionError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_and_sagas_are_reported() {
    let _serial = SERIAL.lock().await;
    // The recorder goes in before the app exports anything: installed between two figures of
    // one export, it would hold the later ones only.
    prometheus();
    let store = Store::memory();
    let app = App::builder()
        .metrics(Duration::from_millis(20))
        .build()
        .await
        .expect("app builds");
    for n in 0..7 {
        let event = EventData::from_event(&Added(n)).expect("encodes");
        store
            .append("items", ExpectedVersion::Any, vec![event])
            .await
            .expect("appended");
    }
    let projection = Projector::new(store.clone())
        .start(Count)
        .await
        .expect("started");
    app.track_projection(&projection);
    assert!(projection.wait_for(7, Duration::from_secs(30)).await);
    let status = app.stats().projections;
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].position, status[0].lag()), (7, 0));

    let sagas = Sagas::new(store.clone(), &app);
    let saga = sagas.register(Saga::<u32>::new("metered").step_without_compensation(
        "check",
        |n, _| async move {
            match n {
                0 => Err(StepError::new("zero")),
                n => Ok(n),
            }
        },
    ));
    for (id, n) in [("a", 1), ("b", 2), ("c", 0)] {
        let run = sagas.start(&saga, id, n).await.expect("started");
        run.wait(Duration::from_secs(30)).await.expect("ended");
    }
    // Every instance in its final status (all three ended before this): an export taken
    // earlier has the failing one running, or not there at all. A status whose count stayed
    // behind (a gauge keeps its last value) would never let this hold.
    let saga_status = |page: &str, status: &str| {
        sample(
            page,
            "eventdriven_sagas",
            &format!(r#"saga="metered",status="{status}""#),
        )
    };
    let page = page_when(|page| {
        saga_status(page, "completed") == Some(2.0)
            && saga_status(page, "running").is_none_or(|n| n == 0.0)
            && not_completed(page) == 1.0
    })
    .await;
    assert_eq!(
        sample(
            &page,
            "eventdriven_projection_position",
            r#"projection="count""#
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(&page, "eventdriven_projection_lag", r#"projection="count""#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &page,
            "eventdriven_projection_applied_total",
            r#"projection="count""#
        ),
        Some(7.0)
    );
    projection.stop().await;
    app.shutdown().await.expect("clean shutdown");
}
