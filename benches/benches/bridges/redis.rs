//! Redis Streams: the bridge (`eventdriven::bridge::redis`) against the redis crate.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::StreamReadReply;
use ::redis::AsyncConnectionConfig;
use eventdriven::bridge::Bridge;
use futures_util::StreamExt;

use crate::harness::{self, Count, Encoded, IN_FLIGHT};

/// How long a read waits for messages.
const BLOCK: Duration = Duration::from_secs(1);

/// The bridge's response timeout (5 s, beyond a blocking read's wait), not the client's
/// default 500 ms, which a loaded machine exceeds.
fn config(block: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_response_timeout(Some(block + Duration::from_secs(5)))
}

pub(crate) struct Redis {
    url: String,
    client: ::redis::Client,
    conn: MultiplexedConnection,
    /// The stream key of the namespace.
    stream: String,
}

impl harness::Broker for Redis {
    const NAME: &'static str = "redis";
    const URL_VAR: &'static str = "EVENTDRIVEN_REDIS_URL";

    async fn connect(url: &str, space: &str) -> Self {
        let client = ::redis::Client::open(url).expect("a Redis URL");
        let conn = client
            .get_multiplexed_async_connection_with_config(&config(Duration::ZERO))
            .await
            .expect("Redis connects");
        Self {
            url: url.to_owned(),
            client,
            conn,
            stream: space.to_owned(),
        }
    }

    fn bridge(&self, name: &str) -> Bridge {
        Bridge::new(
            name,
            eventdriven::bridge::redis::Redis::new(self.url.clone()).stream(self.stream.clone()),
        )
    }

    async fn purge(&self) {
        let _: i64 = ::redis::cmd("XTRIM")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut self.conn.clone())
            .await
            .expect("trimmed");
    }

    async fn publish(&self, message: Encoded) {
        // The fields the bridge writes: the name, the content type, the body.
        let _id: String = ::redis::cmd("XADD")
            .arg(&self.stream)
            .arg("*")
            .arg("eventdriven-name")
            .arg(harness::NAME)
            .arg("content-type")
            .arg("application/cloudevents+json")
            .arg("body")
            .arg(message.body)
            .query_async(&mut self.conn.clone())
            .await
            .expect("added");
    }

    async fn consume(&self, group: &str, seen: Arc<Count>) -> tokio::task::JoinHandle<()> {
        let created: Result<(), ::redis::RedisError> = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        if let Err(e) = created {
            assert_eq!(e.code(), Some("BUSYGROUP"), "group created: {e}");
        }
        // Blocking reads on a connection of their own; acks on the shared one, as the bridge.
        let mut reader = self
            .client
            .get_multiplexed_async_connection_with_config(&config(BLOCK))
            .await
            .expect("Redis connects");
        let (stream, group, conn) = (self.stream.clone(), group.to_owned(), self.conn.clone());
        tokio::spawn(async move {
            loop {
                let reply: Option<StreamReadReply> = ::redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(&group)
                    .arg("bench-consumer")
                    .arg("COUNT")
                    .arg(IN_FLIGHT)
                    .arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut reader)
                    .await
                    .expect("read");
                let entries = reply
                    .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>())
                    .unwrap_or_default();
                // Each message decoded and acked on its own, the acks concurrent.
                futures_util::stream::iter(entries)
                    .for_each_concurrent(IN_FLIGHT, |entry| {
                        let (stream, group, mut conn) = (&stream, &group, conn.clone());
                        let seen = &seen;
                        async move {
                            let body: Vec<u8> = entry.get("body").expect("a body");
                            harness::decode(&body);
                            let _: i64 = ::redis::cmd("XACK")
                                .arg(stream)
                                .arg(group)
                                .arg(&entry.id)
                                .query_async(&mut conn)
                                .await
                                .expect("acked");
                            seen.add();
                        }
                    })
                    .await;
            }
        })
    }

    async fn remove(&self) {
        let _: Result<i64, _> = ::redis::cmd("DEL")
            .arg(&self.stream)
            .query_async(&mut self.conn.clone())
            .await;
    }
}
