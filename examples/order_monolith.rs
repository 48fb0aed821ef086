//! The order flow as one process (a modular monolith), on SQLite in a fresh temp directory.
//!
//! `PlaceOrder` (command) -> `OrderPlaced` (event) -> inventory reserves stock -> payments
//! charge the customer -> shipping dispatches the parcel -> the order is shipped; a notifier
//! tells the customer, and a read model answers `GetOrder`. The second order's payment is
//! declined: the order is cancelled and its stock released. The third order is empty and is
//! refused.
//!
//! Each order is an event-sourced aggregate: `Order` decides on `Place`, `Ship` and `Cancel`
//! against its state rebuilt from its events, and the `Orders` actor runs them through a
//! `Repository` with `execute_in`, which appends `order.placed`, `order.shipped` or
//! `order.cancelled` to the order's stream (`order-1`, ...) and then publishes them on the bus.
//! The app keeps its dead letters and the notifiers' processed message ids (they are
//! idempotent) in the same store (`AppBuilder::store`; scheduled events would go there too).
//! At the end the example prints what the store holds and reloads one order from its events.
//!
//! The store is `orders.db` in a fresh directory under the system temp directory, removed when
//! the example ends (also when it fails). Run it with `cargo run --example order_monolith`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use eventdriven::aggregate::{stream_name, Committed, Repository, RepositoryError};
use eventdriven::prelude::*;
use eventdriven::store::Store;
use eventdriven::Timestamp;

// ---- the messages -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct OrderId(u64);

impl OrderId {
    /// The aggregate id of the order: its stream is `order-{key}`.
    fn key(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
    unit_price: Money,
}

/// Cents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
struct Money(u64);

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[derive(Command, Debug)]
#[command(reply = Result<OrderId, RepositoryError<OrderError>>, name = "order.place")]
struct PlaceOrder {
    customer: String,
    items: Vec<Item>,
}

// The order's own events: the `Order` aggregate records them in its stream.

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: OrderId,
    customer: String,
    items: Vec<Item>,
    total: Money,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.shipped")]
struct OrderShipped {
    order: OrderId,
    customer: String,
    tracking: String,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.cancelled")]
struct OrderCancelled {
    order: OrderId,
    customer: String,
    reason: String,
}

// The other modules' events: published on the bus only. (`Serialize`/`Deserialize` let a
// dead letter keep its payload in the store, so it can be retried after a restart.)

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "inventory.reserved")]
struct StockReserved {
    order: OrderId,
    customer: String,
    total: Money,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "inventory.unavailable")]
struct StockUnavailable {
    order: OrderId,
    sku: String,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "payment.completed")]
struct PaymentCompleted {
    order: OrderId,
    amount: Money,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "payment.declined")]
struct PaymentDeclined {
    order: OrderId,
    reason: String,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "shipping.dispatched")]
struct ParcelDispatched {
    order: OrderId,
    tracking: String,
}

#[derive(Query, Debug)]
#[query(reply = Option<OrderView>, name = "order.get")]
struct GetOrder(OrderId);

/// Where an order stands. The aggregate only knows `Placed`, `Shipped` and `Cancelled`; the
/// read model also shows the steps in between.
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
    customer: String,
    total: Money,
    status: Status,
}

// ---- the aggregate: an order is its events ------------------------------------------------

/// The order's events: the derive stores each under its event's name and publishes it.
#[derive(Events, Clone, Debug)]
enum OrderEvent {
    Placed(OrderPlaced),
    Shipped(OrderShipped),
    Cancelled(OrderCancelled),
}

#[derive(Clone, Debug)]
enum OrderCommand {
    Place {
        order: OrderId,
        customer: String,
        items: Vec<Item>,
    },
    Ship {
        tracking: String,
    },
    Cancel {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("an order needs at least one item")]
    Empty,
    #[error("order {0} already exists")]
    AlreadyPlaced(OrderId),
    #[error("there is no such order")]
    NotPlaced,
    #[error("order {order} is already closed: {status:?}")]
    Closed { order: OrderId, status: Status },
}

/// An order's state, rebuilt from its events: what its decisions need.
#[derive(Debug, Default)]
struct Order {
    id: OrderId,
    customer: String,
    total: Money,
    /// `None` until the order is placed.
    status: Option<Status>,
}

impl Order {
    /// Shipping and cancelling need an order that is placed and not yet closed.
    fn check_open(&self) -> Result<(), OrderError> {
        match &self.status {
            None => Err(OrderError::NotPlaced),
            Some(Status::Placed) => Ok(()),
            Some(status) => Err(OrderError::Closed {
                order: self.id,
                status: status.clone(),
            }),
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order"; // streams are named `order-{id}`
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        let event = match command {
            OrderCommand::Place {
                order,
                customer,
                items,
            } => {
                if self.status.is_some() {
                    return Err(OrderError::AlreadyPlaced(self.id));
                }
                if items.is_empty() {
                    return Err(OrderError::Empty);
                }
                let total = items
                    .iter()
                    .map(|i| i.unit_price.0 * u64::from(i.quantity))
                    .sum();
                let total = Money(total);
                OrderPlaced {
                    order,
                    customer,
                    items,
                    total,
                }
                .into()
            }
            OrderCommand::Ship { tracking } => {
                self.check_open()?;
                let (order, customer) = (self.id, self.customer.clone());
                OrderShipped {
                    order,
                    customer,
                    tracking,
                }
                .into()
            }
            OrderCommand::Cancel { reason } => {
                self.check_open()?;
                let (order, customer) = (self.id, self.customer.clone());
                OrderCancelled {
                    order,
                    customer,
                    reason,
                }
                .into()
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed(e) => {
                self.id = e.order;
                self.customer = e.customer.clone();
                self.total = e.total;
                self.status = Some(Status::Placed);
            }
            OrderEvent::Shipped(e) => {
                let tracking = e.tracking.clone();
                self.status = Some(Status::Shipped { tracking });
            }
            OrderEvent::Cancelled(e) => {
                let reason = e.reason.clone();
                self.status = Some(Status::Cancelled { reason });
            }
        }
    }
}

// ---- the actors ---------------------------------------------------------------------------

/// Takes orders and keeps them up to date: every change is an event committed to the order's
/// stream, then published.
struct Orders {
    repo: Repository<Order>,
    next: u64,
}

impl Orders {
    /// Runs `command` on `order`: `execute_in` loads the order, lets it decide, appends the
    /// events to its stream, then publishes them through `ctx` (caused by the message being
    /// handled, with the metadata they were stored with).
    async fn execute(
        &self,
        ctx: &mut Context<Self>,
        order: OrderId,
        command: OrderCommand,
    ) -> Result<Committed<Order>, RepositoryError<OrderError>> {
        let committed = self.repo.execute_in(ctx, &order.key(), command).await?;
        let stream = stream_name::<Order>(&order.key());
        let first = committed.version + 1 - committed.events.len() as u64;
        for (version, event) in (first..).zip(&committed.events) {
            let what = match event {
                OrderEvent::Placed(e) => format!("placed by {} for {}", e.customer, e.total),
                OrderEvent::Shipped(_) => "shipped".to_owned(),
                OrderEvent::Cancelled(_) => "cancelled".to_owned(),
            };
            println!("[orders]        {order} {what} ({stream}, version {version})");
        }
        Ok(committed)
    }
}

#[handlers]
impl Orders {
    #[handle]
    async fn place(
        &mut self,
        cmd: PlaceOrder,
        ctx: &mut Context<Self>,
    ) -> Result<OrderId, RepositoryError<OrderError>> {
        // An id is used up only by an order that was stored.
        let order = OrderId(self.next + 1);
        let (customer, items) = (cmd.customer, cmd.items);
        let place = OrderCommand::Place {
            order,
            customer,
            items,
        };
        self.execute(ctx, order, place).await?;
        self.next = order.0;
        Ok(order)
    }

    // An error (the order refuses, or the store fails) sends the event to the dead letters,
    // which the app keeps in the store.
    #[subscribe]
    async fn on_dispatched(
        &mut self,
        ev: &ParcelDispatched,
        ctx: &mut Context<Self>,
    ) -> Result<(), RepositoryError<OrderError>> {
        let tracking = ev.tracking.clone();
        self.execute(ctx, ev.order, OrderCommand::Ship { tracking })
            .await?;
        Ok(())
    }

    #[subscribe]
    async fn on_declined(
        &mut self,
        ev: &PaymentDeclined,
        ctx: &mut Context<Self>,
    ) -> Result<(), RepositoryError<OrderError>> {
        let reason = ev.reason.clone();
        self.execute(ctx, ev.order, OrderCommand::Cancel { reason })
            .await?;
        Ok(())
    }

    #[subscribe]
    async fn on_unavailable(
        &mut self,
        ev: &StockUnavailable,
        ctx: &mut Context<Self>,
    ) -> Result<(), RepositoryError<OrderError>> {
        let reason = format!("{} out of stock", ev.sku);
        self.execute(ctx, ev.order, OrderCommand::Cancel { reason })
            .await?;
        Ok(())
    }
}

/// Holds stock; reserves it for placed orders and releases it when an order is cancelled.
struct Inventory {
    stock: HashMap<String, u32>,
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
            .find(|i| self.stock.get(&i.sku).copied().unwrap_or(0) < i.quantity)
        {
            println!(
                "[inventory]     {} cannot be reserved: {} is out of stock",
                ev.order, missing.sku
            );
            return ctx
                .publish(StockUnavailable {
                    order: ev.order,
                    sku: missing.sku.clone(),
                })
                .await;
        }
        for item in &ev.items {
            *self.stock.get_mut(&item.sku).expect("checked above") -= item.quantity;
        }
        self.reserved.insert(ev.order, ev.items.clone());
        println!(
            "[inventory]     {} reserved {} item(s)",
            ev.order,
            ev.items.len()
        );
        ctx.publish(StockReserved {
            order: ev.order,
            customer: ev.customer.clone(),
            total: ev.total,
        })
        .await
    }

    #[subscribe]
    fn on_cancelled(&mut self, ev: &OrderCancelled) {
        // An order cancelled for want of stock reserved nothing.
        if let Some(items) = self.reserved.remove(&ev.order) {
            for item in items {
                *self.stock.entry(item.sku).or_default() += item.quantity;
            }
            println!("[inventory]     {} stock released", ev.order);
        }
    }
}

/// Charges customers' wallets.
struct Payments {
    wallets: HashMap<String, Money>,
}

#[handlers]
impl Payments {
    #[subscribe]
    async fn on_reserved(
        &mut self,
        ev: &StockReserved,
        ctx: &mut Context<Self>,
    ) -> eventdriven::Result<()> {
        let wallet = self.wallets.entry(ev.customer.clone()).or_default();
        if *wallet < ev.total {
            let reason = format!(
                "insufficient funds: {} available, {} due",
                *wallet, ev.total
            );
            println!("[payments]      {} declined: {reason}", ev.order);
            return ctx
                .publish(PaymentDeclined {
                    order: ev.order,
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

/// Dispatches paid orders.
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
            "[shipping]      {} ({} paid) dispatched as {tracking}",
            ev.order, ev.amount
        );
        ctx.publish(ParcelDispatched {
            order: ev.order,
            tracking,
        })
        .await
    }
}

/// Tells customers what happened: stateless, so free functions. Idempotent: an event
/// delivered twice (say, retried from the dead letters) tells the customer once; the ids
/// they handled are kept in the store.
#[subscribe(idempotent)]
fn notify_shipped(ev: &OrderShipped) {
    println!(
        "[notifications] {} told {} it is on its way (tracking {})",
        ev.order, ev.customer, ev.tracking
    );
}

#[subscribe(idempotent)]
fn notify_cancelled(ev: &OrderCancelled) {
    println!(
        "[notifications] {} told {} it was cancelled",
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
            customer: ev.customer.clone(),
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
    fn paid(&mut self, ev: &PaymentCompleted) {
        self.set(ev.order, Status::Paid);
    }

    #[subscribe]
    fn shipped(&mut self, ev: &OrderShipped) {
        let tracking = ev.tracking.clone();
        self.set(ev.order, Status::Shipped { tracking });
    }

    #[subscribe]
    fn cancelled(&mut self, ev: &OrderCancelled) {
        let reason = ev.reason.clone();
        self.set(ev.order, Status::Cancelled { reason });
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

/// A directory removed when dropped (also when the example fails half way).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// On one thread the lines come out in the order the messages flow: `execute_in` publishes
/// the committed events before it returns, so on several threads the inventory could print
/// its line before the orders line that caused it. (The actors are concurrent tasks either way.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // The store: a fresh SQLite file. `temp` is declared first, so it is dropped (and the
    // directory removed) after everything that holds the store.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let dir =
        std::env::temp_dir().join(format!("eventdriven-orders-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp = TempDir(dir);
    let path = temp.0.join("orders.db");
    let store = Store::sqlite(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    println!("store: {} at {}\n", store.backend_name(), path.display());

    let widget = |quantity| Item {
        sku: "widget".into(),
        quantity,
        unit_price: Money(250),
    };
    let gadget = |quantity| Item {
        sku: "gadget".into(),
        quantity,
        unit_price: Money(1999),
    };
    let wallets = [("alice", 10_000), ("bob", 500)].map(|(who, cents)| (who.into(), Money(cents)));

    let repo = Repository::<Order>::new(store.clone());
    let app = App::builder()
        // Dead letters, processed ids and scheduled events go to the store too.
        .store(store.clone())
        .actor(Orders {
            repo: repo.clone(),
            next: 0,
        })
        .actor_with(
            Inventory {
                stock: HashMap::from([("widget".into(), 10), ("gadget".into(), 3)]),
                reserved: HashMap::new(),
            },
            Mailbox::bounded(64),
        )
        .actor(Payments {
            wallets: HashMap::from(wallets),
        })
        .actor(Shipping::default())
        .actor(OrderViews::default())
        .subscriber(notify_shipped)
        .subscriber(notify_cancelled)
        .build()
        .await?;

    println!("== alice orders 4 widgets and a gadget");
    let first = app
        .send(PlaceOrder {
            customer: "alice".into(),
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
            customer: "bob".into(),
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
            customer: "carol".into(),
            items: vec![],
        })
        .await?
    {
        Ok(order) => println!("== unexpectedly accepted as {order}\n"),
        Err(e) => println!("== refused: {e} (nothing stored)\n"),
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
    println!("   dead letters: {}\n", stats.dead_letters);

    // What the store holds: the orders' events, and what the app keeps for delivery.
    println!("== the store");
    let events = store.read_all(0, 1_000).await?;
    let head = store.head().await?;
    println!("   {} events (head at position {head})", events.len());
    for order in [first, second] {
        let stream = stream_name::<Order>(&order.key());
        let version = store.stream_version(&stream).await?;
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e.stream == stream)
            .map(|e| e.name.as_str())
            .collect();
        println!("   {stream}  version {version}: {}", names.join(", "));
    }
    let mut processed = BTreeMap::<String, usize>::new();
    let everything = Timestamp::from_unix_nanos(0);
    for (consumer, _) in store.processed_since(everything, 1_000).await? {
        *processed.entry(consumer).or_default() += 1;
    }
    let processed: Vec<String> = processed.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!("   processed ids: {}", processed.join(", "));
    let dead_letters = store.dead_letters(1_000).await?.len();
    println!("   dead letters stored: {dead_letters}");
    // Replay: the order's state rebuilt from nothing but its stored events.
    let loaded = repo.load(&first.key()).await?;
    let (order, replayed, version) = (&loaded.state, loaded.replayed, loaded.version);
    let status = order.status.as_ref().context("order #1 is not stored")?;
    println!(
        "   order {} reloaded from {replayed} events: {} for {}, {status:?} (version {version})",
        order.id, order.customer, order.total
    );
    Ok(())
}
