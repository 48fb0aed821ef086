//! The handler spans through `tracing-opentelemetry`: one request's flow across three actors
//! is one OpenTelemetry trace, each handler's span the child of the span of the handler that
//! sent its message. The spans go to a span exporter of the test's own (it keeps them in
//! memory) through the SDK's simple span processor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Debug, Default)]
struct Keep(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Keep {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[derive(Command, Debug)]
#[command(reply = ())]
struct PlaceOrder;

#[derive(Event, Clone, Debug)]
struct OrderPlaced;

#[derive(Event, Clone, Debug)]
struct StockReserved;

struct Orders;

#[handlers]
impl Orders {
    #[handle]
    async fn place(&mut self, _: PlaceOrder, ctx: &mut Context<Self>) {
        ctx.publish(OrderPlaced).await.expect("published");
    }
}

struct Stock;

#[handlers]
impl Stock {
    #[subscribe]
    async fn placed(&mut self, _: &OrderPlaced, ctx: &mut Context<Self>) {
        ctx.publish(StockReserved).await.expect("published");
    }
}

struct Shipping;

#[handlers]
impl Shipping {
    #[subscribe]
    fn reserved(&mut self, _: &StockReserved) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_opentelemetry_trace() {
    let kept = Keep::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(kept.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("eventdriven-test")))
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let app = App::builder()
        .actor(Orders)
        .actor(Stock)
        .actor(Shipping)
        .build()
        .await
        .expect("app builds");
    {
        let request = tracing::info_span!("request");
        let _entered = request.enter();
        app.send(PlaceOrder).await.expect("sent");
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        while app.stats().actors[2].handled < 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the flow ends within 30 s");
    // Shutdown lets go of the spans kept for linking: every span ends and is exported.
    app.shutdown().await.expect("clean shutdown");
    let spans = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let spans = kept.0.lock().unwrap().clone();
            if spans.len() >= 4 {
                break spans;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("four spans exported within 30 s");
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let request = spans
        .iter()
        .find(|s| s.name == "request")
        .expect("the request's span");
    let trace = request.span_context.trace_id();
    let attribute = |span: &SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
            .unwrap_or_default()
    };
    let handling = |actor: &str| {
        spans
            .iter()
            .find(|s| s.name == "handle" && attribute(s, "actor") == actor)
            .unwrap_or_else(|| panic!("{actor}'s span in {spans:#?}"))
    };
    let (orders, stock, shipping) = (handling("Orders"), handling("Stock"), handling("Shipping"));
    for span in [orders, stock, shipping] {
        assert_eq!(span.span_context.trace_id(), trace, "one trace: {spans:#?}");
    }
    assert_eq!(orders.parent_span_id, request.span_context.span_id());
    assert_eq!(stock.parent_span_id, orders.span_context.span_id());
    assert_eq!(shipping.parent_span_id, stock.span_context.span_id());
    assert_eq!(attribute(stock, "message_name"), "OrderPlaced");
    assert_eq!(attribute(stock, "causation_id"), attribute(orders, "id"));
    let _ = provider.shutdown();
}
