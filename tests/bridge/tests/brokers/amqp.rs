//! RabbitMQ for the suite: a foreign producer, a wire tap, and nodes of a test's own.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind};

use super::{Broker, Raw};

async fn channel(broker: &Broker) -> (Connection, lapin::Channel) {
    let connection = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    // The same declaration as the bridge's: whoever comes first creates the exchange.
    channel
        .exchange_declare(
            broker.space.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, channel)
}

/// Publishes like another RabbitMQ client would: routing key = the name, `content-type` as the
/// property, the other headers in the table; waits for the confirm.
pub async fn publish_raw(broker: &Broker, name: &str, headers: &[(&str, &str)], body: &[u8]) {
    let (connection, channel) = channel(broker).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut table = FieldTable::default();
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    for (n, v) in headers {
        if n.eq_ignore_ascii_case("content-type") {
            properties = properties.with_content_type((*v).into());
        } else {
            table.insert((*n).into(), AMQPValue::LongString((*v).into()));
        }
    }
    let confirm = channel
        .basic_publish(
            broker.space.as_str().into(),
            name.into(),
            BasicPublishOptions::default(),
            body,
            properties.with_headers(table),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "{confirm:?}");
    let _ = connection.close(200, "done".into()).await;
}

/// An exclusive queue bound with `#` to the test's exchange.
pub struct Tap {
    _connection: Connection,
    consumer: Consumer,
    exchange: String,
}

impl Tap {
    pub async fn new(broker: &Broker) -> Self {
        let (connection, channel) = channel(broker).await;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                broker.space.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            _connection: connection,
            consumer,
            exchange: broker.space.clone(),
        }
    }

    pub async fn next(&mut self, timeout: Duration) -> Option<Raw> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()?
            .expect("the tap's consumer is open")
            .unwrap();
        let mut headers = Vec::new();
        if let Some(content_type) = delivery.properties.content_type() {
            headers.push(("content-type".to_owned(), content_type.to_string()));
        }
        if let Some(table) = delivery.properties.headers() {
            for (n, v) in table.inner() {
                let value = match v {
                    AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
                    AMQPValue::ShortString(s) => s.to_string(),
                    other => panic!("unexpected header value {other:?}"),
                };
                headers.push((n.to_string(), value));
            }
        }
        let key = headers
            .iter()
            .find(|(n, _)| n == "eventdriven-key")
            .map(|(_, v)| v.clone());
        Some(Raw {
            headers,
            body: delivery.data,
            topic: format!("{}.{}", self.exchange, delivery.routing_key),
            key,
        })
    }
}

/// Whether an AMQP 0.9.1 broker answers the protocol header on `port` (with `connection.start`).
fn answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut frame_type = [0u8; 1];
    stream.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
        && stream.read_exact(&mut frame_type).is_ok()
        && frame_type[0] == 1
}

/// Starts (or restarts, on the same data dir) the RabbitMQ node `node` on `port`, registered
/// with the epmd of `scripts/with-rabbitmq.sh`, in a process group of its own; waits (at most
/// 90 s) until it answers.
pub fn start_node(port: u16, node: &str, dir: &Path) -> Child {
    use std::os::unix::process::CommandExt as _;
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the outage test starts a RabbitMQ node of its own; run it \
                 through scripts/with-rabbitmq.sh"
            )
        })
    };
    let server = var("EVENTDRIVEN_RABBITMQ_SERVER");
    let epmd_port = var("EVENTDRIVEN_RABBITMQ_EPMD_PORT");
    let dist_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("rabbitmq.conf");
    std::fs::write(
        &config,
        format!("listeners.tcp.1 = 127.0.0.1:{port}\ndisk_free_limit.absolute = 50MB\n"),
    )
    .unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
    let child = Command::new(server)
        .env("HOME", dir)
        .env("RABBITMQ_NODENAME", node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("ERL_EPMD_PORT", epmd_port)
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_CONFIG_FILE", &config)
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(90);
    while !answers(port) {
        assert!(
            Instant::now() < until,
            "the RabbitMQ node {node} not ready within 90 s (logs in {})",
            dir.join("log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// SIGKILLs the node's process group (the start script, the Erlang VM and its helpers), and
/// waits (at most 10 s) until its port is closed.
pub fn kill_node(child: &Child, port: u16) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < until, "the RabbitMQ node still listens");
        std::thread::sleep(Duration::from_millis(50));
    }
}
