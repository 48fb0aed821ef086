//! Aggregates on every store backend: loading, commands, conflicts and their retries,
//! snapshots (and falling back to replay when they no longer fit), upcasting, publishing after
//! the commit, and the test fixture. One suite, instantiated per backend at the bottom.

mod stores;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::aggregate::{
    stream_name, Aggregate, Events, Repository, RepositoryError, Upcasters, STREAM_HEADER,
    VERSION_HEADER,
};
use eventdriven::prelude::*;
use eventdriven::store::{EventData, ExpectedVersion, Snapshot, StoreError};
use eventdriven::testing::AggregateFixture;
use eventdriven::{MessageId, Timestamp};
use serde_json::json;
use stores::Harness;

// ---------------------------------------------------------------------------------------------
// The account of the seeds.

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "account.opened")]
struct AccountOpened {
    owner: String,
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "account.deposited")]
struct MoneyDeposited {
    amount: u64,
}

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "account.withdrawn")]
struct MoneyWithdrawn {
    amount: u64,
}

#[derive(Events, Clone, Debug, PartialEq)]
enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
}

#[derive(Clone, Debug)]
enum AccountCommand {
    Open { owner: String },
    Deposit(u64),
    Withdraw(u64),
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

#[derive(Default, Debug, Serialize, Deserialize)]
struct Account {
    owner: Option<String>,
    balance: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match (command, &self.owner) {
            (AccountCommand::Open { .. }, Some(_)) => Err(AccountError::AlreadyOpen),
            (AccountCommand::Open { owner }, None) => Ok(vec![AccountOpened { owner }.into()]),
            (_, None) => Err(AccountError::NotOpen),
            (AccountCommand::Deposit(amount), Some(_)) => {
                Ok(vec![MoneyDeposited { amount }.into()])
            }
            (AccountCommand::Withdraw(amount), Some(_)) if amount > self.balance => {
                Err(AccountError::InsufficientFunds {
                    balance: self.balance,
                    requested: amount,
                })
            }
            (AccountCommand::Withdraw(amount), Some(_)) => {
                Ok(vec![MoneyWithdrawn { amount }.into()])
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened(e) => self.owner = Some(e.owner.clone()),
            AccountEvent::Deposited(e) => self.balance += e.amount,
            AccountEvent::Withdrawn(e) => self.balance -= e.amount,
        }
    }
}

/// The same account with a changed snapshot schema (its state gained a field, say).
#[derive(Default, Debug, Serialize, Deserialize)]
struct AccountV2(Account);

impl Aggregate for AccountV2 {
    const TYPE: &'static str = "account";
    const SNAPSHOT_VERSION: u32 = 2;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        self.0.handle(command)
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.0.apply(event)
    }
}

fn open(owner: &str) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The suite.

async fn commands_commit_and_refusals_store_nothing(h: Harness) {
    let store = h.open().await;
    let repo = Repository::<Account>::new(store.clone());
    let committed = repo.execute("a1", open("ada")).await.unwrap();
    assert_eq!((committed.version, committed.attempts), (1, 1));
    repo.execute("a1", AccountCommand::Deposit(100))
        .await
        .unwrap();
    let refused = repo.execute("a1", AccountCommand::Withdraw(250)).await;
    assert!(matches!(
        refused,
        Err(RepositoryError::Rejected(AccountError::InsufficientFunds {
            balance: 100,
            requested: 250
        }))
    ));
    let committed = repo
        .execute("a1", AccountCommand::Withdraw(30))
        .await
        .unwrap();
    assert_eq!(committed.events, vec![MoneyWithdrawn { amount: 30 }.into()]);
    assert_eq!(committed.version, 3);
    // Where a reader of the store must get to to have seen it.
    assert_eq!(committed.position, store.head().await.unwrap());

    let loaded = repo.load("a1").await.unwrap();
    assert_eq!(loaded.state.balance, 70);
    assert_eq!(
        (loaded.version, loaded.replayed, loaded.snapshot),
        (3, 3, None)
    );
    assert_eq!(store.stream_version("account-a1").await.unwrap(), 3);
    let names: Vec<String> = store
        .read_stream("account-a1", 1, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        ["account.opened", "account.deposited", "account.withdrawn"]
    );

    assert!(matches!(
        repo.execute("nobody", AccountCommand::Deposit(1)).await,
        Err(RepositoryError::Rejected(AccountError::NotOpen))
    ));
    assert_eq!(store.stream_version("account-nobody").await.unwrap(), 0);
}

async fn events_are_caused_by_the_command(h: Harness) {
    let store = h.open().await;
    let repo = Repository::<Account>::new(store.clone());
    let cause = Metadata::new();
    repo.execute_caused_by("c1", open("ada"), &cause)
        .await
        .unwrap();
    let stored = store.read_stream("account-c1", 1, 1).await.unwrap();
    assert_eq!(stored[0].metadata.correlation_id, cause.correlation_id);
    assert_eq!(stored[0].metadata.causation_id, Some(cause.id));
    // Each event names its stream and version, for subscribers on the bus too.
    assert_eq!(
        stored[0].metadata.headers.get(STREAM_HEADER),
        Some("account-c1")
    );
    assert_eq!(stored[0].metadata.headers.get(VERSION_HEADER), Some("1"));
}

async fn concurrent_writers_retry_until_all_commit(h: Harness) {
    let store = h.open().await;
    let repo = Repository::<Account>::new(store.clone()).retry_on_conflict(100);
    repo.execute("shared", open("ada")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            let mut retried = 0;
            for _ in 0..10 {
                let c = repo
                    .execute("shared", AccountCommand::Deposit(1))
                    .await
                    .unwrap();
                retried += c.attempts - 1;
            }
            retried
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("writers finish")
            .unwrap();
    }
    let loaded = repo.load("shared").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (80, 81));
}

async fn a_conflict_without_retries_is_returned(h: Harness) {
    let store = h.open().await;
    // Writer B loads, writer A commits, then B's append meets A's event.
    let repo = Repository::<Account>::new(store.clone()).retry_on_conflict(1);
    repo.execute("race", open("ada")).await.unwrap();
    let seen = repo.load("race").await.unwrap().version;
    repo.execute("race", AccountCommand::Deposit(5))
        .await
        .unwrap();
    let late = EventData::from_event(&MoneyDeposited { amount: 7 }).unwrap();
    let err = store
        .append("account-race", ExpectedVersion::Exact(seen), vec![late])
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict(conflict) => {
            assert_eq!(conflict.stream, "account-race");
            assert_eq!(conflict.expected, ExpectedVersion::Exact(1));
            assert_eq!(conflict.actual, 2);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    // Through the repository: tasks racing with one attempt each; at least one loses, and the
    // loser's error says so; the winners' events are all there.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let repo = repo.clone();
        tasks.push(tokio::spawn(async move {
            repo.execute("race", AccountCommand::Deposit(1)).await
        }));
    }
    let (mut won, mut lost) = (0, 0);
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap()
        {
            Ok(_) => won += 1,
            Err(RepositoryError::Conflict { attempts, .. }) => {
                assert_eq!(attempts, 1);
                lost += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won + lost, 8);
    assert!(won >= 1);
    assert_eq!(repo.load("race").await.unwrap().state.balance, 5 + won);
}

async fn snapshots_are_taken_and_used(h: Harness) {
    let store = h.open().await;
    let repo = Repository::<Account>::new(store.clone()).snapshot_every(10);
    let mut snapshots = Vec::new();
    let committed = repo.execute("s1", open("ada")).await.unwrap();
    assert!(!committed.snapshot_taken);
    for _ in 0..24 {
        let c = repo
            .execute("s1", AccountCommand::Deposit(2))
            .await
            .unwrap();
        if c.snapshot_taken {
            snapshots.push(c.version);
        }
    }
    assert_eq!(snapshots, [10, 20]);
    let snapshot = store.load_snapshot("account-s1").await.unwrap().unwrap();
    assert_eq!((snapshot.version, snapshot.schema_version), (20, 1));

    let loaded = repo.load("s1").await.unwrap();
    assert_eq!(loaded.snapshot, Some(20));
    assert_eq!(loaded.replayed, 5);
    assert_eq!((loaded.state.balance, loaded.version), (48, 25));

    // Without snapshots configured the same stream replays in full, to the same state.
    let plain = Repository::<Account>::new(store.clone())
        .load("s1")
        .await
        .unwrap();
    assert_eq!(
        (plain.snapshot, plain.replayed, plain.state.balance),
        (None, 25, 48)
    );

    // A new snapshot schema: the old snapshot is ignored, not an error.
    let v2 = Repository::<AccountV2>::new(store.clone()).snapshot_every(10);
    let loaded = v2.load("s1").await.unwrap();
    assert_eq!(
        (loaded.snapshot, loaded.replayed, loaded.state.0.balance),
        (None, 25, 48)
    );

    // A snapshot whose state no longer decodes: also a full replay.
    store
        .save_snapshot(Snapshot {
            stream: "account-s1".into(),
            version: 25,
            schema_version: 1,
            state: json!({ "balance": "not a number" }),
            taken_at: Timestamp::now(),
        })
        .await
        .unwrap();
    let loaded = repo.load("s1").await.unwrap();
    assert_eq!(
        (loaded.snapshot, loaded.replayed, loaded.state.balance),
        (None, 25, 48)
    );
}

async fn committed_events_are_published_after_the_commit(h: Harness) {
    let store = h.open().await;
    let seen: Arc<Mutex<Vec<(u64, MessageId)>>> = Arc::default();
    let log = seen.clone();
    let app = App::builder()
        .subscriber(Ledger { log })
        .build()
        .await
        .unwrap();
    let repo = Repository::<Account>::new(store.clone()).publish_to(app.clone());
    let cause = Metadata::new();
    repo.execute_caused_by("p1", open("ada"), &cause)
        .await
        .unwrap();
    repo.execute_caused_by("p1", AccountCommand::Deposit(9), &cause)
        .await
        .unwrap();
    // A refused command publishes nothing.
    let _ = repo.execute("p1", AccountCommand::Withdraw(1_000)).await;
    app.shutdown().await.unwrap();
    let stored = store.read_stream("account-p1", 1, 10).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(9, stored[1].metadata.id)]);
    assert_eq!(stored[1].metadata.correlation_id, cause.correlation_id);
}

/// A command handled by an actor that keeps accounts in a repository.
#[derive(Command, Debug)]
#[command(reply = Result<u64, String>)]
struct Deposit {
    account: &'static str,
    amount: u64,
}

struct Accounts {
    repo: Repository<Account>,
}

#[handlers]
impl Accounts {
    #[handle]
    async fn deposit(&mut self, cmd: Deposit, ctx: &mut Context<Self>) -> Result<u64, String> {
        let committed = self
            .repo
            .execute_in(ctx, cmd.account, AccountCommand::Deposit(cmd.amount))
            .await
            .map_err(|e| e.to_string())?;
        Ok(committed.state.balance)
    }
}

async fn a_handler_commits_and_publishes_through_its_context(h: Harness) {
    let store = h.open().await;
    let repo = Repository::<Account>::new(store.clone());
    repo.execute("h1", open("ada")).await.unwrap();
    let seen: Arc<Mutex<Vec<(u64, MessageId)>>> = Arc::default();
    let app = App::builder()
        .actor(Accounts { repo })
        .subscriber(Ledger { log: seen.clone() })
        .build()
        .await
        .unwrap();
    let env = Envelope::new(Deposit {
        account: "h1",
        amount: 4,
    });
    let command_id = env.meta.id;
    assert_eq!(app.send_envelope(env).await.unwrap(), Ok(4));
    app.shutdown().await.unwrap();
    let stored = store.read_stream("account-h1", 2, 1).await.unwrap();
    assert_eq!(stored[0].metadata.causation_id, Some(command_id));
    // The subscriber got the event with the id it was stored under.
    assert_eq!(*seen.lock().unwrap(), vec![(4, stored[0].metadata.id)]);
}

struct Ledger {
    log: Arc<Mutex<Vec<(u64, MessageId)>>>,
}

#[handlers]
impl Ledger {
    #[subscribe]
    fn deposited(&mut self, event: &MoneyDeposited, ctx: &mut Context<Self>) {
        let id = ctx.metadata().id;
        self.log.lock().unwrap().push((event.amount, id));
    }
}

async fn unknown_and_newer_events_are_clear_errors(h: Harness) {
    let store = h.open().await;
    let repo = Repository::<Account>::new(store.clone());
    repo.execute("u1", open("ada")).await.unwrap();
    let stranger = EventData::json("account.frozen", 1, &json!({})).unwrap();
    store
        .append("account-u1", ExpectedVersion::Exact(1), vec![stranger])
        .await
        .unwrap();
    let err = repo.load("u1").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::UnknownEvent { name, .. } if name == "account.frozen"),
        "{err}"
    );

    repo.execute("u2", open("ada")).await.unwrap();
    let newer = EventData::json("account.deposited", 7, &json!({ "amount": 1 })).unwrap();
    store
        .append("account-u2", ExpectedVersion::Exact(1), vec![newer])
        .await
        .unwrap();
    let err = repo.load("u2").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaVersion {
                stored: 7,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("register an upcaster"));
}

// Upcasting: the seeds' `OrderCreated`, whose v1 had one address and v2 splits it into a
// shipping and a billing address.

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "order.created", version = 2)]
struct OrderCreated {
    customer: String,
    shipping: String,
    billing: String,
}

#[derive(Events, Clone, Debug, PartialEq)]
enum OrderEvent {
    Created(OrderCreated),
}

#[derive(Default, Debug)]
struct Order {
    created: Option<OrderCreated>,
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = ();
    type Event = OrderEvent;
    type Error = std::convert::Infallible;

    fn handle(&self, _: ()) -> Result<Vec<OrderEvent>, Self::Error> {
        Ok(Vec::new())
    }

    fn apply(&mut self, event: &OrderEvent) {
        let OrderEvent::Created(created) = event;
        self.created = Some(created.clone());
    }
}

fn order_upcasters() -> Upcasters {
    Upcasters::new().add(
        "order.created",
        1,
        |mut v1: serde_json::Value| -> Result<serde_json::Value, String> {
            let object = v1
                .as_object_mut()
                .ok_or("order.created v1 is not an object")?;
            let address = object
                .remove("address")
                .ok_or("order.created v1 has no address")?;
            object.insert("shipping".into(), address.clone());
            object.insert("billing".into(), address);
            Ok(v1)
        },
    )
}

async fn old_events_are_upcast_on_read(h: Harness) {
    let store = h.open().await;
    let v1 = EventData::json(
        "order.created",
        1,
        &json!({ "customer": "ada", "address": "1 Loop Road" }),
    )
    .unwrap();
    store
        .append(
            &stream_name::<Order>("o1"),
            ExpectedVersion::NoStream,
            vec![v1],
        )
        .await
        .unwrap();

    let without = Repository::<Order>::new(store.clone());
    assert!(matches!(
        without.load("o1").await,
        Err(StoreError::SchemaVersion {
            stored: 1,
            current: 2,
            ..
        })
    ));

    let repo = Repository::<Order>::new(store.clone()).upcasters(order_upcasters());
    let order = repo.load("o1").await.unwrap().state.created.unwrap();
    assert_eq!(
        order,
        OrderCreated {
            customer: "ada".into(),
            shipping: "1 Loop Road".into(),
            billing: "1 Loop Road".into(),
        }
    );
    // The store still holds v1: upcasting happens on read.
    let stored = store.read_stream("order-o1", 1, 1).await.unwrap();
    assert_eq!(stored[0].schema_version, 1);

    // A v1 payload the upcaster cannot handle: a clear error naming event and version.
    let broken = EventData::json("order.created", 1, &json!({ "customer": "bob" })).unwrap();
    store
        .append("order-o2", ExpectedVersion::NoStream, vec![broken])
        .await
        .unwrap();
    let err = repo.load("o2").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "upcasting `order.created` from schema version 1 failed: order.created v1 has no address"
    );
}

stores::per_backend!(
    commands_commit_and_refusals_store_nothing,
    events_are_caused_by_the_command,
    concurrent_writers_retry_until_all_commit,
    a_conflict_without_retries_is_returned,
    snapshots_are_taken_and_used,
    committed_events_are_published_after_the_commit,
    unknown_and_newer_events_are_clear_errors,
    old_events_are_upcast_on_read,
    a_handler_commits_and_publishes_through_its_context,
);

// ---------------------------------------------------------------------------------------------
// The fixture (no store).

#[test]
fn fixture_accepts_a_deposit_on_an_open_account() {
    let state = AggregateFixture::<Account>::given([AccountOpened {
        owner: "ada".into(),
    }
    .into()])
    .when(AccountCommand::Deposit(10))
    .then_expect_events([MoneyDeposited { amount: 10 }.into()]);
    assert_eq!(state.balance, 10);
}

#[test]
fn fixture_refuses_an_overdraft() {
    AggregateFixture::<Account>::given([
        AccountOpened {
            owner: "ada".into(),
        }
        .into(),
        MoneyDeposited { amount: 5 }.into(),
    ])
    .when(AccountCommand::Withdraw(6))
    .then_expect_error(AccountError::InsufficientFunds {
        balance: 5,
        requested: 6,
    });
}

#[test]
fn fixture_refuses_commands_on_a_new_account() {
    AggregateFixture::<Account>::given_no_previous_events()
        .when(AccountCommand::Deposit(1))
        .then_expect_error_matching(|e| *e == AccountError::NotOpen);
}

#[test]
#[should_panic(expected = "the command produced other events than expected")]
fn fixture_reports_other_events() {
    AggregateFixture::<Account>::given([AccountOpened {
        owner: "ada".into(),
    }
    .into()])
    .when(AccountCommand::Deposit(10))
    .then_expect_events([MoneyDeposited { amount: 11 }.into()]);
}

#[test]
#[should_panic(expected = "but the command was refused: the account is not open")]
fn fixture_reports_a_refusal_where_events_were_expected() {
    AggregateFixture::<Account>::given_no_previous_events()
        .when(AccountCommand::Deposit(10))
        .then_expect_events([MoneyDeposited { amount: 10 }.into()]);
}

#[test]
fn events_report_their_name_and_version() {
    let event: AccountEvent = MoneyWithdrawn { amount: 1 }.into();
    assert_eq!(
        (event.name(), event.schema_version()),
        ("account.withdrawn", 1)
    );
}
