//! The `metrics` feature: `AppBuilder::metrics` exports the app's figures to the recorder the
//! application installed; here the Prometheus exporter's, rendered as its scrape page.

#![cfg(feature = "metrics")]

use std::time::Duration;

use eventdriven::prelude::*;
use metrics_exporter_prometheus::PrometheusBuilder;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_reach_the_recorder() {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
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
