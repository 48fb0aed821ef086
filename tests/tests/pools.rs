//! Actor pools: one key always lands on the same instance, so per-key order holds while
//! keys run in parallel; unkeyed work is spread round-robin. Property-tested.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::Error;
use proptest::prelude::*;

#[derive(Event, Clone, Debug)]
struct Deposit {
    account: u32,
    seq: u32,
}

#[derive(Command, Debug)]
#[command(reply = usize)]
struct Chore;

/// (instance, account, seq) of every deposit handled.
type Seen = Arc<Mutex<Vec<(usize, u32, u32)>>>;

struct Teller {
    instance: usize,
    seen: Seen,
}

#[handlers]
impl Teller {
    #[subscribe]
    async fn on_deposit(&mut self, ev: &Deposit) {
        if ev.seq.is_multiple_of(7) {
            tokio::task::yield_now().await; // let the instances interleave
        }
        self.seen
            .lock()
            .unwrap()
            .push((self.instance, ev.account, ev.seq));
    }

    #[handle]
    fn chore(&mut self, _: Chore) -> usize {
        self.instance
    }
}

fn tellers(seen: &Seen) -> impl Fn() -> Teller + Send + Sync + 'static {
    let next = Arc::new(AtomicUsize::new(0));
    let seen = seen.clone();
    move || Teller {
        instance: next.fetch_add(1, Ordering::SeqCst),
        seen: seen.clone(),
    }
}

/// Checks that each account's deposits were handled in order by one instance.
fn check_per_key_order(seen: &[(usize, u32, u32)], expected_per_key: &HashMap<u32, Vec<u32>>) {
    let mut per_key: HashMap<u32, (Vec<u32>, Vec<usize>)> = HashMap::new();
    for &(instance, account, seq) in seen {
        let entry = per_key.entry(account).or_default();
        entry.0.push(seq);
        entry.1.push(instance);
    }
    for (account, expected) in expected_per_key {
        let (seqs, instances) = &per_key[account];
        assert_eq!(seqs, expected, "account {account} in order, complete");
        assert!(
            instances.windows(2).all(|w| w[0] == w[1]),
            "account {account} on one instance"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_pool_keeps_per_key_order_and_spreads_keys() {
    let seen = Seen::default();
    let app = App::builder()
        .actor_pool_with(4, tellers(&seen), Mailbox::bounded(8))
        .partition_by(|d: &Deposit| d.account)
        .build()
        .await
        .unwrap();
    let mut expected: HashMap<u32, Vec<u32>> = HashMap::new();
    for seq in 0..200 {
        for account in 0..20 {
            app.publish(Deposit { account, seq }).await.unwrap();
            expected.entry(account).or_default().push(seq);
        }
    }
    app.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4000);
    check_per_key_order(&seen, &expected);
    let busy: std::collections::HashSet<_> = seen.iter().map(|(i, _, _)| *i).collect();
    assert!(
        busy.len() > 1,
        "keys were spread over the instances: {busy:?}"
    );
    let stats = app.stats();
    assert_eq!(stats.actors.len(), 4, "one entry per instance");
    assert!(stats
        .actors
        .iter()
        .all(|a| a.actor == "Teller" && a.peak <= 8));
}

#[tokio::test]
async fn unkeyed_work_goes_round_robin() {
    let seen = Seen::default();
    let app = App::builder()
        .actor_pool(3, tellers(&seen))
        .build()
        .await
        .unwrap();
    let mut counts = [0; 3];
    for _ in 0..30 {
        counts[app.send(Chore).await.unwrap()] += 1;
    }
    assert_eq!(counts, [10, 10, 10]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn partition_by_without_a_pool_is_a_build_error() {
    let seen = Seen::default();
    let err = App::builder()
        .actor(tellers(&seen)())
        .partition_by(|d: &Deposit| d.account)
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Config(text) if text.contains("must follow `actor_pool`")),
        "{err}"
    );
    let err = App::builder()
        .actor_pool(0, tellers(&seen))
        .build()
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the pool size, mailbox size and interleaving of keys, each key's messages are
    /// handled completely, in the order they were published, by one instance.
    #[test]
    fn per_key_order_holds_in_any_pool(
        size in 1usize..6,
        capacity in 1usize..8,
        keys in proptest::collection::vec(0u32..12, 1..300),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let seen = Seen::default();
            let app = App::builder()
                .actor_pool_with(size, tellers(&seen), Mailbox::bounded(capacity))
                .partition_by(|d: &Deposit| d.account)
                .build()
                .await
                .unwrap();
            let mut expected: HashMap<u32, Vec<u32>> = HashMap::new();
            for (seq, account) in keys.iter().enumerate() {
                let seq = seq as u32;
                app.publish(Deposit { account: *account, seq }).await.unwrap();
                expected.entry(*account).or_default().push(seq);
            }
            tokio::time::timeout(Duration::from_secs(60), app.shutdown()).await.unwrap().unwrap();
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), keys.len());
            check_per_key_order(&seen, &expected);
        });
    }
}
