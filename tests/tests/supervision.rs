//! Panic isolation: a panicking handler does not take the app down, the actor is rebuilt
//! from its factory and keeps its address, and the message is reported in the dead letters.

use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::Error;

#[derive(Command, Debug)]
#[command(reply = u64)]
struct Add(u64);

#[derive(Event, Clone, Debug, PartialEq)]
struct Poison(u64);

#[derive(Query, Debug)]
#[query(reply = u64)]
struct Total;

/// Panics on `Add(13)` and on `Poison(13)`.
#[derive(Default)]
struct Counter {
    total: u64,
}

#[handlers]
impl Counter {
    #[handle]
    fn add(&mut self, cmd: Add) -> u64 {
        assert_ne!(cmd.0, 13, "unlucky number");
        self.total += cmd.0;
        self.total
    }

    #[subscribe]
    async fn poison(&mut self, ev: &Poison) {
        tokio::task::yield_now().await;
        if ev.0 == 13 {
            panic!("poisoned by {}", ev.0);
        }
        self.total += ev.0;
    }

    #[query]
    fn total(&self, _: Total) -> u64 {
        self.total
    }
}

/// Like `Counter` but not `Default`.
struct Stubborn {
    total: u64,
}

#[handlers]
impl Stubborn {
    #[handle]
    fn add(&mut self, cmd: Add) -> u64 {
        self.total += cmd.0;
        assert_ne!(cmd.0, 13, "unlucky number");
        self.total
    }

    #[query]
    fn total(&self, _: Total) -> u64 {
        self.total
    }
}

async fn settle(app: &App, handled: u64) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while app.stats().actors[0].handled < handled {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("messages handled in time");
}

#[tokio::test]
async fn a_panicking_command_handler_restarts_the_actor_from_default() {
    let app = App::builder()
        .actor(Counter::default())
        .build()
        .await
        .unwrap();
    assert_eq!(app.send(Add(5)).await.unwrap(), 5);

    let err = app.send(Add(13)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoReply {
                actor: "Counter",
                message: "Add"
            }
        ),
        "{err}"
    );

    // Same address, fresh state.
    assert_eq!(app.send(Add(1)).await.unwrap(), 1);
    assert_eq!(app.query(Total).await.unwrap(), 1);

    let letters = app.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].actor, "Counter");
    assert_eq!(letters[0].message, "Add");
    assert!(
        letters[0].error.contains("unlucky number"),
        "{}",
        letters[0].error
    );
    assert_eq!(app.stats().actors[0].panics, 1);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_subscriber_dead_letters_the_event_and_keeps_receiving() {
    let app = App::builder()
        .actor(Counter::default())
        .build()
        .await
        .unwrap();
    app.publish(Poison(2)).await.unwrap();
    app.publish(Poison(13)).await.unwrap();
    app.publish(Poison(3)).await.unwrap();
    settle(&app, 3).await;
    assert_eq!(
        app.query(Total).await.unwrap(),
        3,
        "restarted after the panic, then got 3"
    );

    let letters = app.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].event::<Poison>(),
        Some(&Poison(13)),
        "the event itself is kept"
    );
    assert!(letters[0].error.contains("poisoned by 13"));
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_actor_factory_rebuilds_the_actor() {
    let app = App::builder()
        .actor_factory(|| Stubborn { total: 100 })
        .build()
        .await
        .unwrap();
    assert_eq!(app.send(Add(1)).await.unwrap(), 101);
    assert!(app.send(Add(13)).await.is_err());
    assert_eq!(app.query(Total).await.unwrap(), 100);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_actor_without_factory_resumes_with_its_state() {
    let app = App::builder()
        .actor(Stubborn { total: 0 })
        .build()
        .await
        .unwrap();
    assert_eq!(app.send(Add(1)).await.unwrap(), 1);
    assert!(app.send(Add(13)).await.is_err());
    // The handler added 13 before it panicked; without a factory the state stays as it was.
    assert_eq!(app.query(Total).await.unwrap(), 14);
    app.shutdown().await.unwrap();
}
