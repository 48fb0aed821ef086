//! Stream analytics: orders aggregated per customer per minute, and orders joined with their
//! payments, both on the events' own time.
//!
//! Two streams run beside an ordinary actor:
//! - `per-customer-minute` keys orders by customer and sums each minute (tumbling windows of
//!   60 s). The watermark trails the latest order by 5 s; an order up to 30 s behind it still
//!   counts (a minute already published is published again with the update), a later one is
//!   published as a `LateEvent<OrderPlaced>`.
//! - `paid-orders` joins each order with a payment for it made within 2 minutes.
//!
//! The dashboard subscribes to what the streams publish. The orders and payments are a fixed
//! script (some out of order, one late, one paid too late), so the output is always the same.
//! Shutdown publishes the minute still open.
//!
//! Run it with `cargo run --example stream_analytics`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventdriven::prelude::*;
use eventdriven::stream::{LateEvent, Stream, Tumbling, Window};
use eventdriven::Timestamp;

#[derive(Event, Clone, Debug)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: u32,
    customer: String,
    cents: u64,
    at: Timestamp,
}

#[derive(Event, Clone, Debug)]
#[event(name = "payment.received")]
struct PaymentReceived {
    order: u32,
    at: Timestamp,
}

/// One customer's orders in one minute.
#[derive(Event, Clone, Debug)]
#[event(name = "analytics.customer_minute")]
struct CustomerMinute {
    customer: String,
    minute: Timestamp,
    orders: u32,
    cents: u64,
    update: u32,
}

/// An order and its payment, within the bound.
#[derive(Event, Clone, Debug)]
#[event(name = "analytics.order_paid")]
struct OrderPaid {
    order: u32,
    customer: String,
    after: Duration,
}

/// What the dashboard saw, line by line, per kind.
#[derive(Clone, Default)]
struct Dashboard {
    minutes: Arc<Mutex<Vec<String>>>,
    paid: Arc<Mutex<Vec<String>>>,
    late: Arc<Mutex<Vec<String>>>,
}

#[handlers]
impl Dashboard {
    #[subscribe]
    fn on_minute(&mut self, m: &CustomerMinute) {
        let update = match m.update {
            0 => String::new(),
            n => format!(" (update {n})"),
        };
        self.minutes.lock().unwrap().push(format!(
            "minute {} {}: {} orders, {}{update}",
            clock(m.minute),
            m.customer,
            m.orders,
            money(m.cents)
        ));
    }

    #[subscribe]
    fn on_paid(&mut self, p: &OrderPaid) {
        self.paid.lock().unwrap().push(format!(
            "paid: order {} ({}) {} s after it was placed",
            p.order,
            p.customer,
            p.after.as_secs()
        ));
    }

    #[subscribe]
    fn on_late(&mut self, late: &LateEvent<OrderPlaced>) {
        self.late.lock().unwrap().push(format!(
            "late for {}: order {} ({}) at {}, watermark {}",
            late.stream,
            late.event.order,
            late.event.customer,
            clock(late.event_time),
            clock(late.watermark)
        ));
    }
}

/// 2026-01-01 09:00:00 UTC plus `m` minutes and `s` seconds.
fn at(m: u64, s: u64) -> Timestamp {
    const NINE: u64 = 1_767_258_000;
    Timestamp::from_unix_nanos((NINE + m * 60 + s) * 1_000_000_000)
}

/// `HH:MM:SS` of a timestamp (UTC), `HH:MM` on the minute.
fn clock(t: Timestamp) -> String {
    let s = t.as_unix_nanos() / 1_000_000_000 % 86_400;
    let hm = format!("{:02}:{:02}", s / 3600, s / 60 % 60);
    match s % 60 {
        0 => hm,
        sec => format!("{hm}:{sec:02}"),
    }
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn per_customer_minute(orders: Stream<OrderPlaced>) -> eventdriven::stream::Pipeline {
    orders
        .name("per-customer-minute")
        .event_time(|o| o.at)
        .out_of_orderness(Duration::from_secs(5))
        .allowed_lateness(Duration::from_secs(30))
        .publish_late()
        .key_by(|o| o.customer.clone())
        .window(Tumbling::of(Duration::from_secs(60)))
        .aggregate((0, 0), |(orders, cents), o| {
            *orders += 1;
            *cents += o.cents;
        })
        .map(|w: Window<String, (u32, u64)>| CustomerMinute {
            customer: w.key,
            minute: w.start,
            orders: w.value.0,
            cents: w.value.1,
            update: w.revision,
        })
        .publish()
}

fn paid_orders(orders: Stream<OrderPlaced>) -> eventdriven::stream::Pipeline {
    let payments = Stream::<PaymentReceived>::new()
        .event_time(|p| p.at)
        .key_by(|p| p.order);
    orders
        .name("paid-orders")
        .event_time(|o| o.at)
        .out_of_orderness(Duration::from_secs(5))
        .allowed_lateness(Duration::from_secs(300))
        .key_by(|o| o.order)
        .join(payments, Duration::from_secs(120))
        .map(|order, o, p| {
            // Payments before the order are not payments for it.
            (p.at >= o.at).then(|| OrderPaid {
                order: *order,
                customer: o.customer.clone(),
                after: Duration::from_nanos(p.at.as_unix_nanos() - o.at.as_unix_nanos()),
            })
        })
        .filter_map(|paid| paid)
        .publish()
}

#[tokio::main]
async fn main() -> eventdriven::Result<()> {
    let dashboard = Dashboard::default();
    let app = App::builder()
        .actor(dashboard.clone())
        .stream(per_customer_minute)
        .stream(paid_orders)
        .build()
        .await?;

    let order = |order, customer: &str, cents, at| OrderPlaced {
        order,
        customer: customer.to_owned(),
        cents,
        at,
    };
    let pay = |order, at| PaymentReceived { order, at };
    app.publish(order(1, "ada", 1200, at(0, 5))).await?;
    app.publish(order(2, "bob", 800, at(0, 20))).await?;
    app.publish(order(3, "ada", 300, at(0, 40))).await?;
    app.publish(pay(1, at(0, 55))).await?;
    // Watermark 09:01:05: minute 09:00 closes.
    app.publish(order(4, "bob", 2500, at(1, 10))).await?;
    app.publish(pay(2, at(1, 15))).await?;
    app.publish(order(5, "cy", 999, at(1, 30))).await?;
    // Behind the watermark (09:01:25) but within the lateness: counted.
    app.publish(order(6, "ada", 450, at(1, 2))).await?;
    // Its minute was published already: published again, updated.
    app.publish(order(9, "ada", 200, at(0, 58))).await?;
    // Watermark 09:02:05: minute 09:01 closes.
    app.publish(order(7, "ada", 100, at(2, 10))).await?;
    // 75 s behind the watermark: late.
    app.publish(order(8, "bob", 700, at(0, 50))).await?;
    app.publish(pay(5, at(2, 30))).await?;
    // 170 s after order 4: outside the join's 2 minutes.
    app.publish(pay(4, at(4, 0))).await?;
    app.shutdown().await?;

    for line in dashboard.minutes.lock().unwrap().iter() {
        println!("{line}");
    }
    for line in dashboard.paid.lock().unwrap().iter() {
        println!("{line}");
    }
    for line in dashboard.late.lock().unwrap().iter() {
        println!("{line}");
    }
    println!("dead letters {}", app.dead_letters().len());
    Ok(())
}
