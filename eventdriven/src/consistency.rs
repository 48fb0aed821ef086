//! Consistency checks: named comparisons between models that must agree (an order marked paid
//! has a completed payment; a read model's count matches the event store), run on demand or on
//! a schedule, with failures published as [`ConsistencyCheckFailed`] events and counted.
//!
//! A check is an async function returning the violations it found (empty when the models
//! agree) or an error when it could not run; both count as a failure.
//!
//! ```
//! use std::time::Duration;
//! use eventdriven::consistency::Checks;
//! use eventdriven::App;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let paid = vec![1_u64, 2, 3];
//! let payments = vec![1_u64, 2];
//! let checks = Checks::new().add("order paid implies payment completed", move || {
//!     let (paid, payments) = (paid.clone(), payments.clone());
//!     async move {
//!         let missing = paid.iter().filter(|o| !payments.contains(o));
//!         Ok::<_, std::convert::Infallible>(
//!             missing.map(|o| format!("order {o} is paid without a payment")).collect(),
//!         )
//!     }
//! });
//!
//! let report = checks.run().await;
//! assert!(!report.passed());
//! assert_eq!(report.results[0].violations, ["order 3 is paid without a payment"]);
//!
//! // Or every minute, publishing `ConsistencyCheckFailed` on the app's bus:
//! let app = App::builder().build().await?;
//! let running = checks.every(Duration::from_secs(60), &app);
//! running.stop().await;
//! # app.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::message::{Event, Message, Timestamp};
use crate::worker::Worker;
use crate::App;

type Outcome = Result<Vec<String>, String>;
type CheckFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Published for every check that failed in a run made with [`Checks::run_and_publish`] or
/// [`Checks::every`]; subscribe to it to alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyCheckFailed {
    /// The check's name.
    pub check: String,
    /// What disagreed (or, if the check could not run, why).
    pub violations: Vec<String>,
    /// When the check ran.
    pub checked_at: Timestamp,
}

impl Message for ConsistencyCheckFailed {
    const NAME: &'static str = "eventdriven.consistency_check_failed";
}

#[diagnostic::do_not_recommend]
impl Event for ConsistencyCheckFailed {}

/// One check's result in a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// What disagreed; empty when the models agree.
    pub violations: Vec<String>,
    /// Why the check could not run, if it could not.
    pub error: Option<String>,
    /// How long it took.
    pub took: Duration,
}

impl CheckResult {
    /// Whether the models agreed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }
}

/// The results of one run of every check, in registration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// One per check.
    pub results: Vec<CheckResult>,
    /// When the run started.
    pub checked_at: Timestamp,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(CheckResult::passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| !r.passed())
    }
}

/// Counts of runs and failures per check, since the checks were created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckCounts {
    /// How many times it ran.
    pub runs: u64,
    /// How many of those failed.
    pub failures: u64,
}

/// A set of named consistency checks. Cheap to clone (the counts are shared).
#[derive(Clone, Default)]
pub struct Checks {
    checks: Vec<(String, CheckFn)>,
    counts: Arc<Mutex<HashMap<String, CheckCounts>>>,
}

impl fmt::Debug for Checks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checks")
            .field(
                "names",
                &self.checks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Checks {
    /// No checks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check: `check()` returns the violations it found (empty when the models agree),
    /// or an error if it could not run.
    pub fn add<F, Fut, E>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<String>, E>> + Send + 'static,
        E: fmt::Display,
    {
        let check: CheckFn = Arc::new(move || {
            let run = check();
            Box::pin(async move { run.await.map_err(|e| e.to_string()) })
        });
        self.checks.push((name.into(), check));
        self
    }

    /// Runs every check, one after the other, and counts the outcomes.
    pub async fn run(&self) -> Report {
        let checked_at = Timestamp::now();
        let mut results = Vec::with_capacity(self.checks.len());
        for (name, check) in &self.checks {
            let started = Instant::now();
            let outcome = check().await;
            let (violations, error) = match outcome {
                Ok(violations) => (violations, None),
                Err(error) => (Vec::new(), Some(error)),
            };
            let result = CheckResult {
                name: name.clone(),
                violations,
                error,
                took: started.elapsed(),
            };
            let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
            let count = counts.entry(name.clone()).or_default();
            count.runs += 1;
            if !result.passed() {
                count.failures += 1;
                tracing::warn!(check = name, violations = ?result.violations, error = ?result.error, "consistency check failed");
            }
            results.push(result);
        }
        Report {
            results,
            checked_at,
        }
    }

    /// Runs every check and publishes a [`ConsistencyCheckFailed`] for each that failed.
    pub async fn run_and_publish(&self, app: &App) -> Report {
        let report = self.run().await;
        for failed in report.failures() {
            let mut violations = failed.violations.clone();
            if let Some(error) = &failed.error {
                violations.push(format!("the check could not run: {error}"));
            }
            let event = ConsistencyCheckFailed {
                check: failed.name.clone(),
                violations,
                checked_at: report.checked_at,
            };
            if let Err(e) = app.publish(event).await {
                tracing::error!(
                    check = failed.name,
                    "ConsistencyCheckFailed not published: {e}"
                );
            }
        }
        report
    }

    /// Runs and counts per check since the checks were created.
    pub fn counts(&self) -> HashMap<String, CheckCounts> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs the checks every `interval` (the first run after one interval) on a task, with
    /// [`run_and_publish`](Self::run_and_publish), until stopped.
    pub fn every(&self, interval: Duration, app: &App) -> RunningChecks {
        let (last, _) = watch::channel(None);
        let last = Arc::new(last);
        let checks = self.clone();
        let app = app.clone();
        let reports = last.clone();
        let worker = Worker::spawn("consistency checks", move |mut stopped| async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => break,
                }
                let report = checks.run_and_publish(&app).await;
                reports.send_replace(Some(report));
            }
        });
        RunningChecks { last, worker }
    }
}

/// Checks running on a schedule (see [`Checks::every`]).
#[derive(Clone, Debug)]
pub struct RunningChecks {
    last: Arc<watch::Sender<Option<Report>>>,
    worker: Worker,
}

impl RunningChecks {
    /// The report of the last scheduled run, if one finished.
    pub fn last_report(&self) -> Option<Report> {
        self.last.borrow().clone()
    }

    /// Waits (at most `timeout`) for the next scheduled run's report.
    pub async fn next_report(&self, timeout: Duration) -> Option<Report> {
        let mut reports = self.last.subscribe();
        reports.borrow_and_update();
        tokio::time::timeout(timeout, reports.changed())
            .await
            .ok()?
            .ok()?;
        let report = reports.borrow().clone();
        report
    }

    /// Stops the schedule and waits for a run in progress to end (at most 10 s).
    pub async fn stop(&self) {
        self.worker.stop().await;
    }
}
