//! The event store on each backend: append throughput (one event per append, and batches of
//! 10) and the load time of an aggregate with 10,000 events, with and without a snapshot.
//!
//! ```text
//! scripts/with-postgres.sh cargo bench -p eventdriven-benches --bench store
//! cargo bench -p eventdriven-benches --bench store -- sqlite      # one backend
//! ```
//!
//! Backends: `memory` (the floor: no I/O), `sqlite` (a file in a temp directory, WAL mode,
//! `synchronous = NORMAL`), and `postgres` when `EVENTDRIVEN_POSTGRES_URL` is set (the
//! throwaway server of `scripts/with-postgres.sh` runs with `fsync = off`, so its figures are
//! the database's work without the disk's). Every append waits for its commit; appends go to
//! a stream with an exact expected version, as a repository does.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use eventdriven::aggregate::{Aggregate, Repository};
use eventdriven::prelude::*;
use eventdriven::store::{EventData, ExpectedVersion, Snapshot, Store};
use eventdriven::Timestamp;
use tokio::runtime::Runtime;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "bench.deposited")]
struct Deposited {
    account: String,
    amount: u64,
}

#[derive(Events, Clone, Debug)]
enum AccountEvent {
    Deposited(Deposited),
}

#[derive(Default, Serialize, Deserialize)]
struct Account {
    balance: u64,
    deposits: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Account {
    const TYPE: &'static str = "bench_account";
    type Command = u64;
    type Event = AccountEvent;
    type Error = Never;

    fn handle(&self, amount: u64) -> Result<Vec<AccountEvent>, Never> {
        Ok(vec![Deposited {
            account: "a".into(),
            amount,
        }
        .into()])
    }

    fn apply(&mut self, event: &AccountEvent) {
        let AccountEvent::Deposited(e) = event;
        self.balance += e.amount;
        self.deposits += 1;
    }
}

fn event(i: u64) -> EventData {
    EventData::from_event(&Deposited {
        account: "account-0001".into(),
        amount: i,
    })
    .expect("encodes")
}

/// A name no earlier run used (the PostgreSQL database outlives runs).
fn unique(prefix: &str) -> String {
    let nanos = Timestamp::now().as_unix_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

/// The backends to measure, each with a fresh store.
fn backends(rt: &Runtime, dir: &std::path::Path) -> Vec<(&'static str, Store)> {
    let mut stores = vec![("memory", Store::memory())];
    let sqlite = rt
        .block_on(Store::sqlite(dir.join("bench.db")))
        .expect("open SQLite");
    stores.push(("sqlite", sqlite));
    match std::env::var("EVENTDRIVEN_POSTGRES_URL") {
        Ok(url) => {
            let pg = rt.block_on(Store::postgres(&url)).expect("connect PostgreSQL");
            stores.push(("postgres", pg));
        }
        Err(_) => eprintln!(
            "store bench: EVENTDRIVEN_POSTGRES_URL not set, PostgreSQL not measured (run under scripts/with-postgres.sh)"
        ),
    }
    stores
}

fn store_benches(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = std::env::temp_dir().join(unique("eventdriven-store-bench-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let stores = backends(&rt, &dir);

    let mut group = c.benchmark_group("store_append");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, store) in &stores {
        for batch in [1_u64, 10] {
            group.throughput(Throughput::Elements(batch));
            let id = BenchmarkId::new(*name, format!("batch_{batch}"));
            group.bench_function(id, |b| {
                let stream = unique("append-");
                let mut version = 0;
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        for i in 0..iters {
                            let events = (0..batch).map(|n| event(i * batch + n)).collect();
                            let expected = match version {
                                0 => ExpectedVersion::NoStream,
                                v => ExpectedVersion::Exact(v),
                            };
                            version = store
                                .append(&stream, expected, events)
                                .await
                                .expect("append")
                                .version;
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("aggregate_load_10k");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (name, store) in &stores {
        let id = unique("load");
        let stream = eventdriven::aggregate::stream_name::<Account>(&id);
        rt.block_on(async {
            let mut version = 0;
            for chunk in 0..100_u64 {
                let events = (0..100).map(|n| event(chunk * 100 + n)).collect();
                let expected = match version {
                    0 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v),
                };
                version = store
                    .append(&stream, expected, events)
                    .await
                    .unwrap()
                    .version;
            }
        });
        let plain = Repository::<Account>::new(store.clone());
        group.bench_function(BenchmarkId::new(*name, "replay_all"), |b| {
            b.iter(|| {
                let loaded = rt.block_on(plain.load(&id)).expect("load");
                assert_eq!((loaded.version, loaded.replayed), (10_000, 10_000));
            })
        });

        let state = rt.block_on(plain.load(&id)).unwrap().state;
        rt.block_on(store.save_snapshot(Snapshot {
            stream: stream.clone(),
            version: 10_000,
            schema_version: Account::SNAPSHOT_VERSION,
            state: serde_json::to_value(&state).unwrap(),
            taken_at: Timestamp::now(),
        }))
        .unwrap();
        let snapshotting = Repository::<Account>::new(store.clone()).snapshot_every(1_000);
        group.bench_function(BenchmarkId::new(*name, "from_snapshot"), |b| {
            b.iter(|| {
                let loaded = rt.block_on(snapshotting.load(&id)).expect("load");
                assert_eq!((loaded.snapshot, loaded.replayed), (Some(10_000), 0));
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `criterion_group!`/`criterion_main!` written out: they generate an undocumented `pub fn`.
    let mut c = Criterion::default().configure_from_args();
    store_benches(&mut c);
    c.final_summary();
}
