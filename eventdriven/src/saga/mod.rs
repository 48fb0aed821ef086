//! Orchestrated sagas: steps with compensations over a data type, persisted after every step,
//! compensated in reverse on failure, resumable after a crash.
//!
//! A [`Saga`] is a named list of steps over its data `D`. Each step has an action and
//! (usually) a compensation that undoes it; both are async functions that take the saga's data
//! as stored after the previous step and return it, possibly changed. The [`Sagas`] runner:
//!
//! - runs the steps in order, writing the instance ([`SagaRecord`]: status, step, data, last
//!   error, deadline) to the store after every step, so a crash loses at most the step in
//!   flight; [`Sagas::resume`] continues every unfinished instance after a restart, calling the
//!   step in flight again with the **same idempotency key** ([`StepContext::idempotency_key`]),
//!   so a step that reached its target before the crash is not done twice by a target that
//!   remembers the key durably (a handler that records it with
//!   `StoreTx::record_processed`-style bookkeeping in the same transaction as its effect;
//!   `App::send_idempotent` remembers keys in memory only, so it protects a step within one
//!   process, not across a restart);
//! - stops driving an instance when the app shuts down (a step refused because of the shutdown
//!   is not the step's failure): the instance stays as stored and `resume` continues it;
//! - on a step's failure (its error, its step timeout, or the saga's deadline), compensates the
//!   completed steps in reverse order, each written to the store when done;
//! - retries a failing compensation by its policy; one that still fails stops the saga as
//!   [`SagaStatus::NeedsAttention`] with its error, publishes [`SagaNeedsAttention`], and adds
//!   a dead letter (actor: the saga's name) to the app's: never skipped silently;
//! - ends as [`SagaStatus::Completed`], [`SagaStatus::Compensated`] or
//!   [`SagaStatus::NeedsAttention`], queryable with [`Sagas::get`] and [`Sagas::list`].
//!
//! ```
//! use std::time::Duration;
//! use eventdriven::saga::{Saga, SagaStatus, Sagas, StepError};
//! use eventdriven::store::Store;
//! use eventdriven::App;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Trip { hotel: Option<String>, flight: Option<String> }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let trip = Saga::<Trip>::new("trip")
//!     .step(
//!         "book hotel",
//!         |mut trip, _ctx| async move { trip.hotel = Some("H-1".into()); Ok(trip) },
//!         |mut trip, _ctx| async move { trip.hotel = None; Ok(trip) },
//!     )
//!     .step(
//!         "book flight",
//!         |_trip, _ctx| async move { Err(StepError::new("no seats")) },
//!         |trip, _ctx| async move { Ok(trip) },
//!     );
//!
//! let app = App::builder().build().await?;
//! let sagas = Sagas::new(Store::memory(), &app);
//! let trip = sagas.register(trip);
//! let run = sagas.start(&trip, "t-1", Trip { hotel: None, flight: None }).await?;
//! let done = run.wait(Duration::from_secs(5)).await.expect("finished");
//! assert_eq!(done.status, SagaStatus::Compensated);
//! assert_eq!(done.last_error.as_deref(), Some("step `book flight` failed: no seats"));
//! # app.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod process;
mod runner;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// `#[saga(name = "...")]` on an impl block: its `#[start(correlate = |e| ..)]`,
/// `#[on(correlate = |e| ..)]` and `#[timeout]` methods become a [`ProcessManager`].
pub use eventdriven_macros::saga;
pub use process::{
    ProcessContext, ProcessError, ProcessHandle, ProcessManager, ProcessManagers, RecordedCommand,
    Transition,
};
pub use runner::{SagaError, SagaHandle, SagaInfo, SagaNeedsAttention, SagaRef, Sagas};

pub use crate::store::SagaRecord;
use crate::App;

/// Why a step or compensation failed. Any `std::error::Error` converts into it with `?`.
pub struct StepError(String);

impl StepError {
    /// An error with this text.
    pub fn new(error: impl fmt::Display) -> Self {
        Self(error.to_string())
    }
}

impl<E: std::error::Error> From<E> for StepError {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepError({:?})", self.0)
    }
}

/// Where a saga instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SagaStatus {
    /// Running its steps.
    Running,
    /// A step failed; undoing the completed steps in reverse.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every completed step was compensated.
    Compensated,
    /// A compensation failed after its retries: a person must look at it.
    NeedsAttention,
}

impl SagaStatus {
    /// The word stored for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::NeedsAttention => "needs_attention",
        }
    }

    /// The status a stored word names.
    pub fn parse(word: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Compensating,
            Self::Completed,
            Self::Compensated,
            Self::NeedsAttention,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }

    /// Whether it has ended (no step will run on its own any more).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Compensated | Self::NeedsAttention
        )
    }
}

impl fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a step or compensation gets besides the saga's data.
#[derive(Clone)]
pub struct StepContext {
    app: App,
    saga: &'static str,
    id: String,
    index: usize,
    step: &'static str,
    compensating: bool,
    attempt: u32,
}

impl fmt::Debug for StepContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("key", &self.idempotency_key())
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl StepContext {
    /// The app, to send commands and publish events.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The saga instance's id.
    pub fn saga_id(&self) -> &str {
        &self.id
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        self.step
    }

    /// Whether this is the step's compensation.
    pub fn is_compensation(&self) -> bool {
        self.compensating
    }

    /// Which attempt this is (a compensation is retried; a step run again after a restart
    /// starts at 1 again).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key that is the same every time this step (or its compensation) of this instance is
    /// called, also after a restart: pass it to the target (`App::send_idempotent`, a payment
    /// provider's idempotency header) so a repeated call does its work once.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}/{}/{}-{}/{}",
            self.saga,
            self.id,
            self.index,
            self.step,
            if self.compensating {
                "compensate"
            } else {
                "run"
            }
        )
    }
}

/// What a step returns: the saga's data, changed or not, or why it failed.
pub type StepResult<D> = Result<D, StepError>;

type StepFuture<D> = Pin<Box<dyn Future<Output = StepResult<D>> + Send>>;
type StepFn<D> = Arc<dyn Fn(D, StepContext) -> StepFuture<D> + Send + Sync>;

struct StepDef<D> {
    name: &'static str,
    action: StepFn<D>,
    compensation: Option<StepFn<D>>,
    timeout: Option<Duration>,
}

fn step_fn<D, F, Fut>(f: F) -> StepFn<D>
where
    F: Fn(D, StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StepResult<D>> + Send + 'static,
{
    Arc::new(move |data, ctx| Box::pin(f(data, ctx)))
}

/// A saga's definition: its name, its steps in order, their timeouts and the compensation
/// retry policy. See the [module docs](self).
pub struct Saga<D> {
    name: &'static str,
    steps: Vec<StepDef<D>>,
    step_timeout: Option<Duration>,
    deadline: Option<Duration>,
    compensation_attempts: u32,
    compensation_backoff: Duration,
}

impl<D> fmt::Debug for Saga<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saga")
            .field("name", &self.name)
            .field(
                "steps",
                &self.steps.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<D> Saga<D>
where
    D: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    /// A saga named `name` (the key of its instances in the store; keep it stable), with no
    /// steps yet, no timeouts, and compensations tried 5 times, 1 s apart, doubling.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            steps: Vec::new(),
            step_timeout: None,
            deadline: None,
            compensation_attempts: 5,
            compensation_backoff: Duration::from_secs(1),
        }
    }

    /// Adds a step with its compensation.
    pub fn step<A, AF, C, CF>(mut self, name: &'static str, action: A, compensation: C) -> Self
    where
        A: Fn(D, StepContext) -> AF + Send + Sync + 'static,
        AF: Future<Output = StepResult<D>> + Send + 'static,
        C: Fn(D, StepContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = StepResult<D>> + Send + 'static,
    {
        self.steps.push(StepDef {
            name,
            action: step_fn(action),
            compensation: Some(step_fn(compensation)),
            timeout: None,
        });
        self
    }

    /// Adds a step with nothing to undo (a read, a notification, the last step).
    pub fn step_without_compensation<A, AF>(mut self, name: &'static str, action: A) -> Self
    where
        A: Fn(D, StepContext) -> AF + Send + Sync + 'static,
        AF: Future<Output = StepResult<D>> + Send + 'static,
    {
        self.steps.push(StepDef {
            name,
            action: step_fn(action),
            compensation: None,
            timeout: None,
        });
        self
    }

    /// Fails the step added last if it takes longer than `timeout` (overrides
    /// [`step_timeout`](Self::step_timeout) for that step). Its compensation gets the same
    /// limit. A step that times out is not compensated itself (only the steps before it): a
    /// command it sent may still be handled, so its target should expect a cancellation.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if let Some(step) = self.steps.last_mut() {
            step.timeout = Some(timeout);
        }
        self
    }

    /// Fails any step that takes longer than `timeout`.
    pub fn step_timeout(mut self, timeout: Duration) -> Self {
        self.step_timeout = Some(timeout);
        self
    }

    /// Fails the saga (and compensates) if it has not completed `deadline` after it started.
    /// The deadline is stored with the instance, so it holds across restarts.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// How many times a compensation is tried in all (at least 1), and the pause before the
    /// second try (doubling after each).
    pub fn compensation_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.compensation_attempts = attempts.max(1);
        self.compensation_backoff = backoff;
        self
    }

    /// The saga's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}
