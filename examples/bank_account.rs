//! Event sourcing: a bank account whose state is nothing but its events.
//!
//! The `Account` aggregate decides on commands (`Open`, `Deposit`, `Withdraw`) against its
//! current state and records events (`AccountOpened`, `MoneyDeposited`, `MoneyWithdrawn`); a
//! `Repository` stores them, rebuilds the state by replaying them (or from a snapshot plus
//! the newer ones), guards each commit with the version it loaded, and publishes what it
//! committed on the bus, where a subscriber keeps a running statement. In order it shows:
//! the commands and refusals, a replay, snapshots, a concurrency conflict, the statement.
//!
//! Run it with `cargo run --example bank_account` (SQLite in a fresh temp directory), or
//! choose the store by URL with `--store URL` or `EVENTDRIVEN_STORE=URL`:
//! `cargo run --example bank_account -- --store memory:`, or on PostgreSQL
//! `cargo run --example bank_account --features postgres -- --store postgres://user@host/db`.

use anyhow::{bail, Context as _};
use eventdriven::aggregate::{stream_name, Repository, RepositoryError};
use eventdriven::prelude::*;
use eventdriven::store::{ExpectedVersion, StoreError};
use eventdriven_examples::{open_store, run_id};

// ---- the events: what happened, stored under stable names ----------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "account.opened")]
struct AccountOpened {
    owner: String,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "account.deposited")]
struct MoneyDeposited {
    amount: u64,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "account.withdrawn")]
struct MoneyWithdrawn {
    amount: u64,
}

/// The account's events: one variant per event type; the derive writes their storage
/// encoding, the decoding by name and the publishing on the bus.
#[derive(Events, Clone, Debug)]
enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
}

// ---- the aggregate: commands in, events out ------------------------------------------------

#[derive(Clone, Debug)]
enum AccountCommand {
    Open { owner: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

#[derive(Debug, thiserror::Error)]
enum AccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("the amount must be more than 0")]
    ZeroAmount,
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds { balance: u64, requested: u64 },
}

/// The state: only what the decisions need. `Serialize`/`Deserialize` are for snapshots.
#[derive(Default, Serialize, Deserialize)]
struct Account {
    owner: Option<String>,
    balance: u64,
}

impl Account {
    fn check_amount(&self, amount: u64) -> Result<(), AccountError> {
        match (&self.owner, amount) {
            (None, _) => Err(AccountError::NotOpen),
            (_, 0) => Err(AccountError::ZeroAmount),
            _ => Ok(()),
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account"; // streams are named `account-{id}`
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    /// Decides; never changes the state (that is `apply`'s job, once the events are stored).
    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { owner } => match self.owner {
                Some(_) => Err(AccountError::AlreadyOpen),
                None => Ok(vec![AccountOpened { owner }.into()]),
            },
            AccountCommand::Deposit { amount } => {
                self.check_amount(amount)?;
                Ok(vec![MoneyDeposited { amount }.into()])
            }
            AccountCommand::Withdraw { amount } => {
                self.check_amount(amount)?;
                if amount > self.balance {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: amount,
                    });
                }
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

// ---- a subscriber on the bus: the running statement ----------------------------------------

#[derive(Default)]
struct Statement {
    lines: Vec<String>,
    balance: u64,
}

#[derive(Query, Debug)]
#[query(reply = (Vec<String>, u64))]
struct GetStatement;

#[handlers]
impl Statement {
    #[subscribe]
    fn opened(&mut self, ev: &AccountOpened) {
        self.lines.push(format!("opened for {}", ev.owner));
    }

    #[subscribe]
    fn deposited(&mut self, ev: &MoneyDeposited) {
        self.balance += ev.amount;
        let line = format!("deposit  {:>4}  balance {:>4}", ev.amount, self.balance);
        self.lines.push(line);
    }

    #[subscribe]
    fn withdrawn(&mut self, ev: &MoneyWithdrawn) {
        self.balance = self.balance.saturating_sub(ev.amount);
        let line = format!("withdraw {:>4}  balance {:>4}", ev.amount, self.balance);
        self.lines.push(line);
    }

    #[query]
    fn statement(&self, _: GetStatement) -> (Vec<String>, u64) {
        (self.lines.clone(), self.balance)
    }
}

// ---- running commands ----------------------------------------------------------------------

/// Runs one command through the repository, prints its outcome and counts the events it
/// committed. A refusal is an outcome, not a failure; a store error ends the example.
async fn run(
    repo: &Repository<Account>,
    id: &str,
    command: AccountCommand,
    committed: &mut usize,
) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    match repo.execute(id, command).await {
        Ok(done) => {
            *committed += done.events.len();
            let names: Vec<&str> = done.events.iter().map(|e| e.name()).collect();
            let snapshot = done.snapshot_taken.then_some(", snapshot taken");
            let (names, version) = (names.join(", "), done.version);
            println!(
                "{shown} -> {names} (version {version}{})",
                snapshot.unwrap_or_default()
            );
        }
        Err(RepositoryError::Rejected(refusal)) => println!("{shown} -> refused: {refusal}"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use AccountCommand::{Deposit, Open, Withdraw};

    let run_id = run_id();

    // 1. The store comes from a URL; by default a fresh SQLite file. `_temp` is bound
    //    first, so it is dropped (and the file removed) after the store.
    let (_temp, store, place) = open_store("bank", "bank.db").await?;
    println!("== 1. store: {} ({place})", store.backend_name());

    // The bus with the statement subscriber, and a repository that publishes every committed
    // event on it, snapshots every 5 events and tries a command up to 3 times on a conflict.
    let app = App::builder().actor(Statement::default()).build().await?;
    let repo = Repository::<Account>::new(store.clone())
        .snapshot_every(5)
        .retry_on_conflict(3)
        .publish_to(app.clone());
    // Streams carry a run id, so reruns on one PostgreSQL database never collide.
    let id = format!("acc-{run_id}");
    let mut committed = 0;

    // 2. Commands: each is decided against the state loaded from the store.
    println!("\n== 2. commands on {}", stream_name::<Account>(&id));
    print!("(another, unopened account) ");
    let unopened = format!("{id}-unopened");
    run(&repo, &unopened, Deposit { amount: 10 }, &mut committed).await?;
    for command in [
        Open {
            owner: "Ada".into(),
        },
        Open {
            owner: "Ada".into(),
        },
        Deposit { amount: 0 },
        Deposit { amount: 100 },
        Deposit { amount: 50 },
        Withdraw { amount: 500 },
        Withdraw { amount: 30 },
    ] {
        run(&repo, &id, command, &mut committed).await?;
    }

    // 3. Replay: a repository without snapshots rebuilds the state from every event.
    println!("\n== 3. replay");
    let replaying = Repository::<Account>::new(store.clone());
    let loaded = replaying.load(&id).await?;
    let (replayed, balance, version) = (loaded.replayed, loaded.state.balance, loaded.version);
    println!("replayed {replayed} events -> balance {balance} (version {version})");

    // 4. Snapshots: `snapshot_every(5)` saves the state each time the stream crosses a
    //    multiple of 5; loading then starts from the latest one.
    println!("\n== 4. snapshots (every 5 events)");
    for _ in 0..12 {
        let done = repo.execute(&id, Deposit { amount: 25 }).await?;
        committed += done.events.len();
        if done.snapshot_taken {
            println!("snapshot taken at version {}", done.version);
        }
    }
    println!("12 x Deposit {{ amount: 25 }} committed");
    let loaded = repo.load(&id).await?;
    let at = loaded
        .snapshot
        .context("the load did not start from a snapshot")?;
    let (replayed, balance) = (loaded.replayed, loaded.state.balance);
    println!("loaded from snapshot at version {at} + {replayed} newer events -> balance {balance}");
    let full = replaying.load(&id).await?;
    let (replayed, balance) = (full.replayed, full.state.balance);
    println!("(without snapshots: replayed {replayed} events -> balance {balance})");

    // 5. A conflict, step by step. Writer B loads the account and decides, as `execute` does
    //    inside; writer A commits in between; the store then refuses B's append, which
    //    expects the version B loaded. (Inside the repository, `execute_once` returns this
    //    conflict as `RepositoryError::Conflict`; `execute` reloads and decides again.)
    println!("\n== 5. a concurrency conflict");
    let b = repo.load(&id).await?;
    let (b_version, b_balance) = (b.version, b.state.balance);
    println!("writer B loaded version {b_version} (balance {b_balance})");
    print!("writer A: ");
    run(&repo, &id, Withdraw { amount: 300 }, &mut committed).await?;
    let decided = b.state.handle(Withdraw { amount: 100 })?;
    let data = decided
        .iter()
        .map(|event| event.encode(Metadata::new()))
        .collect::<Result<Vec<_>, _>>()?;
    println!("writer B appends its decision expecting version {b_version}");
    let stream = stream_name::<Account>(&id);
    match store
        .append(&stream, ExpectedVersion::Exact(b_version), data)
        .await
    {
        Err(StoreError::Conflict(conflict)) => println!("conflict: {conflict} (nothing stored)"),
        Err(e) => return Err(e.into()),
        Ok(_) => bail!("writer B's stale append was accepted"),
    }
    // B runs its command again through the repository, on the fresh state: it commits.
    let done = repo.execute(&id, Withdraw { amount: 100 }).await?;
    committed += done.events.len();
    let (version, attempts) = (done.version, done.attempts);
    println!(
        "writer B retries with repo.execute -> committed at version {version} \
         (attempts: {attempts}, decided again on the fresh state)"
    );

    // 6. The subscriber's statement. A query goes through the subscriber's mailbox after the
    //    events published before it, so it sees all of them.
    println!("\n== 6. the statement kept by the subscriber");
    let (lines, balance) = app.query(GetStatement).await?;
    for line in &lines {
        println!("  {line}");
    }
    let received = lines.len();
    println!("received {received} events; the repository committed {committed}");
    let stored = repo.load(&id).await?;
    let (stored_balance, version) = (stored.state.balance, stored.version);
    println!("final balance {balance} (the store says {stored_balance} at version {version})");
    if received != committed || balance != stored_balance {
        bail!("the statement disagrees with the store");
    }

    app.shutdown().await?;
    println!("\n== done");
    Ok(())
}
