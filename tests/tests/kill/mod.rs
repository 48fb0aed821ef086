//! What the kill -9 tests share: the child process (this test binary run again with one test
//! selected and its settings in environment variables), killed or waited for with a bound; the
//! kill moments, reproducible from a printed seed; a temp directory removed at the end; a store
//! opened for one synchronous check.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventdriven::store::Store;

/// How long a child may take to exit after a kill.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A name no other test (of this or another process) uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A temp directory, removed when dropped (also when the test fails).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("could not remove {}: {e}", self.0.display());
        }
    }
}

/// A child process, killed (and waited for) if it is still running when dropped.
pub struct ChildGuard {
    pub child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Runs test `test` of this binary alone, with `env`, its output in `log`.
    pub fn spawn(test: &str, log: PathBuf, env: &[(&str, &str)]) -> Self {
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (name, value) in env {
            command.env(name, value);
        }
        Self {
            child: command.spawn().unwrap(),
            log,
        }
    }

    /// Waits for the child to exit, at most `timeout`; `None` if it is still running.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the child printed.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.wait_for(EXIT_TIMEOUT);
        }
    }
}

/// xorshift64: the kill moments, reproducible from the seed.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn in_range(&mut self, range: &std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.next() % (range.end() - range.start() + 1)
    }
}

/// The seed in the environment variable `var`, or one from the clock.
pub fn seed(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(seed) => seed
            .parse()
            .unwrap_or_else(|_| panic!("{var} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 | 1),
    }
}

/// Opens the store, runs `f` on it, and closes it.
pub fn with_store<T>(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    f: impl AsyncFnOnce(&Store) -> anyhow::Result<T>,
) -> T {
    runtime.block_on(async {
        let store = Store::open(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the store {url}: {e}"));
        f(&store).await.unwrap()
    })
}

/// The log file of a child named `name` in `dir`.
pub fn log_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// A fresh PostgreSQL database for a kill test.
#[cfg(feature = "postgres")]
pub mod postgres {
    use std::time::Duration;

    /// A fresh database on the server of `EVENTDRIVEN_POSTGRES_URL`, dropped when this is
    /// dropped (also when the test fails).
    pub(crate) struct Database {
        admin_url: String,
        name: String,
        pub(crate) url: String,
    }

    impl Database {
        /// `None` if the PostgreSQL tests are skipped (`EVENTDRIVEN_SKIP_POSTGRES=1`).
        pub(crate) fn create(test: &str, prefix: &str) -> Option<Self> {
            let admin_url = match std::env::var("EVENTDRIVEN_POSTGRES_URL") {
                Ok(url) if !url.is_empty() => url,
                _ if std::env::var("EVENTDRIVEN_SKIP_POSTGRES").as_deref() == Ok("1") => {
                    eprintln!(
                        "!!!!!!!! SKIPPED: {test} on PostgreSQL (EVENTDRIVEN_SKIP_POSTGRES=1 \
                         and no EVENTDRIVEN_POSTGRES_URL) !!!!!!!!"
                    );
                    return None;
                }
                _ => panic!(
                    "EVENTDRIVEN_POSTGRES_URL is not set: run the PostgreSQL tests through \
                     scripts/with-postgres.sh (for example `scripts/with-postgres.sh cargo test \
                     --all-features`), or set EVENTDRIVEN_SKIP_POSTGRES=1 to skip them"
                ),
            };
            let name = super::unique_name(prefix);
            admin(&admin_url, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| panic!("{e}"));
            let url = crate::stores::with_database(&admin_url, &name);
            Some(Self {
                admin_url,
                name,
                url,
            })
        }
    }

    impl Drop for Database {
        fn drop(&mut self) {
            // FORCE: a killed child's connections may linger for a moment.
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = admin(&self.admin_url, &drop) {
                eprintln!("could not drop the database {}: {e}", self.name);
            }
        }
    }

    /// Runs one statement on the admin connection.
    fn admin(url: &str, sql: &str) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| format!("cannot connect to EVENTDRIVEN_POSTGRES_URL={url}: {e}"))?;
            let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&pool)
                .await
                .map(drop)
                .map_err(|e| format!("{sql}: {e}"));
            pool.close().await;
            done
        })
    }
}
