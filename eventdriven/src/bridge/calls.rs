//! Calls to a broker that carry many messages each (SQS's batch sends and deletes, Redis's
//! `XACK` of many ids), made from what waits for them.

use std::collections::VecDeque;
use std::future::Future;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Cuts the next batch (and what it is for) from the front of what waits: a complete one, or
/// with `true` (partial allowed) whatever there is.
pub(crate) type Take<T, K> = fn(&mut VecDeque<T>, bool) -> Option<(K, Vec<T>)>;

/// Runs a batching task: gathers what arrives on `rx` and makes one `call` per batch that
/// `take` cuts from the front, at most `at_once` calls under way.
///
/// A complete batch (full, or followed by work for somewhere else) goes out while fewer than
/// `at_once` calls are under way; a partial one only when none is. So a lone message leaves at
/// once, and under load messages gather into full batches while calls are under way instead
/// of going out one per call. Ends once `rx` is closed and everything was sent.
pub(crate) async fn run_batches<T, K, F>(
    mut rx: mpsc::UnboundedReceiver<T>,
    at_once: usize,
    take: Take<T, K>,
    call: impl Fn(K, Vec<T>) -> F,
) where
    T: Send,
    F: Future<Output = ()> + Send + 'static,
{
    let mut calls = JoinSet::new();
    let mut waiting = VecDeque::new();
    let mut open = true;
    loop {
        while calls.len() < at_once {
            let Some((key, batch)) = take(&mut waiting, calls.is_empty() || !open) else {
                break;
            };
            calls.spawn(call(key, batch));
        }
        if !open && waiting.is_empty() && calls.is_empty() {
            return;
        }
        tokio::select! {
            got = rx.recv(), if open => match got {
                Some(first) => {
                    waiting.push_back(first);
                    while let Ok(next) = rx.try_recv() {
                        waiting.push_back(next);
                    }
                }
                None => open = false,
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::{mpsc, Semaphore};

    use super::*;

    /// Up to 10 numbers, cut like a transport's batches.
    fn take_numbers(waiting: &mut VecDeque<u32>, partial: bool) -> Option<((), Vec<u32>)> {
        let n = waiting.len().min(10);
        (n > 0 && (n == 10 || partial)).then(|| ((), waiting.drain(..n).collect()))
    }

    #[tokio::test]
    async fn batches_go_out_alone_when_idle_and_full_while_calls_are_under_way() {
        let (tx, rx) = mpsc::unbounded_channel();
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let finish = Arc::new(Semaphore::new(0));
        let calls = {
            let (sizes, finish) = (sizes.clone(), finish.clone());
            tokio::spawn(run_batches(rx, 2, take_numbers, move |(), batch| {
                sizes.lock().unwrap().push(batch.len());
                let finish = finish.clone();
                async move { finish.acquire().await.unwrap().forget() }
            }))
        };
        let started = |n: usize| {
            let sizes = sizes.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), async {
                    while sizes.lock().unwrap().len() < n {
                        tokio::task::yield_now().await;
                    }
                })
                .await
                .expect("the calls start");
            }
        };
        // A lone message leaves at once, in a batch of its own.
        tx.send(0).unwrap();
        started(1).await;
        // While it is under way, 25 more: a full batch takes the second call; the rest wait.
        for i in 1..=25 {
            tx.send(i).unwrap();
        }
        started(2).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 10]);
        // As calls end: the next full batch, then the last five once no call is under way.
        finish.add_permits(1);
        started(3).await;
        finish.add_permits(1);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*sizes.lock().unwrap(), [1, 10, 10]);
        finish.add_permits(1);
        started(4).await;
        assert_eq!(*sizes.lock().unwrap(), [1, 10, 10, 5]);
        // Closed: the task ends once its calls did.
        drop(tx);
        finish.add_permits(1);
        tokio::time::timeout(Duration::from_secs(5), calls)
            .await
            .expect("the task ends")
            .unwrap();
    }
}
