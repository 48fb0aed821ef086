//! Metadata: ids, correlation and causation follow a chain of handlers; the tracing span of
//! each handled message names the actor, message, id and correlation id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::MessageId;

#[derive(Command, Debug)]
struct PlaceOrder;

#[derive(Event, Clone, Debug)]
struct OrderPlaced;

#[derive(Command, Debug)]
struct ShipOrder;

#[derive(Event, Clone, Debug)]
struct OrderShipped;

type Seen = Arc<Mutex<Vec<(&'static str, Metadata)>>>;

struct Orders {
    seen: Seen,
}

#[handlers]
impl Orders {
    #[handle]
    async fn place(&mut self, _: PlaceOrder, ctx: &mut Context<Self>) {
        self.seen
            .lock()
            .unwrap()
            .push(("PlaceOrder", ctx.metadata().clone()));
        tracing::info!("placing");
        ctx.publish(OrderPlaced).await.unwrap();
    }

    #[handle]
    async fn ship(&mut self, _: ShipOrder, ctx: &mut Context<Self>) {
        self.seen
            .lock()
            .unwrap()
            .push(("ShipOrder", ctx.metadata().clone()));
        ctx.publish(OrderShipped).await.unwrap();
    }
}

struct Shipping {
    seen: Seen,
}

#[handlers]
impl Shipping {
    #[subscribe]
    async fn on_placed(
        &mut self,
        _: &OrderPlaced,
        ctx: &mut Context<Self>,
    ) -> eventdriven::Result<()> {
        self.seen
            .lock()
            .unwrap()
            .push(("OrderPlaced", ctx.metadata().clone()));
        ctx.send(ShipOrder).await
    }

    #[subscribe]
    fn on_shipped(&mut self, _: &OrderShipped, ctx: &mut Context<Self>) {
        self.seen
            .lock()
            .unwrap()
            .push(("OrderShipped", ctx.metadata().clone()));
    }
}

async fn app(seen: &Seen) -> App {
    App::builder()
        .actor(Orders { seen: seen.clone() })
        .actor(Shipping { seen: seen.clone() })
        .build()
        .await
        .unwrap()
}

async fn wait_for(seen: &Seen, n: usize) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the chain completes");
}

#[tokio::test]
async fn a_three_hop_chain_links_causation_and_carries_correlation() {
    let seen = Seen::default();
    let app = app(&seen).await;
    let flow = MessageId::new();
    let root = Envelope::new(PlaceOrder)
        .with_correlation_id(flow)
        .with_header("tenant", "acme");
    let root_id = root.meta.id;
    app.send_envelope(root).await.unwrap();
    wait_for(&seen, 4).await;
    app.shutdown().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    let names: Vec<_> = seen.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["PlaceOrder", "OrderPlaced", "ShipOrder", "OrderShipped"]
    );
    let metas: Vec<&Metadata> = seen.iter().map(|(_, m)| m).collect();

    assert_eq!(metas[0].id, root_id);
    assert_eq!(metas[0].causation_id, None);
    assert_eq!(metas[0].headers.get("tenant"), Some("acme"));
    for pair in metas.windows(2) {
        assert_eq!(
            pair[1].causation_id,
            Some(pair[0].id),
            "each message is caused by the one before"
        );
        assert!(pair[1].timestamp >= pair[0].timestamp);
    }
    for meta in &metas {
        assert_eq!(meta.correlation_id, flow, "one flow, one correlation id");
        assert_eq!(meta.attempt, 1);
    }
    let mut ids: Vec<_> = metas.iter().map(|m| m.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4, "every message has its own id");
}

#[tokio::test]
async fn a_root_message_correlates_with_itself() {
    let seen = Seen::default();
    let app = app(&seen).await;
    app.send(PlaceOrder).await.unwrap();
    wait_for(&seen, 4).await;
    app.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    let root = &seen[0].1;
    assert_eq!(root.correlation_id, root.id);
    assert!(seen.iter().all(|(_, m)| m.correlation_id == root.id));
}

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_handled_message_runs_in_a_span_with_actor_message_id_and_correlation() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // tracing caches whether a callsite is enabled once, for the whole process, from the
    // subscriber of the thread that reaches it first. A sibling test's actor, on a thread with
    // no subscriber, could make the `handle` span `never` for this test too. A global
    // subscriber interested in everything (the bare registry) makes every thread's answer
    // "yes"; installing it also re-asks the callsites reached before.
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    let _guard = tracing::subscriber::set_default(subscriber);

    let seen = Seen::default();
    let app = app(&seen).await;
    let root = Envelope::new(PlaceOrder);
    let (id, correlation) = (root.meta.id, root.meta.correlation_id);
    app.send_envelope(root).await.unwrap();
    wait_for(&seen, 4).await;
    app.shutdown().await.unwrap();

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("placing"))
        .expect("the handler logged");
    assert!(line.contains("handle{"), "{line}");
    assert!(line.contains("actor=\"Orders\""), "{line}");
    assert!(line.contains("message_name=\"PlaceOrder\""), "{line}");
    assert!(line.contains(&format!("id={id}")), "{line}");
    assert!(
        line.contains(&format!("correlation_id={correlation}")),
        "{line}"
    );
}
