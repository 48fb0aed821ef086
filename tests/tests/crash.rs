//! Crash safety of the durable pieces, with real `kill -9`s.
//!
//! A child process (this same test binary, re-executed to run [`child_workload`]) issues
//! commands to an event-sourced counter as fast as it can, while a [`Relay`] delivers the stored
//! events to two subscribers and a [`Projector`] keeps a read model:
//!
//! - the *witness* appends the id of every event it gets to `deliveries.log`: at-least-once;
//! - the *inbox* records the id (`record_processed`) and bumps a counter in one [`StoreTx`]:
//!   exactly-once effects;
//! - the projection counts events per stream through the batch's transaction: exactly-once.
//!
//! The parent kills the child with SIGKILL after a random 100–600 ms, round after round, then
//! lets one last child drain (no new commands) and checks the store against the claim: every
//! stored event was delivered at least once, also across the crashes; the inbox and the
//! read model count every event exactly once; nothing is lost.
//!
//! `EVENTDRIVEN_CRASH_SEED=N` replays the kill moments of a run (the seed is printed).

mod kill;
mod stores;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use eventdriven::aggregate::Repository;
use eventdriven::prelude::*;
use eventdriven::projection::{Projection, ProjectionContext, ProjectionError, Projector, Relay};
use eventdriven::store::{Store, StoreTx, StoredEvent};
use eventdriven::MessageId;
use kill::{log_in, seed, with_store, ChildGuard, TempDir, XorShift, EXIT_TIMEOUT};

/// Work rounds, each killed at a random moment.
const ROUNDS: usize = 20;
/// A work round is killed after this many milliseconds, chosen at random in the range.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 100..=600;
/// How long a killed child may take to be gone.
/// How long the draining child may take, all included.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the draining child waits for the relay and the projection to reach the head.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(45);
/// A work child that was not killed stops by itself after this long (the parent is gone).
const WORK_LIMIT: Duration = Duration::from_secs(60);
/// Counters the child increments, in turn.
const COUNTERS: u64 = 5;
/// The exactly-once inbox's consumer name.
const INBOX: &str = "inbox-b";

const CHILD_VAR: &str = "EVENTDRIVEN_CRASH_CHILD";
const DIR_VAR: &str = "EVENTDRIVEN_CRASH_DIR";
const MODE_VAR: &str = "EVENTDRIVEN_CRASH_MODE";
const STORE_VAR: &str = "EVENTDRIVEN_CRASH_STORE";
const SEED_VAR: &str = "EVENTDRIVEN_CRASH_SEED";

// --- the domain: a counter per id ---------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "crash.incremented")]
struct Incremented {
    by: u64,
}

#[derive(Events, Clone, Debug)]
enum CounterEvent {
    Incremented(Incremented),
}

#[derive(Default, Debug, Serialize, Deserialize)]
struct Counter {
    count: u64,
}

#[derive(Clone, Debug)]
struct Increment;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = Increment;
    type Event = CounterEvent;
    type Error = std::convert::Infallible;

    fn handle(&self, _: Increment) -> Result<Vec<CounterEvent>, Self::Error> {
        Ok(vec![Incremented { by: 1 }.into()])
    }

    fn apply(&mut self, event: &CounterEvent) {
        let CounterEvent::Incremented(incremented) = event;
        self.count += incremented.by;
    }
}

// --- the child's consumers ----------------------------------------------------------------------

/// At-least-once witness: one line per delivery, the event's id, in `deliveries.log`.
struct Witness {
    log: File,
}

#[handlers]
impl Witness {
    #[subscribe]
    fn delivered(&mut self, _: &Incremented, ctx: &mut Context<Self>) {
        // One write call per line: a kill leaves at most a torn last line.
        let line = format!("{}\n", ctx.metadata().id);
        self.log
            .write_all(line.as_bytes())
            .and_then(|()| self.log.flush())
            .expect("cannot write deliveries.log");
    }
}

/// Exactly-once inbox: the id and the counter's update commit together, or neither does.
struct Inbox {
    store: Store,
}

#[handlers]
impl Inbox {
    #[subscribe]
    async fn delivered(&mut self, _: &Incremented, ctx: &mut Context<Self>) -> Result<(), String> {
        let id = ctx.metadata().id;
        let mut error = String::new();
        for _ in 0..50 {
            match inbox_once(&self.store, id).await {
                Ok(()) => return Ok(()),
                Err(e) => error = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("the inbox cannot handle {id}: {error}"))
    }
}

async fn inbox_once(store: &Store, id: MessageId) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    if tx.record_processed(INBOX, id).await? {
        execute(
            &mut tx,
            "UPDATE inbox_totals SET count = count + 1 WHERE id = 1",
        )
        .await?;
        tx.commit().await?;
    } else {
        // A redelivery: already counted.
        tx.rollback().await?;
    }
    Ok(())
}

/// Counts events per stream in `per_stream`, through the batch's transaction.
struct PerStream;

impl Projection for PerStream {
    type Event = CounterEvent;

    fn name(&self) -> &str {
        "per-stream"
    }

    async fn apply(
        &mut self,
        _: CounterEvent,
        ctx: &mut ProjectionContext<'_>,
    ) -> Result<(), ProjectionError> {
        let stream = ctx.stored().stream.replace('\'', "''");
        let sql = format!(
            "INSERT INTO per_stream (stream, count) VALUES ('{stream}', 1) \
             ON CONFLICT (stream) DO UPDATE SET count = per_stream.count + 1"
        );
        execute(ctx.tx(), &sql)
            .await
            .map_err(|e| ProjectionError::new(format!("{e:#}")))
    }

    async fn reset(&mut self, ctx: &mut ProjectionContext<'_>) -> Result<(), ProjectionError> {
        execute(ctx.tx(), "DELETE FROM per_stream")
            .await
            .map_err(|e| ProjectionError::new(format!("{e:#}")))
    }
}

// --- SQL on whichever backend -------------------------------------------------------------------

/// Runs one statement on the transaction's connection, SQLite or PostgreSQL.
async fn execute(tx: &mut StoreTx, sql: &str) -> anyhow::Result<()> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if let Some(conn) = tx.sqlite() {
        sqlx::query(sql).execute(conn).await?;
        return Ok(());
    }
    #[cfg(feature = "postgres")]
    if let Some(conn) = tx.postgres() {
        sqlx::query(sql).execute(conn).await?;
        return Ok(());
    }
    bail!("the crash test needs a SQL backend")
}

/// The inbox's count.
async fn inbox_count(store: &Store) -> anyhow::Result<i64> {
    let sql = "SELECT count FROM inbox_totals WHERE id = 1";
    if let Some(pool) = store.sqlite_readers() {
        return Ok(sqlx::query_scalar(sql).fetch_one(pool).await?);
    }
    #[cfg(feature = "postgres")]
    if let Some(pool) = store.postgres_pool() {
        return Ok(sqlx::query_scalar(sql).fetch_one(pool).await?);
    }
    bail!("the crash test needs a SQL backend")
}

/// The projection's counts per stream.
async fn per_stream(store: &Store) -> anyhow::Result<BTreeMap<String, i64>> {
    let sql = "SELECT stream, count FROM per_stream";
    let rows: Vec<(String, i64)> = 'rows: {
        if let Some(pool) = store.sqlite_readers() {
            break 'rows sqlx::query_as(sql).fetch_all(pool).await?;
        }
        #[cfg(feature = "postgres")]
        if let Some(pool) = store.postgres_pool() {
            break 'rows sqlx::query_as(sql).fetch_all(pool).await?;
        }
        bail!("the crash test needs a SQL backend")
    };
    Ok(rows.into_iter().collect())
}

/// Every stored event, in position order.
async fn all_events(store: &Store) -> anyhow::Result<Vec<StoredEvent>> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1_000).await?;
        let Some(last) = page.last() else {
            return Ok(events);
        };
        after = last.position;
        events.extend(page);
    }
}

// --- the child ----------------------------------------------------------------------------------

/// The child process of the crash tests. In a normal test run (without
/// `EVENTDRIVEN_CRASH_CHILD=1`) it returns at once: a no-op that passes. Re-executed by
/// [`events_survive_kill_9_at_random_moments`] with `EVENTDRIVEN_CRASH_CHILD=1`, it runs the
/// workload on the store of `EVENTDRIVEN_CRASH_STORE` (`EVENTDRIVEN_CRASH_MODE=work`: until
/// killed; `drain`: until everything stored was relayed, projected and handled).
#[test]
fn child_workload() {
    if std::env::var(CHILD_VAR).as_deref() != Ok("1") {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let dir = PathBuf::from(var(DIR_VAR));
    let url = var(STORE_VAR);
    let mode = var(MODE_VAR);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Err(e) = runtime.block_on(child(&dir, &url, &mode)) {
        panic!("crash child ({mode}) failed: {e:#}");
    }
}

async fn child(dir: &Path, url: &str, mode: &str) -> anyhow::Result<()> {
    let store = Store::open(url).await.context("opening the store")?;
    let mut tx = store.begin().await?;
    execute(
        &mut tx,
        "CREATE TABLE IF NOT EXISTS inbox_totals (id BIGINT PRIMARY KEY, count BIGINT NOT NULL)",
    )
    .await?;
    execute(
        &mut tx,
        "INSERT INTO inbox_totals (id, count) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    )
    .await?;
    execute(
        &mut tx,
        "CREATE TABLE IF NOT EXISTS per_stream (stream TEXT PRIMARY KEY, count BIGINT NOT NULL)",
    )
    .await?;
    tx.commit().await?;

    let app = App::builder()
        .actor(Witness {
            log: open_log(&dir.join("deliveries.log"))?,
        })
        .actor(Inbox {
            store: store.clone(),
        })
        .build()
        .await?;
    let relay = Relay::new(store.clone(), &app).batch(20).start().await?;
    let projection = Projector::new(store.clone())
        .batch(20)
        .start(PerStream)
        .await?;

    match mode {
        "work" => {
            let counters = Repository::<Counter>::new(store.clone()).snapshot_every(100);
            let started = Instant::now();
            let mut n = 0_u64;
            while started.elapsed() < WORK_LIMIT {
                counters
                    .execute(&(n % COUNTERS).to_string(), Increment)
                    .await
                    .context("a command failed")?;
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            bail!("not killed within {WORK_LIMIT:?}")
        }
        "drain" => {
            let head = store.head().await?;
            ensure!(
                relay.wait_for(head, CATCH_UP_TIMEOUT).await,
                "the relay is stuck at {} of {head}",
                relay.position()
            );
            ensure!(
                projection.wait_for(head, CATCH_UP_TIMEOUT).await,
                "the projection is stuck: {:?} (head {head})",
                projection.status()
            );
            relay.stop().await;
            projection.stop().await;
            // Handles everything the relay published.
            app.shutdown().await?;
            eprintln!("crash child: drained up to position {head}");
            Ok(())
        }
        other => bail!("unknown {MODE_VAR} `{other}`"),
    }
}

/// Opens `deliveries.log` for appending, ending a line a killed writer tore first.
fn open_log(path: &Path) -> anyhow::Result<File> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if log.metadata()?.len() > 0 {
        let mut last = [0_u8];
        log.seek(SeekFrom::End(-1))?;
        log.read_exact(&mut last)?;
        if last[0] != b'\n' {
            log.write_all(b"\n")?;
        }
    }
    Ok(log)
}

// --- the parent ---------------------------------------------------------------------------------

/// The child: this binary running `child_workload` with the settings of one round.
fn spawn_child(dir: &Path, url: &str, mode: &str, name: &str) -> ChildGuard {
    let dir_text = dir.display().to_string();
    ChildGuard::spawn(
        "child_workload",
        log_in(dir, name),
        &[
            (CHILD_VAR, "1"),
            (DIR_VAR, dir_text.as_str()),
            (MODE_VAR, mode),
            (STORE_VAR, url),
        ],
    )
}

/// The crash tests run one after the other: each wants the two cores for its children.
static SERIAL: Mutex<()> = Mutex::new(());

/// The crash test on the store at `url`, with its files in `dir`.
fn crash_test(backend: &str, dir: &Path, url: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seed = seed(SEED_VAR);
    let mut rng = XorShift(seed);
    eprintln!("crash test ({backend}): seed {seed} ({SEED_VAR} replays it)");

    let mut counts = Vec::with_capacity(ROUNDS);
    let mut failures = Vec::new();
    // Events up to this position were found handled by both subscribers after an earlier round.
    let mut checked_up_to = 0;
    for round in 1..=ROUNDS {
        let mut child = spawn_child(dir, url, "work", &format!("work-{round}"));
        let after = rng.in_range(&KILL_AFTER_MS);
        std::thread::sleep(Duration::from_millis(after));
        if let Some(status) = child.child.try_wait().unwrap() {
            panic!(
                "round {round}: the work child exited by itself ({status}):\n{}",
                child.output()
            );
        }
        child.child.kill().unwrap();
        if child.wait_for(EXIT_TIMEOUT).is_none() {
            panic!("round {round}: the child did not exit within {EXIT_TIMEOUT:?} of SIGKILL");
        }
        let found = with_store(&runtime, url, async |store| {
            check_round(store, dir, &mut checked_up_to).await
        });
        eprintln!(
            "crash test ({backend}): round {round}: killed after {after} ms; {} events stored, \
             relay checkpoint {}, projection checkpoint {}",
            found.events, found.relay, found.projection
        );
        failures.extend(
            found
                .failures
                .into_iter()
                .map(|f| format!("round {round}: {f}")),
        );
        counts.push(found.events);
    }

    let drain_started = Instant::now();
    let mut drain = spawn_child(dir, url, "drain", "drain");
    match drain.wait_for(DRAIN_TIMEOUT) {
        Some(status) if status.success() => {}
        Some(status) => panic!("the draining child failed ({status}):\n{}", drain.output()),
        None => {
            let _ = drain.child.kill();
            let _ = drain.wait_for(EXIT_TIMEOUT);
            panic!(
                "the draining child did not finish within {DRAIN_TIMEOUT:?}:\n{}",
                drain.output()
            );
        }
    }
    let drain_time = drain_started.elapsed();

    let deliveries = std::fs::read_to_string(dir.join("deliveries.log")).unwrap_or_default();
    let mut report = with_store(&runtime, url, async |store| {
        verify(store, &deliveries, &counts).await
    });
    failures.append(&mut report.failures);
    eprintln!(
        "crash test ({backend}): {ROUNDS} rounds killed + 1 drain ({drain_time:.1?}), \
         {} events, {} deliveries, {} duplicates (redelivered after a kill), \
         {} torn lines, {:.1?} in all",
        report.events,
        report.deliveries,
        report.duplicates,
        report.torn,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "crash test ({backend}, seed {seed}) failed:\n- {}",
        failures.join("\n- ")
    );
}

/// What the store held after a work round's kill.
struct Round {
    events: usize,
    relay: u64,
    projection: u64,
    failures: Vec<String>,
}

/// After a kill: every event up to the relay's checkpoint must have been handled by both
/// subscribers, since the relay does not deliver it again.
async fn check_round(store: &Store, dir: &Path, checked_up_to: &mut u64) -> anyhow::Result<Round> {
    let events = all_events(store).await?;
    let relay = store.load_checkpoint("relay").await?.unwrap_or(0);
    let projection = store.load_checkpoint("per-stream").await?.unwrap_or(0);
    let deliveries = std::fs::read_to_string(dir.join("deliveries.log")).unwrap_or_default();
    let delivered: std::collections::HashSet<MessageId> =
        deliveries.lines().filter_map(|l| l.parse().ok()).collect();
    let (mut unwitnessed, mut unprocessed) = (Vec::new(), Vec::new());
    for event in events
        .iter()
        .filter(|e| e.position > *checked_up_to && e.position <= relay)
    {
        if !delivered.contains(&event.metadata.id) {
            unwitnessed.push(event.position);
        }
        if !store.is_processed(INBOX, event.metadata.id).await? {
            unprocessed.push(event.position);
        }
    }
    *checked_up_to = (*checked_up_to).max(relay);
    let mut failures = Vec::new();
    for (subscriber, lost) in [("witness", unwitnessed), (INBOX, unprocessed)] {
        if !lost.is_empty() {
            failures.push(format!(
                "the relay's checkpoint is {relay}, but the {subscriber} subscriber had not \
                 handled {} when the child was killed: past the checkpoint, they are never \
                 delivered again",
                positions(&lost)
            ));
        }
    }
    Ok(Round {
        events: events.len(),
        relay,
        projection,
        failures,
    })
}

/// "the events at positions [1, 2, 3]", at most 10 of them.
fn positions(list: &[u64]) -> String {
    if list.len() <= 10 {
        format!("the events at positions {list:?}")
    } else {
        format!(
            "{} events, at positions {:?} and more",
            list.len(),
            &list[..10]
        )
    }
}

struct Report {
    events: usize,
    deliveries: usize,
    duplicates: usize,
    torn: usize,
    failures: Vec<String>,
}

/// Checks the store and the deliveries against the claim; lists every violation.
async fn verify(store: &Store, deliveries: &str, counts: &[usize]) -> anyhow::Result<Report> {
    let events = all_events(store).await?;
    let mut failures = Vec::new();

    // The workload ran: events were stored, and more of them round after round.
    if events.is_empty() {
        failures.push("no event was stored".to_owned());
    }
    if counts.windows(2).any(|w| w[1] < w[0]) {
        failures.push(format!("the number of events went down: {counts:?}"));
    }
    let grew = counts
        .iter()
        .scan(0, |before, &now| {
            let grew = now > *before;
            *before = now;
            Some(grew)
        })
        .filter(|&grew| grew)
        .count();
    if grew < counts.len() / 4 {
        failures.push(format!(
            "only {grew} of {} rounds stored events: {counts:?}",
            counts.len()
        ));
    }

    // At least once: every stored event's id is in the witness's log.
    let mut delivered: HashMap<MessageId, usize> = HashMap::new();
    let mut torn = 0;
    for line in deliveries.lines() {
        match line.parse::<MessageId>() {
            Ok(id) => *delivered.entry(id).or_default() += 1,
            Err(_) => torn += 1,
        }
    }
    let missing: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| !delivered.contains_key(&e.metadata.id))
        .collect();
    if !missing.is_empty() {
        let missing: Vec<u64> = missing.iter().map(|e| e.position).collect();
        failures.push(format!(
            "{} of {} events were never delivered to the witness (at-least-once broken): {}",
            missing.len(),
            events.len(),
            positions(&missing)
        ));
    }
    let stored: std::collections::HashSet<MessageId> =
        events.iter().map(|e| e.metadata.id).collect();
    let phantoms = delivered.keys().filter(|id| !stored.contains(id)).count();
    if phantoms > 0 {
        failures.push(format!("{phantoms} delivered ids are of no stored event"));
    }
    let deliveries_count: usize = delivered.values().sum();
    let duplicates = deliveries_count - delivered.len();

    // Exactly once: the inbox counted each event once and recorded each id.
    let inbox = inbox_count(store).await?;
    if inbox != events.len() as i64 {
        failures.push(format!(
            "the inbox counted {inbox} events, the store has {}",
            events.len()
        ));
    }
    let mut unrecorded = Vec::new();
    for event in &events {
        if !store.is_processed(INBOX, event.metadata.id).await? {
            unrecorded.push(event.position);
        }
    }
    if !unrecorded.is_empty() {
        failures.push(format!(
            "{} events are not recorded as processed by {INBOX}: {}",
            unrecorded.len(),
            positions(&unrecorded)
        ));
    }

    // Exactly once: the projection counted each event of each stream once.
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for event in &events {
        *expected.entry(event.stream.clone()).or_default() += 1;
    }
    let projected = per_stream(store).await?;
    if projected != expected {
        failures.push(format!(
            "the projection counted {projected:?}, the store has {expected:?}"
        ));
    }

    Ok(Report {
        events: events.len(),
        deliveries: deliveries_count,
        duplicates,
        torn,
        failures,
    })
}

/// Kills the child at random moments, round after round, on SQLite; then drains and checks
/// that every event was delivered at least once and counted exactly once.
#[test]
fn events_survive_kill_9_at_random_moments() {
    let dir = TempDir::new("eventdriven-crash");
    let url = format!("sqlite:{}", dir.0.join("crash.db").display());
    crash_test("sqlite", &dir.0, &url);
}

/// The same on PostgreSQL, in a fresh database dropped afterwards.
#[cfg(feature = "postgres")]
#[test]
fn events_survive_kill_9_at_random_moments_on_postgres() {
    let Some(database) = kill::postgres::Database::create("the crash test", "ed_crash") else {
        return;
    };
    let dir = TempDir::new("eventdriven-crash");
    crash_test("postgres", &dir.0, &database.url);
}
