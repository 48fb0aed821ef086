//! Event-driven sagas (process managers) on every backend: an instance per order id, started
//! by `OrderPlaced` and moved on by later events of the same order in store order; several
//! instances interleaved; a timeout that cancels; a restart that continues from the stored
//! state without sending a command twice.

mod stores;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::saga::{
    ProcessContext, ProcessError, ProcessManager, ProcessManagers, SagaStatus, Sagas, Transition,
};
use eventdriven::store::{EventData, ExpectedVersion, Store};
use stores::Harness;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "stock.reserved")]
struct StockReserved {
    order: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "payment.completed")]
struct PaymentCompleted {
    order: u64,
}

#[derive(Events, Clone, Debug)]
enum FulfilmentEvent {
    Placed(OrderPlaced),
    Reserved(StockReserved),
    Paid(PaymentCompleted),
}

/// The commands the process sends, as the receiving actor saw them: (command, order, key).
type Log = Arc<Mutex<Vec<(String, u64, String)>>>;

#[derive(Command, Debug)]
#[command(reply = ())]
struct Reserve {
    order: u64,
    key: String,
}

#[derive(Command, Debug)]
#[command(reply = ())]
struct Charge {
    order: u64,
    key: String,
}

#[derive(Command, Debug)]
#[command(reply = ())]
struct Cancel {
    order: u64,
    key: String,
}

struct Warehouse {
    log: Log,
}

#[handlers]
impl Warehouse {
    #[handle]
    fn reserve(&mut self, cmd: Reserve) {
        self.log
            .lock()
            .unwrap()
            .push(("reserve".into(), cmd.order, cmd.key));
    }

    #[handle]
    fn charge(&mut self, cmd: Charge) {
        self.log
            .lock()
            .unwrap()
            .push(("charge".into(), cmd.order, cmd.key));
    }

    #[handle]
    fn cancel(&mut self, cmd: Cancel) {
        self.log
            .lock()
            .unwrap()
            .push(("cancel".into(), cmd.order, cmd.key));
    }
}

/// The fulfilment process: placed -> reserve stock (and give it 300 ms) -> charge -> done;
/// no stock in time -> cancel, done.
#[derive(Default, Serialize, Deserialize)]
struct Fulfilment {
    order: u64,
    stage: String,
}

impl ProcessManager for Fulfilment {
    const NAME: &'static str = "fulfilment";
    type Event = FulfilmentEvent;

    fn correlate(event: &FulfilmentEvent) -> Option<String> {
        Some(
            match event {
                FulfilmentEvent::Placed(e) => e.order,
                FulfilmentEvent::Reserved(e) => e.order,
                FulfilmentEvent::Paid(e) => e.order,
            }
            .to_string(),
        )
    }

    fn starts(event: &FulfilmentEvent) -> bool {
        matches!(event, FulfilmentEvent::Placed(_))
    }

    async fn handle(
        &mut self,
        event: FulfilmentEvent,
        ctx: &mut ProcessContext<'_>,
    ) -> Result<Transition, ProcessError> {
        let key = ctx.idempotency_key();
        match event {
            FulfilmentEvent::Placed(e) => {
                self.order = e.order;
                self.stage = "reserving".into();
                ctx.tell(Reserve {
                    order: e.order,
                    key,
                })
                .await?;
                ctx.set_timeout(Duration::from_millis(300));
                Ok(Transition::Continue)
            }
            FulfilmentEvent::Reserved(e) => {
                self.stage = "charging".into();
                ctx.clear_timeout();
                ctx.tell(Charge {
                    order: e.order,
                    key,
                })
                .await?;
                Ok(Transition::Continue)
            }
            FulfilmentEvent::Paid(_) => {
                self.stage = "done".into();
                Ok(Transition::Done)
            }
        }
    }

    async fn timeout(&mut self, ctx: &mut ProcessContext<'_>) -> Result<Transition, ProcessError> {
        self.stage = "cancelled".into();
        let key = ctx.idempotency_key();
        ctx.tell(Cancel {
            order: self.order,
            key,
        })
        .await?;
        Ok(Transition::Done)
    }
}

async fn append<E: Event + Serialize>(store: &Store, event: E) -> u64 {
    let data = EventData::from_event(&event).unwrap();
    store
        .append("orders", ExpectedVersion::Any, vec![data])
        .await
        .unwrap()
        .last_position
}

async fn warehouse() -> (App, Log) {
    let log: Log = Arc::default();
    let app = App::builder()
        .actor(Warehouse { log: log.clone() })
        .build()
        .await
        .unwrap();
    (app, log)
}

fn commands(log: &Log) -> Vec<(String, u64)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|(c, o, _)| (c.clone(), *o))
        .collect()
}

async fn instances_follow_their_own_events_in_order(h: Harness) {
    let store = h.open().await;
    let (app, log) = warehouse().await;
    let managers = ProcessManagers::new(store.clone(), &app);
    let running = managers.start::<Fulfilment>().await.unwrap();
    // Three orders interleaved; a payment for an order never placed is passed over.
    append(&store, OrderPlaced { order: 1 }).await;
    append(&store, OrderPlaced { order: 2 }).await;
    append(&store, StockReserved { order: 1 }).await;
    append(&store, PaymentCompleted { order: 9 }).await;
    append(&store, OrderPlaced { order: 3 }).await;
    append(&store, StockReserved { order: 2 }).await;
    append(&store, PaymentCompleted { order: 1 }).await;
    append(&store, StockReserved { order: 3 }).await;
    let head = append(&store, PaymentCompleted { order: 2 }).await;
    assert!(running.wait_for(head, WAIT).await);
    // A late event for a finished instance changes nothing.
    let head = append(&store, StockReserved { order: 1 }).await;
    assert!(running.wait_for(head, WAIT).await);
    running.stop().await;

    let mine: Vec<(String, u64)> = commands(&log);
    let of = |order: u64| -> Vec<String> {
        mine.iter()
            .filter(|(_, o)| *o == order)
            .map(|(c, _)| c.clone())
            .collect()
    };
    assert_eq!(of(1), ["reserve", "charge"]);
    assert_eq!(of(2), ["reserve", "charge"]);
    assert_eq!(of(3), ["reserve", "charge"]);
    assert!(of(9).is_empty());

    let sagas = Sagas::new(store.clone(), &app);
    let listed = sagas.list(Some("fulfilment"), 10).await.unwrap();
    let status = |id: &str| listed.iter().find(|i| i.id == id).map(|i| i.status);
    assert_eq!(status("1"), Some(SagaStatus::Completed));
    assert_eq!(status("2"), Some(SagaStatus::Completed));
    assert_eq!(status("3"), Some(SagaStatus::Running));
    assert_eq!(status("9"), None);
    let three = listed.iter().find(|i| i.id == "3").unwrap();
    assert_eq!(three.data["stage"], "charging");
    app.shutdown().await.unwrap();
}

async fn a_timeout_cancels_the_instance(h: Harness) {
    let store = h.open().await;
    let (app, log) = warehouse().await;
    let running = ProcessManagers::new(store.clone(), &app)
        .poll_interval(Duration::from_millis(20))
        .start::<Fulfilment>()
        .await
        .unwrap();
    append(&store, OrderPlaced { order: 7 }).await;
    // Order 8 gets its stock in time: its timeout is cancelled.
    append(&store, OrderPlaced { order: 8 }).await;
    let head = append(&store, StockReserved { order: 8 }).await;
    assert!(running.wait_for(head, WAIT).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !commands(&log).contains(&("cancel".to_owned(), 7)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            commands(&log)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    assert!(!commands(&log).contains(&("cancel".to_owned(), 8)));
    let sagas = Sagas::new(store, &app);
    let seven = sagas.get("fulfilment", "7").await.unwrap().unwrap();
    assert_eq!(seven.status, SagaStatus::Completed);
    assert_eq!(seven.data["stage"], "cancelled");
    app.shutdown().await.unwrap();
}

/// The same timeout in virtual time: nothing at 290 ms, the cancel by 310 ms.
#[tokio::test(start_paused = true)]
async fn a_timeout_fires_on_time_in_virtual_time() {
    let store = Store::memory();
    let (app, log) = warehouse().await;
    let running = ProcessManagers::new(store.clone(), &app)
        .start::<Fulfilment>()
        .await
        .unwrap();
    let head = append(&store, OrderPlaced { order: 7 }).await;
    assert!(running.wait_for(head, WAIT).await);
    tokio::time::sleep(Duration::from_millis(290)).await;
    assert_eq!(commands(&log), [("reserve".to_owned(), 7)]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while commands(&log).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            commands(&log)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(commands(&log)[1], ("cancel".to_owned(), 7));
    running.stop().await;
    app.shutdown().await.unwrap();
}

async fn a_restart_continues_without_sending_twice(h: Harness) {
    let store = h.open().await;
    let (app, log) = warehouse().await;
    let first = ProcessManagers::new(store.clone(), &app)
        .start::<Fulfilment>()
        .await
        .unwrap();
    append(&store, OrderPlaced { order: 1 }).await;
    let head = append(&store, StockReserved { order: 1 }).await;
    assert!(first.wait_for(head, WAIT).await);
    first.stop().await;

    // Appended while no process manager runs; a new one (a restarted process) picks up.
    let head = append(&store, PaymentCompleted { order: 1 }).await;
    let second = ProcessManagers::new(h.open().await, &app)
        .start::<Fulfilment>()
        .await
        .unwrap();
    assert!(second.wait_for(head, WAIT).await);
    second.stop().await;
    let sent = log.lock().unwrap().clone();
    assert_eq!(
        sent.iter().map(|(c, _, _)| c.as_str()).collect::<Vec<_>>(),
        ["reserve", "charge"],
        "no event handled twice"
    );
    // The keys are per instance and event.
    assert!(sent[0].2.starts_with("fulfilment/1/"));
    assert_ne!(sent[0].2, sent[1].2);
    let sagas = Sagas::new(store, &app);
    assert_eq!(
        sagas.get("fulfilment", "1").await.unwrap().unwrap().status,
        SagaStatus::Completed
    );
    app.shutdown().await.unwrap();
}

/// Two copies of the process manager at once (two processes): each transition happens once.
async fn two_copies_apply_each_transition_once(h: Harness) {
    let store = h.open().await;
    let (app, _log) = warehouse().await;
    let copies = [
        ProcessManagers::new(store.clone(), &app)
            .start::<Fulfilment>()
            .await
            .unwrap(),
        ProcessManagers::new(h.open().await, &app)
            .start::<Fulfilment>()
            .await
            .unwrap(),
    ];
    let mut head = 0;
    for order in 0..20 {
        append(&store, OrderPlaced { order }).await;
        head = append(&store, StockReserved { order }).await;
    }
    for copy in &copies {
        assert!(
            copy.wait_for(head, WAIT).await,
            "stuck at {}",
            copy.position()
        );
    }
    for copy in &copies {
        copy.stop().await;
    }
    for order in 0..20 {
        let record = store
            .load_saga("fulfilment", &order.to_string())
            .await
            .unwrap()
            .unwrap();
        // `step` counts the transitions: placed, reserved.
        assert_eq!(record.step, 2, "order {order}: {record:?}");
        assert_eq!(record.data["stage"], "charging");
    }
    app.shutdown().await.unwrap();
}

stores::per_backend!(
    two_copies_apply_each_transition_once,
    instances_follow_their_own_events_in_order,
    a_timeout_cancels_the_instance,
    a_restart_continues_without_sending_twice,
);

// --- the fixture: no bus, no store ----------------------------------------------------------------

use eventdriven::testing::ProcessFixture;

#[test]
fn fixture_placing_an_order_reserves_stock_and_sets_a_timeout() {
    let outcome = ProcessFixture::<Fulfilment>::given_no_previous_events()
        .when(FulfilmentEvent::Placed(OrderPlaced { order: 4 }))
        .then_expect_command_names(&["Reserve"])
        .then_expect_continue()
        .then_expect_timeout(true)
        .then_expect_state(|s| assert_eq!((s.order, s.stage.as_str()), (4, "reserving")));
    let reserve = outcome.commands()[0]
        .command
        .downcast_ref::<Reserve>()
        .unwrap();
    assert_eq!(reserve.order, 4);
    assert!(reserve.key.starts_with("fulfilment/4/"));
}

#[test]
fn fixture_reserved_stock_charges_and_clears_the_timeout() {
    let _ =
        ProcessFixture::<Fulfilment>::given([FulfilmentEvent::Placed(OrderPlaced { order: 4 })])
            .when(FulfilmentEvent::Reserved(StockReserved { order: 4 }))
            .then_expect_command_names(&["Charge"])
            .then_expect_timeout(false)
            .then_expect_continue();
}

#[test]
fn fixture_the_timeout_cancels_and_ends() {
    let _ =
        ProcessFixture::<Fulfilment>::given([FulfilmentEvent::Placed(OrderPlaced { order: 4 })])
            .when_timeout()
            .then_expect_command_names(&["Cancel"])
            .then_expect_done()
            .then_expect_state(|s| assert_eq!(s.stage, "cancelled"));
}

#[test]
fn fixture_events_of_other_orders_and_after_the_end_are_passed_over() {
    let _ =
        ProcessFixture::<Fulfilment>::given([FulfilmentEvent::Placed(OrderPlaced { order: 4 })])
            .when(FulfilmentEvent::Reserved(StockReserved { order: 5 }))
            .then_expect_ignored();
    let _ = ProcessFixture::<Fulfilment>::given_no_previous_events()
        .when(FulfilmentEvent::Paid(PaymentCompleted { order: 4 }))
        .then_expect_ignored();
    let _ = ProcessFixture::<Fulfilment>::given([
        FulfilmentEvent::Placed(OrderPlaced { order: 4 }),
        FulfilmentEvent::Paid(PaymentCompleted { order: 4 }),
    ])
    .when(FulfilmentEvent::Reserved(StockReserved { order: 4 }))
    .then_expect_ignored();
}

#[test]
#[should_panic(expected = "other commands than expected")]
fn fixture_reports_other_commands() {
    let _ = ProcessFixture::<Fulfilment>::given_no_previous_events()
        .when(FulfilmentEvent::Placed(OrderPlaced { order: 4 }))
        .then_expect_command_names(&["Charge"]);
}
