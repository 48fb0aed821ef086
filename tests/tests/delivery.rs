//! Delivery: retries with backoff (in virtual time), the dead-letter queue and its API,
//! supervision policies with escalation, message expiry, scheduled messages, and shutdown
//! deadlines that dead-letter instead of dropping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::actor::{ActorFailed, Supervision};
use eventdriven::delivery::{Backoff, DeadLetterThresholdExceeded, Filter, Reason, RetryPolicy};
use eventdriven::prelude::*;
use eventdriven::{ActorOptions, Error};
use tokio::sync::Semaphore;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

#[derive(Event, Clone, Debug, PartialEq)]
struct Job {
    id: u32,
    /// How many attempts fail before one succeeds.
    failures: u32,
}

type Log = Arc<Mutex<Vec<(u32, u32, Instant)>>>;

/// Fails each job's first `failures` attempts; logs (job, attempt, time) of every attempt.
struct Worker {
    log: Log,
}

#[handlers]
impl Worker {
    #[subscribe]
    fn on_job(&mut self, job: &Job, ctx: &mut Context<Self>) -> Result<(), String> {
        let attempt = ctx.metadata().attempt;
        self.log
            .lock()
            .unwrap()
            .push((job.id, attempt, Instant::now()));
        if attempt <= job.failures {
            return Err(format!("job {} failed on attempt {attempt}", job.id));
        }
        Ok(())
    }
}

fn exact_backoff() -> RetryPolicy {
    RetryPolicy::retries(3).backoff(Backoff::exponential(100 * MS, 10_000 * MS).without_jitter())
}

async fn worker_app(log: &Log, retry: RetryPolicy) -> App {
    App::builder()
        .actor_with(
            Worker { log: log.clone() },
            ActorOptions::new().retry(retry),
        )
        .build()
        .await
        .unwrap()
}

async fn until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !cond() {
            tokio::time::sleep(MS).await;
        }
    })
    .await
    .expect("condition reached in time");
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_backoff_schedule_in_virtual_time() {
    let log = Log::default();
    let app = worker_app(&log, exact_backoff()).await;
    let start = Instant::now();
    app.publish(Job { id: 1, failures: 2 }).await.unwrap();
    until(|| log.lock().unwrap().len() == 3).await;
    let log = log.lock().unwrap().clone();
    let attempts: Vec<_> = log.iter().map(|(_, attempt, _)| *attempt).collect();
    assert_eq!(
        attempts,
        [1, 2, 3],
        "ctx.metadata().attempt counts attempts"
    );
    let offsets: Vec<_> = log
        .iter()
        .map(|(_, _, at)| at.duration_since(start))
        .collect();
    assert_eq!(
        offsets,
        [Duration::ZERO, 100 * MS, 300 * MS],
        "100 ms, then 200 ms"
    );
    app.shutdown().await.unwrap();
    assert!(app.dead_letters().is_empty());
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_stay_within_half_and_the_full_nominal_delay() {
    let log = Log::default();
    let policy = RetryPolicy::retries(4).backoff(Backoff::exponential(100 * MS, 10_000 * MS));
    let app = worker_app(&log, policy).await;
    app.publish(Job { id: 1, failures: 4 }).await.unwrap();
    until(|| log.lock().unwrap().len() == 5).await;
    let log = log.lock().unwrap().clone();
    for (n, pair) in log.windows(2).enumerate() {
        let gap = pair[1].2.duration_since(pair[0].2);
        let nominal = 100 * MS * (1 << n);
        assert!(
            gap >= nominal / 2 && gap <= nominal + MS,
            "retry {}: {gap:?} vs {nominal:?}",
            n + 1
        );
    }
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_message_waiting_for_its_retry_does_not_block_later_ones() {
    let log = Log::default();
    let app = worker_app(&log, exact_backoff()).await;
    app.publish(Job { id: 1, failures: 1 }).await.unwrap();
    app.publish(Job { id: 2, failures: 0 }).await.unwrap();
    until(|| log.lock().unwrap().len() == 3).await;
    let order: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(id, attempt, _)| (*id, *attempt))
        .collect();
    assert_eq!(order, [(1, 1), (2, 1), (1, 2)]);
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn exhausted_and_permanent_failures_are_dead_lettered_with_their_history() {
    let log = Log::default();
    let policy = exact_backoff().retry_if(|e| !e.message().contains("job 2"));
    let app = worker_app(&log, policy).await;
    let start = std::time::SystemTime::now();
    app.publish(Job {
        id: 1,
        failures: 10,
    })
    .await
    .unwrap();
    app.publish(Job {
        id: 2,
        failures: 10,
    })
    .await
    .unwrap();
    until(|| app.dead_letters().len() == 2).await;

    let letters = app.dead_letters().list();
    let permanent = letters
        .iter()
        .find(|dl| dl.event::<Job>().unwrap().id == 2)
        .unwrap();
    assert_eq!(permanent.attempts, 1, "a permanent error skips the retries");
    let exhausted = letters
        .iter()
        .find(|dl| dl.event::<Job>().unwrap().id == 1)
        .unwrap();
    assert_eq!(exhausted.attempts, 4, "the first attempt and three retries");
    assert_eq!(exhausted.reason, Reason::Failed);
    assert_eq!(exhausted.actor, "Worker");
    assert_eq!(exhausted.message, "Job");
    assert_eq!(exhausted.error, "job 1 failed on attempt 4");
    assert!(exhausted.first_failure >= start);
    assert!(exhausted.last_failure >= exhausted.first_failure);
    assert!(exhausted.can_retry());
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_dead_letter_api_lists_filters_retries_once_and_purges() {
    let log = Log::default();
    let app = worker_app(&log, RetryPolicy::none()).await;
    for id in 0..4 {
        app.publish(Job { id, failures: 1 }).await.unwrap();
    }
    until(|| app.dead_letters().len() == 4).await;
    let dlq = app.dead_letters();
    assert_eq!(dlq.count_for("Worker"), 4);
    assert_eq!(
        dlq.list_where(&Filter::new().actor("Worker").message("Job"))
            .len(),
        4
    );
    assert!(dlq.list_where(&Filter::new().actor("Nobody")).is_empty());
    let first = dlq.list()[0].clone();
    assert_eq!(dlq.get(first.seq).unwrap().meta.id, first.meta.id);

    // Retried, the job's second attempt succeeds: handled exactly once more.
    app.retry_dead_letter(first.seq).await.unwrap();
    let again = app.retry_dead_letter(first.seq).await.unwrap_err();
    assert!(matches!(again, Error::NoDeadLetter { .. }), "{again}");
    until(|| log.lock().unwrap().len() == 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handled: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _, _)| *id == first.event::<Job>().unwrap().id)
        .map(|(_, a, _)| *a)
        .collect();
    assert_eq!(
        handled,
        [1, 1],
        "failed once, then handled once by the retry (attempts restart at 1)"
    );
    assert_eq!(
        dlq.len(),
        4,
        "the retried job failed again: attempt 1 fails by design"
    );

    // Purge by time, then all.
    let cut = std::time::SystemTime::now() + Duration::from_secs(1);
    assert_eq!(dlq.purge_older_than(cut), 4);
    assert!(dlq.is_empty());
    app.shutdown().await.unwrap();
}

/// Fails while `broken` is set.
struct Flaky {
    broken: Arc<Mutex<bool>>,
    handled: Arc<Mutex<Vec<u32>>>,
}

#[handlers]
impl Flaky {
    #[subscribe]
    fn on_job(&mut self, job: &Job) -> Result<(), &'static str> {
        if *self.broken.lock().unwrap() {
            return Err("dependency down");
        }
        self.handled.lock().unwrap().push(job.id);
        Ok(())
    }
}

#[derive(Default)]
struct Alerts {
    seen: Vec<DeadLetterThresholdExceeded>,
}

#[derive(Query, Debug)]
#[query(reply = Vec<DeadLetterThresholdExceeded>)]
struct GetAlerts;

#[handlers]
impl Alerts {
    #[subscribe]
    fn on_alert(&mut self, ev: &DeadLetterThresholdExceeded) {
        self.seen.push(ev.clone());
    }

    #[query]
    fn alerts(&self, _: GetAlerts) -> Vec<DeadLetterThresholdExceeded> {
        self.seen.clone()
    }
}

#[tokio::test]
async fn retry_all_redelivers_each_dead_letter_exactly_once_and_thresholds_alert() {
    let broken = Arc::new(Mutex::new(true));
    let handled = Arc::new(Mutex::new(Vec::new()));
    let app = App::builder()
        .actor(Flaky {
            broken: broken.clone(),
            handled: handled.clone(),
        })
        .actor(Alerts::default())
        .dead_letter_threshold(2)
        .build()
        .await
        .unwrap();
    for id in 0..5 {
        app.publish(Job { id, failures: 0 }).await.unwrap();
    }
    until(|| app.dead_letters().count_for("Flaky") == 5).await;
    let alerts = app.query(GetAlerts).await.unwrap();
    assert_eq!(
        alerts,
        [DeadLetterThresholdExceeded {
            actor: "Flaky",
            count: 3,
            threshold: 2
        }],
        "once, when passed"
    );

    *broken.lock().unwrap() = false;
    assert_eq!(app.retry_dead_letters("Flaky").await.unwrap(), 5);
    until(|| handled.lock().unwrap().len() == 5).await;
    app.shutdown().await.unwrap();
    let mut ids = handled.lock().unwrap().clone();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    assert!(app.dead_letters().is_empty());
}

#[derive(Command, Debug)]
#[command(reply = u32)]
struct Bump(u32);

#[derive(Query, Debug)]
#[query(reply = u32)]
struct Count;

/// Panics on `Bump(0)`.
#[derive(Default)]
struct Fragile {
    count: u32,
}

#[handlers]
impl Fragile {
    #[handle]
    fn bump(&mut self, cmd: Bump) -> u32 {
        assert_ne!(cmd.0, 0, "zero");
        self.count += cmd.0;
        self.count
    }

    #[query]
    fn count(&self, _: Count) -> u32 {
        self.count
    }
}

#[derive(Default)]
struct Watcher {
    failed: Vec<ActorFailed>,
}

#[derive(Query, Debug)]
#[query(reply = Vec<ActorFailed>)]
struct Failures;

#[handlers]
impl Watcher {
    #[subscribe]
    fn on_failed(&mut self, ev: &ActorFailed) {
        self.failed.push(ev.clone());
    }

    #[query]
    fn failures(&self, _: Failures) -> Vec<ActorFailed> {
        self.failed.clone()
    }
}

async fn supervised(policy: Supervision) -> App {
    App::builder()
        .actor_with(Fragile::default(), ActorOptions::new().supervision(policy))
        .actor(Watcher::default())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn resume_keeps_the_state() {
    let app = supervised(Supervision::resume()).await;
    app.send(Bump(5)).await.unwrap();
    assert!(app.send(Bump(0)).await.is_err());
    assert_eq!(app.send(Bump(1)).await.unwrap(), 6);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn stop_escalates_with_actor_failed_and_refuses_further_messages() {
    let app = supervised(Supervision::stop()).await;
    app.send(Bump(5)).await.unwrap();
    assert!(app.send(Bump(0)).await.is_err());
    until(|| app.stats().dead_letters >= 1).await;
    let err = app.send(Bump(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Stopped {
                actor: "Fragile",
                ..
            }
        ),
        "{err}"
    );
    let failures = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let f = app.query(Failures).await.unwrap();
            if !f.is_empty() {
                break f;
            }
            tokio::time::sleep(MS).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(failures[0].actor, "Fragile");
    assert!(failures[0].error.contains("zero"), "{}", failures[0].error);
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn restart_intensity_escalates_after_too_many_panics_in_the_window() {
    let app = supervised(Supervision::restart().at_most(2, Duration::from_secs(10))).await;
    for _ in 0..2 {
        assert!(app.send(Bump(0)).await.is_err());
        assert_eq!(
            app.send(Bump(1)).await.unwrap(),
            1,
            "restarted from Default"
        );
    }
    // Outside the window the count starts over.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(app.send(Bump(0)).await.is_err());
    assert!(app.send(Bump(0)).await.is_err());
    assert_eq!(app.send(Bump(1)).await.unwrap(), 1);
    // The third panic within ten seconds stops it.
    assert!(app.send(Bump(0)).await.is_err());
    until(
        || matches!(app.try_tell(Bump(1)), Err(ref e) if matches!(e.error, Error::Stopped { .. })),
    )
    .await;
    app.shutdown().await.unwrap();
}

/// Blocks on a gate, then records what it handled.
struct Gate {
    gate: Arc<Semaphore>,
    handled: Arc<Mutex<Vec<u32>>>,
}

#[derive(Command, Debug)]
#[command(reply = u32)]
struct Work(u32);

/// Expires 500 ms after it is sent unless handled by then.
#[derive(Command, Debug)]
#[command(reply = u32, ttl = "500ms")]
struct Urgent(u32);

#[handlers]
impl Gate {
    #[handle]
    fn urgent(&mut self, cmd: Urgent) -> u32 {
        self.handled.lock().unwrap().push(2000 + cmd.0);
        cmd.0
    }

    #[handle]
    async fn work(&mut self, cmd: Work) -> u32 {
        self.gate.acquire().await.unwrap().forget();
        self.handled.lock().unwrap().push(cmd.0);
        cmd.0
    }

    #[subscribe]
    fn on_job(&mut self, job: &Job) {
        self.handled.lock().unwrap().push(1000 + job.id);
    }
}

fn gate() -> (Gate, Arc<Semaphore>, Arc<Mutex<Vec<u32>>>) {
    let g = Gate {
        gate: Arc::new(Semaphore::new(0)),
        handled: Arc::default(),
    };
    let (sem, handled) = (g.gate.clone(), g.handled.clone());
    (g, sem, handled)
}

#[tokio::test]
async fn an_expired_message_is_never_handled_and_its_sender_hears_why() {
    let (actor, gate, handled) = gate();
    let app = App::builder().actor(actor).build().await.unwrap();
    app.tell(Work(1)).await.unwrap(); // blocks the actor
    let expiring = app.send_envelope(Envelope::new(Work(2)).with_ttl(Duration::from_millis(20)));
    let expiring_event = app.publish_envelope(
        Envelope::new(Job { id: 3, failures: 0 }).with_ttl(Duration::from_millis(20)),
    );
    let release = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.add_permits(10);
    };
    let (reply, published, ()) = tokio::join!(expiring, expiring_event, release);
    published.unwrap();
    let err = reply.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Expired {
                actor: "Gate",
                message: "Work"
            }
        ),
        "{err}"
    );
    app.shutdown().await.unwrap();
    assert_eq!(
        *handled.lock().unwrap(),
        [1],
        "neither expired message was handled"
    );
    let letters = app.dead_letters().list();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|dl| dl.reason == Reason::Expired));
}

#[tokio::test]
async fn a_message_type_can_carry_its_own_time_to_live() {
    assert_eq!(<Urgent as Message>::TTL, Some(Duration::from_millis(500)));
    let (actor, gate, handled) = gate();
    let app = App::builder().actor(actor).build().await.unwrap();
    assert_eq!(app.send(Urgent(1)).await.unwrap(), 1, "handled in time");
    app.tell(Work(1)).await.unwrap(); // blocks the actor
    let late = app.send(Urgent(2));
    let release = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        gate.add_permits(1);
    };
    let (reply, ()) = tokio::join!(late, release);
    assert!(
        matches!(
            reply,
            Err(Error::Expired {
                message: "Urgent",
                ..
            })
        ),
        "{reply:?}"
    );
    app.shutdown().await.unwrap();
    assert_eq!(*handled.lock().unwrap(), [2001, 1]);
}

#[tokio::test(start_paused = true)]
async fn scheduled_messages_arrive_on_time_and_cancel() {
    let log = Log::default();
    let app = worker_app(&log, RetryPolicy::none()).await;
    let start = Instant::now();
    let _kept = app
        .publish_after(Job { id: 1, failures: 0 }, Duration::from_secs(5))
        .unwrap();
    let cancelled = app
        .publish_after(Job { id: 2, failures: 0 }, Duration::from_secs(3))
        .unwrap();
    assert_eq!(app.stats().scheduled, 2);
    assert!(cancelled.cancel());
    assert!(!cancelled.cancel(), "only once");
    until(|| !log.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].0, log[0].2.duration_since(start)),
        (1, Duration::from_secs(5))
    );
    app.shutdown().await.unwrap();
}

/// Schedules a reminder to itself and counts reminders.
#[derive(Default)]
struct Reminder {
    fired: Vec<Duration>,
    started: Option<Instant>,
}

#[derive(Command, Debug)]
struct Remind(Duration);

#[derive(Event, Clone, Debug)]
struct Ring;

#[derive(Query, Debug)]
#[query(reply = Vec<Duration>)]
struct Rings;

#[handlers]
impl Reminder {
    #[handle]
    fn remind(&mut self, cmd: Remind, ctx: &mut Context<Self>) {
        self.started = Some(Instant::now());
        let _ = ctx.publish_after(Ring, cmd.0);
    }

    #[subscribe]
    fn ring(&mut self, _: &Ring, ctx: &mut Context<Self>) {
        assert!(
            ctx.metadata().causation_id.is_some(),
            "caused by the command"
        );
        self.fired.push(self.started.unwrap().elapsed());
    }

    #[query]
    fn rings(&self, _: Rings) -> Vec<Duration> {
        self.fired.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_handler_schedules_a_message_for_later() {
    let app = App::builder()
        .actor(Reminder::default())
        .build()
        .await
        .unwrap();
    app.send(Remind(Duration::from_secs(60))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(app.query(Rings).await.unwrap(), [Duration::from_secs(60)]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_shutdown_deadline_dead_letters_what_is_left_and_it_can_be_retried_later() {
    let (actor, gate, handled) = gate();
    let app = App::builder().actor(actor).build().await.unwrap();
    let log = Log::default();
    let other = worker_app(&log, RetryPolicy::none()).await;
    app.tell(Work(1)).await.unwrap(); // blocks
    app.tell(Work(2)).await.unwrap(); // queued
    app.publish(Job { id: 7, failures: 0 }).await.unwrap(); // queued
    let _later = app
        .publish_after(Job { id: 8, failures: 0 }, Duration::from_secs(3600))
        .unwrap();
    let result = app.shutdown_within(Duration::from_millis(50)).await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, Error::ShutdownTimeout { unhandled: 3, .. }),
        "{err}"
    );
    assert!(
        handled.lock().unwrap().is_empty(),
        "the stuck handler was dropped; nothing else ran"
    );

    let letters = app.dead_letters().list();
    let mut by_message: HashMap<&str, Vec<Reason>> = HashMap::new();
    for dl in &letters {
        by_message.entry(dl.message).or_default().push(dl.reason);
    }
    assert_eq!(
        by_message["Work"],
        [Reason::Shutdown, Reason::Shutdown],
        "the dropped one and the queued one"
    );
    assert_eq!(
        by_message["Job"],
        [Reason::Shutdown, Reason::Shutdown],
        "queued and scheduled"
    );
    let queued_command = letters
        .iter()
        .filter(|dl| dl.message == "Work")
        .find(|dl| dl.can_retry());
    assert!(
        queued_command.is_some(),
        "a command never handled keeps its payload"
    );
    let _ = gate;
    other.shutdown().await.unwrap();
}

/// Counts how often it really ran; slow enough that duplicates overlap.
#[derive(Default)]
struct Charger {
    runs: u32,
}

#[derive(Command, Debug)]
#[command(reply = Result<u32, String>)]
struct Charge(u32);

#[handlers]
impl Charger {
    #[handle]
    async fn charge(&mut self, cmd: Charge, ctx: &mut Context<Self>) -> Result<u32, String> {
        assert!(ctx
            .metadata()
            .headers
            .get(eventdriven::IDEMPOTENCY_KEY)
            .is_some());
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.runs += 1;
        if cmd.0 == 0 {
            return Err("declined".into());
        }
        Ok(self.runs * 1000 + cmd.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_duplicates_of_a_keyed_command_run_it_once() {
    let app = App::builder()
        .actor(Charger::default())
        .build()
        .await
        .unwrap();
    let sends = (0..100).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { app.send_idempotent("payment-42", Charge(7)).await })
    });
    let mut replies = Vec::new();
    for send in sends {
        replies.push(send.await.unwrap().unwrap());
    }
    assert!(
        replies.iter().all(|r| *r == Ok(1007)),
        "all got the first run's reply: {replies:?}"
    );
    // Later repeats get the stored reply, errors included; another key runs again.
    assert_eq!(
        app.send_idempotent("payment-42", Charge(9)).await.unwrap(),
        Ok(1007)
    );
    assert_eq!(
        app.send_idempotent("payment-43", Charge(0)).await.unwrap(),
        Err("declined".into())
    );
    assert_eq!(
        app.send_idempotent("payment-43", Charge(5)).await.unwrap(),
        Err("declined".into())
    );
    assert_eq!(
        app.send_idempotent("payment-44", Charge(1)).await.unwrap(),
        Ok(3001)
    );
    app.shutdown().await.unwrap();
    assert_eq!(app.stats().actors[0].handled, 3, "three keys, three runs");
}

#[tokio::test(start_paused = true)]
async fn an_idempotency_key_is_forgotten_after_its_window() {
    let app = App::builder()
        .actor(Charger::default())
        .idempotency_window(eventdriven::delivery::IdempotencyWindow {
            max_ids: 10,
            max_age: Duration::from_secs(60),
        })
        .build()
        .await
        .unwrap();
    assert_eq!(app.send_idempotent("k", Charge(1)).await.unwrap(), Ok(1001));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        app.send_idempotent("k", Charge(1)).await.unwrap(),
        Ok(1001),
        "within the window"
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(
        app.send_idempotent("k", Charge(1)).await.unwrap(),
        Ok(2001),
        "after it: runs again"
    );
    app.shutdown().await.unwrap();
}

#[derive(Command, Debug, Clone)]
#[command(reply = Result<u32, String>)]
struct Reserve {
    sku: u32,
    /// Attempts that fail before one succeeds: by returning `Err` (even) or panicking (odd).
    failures: u32,
}

#[derive(Command, Debug, Clone)]
#[command(reply = u32)]
struct Tally(u32);

/// A command handler with a retry policy.
#[derive(Default)]
struct Stock {
    attempts: Vec<(u32, u32)>,
}

#[handlers]
impl Stock {
    #[handle(retry = 3, backoff = "100ms..1s")]
    async fn reserve(&mut self, cmd: Reserve, ctx: &mut Context<Self>) -> Result<u32, String> {
        let attempt = ctx.metadata().attempt;
        self.attempts.push((cmd.sku, attempt));
        if attempt <= cmd.failures {
            if !attempt.is_multiple_of(2) {
                panic!("reserve {} panicked on attempt {attempt}", cmd.sku);
            }
            return Err(format!("reserve {} failed on attempt {attempt}", cmd.sku));
        }
        Ok(attempt)
    }

    #[handle(retry = 1, backoff = "10ms")]
    fn tally(&mut self, cmd: Tally) -> u32 {
        assert_ne!(cmd.0, 0, "zero tally");
        cmd.0
    }
}

#[tokio::test(start_paused = true)]
async fn a_command_handler_with_a_retry_policy_retries_errors_and_panics() {
    let app = App::builder()
        .actor_with(
            Stock::default(),
            ActorOptions::new().supervision(Supervision::resume()),
        )
        .build()
        .await
        .unwrap();
    let start = Instant::now();
    // Fails by panic (1) and error (2), succeeds on the third attempt: the sender waits.
    assert_eq!(
        app.send(Reserve {
            sku: 1,
            failures: 2
        })
        .await
        .unwrap(),
        Ok(3)
    );
    let waited = start.elapsed();
    assert!(
        waited >= 150 * MS && waited <= 300 * MS,
        "100 ms, then 200 ms of backoff, jittered: {waited:?}"
    );
    // Never succeeds: after four attempts the sender gets the last error, and it is
    // dead-lettered with the command, so it can be retried later.
    assert_eq!(
        app.send(Reserve {
            sku: 2,
            failures: 10
        })
        .await
        .unwrap(),
        Err("reserve 2 failed on attempt 4".to_owned())
    );
    let letter = &app.dead_letters().list()[0];
    assert_eq!(
        (letter.message, letter.attempts, letter.reason),
        ("Reserve", 4, Reason::Failed)
    );
    assert!(letter.can_retry());
    // A reply that is not a `Result` fails only by panicking; after the last attempt the
    // sender hears that it was dead-lettered.
    assert_eq!(app.send(Tally(5)).await.unwrap(), 5);
    let err = app.send(Tally(0)).await.unwrap_err();
    assert!(
        matches!(err, Error::DeadLettered { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(
        app.stats().actors[0].panics,
        1 + 2 + 2,
        "every panic was supervised"
    );
    app.shutdown().await.unwrap();
}
