//! NATS JetStream: the bridge (`eventdriven::bridge::nats`) against async-nats.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use eventdriven::bridge::Bridge;
use futures_util::StreamExt;

use crate::harness::{self, Count, Encoded, IN_FLIGHT};

pub(crate) struct Nats {
    url: String,
    js: jetstream::Context,
    /// The stream (upper case) and subject prefix (as given) of the namespace.
    stream: String,
    prefix: String,
}

impl harness::Broker for Nats {
    const NAME: &'static str = "nats";
    const URL_VAR: &'static str = "EVENTDRIVEN_NATS_URL";

    async fn connect(url: &str, space: &str) -> Self {
        let client = async_nats::connect(url).await.expect("NATS connects");
        let js = jetstream::new(client);
        let stream = space.to_uppercase();
        // The stream the bridge makes (file storage, 2 min duplicate window).
        js.get_or_create_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{space}.>")],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("the stream");
        Self {
            url: url.to_owned(),
            js,
            stream,
            prefix: space.to_owned(),
        }
    }

    fn bridge(&self, name: &str) -> Bridge {
        Bridge::new(
            name,
            eventdriven::bridge::nats::Nats::new(self.url.clone())
                .stream(self.stream.clone())
                .subject_prefix(self.prefix.clone()),
        )
    }

    async fn purge(&self) {
        let stream = self.js.get_stream(&self.stream).await.expect("the stream");
        stream.purge().await.expect("purged");
    }

    async fn publish(&self, message: Encoded) {
        // What the bridge sends: the content type, and the id for deduplication.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("content-type", "application/cloudevents+json");
        let publish = jetstream::message::PublishMessage::build()
            .payload(message.body.into())
            .headers(headers)
            .message_id(message.id);
        self.js
            .send_publish(format!("{}.{}", self.prefix, harness::NAME), publish)
            .await
            .expect("sent")
            .await
            .expect("acknowledged");
    }

    async fn consume(&self, group: &str, seen: Arc<Count>) -> tokio::task::JoinHandle<()> {
        let stream = self.js.get_stream(&self.stream).await.expect("the stream");
        // The consumer the bridge makes: durable, explicit acks, filtered on the name.
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                group,
                consumer::pull::Config {
                    durable_name: Some(group.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    filter_subject: format!("{}.{}", self.prefix, harness::NAME),
                    ..Default::default()
                },
            )
            .await
            .expect("the consumer");
        tokio::spawn(async move {
            let messages = consumer
                .stream()
                .max_messages_per_batch(IN_FLIGHT)
                .messages()
                .await
                .expect("pulls");
            messages
                .for_each_concurrent(IN_FLIGHT, |message| {
                    let seen = seen.clone();
                    async move {
                        let message = message.expect("a message");
                        harness::decode(&message.payload);
                        // Confirmed by the server, as the bridge's ack is.
                        message.double_ack().await.expect("acked");
                        seen.add();
                    }
                })
                .await;
        })
    }

    async fn remove(&self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}
