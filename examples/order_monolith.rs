//! The order flow as one process (a modular monolith).
//!
//! `PlaceOrder` (command) -> `OrderPlaced` (event) -> inventory reserves stock -> payments
//! charge the customer -> shipping ships; a notifier tells the customer, and a read model
//! answers `GetOrder`. The second order's payment is declined: the stock is released and the
//! order cancelled. The third order is empty and is refused by the command handler.
//!
//! Run it with `cargo run --example order_monolith`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use eventdriven::prelude::*;

// ---- the messages -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct OrderId(u64);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[derive(Clone, Debug)]
struct Item {
    sku: &'static str,
    quantity: u32,
    unit_price: Money,
}

/// Cents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Money(u64);

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[derive(Debug)]
enum OrderError {
    Empty,
    Bus(eventdriven::Error),
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::Empty => f.write_str("an order needs at least one item"),
            OrderError::Bus(e) => write!(f, "could not publish: {e}"),
        }
    }
}

impl std::error::Error for OrderError {}

impl From<eventdriven::Error> for OrderError {
    fn from(e: eventdriven::Error) -> Self {
        OrderError::Bus(e)
    }
}

#[derive(Command, Debug)]
#[command(reply = Result<OrderId, OrderError>, name = "order.place")]
struct PlaceOrder {
    customer: &'static str,
    items: Vec<Item>,
}

#[derive(Event, Clone, Debug)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: OrderId,
    customer: &'static str,
    items: Vec<Item>,
    total: Money,
}

#[derive(Event, Clone, Debug)]
#[event(name = "inventory.reserved")]
struct StockReserved {
    order: OrderId,
    customer: &'static str,
    total: Money,
}

#[derive(Event, Clone, Debug)]
#[event(name = "inventory.unavailable")]
struct StockUnavailable {
    order: OrderId,
    sku: &'static str,
}

#[derive(Event, Clone, Debug)]
#[event(name = "payment.completed")]
struct PaymentCompleted {
    order: OrderId,
    amount: Money,
}

#[derive(Event, Clone, Debug)]
#[event(name = "payment.declined")]
struct PaymentDeclined {
    order: OrderId,
    customer: &'static str,
    reason: String,
}

#[derive(Event, Clone, Debug)]
#[event(name = "order.shipped")]
struct OrderShipped {
    order: OrderId,
    tracking: String,
}

#[derive(Query, Debug)]
#[query(reply = Option<OrderView>, name = "order.get")]
struct GetOrder(OrderId);

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Placed,
    Reserved,
    Paid,
    Shipped { tracking: String },
    Cancelled { reason: String },
}

#[derive(Clone, Debug)]
struct OrderView {
    order: OrderId,
    customer: &'static str,
    total: Money,
    status: Status,
}

// ---- the actors ---------------------------------------------------------------------------

/// Takes orders.
#[derive(Default)]
struct Orders {
    next: u64,
}

#[handlers]
impl Orders {
    #[handle]
    async fn place(
        &mut self,
        cmd: PlaceOrder,
        ctx: &mut Context<Self>,
    ) -> Result<OrderId, OrderError> {
        if cmd.items.is_empty() {
            return Err(OrderError::Empty);
        }
        self.next += 1;
        let order = OrderId(self.next);
        let total = Money(
            cmd.items
                .iter()
                .map(|i| i.unit_price.0 * u64::from(i.quantity))
                .sum(),
        );
        println!(
            "[orders]        {order} placed by {} for {total}",
            cmd.customer
        );
        ctx.publish(OrderPlaced {
            order,
            customer: cmd.customer,
            items: cmd.items,
            total,
        })
        .await?;
        Ok(order)
    }
}

/// Holds stock; reserves it for placed orders and releases it when payment fails.
struct Inventory {
    stock: HashMap<&'static str, u32>,
    reserved: HashMap<OrderId, Vec<Item>>,
}

#[handlers]
impl Inventory {
    #[subscribe]
    async fn on_placed(
        &mut self,
        ev: &OrderPlaced,
        ctx: &mut Context<Self>,
    ) -> eventdriven::Result<()> {
        if let Some(missing) = ev
            .items
            .iter()
            .find(|i| self.stock.get(i.sku).copied().unwrap_or(0) < i.quantity)
        {
            println!(
                "[inventory]     {} cannot be reserved: {} is out of stock",
                ev.order, missing.sku
            );
            return ctx
                .publish(StockUnavailable {
                    order: ev.order,
                    sku: missing.sku,
                })
                .await;
        }
        for item in &ev.items {
            *self.stock.get_mut(item.sku).expect("checked above") -= item.quantity;
        }
        self.reserved.insert(ev.order, ev.items.clone());
        println!(
            "[inventory]     {} reserved {} item(s)",
            ev.order,
            ev.items.len()
        );
        ctx.publish(StockReserved {
            order: ev.order,
            customer: ev.customer,
            total: ev.total,
        })
        .await
    }

    #[subscribe]
    fn on_declined(&mut self, ev: &PaymentDeclined) {
        for item in self.reserved.remove(&ev.order).unwrap_or_default() {
            *self.stock.entry(item.sku).or_default() += item.quantity;
        }
        println!("[inventory]     {} stock released", ev.order);
    }
}

/// Charges customers' wallets.
struct Payments {
    wallets: HashMap<&'static str, Money>,
}

#[handlers]
impl Payments {
    #[subscribe]
    async fn on_reserved(
        &mut self,
        ev: &StockReserved,
        ctx: &mut Context<Self>,
    ) -> eventdriven::Result<()> {
        let wallet = self.wallets.entry(ev.customer).or_default();
        if *wallet < ev.total {
            let reason = format!(
                "insufficient funds: {} available, {} due",
                *wallet, ev.total
            );
            println!("[payments]      {} declined: {reason}", ev.order);
            return ctx
                .publish(PaymentDeclined {
                    order: ev.order,
                    customer: ev.customer,
                    reason,
                })
                .await;
        }
        wallet.0 -= ev.total.0;
        println!(
            "[payments]      {} charged {} to {}",
            ev.order, ev.total, ev.customer
        );
        ctx.publish(PaymentCompleted {
            order: ev.order,
            amount: ev.total,
        })
        .await
    }
}

/// Ships paid orders.
#[derive(Default)]
struct Shipping {
    parcels: u32,
}

#[handlers]
impl Shipping {
    #[subscribe]
    async fn on_paid(
        &mut self,
        ev: &PaymentCompleted,
        ctx: &mut Context<Self>,
    ) -> eventdriven::Result<()> {
        self.parcels += 1;
        let tracking = format!("TRK-{:04}", self.parcels);
        println!(
            "[shipping]      {} ({} paid) shipped as {tracking}",
            ev.order, ev.amount
        );
        ctx.publish(OrderShipped {
            order: ev.order,
            tracking,
        })
        .await
    }
}

/// Tells customers what happened: stateless, so free functions.
#[subscribe]
fn notify_shipped(ev: &OrderShipped) {
    println!(
        "[notifications] {} is on its way (tracking {})",
        ev.order, ev.tracking
    );
}

#[subscribe]
fn notify_declined(ev: &PaymentDeclined) {
    println!(
        "[notifications] {} told {} that the payment was declined",
        ev.order, ev.customer
    );
}

/// The read model: one view per order, built from the events.
#[derive(Default)]
struct OrderViews {
    views: HashMap<OrderId, OrderView>,
}

impl OrderViews {
    fn set(&mut self, order: OrderId, status: Status) {
        if let Some(view) = self.views.get_mut(&order) {
            view.status = status;
        }
    }
}

#[handlers]
impl OrderViews {
    #[subscribe]
    fn placed(&mut self, ev: &OrderPlaced) {
        let view = OrderView {
            order: ev.order,
            customer: ev.customer,
            total: ev.total,
            status: Status::Placed,
        };
        self.views.insert(ev.order, view);
    }

    #[subscribe]
    fn reserved(&mut self, ev: &StockReserved) {
        self.set(ev.order, Status::Reserved);
    }

    #[subscribe]
    fn unavailable(&mut self, ev: &StockUnavailable) {
        self.set(
            ev.order,
            Status::Cancelled {
                reason: format!("{} out of stock", ev.sku),
            },
        );
    }

    #[subscribe]
    fn paid(&mut self, ev: &PaymentCompleted) {
        self.set(ev.order, Status::Paid);
    }

    #[subscribe]
    fn declined(&mut self, ev: &PaymentDeclined) {
        self.set(
            ev.order,
            Status::Cancelled {
                reason: ev.reason.clone(),
            },
        );
    }

    #[subscribe]
    fn shipped(&mut self, ev: &OrderShipped) {
        self.set(
            ev.order,
            Status::Shipped {
                tracking: ev.tracking.clone(),
            },
        );
    }

    #[query]
    fn get(&self, q: GetOrder) -> Option<OrderView> {
        self.views.get(&q.0).cloned()
    }
}

// ---- the app ------------------------------------------------------------------------------

/// Waits until the read model shows a final status for `order`.
async fn settled(app: &App, order: OrderId) -> eventdriven::Result<OrderView> {
    let wait = async {
        loop {
            if let Some(view) = app.query(GetOrder(order)).await? {
                if matches!(
                    view.status,
                    Status::Shipped { .. } | Status::Cancelled { .. }
                ) {
                    return Ok(view);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("order {order} did not settle within 30 s"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let widget = |quantity| Item {
        sku: "widget",
        quantity,
        unit_price: Money(250),
    };
    let gadget = |quantity| Item {
        sku: "gadget",
        quantity,
        unit_price: Money(1999),
    };

    let app = App::builder()
        .actor(Orders::default())
        .actor_with(
            Inventory {
                stock: HashMap::from([("widget", 10), ("gadget", 3)]),
                reserved: HashMap::new(),
            },
            Mailbox::bounded(64),
        )
        .actor(Payments {
            wallets: HashMap::from([("alice", Money(10_000)), ("bob", Money(500))]),
        })
        .actor(Shipping::default())
        .actor(OrderViews::default())
        .subscriber(notify_shipped)
        .subscriber(notify_declined)
        .build()
        .await?;

    println!("== alice orders 4 widgets and a gadget");
    let first = app
        .send(PlaceOrder {
            customer: "alice",
            items: vec![widget(4), gadget(1)],
        })
        .await??;
    let view = settled(&app, first).await?;
    println!(
        "== order {} of {}: {:?}, total {}\n",
        view.order, view.customer, view.status, view.total
    );

    println!("== bob orders 2 gadgets, but his wallet holds $5.00");
    let second = app
        .send(PlaceOrder {
            customer: "bob",
            items: vec![gadget(2)],
        })
        .await??;
    let view = settled(&app, second).await?;
    println!(
        "== order {} of {}: {:?}\n",
        view.order, view.customer, view.status
    );

    println!("== carol sends an empty order");
    match app
        .send(PlaceOrder {
            customer: "carol",
            items: vec![],
        })
        .await?
    {
        Ok(order) => println!("== unexpectedly accepted as {order}"),
        Err(e) => println!("== refused: {e}\n"),
    }

    app.shutdown().await?;
    let stats = app.stats();
    println!("== shut down; messages handled per actor:");
    for actor in &stats.actors {
        println!(
            "   {:<16} {:>3}  (mailbox peak {}/{})",
            actor.actor, actor.handled, actor.peak, actor.capacity
        );
    }
    println!("   dead letters: {}", stats.dead_letters);
    Ok(())
}
