//! Store transactions, the relay (the event store as the bus's outbox) and projections, on
//! every backend: all or nothing; every stored event relayed once and in order, resuming from
//! the checkpoint; projections that catch up and follow live appends without skipping or
//! repeating, resume, rebuild while running, retry a failing event without skipping it, and
//! (on SQLite and PostgreSQL) keep exact counts by writing through the batch's transaction.

mod stores;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::projection::{
    Projection, ProjectionContext, ProjectionError, ProjectionState, Projector, Relay,
};
use eventdriven::store::{EventData, ExpectedVersion, Store, StoreError};
use eventdriven::MessageId;
use stores::Harness;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "item.added")]
struct ItemAdded {
    n: u64,
}

/// Stored but subscribed by nobody: the relay passes it over, projections too.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "item.audited")]
struct ItemAudited {
    n: u64,
}

#[derive(Events, Clone, Debug, PartialEq)]
enum ItemEvent {
    Added(ItemAdded),
}

fn added(n: u64) -> EventData {
    EventData::from_event(&ItemAdded { n }).unwrap()
}

/// Appends `ItemAdded` n in `from..to`, one per append, to `streams` streams in turn.
async fn append_items(store: &Store, from: u64, to: u64, streams: u64) -> u64 {
    let mut last = 0;
    for n in from..to {
        let stream = format!("items-{}", n % streams);
        last = store
            .append(&stream, ExpectedVersion::Any, vec![added(n)])
            .await
            .unwrap()
            .last_position;
    }
    last
}

// --- transactions -------------------------------------------------------------------------------

async fn a_transaction_commits_all_or_nothing(h: Harness) {
    let store = h.open().await;
    let id = MessageId::new();

    let mut tx = store.begin().await.unwrap();
    tx.append("tx-a", ExpectedVersion::NoStream, vec![added(1), added(2)])
        .await
        .unwrap();
    tx.save_checkpoint("reader", 2).await.unwrap();
    assert_eq!(tx.load_checkpoint("reader").await.unwrap(), Some(2));
    assert!(tx.record_processed("consumer", id).await.unwrap());
    tx.rollback().await.unwrap();
    assert_eq!(store.stream_version("tx-a").await.unwrap(), 0);
    assert_eq!(store.load_checkpoint("reader").await.unwrap(), None);
    assert!(!store.is_processed("consumer", id).await.unwrap());

    let mut tx = store.begin().await.unwrap();
    let appended = tx
        .append("tx-a", ExpectedVersion::NoStream, vec![added(1), added(2)])
        .await
        .unwrap();
    assert_eq!(appended.version, 2);
    // The transaction sees its own append.
    let conflict = tx
        .append("tx-a", ExpectedVersion::NoStream, vec![added(3)])
        .await;
    assert!(matches!(conflict, Err(StoreError::Conflict(c)) if c.actual == 2));
    tx.append("tx-a", ExpectedVersion::Exact(2), vec![added(3)])
        .await
        .unwrap();
    tx.save_checkpoint("reader", 3).await.unwrap();
    assert!(tx.record_processed("consumer", id).await.unwrap());
    assert!(!tx.record_processed("consumer", id).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(store.stream_version("tx-a").await.unwrap(), 3);
    assert_eq!(store.load_checkpoint("reader").await.unwrap(), Some(3));
    assert!(store.is_processed("consumer", id).await.unwrap());
    let positions: Vec<u64> = store
        .read_all(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    // Positions increase; a rolled-back append may leave a gap (PostgreSQL's sequence).
    assert_eq!(positions.len(), 3);
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // Dropped without a commit: rolled back.
    let mut tx = store.begin().await.unwrap();
    tx.append("tx-b", ExpectedVersion::Any, vec![added(9)])
        .await
        .unwrap();
    drop(tx);
    assert_eq!(store.stream_version("tx-b").await.unwrap(), 0);
}

// --- the relay ----------------------------------------------------------------------------------

/// Records every `ItemAdded` it gets: (n, message id).
struct Collector {
    seen: Arc<Mutex<Vec<(u64, MessageId)>>>,
}

#[handlers]
impl Collector {
    #[subscribe]
    fn added(&mut self, event: &ItemAdded, ctx: &mut Context<Self>) {
        let id = ctx.metadata().id;
        self.seen.lock().unwrap().push((event.n, id));
    }
}

async fn collecting_app() -> (App, Arc<Mutex<Vec<(u64, MessageId)>>>) {
    let seen: Arc<Mutex<Vec<(u64, MessageId)>>> = Arc::default();
    let app = App::builder()
        .actor(Collector { seen: seen.clone() })
        .build()
        .await
        .unwrap();
    (app, seen)
}

async fn the_relay_publishes_every_stored_event_once_in_order_and_resumes(h: Harness) {
    let store = h.open().await;
    append_items(&store, 0, 40, 4).await;
    let audit = EventData::from_event(&ItemAudited { n: 0 }).unwrap();
    store
        .append("audit", ExpectedVersion::Any, vec![audit])
        .await
        .unwrap();
    let (app, seen) = collecting_app().await;
    let relay = Relay::new(store.clone(), &app)
        .batch(7)
        .start()
        .await
        .unwrap();
    // Appends while it runs are relayed too.
    let head = append_items(&store, 40, 60, 4).await;
    assert!(
        relay.wait_for(head, WAIT).await,
        "relay stuck at {}",
        relay.position()
    );
    relay.stop().await;
    app.shutdown().await.unwrap();
    assert_eq!(relay.skipped(), 1, "the audit event has no subscriber");
    let got: Vec<u64> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(got, (0..60).collect::<Vec<_>>());
    // Published with the id it was stored under.
    let stored = store.read_all(0, 1).await.unwrap();
    assert_eq!(seen.lock().unwrap()[0].1, stored[0].metadata.id);

    // A new process: resumes after the checkpoint.
    let (app, seen) = collecting_app().await;
    let head = append_items(&store, 60, 70, 4).await;
    let relay = Relay::new(store.clone(), &app).start().await.unwrap();
    assert!(relay.wait_for(head, WAIT).await);
    relay.stop().await;
    app.shutdown().await.unwrap();
    let got: Vec<u64> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(got, (60..70).collect::<Vec<_>>());
}

/// Handles `ItemAdded` only once the gate opens; fails (for good) on odd numbers.
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    handled: Arc<AtomicU64>,
}

#[handlers]
impl Gated {
    #[subscribe]
    async fn added(&mut self, event: &ItemAdded) -> Result<(), String> {
        let _pass = self.gate.acquire().await.map_err(|e| e.to_string())?;
        if event.n % 2 == 1 {
            return Err(format!("{} is odd", event.n));
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The relay's checkpoint passes an event only once every subscriber is done with it
/// (handled or dead-lettered): a crash before that must deliver it again.
async fn the_relay_checkpoints_only_what_subscribers_are_done_with(h: Harness) {
    let store = h.open().await;
    let head = append_items(&store, 0, 4, 1).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let handled = Arc::new(AtomicU64::new(0));
    let app = App::builder()
        .actor(Gated {
            gate: gate.clone(),
            handled: handled.clone(),
        })
        .build()
        .await
        .unwrap();
    let relay = Relay::new(store.clone(), &app).start().await.unwrap();
    // Published and queued, not handled: the checkpoint stays.
    assert!(!relay.wait_for(1, Duration::from_millis(300)).await);
    assert_eq!(store.load_checkpoint("relay").await.unwrap(), None);
    gate.add_permits(1_000);
    assert!(
        relay.wait_for(head, WAIT).await,
        "stuck at {}",
        relay.position()
    );
    relay.stop().await;
    app.shutdown().await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 2);
    // The odd ones are in the dead letters: done as far as the relay is concerned.
    assert_eq!(app.dead_letters().len(), 2);
}

// --- projections --------------------------------------------------------------------------------

/// Keeps every `n` it applied, in order (in memory: at-least-once); fails once at `fail_at`.
#[derive(Clone, Default)]
struct Seen {
    applied: Arc<Mutex<Vec<u64>>>,
    positions: Arc<Mutex<Vec<u64>>>,
    fail_at: Arc<AtomicU64>,
}

impl Projection for Seen {
    type Event = ItemEvent;

    fn name(&self) -> &str {
        "seen"
    }

    async fn apply(
        &mut self,
        event: ItemEvent,
        ctx: &mut ProjectionContext<'_>,
    ) -> Result<(), ProjectionError> {
        let ItemEvent::Added(added) = event;
        if added.n == self.fail_at.load(Ordering::SeqCst) {
            self.fail_at.store(u64::MAX, Ordering::SeqCst);
            return Err(ProjectionError::new(format!("cannot apply {}", added.n)));
        }
        self.applied.lock().unwrap().push(added.n);
        self.positions.lock().unwrap().push(ctx.stored().position);
        Ok(())
    }

    async fn reset(&mut self, _: &mut ProjectionContext<'_>) -> Result<(), ProjectionError> {
        self.applied.lock().unwrap().clear();
        self.positions.lock().unwrap().clear();
        Ok(())
    }
}

impl Seen {
    fn new() -> Self {
        let seen = Self::default();
        seen.fail_at.store(u64::MAX, Ordering::SeqCst);
        seen
    }

    fn applied(&self) -> Vec<u64> {
        self.applied.lock().unwrap().clone()
    }
}

async fn a_projection_catches_up_then_follows_live_appends_exactly_in_order(h: Harness) {
    let store = h.open().await;
    append_items(&store, 0, 120, 3).await;
    let seen = Seen::new();
    let handle = Projector::new(store.clone())
        .batch(50)
        .start(seen.clone())
        .await
        .unwrap();
    // Four writers while it catches up.
    let mut writers = Vec::new();
    for w in 0..4_u64 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                let n = 1_000 + w * 100 + i;
                store
                    .append(&format!("w-{w}"), ExpectedVersion::Any, vec![added(n)])
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    }
    let head = store.head().await.unwrap();
    assert!(handle.wait_for(head, WAIT).await, "{:?}", handle.status());
    let positions = seen.positions.lock().unwrap().clone();
    assert_eq!(positions.len(), 320);
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated"
    );
    let stored: Vec<u64> = store
        .read_all(0, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(positions, stored, "every stored event, once");
    let status = handle.status();
    assert_eq!((status.position, status.applied), (head, 320));
    assert!(
        handle
            .wait_until(WAIT, |s| s.state == ProjectionState::Live)
            .await
    );
    handle.stop().await;
    assert_eq!(handle.status().state, ProjectionState::Stopped);
}

async fn a_projection_resumes_from_its_checkpoint(h: Harness) {
    let store = h.open().await;
    let head = append_items(&store, 0, 30, 2).await;
    let first = Seen::new();
    let handle = Projector::new(store.clone())
        .start(first.clone())
        .await
        .unwrap();
    assert!(handle.wait_for(head, WAIT).await);
    handle.stop().await;
    assert_eq!(store.load_checkpoint("seen").await.unwrap(), Some(head));

    let head = append_items(&store, 30, 45, 2).await;
    let second = Seen::new();
    let handle = Projector::new(h.open().await)
        .start(second.clone())
        .await
        .unwrap();
    assert!(handle.wait_for(head, WAIT).await);
    handle.stop().await;
    assert_eq!(second.applied(), (30..45).collect::<Vec<_>>());
}

async fn a_projection_rebuilds_while_running(h: Harness) {
    let store = h.open().await;
    let head = append_items(&store, 0, 200, 5).await;
    let seen = Seen::new();
    let handle = Projector::new(store.clone())
        .batch(20)
        .start(seen.clone())
        .await
        .unwrap();
    assert!(handle.wait_for(head, WAIT).await);
    handle.rebuild().await.unwrap();
    // The replay: every event applied a second time.
    assert!(handle.wait_for(head, WAIT).await, "{:?}", handle.status());
    assert_eq!(handle.status().applied, 400);
    // Appends during the rebuild are applied after the replay, in order.
    let head = append_items(&store, 200, 220, 5).await;
    assert!(handle.wait_for(head, WAIT).await, "{:?}", handle.status());
    handle.stop().await;
    assert_eq!(seen.applied(), (0..220).collect::<Vec<_>>());
    assert_eq!(handle.status().applied, 200 + 220);
}

async fn a_failing_event_is_retried_never_skipped(h: Harness) {
    let store = h.open().await;
    let head = append_items(&store, 0, 20, 2).await;
    let seen = Seen::new();
    seen.fail_at.store(7, Ordering::SeqCst);
    let handle = Projector::new(store.clone())
        .batch(4)
        .start(seen.clone())
        .await
        .unwrap();
    assert!(handle.wait_for(head, WAIT).await, "{:?}", handle.status());
    handle.stop().await;
    // The batch with 7 rolled back and ran again: 4, 5, 6 are applied again in memory
    // (at-least-once), but nothing is missing and the order holds.
    let applied = seen.applied();
    let mut unique = applied.clone();
    unique.dedup();
    let expected: Vec<u64> = (0..20).collect();
    let mut sorted = applied.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, expected, "{applied:?}");
    assert!(applied.len() >= 20);
}

/// A state-stored handler's outbox: the event is stored with the handler's writes, and relayed
/// only if they committed.
async fn the_outbox_relays_only_what_committed(h: Harness) {
    let store = h.open().await;
    let (app, seen) = collecting_app().await;
    let relay = Relay::new(store.clone(), &app).start().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    tx.enqueue(&ItemAdded { n: 1 }, Metadata::new())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let meta = Metadata::new();
    let id = meta.id;
    tx.enqueue(&ItemAdded { n: 2 }, meta).await.unwrap();
    tx.commit().await.unwrap();

    let head = store.head().await.unwrap();
    assert!(relay.wait_for(head, WAIT).await);
    relay.stop().await;
    app.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(2, id)]);
    assert_eq!(
        store
            .stream_version(eventdriven::store::OUTBOX_STREAM)
            .await
            .unwrap(),
        1
    );
}

stores::per_backend!(
    the_relay_checkpoints_only_what_subscribers_are_done_with,
    the_outbox_relays_only_what_committed,
    a_transaction_commits_all_or_nothing,
    the_relay_publishes_every_stored_event_once_in_order_and_resumes,
    a_projection_catches_up_then_follows_live_appends_exactly_in_order,
    a_projection_resumes_from_its_checkpoint,
    a_projection_rebuilds_while_running,
    a_failing_event_is_retried_never_skipped,
);

// --- exactly once: a read model written through the batch's transaction --------------------------

/// Counts and sums the items in a table of the store's own database, through the batch's
/// transaction; fails once at `fail_at` after writing (the write must roll back with it).
#[derive(Clone, Default)]
struct Totals {
    fail_at: Arc<AtomicU64>,
}

/// Runs one statement on the transaction's connection, whichever SQL backend it is.
async fn execute(tx: &mut eventdriven::store::StoreTx, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if let Some(conn) = tx.sqlite() {
        sqlx::query(sql).execute(conn).await.unwrap();
        return;
    }
    #[cfg(feature = "postgres")]
    if let Some(conn) = tx.postgres() {
        sqlx::query(sql).execute(conn).await.unwrap();
        return;
    }
    panic!("the read model needs a SQL backend");
}

/// The one row of totals: (count, sum).
async fn totals(store: &Store) -> (i64, i64) {
    let mut tx = store.begin().await.unwrap();
    let sql = "SELECT count, total FROM item_totals WHERE id = 1";
    let row: (i64, i64) = if let Some(conn) = tx.sqlite() {
        sqlx::query_as(sql).fetch_one(conn).await.unwrap()
    } else {
        #[cfg(feature = "postgres")]
        {
            sqlx::query_as(sql)
                .fetch_one(tx.postgres().unwrap())
                .await
                .unwrap()
        }
        #[cfg(not(feature = "postgres"))]
        unreachable!()
    };
    tx.rollback().await.unwrap();
    row
}

impl Projection for Totals {
    type Event = ItemEvent;

    fn name(&self) -> &str {
        "totals"
    }

    async fn apply(
        &mut self,
        event: ItemEvent,
        ctx: &mut ProjectionContext<'_>,
    ) -> Result<(), ProjectionError> {
        let ItemEvent::Added(added) = event;
        let sql = format!(
            "UPDATE item_totals SET count = count + 1, total = total + {} WHERE id = 1",
            added.n
        );
        execute(ctx.tx(), &sql).await;
        if added.n == self.fail_at.load(Ordering::SeqCst) {
            self.fail_at.store(u64::MAX, Ordering::SeqCst);
            return Err(ProjectionError::new("failed after writing"));
        }
        Ok(())
    }

    async fn reset(&mut self, ctx: &mut ProjectionContext<'_>) -> Result<(), ProjectionError> {
        execute(
            ctx.tx(),
            "UPDATE item_totals SET count = 0, total = 0 WHERE id = 1",
        )
        .await;
        Ok(())
    }
}

async fn a_read_model_written_through_the_transaction_counts_exactly(h: Harness) {
    let store = h.open().await;
    let mut tx = store.begin().await.unwrap();
    execute(
        &mut tx,
        "CREATE TABLE item_totals (id BIGINT PRIMARY KEY, count BIGINT NOT NULL, total BIGINT NOT NULL)",
    )
    .await;
    execute(&mut tx, "INSERT INTO item_totals VALUES (1, 0, 0)").await;
    tx.commit().await.unwrap();

    let head = append_items(&store, 0, 100, 3).await;
    let projection = Totals::default();
    projection.fail_at.store(37, Ordering::SeqCst);
    let handle = Projector::new(store.clone())
        .batch(10)
        .start(projection)
        .await
        .unwrap();
    assert!(handle.wait_for(head, WAIT).await, "{:?}", handle.status());
    // The failed batch's writes rolled back with it and ran again once: exact.
    assert_eq!(totals(&store).await, (100, (0..100).sum::<i64>()));

    handle.rebuild().await.unwrap();
    assert!(handle.wait_for(head, WAIT).await);
    handle.stop().await;
    assert_eq!(totals(&store).await, (100, (0..100).sum::<i64>()));

    // Two copies of the projection at once (two processes, or a restart overlapping the old
    // one): each event is still applied once.
    let head = append_items(&store, 100, 300, 3).await;
    let copies = [
        Projector::new(store.clone())
            .batch(7)
            .start(Totals::default())
            .await
            .unwrap(),
        Projector::new(h.open().await)
            .batch(5)
            .start(Totals::default())
            .await
            .unwrap(),
    ];
    for copy in &copies {
        assert!(copy.wait_for(head, WAIT).await, "{:?}", copy.status());
    }
    for copy in &copies {
        copy.stop().await;
    }
    assert_eq!(totals(&store).await, (300, (0..300).sum::<i64>()));
}

/// The read model needs SQL: SQLite and PostgreSQL only.
mod exactly_once {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        crate::stores::run(
            crate::stores::Kind::Sqlite,
            super::a_read_model_written_through_the_transaction_counts_exactly,
        )
        .await;
    }

    #[cfg(feature = "postgres")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        crate::stores::run(
            crate::stores::Kind::Postgres,
            super::a_read_model_written_through_the_transaction_counts_exactly,
        )
        .await;
    }
}
