//! The saga runner: drives instances step by step, persisting after each.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::{Saga, SagaStatus, StepContext, StepFn};
use crate::message::{Event, Message, Timestamp};
use crate::store::{SagaRecord, Store, StoreError};
use crate::App;

/// Published when a saga stops as [`SagaStatus::NeedsAttention`]: a compensation failed after
/// its retries. Subscribe to it to alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaNeedsAttention {
    /// The saga type.
    pub saga: String,
    /// The instance.
    pub id: String,
    /// The step whose compensation failed.
    pub step: String,
    /// The error.
    pub error: String,
}

impl Message for SagaNeedsAttention {
    const NAME: &'static str = "eventdriven.saga_needs_attention";
}

#[diagnostic::do_not_recommend]
impl Event for SagaNeedsAttention {}

/// A saga instance as [`Sagas::get`] and [`Sagas::list`] show it.
#[derive(Clone, Debug, PartialEq)]
pub struct SagaInfo {
    /// The saga type.
    pub saga: String,
    /// The instance.
    pub id: String,
    /// Where it is.
    pub status: SagaStatus,
    /// The step it is at (running or compensating), if any; `None` once it ended.
    pub step: Option<String>,
    /// How long since it started.
    pub age: Duration,
    /// The last error (a step's, or a compensation's), if any.
    pub last_error: Option<String>,
    /// The saga's data as stored.
    pub data: serde_json::Value,
}

/// Why a saga could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// An instance with this id exists already.
    #[error("saga `{saga}` already has an instance `{id}`")]
    Exists {
        /// The saga type.
        saga: String,
        /// The id.
        id: String,
    },
    /// The data does not encode.
    #[error("the data of saga `{saga}` does not encode: {error}")]
    Data {
        /// The saga type.
        saga: String,
        /// Why.
        error: serde_json::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A registered saga of data type `D`, to start instances of. Cheap to clone.
pub struct SagaRef<D> {
    saga: Arc<Saga<D>>,
}

impl<D> Clone for SagaRef<D> {
    fn clone(&self) -> Self {
        Self {
            saga: self.saga.clone(),
        }
    }
}

impl<D> fmt::Debug for SagaRef<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SagaRef").field(&self.saga.name).finish()
    }
}

/// A started (or resumed) instance.
#[derive(Clone, Debug)]
pub struct SagaHandle {
    saga: &'static str,
    id: String,
    status: watch::Receiver<Option<SagaInfo>>,
}

impl SagaHandle {
    /// The instance's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The saga type.
    pub fn saga(&self) -> &'static str {
        self.saga
    }

    /// Waits (at most `timeout`) until the instance ended; its final state, or `None` if it
    /// did not end in time.
    pub async fn wait(&self, timeout: Duration) -> Option<SagaInfo> {
        let mut status = self.status.clone();
        let ended = status.wait_for(|s| s.as_ref().is_some_and(|s| s.status.is_final()));
        let info = tokio::time::timeout(timeout, ended).await.ok()?.ok()?;
        info.clone()
    }
}

/// Starts, resumes and lists saga instances, keeping them in a store. Cheap to clone.
#[derive(Clone)]
pub struct Sagas {
    inner: Arc<Inner>,
}

type Resume = Arc<dyn Fn(&Sagas, SagaRecord) -> SagaHandle + Send + Sync>;

struct Inner {
    store: Store,
    app: App,
    /// How to resume an instance of each registered saga type.
    resumers: Mutex<HashMap<&'static str, Resume>>,
    /// The step names of each registered saga type.
    steps: Mutex<HashMap<&'static str, Vec<&'static str>>>,
    /// Instances being driven by this process.
    live: Mutex<HashSet<(String, String)>>,
}

impl fmt::Debug for Sagas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sagas")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl Sagas {
    /// A runner keeping its instances in `store`, whose steps reach `app`.
    pub fn new(store: Store, app: &App) -> Self {
        app.track_sagas(&store);
        Self {
            inner: Arc::new(Inner {
                store,
                app: app.clone(),
                resumers: Mutex::default(),
                steps: Mutex::default(),
                live: Mutex::default(),
            }),
        }
    }

    /// Registers a saga, so its instances can be started and resumed.
    pub fn register<D>(&self, saga: Saga<D>) -> SagaRef<D>
    where
        D: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let saga = Arc::new(saga);
        let resume_saga = saga.clone();
        let resume: Resume =
            Arc::new(move |sagas, record| sagas.spawn(resume_saga.clone(), record));
        self.inner
            .resumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(saga.name, resume);
        self.inner
            .steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(saga.name, saga.steps.iter().map(|s| s.name).collect());
        SagaRef { saga }
    }

    /// Starts instance `id` of `saga` with `data`; it runs on a task of its own. Fails if the
    /// store already has an instance with that id.
    pub async fn start<D>(
        &self,
        saga: &SagaRef<D>,
        id: &str,
        data: D,
    ) -> Result<SagaHandle, SagaError>
    where
        D: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let name = saga.saga.name;
        if self.inner.store.load_saga(name, id).await?.is_some() {
            return Err(SagaError::Exists {
                saga: name.to_owned(),
                id: id.to_owned(),
            });
        }
        let data = serde_json::to_value(&data).map_err(|error| SagaError::Data {
            saga: name.to_owned(),
            error,
        })?;
        let now = Timestamp::now_on_tokio_clock();
        let record = SagaRecord {
            saga: name.to_owned(),
            id: id.to_owned(),
            status: SagaStatus::Running.as_str().to_owned(),
            step: 0,
            data,
            error: None,
            started_at: now,
            updated_at: now,
            deadline: saga.saga.deadline.map(|d| now + d),
        };
        // Created only if absent: two starts of one id (two processes) cannot both win.
        if !self.inner.store.create_saga(&record).await? {
            return Err(SagaError::Exists {
                saga: name.to_owned(),
                id: id.to_owned(),
            });
        }
        Ok(self.spawn(saga.saga.clone(), record))
    }

    /// Continues every unfinished instance (running or compensating) of the registered saga
    /// types that this process is not driving yet: call it once after a restart. Returns
    /// their handles.
    pub async fn resume(&self) -> Result<Vec<SagaHandle>, StoreError> {
        let resumers: Vec<(&'static str, Resume)> = self
            .inner
            .resumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, resume)| (*name, resume.clone()))
            .collect();
        let mut handles = Vec::new();
        for (name, resume) in resumers {
            for record in self.inner.store.list_sagas(Some(name), usize::MAX).await? {
                let unfinished = SagaStatus::parse(&record.status).is_some_and(|s| !s.is_final());
                let driven = self
                    .inner
                    .live
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(&(record.saga.clone(), record.id.clone()));
                if unfinished && !driven {
                    tracing::info!(
                        saga = name,
                        id = record.id,
                        status = record.status,
                        step = record.step,
                        "resuming saga"
                    );
                    handles.push(resume(self, record));
                }
            }
        }
        Ok(handles)
    }

    /// Instance `id` of saga type `saga`, as stored.
    pub async fn get(&self, saga: &str, id: &str) -> Result<Option<SagaInfo>, StoreError> {
        let record = self.inner.store.load_saga(saga, id).await?;
        Ok(record.map(|r| self.info(&r)))
    }

    /// Up to `limit` instances (of `saga`, or of every type), with status, step, age and last
    /// error.
    pub async fn list(
        &self,
        saga: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SagaInfo>, StoreError> {
        let records = self.inner.store.list_sagas(saga, limit).await?;
        Ok(records.iter().map(|r| self.info(r)).collect())
    }

    /// How many instances are in each status (of `saga`, or of every type).
    pub async fn counts(
        &self,
        saga: Option<&str>,
    ) -> Result<HashMap<SagaStatus, usize>, StoreError> {
        let mut counts = HashMap::new();
        for record in self.inner.store.list_sagas(saga, usize::MAX).await? {
            if let Some(status) = SagaStatus::parse(&record.status) {
                *counts.entry(status).or_default() += 1;
            }
        }
        Ok(counts)
    }

    fn info(&self, record: &SagaRecord) -> SagaInfo {
        let steps = self
            .inner
            .steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let names = steps
            .get(record.saga.as_str())
            .map_or(&[][..], Vec::as_slice);
        info_of(names, record)
    }

    /// Drives `record` on a task of its own.
    fn spawn<D>(&self, saga: Arc<Saga<D>>, record: SagaRecord) -> SagaHandle
    where
        D: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let key = (record.saga.clone(), record.id.clone());
        let names: Vec<&'static str> = saga.steps.iter().map(|s| s.name).collect();
        let (status, watcher) = watch::channel(Some(info_of(&names, &record)));
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        let handle = SagaHandle {
            saga: saga.name,
            id: record.id.clone(),
            status: watcher,
        };
        let sagas = self.clone();
        tokio::spawn(async move {
            drive(&sagas, &saga, record, &status).await;
            sagas
                .inner
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        });
        handle
    }
}

/// The instance as listed, with the name of the step it is at (from `steps`, the saga's
/// step names; none if the saga type is not registered here).
fn info_of(steps: &[&'static str], record: &SagaRecord) -> SagaInfo {
    let status = SagaStatus::parse(&record.status).unwrap_or(SagaStatus::NeedsAttention);
    let at = match status {
        SagaStatus::Running => Some(record.step as usize),
        SagaStatus::Compensating | SagaStatus::NeedsAttention => {
            (record.step as usize).checked_sub(1)
        }
        SagaStatus::Completed | SagaStatus::Compensated => None,
    };
    SagaInfo {
        saga: record.saga.clone(),
        id: record.id.clone(),
        status,
        step: at.and_then(|i| steps.get(i)).map(|s| (*s).to_owned()),
        age: Duration::from_nanos(
            Timestamp::now_on_tokio_clock()
                .as_unix_nanos()
                .saturating_sub(record.started_at.as_unix_nanos()),
        ),
        last_error: record.error.clone(),
        data: record.data.clone(),
    }
}

/// Runs `record` to its end (or until the store fails), writing it after every step.
async fn drive<D>(
    sagas: &Sagas,
    saga: &Saga<D>,
    mut record: SagaRecord,
    status: &watch::Sender<Option<SagaInfo>>,
) where
    D: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let store = &sagas.inner.store;
    let names: Vec<&'static str> = saga.steps.iter().map(|s| s.name).collect();
    loop {
        let Some(state) = SagaStatus::parse(&record.status) else {
            tracing::error!(
                saga = saga.name,
                id = record.id,
                status = record.status,
                "unknown saga status; left as it is"
            );
            return;
        };
        let step = record.step as usize;
        // The app is shutting down: leave the instance as stored; `resume` continues it.
        if !state.is_final() && sagas.inner.app.is_shutting_down() {
            tracing::info!(
                saga = saga.name,
                id = record.id,
                "app shutting down; saga left to resume"
            );
            return;
        }
        let outcome = match state {
            SagaStatus::Running if step >= saga.steps.len() => {
                record.status = SagaStatus::Completed.as_str().to_owned();
                Ok(())
            }
            SagaStatus::Running => run_step(sagas, saga, &mut record, step).await,
            SagaStatus::Compensating if step == 0 => {
                record.status = SagaStatus::Compensated.as_str().to_owned();
                Ok(())
            }
            SagaStatus::Compensating => compensate_step(sagas, saga, &mut record, step - 1).await,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::NeedsAttention => {
                status.send_replace(Some(info_of(&names, &record)));
                return;
            }
        };
        if outcome.is_err() {
            // A step or compensation failed because the app is shutting down: not its own
            // failure. The instance stays as last written; `resume` continues it.
            tracing::info!(
                saga = saga.name,
                id = record.id,
                "app shutting down during a step; saga left to resume"
            );
            return;
        }
        record.updated_at = Timestamp::now_on_tokio_clock();
        // Written before anything else happens: this is the point a restart resumes from.
        let mut pause = Duration::from_millis(50);
        while let Err(error) = store.save_saga(&record).await {
            tracing::warn!(saga = saga.name, id = record.id, %error, "saga state not written; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
        status.send_replace(Some(info_of(&names, &record)));
    }
}

/// What a step or compensation returned, as the data to store.
fn encoded<D: serde::Serialize>(result: Result<D, String>) -> Result<serde_json::Value, String> {
    result.and_then(|data| {
        serde_json::to_value(&data).map_err(|e| format!("the data does not encode: {e}"))
    })
}

/// The data as the step gets it: decoded from what was stored after the previous step.
fn data_of<D: serde::de::DeserializeOwned>(record: &SagaRecord) -> Result<D, String> {
    serde_json::from_value(record.data.clone())
        .map_err(|e| format!("the stored data of the saga does not decode: {e}"))
}

fn context(
    sagas: &Sagas,
    record: &SagaRecord,
    saga: &'static str,
    index: usize,
    step: &'static str,
    compensating: bool,
    attempt: u32,
) -> StepContext {
    StepContext {
        app: sagas.inner.app.clone(),
        saga,
        id: record.id.clone(),
        index,
        step,
        compensating,
        attempt,
    }
}

/// Calls `f` with the stored data, within `timeout` and the saga's deadline.
async fn call<D>(
    f: &StepFn<D>,
    record: &SagaRecord,
    ctx: StepContext,
    timeout: Option<Duration>,
    deadline: Option<Timestamp>,
) -> Result<D, String>
where
    D: serde::de::DeserializeOwned,
{
    let data = data_of::<D>(record)?;
    let left = deadline.map(|d| {
        Duration::from_nanos(
            d.as_unix_nanos()
                .saturating_sub(Timestamp::now_on_tokio_clock().as_unix_nanos()),
        )
    });
    let limit = match (timeout, left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let run = f(data, ctx);
    match limit {
        Some(limit) => match tokio::time::timeout(limit, run).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) if left == Some(limit) => Err("the saga's deadline passed".to_owned()),
            Err(_) => Err(format!("timed out after {limit:?}")),
        },
        None => run.await.map_err(|e| e.to_string()),
    }
}

/// Runs step `index`: on success the data moves on and the next step is due; on failure the
/// saga starts compensating the steps before it.
/// A step or compensation stopped because the app is shutting down.
struct Interrupted;

async fn run_step<D>(
    sagas: &Sagas,
    saga: &Saga<D>,
    record: &mut SagaRecord,
    index: usize,
) -> Result<(), Interrupted>
where
    D: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let step = &saga.steps[index];
    let ctx = context(sagas, record, saga.name, index, step.name, false, 1);
    // A deadline that passed while the process was down fails the step without running it.
    let passed = record
        .deadline
        .is_some_and(|d| Timestamp::now_on_tokio_clock().as_unix_nanos() >= d.as_unix_nanos());
    let result = if passed {
        Err("the saga's deadline passed".to_owned())
    } else {
        call(
            &step.action,
            record,
            ctx,
            step.timeout.or(saga.step_timeout),
            record.deadline,
        )
        .await
    };
    match encoded(result) {
        Ok(data) => {
            record.data = data;
            record.step += 1;
        }
        Err(_) if sagas.inner.app.is_shutting_down() => return Err(Interrupted),
        Err(error) => {
            tracing::info!(saga = saga.name, id = record.id, step = step.name, %error, "saga step failed; compensating");
            record.error = Some(format!("step `{}` failed: {error}", step.name));
            record.status = SagaStatus::Compensating.as_str().to_owned();
        }
    }
    Ok(())
}

/// Compensates step `index`, retrying by the saga's policy; gives up as needing attention.
async fn compensate_step<D>(
    sagas: &Sagas,
    saga: &Saga<D>,
    record: &mut SagaRecord,
    index: usize,
) -> Result<(), Interrupted>
where
    D: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let step = &saga.steps[index];
    let Some(compensation) = &step.compensation else {
        record.step -= 1;
        return Ok(());
    };
    let mut pause = saga.compensation_backoff;
    let mut last = String::new();
    for attempt in 1..=saga.compensation_attempts {
        let ctx = context(sagas, record, saga.name, index, step.name, true, attempt);
        // A compensation runs whatever the deadline: it is what the deadline asks for.
        let result = call(
            compensation,
            record,
            ctx,
            step.timeout.or(saga.step_timeout),
            None,
        )
        .await;
        match encoded(result) {
            Ok(data) => {
                record.data = data;
                record.step -= 1;
                return Ok(());
            }
            Err(_) if sagas.inner.app.is_shutting_down() => return Err(Interrupted),
            Err(error) => {
                tracing::warn!(saga = saga.name, id = record.id, step = step.name, attempt, %error, "compensation failed");
                last = error;
                if attempt < saga.compensation_attempts {
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                }
            }
        }
    }
    let error = format!(
        "compensation of step `{}` failed after {} attempts: {last}",
        step.name, saga.compensation_attempts
    );
    tracing::error!(saga = saga.name, id = record.id, %error, "saga needs attention");
    record.error = Some(error.clone());
    record.status = SagaStatus::NeedsAttention.as_str().to_owned();
    let alert = SagaNeedsAttention {
        saga: saga.name.to_owned(),
        id: record.id.clone(),
        step: step.name.to_owned(),
        error,
    };
    // Surfaced three ways: the status, this event, and a dead letter (with the counts).
    let letter = format!(
        "saga `{}` instance `{}`: {}",
        saga.name, record.id, alert.error
    );
    if let Err(e) = sagas.inner.app.publish(alert).await {
        tracing::error!(
            saga = saga.name,
            id = record.id,
            "SagaNeedsAttention not published: {e}"
        );
    }
    sagas
        .inner
        .app
        .dead_letter_record(saga.name, SagaNeedsAttention::NAME, letter)
        .await;
    Ok(())
}
