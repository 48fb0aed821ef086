//! The broker of each transport for the bridge conformance suite (`per_broker!`): NATS
//! JetStream (feature `nats`) on the server of `EVENTDRIVEN_NATS_URL` (started by
//! `scripts/with-nats.sh`), Redis Streams (feature `redis`) on the server of
//! `EVENTDRIVEN_REDIS_URL` (started by `scripts/with-redis.sh`), RabbitMQ (feature `amqp`) on
//! the node of `EVENTDRIVEN_AMQP_URL` (started by `scripts/with-rabbitmq.sh`), or, for the
//! outage test, a server of the test's own started from `EVENTDRIVEN_NATS_SERVER` /
//! `EVENTDRIVEN_REDIS_SERVER` / `EVENTDRIVEN_RABBITMQ_SERVER` (Redis with an append-only file,
//! RabbitMQ on a data dir of its own, so their data survives the restart) so it can be stopped
//! and restarted. Kafka (feature `kafka`) runs on the tansu broker of `EVENTDRIVEN_KAFKA_URL`
//! (started by `scripts/with-kafka.sh`); its own brokers come from `EVENTDRIVEN_KAFKA_SERVER`
//! and keep their data in memory only, so the outage test pauses one (SIGSTOP, SIGCONT)
//! instead of restarting it. SQS (feature `sqs`) runs on the fauxqs server of
//! `EVENTDRIVEN_SQS_URL` (started by `scripts/with-sqs.sh`), one queue per test; its own
//! servers come from `EVENTDRIVEN_SQS_SERVER`, in memory too, and are paused the same way.
//! Every test gets names of its
//! own (stream, subjects, groups), so tests run side by side on one server. A later broker adds
//! a `Kind` and one arm in each `match`.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Child;
#[cfg(any(feature = "nats", feature = "redis"))]
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use eventdriven::bridge::Bridge;

#[cfg(feature = "amqp")]
mod amqp;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "sqs")]
mod sqs;

/// How long one test may take, all included.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// Which broker a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    #[cfg(feature = "nats")]
    Nats,
    #[cfg(feature = "redis")]
    Redis,
    #[cfg(feature = "amqp")]
    Amqp,
    #[cfg(feature = "kafka")]
    Kafka,
    #[cfg(feature = "sqs")]
    Sqs,
}

impl Kind {
    /// Whether a broker of the test's own keeps its data across a stop and restart (tansu, the
    /// suite's Kafka broker, and fauxqs, its SQS server, keep it in memory only).
    pub fn keeps_data_across_restart(self) -> bool {
        match self {
            #[cfg(feature = "kafka")]
            Kind::Kafka => false,
            #[cfg(feature = "sqs")]
            Kind::Sqs => false,
            #[allow(unreachable_patterns)]
            _ => true,
        }
    }
}

/// A name no other test (of this or another process) uses: letters, digits and `_`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The env var with the broker's URL, the one that skips its tests, and the script that
/// starts a server for them.
fn env_names(kind: Kind) -> (&'static str, &'static str, &'static str) {
    match kind {
        #[cfg(feature = "nats")]
        Kind::Nats => (
            "EVENTDRIVEN_NATS_URL",
            "EVENTDRIVEN_SKIP_NATS",
            "scripts/with-nats.sh",
        ),
        #[cfg(feature = "redis")]
        Kind::Redis => (
            "EVENTDRIVEN_REDIS_URL",
            "EVENTDRIVEN_SKIP_REDIS",
            "scripts/with-redis.sh",
        ),
        #[cfg(feature = "amqp")]
        Kind::Amqp => (
            "EVENTDRIVEN_AMQP_URL",
            "EVENTDRIVEN_SKIP_AMQP",
            "scripts/with-rabbitmq.sh",
        ),
        #[cfg(feature = "kafka")]
        Kind::Kafka => (
            "EVENTDRIVEN_KAFKA_URL",
            "EVENTDRIVEN_SKIP_KAFKA",
            "scripts/with-kafka.sh",
        ),
        #[cfg(feature = "sqs")]
        Kind::Sqs => (
            "EVENTDRIVEN_SQS_URL",
            "EVENTDRIVEN_SKIP_SQS",
            "scripts/with-sqs.sh",
        ),
    }
}

/// A broker for one test: where it is, and the names the test's bridges use.
pub struct Broker {
    pub kind: Kind,
    pub url: String,
    /// This test's stream / topic namespace.
    pub space: String,
    /// A server of the test's own (outage tests).
    own: Option<OwnServer>,
}

impl Broker {
    /// The shared server of the environment; `None` if its tests are skipped (loudly).
    pub fn shared(kind: Kind) -> Option<Self> {
        let (var, skip, script) = env_names(kind);
        let url = match std::env::var(var) {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var(skip).as_deref() == Ok("1")
                && std::env::var("CI").as_deref() != Ok("true") =>
            {
                let _ = writeln!(
                    std::io::stderr(),
                    "!!!!!!!! SKIPPED: a {kind:?} bridge test ({skip}=1 and no {var}) !!!!!!!!"
                );
                return None;
            }
            _ => panic!(
                "{var} is not set: run the bridge tests through {script} (for example \
                 `{script} cargo test -p eventdriven-bridge-tests --features {feature}`), or \
                 point {var} at your own server, or (outside CI) set {skip}=1 to skip them",
                feature = format!("{kind:?}").to_lowercase(),
            ),
        };
        Some(Self {
            kind,
            url,
            space: unique_name("t"),
            own: None,
        })
    }

    /// The broker at `url`, with the namespace `space` of another process's test.
    pub fn at(kind: Kind, url: String, space: String) -> Self {
        Self {
            kind,
            url,
            space,
            own: None,
        }
    }

    /// A server of the test's own, which it may stop and restart.
    pub fn own(kind: Kind) -> Option<Self> {
        let shared = Self::shared(kind)?;
        let own = OwnServer::start(kind);
        Some(Self {
            url: own.url(),
            own: Some(own),
            ..shared
        })
    }

    /// A bridge named `name` over this test's namespace.
    pub fn bridge(&self, name: &str) -> Bridge {
        match self.kind {
            #[cfg(feature = "nats")]
            Kind::Nats => Bridge::new(
                name,
                eventdriven::bridge::nats::Nats::new(self.url.clone())
                    .stream(self.space.to_uppercase())
                    .subject_prefix(self.space.clone()),
            ),
            #[cfg(feature = "redis")]
            Kind::Redis => Bridge::new(
                name,
                eventdriven::bridge::redis::Redis::new(self.url.clone()).stream(self.space.clone()),
            ),
            #[cfg(feature = "amqp")]
            Kind::Amqp => Bridge::new(
                name,
                eventdriven::bridge::amqp::Amqp::new(self.url.clone()).exchange(self.space.clone()),
            ),
            #[cfg(feature = "kafka")]
            // A tansu of the test's own comes back from a restart empty (memory storage): it
            // no longer knows the idempotent producer's id, and that producer's retries of
            // what it queued during the outage can stall it. A real cluster keeps that state.
            Kind::Kafka => Bridge::new(
                name,
                eventdriven::bridge::kafka::Kafka::new(self.url.clone())
                    .topic(self.space.clone())
                    .idempotent(self.own.is_none()),
            ),
            #[cfg(feature = "sqs")]
            Kind::Sqs => Bridge::new(
                name,
                eventdriven::bridge::sqs::Sqs::new(self.url.clone()).queue(self.space.clone()),
            ),
        }
    }

    /// Publishes `body` with `headers` as a message of event `name`, straight through the
    /// broker's client (a foreign producer), and waits for the broker's acknowledgement.
    pub async fn publish_raw(&self, name: &str, headers: &[(&str, &str)], body: &[u8]) {
        match self.kind {
            #[cfg(feature = "nats")]
            Kind::Nats => {
                let client = async_nats::connect(self.url.as_str()).await.unwrap();
                let js = async_nats::jetstream::new(client.clone());
                let mut map = async_nats::HeaderMap::new();
                for (n, v) in headers {
                    map.insert(*n, *v);
                }
                js.publish_with_headers(
                    format!("{}.{name}", self.space),
                    map,
                    bytes::Bytes::copy_from_slice(body),
                )
                .await
                .unwrap()
                .await
                .unwrap();
                client.flush().await.unwrap();
            }
            #[cfg(feature = "redis")]
            Kind::Redis => {
                let client = ::redis::Client::open(self.url.as_str()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let mut xadd = ::redis::cmd("XADD");
                xadd.arg(&self.space)
                    .arg("*")
                    .arg("eventdriven-name")
                    .arg(name);
                for (n, v) in headers {
                    xadd.arg(*n).arg(*v);
                }
                xadd.arg("body").arg(body);
                let _: String = xadd.query_async(&mut conn).await.unwrap();
            }
            #[cfg(feature = "amqp")]
            Kind::Amqp => amqp::publish_raw(self, name, headers, body).await,
            #[cfg(feature = "kafka")]
            Kind::Kafka => kafka::publish_raw(self, name, headers, body).await,
            #[cfg(feature = "sqs")]
            Kind::Sqs => sqs::publish_raw(self, name, headers, body).await,
        }
    }

    /// Stops the test's own server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        self.own.as_mut().expect("an own server").stop();
    }

    /// Starts the test's own server again, on the same port and store.
    pub fn restart(&mut self) {
        self.own.as_mut().expect("an own server").restart();
    }

    /// Freezes the test's own server (SIGSTOP): it holds its connections and data but
    /// answers nothing until [`resume`](Self::resume).
    pub fn pause(&mut self) {
        let own = self.own.as_mut().expect("an own server");
        own.signal("STOP");
    }

    /// Lets the frozen server go on (SIGCONT).
    pub fn resume(&mut self) {
        let own = self.own.as_mut().expect("an own server");
        own.signal("CONT");
    }
}

/// A message as the broker carries it, seen by a [`Tap`].
pub struct Raw {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Where the broker keeps it (the NATS subject; for Redis, the stream key, a dot and the
    /// `eventdriven-name` field; for RabbitMQ, the exchange, a dot and the routing key; for SQS,
    /// the queue, a dot and the `eventdriven-name` attribute).
    pub topic: String,
    /// The partition / routing key it went out with.
    pub key: Option<String>,
}

impl Raw {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// The event name its topic stands for.
    pub fn name(&self) -> String {
        self.topic
            .split_once('.')
            .map_or_else(String::new, |(_, name)| name.to_owned())
    }
}

/// Records the raw messages of a test's namespace as the broker sends them to a plain
/// subscriber (NATS), or as a plain reader of the stream finds them (Redis).
pub enum Tap {
    #[cfg(feature = "nats")]
    Nats(async_nats::Subscriber),
    #[cfg(feature = "redis")]
    Redis {
        conn: ::redis::aio::MultiplexedConnection,
        stream: String,
        last: String,
    },
    #[cfg(feature = "amqp")]
    Amqp(Box<amqp::Tap>),
    #[cfg(feature = "kafka")]
    Kafka(Box<kafka::Tap>),
    #[cfg(feature = "sqs")]
    Sqs(Box<sqs::Tap>),
}

impl Tap {
    pub async fn new(broker: &Broker) -> Self {
        match broker.kind {
            #[cfg(feature = "nats")]
            Kind::Nats => {
                let client = async_nats::connect(broker.url.as_str()).await.unwrap();
                let subscriber = client
                    .subscribe(format!("{}.>", broker.space))
                    .await
                    .unwrap();
                client.flush().await.unwrap();
                Self::Nats(subscriber)
            }
            #[cfg(feature = "redis")]
            Kind::Redis => {
                let client = ::redis::Client::open(broker.url.as_str()).unwrap();
                let conn = client.get_multiplexed_async_connection().await.unwrap();
                // The test's stream is its own: from its start is from the tap's start.
                Self::Redis {
                    conn,
                    stream: broker.space.clone(),
                    last: "0-0".to_owned(),
                }
            }
            #[cfg(feature = "amqp")]
            Kind::Amqp => Self::Amqp(Box::new(amqp::Tap::new(broker).await)),
            #[cfg(feature = "kafka")]
            Kind::Kafka => Self::Kafka(Box::new(kafka::Tap::new(broker).await)),
            #[cfg(feature = "sqs")]
            Kind::Sqs => Self::Sqs(Box::new(sqs::Tap::new(broker).await)),
        }
    }

    /// The next message (at most 10 s).
    pub async fn next(&mut self) -> Raw {
        self.try_next(Duration::from_secs(10))
            .await
            .expect("a message within 10 s")
    }

    /// The next message, if one comes within `timeout`.
    pub async fn try_next(&mut self, timeout: Duration) -> Option<Raw> {
        match self {
            #[cfg(feature = "nats")]
            Self::Nats(subscriber) => Self::next_nats(subscriber, timeout).await,
            #[cfg(feature = "redis")]
            Self::Redis { conn, stream, last } => {
                Self::next_redis(conn, stream, last, timeout).await
            }
            #[cfg(feature = "amqp")]
            Self::Amqp(tap) => tap.next(timeout).await,
            #[cfg(feature = "kafka")]
            Self::Kafka(tap) => tap.next(timeout).await,
            #[cfg(feature = "sqs")]
            Self::Sqs(tap) => tap.next(timeout).await,
        }
    }

    #[cfg(feature = "redis")]
    async fn next_redis(
        conn: &mut ::redis::aio::MultiplexedConnection,
        stream: &str,
        last: &mut String,
        timeout: Duration,
    ) -> Option<Raw> {
        use ::redis::streams::StreamReadReply;
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let reply: Option<StreamReadReply> = ::redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(stream)
                .arg(last.as_str())
                .query_async(conn)
                .await
                .unwrap();
            if let Some(entry) =
                reply.and_then(|r| r.keys.into_iter().next()?.ids.into_iter().next())
            {
                *last = entry.id.clone();
                let text = |v: &::redis::Value| -> Vec<u8> {
                    match v {
                        ::redis::Value::BulkString(b) => b.clone(),
                        ::redis::Value::SimpleString(s) => s.clone().into_bytes(),
                        other => panic!("unexpected field value {other:?}"),
                    }
                };
                let mut headers = Vec::new();
                let mut body = Vec::new();
                for (name, value) in &entry.map {
                    if name == "body" {
                        body = text(value);
                    } else {
                        headers.push((name.clone(), String::from_utf8(text(value)).unwrap()));
                    }
                }
                let field = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
                let name = field("eventdriven-name").unwrap_or_default();
                let key = field("eventdriven-key");
                return Some(Raw {
                    topic: format!("{stream}.{name}"),
                    headers,
                    body,
                    key,
                });
            }
            if tokio::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[cfg(feature = "nats")]
    async fn next_nats(subscriber: &mut async_nats::Subscriber, timeout: Duration) -> Option<Raw> {
        use futures_util::StreamExt as _;
        let message = tokio::time::timeout(timeout, subscriber.next())
            .await
            .ok()?
            .expect("the subscription is open");
        let headers: Vec<(String, String)> = message
            .headers
            .iter()
            .flat_map(|h| h.iter())
            .flat_map(|(n, vs)| vs.iter().map(move |v| (n.to_string(), v.to_string())))
            .collect();
        let key = headers
            .iter()
            .find(|(n, _)| n == "eventdriven-key")
            .map(|(_, v)| v.clone());
        Some(Raw {
            headers,
            body: message.payload.to_vec(),
            topic: message.subject.to_string(),
            key,
        })
    }
}

/// A broker process of a test's own.
struct OwnServer {
    kind: Kind,
    port: u16,
    /// The Erlang node name (RabbitMQ), the same across restarts.
    node: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl OwnServer {
    fn start(kind: Kind) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique_name("eventdriven-broker"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            kind,
            port,
            node: format!("{}@localhost", unique_name("edown")),
            dir,
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        match self.kind {
            #[cfg(feature = "nats")]
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            #[cfg(feature = "redis")]
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            #[cfg(feature = "amqp")]
            Kind::Amqp => format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port),
            #[cfg(feature = "kafka")]
            Kind::Kafka => format!("kafka://127.0.0.1:{}", self.port),
            #[cfg(feature = "sqs")]
            Kind::Sqs => format!("http://127.0.0.1:{}", self.port),
        }
    }

    fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        match self.kind {
            #[cfg(feature = "nats")]
            Kind::Nats => {
                let binary = std::env::var("EVENTDRIVEN_NATS_SERVER").unwrap_or_else(|_| {
                    panic!(
                        "EVENTDRIVEN_NATS_SERVER is not set: the outage test starts a nats-server \
                         of its own; run it through scripts/with-nats.sh"
                    )
                });
                let config = self.dir.join("nats.conf");
                std::fs::write(
                    &config,
                    format!(
                        "listen: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n  \
                         max_memory_store: 64MB\n  max_file_store: 512MB\n}}\n",
                        self.port,
                        self.dir.join("jetstream").display()
                    ),
                )
                .unwrap();
                let log = self.dir.join("nats.log");
                let _ = std::fs::remove_file(&log);
                let child = Command::new(binary)
                    .arg("-c")
                    .arg(&config)
                    .arg("-l")
                    .arg(&log)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                self.child = Some(child);
                let until = Instant::now() + Duration::from_secs(10);
                while !std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("Server is ready")
                {
                    assert!(Instant::now() < until, "nats-server not ready within 10 s");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            #[cfg(feature = "redis")]
            Kind::Redis => {
                let binary = std::env::var("EVENTDRIVEN_REDIS_SERVER").unwrap_or_else(|_| {
                    panic!(
                        "EVENTDRIVEN_REDIS_SERVER is not set: the outage test starts a \
                         redis-server of its own; run it through scripts/with-redis.sh"
                    )
                });
                let log = self.dir.join("redis.log");
                let _ = std::fs::remove_file(&log);
                // An append-only file in the test's own dir, written and fsynced before each
                // reply (`appendfsync always`): what was acknowledged before the SIGKILL is
                // there after the restart. With the default `everysec`, a busy disk makes Redis
                // postpone the write while the replies go out, and a SIGKILL then loses
                // acknowledged entries (seen here: 13 of 2,000 under load).
                let child = Command::new(binary)
                    .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                    .arg("--dir")
                    .arg(&self.dir)
                    .arg("--logfile")
                    .arg(&log)
                    .args([
                        "--save",
                        "",
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                    ])
                    .args(["--daemonize", "no"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                self.child = Some(child);
                let until = Instant::now() + Duration::from_secs(10);
                while !std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("Ready to accept connections")
                {
                    assert!(Instant::now() < until, "redis-server not ready within 10 s");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            #[cfg(feature = "amqp")]
            Kind::Amqp => {
                self.child = Some(amqp::start_node(self.port, &self.node, &self.dir));
            }
            #[cfg(feature = "kafka")]
            Kind::Kafka => {
                // In-memory storage: a restarted broker starts empty.
                self.child = Some(kafka::start_broker(self.port));
            }
            #[cfg(feature = "sqs")]
            Kind::Sqs => {
                // In memory: a restarted server starts empty.
                self.child = Some(sqs::start_server(self.port));
            }
        }
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A frozen process dies of SIGKILL too; SIGCONT first only to be tidy.
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .stderr(std::process::Stdio::null())
                .status();
            #[cfg(feature = "amqp")]
            if self.kind == Kind::Amqp {
                amqp::kill_node(&child, self.port);
            }
            let _ = child.kill();
            let until = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < until,
                    "the broker did not exit within 10 s"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `done()` (every 10 ms, at most `timeout`); `false` if it never was.
pub async fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + timeout;
    while !done() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Runs one conformance test against `kind`, within [`TEST_TIMEOUT`].
pub async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(Kind) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(tokio::time::timeout(TEST_TIMEOUT, test(kind))).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{kind:?}: the test did not finish within {TEST_TIMEOUT:?}"),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("{kind:?}: the test task failed: {e}"),
        },
    }
}

/// Generates one module per broker (`mod nats` with feature `nats`, `mod redis` with feature
/// `redis`, `mod amqp` with feature `amqp`, `mod kafka` with feature `kafka`, `mod sqs` with
/// feature `sqs`), each with one
/// `#[tokio::test]` per shared test function, which takes the broker's [`Kind`].
macro_rules! per_broker {
    ($($test:ident),* $(,)?) => {
        #[cfg(feature = "nats")]
        crate::brokers::per_broker!(@broker nats, Nats, $($test),*);
        #[cfg(feature = "redis")]
        crate::brokers::per_broker!(@broker redis, Redis, $($test),*);
        #[cfg(feature = "amqp")]
        crate::brokers::per_broker!(@broker amqp, Amqp, $($test),*);
        #[cfg(feature = "kafka")]
        crate::brokers::per_broker!(@broker kafka, Kafka, $($test),*);
        #[cfg(feature = "sqs")]
        crate::brokers::per_broker!(@broker sqs, Sqs, $($test),*);
    };
    (@broker $module:ident, $kind:ident, $($test:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    crate::brokers::run(crate::brokers::Kind::$kind, super::$test).await;
                }
            )*
        }
    };
}

pub(crate) use per_broker;
