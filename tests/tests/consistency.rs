//! Consistency checks: on demand, on a schedule (virtual time), failures published as events
//! and counted; a check that cannot run is a failure too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::consistency::{Checks, ConsistencyCheckFailed};
use eventdriven::prelude::*;

struct Alerts {
    seen: Arc<Mutex<Vec<ConsistencyCheckFailed>>>,
}

#[handlers]
impl Alerts {
    #[subscribe]
    fn failed(&mut self, event: &ConsistencyCheckFailed) {
        self.seen.lock().unwrap().push(event.clone());
    }
}

/// "An order marked paid has a completed payment", over two models the test can break.
fn checks(
    paid: Arc<Mutex<Vec<u64>>>,
    payments: Arc<Mutex<Vec<u64>>>,
    broken: Arc<AtomicBool>,
) -> Checks {
    Checks::new()
        .add("order paid implies payment completed", move || {
            let paid = paid.lock().unwrap().clone();
            let payments = payments.lock().unwrap().clone();
            async move {
                Ok::<_, String>(
                    paid.iter()
                        .filter(|o| !payments.contains(o))
                        .map(|o| format!("order {o} is paid without a completed payment"))
                        .collect(),
                )
            }
        })
        .add("the payments database answers", move || {
            let broken = broken.load(Ordering::SeqCst);
            async move {
                if broken {
                    Err("connection refused".to_owned())
                } else {
                    Ok(Vec::new())
                }
            }
        })
}

#[tokio::test]
async fn checks_run_on_demand_report_and_count() {
    let paid = Arc::new(Mutex::new(vec![1, 2]));
    let payments = Arc::new(Mutex::new(vec![1, 2]));
    let broken = Arc::new(AtomicBool::new(false));
    let checks = checks(paid.clone(), payments.clone(), broken.clone());

    let report = checks.run().await;
    assert!(report.passed(), "{report:?}");

    paid.lock().unwrap().push(3);
    broken.store(true, Ordering::SeqCst);
    let seen: Arc<Mutex<Vec<ConsistencyCheckFailed>>> = Arc::default();
    let app = App::builder()
        .actor(Alerts { seen: seen.clone() })
        .build()
        .await
        .unwrap();
    let report = checks.run_and_publish(&app).await;
    assert!(!report.passed());
    assert_eq!(
        report.results[0].violations,
        ["order 3 is paid without a completed payment"]
    );
    assert_eq!(
        report.results[1].error.as_deref(),
        Some("connection refused")
    );
    app.shutdown().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].check, "order paid implies payment completed");
    assert_eq!(
        seen[1].violations,
        ["the check could not run: connection refused"]
    );
    let counts = checks.counts();
    assert_eq!(counts["order paid implies payment completed"].runs, 2);
    assert_eq!(counts["order paid implies payment completed"].failures, 1);
    assert_eq!(counts["the payments database answers"].failures, 1);
}

#[tokio::test(start_paused = true)]
async fn checks_run_on_a_schedule_until_stopped() {
    let paid = Arc::new(Mutex::new(vec![1, 9]));
    let payments = Arc::new(Mutex::new(vec![1]));
    let checks = checks(paid, payments.clone(), Arc::default());
    let seen: Arc<Mutex<Vec<ConsistencyCheckFailed>>> = Arc::default();
    let app = App::builder()
        .actor(Alerts { seen: seen.clone() })
        .build()
        .await
        .unwrap();

    let running = checks.every(Duration::from_secs(60), &app);
    let report = running.next_report(Duration::from_secs(61)).await.unwrap();
    assert!(!report.passed());
    // The payment shows up: the next run passes.
    payments.lock().unwrap().push(9);
    let report = running.next_report(Duration::from_secs(61)).await.unwrap();
    assert!(report.passed(), "{report:?}");
    running.stop().await;
    assert_eq!(
        checks.counts()["order paid implies payment completed"].runs,
        2
    );
    app.shutdown().await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}
