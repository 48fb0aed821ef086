//! Kafka for the suite: a foreign producer, a wire tap, and brokers (tansu) of a test's own.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Broker, Raw};

/// The partitions of a topic the bridge creates (`Kafka::new`'s default).
const PARTITIONS: i32 = 4;

fn config(broker: &Broker) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set(
        "bootstrap.servers",
        broker.url.trim_start_matches("kafka://"),
    );
    config
}

/// Creates the test's topic as the bridge would, if it does not exist yet.
async fn ensure_topic(broker: &Broker) {
    let admin: AdminClient<DefaultClientContext> = config(broker).create().unwrap();
    let topic = NewTopic::new(&broker.space, PARTITIONS, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err(e) => panic!("topic not created: {e:?}"),
        }
    }
}

/// Publishes like another Kafka client following the CloudEvents Kafka binding would: the
/// attributes as `ce_*` headers, the name in `eventdriven-name`; waits for the delivery report.
pub async fn publish_raw(broker: &Broker, name: &str, headers: &[(&str, &str)], body: &[u8]) {
    ensure_topic(broker).await;
    let producer: FutureProducer = config(broker).set("acks", "all").create().unwrap();
    let mut list = OwnedHeaders::new().insert(Header {
        key: "eventdriven-name",
        value: Some(name),
    });
    for (n, v) in headers {
        let key = match n.strip_prefix("ce-") {
            Some(attribute) => format!("ce_{attribute}"),
            None => (*n).to_owned(),
        };
        list = list.insert(Header {
            key: &key,
            value: Some(*v),
        });
    }
    let record = FutureRecord::<str, [u8]>::to(&broker.space)
        .payload(body)
        .headers(list);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// A consumer without a group, reading every partition of the test's topic from its start.
pub struct Tap {
    consumer: StreamConsumer,
    topic: String,
}

impl Tap {
    pub async fn new(broker: &Broker) -> Self {
        ensure_topic(broker).await;
        // Partitions assigned by hand: the group id is never joined nor committed to, but
        // librdkafka wants one.
        let consumer: StreamConsumer = config(broker)
            .set("group.id", super::unique_name("tap"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            list.add_partition_offset(&broker.space, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        Self {
            consumer,
            topic: broker.space.clone(),
        }
    }

    /// The next message. The binding's `ce_` header names are shown as `ce-`, the spelling
    /// the suite checks for every broker (the names on the wire are checked to be `ce_`).
    pub async fn next(&mut self, timeout: Duration) -> Option<Raw> {
        let message = tokio::time::timeout(timeout, self.consumer.recv())
            .await
            .ok()?
            .unwrap();
        let mut headers = Vec::new();
        if let Some(list) = message.headers() {
            for header in list.iter() {
                assert!(
                    !header.key.starts_with("ce-"),
                    "a `ce-` header on Kafka: {}",
                    header.key
                );
                let name = match header.key.strip_prefix("ce_") {
                    Some(attribute) => format!("ce-{attribute}"),
                    None => header.key.to_owned(),
                };
                let value = String::from_utf8(header.value.unwrap_or_default().to_vec()).unwrap();
                headers.push((name, value));
            }
        }
        let name = headers
            .iter()
            .find(|(n, _)| n == "eventdriven-name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let key = message
            .key()
            .map(|k| String::from_utf8(k.to_vec()).unwrap());
        Some(Raw {
            headers,
            body: message.payload().unwrap_or_default().to_vec(),
            topic: format!("{}.{name}", self.topic),
            key,
        })
    }
}

/// Starts a tansu broker (in-memory storage) on `port` from `EVENTDRIVEN_KAFKA_SERVER`; waits
/// (at most 10 s) until it listens.
pub fn start_broker(port: u16) -> Child {
    let binary = std::env::var("EVENTDRIVEN_KAFKA_SERVER").unwrap_or_else(|_| {
        panic!(
            "EVENTDRIVEN_KAFKA_SERVER is not set: the test starts a tansu broker of its own; run \
             it through scripts/with-kafka.sh"
        )
    });
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(binary)
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "tansu not listening within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
