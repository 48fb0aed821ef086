//! Events from outside the process: CloudEvents in, decoded by name, published with their own
//! metadata; the source is acknowledged only once every subscriber is done; what cannot be
//! taken (malformed, oversize, unknown, undecodable) is refused with the reason and can be
//! dead-lettered — the contract every broker bridge builds on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::codec::{self, CodecError, Limits};
use eventdriven::prelude::*;
use eventdriven::store::EventData;
use eventdriven::{IncomingError, MessageId};
use serde_json::json;

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed", version = 2)]
struct OrderPlaced {
    order: u64,
}

struct Orders {
    gate: Arc<tokio::sync::Semaphore>,
    seen: Arc<Mutex<Vec<(u64, MessageId)>>>,
    handled: Arc<AtomicU64>,
}

#[handlers]
impl Orders {
    #[subscribe]
    async fn placed(&mut self, event: &OrderPlaced, ctx: &mut Context<Self>) {
        let id = ctx.metadata().id;
        let _pass = self.gate.acquire().await.unwrap();
        self.seen.lock().unwrap().push((event.order, id));
        self.handled.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_incoming_event_is_acknowledged_only_once_handled() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let seen: Arc<Mutex<Vec<(u64, MessageId)>>> = Arc::default();
    let handled = Arc::new(AtomicU64::new(0));
    let app = App::builder()
        .actor(Orders {
            gate: gate.clone(),
            seen: seen.clone(),
            handled: handled.clone(),
        })
        .build()
        .await
        .unwrap();

    let sent = EventData::from_event(&OrderPlaced { order: 7 }).unwrap();
    let bytes = codec::to_structured(&sent, "/orders");
    let event = codec::from_structured(&bytes, &Limits::default()).unwrap();
    let handled_signal = app.publish_incoming(event).await.unwrap();
    // Delivered, not handled yet: not to be acknowledged.
    let pending = tokio::spawn(handled_signal.wait(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished());
    gate.add_permits(10);
    assert!(pending.await.unwrap());
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    // With the id it had outside.
    assert_eq!(*seen.lock().unwrap(), vec![(7, sent.metadata.id)]);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn what_cannot_be_taken_is_refused_with_the_reason_and_dead_lettered() {
    let app = App::builder()
        .actor(Orders {
            gate: Arc::new(tokio::sync::Semaphore::new(100)),
            seen: Arc::default(),
            handled: Arc::default(),
        })
        .build()
        .await
        .unwrap();
    let limits = Limits { max_bytes: 4096 };

    // Malformed and oversize input never becomes an event.
    let malformed = codec::from_structured(b"{\"specversion\": 1.0", &limits).unwrap_err();
    assert!(matches!(malformed, CodecError::Malformed(_)));
    let big = EventData::json(
        "order.placed",
        2,
        &json!({ "order": 1, "pad": "x".repeat(5000) }),
    )
    .unwrap();
    let oversize =
        codec::from_structured(&codec::to_structured(&big, "/orders"), &limits).unwrap_err();
    assert!(matches!(oversize, CodecError::Oversize { .. }));

    // An unknown name, and a payload that does not fit the type or its schema version.
    let unknown = EventData::json("order.audited", 1, &json!({})).unwrap();
    let unknown = app.publish_incoming(unknown).await.unwrap_err();
    assert!(matches!(&unknown, IncomingError::NoSubscriber { name } if name == "order.audited"));
    let wrong_shape = EventData::json("order.placed", 2, &json!({ "order": "seven" })).unwrap();
    let wrong_shape = app.publish_incoming(wrong_shape).await.unwrap_err();
    assert!(
        matches!(wrong_shape, IncomingError::Decode(_)),
        "{wrong_shape}"
    );
    let old_schema = EventData::json("order.placed", 1, &json!({ "order": 7 })).unwrap();
    let old_schema = app.publish_incoming(old_schema).await.unwrap_err();
    assert!(
        old_schema.to_string().contains("schema version 1"),
        "{old_schema}"
    );

    for (name, error) in [
        ("malformed", malformed.to_string()),
        ("oversize", oversize.to_string()),
        ("order.audited", unknown.to_string()),
    ] {
        app.dead_letter_incoming("bridge:orders", name, error).await;
    }
    let letters = app.dead_letters().list();
    assert_eq!(letters.len(), 3);
    assert!(letters
        .iter()
        .all(|l| l.actor == "bridge:orders" && !l.can_retry()));
    assert!(
        letters[1].error.contains("over the limit of 4096 bytes"),
        "{}",
        letters[1].error
    );
    app.shutdown().await.unwrap();
}
