//! Ordered subscriptions and sequenced dead letters: a failed message holds back the later
//! messages of its key (through its retries, and in the dead letters until it is retried),
//! while other keys go on. Property-tested.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::delivery::Reason;
use eventdriven::prelude::*;
use proptest::prelude::*;

#[derive(Event, Clone, Debug)]
struct Step {
    order: u32,
    n: u32,
}

/// Attempts that fail, by (order, n): how many more times to fail.
type Failures = Arc<Mutex<HashMap<(u32, u32), u32>>>;
type Handled = Arc<Mutex<Vec<(u32, u32)>>>;

struct Fulfilment {
    fail: Failures,
    handled: Handled,
}

#[handlers]
impl Fulfilment {
    #[subscribe(ordered, key = |ev: &Step| ev.order, retry = 2, backoff = "10ms")]
    async fn on_step(&mut self, ev: &Step) -> Result<(), String> {
        tokio::task::yield_now().await;
        if let Some(left) = self.fail.lock().unwrap().get_mut(&(ev.order, ev.n)) {
            if *left > 0 {
                *left -= 1;
                return Err(format!("step {}/{} failed", ev.order, ev.n));
            }
        }
        self.handled.lock().unwrap().push((ev.order, ev.n));
        Ok(())
    }
}

async fn app(fail: &Failures, handled: &Handled) -> App {
    App::builder()
        .actor(Fulfilment {
            fail: fail.clone(),
            handled: handled.clone(),
        })
        .build()
        .await
        .unwrap()
}

async fn until(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("condition reached in time");
}

fn of(handled: &[(u32, u32)], order: u32) -> Vec<u32> {
    handled
        .iter()
        .filter(|(o, _)| *o == order)
        .map(|(_, n)| *n)
        .collect()
}

#[tokio::test]
async fn a_retrying_message_holds_back_its_key_only() {
    let fail = Failures::default();
    fail.lock().unwrap().insert((1, 0), 1);
    let handled = Handled::default();
    let app = app(&fail, &handled).await;
    for n in 0..3 {
        app.publish(Step { order: 1, n }).await.unwrap();
        app.publish(Step { order: 2, n }).await.unwrap();
    }
    app.shutdown().await.unwrap();
    let handled = handled.lock().unwrap().clone();
    assert_eq!(
        of(&handled, 1),
        [0, 1, 2],
        "order 1 kept its order through the retry"
    );
    assert_eq!(of(&handled, 2), [0, 1, 2]);
    let first_of_1 = handled.iter().position(|s| *s == (1, 0)).unwrap();
    let last_of_2 = handled.iter().position(|s| *s == (2, 2)).unwrap();
    assert!(
        last_of_2 < first_of_1,
        "order 2 did not wait for order 1: {handled:?}"
    );
    assert!(app.dead_letters().is_empty());
}

#[tokio::test]
async fn a_dead_lettered_message_parks_its_sequence_until_it_is_retried() {
    let fail = Failures::default();
    fail.lock().unwrap().insert((1, 1), 3); // fails all three attempts
    let handled = Handled::default();
    let app = app(&fail, &handled).await;
    for n in 0..4 {
        app.publish(Step { order: 1, n }).await.unwrap();
        app.publish(Step { order: 2, n }).await.unwrap();
    }
    until(|| app.dead_letters().len() == 1 && of(&handled.lock().unwrap(), 2).len() == 4).await;
    until(|| app.stats().actors[0].queued == 0).await;
    assert_eq!(
        of(&handled.lock().unwrap(), 1),
        [0],
        "1/2 and 1/3 wait behind 1/1"
    );
    assert_eq!(app.stats().actors[0].parked, 2);

    let head = app.dead_letters().list()[0].clone();
    assert_eq!(head.event::<Step>().map(|s| (s.order, s.n)), Some((1, 1)));
    assert_eq!(head.reason, Reason::Failed);
    // Retrying the head releases the sequence, in order.
    app.retry_dead_letter(head.seq).await.unwrap();
    until(|| of(&handled.lock().unwrap(), 1).len() == 4).await;
    assert_eq!(of(&handled.lock().unwrap(), 1), [0, 1, 2, 3]);
    assert_eq!(app.stats().actors[0].parked, 0);
    app.shutdown().await.unwrap();
    assert!(app.dead_letters().is_empty());
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_parked_sequence_and_dead_letters_it() {
    let fail = Failures::default();
    fail.lock().unwrap().insert((1, 0), 3);
    let handled = Handled::default();
    let app = app(&fail, &handled).await;
    for n in 0..3 {
        app.publish(Step { order: 1, n }).await.unwrap();
    }
    until(|| app.dead_letters().len() == 1).await;
    until(|| app.stats().actors[0].parked == 2).await;
    app.shutdown().await.unwrap();
    let letters = app.dead_letters().list();
    let reasons: Vec<_> = letters
        .iter()
        .map(|dl| (dl.event::<Step>().unwrap().n, dl.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (0, Reason::Failed),
            (1, Reason::Shutdown),
            (2, Reason::Shutdown)
        ]
    );
    assert!(handled.lock().unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever fails (within the retry budget) and however keys interleave, every key's
    /// messages are handled in publish order, each exactly once.
    #[test]
    fn ordered_subscriptions_keep_per_key_order_through_retries(
        steps in proptest::collection::vec((0u32..5, 0u32..3), 1..120),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let fail = Failures::default();
            let handled = Handled::default();
            let mut expected: HashMap<u32, Vec<u32>> = HashMap::new();
            let app = app(&fail, &handled).await;
            for (n, (order, failures)) in steps.iter().enumerate() {
                let n = n as u32;
                fail.lock().unwrap().insert((*order, n), *failures);
                expected.entry(*order).or_default().push(n);
                app.publish(Step { order: *order, n }).await.unwrap();
            }
            tokio::time::timeout(Duration::from_secs(60), app.shutdown()).await.unwrap().unwrap();
            let handled = handled.lock().unwrap().clone();
            let unique: HashSet<_> = handled.iter().collect();
            assert_eq!(unique.len(), handled.len(), "nothing handled twice");
            for (order, ns) in &expected {
                assert_eq!(&of(&handled, *order), ns, "order {order}");
            }
            assert!(app.dead_letters().is_empty());
        });
    }
}
