//! Streams, in virtual time: map/filter, tumbling, sliding and session windows, aggregate and
//! reduce, the watermark and out-of-orderness, allowed lateness and late events, processing
//! time and idle streams, the interval join's bound, shutdown, and backpressure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::stream::{LateEvent, Session, Sliding, Stream, Tumbling, Window};
use eventdriven::Timestamp;
use tokio::sync::Semaphore;

/// Every wait in these tests is bounded by this (virtual time).
const LIMIT: Duration = Duration::from_secs(3600);

/// Event times are seconds after this (so watermarks never reach the epoch); a whole number
/// of hours, so windows aligned on the epoch are aligned on it too.
const BASE: u64 = 300 * 3600;

fn at(s: u64) -> Timestamp {
    Timestamp::from_unix_nanos((BASE + s) * 1_000_000_000)
}

fn secs(t: Timestamp) -> u64 {
    t.as_unix_nanos() / 1_000_000_000 - BASE
}

#[derive(Event, Clone, Debug)]
struct Order {
    id: u32,
    customer: u32,
    cents: u64,
    at: Timestamp,
}

fn order(customer: u32, cents: u64, s: u64) -> Order {
    Order {
        id: 0,
        customer,
        cents,
        at: at(s),
    }
}

#[derive(Event, Clone, Debug)]
struct Payment {
    order: u32,
    at: Timestamp,
}

/// A closed window, in seconds after [`BASE`].
#[derive(Event, Clone, Debug, PartialEq, Eq)]
struct Total {
    key: u32,
    start: u64,
    end: u64,
    value: u64,
    revision: u32,
}

impl From<Window<u32, u64>> for Total {
    fn from(w: Window<u32, u64>) -> Self {
        Total {
            key: w.key,
            start: secs(w.start),
            end: secs(w.end),
            value: w.value,
            revision: w.revision,
        }
    }
}

#[derive(Event, Clone, Debug, PartialEq, Eq)]
struct Big {
    customer: u32,
    cents: u64,
}

#[derive(Event, Clone, Debug, PartialEq, Eq)]
struct Paid {
    order: u32,
    ordered: u64,
    paid: u64,
}

#[derive(Event, Clone, Debug, PartialEq, Eq)]
struct Windows(u64);

/// Records what the streams publish.
#[derive(Clone, Default)]
struct Sink {
    totals: Arc<Mutex<Vec<Total>>>,
    big: Arc<Mutex<Vec<Big>>>,
    paid: Arc<Mutex<Vec<Paid>>>,
    late: Arc<Mutex<Vec<(u32, u64, u64)>>>,
    windows: Arc<Mutex<Vec<u64>>>,
}

#[handlers]
impl Sink {
    #[subscribe]
    fn on_total(&mut self, ev: &Total) {
        self.totals.lock().unwrap().push(ev.clone());
    }

    #[subscribe]
    fn on_big(&mut self, ev: &Big) {
        self.big.lock().unwrap().push(ev.clone());
    }

    #[subscribe]
    fn on_paid(&mut self, ev: &Paid) {
        self.paid.lock().unwrap().push(ev.clone());
    }

    #[subscribe]
    fn on_late(&mut self, ev: &LateEvent<Order>) {
        self.late.lock().unwrap().push((
            ev.event.customer,
            secs(ev.event_time),
            secs(ev.watermark),
        ));
    }

    #[subscribe]
    fn on_windows(&mut self, ev: &Windows) {
        self.windows.lock().unwrap().push(ev.0);
    }
}

impl Sink {
    fn totals(&self) -> Vec<Total> {
        self.totals.lock().unwrap().clone()
    }
}

fn total(key: u32, start: u64, end: u64, value: u64) -> Total {
    Total {
        key,
        start,
        end,
        value,
        revision: 0,
    }
}

/// Lets every task run until nothing is left to do but wait for a timer: with tokio's
/// clock paused, a sleep ends only once the runtime is idle.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

async fn publish<E: Event>(app: &App, event: E) {
    tokio::time::timeout(LIMIT, app.publish(event))
        .await
        .expect("room in time")
        .unwrap();
}

async fn publish_all(app: &App, orders: impl IntoIterator<Item = Order>) {
    for o in orders {
        publish(app, o).await;
    }
}

/// Per customer, the cents of each window, on the orders' own time.
fn cents_per(
    window: impl Into<eventdriven::stream::WindowKind>,
    tune: impl FnOnce(Stream<Order>) -> Stream<Order>,
) -> impl FnOnce(Stream<Order>) -> eventdriven::stream::Pipeline {
    let window = window.into();
    move |s: Stream<Order>| {
        tune(s.event_time(|o| o.at))
            .key_by(|o| o.customer)
            .window(window)
            .aggregate(0, |cents, o| *cents += o.cents)
            .map(Total::from)
            .publish()
    }
}

async fn app_with(sink: &Sink, builder: eventdriven::AppBuilder) -> App {
    builder.actor(sink.clone()).build().await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn map_and_filter_publish_each_event_as_it_comes() {
    let sink = Sink::default();
    let app = app_with(
        &sink,
        App::builder().stream(|s: Stream<Order>| {
            s.filter(|o| o.cents >= 1_000)
                .map(|o| Big {
                    customer: o.customer,
                    cents: o.cents,
                })
                .publish()
        }),
    )
    .await;
    publish_all(
        &app,
        [order(1, 500, 0), order(2, 5_000, 1), order(3, 1_000, 2)],
    )
    .await;
    settle().await;
    assert_eq!(
        *sink.big.lock().unwrap(),
        [
            Big {
                customer: 2,
                cents: 5_000
            },
            Big {
                customer: 3,
                cents: 1_000
            }
        ]
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn tumbling_windows_close_when_the_watermark_passes_their_end() {
    let sink = Sink::default();
    let builder = App::builder().stream(cents_per(Tumbling::of(Duration::from_secs(60)), |s| s));
    let app = app_with(&sink, builder).await;

    publish_all(
        &app,
        [order(1, 100, 10), order(1, 200, 20), order(2, 7, 30)],
    )
    .await;
    settle().await;
    assert_eq!(sink.totals(), [], "no window ends before event time 30");

    // Event time 60 is the end of [0, 60): both keys' windows close, in key order.
    publish(&app, order(1, 1, 60)).await;
    settle().await;
    assert_eq!(sink.totals(), [total(1, 0, 60, 300), total(2, 0, 60, 7)]);

    // Virtual time alone does not move event time.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(sink.totals().len(), 2);
    app.shutdown().await.unwrap();
    assert_eq!(
        sink.totals()[2],
        total(1, 60, 120, 1),
        "published at shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn out_of_orderness_holds_the_watermark_back() {
    let sink = Sink::default();
    let builder = App::builder().stream(cents_per(Tumbling::of(Duration::from_secs(60)), |s| {
        s.out_of_orderness(Duration::from_secs(10))
    }));
    let app = app_with(&sink, builder).await;

    // Watermark 55 after the second: 55 is on time and still in [0, 60).
    publish_all(&app, [order(1, 1, 50), order(1, 10, 65), order(1, 100, 55)]).await;
    settle().await;
    assert_eq!(sink.totals(), []);
    // Watermark 61: [0, 60) closes with 50 and 55, not 65.
    publish(&app, order(1, 1_000, 71)).await;
    settle().await;
    assert_eq!(sink.totals(), [total(1, 0, 60, 101)]);
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn late_events_are_dead_lettered_with_the_reason() {
    let sink = Sink::default();
    let builder = App::builder().stream(cents_per(Tumbling::of(Duration::from_secs(60)), |s| {
        s.name("cents")
    }));
    let app = app_with(&sink, builder).await;

    publish_all(&app, [order(1, 1, 100), order(1, 2, 30)]).await;
    settle().await;
    let letters = app.dead_letters().list();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].actor, "stream");
    assert!(letters[0].is::<Order>());
    assert_eq!(letters[0].event::<Order>().unwrap().cents, 2);
    assert!(
        letters[0]
            .error
            .starts_with("late event: stream `cents` got `Order` at event time"),
        "{}",
        letters[0].error
    );
    app.shutdown().await.unwrap();
    // The late event counted nowhere.
    assert_eq!(sink.totals(), [total(1, 60, 120, 1)]);
}

#[tokio::test(start_paused = true)]
async fn late_events_can_be_published_as_a_side_output() {
    let sink = Sink::default();
    let builder = App::builder().stream(cents_per(Tumbling::of(Duration::from_secs(60)), |s| {
        s.publish_late()
    }));
    let app = app_with(&sink, builder).await;

    publish_all(&app, [order(1, 1, 100), order(4, 2, 30)]).await;
    settle().await;
    assert_eq!(*sink.late.lock().unwrap(), [(4, 30, 100)]);
    assert!(app.dead_letters().is_empty());
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn late_events_without_a_subscriber_for_the_side_output_are_dead_lettered() {
    let app = App::builder()
        .stream(cents_per(Tumbling::of(Duration::from_secs(60)), |s| {
            s.publish_late()
        }))
        .build()
        .await
        .unwrap();
    publish_all(&app, [order(1, 1, 100), order(4, 2, 30)]).await;
    settle().await;
    let letters = app.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]
            .error
            .ends_with("(and nothing subscribes to its `LateEvent`)"),
        "{}",
        letters[0].error
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn allowed_lateness_updates_a_closed_window_then_turns_events_away() {
    let sink = Sink::default();
    let builder = App::builder().stream(cents_per(Tumbling::of(Duration::from_secs(60)), |s| {
        s.allowed_lateness(Duration::from_secs(30))
    }));
    let app = app_with(&sink, builder).await;

    publish_all(&app, [order(1, 1, 10), order(1, 10, 70)]).await;
    settle().await;
    assert_eq!(sink.totals(), [total(1, 0, 60, 1)]);

    // 50 is 20 s behind the watermark (70): within the allowed lateness, an update of the
    // window already published.
    publish(&app, order(1, 100, 50)).await;
    settle().await;
    assert_eq!(
        sink.totals()[1],
        Total {
            revision: 1,
            ..total(1, 0, 60, 101)
        }
    );

    // Watermark 95: [0, 60) is gone; 25 is 70 s behind it, late (so is 64, 31 s behind).
    publish(&app, order(1, 1_000, 95)).await;
    publish(&app, order(1, 10_000, 25)).await;
    publish(&app, order(1, 10_000, 64)).await;
    publish(&app, order(1, 10_000, 65)).await;
    settle().await;
    assert_eq!(sink.totals().len(), 2);
    assert_eq!(app.dead_letters().len(), 2);
    app.shutdown().await.unwrap();
    assert_eq!(sink.totals()[2], total(1, 60, 120, 11_010));
}

#[tokio::test(start_paused = true)]
async fn sliding_windows_count_an_event_in_each_window_it_falls_in() {
    let sink = Sink::default();
    let sliding = Sliding::of(Duration::from_secs(60)).every(Duration::from_secs(30));
    let app = app_with(&sink, App::builder().stream(cents_per(sliding, |s| s))).await;

    // 40 falls in [0, 60) and [30, 90); 70 in [30, 90) and [60, 120).
    publish_all(&app, [order(1, 1, 40), order(1, 10, 70)]).await;
    settle().await;
    assert_eq!(sink.totals(), [total(1, 0, 60, 1)]);
    publish(&app, order(1, 100, 130)).await;
    settle().await;
    assert_eq!(
        sink.totals(),
        [
            total(1, 0, 60, 1),
            total(1, 30, 90, 11),
            total(1, 60, 120, 10)
        ]
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn session_windows_close_after_the_gap_and_merge_when_bridged() {
    let sink = Sink::default();
    let builder = App::builder()
        .stream(cents_per(Session::with_gap(Duration::from_secs(30)), |s| {
            s.out_of_orderness(Duration::from_secs(60))
        }));
    let app = app_with(&sink, builder).await;

    // Customer 1: 0 and 50 are two sessions until 25 bridges them: [0, 80).
    // Customer 2: 10 alone: [10, 40).
    publish_all(
        &app,
        [
            order(1, 1, 0),
            order(1, 10, 50),
            order(2, 5, 10),
            order(1, 100, 25),
        ],
    )
    .await;
    // Watermark 50 (110 - 60): customer 2's session ended at 40.
    publish(&app, order(3, 0, 110)).await;
    settle().await;
    assert_eq!(sink.totals(), [total(2, 10, 40, 5)]);
    // Watermark 80: customer 1's merged session ends.
    publish(&app, order(4, 0, 140)).await;
    settle().await;
    assert_eq!(sink.totals(), [total(2, 10, 40, 5), total(1, 0, 80, 111)]);
    app.shutdown().await.unwrap();
    assert_eq!(
        sink.totals()[2..],
        [total(3, 110, 140, 0), total(4, 140, 170, 0)]
    );
}

#[tokio::test(start_paused = true)]
async fn reduce_and_count_close_like_aggregate() {
    let sink = Sink::default();
    let app = app_with(
        &sink,
        App::builder()
            .stream(|s: Stream<Order>| {
                s.event_time(|o| o.at)
                    .map(|o| (o.customer, o.cents))
                    .key_by(|(customer, _)| *customer)
                    .window(Tumbling::of(Duration::from_secs(60)))
                    .reduce(|a, b| (a.0, a.1.max(b.1)))
                    .map(|w| Big {
                        customer: w.key,
                        cents: w.value.1,
                    })
                    .publish()
            })
            .stream(|s: Stream<Order>| {
                s.event_time(|o| o.at)
                    .key_by(|o| o.customer)
                    .window(Tumbling::of(Duration::from_secs(60)))
                    .count()
                    .filter(|w| w.value > 1)
                    .map(|w| Windows(w.value))
                    .publish()
            }),
    )
    .await;
    publish_all(
        &app,
        [
            order(1, 5, 1),
            order(1, 9, 2),
            order(1, 3, 3),
            order(2, 4, 4),
        ],
    )
    .await;
    publish(&app, order(9, 0, 60)).await;
    settle().await;
    assert_eq!(
        *sink.big.lock().unwrap(),
        [
            Big {
                customer: 1,
                cents: 9
            },
            Big {
                customer: 2,
                cents: 4
            }
        ]
    );
    assert_eq!(*sink.windows.lock().unwrap(), [3]);
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn processing_time_windows_close_on_a_timer_without_more_events() {
    let sink = Sink::default();
    let app = app_with(
        &sink,
        App::builder().stream(|s: Stream<Order>| {
            s.processing_time()
                .key_by(|o| o.customer)
                .window(Tumbling::of(Duration::from_secs(60)))
                .aggregate(0, |cents, o| *cents += o.cents)
                .map(Total::from)
                .publish()
        }),
    )
    .await;
    // Event times do not matter on processing time (and nothing is late).
    publish_all(&app, [order(1, 1, 500), order(1, 10, 0)]).await;
    settle().await;
    assert_eq!(sink.totals(), []);
    tokio::time::timeout(LIMIT, async {
        while sink.totals().is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await
    .expect("the window closes on its timer");
    let totals = sink.totals();
    assert_eq!(totals.len(), 1);
    assert_eq!((totals[0].key, totals[0].value), (1, 11));
    assert_eq!(totals[0].end - totals[0].start, 60);
    assert!(app.dead_letters().is_empty());
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_stream_moves_event_time_on_with_the_clock_when_asked() {
    let sink = Sink::default();
    let builder = App::builder().stream(cents_per(Tumbling::of(Duration::from_secs(60)), |s| {
        s.advance_when_idle(Duration::from_secs(10))
    }));
    let app = app_with(&sink, builder).await;

    publish_all(&app, [order(1, 1, 30), order(1, 2, 40)]).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(sink.totals(), [], "not idle yet");
    // Idle since event time 40: the watermark reaches 60 twenty seconds after the last event.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(sink.totals(), []);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.totals(), [total(1, 0, 60, 3)]);
    app.shutdown().await.unwrap();
}

/// Orders joined with their payments within a minute.
fn paid_within_a_minute(s: Stream<Order>) -> eventdriven::stream::Pipeline {
    s.event_time(|o| o.at)
        .out_of_orderness(Duration::from_secs(300))
        .key_by(|o| o.id)
        .join(
            Stream::<Payment>::new()
                .event_time(|p| p.at)
                .key_by(|p| p.order),
            Duration::from_secs(60),
        )
        .map(|id, o, p| Paid {
            order: *id,
            ordered: secs(o.at),
            paid: secs(p.at),
        })
        .publish()
}

#[tokio::test(start_paused = true)]
async fn the_join_pairs_events_of_one_key_within_the_bound_only() {
    let sink = Sink::default();
    let app = app_with(&sink, App::builder().stream(paid_within_a_minute)).await;

    let o = |id, s| Order {
        id,
        customer: 0,
        cents: 0,
        at: at(s),
    };
    let p = |order, s| Payment { order, at: at(s) };
    publish(&app, o(1, 10)).await;
    publish(&app, o(2, 20)).await;
    publish(&app, p(1, 70)).await; // 60 s after: inside (the bound is inclusive)
    publish(&app, p(2, 81)).await; // 61 s after: outside
    publish(&app, p(3, 30)).await; // no such order
    publish(&app, p(4, 100)).await; // before its order, within the bound
    publish(&app, o(4, 130)).await;
    settle().await;
    assert_eq!(
        *sink.paid.lock().unwrap(),
        [
            Paid {
                order: 1,
                ordered: 10,
                paid: 70
            },
            Paid {
                order: 4,
                ordered: 130,
                paid: 100
            }
        ]
    );
    app.shutdown().await.unwrap();
    assert_eq!(
        sink.paid.lock().unwrap().len(),
        2,
        "a join publishes nothing at shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn the_join_turns_late_events_away() {
    let sink = Sink::default();
    let app = app_with(&sink, App::builder().stream(paid_within_a_minute)).await;
    // Watermark 1000 - 300 = 700: a payment at 600 is late.
    publish(
        &app,
        Order {
            id: 1,
            customer: 0,
            cents: 0,
            at: at(1_000),
        },
    )
    .await;
    publish(
        &app,
        Payment {
            order: 1,
            at: at(600),
        },
    )
    .await;
    settle().await;
    let letters = app.dead_letters().list();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].is::<Payment>());
    assert!(
        letters[0].error.contains("late event"),
        "{}",
        letters[0].error
    );
    assert!(sink.paid.lock().unwrap().is_empty());
    app.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_publishes_open_windows_also_of_streams_fed_by_streams() {
    let sink = Sink::default();
    let app = app_with(
        &sink,
        App::builder()
            .stream(cents_per(Tumbling::of(Duration::from_secs(60)), |s| s))
            // Counts the windows the first stream publishes, per hour of the wall clock.
            .stream(|s: Stream<Total>| {
                s.key_by(|_| 0u8)
                    .window(Tumbling::of(Duration::from_secs(3600)))
                    .count()
                    .map(|w| Windows(w.value))
                    .publish()
            }),
    )
    .await;
    publish_all(&app, [order(1, 1, 10), order(2, 2, 20)]).await;
    settle().await;
    assert_eq!(sink.totals(), []);
    app.shutdown().await.unwrap();
    assert_eq!(sink.totals(), [total(1, 0, 60, 1), total(2, 0, 60, 2)]);
    // The hour may turn between the two (wall clock): 2, or 1 and 1.
    assert_eq!(sink.windows.lock().unwrap().iter().sum::<u64>(), 2);
}

/// Blocks on a gate in its handler.
struct Gated {
    gate: Arc<Semaphore>,
    seen: Arc<Mutex<Vec<u64>>>,
}

#[handlers]
impl Gated {
    #[subscribe]
    async fn on_big(&mut self, ev: &Big) {
        self.gate.acquire().await.expect("gate open").forget();
        self.seen.lock().unwrap().push(ev.cents);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_has_a_bounded_mailbox_and_waits_for_its_subscribers() {
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = App::builder()
        .send_timeout(LIMIT)
        .actor_with(
            Gated {
                gate: gate.clone(),
                seen: seen.clone(),
            },
            Mailbox::bounded(1),
        )
        .stream(|s: Stream<Order>| {
            s.mailbox(Mailbox::bounded(1))
                .map(|o| Big {
                    customer: o.customer,
                    cents: o.cents,
                })
                .publish()
        })
        .build()
        .await
        .unwrap();

    // 1 is in the subscriber's handler, 2 in its mailbox, 3 in the stream's handler waiting
    // for room, 4 in the stream's mailbox: the fifth finds no room.
    publish_all(&app, (1..=4).map(|n| order(0, n, 0))).await;
    settle().await;
    let refused = app.try_publish(order(0, 5, 0)).expect_err("no room");
    assert!(refused.is_full(), "{refused:?}");
    let stream = app
        .stats()
        .actors
        .into_iter()
        .find(|a| a.actor == "stream:Order")
        .expect("the stream is an actor");
    assert_eq!(stream.queued, 1);

    let publisher = tokio::spawn({
        let app = app.clone();
        async move { app.publish(order(0, 5, 0)).await }
    });
    gate.add_permits(5);
    tokio::time::timeout(LIMIT, publisher)
        .await
        .expect("the publisher gets room")
        .unwrap()
        .unwrap();
    app.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn misconfigured_windows_fail_the_build() {
    let sliding = Sliding::of(Duration::from_secs(10)).every(Duration::from_secs(20));
    let error = App::builder()
        .stream(cents_per(sliding, |s| s))
        .build()
        .await
        .err()
        .expect("a sliding window with gaps is refused");
    assert!(error.to_string().contains("leaves gaps"), "{error}");
    let error = App::builder()
        .stream(|s: Stream<Order>| {
            s.mailbox(Mailbox::bounded(0))
                .map(|o| Big {
                    customer: o.customer,
                    cents: 0,
                })
                .publish()
        })
        .build()
        .await
        .err()
        .expect("an empty mailbox is refused");
    assert!(error.to_string().contains("capacity 0"), "{error}");
    let error = App::builder()
        .stream(checkpointed_sales)
        .stream(checkpointed_sales)
        .build()
        .await
        .err()
        .expect("two checkpoints of one name are refused");
    assert!(
        error
            .to_string()
            .contains("two checkpointed streams are named `sales-per-minute`"),
        "{error}"
    );
}

/// A scratch directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("eventdriven-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct Sale {
    shop: u32,
    cents: u64,
    at_s: u64,
}

/// Cents per shop per minute, checkpointed in the store.
fn checkpointed_sales(s: Stream<Sale>) -> eventdriven::stream::Pipeline {
    s.name("sales-per-minute")
        .event_time(|sale| at(sale.at_s))
        .key_by(|sale| sale.shop)
        .window(Tumbling::of(Duration::from_secs(60)))
        .aggregate_checkpointed(0, |cents, sale| *cents += sale.cents)
        .map(Total::from)
        .publish()
}

fn sale(shop: u32, cents: u64, at_s: u64) -> Sale {
    Sale { shop, cents, at_s }
}

/// One app's life on the SQLite file `db`, in a runtime of its own: `run` publishes; the
/// runtime is dropped at the end (every task with it, no shutdown) unless `run` shuts the app
/// down itself. Returns what the sink saw and the dead letters' count.
fn life<F>(db: &std::path::Path, run: impl FnOnce(App) -> F) -> (Vec<Total>, usize)
where
    F: std::future::Future<Output = App>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sink = Sink::default();
    let letters = runtime.block_on(async {
        let store = eventdriven::store::Store::sqlite(db).await.unwrap();
        let app = App::builder()
            .store(store)
            .actor(sink.clone())
            .stream(checkpointed_sales)
            .build()
            .await
            .unwrap();
        let app = tokio::time::timeout(Duration::from_secs(60), run(app))
            .await
            .expect("the app's work ends in time");
        app.dead_letters().len()
    });
    drop(runtime);
    (sink.totals(), letters)
}

/// Waits until the stream's checkpoint is at `version` (one per message it handled).
async fn checkpointed(db: &std::path::Path, version: u64) {
    let store = eventdriven::store::Store::sqlite(db).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let snapshot = store
                .load_snapshot("eventdriven.stream/sales-per-minute")
                .await
                .unwrap();
            if snapshot.is_some_and(|s| s.version >= version) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the checkpoint is written");
}

#[test]
fn checkpointed_windows_survive_a_crash_and_close_with_the_right_total() {
    let dir = Scratch::new("stream-checkpoint");
    let db = dir.0.join("app.db");

    // First life: two sales in minute 0 for shop 1, one for shop 2; then the process dies
    // (its runtime is dropped, no shutdown) with the minute still open.
    let (totals, _) = life(&db, |app| async {
        for s in [sale(1, 100, 10), sale(1, 200, 20), sale(2, 5, 25)] {
            app.publish(s).await.unwrap();
        }
        // The start tick and three sales.
        checkpointed(&db, 4).await;
        app
    });
    assert_eq!(totals, []);

    // Second life: the windows and the watermark (25) come back. 15 is late now; 30 still
    // counts; 60 closes minute 0 with the sales of both lives.
    let (totals, letters) = life(&db, |app| async {
        for s in [sale(1, 10_000, 15), sale(1, 400, 30), sale(3, 1, 60)] {
            app.publish(s).await.unwrap();
        }
        // Shutdown keeps minute 1 (shop 3) in the checkpoint instead of publishing it.
        app.shutdown().await.unwrap();
        app
    });
    assert_eq!(totals, [total(1, 0, 60, 700), total(2, 0, 60, 5)]);
    assert_eq!(letters, 1, "the late sale");

    // Third life: minute 1 closes with what the second life left in it.
    let (totals, _) = life(&db, |app| async {
        app.publish(sale(3, 2, 125)).await.unwrap();
        app.shutdown().await.unwrap();
        app
    });
    assert_eq!(totals, [total(3, 60, 120, 1)]);
}
