//! Each broker bridge beside its raw client crate doing the same work, in the same run.
//!
//! ```text
//! scripts/bench-bridges.sh                       # starts the brokers, runs, prints the table
//! scripts/with-nats.sh cargo bench -p eventdriven-benches --features nats --bench bridges
//! ```
//!
//! Per broker (one feature each: `nats`, `redis`, `amqp`, `kafka`, `sqs`), two criterion
//! groups of [`harness::EVENTS`] events (RabbitMQ: 200), each ~200 B of data, ~480 B as a
//! CloudEvents document:
//!
//! - `bridge_<broker>_publish`: **eventdriven** `app.publish` into a bridge's outbound side,
//!   timed until the broker acknowledged every event (the bridge's `published` count); against
//!   the raw client publishing the same CloudEvents JSON with the same acknowledgement (a
//!   JetStream publish ack, the `XADD` reply, a publisher confirm, a Kafka delivery report,
//!   the `SendMessage` reply), **raw_sequential** one at a time awaiting each ack, and
//!   **raw_pipelined** with a window of publishes in flight (SQS: in `SendMessageBatch` calls
//!   of 10, as the bridge sends them).
//! - `bridge_<broker>_e2e`: the same events published by one app and consumed through another
//!   app's bridge into a subscriber, timed until every message was handled and acked; against
//!   the raw client producing (one at a time, or pipelined) while a consumer of a consumer
//!   group fetches, decodes the JSON and acks each message (the ack confirmed where the
//!   bridge's is: JetStream double ack).
//!
//! Every benchmark has a namespace of its own (stream, subjects, exchange, queue, topic) that
//! is emptied between iterations (outside the timing) and deleted at its end. A broker whose URL
//! variable is unset is skipped with a loud line. Adding a broker is one module implementing
//! [`harness::Broker`] and one line in `main`.

#[cfg(any(
    feature = "nats",
    feature = "redis",
    feature = "amqp",
    feature = "kafka",
    feature = "sqs"
))]
#[path = "bridges/harness.rs"]
mod harness;

#[cfg(feature = "amqp")]
#[path = "bridges/amqp.rs"]
mod amqp;
#[cfg(feature = "kafka")]
#[path = "bridges/kafka.rs"]
mod kafka;
#[cfg(feature = "nats")]
#[path = "bridges/nats.rs"]
mod nats;
#[cfg(feature = "redis")]
#[path = "bridges/redis.rs"]
mod redis;
#[cfg(feature = "sqs")]
#[path = "bridges/sqs.rs"]
mod sqs;

fn main() {
    #[cfg(any(
        feature = "nats",
        feature = "redis",
        feature = "amqp",
        feature = "kafka",
        feature = "sqs"
    ))]
    {
        let mut run = harness::Run::new();
        #[cfg(feature = "nats")]
        run.broker::<nats::Nats>();
        #[cfg(feature = "redis")]
        run.broker::<redis::Redis>();
        #[cfg(feature = "amqp")]
        run.broker::<amqp::Amqp>();
        #[cfg(feature = "kafka")]
        run.broker::<kafka::Kafka>();
        #[cfg(feature = "sqs")]
        run.broker::<sqs::Sqs>();
        run.finish();
    }
    #[cfg(not(any(
        feature = "nats",
        feature = "redis",
        feature = "amqp",
        feature = "kafka",
        feature = "sqs"
    )))]
    eprintln!(
        "no broker to benchmark: build with `--features nats,redis,amqp,kafka,sqs` \
         (scripts/bench-bridges.sh does)"
    );
}
