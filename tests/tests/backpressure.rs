//! Backpressure: bounded mailboxes, waiting and `Full`, all-or-nothing fan-out, no deadlock on
//! self-publish, and cycles that end in a timeout instead of a hang.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::Error;
use tokio::sync::Semaphore;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Event, Clone, Debug)]
struct Tick(u64);

/// Blocks in its handler until the test hands out a permit, then counts what it received.
struct Gated {
    gate: Arc<Semaphore>,
    seen: Arc<Mutex<Vec<u64>>>,
}

#[handlers]
impl Gated {
    #[subscribe]
    async fn on_tick(&mut self, ev: &Tick) {
        self.gate.acquire().await.expect("gate open").forget();
        self.seen.lock().unwrap().push(ev.0);
    }
}

/// Never blocks; records what it received.
struct Recorder {
    seen: Arc<Mutex<Vec<u64>>>,
}

#[handlers]
impl Recorder {
    #[subscribe]
    fn on_tick(&mut self, ev: &Tick) {
        self.seen.lock().unwrap().push(ev.0);
    }
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(LIMIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_waits_while_a_subscriber_mailbox_is_full() {
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = App::builder()
        .actor_with(
            Gated {
                gate: gate.clone(),
                seen: seen.clone(),
            },
            Mailbox::bounded(2),
        )
        .build()
        .await
        .unwrap();

    // One event in the handler (blocked on the gate), two fill the mailbox.
    for n in 0..3 {
        app.publish(Tick(n)).await.unwrap();
    }
    wait_until(|| app.stats().actors[0].queued == 2).await;

    let publisher = tokio::spawn({
        let app = app.clone();
        async move { app.publish(Tick(3)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !publisher.is_finished(),
        "publish must wait while the mailbox is full"
    );

    gate.add_permits(4);
    tokio::time::timeout(LIMIT, publisher)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    wait_until(|| seen.lock().unwrap().len() == 4).await;
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(app.stats().actors[0].peak, 2);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_publish_into_a_full_mailbox_delivers_to_no_subscriber() {
    let gate = Arc::new(Semaphore::new(0));
    let gated_seen = Arc::new(Mutex::new(Vec::new()));
    let free_seen = Arc::new(Mutex::new(Vec::new()));
    let app = App::builder()
        .actor_with(
            Recorder {
                seen: free_seen.clone(),
            },
            Mailbox::bounded(64),
        )
        .actor_with(
            Gated {
                gate: gate.clone(),
                seen: gated_seen.clone(),
            },
            Mailbox::bounded(1),
        )
        .build()
        .await
        .unwrap();

    app.publish(Tick(0)).await.unwrap(); // taken by the gated handler
    wait_until(|| app.stats().actors[1].queued == 0 && app.stats().actors[0].handled == 1).await;
    app.try_publish(Tick(1)).unwrap(); // fills the gated mailbox
    let rejected = app.try_publish(Tick(2)).unwrap_err();
    assert!(rejected.is_full(), "{rejected}");
    assert!(matches!(
        rejected.error,
        Error::Full {
            actor: "Gated",
            message: "Tick"
        }
    ));
    assert_eq!(rejected.into_inner().0, 2, "the event is handed back");

    gate.add_permits(2);
    wait_until(|| gated_seen.lock().unwrap().len() == 2).await;
    app.shutdown().await.unwrap();
    // The subscriber with room did not get the rejected event either.
    assert_eq!(*free_seen.lock().unwrap(), vec![0, 1]);
    assert_eq!(*gated_seen.lock().unwrap(), vec![0, 1]);
}

/// Checks order and completeness as it goes.
struct InOrder {
    next: u64,
    out_of_order: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

#[handlers]
impl InOrder {
    #[subscribe]
    fn on_tick(&mut self, ev: &Tick) {
        if ev.0 != self.next {
            self.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        self.next = ev.0 + 1;
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_events_through_four_small_mailboxes_arrive_complete_and_in_order() {
    const EVENTS: u64 = 1_000_000;
    const CAPACITY: usize = 16;
    let out_of_order = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut builder = App::builder();
    for _ in 0..4 {
        builder = builder.actor_with(
            InOrder {
                next: 0,
                out_of_order: out_of_order.clone(),
                received: received.clone(),
            },
            Mailbox::bounded(CAPACITY),
        );
    }
    let app = builder.build().await.unwrap();
    tokio::time::timeout(LIMIT * 5, async {
        for n in 0..EVENTS {
            app.publish(Tick(n)).await.unwrap();
        }
        app.shutdown().await.unwrap();
    })
    .await
    .expect("a million events within the limit");

    assert_eq!(received.load(Ordering::Relaxed), 4 * EVENTS);
    assert_eq!(out_of_order.load(Ordering::Relaxed), 0);
    for actor in app.stats().actors {
        assert_eq!(actor.handled, EVENTS);
        assert!(actor.peak <= CAPACITY, "{actor:?}");
        assert!(actor.peak > 0, "the mailboxes were used: {actor:?}");
    }
}

#[derive(Command, Debug)]
struct Loop {
    rounds: u64,
}

#[derive(Command, Debug)]
struct Filler;

#[derive(Event, Clone, Debug)]
struct Echo(#[allow(dead_code)] u64);

#[derive(Query, Debug)]
#[query(reply = (u64, u64))]
struct Echoes;

/// Publishes events it subscribes to itself while its own mailbox is full.
struct SelfPublisher {
    mailbox_full: Arc<Semaphore>,
    echoes: u64,
    fillers: u64,
}

#[handlers]
impl SelfPublisher {
    #[handle]
    async fn start(&mut self, cmd: Loop, ctx: &mut Context<Self>) {
        // Wait until the test saw our mailbox full, then publish to ourselves.
        self.mailbox_full.acquire().await.expect("open").forget();
        for n in 0..cmd.rounds {
            ctx.publish(Echo(n))
                .await
                .expect("publishing to oneself never blocks");
        }
    }

    #[handle]
    fn fill(&mut self, _: Filler) {
        self.fillers += 1;
    }

    #[subscribe]
    fn echo(&mut self, _: &Echo) {
        self.echoes += 1;
    }

    #[query]
    fn echoes(&self, _: Echoes) -> (u64, u64) {
        (self.echoes, self.fillers)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_oneself_with_a_full_mailbox_does_not_deadlock() {
    let mailbox_full = Arc::new(Semaphore::new(0));
    let app = App::builder()
        .actor_with(
            SelfPublisher {
                mailbox_full: mailbox_full.clone(),
                echoes: 0,
                fillers: 0,
            },
            Mailbox::bounded(1),
        )
        .build()
        .await
        .unwrap();
    app.tell(Loop { rounds: 10 }).await.unwrap();
    wait_until(|| app.stats().actors[0].queued == 0).await;
    app.tell(Filler).await.unwrap();
    assert_eq!(app.stats().actors[0].queued, 1, "the mailbox is full");
    mailbox_full.add_permits(1);
    let (echoes, fillers) = tokio::time::timeout(LIMIT, async {
        loop {
            let counts = app.query(Echoes).await.unwrap();
            if counts.0 == 10 {
                break counts;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("no deadlock");
    assert_eq!((echoes, fillers), (10, 1));
    app.shutdown().await.unwrap();
}

#[derive(Command, Debug)]
struct Go;

#[derive(Event, Clone, Debug)]
struct ToA;

#[derive(Event, Clone, Debug)]
struct ToB;

type Outcomes = Arc<Mutex<Vec<(&'static str, String)>>>;

/// Half of a cycle: on `Go` (A) or `ToB` (B) it publishes to the other side.
struct Side {
    gate: Arc<Semaphore>,
    outcomes: Outcomes,
    name: &'static str,
}

struct SideA(Side);
struct SideB(Side);

impl Side {
    async fn forward(&self, publish: impl std::future::Future<Output = eventdriven::Result<()>>) {
        let result = publish.await;
        let text = match result {
            Ok(()) => "delivered".to_owned(),
            Err(e) => e.to_string(),
        };
        self.outcomes.lock().unwrap().push((self.name, text));
    }
}

#[handlers]
impl SideA {
    #[handle]
    async fn go(&mut self, _: Go, ctx: &mut Context<Self>) {
        self.0.gate.acquire().await.expect("open").forget();
        let publish = ctx.publish(ToB);
        self.0.forward(publish).await;
    }

    #[subscribe]
    fn on_a(&mut self, _: &ToA) {}
}

#[handlers]
impl SideB {
    #[subscribe]
    async fn on_b(&mut self, _: &ToB, ctx: &mut Context<Self>) {
        self.0.gate.acquire().await.expect("open").forget();
        let publish = ctx.publish(ToA);
        self.0.forward(publish).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_cycle_between_full_mailboxes_ends_in_a_send_timeout() {
    let gate = Arc::new(Semaphore::new(0));
    let outcomes: Outcomes = Arc::default();
    let side = |name| Side {
        gate: gate.clone(),
        outcomes: outcomes.clone(),
        name,
    };
    let app = App::builder()
        .actor_with(SideA(side("A")), Mailbox::bounded(1))
        .actor_with(SideB(side("B")), Mailbox::bounded(1))
        .send_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();

    // A handles `Go` (waiting at the gate) with `ToA` filling its mailbox; B handles one
    // `ToB` with another filling its mailbox. Then both publish into the other's full mailbox.
    app.tell(Go).await.unwrap();
    app.publish(ToB).await.unwrap();
    wait_until(|| app.stats().actors.iter().all(|a| a.queued == 0)).await;
    app.publish(ToA).await.unwrap();
    app.publish(ToB).await.unwrap();
    gate.add_permits(2);

    wait_until(|| outcomes.lock().unwrap().len() == 2).await;
    // The first wait to time out breaks the cycle: that handler ends, its actor takes the next
    // message and makes room, so the other side may still deliver. Nobody hangs.
    let outcomes = outcomes.lock().unwrap().clone();
    let timeouts = outcomes
        .iter()
        .filter(|(_, text)| text.starts_with("timed out after 200ms delivering"))
        .count();
    assert!(timeouts >= 1, "{outcomes:?}");
    for (side, text) in &outcomes {
        assert!(
            text == "delivered" || text.starts_with("timed out"),
            "{side}: {text}"
        );
    }
    gate.add_permits(10);
    app.shutdown().await.unwrap();
}
