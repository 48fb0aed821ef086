//! Validation hooks (`AppBuilder::validate`): an event its hook refuses reaches nobody, and
//! the publisher learns why; from outside (`publish_incoming`, what bridges call) it is refused
//! with `IncomingError::Invalid`, for the bridge to dead-letter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::store::EventData;
use eventdriven::{Error, IncomingError};

#[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: u64,
    quantity: u32,
}

#[derive(Command, Debug)]
#[command(reply = Result<(), String>)]
struct Place {
    order: u64,
    quantity: u32,
}

#[derive(Default)]
struct Orders;

#[handlers]
impl Orders {
    #[handle]
    async fn place(&mut self, cmd: Place, ctx: &mut Context<Self>) -> Result<(), String> {
        ctx.publish(OrderPlaced {
            order: cmd.order,
            quantity: cmd.quantity,
        })
        .await
        .map_err(|e| e.to_string())
    }
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<u64>>>);

struct Shipping(Seen);

#[handlers]
impl Shipping {
    #[subscribe]
    fn placed(&mut self, ev: &OrderPlaced) {
        self.0 .0.lock().unwrap().push(ev.order);
    }
}

async fn app(seen: &Seen) -> App {
    App::builder()
        .actor(Orders)
        .actor(Shipping(seen.clone()))
        .validate(|e: &OrderPlaced| match e.quantity {
            0 => Err("quantity must be at least 1".to_owned()),
            _ => Ok(()),
        })
        .validate(|e: &OrderPlaced| match e.quantity {
            q if q > 100 => Err(format!("quantity {q} is above the limit of 100")),
            _ => Ok(()),
        })
        .build()
        .await
        .expect("app builds")
}

#[tokio::test]
async fn an_invalid_event_reaches_nobody_and_the_publisher_learns_why() {
    let seen = Seen::default();
    let app = app(&seen).await;
    app.publish(OrderPlaced {
        order: 1,
        quantity: 3,
    })
    .await
    .expect("valid");
    let error = app
        .publish(OrderPlaced {
            order: 2,
            quantity: 0,
        })
        .await
        .expect_err("refused by the first hook");
    assert!(
        matches!(&error, Error::Invalid { message: "order.placed", reason } if reason == "quantity must be at least 1"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "`order.placed` is invalid: quantity must be at least 1"
    );
    // The second hook runs after the first.
    let refused = app
        .try_publish(OrderPlaced {
            order: 3,
            quantity: 101,
        })
        .expect_err("refused by the second hook");
    assert_eq!(
        refused.message,
        OrderPlaced {
            order: 3,
            quantity: 101
        },
        "handed back"
    );
    assert!(refused.error.to_string().contains("above the limit of 100"));
    // Scheduling checks at once.
    let later = app.publish_after(
        OrderPlaced {
            order: 6,
            quantity: 0,
        },
        Duration::from_millis(1),
    );
    assert!(matches!(later, Err(Error::Invalid { .. })), "{later:?}");
    // From a handler: the handler gets the error.
    let from_handler = app
        .send(Place {
            order: 4,
            quantity: 0,
        })
        .await
        .expect("handled");
    assert_eq!(
        from_handler,
        Err("`order.placed` is invalid: quantity must be at least 1".to_owned())
    );
    app.send(Place {
        order: 5,
        quantity: 1,
    })
    .await
    .expect("handled")
    .expect("valid");
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(*seen.0.lock().unwrap(), vec![1, 5], "only the valid events");
    assert_eq!(
        app.dead_letters().len(),
        0,
        "a refused publish is not a dead letter"
    );
}

#[tokio::test]
async fn an_invalid_incoming_event_is_refused_with_the_reason() {
    let seen = Seen::default();
    let app = app(&seen).await;
    let incoming = |quantity: u32| {
        EventData::json(
            "order.placed",
            1,
            &serde_json::json!({ "order": 9, "quantity": quantity }),
        )
        .expect("encodes")
    };
    let error = app
        .publish_incoming(incoming(0))
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, IncomingError::Invalid(reason) if reason.contains("quantity must be at least 1")),
        "{error:?}"
    );
    let handled = app.publish_incoming(incoming(2)).await.expect("valid");
    assert!(handled.wait(Duration::from_secs(30)).await);
    app.shutdown().await.expect("clean shutdown");
    assert_eq!(*seen.0.lock().unwrap(), vec![9]);
}
