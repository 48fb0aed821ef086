//! What the app tells about itself: per-actor counters and handler latency in `App::stats`,
//! and a `handle` span per message whose parent is the span of the handler that sent it, so
//! one request's flow is one trace. A real `tracing` subscriber (the registry with a layer of
//! the test's own that records each span's name, fields and parent) is installed for the
//! whole test binary; the tests run one after the other (`SERIAL`) so each sees its own spans.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use eventdriven::delivery::{Backoff, RetryPolicy};
use eventdriven::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Command, Debug)]
#[command(reply = ())]
struct PlaceOrder {
    order: u64,
}

#[derive(Event, Clone, Debug)]
struct OrderPlaced {
    order: u64,
}

#[derive(Event, Clone, Debug)]
struct StockReserved {
    order: u64,
}

#[derive(Event, Clone, Debug)]
struct Flaky {
    fail_times: u32,
}

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    async fn place(&mut self, cmd: PlaceOrder, ctx: &mut Context<Self>) {
        ctx.publish(OrderPlaced { order: cmd.order })
            .await
            .expect("published");
    }
}

struct Stock;

#[handlers]
impl Stock {
    #[subscribe]
    async fn placed(&mut self, ev: &OrderPlaced, ctx: &mut Context<Self>) {
        ctx.publish(StockReserved { order: ev.order })
            .await
            .expect("published");
    }
}

#[derive(Default)]
struct Shipping {
    reserved: Vec<u64>,
}

#[handlers]
impl Shipping {
    #[subscribe]
    fn placed(&mut self, _: &OrderPlaced) {}

    #[subscribe]
    fn reserved(&mut self, ev: &StockReserved) {
        self.reserved.push(ev.order);
    }
}

/// Fails the first `fail_times` attempts of each event.
#[derive(Default)]
struct Worker {
    attempts: HashMap<MessageIdKey, u32>,
}

type MessageIdKey = String;

#[handlers]
impl Worker {
    #[subscribe(retry = 2, backoff = "1ms")]
    fn flaky(&mut self, ev: &Flaky, ctx: &mut Context<Self>) -> Result<(), String> {
        let attempt = self
            .attempts
            .entry(ctx.metadata().correlation_id.to_string())
            .or_default();
        *attempt += 1;
        if *attempt <= ev.fail_times {
            return Err(format!("attempt {attempt} fails"));
        }
        Ok(())
    }
}

/// One recorded span.
#[derive(Clone, Debug)]
struct SpanRecord {
    id: u64,
    parent: Option<u64>,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Recorder {
    spans: Mutex<Vec<SpanRecord>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").replace('"', ""),
        );
    }
}

struct RecordSpans(Arc<Recorder>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for RecordSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        if attrs.metadata().name() != "handle" {
            return;
        }
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.id().into_u64());
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.spans.lock().unwrap().push(SpanRecord {
            id: id.into_u64(),
            parent,
            fields,
        });
    }
}

/// The binary's subscriber (installed once) and a lock that runs the tests one at a time.
async fn recorder() -> (&'static Arc<Recorder>, tokio::sync::MutexGuard<'static, ()>) {
    static RECORDER: OnceLock<Arc<Recorder>> = OnceLock::new();
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let recorder = RECORDER.get_or_init(|| {
        let recorder = Arc::new(Recorder::default());
        let subscriber = tracing_subscriber::registry()
            .with(RecordSpans(recorder.clone()))
            .with(tracing_subscriber::filter::LevelFilter::INFO);
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        recorder
    });
    let guard = SERIAL.lock().await;
    recorder.spans.lock().unwrap().clear();
    (recorder, guard)
}

async fn order_app() -> App {
    App::builder()
        .actor(Orders)
        .actor(Stock)
        .actor(Shipping::default())
        .handler_latency(true)
        .build()
        .await
        .expect("app builds")
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within {WAIT:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_following_causation() {
    let (recorder, _serial) = recorder().await;
    let app = order_app().await;
    let request = tracing::info_span!("request");
    let request_id = request.id().expect("the subscriber listens").into_u64();
    {
        let _entered = request.enter();
        app.send(PlaceOrder { order: 7 }).await.expect("sent");
    }
    // place -> OrderPlaced (Stock, Shipping) -> StockReserved (Shipping): four handler spans.
    wait_for("four handler spans", || {
        recorder.spans.lock().unwrap().len() == 4
    })
    .await;
    let spans = recorder.spans.lock().unwrap().clone();
    let by_id: HashMap<u64, &SpanRecord> = spans.iter().map(|s| (s.id, s)).collect();
    let find = |actor: &str, message: &str| {
        spans
            .iter()
            .find(|s| s.fields["actor"] == actor && s.fields["message_name"] == message)
            .unwrap_or_else(|| panic!("a span for {actor} handling {message}: {spans:#?}"))
    };
    let place = find("Orders", "PlaceOrder");
    let stock = find("Stock", "OrderPlaced");
    let ship_placed = find("Shipping", "OrderPlaced");
    let ship_reserved = find("Shipping", "StockReserved");
    assert_eq!(
        place.parent,
        Some(request_id),
        "the command's span is the request's child"
    );
    assert_eq!(stock.parent, Some(place.id), "{spans:#?}");
    assert_eq!(ship_placed.parent, Some(place.id), "{spans:#?}");
    assert_eq!(ship_reserved.parent, Some(stock.id), "{spans:#?}");
    // Every span records the ids that tie it to the flow.
    let correlation = &place.fields["correlation_id"];
    for span in &spans {
        assert_eq!(&span.fields["correlation_id"], correlation);
        assert_eq!(span.fields["attempt"], "1");
        assert!(span.fields.contains_key("id"));
    }
    assert_eq!(stock.fields["causation_id"], place.fields["id"]);
    assert_eq!(ship_reserved.fields["causation_id"], stock.fields["id"]);
    // The chain of parents ends at the request: one trace.
    for span in &spans {
        let mut at = span;
        while let Some(parent) = at.parent.and_then(|p| by_id.get(&p)) {
            at = parent;
        }
        assert_eq!(
            at.parent,
            Some(request_id),
            "{span:?} is not in the request's trace"
        );
    }
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_failures_retries_dead_letters_and_latency() {
    let (_recorder, _serial) = recorder().await;
    let app = App::builder()
        .actor(Worker::default())
        .actor(Orders)
        .actor(Stock)
        .actor(Shipping::default())
        .handler_latency(true)
        .build()
        .await
        .expect("app builds");
    // Succeeds at the second attempt: one failure, one retry.
    app.publish(Flaky { fail_times: 1 })
        .await
        .expect("published");
    // Fails all three attempts: three failures, two retries, one dead letter.
    app.publish(Flaky { fail_times: 5 })
        .await
        .expect("published");
    for order in 0..20 {
        app.send(PlaceOrder { order }).await.expect("sent");
    }
    let worker = |app: &App| app.stats().actors[0].clone();
    wait_for("the worker's figures", || {
        let w = worker(&app);
        w.dead_lettered == 1 && w.handled == 5
    })
    .await;
    let w = worker(&app);
    assert_eq!(w.actor, "Worker");
    assert_eq!((w.failed, w.retried, w.dead_lettered), (4, 3, 1), "{w:?}");
    let latency = w.latency.expect("measured");
    assert_eq!(latency.count, 5);
    assert!(
        latency.p50 <= latency.p99 && latency.p99 <= latency.max,
        "{latency:?}"
    );
    assert!(latency.max > Duration::ZERO);

    wait_for("every order shipped", || {
        app.stats()
            .actors
            .iter()
            .find(|a| a.actor == "Shipping")
            .unwrap()
            .handled
            == 40
    })
    .await;
    let stats = app.stats();
    let orders = stats.actors.iter().find(|a| a.actor == "Orders").unwrap();
    assert_eq!((orders.handled, orders.failed, orders.retried), (20, 0, 0));
    assert_eq!(orders.latency.map(|l| l.count), Some(20));
    assert_eq!(orders.capacity, Mailbox::DEFAULT_CAPACITY);
    assert_eq!(stats.dead_letters, 1);
    app.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_not_measured_unless_asked() {
    let (_recorder, _serial) = recorder().await;
    let app = App::builder()
        .actor(Worker::default())
        .retry(RetryPolicy::retries(1).backoff(Backoff::fixed(Duration::from_millis(1))))
        .build()
        .await
        .expect("app builds");
    app.publish(Flaky { fail_times: 0 })
        .await
        .expect("published");
    wait_for("handled", || app.stats().actors[0].handled == 1).await;
    let w = app.stats().actors[0].clone();
    assert_eq!(w.latency, None);
    assert_eq!((w.failed, w.retried, w.dead_lettered), (0, 0, 0));
    app.shutdown().await.expect("clean shutdown");
}
