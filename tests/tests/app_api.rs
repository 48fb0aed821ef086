//! The app's API: build-time routing checks, missing handlers, `try_*` forms, timeouts,
//! free subscribers and draining shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::Error;
use tokio::sync::Semaphore;

#[derive(Command, Debug)]
#[command(reply = Result<u64, String>, name = "account.withdraw")]
struct Withdraw(u64);

#[derive(Query, Debug)]
#[query(reply = u64)]
struct Balance;

#[derive(Event, Clone, Debug)]
#[event(name = "account.withdrawn", version = 3)]
struct Withdrawn(u64);

#[derive(Command, Debug)]
struct Unhandled;

struct Account {
    balance: u64,
    gate: Arc<Semaphore>,
}

impl Account {
    fn new(balance: u64) -> Self {
        Self {
            balance,
            gate: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        }
    }
}

#[handlers]
impl Account {
    #[handle]
    async fn withdraw(&mut self, cmd: Withdraw, ctx: &mut Context<Self>) -> Result<u64, String> {
        self.gate
            .acquire()
            .await
            .map_err(|e| e.to_string())?
            .forget();
        if cmd.0 > self.balance {
            return Err(format!("insufficient funds: {} > {}", cmd.0, self.balance));
        }
        self.balance -= cmd.0;
        ctx.publish(Withdrawn(cmd.0))
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.balance)
    }

    #[query]
    fn balance(&self, _: Balance) -> u64 {
        self.balance
    }
}

/// A second handler for the same command.
struct Impostor;

#[handlers]
impl Impostor {
    #[handle]
    fn withdraw(&mut self, _: Withdraw) -> Result<u64, String> {
        Err("impostor".into())
    }
}

static AUDITED: AtomicU64 = AtomicU64::new(0);

/// A free subscriber.
#[subscribe]
async fn audit(ev: &Withdrawn, ctx: &mut Context) -> anyhow::Result<()> {
    anyhow::ensure!(ctx.metadata().causation_id.is_some(), "caused by a command");
    AUDITED.fetch_add(ev.0, Ordering::SeqCst);
    Ok(())
}

#[test]
fn names_and_versions_are_available_at_run_time() {
    assert_eq!(<Withdraw as Message>::NAME, "account.withdraw");
    assert_eq!(<Withdrawn as Message>::NAME, "account.withdrawn");
    assert_eq!(<Withdrawn as Message>::VERSION, 3);
    assert_eq!(<Balance as Message>::NAME, "Balance");
    assert_eq!(<Balance as Message>::VERSION, 1);
}

#[tokio::test]
async fn commands_queries_events_and_free_subscribers() {
    let app = App::builder()
        .actor(Account::new(100))
        .subscriber(audit)
        .build()
        .await
        .unwrap();
    assert_eq!(app.send(Withdraw(30)).await.unwrap(), Ok(70));
    assert_eq!(
        app.send(Withdraw(100)).await.unwrap(),
        Err("insufficient funds: 100 > 70".to_owned())
    );
    assert_eq!(app.query(Balance).await.unwrap(), 70);
    app.shutdown().await.unwrap();
    assert_eq!(AUDITED.load(Ordering::SeqCst), 30);
    // The free function is still callable as `audit::call`.
    let _ = audit::call;
}

#[tokio::test]
async fn two_handlers_for_one_command_fail_the_build() {
    let err = App::builder()
        .actor(Account::new(0))
        .actor(Impostor)
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            Error::DuplicateHandler {
                message: "account.withdraw",
                first: "Account",
                second: "Impostor"
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "`account.withdraw` has two handlers, in `Account` and in `Impostor`: a command or query must have exactly one"
    );
}

#[tokio::test]
async fn a_message_without_handler_is_an_error_not_a_hang() {
    let app = App::builder().actor(Account::new(0)).build().await.unwrap();
    let err = app.send(Unhandled).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NoHandler {
                message: "Unhandled"
            }
        ),
        "{err}"
    );
    assert!(matches!(
        app.tell(Unhandled).await,
        Err(Error::NoHandler { .. })
    ));
    let back = app.try_send(Unhandled).err().unwrap();
    assert!(matches!(back.error, Error::NoHandler { .. }));
    // Publishing an event nobody subscribes to is fine: events are facts.
    app.publish(Withdrawn(1)).await.unwrap();
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_zero_capacity_mailbox_is_rejected() {
    let err = App::builder()
        .actor_with(Account::new(0), Mailbox::bounded(0))
        .build()
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_forms_return_full_with_the_message_and_send_timeout_gives_up() {
    let account = Account::new(1000);
    let gate = account.gate.clone();
    gate.forget_permits(Semaphore::MAX_PERMITS);
    let app = App::builder()
        .actor_with(account, Mailbox::bounded(1))
        .build()
        .await
        .unwrap();

    let first = app.try_send(Withdraw(1)).unwrap(); // handled, blocked at the gate
    tokio::time::timeout(Duration::from_secs(30), async {
        while app.stats().actors[0].queued != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    app.try_tell(Withdraw(2)).unwrap(); // fills the mailbox
    let full = app.try_send(Withdraw(3)).err().unwrap();
    assert!(full.is_full());
    assert_eq!(full.into_inner().0, 3);
    assert!(app.try_query(Balance).err().unwrap().is_full());

    let err = app
        .send_timeout(Withdraw(4), Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                actor: "Account",
                message: "account.withdraw",
                ..
            }
        ),
        "{err}"
    );

    gate.add_permits(10);
    assert_eq!(first.await.unwrap(), Ok(999));
    tokio::time::timeout(Duration::from_secs(30), async {
        while app.query(Balance).await.unwrap() != 997 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    app.shutdown().await.unwrap();
}

/// Counts handled messages; each one sends a follow-up until `depth` reaches 0.
struct Relay {
    handled: Arc<AtomicU64>,
}

#[derive(Command, Debug)]
struct Hop(u32);

#[handlers]
impl Relay {
    #[handle]
    async fn hop(&mut self, cmd: Hop, ctx: &mut Context<Self>) {
        tokio::task::yield_now().await;
        self.handled.fetch_add(1, Ordering::SeqCst);
        if cmd.0 > 0 {
            ctx.tell(Hop(cmd.0 - 1)).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_accepted_message_including_follow_ups() {
    let handled = Arc::new(AtomicU64::new(0));
    let app = App::builder()
        .actor_with(
            Relay {
                handled: handled.clone(),
            },
            Mailbox::bounded(8),
        )
        .build()
        .await
        .unwrap();
    for _ in 0..100 {
        app.tell(Hop(3)).await.unwrap();
    }
    app.shutdown().await.unwrap();
    assert_eq!(
        handled.load(Ordering::SeqCst),
        400,
        "100 messages and 3 follow-ups each"
    );
    let err = app.tell(Hop(0)).await.unwrap_err();
    assert!(matches!(err, Error::ShuttingDown { .. }), "{err}");
    assert!(app.dead_letters().is_empty());
}

#[tokio::test]
async fn shutdown_reports_what_it_could_not_drain_in_time() {
    let account = Account::new(10);
    account.gate.forget_permits(Semaphore::MAX_PERMITS);
    let app = App::builder().actor(account).build().await.unwrap();
    app.tell(Withdraw(1)).await.unwrap();
    app.tell(Withdraw(1)).await.unwrap();
    let err = app
        .shutdown_within(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ShutdownTimeout { unhandled: 2, .. }),
        "{err}"
    );
}

#[derive(Event, Clone, Debug, PartialEq)]
enum Light {
    On,
    Off,
}

#[derive(Event, Clone, Debug)]
#[event(name = "reading")]
struct Reading<T>(T);

#[derive(Query, Debug)]
#[query(reply = (Vec<Light>, Vec<u32>, Vec<String>))]
struct Readings;

#[derive(Default)]
struct Panel {
    lights: Vec<Light>,
    numbers: Vec<u32>,
    texts: Vec<String>,
}

#[handlers]
impl Panel {
    #[subscribe]
    fn light(&mut self, ev: &Light) {
        self.lights.push(ev.clone());
    }

    #[subscribe]
    fn number(&mut self, ev: &Reading<u32>) {
        self.numbers.push(ev.0);
    }

    #[subscribe]
    fn text(&mut self, ev: &Reading<String>) {
        self.texts.push(ev.0.clone());
    }

    #[query]
    fn readings(&self, _: Readings) -> (Vec<Light>, Vec<u32>, Vec<String>) {
        (
            self.lights.clone(),
            self.numbers.clone(),
            self.texts.clone(),
        )
    }
}

#[tokio::test]
async fn enums_and_generic_messages_route_by_their_concrete_type() {
    assert_eq!(<Reading<u8> as Message>::NAME, "reading");
    let app = App::builder()
        .actor(Panel::default())
        .build()
        .await
        .unwrap();
    app.publish(Light::On).await.unwrap();
    app.publish(Reading(7u32)).await.unwrap();
    app.publish(Reading("seven".to_owned())).await.unwrap();
    app.publish(Light::Off).await.unwrap();
    app.publish(Reading(7u64)).await.unwrap(); // no subscriber for this one
    let (lights, numbers, texts) = app.query(Readings).await.unwrap();
    assert_eq!(lights, [Light::On, Light::Off]);
    assert_eq!(numbers, [7]);
    assert_eq!(texts, ["seven"]);
    app.shutdown().await.unwrap();
}
