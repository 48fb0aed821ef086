//! Orchestrated sagas, every path: success, failure at each step (compensated in reverse),
//! a compensation that fails (retried, then `NeedsAttention`), step timeouts and the saga's
//! deadline (in virtual time), and a crash in a step and in a compensation, resumed from the
//! store with the same idempotency keys (on every backend).

mod stores;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::saga::{
    Saga, SagaNeedsAttention, SagaStatus, Sagas, StepContext, StepError, StepResult,
};
use eventdriven::store::Store;
use stores::Harness;

/// The seeds' order fulfilment: what each step did, as data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Order {
    reserved: bool,
    charged: bool,
    shipped: bool,
}

/// What happened, in order: "run reserve", "undo reserve", ... with the idempotency keys.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn note(&self, what: String) {
        self.0.lock().unwrap().push(what);
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// How each step behaves in a test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Succeed,
    Fail,
    /// Takes an hour.
    Hang,
    /// Panics the first time (a crash in the middle of the step), then succeeds.
    CrashOnce,
}

#[derive(Clone)]
struct Plan {
    steps: [Behaviour; 3],
    /// The compensations: how many times each fails before it succeeds (u32::MAX: always).
    undo_failures: [u32; 3],
    undo_crash: [bool; 3],
    /// How often each step and compensation crashed: shared by every definition made from
    /// this plan, as a crash is once per test, not once per process.
    crashed: Arc<[AtomicU32; 3]>,
    undo_crashed: Arc<[AtomicU32; 3]>,
}

impl Plan {
    fn ok() -> Self {
        Self {
            steps: [Behaviour::Succeed; 3],
            undo_failures: [0; 3],
            undo_crash: [false; 3],
            crashed: Arc::default(),
            undo_crashed: Arc::default(),
        }
    }
}

const STEPS: [&str; 3] = ["reserve inventory", "charge payment", "create shipment"];

async fn behave(
    behaviour: Behaviour,
    crashed: &AtomicU32,
    journal: &Journal,
    ctx: &StepContext,
) -> Result<(), StepError> {
    journal.note(format!("run {} {}", ctx.step(), ctx.idempotency_key()));
    match behaviour {
        Behaviour::Succeed => Ok(()),
        Behaviour::Fail => Err(StepError::new(format!("{} refused", ctx.step()))),
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        Behaviour::CrashOnce => {
            if crashed.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("the process dies in the middle of `{}`", ctx.step());
            }
            Ok(())
        }
    }
}

/// The fulfilment saga, steps behaving as `plan` says, writing to `journal`.
fn fulfilment(plan: &Plan, journal: &Journal) -> Saga<Order> {
    let mut saga = Saga::<Order>::new("fulfilment");
    for (i, name) in STEPS.into_iter().enumerate() {
        let (run_journal, undo_journal) = (journal.clone(), journal.clone());
        let behaviour = plan.steps[i];
        let undo_failures = plan.undo_failures[i];
        let undo_crash = plan.undo_crash[i];
        let crashed = plan.crashed.clone();
        let undo_calls = Arc::new(AtomicU32::new(0));
        let undo_crashed = plan.undo_crashed.clone();
        saga = saga.step(
            name,
            move |mut order: Order, ctx| {
                let (journal, crashed) = (run_journal.clone(), crashed.clone());
                async move {
                    behave(behaviour, &crashed[i], &journal, &ctx).await?;
                    match i {
                        0 => order.reserved = true,
                        1 => order.charged = true,
                        _ => order.shipped = true,
                    }
                    Ok(order)
                }
            },
            move |mut order: Order, ctx| {
                let journal = undo_journal.clone();
                let (calls, crashed) = (undo_calls.clone(), undo_crashed.clone());
                async move {
                    journal.note(format!("undo {} {}", ctx.step(), ctx.idempotency_key()));
                    if undo_crash && crashed[i].fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("the process dies while undoing `{}`", ctx.step());
                    }
                    if calls.fetch_add(1, Ordering::SeqCst) < undo_failures {
                        return Err(StepError::new("the payment provider is down"));
                    }
                    match i {
                        0 => order.reserved = false,
                        1 => order.charged = false,
                        _ => order.shipped = false,
                    }
                    StepResult::Ok(order)
                }
            },
        );
    }
    saga.compensation_retries(3, Duration::from_secs(1))
}

fn runs(journal: &Journal) -> Vec<String> {
    journal
        .entries()
        .into_iter()
        .map(|e| e.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Starts instance `id` and waits for its end.
async fn run_to_end(
    sagas: &Sagas,
    saga: &eventdriven::saga::SagaRef<Order>,
    id: &str,
) -> eventdriven::saga::SagaInfo {
    let run = sagas.start(saga, id, Order::default()).await.unwrap();
    run.wait(LONG).await.expect("the saga ended")
}

async fn new_app() -> App {
    App::builder().build().await.unwrap()
}

const LONG: Duration = Duration::from_secs(7200);

// --- every path, in virtual time -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn every_step_succeeds() {
    let journal = Journal::default();
    let app = new_app().await;
    let sagas = Sagas::new(Store::memory(), &app);
    let saga = sagas.register(fulfilment(&Plan::ok(), &journal));
    let run = sagas.start(&saga, "o-1", Order::default()).await.unwrap();
    let done = run.wait(LONG).await.unwrap();
    assert_eq!(done.status, SagaStatus::Completed);
    assert_eq!(done.step, None);
    let order: Order = serde_json::from_value(done.data).unwrap();
    assert_eq!(
        order,
        Order {
            reserved: true,
            charged: true,
            shipped: true
        }
    );
    assert_eq!(
        journal.entries(),
        [
            "run reserve inventory fulfilment/o-1/0-reserve inventory/run",
            "run charge payment fulfilment/o-1/1-charge payment/run",
            "run create shipment fulfilment/o-1/2-create shipment/run",
        ]
    );
    let listed = sagas.list(Some("fulfilment"), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, SagaStatus::Completed);
    // The same id twice is refused.
    assert!(sagas.start(&saga, "o-1", Order::default()).await.is_err());
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failure_at_each_step_compensates_the_completed_ones_in_reverse() {
    for failing in 0..3 {
        let journal = Journal::default();
        let mut plan = Plan::ok();
        plan.steps[failing] = Behaviour::Fail;
        let app = new_app().await;
        let sagas = Sagas::new(Store::memory(), &app);
        let saga = sagas.register(fulfilment(&plan, &journal));
        let run = sagas.start(&saga, "o-1", Order::default()).await.unwrap();
        let done = run.wait(LONG).await.unwrap();
        assert_eq!(done.status, SagaStatus::Compensated, "failing at {failing}");
        assert_eq!(
            done.last_error,
            Some(format!("step `{0}` failed: {0} refused", STEPS[failing]))
        );
        let order: Order = serde_json::from_value(done.data).unwrap();
        assert_eq!(order, Order::default(), "every completed step undone");
        let mut expected: Vec<String> = STEPS[..=failing]
            .iter()
            .map(|s| format!("run {}", s.split(' ').next().unwrap()))
            .collect();
        expected.extend(
            STEPS[..failing]
                .iter()
                .rev()
                .map(|s| format!("undo {}", s.split(' ').next().unwrap())),
        );
        assert_eq!(runs(&journal), expected, "failing at {failing}");
        app.shutdown().await.unwrap();
    }
}

struct Alerts(Arc<Mutex<Vec<SagaNeedsAttention>>>);

#[handlers]
impl Alerts {
    #[subscribe]
    fn alert(&mut self, event: &SagaNeedsAttention) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[tokio::test(start_paused = true)]
async fn a_compensation_is_retried_and_then_needs_attention() {
    // Charging fails; undoing the reservation fails twice, then works: compensated.
    let journal = Journal::default();
    let mut plan = Plan::ok();
    plan.steps[1] = Behaviour::Fail;
    plan.undo_failures[0] = 2;
    let app = new_app().await;
    let sagas = Sagas::new(Store::memory(), &app);
    let saga = sagas.register(fulfilment(&plan, &journal));
    let started = tokio::time::Instant::now();
    let done = run_to_end(&sagas, &saga, "o-1").await;
    assert_eq!(done.status, SagaStatus::Compensated);
    // Backoff 1 s, then 2 s.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(
        runs(&journal),
        [
            "run reserve",
            "run charge",
            "undo reserve",
            "undo reserve",
            "undo reserve"
        ]
    );
    app.shutdown().await.unwrap();

    // It never works: after 3 attempts the saga needs attention, said as an event.
    let journal = Journal::default();
    plan.undo_failures[0] = u32::MAX;
    let alerts: Arc<Mutex<Vec<SagaNeedsAttention>>> = Arc::default();
    let app = App::builder()
        .actor(Alerts(alerts.clone()))
        .build()
        .await
        .unwrap();
    let sagas = Sagas::new(Store::memory(), &app);
    let saga = sagas.register(fulfilment(&plan, &journal));
    let done = run_to_end(&sagas, &saga, "o-2").await;
    assert_eq!(done.status, SagaStatus::NeedsAttention);
    assert_eq!(done.step.as_deref(), Some("reserve inventory"));
    let error = "compensation of step `reserve inventory` failed after 3 attempts: the payment provider is down";
    assert_eq!(done.last_error.as_deref(), Some(error));
    assert_eq!(
        sagas.counts(None).await.unwrap()[&SagaStatus::NeedsAttention],
        1
    );
    app.shutdown().await.unwrap();
    let letters = app.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].actor, "fulfilment");
    assert!(
        letters[0].error.contains("instance `o-2`"),
        "{}",
        letters[0].error
    );
    let alerts = alerts.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].id.as_str(), alerts[0].error.as_str()),
        ("o-2", error)
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_timeout_and_the_deadline_fail_the_saga() {
    // The shipment never answers: its 30 s timeout fails it.
    let journal = Journal::default();
    let mut plan = Plan::ok();
    plan.steps[2] = Behaviour::Hang;
    let app = new_app().await;
    let sagas = Sagas::new(Store::memory(), &app);
    let saga = sagas.register(fulfilment(&plan, &journal).step_timeout(Duration::from_secs(30)));
    let started = tokio::time::Instant::now();
    let done = run_to_end(&sagas, &saga, "o-1").await;
    assert_eq!(done.status, SagaStatus::Compensated);
    assert_eq!(
        done.last_error.as_deref(),
        Some("step `create shipment` failed: timed out after 30s")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(
        runs(&journal),
        [
            "run reserve",
            "run charge",
            "run create",
            "undo charge",
            "undo reserve"
        ]
    );
    app.shutdown().await.unwrap();

    // A 10-minute deadline on the whole saga, without step timeouts.
    let journal = Journal::default();
    let app = new_app().await;
    let sagas = Sagas::new(Store::memory(), &app);
    let saga = sagas.register(fulfilment(&plan, &journal).deadline(Duration::from_secs(600)));
    let started = tokio::time::Instant::now();
    let done = run_to_end(&sagas, &saga, "o-2").await;
    assert_eq!(done.status, SagaStatus::Compensated);
    assert_eq!(
        done.last_error.as_deref(),
        Some("step `create shipment` failed: the saga's deadline passed")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(600));
    app.shutdown().await.unwrap();
}

// --- a crash and a resume, on every backend -------------------------------------------------------

/// A crash in the middle of a step (its task dies with a panic: nothing after the last write
/// happened), then a new runner on the same store resumes the instance: the step runs again
/// with the same idempotency key. The same for a crash during a compensation.
async fn a_crashed_saga_resumes_from_the_store(h: Harness) {
    let store = h.open().await;
    let journal = Journal::default();
    let mut plan = Plan::ok();
    plan.steps[1] = Behaviour::CrashOnce;
    let app1 = new_app().await;
    let first = Sagas::new(store.clone(), &app1);
    let saga = first.register(fulfilment(&plan, &journal));
    first.start(&saga, "o-1", Order::default()).await.unwrap();
    let stuck = wait_until(&first, "o-1", |i| {
        i.step.as_deref() == Some("charge payment")
    })
    .await;
    assert_eq!(stuck.status, SagaStatus::Running);

    // The "restarted process": same store, a new runner, the definition registered again.
    let app2 = new_app().await;
    let second = Sagas::new(h.open().await, &app2);
    second.register(fulfilment(&plan, &journal));
    let resumed = second.resume().await.unwrap();
    assert_eq!(resumed.len(), 1);
    let done = resumed[0].wait(Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.status, SagaStatus::Completed);
    let charges: Vec<String> = journal
        .entries()
        .into_iter()
        .filter(|e| e.starts_with("run charge"))
        .collect();
    assert_eq!(
        charges,
        [
            "run charge payment fulfilment/o-1/1-charge payment/run",
            "run charge payment fulfilment/o-1/1-charge payment/run",
        ],
        "the step ran again with the same key"
    );
    // Nothing left to resume.
    assert!(second.resume().await.unwrap().is_empty());

    // A crash while compensating: the shipment fails, undoing the charge dies once.
    let journal = Journal::default();
    let mut plan = Plan::ok();
    plan.steps[2] = Behaviour::Fail;
    plan.undo_crash[1] = true;
    let saga = first.register(fulfilment(&plan, &journal));
    first.start(&saga, "o-2", Order::default()).await.unwrap();
    let stuck = wait_until(&first, "o-2", |i| i.status == SagaStatus::Compensating).await;
    assert_eq!(stuck.step.as_deref(), Some("charge payment"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    second.register(fulfilment(&plan, &journal));
    let resumed = second.resume().await.unwrap();
    assert_eq!(resumed.len(), 1);
    let done = resumed[0].wait(Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.status, SagaStatus::Compensated);
    assert_eq!(
        runs(&journal),
        [
            "run reserve",
            "run charge",
            "run create",
            "undo charge",
            "undo charge",
            "undo reserve"
        ]
    );
    app1.shutdown().await.unwrap();
    app2.shutdown().await.unwrap();
}

/// Polls the stored instance until `check` holds (at most 10 s).
async fn wait_until(
    sagas: &Sagas,
    id: &str,
    check: impl Fn(&eventdriven::saga::SagaInfo) -> bool,
) -> eventdriven::saga::SagaInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(info) = sagas.get("fulfilment", id).await.unwrap() {
            if check(&info) {
                return info;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "saga {id} never got there"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

stores::per_backend!(a_crashed_saga_resumes_from_the_store);

// --- a graceful shutdown during a saga ------------------------------------------------------------

#[derive(Command, Debug)]
#[command(reply = ())]
struct Slow;

struct Remote;

#[handlers]
impl Remote {
    #[handle]
    async fn slow(&mut self, _: Slow) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn remote_saga() -> Saga<Order> {
    Saga::<Order>::new("remote")
        .step(
            "charge",
            |mut order: Order, ctx| async move {
                ctx.app().send(Slow).await?;
                order.charged = true;
                Ok(order)
            },
            |order, _| async move { Ok(order) },
        )
        .step(
            "ship",
            |mut order: Order, ctx| async move {
                ctx.app().send(Slow).await?;
                order.shipped = true;
                Ok(order)
            },
            |order, _| async move { Ok(order) },
        )
}

/// A shutdown while a saga runs is not a failure of its step: the instance stays as stored
/// (not compensated, not needing attention) and the next process resumes it.
#[tokio::test(start_paused = true)]
async fn a_shutdown_leaves_the_saga_to_resume() {
    let store = Store::memory();
    let app1 = App::builder().actor(Remote).build().await.unwrap();
    let first = Sagas::new(store.clone(), &app1);
    let saga = first.register(remote_saga());
    let run = first.start(&saga, "r-1", Order::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    app1.shutdown().await.unwrap();
    assert!(
        run.wait(Duration::from_secs(1)).await.is_none(),
        "not ended"
    );
    let stored = first.get("remote", "r-1").await.unwrap().unwrap();
    assert_eq!(stored.status, SagaStatus::Running);
    assert_eq!(stored.step.as_deref(), Some("ship"));
    assert_eq!(stored.last_error, None);

    let app2 = App::builder().actor(Remote).build().await.unwrap();
    let second = Sagas::new(store, &app2);
    second.register(remote_saga());
    let resumed = second.resume().await.unwrap();
    assert_eq!(resumed.len(), 1);
    let done = resumed[0].wait(Duration::from_secs(10)).await.unwrap();
    assert_eq!(done.status, SagaStatus::Completed);
    app2.shutdown().await.unwrap();
}
