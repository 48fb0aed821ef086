//! RabbitMQ: the bridge (`eventdriven::bridge::amqp`) against lapin.

use std::sync::Arc;

use eventdriven::bridge::Bridge;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use crate::harness::{self, Count, Encoded, IN_FLIGHT};

/// The group of every consumer of the benchmarks: its queue, `<exchange>.bench`, also keeps
/// what the publish benchmarks send (a topic exchange drops what no queue is bound for).
const GROUP: &str = "bench";

pub(crate) struct Amqp {
    url: String,
    connection: Connection,
    /// A channel in confirm mode.
    publisher: Channel,
    /// The exchange of the namespace.
    exchange: String,
}

impl Amqp {
    fn queue(&self) -> String {
        format!("{}.{GROUP}", self.exchange)
    }
}

impl harness::Broker for Amqp {
    const NAME: &'static str = "amqp";
    const URL_VAR: &'static str = "EVENTDRIVEN_AMQP_URL";
    // A confirm of a persistent message waits for RabbitMQ's disk flush, ~10-15 ms here:
    // 2,000 of them one at a time take half a minute per iteration.
    const EVENTS: u64 = 200;

    async fn connect(url: &str, space: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("RabbitMQ connects");
        let publisher = connection.create_channel().await.expect("a channel");
        // The exchange and group queue the bridge declares.
        publisher
            .exchange_declare(
                space.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the exchange");
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("classic".into()),
        );
        let queue = format!("{space}.{GROUP}");
        publisher
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .expect("the queue");
        publisher
            .queue_bind(
                queue.as_str().into(),
                space.into(),
                harness::NAME.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bound");
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Self {
            url: url.to_owned(),
            connection,
            publisher,
            exchange: space.to_owned(),
        }
    }

    fn bridge(&self, name: &str) -> Bridge {
        Bridge::new(
            name,
            eventdriven::bridge::amqp::Amqp::new(self.url.clone()).exchange(self.exchange.clone()),
        )
    }

    async fn purge(&self) {
        self.publisher
            .queue_purge(self.queue().as_str().into(), QueuePurgeOptions::default())
            .await
            .expect("purged");
    }

    async fn publish(&self, message: Encoded) {
        // The properties the bridge sets: persistent, id, type, content type.
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message.id.as_str().into())
            .with_type(harness::NAME.into())
            .with_content_type("application/cloudevents+json".into());
        let confirmation = self
            .publisher
            .basic_publish(
                self.exchange.as_str().into(),
                harness::NAME.into(),
                BasicPublishOptions::default(),
                &message.body,
                properties,
            )
            .await
            .expect("sent")
            .await
            .expect("confirmed");
        assert!(
            matches!(confirmation, Confirmation::Ack(_)),
            "{confirmation:?}"
        );
    }

    async fn consume(&self, group: &str, seen: Arc<Count>) -> tokio::task::JoinHandle<()> {
        assert_eq!(group, GROUP, "the queue declared at connect");
        let channel = self.connection.create_channel().await.expect("a channel");
        channel
            .basic_qos(IN_FLIGHT as u16, BasicQosOptions::default())
            .await
            .expect("prefetch");
        let consumer = channel
            .basic_consume(
                self.queue().as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consumes");
        tokio::spawn(async move {
            let _channel = channel;
            consumer
                .for_each_concurrent(IN_FLIGHT, |delivery| {
                    let seen = seen.clone();
                    async move {
                        let delivery = delivery.expect("a delivery");
                        harness::decode(&delivery.data);
                        delivery
                            .ack(BasicAckOptions::default())
                            .await
                            .expect("acked");
                        seen.add();
                    }
                })
                .await;
        })
    }

    async fn remove(&self) {
        let _ = self
            .publisher
            .queue_delete(self.queue().as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self
            .publisher
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = self.connection.close(200, "bench done".into()).await;
    }
}
