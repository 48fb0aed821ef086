//! Kafka: the bridge (`eventdriven::bridge::kafka`) against rdkafka.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventdriven::bridge::Bridge;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::harness::{self, Count, Encoded};

/// The partitions of the topic (`Kafka::new`'s default).
const PARTITIONS: i32 = 4;
/// How long a produce may wait in the client (`Kafka::new`'s message timeout).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the consumer may take to join its group.
const JOIN: Duration = Duration::from_secs(60);

pub(crate) struct Kafka {
    url: String,
    /// `host:port`, the URL without its scheme.
    servers: String,
    producer: FutureProducer,
    /// The topic of the namespace.
    topic: String,
}

impl Kafka {
    /// The connection settings the bridge uses.
    fn config(&self) -> ClientConfig {
        config(&self.servers)
    }
}

fn config(servers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", servers)
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        .set("socket.keepalive.enable", "true");
    config
}

impl harness::Broker for Kafka {
    const NAME: &'static str = "kafka";
    const URL_VAR: &'static str = "EVENTDRIVEN_KAFKA_URL";

    async fn connect(url: &str, space: &str) -> Self {
        let servers = url.trim_start_matches("kafka://").trim_end_matches('/');
        // The topic the bridge creates: 4 partitions, replication 1.
        let admin: AdminClient<DefaultClientContext> =
            config(servers).create().expect("an admin client");
        let topic = NewTopic::new(space, PARTITIONS, TopicReplication::Fixed(1));
        for result in admin
            .create_topics([&topic], &AdminOptions::new())
            .await
            .expect("topic created")
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err(e) => panic!("topic not created: {e:?}"),
            }
        }
        // The producer the bridge makes: every replica's ack, idempotent, 1 ms linger.
        let producer = config(servers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                MESSAGE_TIMEOUT.as_millis().to_string(),
            )
            .set("linger.ms", "1")
            .create()
            .expect("a producer");
        Self {
            url: url.to_owned(),
            servers: servers.to_owned(),
            producer,
            topic: space.to_owned(),
        }
    }

    fn bridge(&self, name: &str) -> Bridge {
        Bridge::new(
            name,
            eventdriven::bridge::kafka::Kafka::new(self.url.clone()).topic(self.topic.clone()),
        )
    }

    async fn purge(&self) {
        // Nothing to empty: a topic is a log, and every consumer of the benchmarks is a group
        // that commits what it read, so what an iteration left is behind every group's
        // offset. (The publish rows leave their events in tansu's memory until `remove`.)
    }

    async fn publish(&self, message: Encoded) {
        // The headers the bridge's structured mode writes: the name, the content type.
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: "eventdriven-name",
                value: Some(harness::NAME),
            })
            .insert(Header {
                key: "content-type",
                value: Some("application/cloudevents+json"),
            });
        let record = FutureRecord::<str, [u8]>::to(&self.topic)
            .payload(message.body.as_slice())
            .headers(headers);
        self.producer
            .send(record, MESSAGE_TIMEOUT)
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }

    async fn consume(&self, group: &str, seen: Arc<Count>) -> tokio::task::JoinHandle<()> {
        // The bridge's group settings (its group id is `<topic>.<group>`, fresh per topic, as
        // tansu wants), its offsets stored as each message is done and committed every
        // 100 ms, as the bridge's task commits what changed.
        let consumer: StreamConsumer = self
            .config()
            .set("group.id", format!("{}.{group}", self.topic))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "100")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "6000")
            .set("queued.min.messages", "1000")
            .set("fetch.queue.backoff.ms", "20")
            .create()
            .expect("a consumer");
        consumer.subscribe(&[&self.topic]).expect("subscribed");
        let consumer = Arc::new(consumer);
        let task = tokio::spawn({
            let consumer = consumer.clone();
            async move {
                loop {
                    let failed = match consumer.recv().await {
                        Ok(message) => {
                            harness::decode(message.payload().unwrap_or_default());
                            consumer
                                .store_offset_from_message(&message)
                                .expect("offset stored");
                            seen.add();
                            false
                        }
                        Err(_) => true,
                    };
                    if failed {
                        // Transient (a rebalance, a reconnect): librdkafka goes on by itself.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        // The group gave this consumer its partitions (the task polls meanwhile), so the
        // first iteration does not time the join.
        let deadline = Instant::now() + JOIN;
        while consumer.assignment().map_or(0, |a| a.count()) == 0 {
            assert!(Instant::now() < deadline, "no partitions within {JOIN:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task
    }

    async fn remove(&self) {
        let Ok(admin) = self.config().create::<AdminClient<DefaultClientContext>>() else {
            return;
        };
        let _ = admin
            .delete_topics(&[&self.topic], &AdminOptions::new())
            .await;
    }
}
