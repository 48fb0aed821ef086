//! SQS for the suite: a foreign producer, a wire tap, and servers (fauxqs) of a test's own.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::MessageAttributeValue;
use serde_json::Value;

use super::{Broker, Raw};

fn client(broker: &Broker) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(broker.url.clone())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "suite"))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Publishes like another SQS client would: the headers as string message attributes, the name
/// in `eventdriven-name`. SQS bodies are text: bytes that are not UTF-8 (or are characters SQS
/// refuses, like NUL) go as U+FFFD, which is just as malformed for the bridge.
pub async fn publish_raw(broker: &Broker, name: &str, headers: &[(&str, &str)], body: &[u8]) {
    let client = client(broker);
    // The queue, as the bridge would create it (CreateQueue is idempotent).
    let created = client
        .create_queue()
        .queue_name(&broker.space)
        .send()
        .await
        .unwrap();
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c < ' ' => '\u{FFFD}',
            c => c,
        })
        .collect();
    let attribute = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .unwrap()
    };
    let mut send = client
        .send_message()
        .queue_url(created.queue_url().unwrap())
        .message_body(text)
        .message_attributes("eventdriven-name", attribute(name));
    for (n, v) in headers {
        send = send.message_attributes(*n, attribute(v));
    }
    send.send().await.unwrap();
}

/// What the test server (`scripts/sqs/server.mjs`) recorded as sent to the test's queue, read
/// without taking anything from the consumers (SQS itself has no such read).
pub struct Tap {
    url: String,
    queue: String,
    seen: usize,
}

impl Tap {
    pub async fn new(broker: &Broker) -> Self {
        Self {
            url: broker.url.clone(),
            queue: broker.space.clone(),
            seen: 0,
        }
    }

    pub async fn next(&mut self, timeout: Duration) -> Option<Raw> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let (url, path) = (
                self.url.clone(),
                format!("/_eventdriven/sent/{}?from={}", self.queue, self.seen),
            );
            let reply = tokio::task::spawn_blocking(move || get(&url, &path))
                .await
                .unwrap();
            if let Some(message) = reply["messages"].as_array().and_then(|m| m.first()) {
                self.seen += 1;
                return Some(raw(&self.queue, message));
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A recorded message as the suite sees messages: the attributes (those packed in
/// `eventdriven-headers` unpacked) as headers.
fn raw(queue: &str, message: &Value) -> Raw {
    let mut headers = Vec::new();
    for (name, value) in message["attributes"].as_object().unwrap() {
        let value = value.as_str().unwrap_or_default().to_owned();
        if name == "eventdriven-headers" {
            let pairs: Vec<(String, String)> = serde_json::from_str(&value).unwrap();
            headers.extend(pairs);
        } else {
            headers.push((name.clone(), value));
        }
    }
    let header = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
    let (name, key) = (
        header("eventdriven-name").unwrap_or_default(),
        header("eventdriven-key"),
    );
    Raw {
        body: message["body"].as_str().unwrap().as_bytes().to_vec(),
        topic: format!("{queue}.{name}"),
        key,
        headers,
    }
}

/// A plain HTTP/1.0 GET of `path` on the server at `url` (`http://127.0.0.1:PORT`), as JSON.
fn get(url: &str, path: &str) -> Value {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "{head}"
    );
    serde_json::from_str(body).unwrap()
}

/// Starts a fauxqs server (in memory) on `port` with `EVENTDRIVEN_SQS_SERVER`; waits (at most
/// 10 s) until it listens.
pub fn start_server(port: u16) -> Child {
    let command = std::env::var("EVENTDRIVEN_SQS_SERVER").unwrap_or_else(|_| {
        panic!(
            "EVENTDRIVEN_SQS_SERVER is not set: the test starts an SQS server of its own; run it \
             through scripts/with-sqs.sh"
        )
    });
    let child = Command::new(command)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "fauxqs not listening within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}
