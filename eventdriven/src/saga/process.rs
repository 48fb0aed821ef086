//! Event-driven sagas (process managers): state machines started by an event and moved on by
//! later events of the same correlation value, fed from the event store.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::SagaStatus;
use crate::aggregate::{Events, Upcasters};
use crate::message::{Metadata, Timestamp};
use crate::store::{SagaRecord, Store, StoreError, StoredEvent};
use crate::worker::{self, Progress, Worker};
use crate::App;

/// What a process manager's handler decides about its instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Keep the instance; wait for its next event (or its timeout).
    Continue,
    /// The instance is done: later events of its correlation value are passed over.
    Done,
}

impl<'a> ProcessContext<'a> {
    /// A context for a test fixture: commands are recorded.
    pub(crate) fn recording(
        name: &'static str,
        id: &'a str,
        cause: Option<&'a StoredEvent>,
        timeout: Option<Timestamp>,
        commands: &'a mut Vec<RecordedCommand>,
    ) -> Self {
        Self {
            dispatch: Dispatch::Record(commands),
            name,
            id,
            cause,
            timeout,
        }
    }

    /// The timeout as the handler left it.
    pub(crate) fn timeout_at(&self) -> Option<Timestamp> {
        self.timeout
    }
}

/// Why a process manager's handler failed: the event (and everything after it) is handled
/// again after a pause; never skipped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProcessError(pub String);

impl ProcessError {
    /// An error with this text.
    pub fn new(error: impl fmt::Display) -> Self {
        Self(error.to_string())
    }
}

impl From<crate::Error> for ProcessError {
    fn from(e: crate::Error) -> Self {
        Self::new(e)
    }
}

/// Where the commands of a process manager go: the bus, or a test fixture's record.
pub(crate) enum Dispatch<'a> {
    App(&'a App),
    Record(&'a mut Vec<RecordedCommand>),
}

/// A command a process manager sent under a test fixture.
pub struct RecordedCommand {
    /// The command's name (`Message::NAME`).
    pub name: &'static str,
    /// The command, to downcast.
    pub command: Box<dyn std::any::Any + Send>,
    /// The command's `Debug` text, when it has one (for failure messages).
    pub debug: String,
}

impl fmt::Debug for RecordedCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.debug)
    }
}

/// What a process manager's handler gets besides its state and the event.
pub struct ProcessContext<'a> {
    dispatch: Dispatch<'a>,
    name: &'static str,
    id: &'a str,
    cause: Option<&'a StoredEvent>,
    timeout: Option<Timestamp>,
}

impl ProcessContext<'_> {
    /// The app, for anything besides sending commands (`None` under a test fixture).
    pub fn app(&self) -> Option<&App> {
        match &self.dispatch {
            Dispatch::App(app) => Some(app),
            Dispatch::Record(_) => None,
        }
    }

    /// Sends `command` to its handler without waiting for the reply (the outcome comes back
    /// as events the process manager reacts to). Waits for room in the handler's mailbox.
    /// Under a test fixture, records it instead.
    pub async fn tell<C: crate::Command + fmt::Debug>(&mut self, command: C) -> crate::Result<()> {
        match &mut self.dispatch {
            Dispatch::App(app) => app.tell(command).await,
            Dispatch::Record(commands) => {
                commands.push(RecordedCommand {
                    name: C::NAME,
                    debug: format!("{command:?}"),
                    command: Box::new(command),
                });
                Ok(())
            }
        }
    }

    /// The instance's correlation value.
    pub fn id(&self) -> &str {
        self.id
    }

    /// The metadata of the event being handled (`None` in a timeout).
    pub fn metadata(&self) -> Option<&Metadata> {
        self.cause.map(|e| &e.metadata)
    }

    /// A key that is the same every time this event is handled by this instance (it is
    /// handled again if the process stopped before its checkpoint): give it to the commands
    /// the handler sends (`App::send_idempotent`) so a repeat does its work once.
    pub fn idempotency_key(&self) -> String {
        match self.cause {
            Some(event) => format!("{}/{}/{}", self.name, self.id, event.metadata.id),
            None => format!(
                "{}/{}/timeout-{}",
                self.name,
                self.id,
                self.timeout.map_or(0, Timestamp::as_unix_nanos)
            ),
        }
    }

    /// Calls [`ProcessManager::timeout`] for this instance after `after`, unless a later event
    /// sets another timeout or clears it first. Stored with the instance: it holds across
    /// restarts.
    pub fn set_timeout(&mut self, after: Duration) {
        self.timeout = Some(Timestamp::now_on_tokio_clock() + after);
    }

    /// Cancels the instance's timeout.
    pub fn clear_timeout(&mut self) {
        self.timeout = None;
    }
}

/// An event-driven saga: its state is one instance per correlation value, persisted with the
/// checkpoint of the event that changed it. See [`ProcessManagers`].
pub trait ProcessManager: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Its name: the key of its instances and of its checkpoint in the store. Keep it stable.
    const NAME: &'static str;

    /// The events it reacts to: a `#[derive(Events)]` enum.
    type Event: Events;

    /// The instance an event belongs to (the order id, say), or `None` to pass it over.
    fn correlate(event: &Self::Event) -> Option<String>;

    /// Whether the event starts an instance when none exists for its correlation value
    /// (events for an instance that does not exist and that do not start one are passed
    /// over).
    fn starts(event: &Self::Event) -> bool;

    /// Moves the instance on with one event, in store order.
    fn handle(
        &mut self,
        event: Self::Event,
        ctx: &mut ProcessContext<'_>,
    ) -> impl Future<Output = Result<Transition, ProcessError>> + Send;

    /// The instance's timeout fired (see [`ProcessContext::set_timeout`]). Does nothing
    /// unless overridden.
    fn timeout(
        &mut self,
        ctx: &mut ProcessContext<'_>,
    ) -> impl Future<Output = Result<Transition, ProcessError>> + Send {
        let _ = ctx;
        async { Ok(Transition::Continue) }
    }
}

/// Runs process managers over a store: each reads the store from its checkpoint, one event at
/// a time; for an event it correlates, it loads the instance (or starts one), calls the
/// handler, and writes the instance's state together with the checkpoint in one transaction,
/// so a state transition happens exactly once (commands a handler sends are at least once:
/// give them [`ProcessContext::idempotency_key`]). Timeouts are stored with the instance and
/// fire from the same task. Instances are listed with [`super::Sagas::list`] like any saga
/// (status `running`, then `completed`).
#[derive(Clone)]
pub struct ProcessManagers {
    store: Store,
    app: App,
    upcasters: Upcasters,
    poll: Duration,
}

impl fmt::Debug for ProcessManagers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessManagers")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ProcessManagers {
    /// Process managers reading `store` and reaching `app`.
    pub fn new(store: Store, app: &App) -> Self {
        Self {
            store,
            app: app.clone(),
            upcasters: Upcasters::new(),
            poll: Duration::from_millis(500),
        }
    }

    /// Applies `upcasters` to every event read.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// How often the store is read when this process appended nothing.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// Starts process manager `P` from its checkpoint.
    pub async fn start<P: ProcessManager>(&self) -> Result<ProcessHandle, StoreError> {
        let checkpoint = format!("process:{}", P::NAME);
        let position = self.store.load_checkpoint(&checkpoint).await?.unwrap_or(0);
        // The running instances' timeouts, earliest first.
        let mut timeouts = BTreeSet::new();
        for record in self.store.list_sagas(Some(P::NAME), usize::MAX).await? {
            if let (Some(at), "running") = (record.deadline, record.status.as_str()) {
                timeouts.insert((at, record.id));
            }
        }
        let progress = Progress::new(position);
        let runner = Runner::<P> {
            managers: self.clone(),
            checkpoint,
            position,
            saved: position,
            timeouts,
            status: progress.clone(),
            _p: std::marker::PhantomData,
        };
        let worker = Worker::spawn("process manager", move |stopped| runner.run(stopped));
        Ok(ProcessHandle { progress, worker })
    }
}

/// A running process manager. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ProcessHandle {
    progress: Progress,
    worker: Worker,
}

impl ProcessHandle {
    /// The position of the last event handled and checkpointed.
    pub fn position(&self) -> u64 {
        self.progress.get()
    }

    /// Waits until every event up to `position` was handled (at most `timeout`).
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        self.progress.wait_for(position, timeout).await
    }

    /// Stops after the current event and waits for the task (at most 10 s).
    pub async fn stop(&self) {
        self.worker.stop().await;
    }
}

struct Runner<P> {
    managers: ProcessManagers,
    checkpoint: String,
    position: u64,
    /// The checkpoint as this runner last wrote (or read) it.
    saved: u64,
    timeouts: BTreeSet<(Timestamp, String)>,
    status: Progress,
    _p: std::marker::PhantomData<fn() -> P>,
}

impl<P: ProcessManager> Runner<P> {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let store = self.managers.store.clone();
        let mut pause = Duration::from_millis(50);
        while !*stop.borrow() {
            let appended = store.appended();
            tokio::pin!(appended);
            appended.as_mut().enable();

            if let Err(error) = self.fire_timeouts().await {
                tracing::warn!(process = P::NAME, %error, "timeout not handled; trying again");
                worker::pause(&mut stop, pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
                continue;
            }
            let page = match store.read_all(self.position, 100).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(process = P::NAME, %error, "cannot read the store; trying again");
                    worker::pause(&mut stop, pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            if page.is_empty() {
                let next = self
                    .timeouts
                    .first()
                    .map(|(at, _)| {
                        at.as_unix_nanos()
                            .saturating_sub(Timestamp::now_on_tokio_clock().as_unix_nanos())
                    })
                    .map_or(self.managers.poll, |nanos| {
                        Duration::from_nanos(nanos).min(self.managers.poll)
                    });
                tokio::select! {
                    () = &mut appended => {}
                    () = tokio::time::sleep(next) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            for stored in page {
                let at = stored.position;
                if let Err(error) = self.handle(stored).await {
                    tracing::warn!(process = P::NAME, position = at, %error, "event not handled; trying again");
                    worker::pause(&mut stop, pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                    break;
                }
                pause = Duration::from_millis(50);
                self.position = at;
                self.status.set(at);
            }
        }
    }

    /// Handles one stored event: correlate, load or start, handle, save with the checkpoint.
    async fn handle(&mut self, mut stored: StoredEvent) -> Result<(), String> {
        let store = self.managers.store.clone();
        self.managers
            .upcasters
            .upcast(&mut stored)
            .map_err(|e| e.to_string())?;
        let event = match P::Event::decode(&stored) {
            Ok(event) => Some(event),
            Err(StoreError::UnknownEvent { .. }) => None,
            Err(e) => return Err(e.to_string()),
        };
        let correlated = event.and_then(|e| P::correlate(&e).map(|id| (id, e)));
        let Some((id, event)) = correlated else {
            return self.checkpoint_only(stored.position).await;
        };
        let record = store
            .load_saga(P::NAME, &id)
            .await
            .map_err(|e| e.to_string())?;
        let (mut state, mut record) = match record {
            Some(record) if record.status == SagaStatus::Running.as_str() => {
                let state: P = serde_json::from_value(record.data.clone()).map_err(|e| {
                    format!("the stored state of `{}` does not decode: {e}", P::NAME)
                })?;
                (state, record)
            }
            // Done: later events are passed over.
            Some(_) => return self.checkpoint_only(stored.position).await,
            None if P::starts(&event) => {
                let now = Timestamp::now_on_tokio_clock();
                let record = SagaRecord {
                    saga: P::NAME.to_owned(),
                    id: id.clone(),
                    status: SagaStatus::Running.as_str().to_owned(),
                    step: 0,
                    data: serde_json::Value::Null,
                    error: None,
                    started_at: now,
                    updated_at: now,
                    deadline: None,
                };
                (P::default(), record)
            }
            None => return self.checkpoint_only(stored.position).await,
        };
        let mut ctx = ProcessContext {
            dispatch: Dispatch::App(&self.managers.app),
            name: P::NAME,
            id: &id,
            cause: Some(&stored),
            timeout: record.deadline,
        };
        let transition = state
            .handle(event, &mut ctx)
            .await
            .map_err(|e| e.to_string())?;
        let timeout = ctx.timeout;
        self.save(
            &mut record,
            &state,
            transition,
            timeout,
            Some(stored.position),
        )
        .await
    }

    /// Moves the checkpoint past an event this manager passes over.
    async fn checkpoint_only(&mut self, position: u64) -> Result<(), String> {
        // One write per ignored event would make every event of the store a write; the
        // checkpoint is moved with the next handled event instead, or now and then.
        if position.is_multiple_of(100) {
            let mut tx = self
                .managers
                .store
                .begin()
                .await
                .map_err(|e| e.to_string())?;
            let written = async {
                if !tx.claim_checkpoint(&self.checkpoint, self.saved).await? {
                    return Ok(false);
                }
                tx.save_checkpoint(&self.checkpoint, position).await?;
                Ok::<_, StoreError>(true)
            }
            .await;
            self.finish(tx, written, Some(position)).await?;
        }
        Ok(())
    }

    /// Writes the instance (and the checkpoint, for an event) in one transaction.
    async fn save(
        &mut self,
        record: &mut SagaRecord,
        state: &P,
        transition: Transition,
        timeout: Option<Timestamp>,
        position: Option<u64>,
    ) -> Result<(), String> {
        let before = record.deadline;
        record.data = serde_json::to_value(state).map_err(|e| e.to_string())?;
        record.step += 1;
        record.updated_at = Timestamp::now_on_tokio_clock();
        record.deadline = match transition {
            Transition::Continue => timeout,
            Transition::Done => None,
        };
        if transition == Transition::Done {
            record.status = SagaStatus::Completed.as_str().to_owned();
        }
        let mut tx = self
            .managers
            .store
            .begin()
            .await
            .map_err(|e| e.to_string())?;
        let saved = self.saved;
        let written = async {
            // Another copy of this process manager may have handled the event already.
            if position.is_some() && !tx.claim_checkpoint(&self.checkpoint, saved).await? {
                return Ok(false);
            }
            tx.save_saga(record).await?;
            if let Some(position) = position {
                tx.save_checkpoint(&self.checkpoint, position).await?;
            }
            Ok::<_, StoreError>(true)
        }
        .await;
        self.finish(tx, written, position).await?;
        if let Some(at) = before {
            self.timeouts.remove(&(at, record.id.clone()));
        }
        if let Some(at) = record.deadline {
            self.timeouts.insert((at, record.id.clone()));
        }
        Ok(())
    }

    /// Commits or rolls back a write; when another copy moved the checkpoint, rolls back and
    /// continues from the stored checkpoint (an error, so the event is not counted as done).
    async fn finish(
        &mut self,
        tx: crate::store::StoreTx,
        written: Result<bool, StoreError>,
        position: Option<u64>,
    ) -> Result<(), String> {
        match written {
            Ok(true) => {
                match tx.commit().await {
                    Ok(()) => {}
                    // The memory store checks the claim at commit.
                    Err(StoreError::CheckpointMoved { .. }) => {
                        return self.moved().await;
                    }
                    Err(e) => return Err(e.to_string()),
                }
                if let Some(position) = position {
                    self.saved = position;
                }
                Ok(())
            }
            Ok(false) => {
                let _ = tx.rollback().await;
                self.moved().await
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(e.to_string())
            }
        }
    }

    /// Another copy moved the checkpoint: continue from the stored one (an error, so the
    /// event is not counted as done).
    async fn moved(&mut self) -> Result<(), String> {
        let stored = self
            .managers
            .store
            .load_checkpoint(&self.checkpoint)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        self.saved = stored;
        self.position = stored;
        self.status.set(stored);
        Err(format!(
            "the checkpoint moved to {stored}: another copy of `{}` runs; continuing from there",
            P::NAME
        ))
    }

    /// Calls the timeout handler of every instance whose timeout is due.
    async fn fire_timeouts(&mut self) -> Result<(), String> {
        let now = Timestamp::now_on_tokio_clock();
        while let Some((at, id)) = self.timeouts.first().cloned() {
            if at > now {
                break;
            }
            let store = self.managers.store.clone();
            let record = store
                .load_saga(P::NAME, &id)
                .await
                .map_err(|e| e.to_string())?;
            let Some(mut record) = record
                .filter(|r| r.status == SagaStatus::Running.as_str() && r.deadline == Some(at))
            else {
                self.timeouts.remove(&(at, id));
                continue;
            };
            let mut state: P = serde_json::from_value(record.data.clone())
                .map_err(|e| format!("the stored state of `{}` does not decode: {e}", P::NAME))?;
            let mut ctx = ProcessContext {
                dispatch: Dispatch::App(&self.managers.app),
                name: P::NAME,
                id: &id,
                cause: None,
                timeout: None,
            };
            // The fired timeout is gone unless the handler sets a new one.
            let transition = state.timeout(&mut ctx).await.map_err(|e| e.to_string())?;
            let timeout = ctx.timeout;
            self.save(&mut record, &state, transition, timeout, None)
                .await?;
        }
        Ok(())
    }
}
