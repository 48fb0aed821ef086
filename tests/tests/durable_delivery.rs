//! Dead letters, processed ids and scheduled events kept in a store survive a restart: each
//! test runs an app, shuts it down, starts a new one on the same store (for SQLite: the file
//! opened again) and checks what came back. One suite, run on every backend.

mod stores;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::store::Store;
use eventdriven::{DeadLetter, MessageId};
use stores::Harness;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "payment.requested")]
struct PaymentRequested {
    order: u64,
}

/// A command serde can store: a scheduled one survives a restart.
#[derive(Command, Debug, Serialize, Deserialize)]
#[command(reply = ())]
struct Charge {
    order: u64,
}

/// A command whose handler always panics.
#[derive(Command, Debug, Serialize, Deserialize)]
#[command(reply = ())]
struct Refund {
    order: u64,
}

/// An event serde cannot store (no `Serialize`).
#[derive(Event, Clone, Debug)]
#[event(name = "local.only")]
struct LocalOnly;

/// Fails while `failing` is set; counts what it handled.
struct Payments {
    failing: Arc<AtomicBool>,
    handled: Arc<AtomicUsize>,
}

#[handlers]
impl Payments {
    #[subscribe(idempotent)]
    fn requested(&mut self, event: &PaymentRequested) -> Result<(), String> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(format!("gateway down for order {}", event.order));
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[subscribe]
    fn local(&mut self, _: &LocalOnly) -> Result<(), String> {
        Err("never works".into())
    }

    #[handle]
    fn charge(&mut self, _: Charge) {
        self.handled.fetch_add(1, Ordering::SeqCst);
    }

    #[handle]
    fn refund(&mut self, cmd: Refund) {
        panic!("refunds are broken (order {})", cmd.order);
    }
}

struct Counters {
    failing: Arc<AtomicBool>,
    handled: Arc<AtomicUsize>,
}

impl Counters {
    fn new(failing: bool) -> Self {
        Self {
            failing: Arc::new(AtomicBool::new(failing)),
            handled: Arc::default(),
        }
    }

    fn payments(&self) -> Payments {
        Payments {
            failing: self.failing.clone(),
            handled: self.handled.clone(),
        }
    }
}

async fn app(store: Store, counters: &Counters) -> App {
    App::builder()
        .store(store)
        .actor(counters.payments())
        .build()
        .await
        .expect("app starts")
}

/// Waits (at most 10 s) until `check` holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn dead_letters_survive_a_restart_and_can_be_retried(h: Harness) {
    let store = h.open().await;
    let first = Counters::new(true);
    let app1 = app(store, &first).await;
    app1.publish(PaymentRequested { order: 7 }).await.unwrap();
    app1.publish(LocalOnly).await.unwrap();
    until("two dead letters", || app1.dead_letters().len() == 2).await;
    app1.shutdown().await.unwrap();

    // The restarted app: the gateway works again.
    let second = Counters::new(false);
    let app2 = app(h.open().await, &second).await;
    let letters: Vec<DeadLetter> = app2.dead_letters().list();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let payment = letters
        .iter()
        .find(|l| l.message == "payment.requested")
        .unwrap();
    assert_eq!(payment.actor, "Payments");
    assert_eq!(payment.error, "gateway down for order 7");
    assert!(payment.can_retry());
    let local = letters.iter().find(|l| l.message == "local.only").unwrap();
    assert!(
        !local.can_retry(),
        "an event serde cannot store keeps no payload"
    );

    app2.retry_dead_letter(payment.seq).await.unwrap();
    until("the retried payment", || {
        second.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    app2.dead_letters().purge();
    app2.shutdown().await.unwrap();

    // Retried and purged letters are gone from the store as well.
    let third = Counters::new(false);
    let app3 = app(h.open().await, &third).await;
    assert!(
        app3.dead_letters().is_empty(),
        "{:?}",
        app3.dead_letters().list()
    );
    app3.shutdown().await.unwrap();
}

async fn processed_ids_survive_a_restart(h: Harness) {
    let store = h.open().await;
    let counters = Counters::new(false);
    let app1 = app(store, &counters).await;
    let env = Envelope::new(PaymentRequested { order: 1 });
    let id: MessageId = env.meta.id;
    app1.publish_envelope(env.clone()).await.unwrap();
    until("the first delivery", || {
        counters.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    app1.shutdown().await.unwrap();

    // The same event again (a redelivery after a restart): skipped.
    let app2 = app(h.open().await, &counters).await;
    app2.publish_envelope(env).await.unwrap();
    let other = Envelope::new(PaymentRequested { order: 2 });
    assert_ne!(other.meta.id, id);
    app2.publish_envelope(other).await.unwrap();
    until("the new event", || {
        counters.handled.load(Ordering::SeqCst) == 2
    })
    .await;
    app2.shutdown().await.unwrap();
    assert_eq!(counters.handled.load(Ordering::SeqCst), 2);
}

async fn scheduled_events_survive_a_restart(h: Harness) {
    let store = h.open().await;
    let counters = Counters::new(false);
    let app1 = app(store, &counters).await;
    app1.publish_after(PaymentRequested { order: 1 }, Duration::from_millis(300))
        .unwrap();
    let cancelled = app1
        .publish_after(PaymentRequested { order: 2 }, Duration::from_millis(300))
        .unwrap();
    assert!(cancelled.cancel());
    // Not due yet at shutdown: kept in the store, not dead-lettered.
    app1.shutdown().await.unwrap();
    assert!(app1.dead_letters().is_empty());
    assert_eq!(counters.handled.load(Ordering::SeqCst), 0);

    // Restarted after the due time: published at once, exactly once; the cancelled one never.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let app2 = app(h.open().await, &counters).await;
    until("the scheduled event", || {
        counters.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app2.shutdown().await.unwrap();

    let app3 = app(h.open().await, &counters).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app3.shutdown().await.unwrap();
    assert_eq!(counters.handled.load(Ordering::SeqCst), 1);
}

async fn a_schedule_restored_before_its_time_waits_for_it(h: Harness) {
    let store = h.open().await;
    let counters = Counters::new(false);
    let app1 = app(store, &counters).await;
    app1.publish_after(PaymentRequested { order: 3 }, Duration::from_millis(600))
        .unwrap();
    app1.shutdown().await.unwrap();

    let app2 = app(h.open().await, &counters).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        counters.handled.load(Ordering::SeqCst),
        0,
        "not before its time"
    );
    until("the scheduled event", || {
        counters.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    app2.shutdown().await.unwrap();
}

async fn scheduled_commands_survive_a_restart(h: Harness) {
    let store = h.open().await;
    let counters = Counters::new(false);
    let app1 = app(store, &counters).await;
    app1.tell_after(Charge { order: 9 }, Duration::from_millis(300))
        .unwrap();
    app1.shutdown().await.unwrap();
    assert!(app1.dead_letters().is_empty());

    tokio::time::sleep(Duration::from_millis(400)).await;
    let app2 = app(h.open().await, &counters).await;
    until("the scheduled command", || {
        counters.handled.load(Ordering::SeqCst) == 1
    })
    .await;
    app2.shutdown().await.unwrap();
}

async fn a_failed_command_leaves_a_durable_record_without_its_payload(h: Harness) {
    let store = h.open().await;
    let counters = Counters::new(false);
    let app1 = app(store, &counters).await;
    assert!(app1.send(Refund { order: 4 }).await.is_err());
    until("the dead letter", || app1.dead_letters().len() == 1).await;
    app1.shutdown().await.unwrap();

    let app2 = app(h.open().await, &counters).await;
    let letters = app2.dead_letters().list();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].message, "Refund");
    assert!(
        letters[0].error.contains("refunds are broken (order 4)"),
        "{}",
        letters[0].error
    );
    assert!(!letters[0].can_retry());
    app2.shutdown().await.unwrap();
}

stores::per_backend!(
    scheduled_commands_survive_a_restart,
    a_failed_command_leaves_a_durable_record_without_its_payload,
    dead_letters_survive_a_restart_and_can_be_retried,
    processed_ids_survive_a_restart,
    scheduled_events_survive_a_restart,
    a_schedule_restored_before_its_time_waits_for_it,
);
