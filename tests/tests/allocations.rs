//! Allocation counts on the hot paths, with a counting global allocator: telling a command
//! to a `#[handlers]` actor allocates nothing per message, and publishing an event allocates
//! once (the event shared by all its subscribers), however many subscribers there are.

use std::alloc::System;

use eventdriven::prelude::*;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Command, Debug)]
struct Inc(u64);

#[derive(Command, Debug)]
#[command(reply = u64)]
struct Total;

#[derive(Event, Clone, Debug)]
struct Tick(u64);

#[derive(Default)]
struct Counter {
    total: u64,
}

#[handlers]
impl Counter {
    #[handle]
    fn inc(&mut self, cmd: Inc) {
        self.total += cmd.0;
    }

    #[handle]
    fn total(&mut self, _: Total) -> u64 {
        self.total
    }

    #[subscribe]
    fn tick(&mut self, ev: &Tick) {
        self.total += ev.0;
    }
}

/// Subscribers that only count.
#[derive(Default)]
struct Listener {
    seen: u64,
}

#[handlers]
impl Listener {
    #[subscribe]
    fn tick(&mut self, _: &Tick) {
        self.seen += 1;
    }
}

const N: u64 = 20_000;

/// The counter is global: tests of this file take turns so they count only their own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Allocations made while `f` runs, per message.
async fn per_message<F: std::future::Future<Output = ()>>(f: F) -> f64 {
    let region = Region::new(GLOBAL);
    f.await;
    let stats = region.change();
    (stats.allocations + stats.reallocations) as f64 / N as f64
}

// One thread: no worker's allocations in between, and the queue's blocks are recycled as
// the actor keeps up.
#[tokio::test(flavor = "current_thread")]
async fn telling_a_command_allocates_nothing_per_message() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let app = App::builder()
        .actor_with(Counter::default(), Mailbox::bounded(64))
        .build()
        .await
        .unwrap();
    // Warm up: the queue's first blocks, the runtime's buffers.
    for n in 0..N {
        app.tell(Inc(n)).await.unwrap();
    }
    app.send(Total).await.unwrap();
    let allocs = per_message(async {
        // With a mailbox of 64 the producer waits often, so the actor runs in between: both
        // sides are counted.
        for n in 0..N {
            app.tell(Inc(n)).await.unwrap();
        }
    })
    .await;
    assert_eq!(allocs, 0.0, "allocations per tell");
    app.send(Total).await.unwrap();
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn publishing_allocates_once_per_event_for_any_number_of_subscribers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut builder = App::builder().actor_with(Counter::default(), Mailbox::bounded(64));
    for _ in 0..7 {
        builder = builder.actor_with(Listener::default(), Mailbox::bounded(64));
    }
    let app = builder.build().await.unwrap();
    for n in 0..N {
        app.publish(Tick(n)).await.unwrap();
    }
    app.send(Total).await.unwrap();
    let allocs = per_message(async {
        for n in 0..N {
            app.publish(Tick(n)).await.unwrap();
        }
    })
    .await;
    assert_eq!(
        allocs, 1.0,
        "allocations per event published to 8 subscribers"
    );
    app.send(Total).await.unwrap();
    app.shutdown().await.unwrap();
}
