//! The inbound side: fetch, decode, publish on the bus, ack once every subscriber is done.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::{Link, Received, Subscription, INCOMING_HEADER};
use crate::delivery::HandlerError;
use crate::{App, IncomingError};

/// The inbound task of a bridge.
pub(crate) struct Inbound {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

pub(crate) fn start(link: Arc<Link>, app: &App) -> Arc<Inbound> {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(link, app.clone(), stopped));
    Arc::new(Inbound {
        stop,
        task: Mutex::new(Some(task)),
    })
}

impl Inbound {
    /// Stops fetching; messages in flight go on.
    pub(crate) fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops fetching and waits (at most `grace`) until every message in flight is settled;
    /// past that, the tasks are dropped and their messages are delivered again by the broker.
    pub(crate) async fn stop_within(&self, grace: Duration) {
        self.signal_stop();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(
                    ?grace,
                    "bridge messages still in flight at shutdown; the broker will deliver them again"
                );
            }
        }
    }
}

/// Fetches while not stopped, at most `max_in_flight` messages unsettled; then waits for
/// the messages in flight.
async fn run(link: Arc<Link>, app: App, mut stopped: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    let mut subscription = None;
    let permits = Arc::new(Semaphore::new(link.topology.max_in_flight));
    let mut pause = Duration::from_millis(100);
    // The last fetch brought all it asked for: the broker has more waiting.
    let mut busy = false;
    while !*stopped.borrow() {
        while tasks.try_join_next().is_some() {}
        let subscribed = match subscription.as_mut() {
            Some(s) => s,
            None => match link.transport.subscribe(&link.topology).await {
                Ok(s) => subscription.insert(s),
                Err(error) => {
                    tracing::warn!(bridge = link.name, %error, "cannot subscribe; trying again");
                    crate::worker::pause(&mut stopped, pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        // Room for one message at least, then all there is.
        let first = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stopped.changed() => break,
        };
        let mut held = vec![first];
        while let Ok(permit) = permits.clone().try_acquire_owned() {
            held.push(permit);
        }
        if busy && subscribed.round_trips() {
            let want = link.topology.max_in_flight.div_ceil(2);
            gather(&permits, &mut held, want, &mut stopped).await;
        }
        let fetched = fetch(
            &link,
            &app,
            &mut stopped,
            subscribed.as_mut(),
            &mut held,
            &mut tasks,
        )
        .await;
        busy = matches!(fetched, Ok(true));
        if let Err(error) = fetched {
            tracing::warn!(bridge = link.name, %error, "cannot fetch; subscribing again");
            // The consumer may be gone (a broker that lost its state): subscribe anew.
            subscription = None;
            crate::worker::pause(&mut stopped, pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        } else {
            pause = Duration::from_millis(100);
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// The longest a fetch waits for more room once it has some.
const GATHER: Duration = Duration::from_millis(5);

/// Adds to `held` the room freed within [`GATHER`], until it holds `want` places.
///
/// Where each fetch costs a round trip, a broker with a backlog would otherwise be asked for
/// the few places freed while the last fetch was handed out, one small fetch after another.
async fn gather(
    permits: &Arc<Semaphore>,
    held: &mut Vec<OwnedSemaphorePermit>,
    want: usize,
    stopped: &mut watch::Receiver<bool>,
) {
    let until = tokio::time::Instant::now() + GATHER;
    while held.len() < want {
        tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => held.push(permit),
                Err(_) => return,
            },
            () = tokio::time::sleep_until(until) => return,
            _ = stopped.changed() => return,
        }
    }
}

/// One fetch: each message is handled on a task of its own with one of `held` (at least one).
/// Tells whether the broker gave all that was asked.
async fn fetch(
    link: &Arc<Link>,
    app: &App,
    stopped: &mut watch::Receiver<bool>,
    subscription: &mut dyn Subscription,
    held: &mut Vec<OwnedSemaphorePermit>,
    tasks: &mut JoinSet<()>,
) -> Result<bool, super::TransportError> {
    let mut batch = subscription.fetch(held.len()).await?;
    loop {
        let next = tokio::select! {
            next = batch.next() => next,
            _ = stopped.changed() => None,
        };
        let message = match next {
            None => return Ok(held.is_empty()),
            Some(Err(e)) => return Err(e),
            Some(Ok(message)) => message,
        };
        let counters = &link.counters;
        counters.received.fetch_add(1, Ordering::Relaxed);
        let Some(permit) = held.pop() else {
            // The broker sent more than asked: not ours to handle now.
            tracing::warn!(
                bridge = link.name,
                "the broker sent more messages than asked for"
            );
            let _ = message.nack(Duration::ZERO).await;
            counters.nacked.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let now = counters.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        counters.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        if *stopped.borrow() {
            // Fetched as the app stops: for another process.
            let _ = message.nack(Duration::ZERO).await;
            counters.nacked.fetch_add(1, Ordering::Relaxed);
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            continue;
        }
        let (link, app) = (link.clone(), app.clone());
        tasks.spawn(async move {
            handle(&link, &app, message).await;
            link.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// How long an ack, nack, reject or progress signal may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// How one message ends.
enum Outcome {
    Ack,
    /// Dead-lettered here with this reason (under this event name): reject it at the broker.
    DeadLetter(String, String),
    /// Not now: deliver it again later, within the redelivery policy.
    Retry(String),
    /// Not here: deliver it again at once (the app is shutting down).
    Release,
}

async fn handle(link: &Link, app: &App, message: Box<dyn Received>) {
    let deliveries = message.deliveries();
    let outcome = match link.decode(message.as_ref()) {
        Err(e) => Outcome::DeadLetter(
            undecoded_name(message.as_ref()),
            format!("not an event this bridge can read: {e}"),
        ),
        Ok(mut event) => {
            event
                .metadata
                .headers
                .insert(INCOMING_HEADER, link.name.as_str());
            let name = event.name.clone();
            match publish(link, app, message.as_ref(), event).await {
                Outcome::DeadLetter(_, reason) => Outcome::DeadLetter(name, reason),
                other => other,
            }
        }
    };
    let counters = &link.counters;
    let settle = match outcome {
        Outcome::Ack => {
            counters.acked.fetch_add(1, Ordering::Relaxed);
            message.ack()
        }
        Outcome::DeadLetter(name, reason) => {
            dead_letter(link, app, &name, &reason, message.as_ref()).await;
            message.reject()
        }
        Outcome::Release => {
            counters.nacked.fetch_add(1, Ordering::Relaxed);
            message.nack(Duration::ZERO)
        }
        Outcome::Retry(reason) => {
            let error = HandlerError::new(reason.clone());
            match link.redelivery.next_delay(deliveries, &error) {
                Some(delay) => {
                    tracing::warn!(bridge = link.name, at = message.locator(), deliveries, ?delay, %reason, "message nacked for a redelivery");
                    counters.nacked.fetch_add(1, Ordering::Relaxed);
                    message.nack(delay)
                }
                None => {
                    let name = undecoded_name(message.as_ref());
                    let reason = format!("{reason}; gave up after {deliveries} deliveries");
                    dead_letter(link, app, &name, &reason, message.as_ref()).await;
                    message.reject()
                }
            }
        }
    };
    let settled = tokio::time::timeout(SETTLE_TIMEOUT, settle).await;
    let settled = match settled {
        Ok(result) => result,
        Err(_) => Err(super::TransportError::Unavailable(format!(
            "no answer within {SETTLE_TIMEOUT:?}"
        ))),
    };
    if let Err(error) = settled {
        // The broker delivers it again after its ack wait: at least once still holds.
        tracing::warn!(bridge = link.name, at = message.locator(), %error, "message not settled at the broker");
    }
}

/// Publishes the event on the bus and waits until every subscriber is done, telling the
/// broker every half ack wait that the work goes on.
async fn publish(
    link: &Link,
    app: &App,
    message: &dyn Received,
    event: crate::store::EventData,
) -> Outcome {
    // Waiting for mailbox room counts too: the whole of it is bounded by the timeout.
    let work = async {
        let handled = app.publish_incoming(event).await?;
        Ok(handled.wait(link.handle_timeout).await)
    };
    let work = async {
        tokio::time::timeout(link.handle_timeout, work)
            .await
            .unwrap_or(Ok(false))
    };
    tokio::pin!(work);
    let every = link.topology.ack_wait / 2;
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = beat.tick() => {
                let progress = tokio::time::timeout(SETTLE_TIMEOUT, message.in_progress()).await;
                if let Ok(Err(error)) = progress {
                    tracing::debug!(bridge = link.name, %error, "progress not sent");
                }
            }
        }
    };
    match result {
        Ok(true) => Outcome::Ack,
        Ok(false) => Outcome::Retry(format!(
            "the subscribers were not done within {:?}",
            link.handle_timeout
        )),
        // Shutting down: for another process (or this one after its restart), at once and
        // without counting against the redelivery policy.
        Err(IncomingError::Refused(crate::Error::ShuttingDown { .. })) => Outcome::Release,
        Err(IncomingError::Refused(e)) => Outcome::Retry(format!("the app did not take it: {e}")),
        // An unknown name, a payload that does not decode: it never will.
        Err(e) => Outcome::DeadLetter(String::new(), e.to_string()),
    }
}

async fn dead_letter(link: &Link, app: &App, name: &str, reason: &str, message: &dyn Received) {
    link.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
    let error = format!("{reason} (at {})", message.locator());
    tracing::warn!(bridge = link.name, message_name = name, %error, "inbound message dead-lettered");
    app.dead_letter_incoming(&link.dead_letter_source, name, error)
        .await;
}

/// The largest body read for a name when it did not decode.
const MAX_SNIFF: usize = 1024 * 1024;

/// The event name of a message that did not decode: its `type` if it can be read, else a
/// placeholder.
fn undecoded_name(message: &dyn Received) -> String {
    let from_header = message
        .headers()
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("ce-type"))
        .map(|(_, v)| v.to_owned());
    from_header
        .or_else(|| {
            if message.body().len() > MAX_SNIFF {
                return None;
            }
            let document: serde_json::Value = serde_json::from_slice(message.body()).ok()?;
            document.get("type")?.as_str().map(str::to_owned)
        })
        .filter(|name| !name.is_empty() && name.len() <= 200)
        .unwrap_or_else(|| "<unreadable>".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes every place of `permits`: dropping one of the returned permits frees its place.
    fn take_all(permits: &Arc<Semaphore>) -> Vec<OwnedSemaphorePermit> {
        std::iter::from_fn(|| permits.clone().try_acquire_owned().ok()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn gather_stops_once_it_holds_what_it_wants() {
        let permits = Arc::new(Semaphore::new(8));
        let mut busy = take_all(&permits);
        let (_stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            while let Some(permit) = busy.pop() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                drop(permit);
            }
        });
        let started = tokio::time::Instant::now();
        let mut held = Vec::new();
        gather(&permits, &mut held, 3, &mut stopped).await;
        assert_eq!(held.len(), 3);
        assert_eq!(started.elapsed(), Duration::from_millis(3));
    }

    #[tokio::test(start_paused = true)]
    async fn gather_waits_no_longer_than_its_cap() {
        let permits = Arc::new(Semaphore::new(8));
        let mut busy = take_all(&permits);
        let (_stop, mut stopped) = watch::channel(false);
        // One place freed, then nothing for a long while: slow handlers.
        drop(busy.pop());
        let started = tokio::time::Instant::now();
        let mut held = Vec::new();
        gather(&permits, &mut held, 4, &mut stopped).await;
        assert_eq!(held.len(), 1);
        assert_eq!(started.elapsed(), GATHER);
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn gather_ends_when_the_bridge_stops() {
        let permits = Arc::new(Semaphore::new(2));
        let busy = take_all(&permits);
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let _ = stop.send(true);
        });
        let started = tokio::time::Instant::now();
        let mut held = Vec::new();
        gather(&permits, &mut held, 2, &mut stopped).await;
        assert!(held.is_empty());
        assert_eq!(started.elapsed(), Duration::from_millis(1));
        drop(busy);
    }
}
