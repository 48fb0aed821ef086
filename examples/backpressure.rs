//! Backpressure: a fast producer and a slow consumer with a small mailbox.
//!
//! `publish` waits for room, so the producer slows to the consumer's pace and the mailbox
//! never holds more than its bound; `try_publish` refuses instead of waiting and hands the
//! event back, so the producer decides what to do with it. Nothing is dropped silently.
//!
//! Run it with `cargo run --example backpressure`.

use std::time::{Duration, Instant};

use eventdriven::prelude::*;

#[derive(Event, Clone, Debug)]
struct Reading(u32);

#[derive(Query, Debug)]
#[query(reply = (u32, u32))]
struct Progress;

/// Takes 200 µs per reading.
#[derive(Default)]
struct SlowSink {
    count: u32,
    last: u32,
}

#[handlers]
impl SlowSink {
    #[subscribe]
    async fn on_reading(&mut self, ev: &Reading) {
        tokio::time::sleep(Duration::from_micros(200)).await;
        self.count += 1;
        self.last = ev.0;
    }

    #[query]
    fn progress(&self, _: Progress) -> (u32, u32) {
        (self.count, self.last)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    const CAPACITY: usize = 8;
    let app = App::builder()
        .actor_with(SlowSink::default(), Mailbox::bounded(CAPACITY))
        .build()
        .await?;

    println!("== publish 500 readings into a mailbox of {CAPACITY}: the producer waits for room");
    let started = Instant::now();
    for n in 0..500 {
        app.publish(Reading(n)).await?;
    }
    let stats = &app.stats().actors[0];
    println!(
        "   published in {:?}; mailbox peak {} of {} (never above the bound)",
        started.elapsed(),
        stats.peak,
        stats.capacity
    );

    println!(
        "== try_publish 500 more without waiting: full mailboxes refuse and hand the event back"
    );
    let (mut accepted, mut refused, mut kept) = (0, 0, Vec::new());
    for n in 500..1000 {
        match app.try_publish(Reading(n)) {
            Ok(()) => accepted += 1,
            Err(full) => {
                refused += 1;
                kept.push(full.into_inner()); // the producer keeps what was refused
            }
        }
    }
    println!(
        "   accepted {accepted}, refused {refused} (kept by the producer: {})",
        kept.len()
    );

    println!("== retry the refused ones with publish (waiting)");
    for reading in kept {
        app.publish(reading).await?;
    }

    app.shutdown().await?;
    let stats = &app.stats().actors[0];
    println!(
        "== done: the sink handled {} readings; mailbox peak {}/{}; dead letters {}",
        stats.handled,
        stats.peak,
        stats.capacity,
        app.dead_letters().len()
    );
    Ok(())
}
