//! Runnable examples live beside this crate; run them with `cargo run --example NAME`.
//!
//! What the examples share: where their store lives, and (feature `live-view`) the live view
//! that `order_monolith --serve` shows.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use eventdriven::store::Store;

#[cfg(feature = "live-view")]
pub mod live_view;

/// A fresh directory under the system temp directory, removed when dropped (also when the
/// example fails half way).
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `eventdriven-<name>-<pid>-<nanos>` under the system temp directory, created.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("eventdriven-{name}-{}", run_id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `<pid>-<nanos, hex>`: different for every run, also on one shared database.
pub fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// The store an example runs on: the URL of `--store URL` (or `--store=URL`) or of
/// `EVENTDRIVEN_STORE`, or else a fresh SQLite `file` in a [`TempDir`] named `name`. Returns the
/// temp dir (bind it first, `let (_temp, store, place) = ..`: bindings drop in reverse, so it
/// goes after the store), the store, and a line saying where the store is (a URL that was
/// passed in is not shown: it may hold a password).
pub async fn open_store(
    name: &str,
    file: &str,
) -> anyhow::Result<(Option<TempDir>, Store, String)> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    while let Some(arg) = args.next() {
        match arg.strip_prefix("--store=") {
            Some(value) => url = Some(value.to_owned()),
            None if arg == "--store" => url = Some(args.next().context("--store needs a URL")?),
            None => bail!("unknown argument `{arg}`; the one option is `--store URL`"),
        }
    }
    let url = url.or_else(|| {
        std::env::var("EVENTDRIVEN_STORE")
            .ok()
            .filter(|u| !u.is_empty())
    });
    let (url, temp, place) = match url {
        Some(url) => (
            url,
            None,
            "chosen by --store or EVENTDRIVEN_STORE".to_owned(),
        ),
        None => {
            let temp = TempDir::new(name)?;
            let path = temp.0.join(file);
            let place = format!("a fresh {file} in {}", temp.0.display());
            (format!("sqlite:{}", path.display()), Some(temp), place)
        }
    };
    let store = Store::open(&url).await.context("opening the store")?;
    Ok((temp, store, place))
}
