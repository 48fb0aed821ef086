//! Amazon SQS: the bridge (`eventdriven::bridge::sqs`) against aws-sdk-sqs.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};
use eventdriven::bridge::Bridge;

use crate::harness::{self, Count, Encoded, IN_FLIGHT};

/// SQS's most messages per receive and per batch.
const MAX_BATCH: usize = 10;
/// How long a receive waits for the first message (the bridge's long poll).
const WAIT_SECONDS: i32 = 1;
/// The visibility timeout of received messages (the bridge's: its default ack wait).
const VISIBILITY: i32 = 30;

pub(crate) struct Sqs {
    endpoint: String,
    client: aws_sdk_sqs::Client,
    /// The queue of the namespace: its name and URL.
    queue: String,
    url: String,
}

/// The client `Sqs::new` makes: plain HTTP, static test credentials, the same timeouts.
fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(10))
        .build();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .timeout_config(timeouts)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("a data type is set")
}

impl harness::Broker for Sqs {
    const NAME: &'static str = "sqs";
    const URL_VAR: &'static str = "EVENTDRIVEN_SQS_URL";

    async fn connect(url: &str, space: &str) -> Self {
        let client = client(url);
        // The standard queue the bridge creates.
        let created = client
            .create_queue()
            .queue_name(space)
            .send()
            .await
            .expect("the queue");
        let queue_url = created.queue_url().expect("a queue URL").to_owned();
        Self {
            endpoint: url.to_owned(),
            client,
            queue: space.to_owned(),
            url: queue_url,
        }
    }

    fn bridge(&self, name: &str) -> Bridge {
        Bridge::new(
            name,
            eventdriven::bridge::sqs::Sqs::new(self.endpoint.clone()).queue(self.queue.clone()),
        )
    }

    async fn purge(&self) {
        self.client
            .purge_queue()
            .queue_url(&self.url)
            .send()
            .await
            .expect("purged");
    }

    async fn publish(&self, message: Encoded) {
        // One `SendMessage` per event, with the attributes the bridge's structured mode
        // writes: the name and the content type. (The pipelined rows send batches.)
        let body = String::from_utf8(message.body).expect("JSON is UTF-8");
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_attributes("eventdriven-name", string_attribute(harness::NAME))
            .message_attributes(
                "content-type",
                string_attribute("application/cloudevents+json"),
            )
            .send()
            .await
            .expect("sent");
    }

    const BATCH: usize = MAX_BATCH;
    const ACKS_LATER: bool = true;

    async fn publish_batch(&self, messages: Vec<Encoded>) {
        // The bridge's call: one `SendMessageBatch` of up to 10, the same attributes.
        let entries = messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(String::from_utf8(message.body).expect("JSON is UTF-8"))
                    .message_attributes("eventdriven-name", string_attribute(harness::NAME))
                    .message_attributes(
                        "content-type",
                        string_attribute("application/cloudevents+json"),
                    )
                    .build()
                    .expect("an entry")
            })
            .collect();
        let sent = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("sent");
        assert!(
            sent.failed().is_empty(),
            "entries failed: {:?}",
            sent.failed()
        );
    }

    async fn consume(&self, _group: &str, seen: Arc<Count>) -> tokio::task::JoinHandle<()> {
        // SQS has no groups: the queue is the group. Pollers of up to 10 messages each, as many
        // as fit in IN_FLIGHT (3: up to 30 messages held at once), each receiving with a long
        // poll, decoding, and deleting what it received in one `DeleteMessageBatch`.
        let pollers = (IN_FLIGHT / MAX_BATCH).max(1);
        let (client, url) = (self.client.clone(), self.url.clone());
        tokio::spawn(async move {
            let poll = |_| {
                let (client, url, seen) = (client.clone(), url.clone(), seen.clone());
                async move {
                    loop {
                        let received = client
                            .receive_message()
                            .queue_url(&url)
                            .max_number_of_messages(MAX_BATCH as i32)
                            .wait_time_seconds(WAIT_SECONDS)
                            .visibility_timeout(VISIBILITY)
                            .message_attribute_names("All")
                            .send()
                            .await
                            .expect("received");
                        let messages = received.messages();
                        if messages.is_empty() {
                            continue;
                        }
                        let mut delete = client.delete_message_batch().queue_url(&url);
                        for (i, message) in messages.iter().enumerate() {
                            harness::decode(message.body().unwrap_or_default().as_bytes());
                            delete = delete.entries(
                                DeleteMessageBatchRequestEntry::builder()
                                    .id(i.to_string())
                                    .receipt_handle(
                                        message.receipt_handle().expect("a receipt handle"),
                                    )
                                    .build()
                                    .expect("id and receipt handle are set"),
                            );
                        }
                        let deleted = delete.send().await.expect("deleted");
                        assert!(deleted.failed().is_empty(), "{:?}", deleted.failed());
                        for _ in messages {
                            seen.add();
                        }
                    }
                }
            };
            futures_util::future::join_all((0..pollers).map(poll)).await;
        })
    }

    async fn remove(&self) {
        let _ = self.client.delete_queue().queue_url(&self.url).send().await;
    }
}
