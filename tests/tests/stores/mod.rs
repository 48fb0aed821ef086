//! The store of each backend for the suites that run once per backend (`per_backend!`):
//! memory; SQLite in a new temp directory; PostgreSQL (feature `postgres`) in a new database
//! on the server of `EVENTDRIVEN_POSTGRES_URL` (started by `scripts/with-postgres.sh`),
//! dropped after the test. A test function takes a [`Harness`] and opens the store with
//! [`Harness::open`]; opening again is a restart (a new handle on the same data).

#![allow(dead_code, unreachable_pub, unused_imports, unused_macros)]

use std::future::Future;
#[cfg(feature = "postgres")]
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eventdriven::store::Store;

/// How long one test may take, all included.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the gap test's reader may take to see every event.
pub const GAP_TIMEOUT: Duration = Duration::from_secs(60);

// --- the harness ------------------------------------------------------------------------------

/// Which backend a test runs against.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Memory,
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

/// Where a test's store lives; [`Harness::open`] opens it (again).
#[derive(Clone)]
pub struct Harness(Arc<Place>);

pub enum Place {
    /// The one store: a memory store cannot be reopened, so "reopening" hands out the same.
    Memory(Store),
    Sqlite {
        dir: PathBuf,
        file: PathBuf,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        admin: sqlx::PgPool,
        database: String,
        url: String,
    },
}

/// A name no other test (of this or another process) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Harness {
    /// A fresh, empty place for a store; `None` if the backend's tests are skipped.
    pub async fn new(kind: Kind) -> Option<Self> {
        let place = match kind {
            Kind::Memory => Place::Memory(Store::memory()),
            Kind::Sqlite => {
                let dir = std::env::temp_dir().join(unique_name("eventdriven-store"));
                // A directory that does not exist yet: opening creates it.
                let file = dir.join("nested").join("events.db");
                Place::Sqlite { dir, file }
            }
            #[cfg(feature = "postgres")]
            Kind::Postgres => postgres_place().await?,
        };
        Some(Self(Arc::new(place)))
    }

    /// Opens the store (again: for SQLite and PostgreSQL a new connection to the same data).
    pub async fn open(&self) -> Store {
        match &*self.0 {
            Place::Memory(store) => store.clone(),
            Place::Sqlite { file, .. } => Store::sqlite(file)
                .await
                .unwrap_or_else(|e| panic!("cannot open the SQLite store {}: {e}", file.display())),
            #[cfg(feature = "postgres")]
            Place::Postgres { url, .. } => Store::postgres(url)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the PostgreSQL store {url}: {e}")),
        }
    }

    /// Removes what the test left.
    pub async fn cleanup(&self) {
        match &*self.0 {
            Place::Memory(_) => {}
            Place::Sqlite { dir, .. } => {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    eprintln!("could not remove {}: {e}", dir.display());
                }
            }
            #[cfg(feature = "postgres")]
            Place::Postgres {
                admin, database, ..
            } => {
                // FORCE: a store the test leaked may still hold connections.
                let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(admin).await {
                    eprintln!("could not drop the database {database}: {e}");
                }
                admin.close().await;
            }
        }
    }
}

#[cfg(feature = "postgres")]
async fn postgres_place() -> Option<Place> {
    let url = match std::env::var("EVENTDRIVEN_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var("EVENTDRIVEN_SKIP_POSTGRES").as_deref() == Ok("1") => {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "!!!!!!!! SKIPPED: a PostgreSQL store test (EVENTDRIVEN_SKIP_POSTGRES=1 and no \
                 EVENTDRIVEN_POSTGRES_URL) !!!!!!!!"
            );
            return None;
        }
        _ => panic!(
            "EVENTDRIVEN_POSTGRES_URL is not set: run the PostgreSQL store tests through \
             scripts/with-postgres.sh (for example `scripts/with-postgres.sh cargo test \
             --all-features`), or set EVENTDRIVEN_POSTGRES_URL=postgres://USER@HOST:PORT/DB \
             to a server where USER may create databases, or set EVENTDRIVEN_SKIP_POSTGRES=1 \
             to skip them"
        ),
    };
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to EVENTDRIVEN_POSTGRES_URL={url}: {e}"));
    let database = unique_name("ed");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create the database {database}: {e}"));
    let url = with_database(&url, &database);
    Some(Place::Postgres {
        admin,
        database,
        url,
    })
}

/// `url` naming the database `database` instead of its own.
#[cfg(feature = "postgres")]
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    format!("{base}/{database}{query}")
}

/// Runs one conformance test against a fresh store of `kind`, within [`TEST_TIMEOUT`], and
/// cleans up whatever the outcome.
pub async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(harness) = Harness::new(kind).await else {
        return;
    };
    let outcome = tokio::spawn(tokio::time::timeout(TEST_TIMEOUT, test(harness.clone()))).await;
    harness.cleanup().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{kind:?}: the test did not finish within {TEST_TIMEOUT:?}"),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("{kind:?}: the test task failed: {e}"),
        },
    }
}

/// Generates `mod memory`, `mod sqlite` and (feature `postgres`) `mod postgres`, each with one
/// `#[tokio::test]` per shared test function.
macro_rules! per_backend {
    ($($test:ident),* $(,)?) => {
        crate::stores::per_backend!(@backend memory, Memory, $($test),*);
        crate::stores::per_backend!(@backend sqlite, Sqlite, $($test),*);
        #[cfg(feature = "postgres")]
        crate::stores::per_backend!(@backend postgres, Postgres, $($test),*);
    };
    (@backend $module:ident, $kind:ident, $($test:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    crate::stores::run(crate::stores::Kind::$kind, super::$test).await;
                }
            )*
        }
    };
}

pub(crate) use per_backend;
