//! The order flow of `order_monolith` split into two processes that talk over a broker.
//!
//! ```text
//!  orders process                                    fulfillment process
//!  PlaceOrder -> Order aggregate -> SQLite store
//!                 relay -> bridge --order.placed-->  bridge -> reserve, charge, ship
//!                                                    (undone in reverse when a step fails)
//!  Orders: confirm / cancel  <--fulfillment.*--     bridge <- fulfillment.completed / failed
//!  (stored, relayed to the local read model)
//! ```
//!
//! - The *orders* process owns the orders: each is an event-sourced `Order` aggregate in a
//!   SQLite store (a fresh temp directory, or `--store URL`). Its events reach the bus only
//!   through the store's `Relay`, so an `order.placed` that was stored reaches the broker at
//!   least once (the relay's checkpoint waits for the broker's acknowledgement). Outcomes
//!   from fulfillment come back through the bridge and are recorded on the aggregate
//!   (`order.confirmed` / `order.cancelled`); a repeated outcome records nothing.
//! - The *fulfillment* process reserves stock, charges the customer and books the shipment,
//!   undoing what it did in reverse when a step fails, and publishes the outcome. It keeps
//!   each order's outcome, so a redelivered `order.placed` publishes the same outcome again
//!   and does nothing twice.
//! - Correlation ids survive the hops: the command that places an order starts a flow, and
//!   the stored `order.placed`, the outcome published in the other process and the final
//!   order event all carry its correlation id (both processes print it).
//!
//! alice's order is confirmed; bob's payment is declined and dave's shipment times out (both
//! compensated, then cancelled); carol's empty order is refused before anything is stored.
//! When every order is closed, the orders process publishes `shop.closed` and both end.
//!
//! ```text
//! distributed_orders [--role both|orders|fulfillment] [--broker URL] [--run NAME] [--store URL]
//! ```
//!
//! - `--role both` (the default) starts the two roles as two child processes of itself, with a
//!   fresh `--run` name, and waits for both (at most 2 minutes); it exits with 0 when both did.
//! - `--broker`: `nats://host:port` (NATS JetStream, the default: `$EVENTDRIVEN_NATS_URL`, else
//!   `nats://127.0.0.1:4222`), `redis://host:port` (Redis Streams; feature `redis`) or
//!   `amqp://user:password@host:port/%2f` (RabbitMQ; feature `amqp`), `kafka://host:port`
//!   (Kafka; feature `kafka`) or `sqs://host:port` / `http://host:port` (a local SQS server,
//!   plain HTTP; feature `sqs`).
//! - `--run NAME` (default `demo`) names the broker stream and the subjects, so two runs on one
//!   server do not mix. Both roles of one run need the same name.
//!
//! Run it with `scripts/with-nats.sh cargo run -p eventdriven-examples --features nats
//! --example distributed_orders`; see the README for the two roles by hand and for Redis.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::process::{Child, Command as Process, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use eventdriven::aggregate::{stream_name, Repository, RepositoryError};
use eventdriven::bridge::{nats::Nats, Bridge};
use eventdriven::prelude::*;
use eventdriven::projection::Relay;
use eventdriven::store::Store;
use eventdriven::MessageId;
use eventdriven_examples::TempDir;
use tokio::sync::Notify;

/// How long a role waits for the other, and the parent for both roles.
const WAIT: Duration = Duration::from_secs(120);

// ---- the messages that cross the broker -----------------------------------------------------

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
struct OrderId(u64);

impl OrderId {
    /// The aggregate id of the order (its stream is `order-{key}`).
    fn key(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Cents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
struct Money(u64);

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Item {
    sku: String,
    quantity: u32,
    unit_price: Money,
}

/// Orders -> fulfillment: stored in the orders process, relayed, bridged.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: OrderId,
    customer: String,
    address: String,
    items: Vec<Item>,
    total: Money,
}

/// Fulfillment -> orders: every step done; the parcel's tracking number.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "fulfillment.completed")]
struct FulfillmentCompleted {
    order: OrderId,
    payment: String,
    tracking: String,
}

/// Fulfillment -> orders: a step failed, and the steps before it were undone.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "fulfillment.failed")]
struct FulfillmentFailed {
    order: OrderId,
    reason: String,
}

/// Orders -> fulfillment: every order of the run is closed; fulfillment may stop.
#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "shop.closed")]
struct ShopClosed {
    orders: usize,
}

// ---- the orders process ---------------------------------------------------------------------

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.confirmed")]
struct OrderConfirmed {
    order: OrderId,
    tracking: String,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.cancelled")]
struct OrderCancelled {
    order: OrderId,
    reason: String,
}

#[derive(Events, Clone, Debug)]
enum OrderEvent {
    Placed(OrderPlaced),
    Confirmed(OrderConfirmed),
    Cancelled(OrderCancelled),
}

#[derive(Clone, Debug)]
enum OrderCommand {
    Place {
        order: OrderId,
        customer: String,
        address: String,
        items: Vec<Item>,
    },
    Confirm {
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
}

/// Where an order stands.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    Placed,
    Confirmed { tracking: String },
    Cancelled { reason: String },
}

/// An order's state, rebuilt from its events.
#[derive(Debug, Default)]
struct Order {
    id: OrderId,
    status: Option<Status>,
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.id;
        let event = match (command, &self.status) {
            (OrderCommand::Place { .. }, Some(_)) => return Err(OrderError::AlreadyPlaced(order)),
            (OrderCommand::Place { items, .. }, None) if items.is_empty() => {
                return Err(OrderError::Empty)
            }
            (
                OrderCommand::Place {
                    order,
                    customer,
                    address,
                    items,
                },
                None,
            ) => {
                let total = items
                    .iter()
                    .map(|i| i.unit_price.0 * u64::from(i.quantity))
                    .sum();
                let total = Money(total);
                OrderPlaced {
                    order,
                    customer,
                    address,
                    items,
                    total,
                }
                .into()
            }
            (_, None) => return Err(OrderError::NotPlaced),
            // An outcome delivered again (at least once) finds the order closed: nothing to
            // record.
            (_, Some(Status::Confirmed { .. } | Status::Cancelled { .. })) => return Ok(vec![]),
            (OrderCommand::Confirm { tracking }, Some(Status::Placed)) => {
                OrderConfirmed { order, tracking }.into()
            }
            (OrderCommand::Cancel { reason }, Some(Status::Placed)) => {
                OrderCancelled { order, reason }.into()
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &OrderEvent) {
        let status = match event {
            OrderEvent::Placed(e) => {
                self.id = e.order;
                Status::Placed
            }
            OrderEvent::Confirmed(e) => Status::Confirmed {
                tracking: e.tracking.clone(),
            },
            OrderEvent::Cancelled(e) => Status::Cancelled {
                reason: e.reason.clone(),
            },
        };
        self.status = Some(status);
    }
}

/// Replies with the order as placed.
#[derive(Command, Debug)]
#[command(reply = Result<OrderPlaced, RepositoryError<OrderError>>, name = "order.place")]
struct PlaceOrder {
    customer: String,
    address: String,
    items: Vec<Item>,
}

/// Takes orders, and records fulfillment's outcomes on them. It only appends to the store:
/// the relay publishes what was stored.
struct Orders {
    repo: Repository<Order>,
    next: u64,
}

impl Orders {
    /// Runs `command` on `order`, its events caused by the message being handled (so they
    /// keep its correlation id).
    async fn execute(
        &self,
        ctx: &mut Context<Self>,
        order: OrderId,
        command: OrderCommand,
    ) -> Result<Vec<OrderEvent>, RepositoryError<OrderError>> {
        let committed = self
            .repo
            .execute_caused_by(&order.key(), command, ctx.metadata())
            .await?;
        Ok(committed.events)
    }

    /// Records an outcome from fulfillment on the order.
    async fn close(&self, ctx: &mut Context<Self>, order: OrderId, command: OrderCommand) {
        if let Err(e) = self.execute(ctx, order, command).await {
            println!("[orders]      {order} outcome not recorded: {e}");
        }
    }
}

#[handlers]
impl Orders {
    #[handle]
    async fn place(
        &mut self,
        cmd: PlaceOrder,
        ctx: &mut Context<Self>,
    ) -> Result<OrderPlaced, RepositoryError<OrderError>> {
        let order = OrderId(self.next + 1);
        let place = OrderCommand::Place {
            order,
            customer: cmd.customer,
            address: cmd.address,
            items: cmd.items,
        };
        let events = self.execute(ctx, order, place).await?;
        self.next = order.0;
        let [OrderEvent::Placed(placed)] = &events[..] else {
            unreachable!("placing an order records `order.placed`");
        };
        println!(
            "[orders]      {order} placed by {} for {} ({}, correlation {})",
            placed.customer,
            placed.total,
            stream_name::<Order>(&order.key()),
            ctx.metadata().correlation_id
        );
        Ok(placed.clone())
    }

    #[subscribe]
    async fn completed(&mut self, ev: &FulfillmentCompleted, ctx: &mut Context<Self>) {
        println!(
            "[orders]      {} fulfillment.completed arrived: paid {}, parcel {} (correlation {})",
            ev.order,
            ev.payment,
            ev.tracking,
            ctx.metadata().correlation_id
        );
        let tracking = ev.tracking.clone();
        self.close(ctx, ev.order, OrderCommand::Confirm { tracking })
            .await;
    }

    #[subscribe]
    async fn failed(&mut self, ev: &FulfillmentFailed, ctx: &mut Context<Self>) {
        println!(
            "[orders]      {} fulfillment.failed arrived: {} (correlation {})",
            ev.order,
            ev.reason,
            ctx.metadata().correlation_id
        );
        let reason = ev.reason.clone();
        self.close(ctx, ev.order, OrderCommand::Cancel { reason })
            .await;
    }
}

/// One order as the read model saw it: its status and the correlation id of each event.
#[derive(Clone, Debug)]
struct View {
    customer: String,
    status: Status,
    placed_in: MessageId,
    closed_in: Option<MessageId>,
}

#[derive(Query, Debug)]
#[query(reply = BTreeMap<OrderId, View>, name = "order.views")]
struct GetViews;

/// The read model of the orders process, fed by the relay from the store.
#[derive(Default)]
struct OrderViews {
    views: BTreeMap<OrderId, View>,
}

impl OrderViews {
    fn close(&mut self, order: OrderId, status: Status, correlation: MessageId) {
        println!("[orders]      {order} {status:?} (correlation {correlation})");
        if let Some(view) = self.views.get_mut(&order) {
            view.status = status;
            view.closed_in = Some(correlation);
        }
    }
}

#[handlers]
impl OrderViews {
    #[subscribe]
    fn placed(&mut self, ev: &OrderPlaced, ctx: &mut Context<Self>) {
        let view = View {
            customer: ev.customer.clone(),
            status: Status::Placed,
            placed_in: ctx.metadata().correlation_id,
            closed_in: None,
        };
        self.views.insert(ev.order, view);
    }

    #[subscribe]
    fn confirmed(&mut self, ev: &OrderConfirmed, ctx: &mut Context<Self>) {
        let tracking = ev.tracking.clone();
        let correlation = ctx.metadata().correlation_id;
        self.close(ev.order, Status::Confirmed { tracking }, correlation);
    }

    #[subscribe]
    fn cancelled(&mut self, ev: &OrderCancelled, ctx: &mut Context<Self>) {
        let reason = ev.reason.clone();
        let correlation = ctx.metadata().correlation_id;
        self.close(ev.order, Status::Cancelled { reason }, correlation);
    }

    #[query]
    fn get(&self, _: GetViews) -> BTreeMap<OrderId, View> {
        self.views.clone()
    }
}

/// The orders role: places the orders, waits until each is closed, checks how.
async fn orders(options: &Options) -> anyhow::Result<bool> {
    let (_temp, store) = match &options.store {
        Some(url) => (None, Store::open(url).await.context("opening the store")?),
        None => {
            let temp = TempDir::new("distributed-orders")?;
            let path = temp.0.join("orders.db");
            let store = Store::sqlite(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            (Some(temp), store)
        }
    };
    println!("[orders]      store: {}", store.backend_name());

    let bridge = bridge(options, "orders")?
        .publish_keyed(|ev: &OrderPlaced| ev.order.key())
        .publish::<ShopClosed>()
        .consume_matching("fulfillment.*");
    let app = App::builder()
        .actor(Orders {
            repo: Repository::new(store.clone()),
            next: 0,
        })
        .actor(OrderViews::default())
        .bridge(bridge)
        .build()
        .await
        .context("starting the orders app (is the broker running?)")?;
    // The store is the outbox: what is appended reaches the bus, and the bridge, through the
    // relay, at least once.
    let relay = Relay::new(store.clone(), &app)
        .poll_interval(Duration::from_millis(50))
        .start()
        .await?;

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
    let orders = [
        ("alice", "Springfield", vec![widget(4), gadget(1)]),
        ("bob", "Springfield", vec![gadget(2)]),
        ("dave", REMOTE, vec![widget(2), gadget(1)]),
        ("carol", "Springfield", vec![]),
    ];
    let mut placed = 0;
    for (customer, address, items) in orders {
        let place = PlaceOrder {
            customer: customer.into(),
            address: address.into(),
            items,
        };
        match app.send(place).await? {
            Ok(_) => placed += 1,
            Err(e) => println!("[orders]      {customer}'s order refused: {e} (nothing stored)"),
        }
    }

    // Every order placed ends confirmed or cancelled, once fulfillment answered.
    let deadline = Instant::now() + WAIT;
    let views = loop {
        let views = app.query(GetViews).await?;
        let open = views
            .values()
            .filter(|v| v.status == Status::Placed)
            .count();
        if views.len() == placed && open == 0 {
            break views;
        }
        if Instant::now() > deadline {
            bail!(
                "{open} of {placed} orders still open after {WAIT:?}: is the fulfillment \
                 process running on the same broker and --run?"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    app.publish(ShopClosed { orders: placed }).await?;
    relay.stop().await;
    app.shutdown().await?;

    println!("== orders, as the orders process stored them");
    let expected = [
        ("alice", "Confirmed"),
        ("bob", "Cancelled"),
        ("dave", "Cancelled"),
    ];
    let mut ok = views.len() == expected.len();
    for (order, view) in &views {
        let kept = view.closed_in == Some(view.placed_in);
        let want = expected
            .iter()
            .find(|(who, _)| *who == view.customer)
            .map_or("?", |(_, status)| status);
        let status = format!("{:?}", view.status);
        let as_expected = status.starts_with(want);
        ok &= kept && as_expected;
        println!(
            "   {order} {:<6} {status}{}\n      correlation {} {}",
            view.customer,
            if as_expected { "" } else { "  (UNEXPECTED)" },
            view.placed_in,
            if kept {
                "kept from order.placed to the outcome"
            } else {
                "NOT KEPT"
            }
        );
    }
    if ok {
        println!("== every order reached its expected state");
    } else {
        println!("== FAILED: not every order reached its expected state");
    }
    Ok(ok)
}

// ---- the fulfillment process ----------------------------------------------------------------

/// Where the remote warehouse ships to; it answers after a second, later than fulfillment
/// waits for a shipment.
const REMOTE: &str = "Far Isle";
const SHIPMENT_TIMEOUT: Duration = Duration::from_millis(300);

/// Inventory, payments and shipping of the monolith, in one actor: the process's local steps.
struct Fulfillment {
    stock: HashMap<String, u32>,
    wallets: HashMap<String, Money>,
    payments: u32,
    parcels: u32,
    /// The outcome of each order handled: published again if its `order.placed` comes again.
    outcomes: HashMap<OrderId, Result<FulfillmentCompleted, FulfillmentFailed>>,
    closed: Arc<Notify>,
}

impl Fulfillment {
    fn reserve(&mut self, order: &OrderPlaced) -> Result<(), String> {
        if let Some(item) = order
            .items
            .iter()
            .find(|i| self.stock.get(&i.sku).copied().unwrap_or(0) < i.quantity)
        {
            return Err(format!("{} is out of stock", item.sku));
        }
        for item in &order.items {
            *self.stock.entry(item.sku.clone()).or_default() -= item.quantity;
        }
        println!(
            "[fulfillment] {} reserved {} item(s)",
            order.order,
            order.items.len()
        );
        Ok(())
    }

    fn release(&mut self, order: &OrderPlaced) {
        for item in &order.items {
            *self.stock.entry(item.sku.clone()).or_default() += item.quantity;
        }
        println!("[fulfillment] {} stock released", order.order);
    }

    fn charge(&mut self, order: &OrderPlaced) -> Result<String, String> {
        let wallet = self.wallets.entry(order.customer.clone()).or_default();
        if *wallet < order.total {
            return Err(format!(
                "insufficient funds: {wallet} available, {} due",
                order.total
            ));
        }
        wallet.0 -= order.total.0;
        self.payments += 1;
        let id = format!("PAY-{:04}", self.payments);
        println!(
            "[fulfillment] {} charged {} to {} ({id})",
            order.order, order.total, order.customer
        );
        Ok(id)
    }

    fn refund(&mut self, order: &OrderPlaced, payment: &str) {
        self.wallets.entry(order.customer.clone()).or_default().0 += order.total.0;
        println!(
            "[fulfillment] {} refunded {} to {} ({payment})",
            order.order, order.total, order.customer
        );
    }

    async fn ship(&mut self, order: &OrderPlaced) -> Result<String, String> {
        if order.address == REMOTE {
            println!(
                "[fulfillment] {} goes to {REMOTE}: asking the remote warehouse",
                order.order
            );
            let remote = tokio::time::sleep(Duration::from_secs(1));
            if tokio::time::timeout(SHIPMENT_TIMEOUT, remote)
                .await
                .is_err()
            {
                return Err(format!("shipment timed out after {SHIPMENT_TIMEOUT:?}"));
            }
        }
        self.parcels += 1;
        let tracking = format!("TRK-{:04}", self.parcels);
        println!(
            "[fulfillment] {} dispatched to {} as {tracking}",
            order.order, order.address
        );
        Ok(tracking)
    }

    /// Reserve, charge, ship; on a failure, what was done is undone in reverse.
    async fn fulfil(
        &mut self,
        order: &OrderPlaced,
    ) -> Result<FulfillmentCompleted, FulfillmentFailed> {
        let failed = |reason: String| FulfillmentFailed {
            order: order.order,
            reason,
        };
        self.reserve(order).map_err(failed)?;
        let payment = match self.charge(order) {
            Ok(payment) => payment,
            Err(reason) => {
                println!("[fulfillment] {} declined: {reason}", order.order);
                self.release(order);
                return Err(failed(reason));
            }
        };
        match self.ship(order).await {
            Ok(tracking) => Ok(FulfillmentCompleted {
                order: order.order,
                payment,
                tracking,
            }),
            Err(reason) => {
                println!("[fulfillment] {} {reason}", order.order);
                self.refund(order, &payment);
                self.release(order);
                Err(failed(reason))
            }
        }
    }
}

#[handlers]
impl Fulfillment {
    /// Publishing from the handler makes the outcome caused by `order.placed`: same
    /// correlation id, in another process.
    #[subscribe]
    async fn placed(&mut self, ev: &OrderPlaced, ctx: &mut Context<Self>) -> anyhow::Result<()> {
        println!(
            "[fulfillment] {} order.placed arrived: {} for {} (correlation {})",
            ev.order,
            ev.customer,
            ev.total,
            ctx.metadata().correlation_id
        );
        let outcome = match self.outcomes.get(&ev.order) {
            Some(outcome) => outcome.clone(),
            None => {
                let outcome = self.fulfil(ev).await;
                self.outcomes.insert(ev.order, outcome.clone());
                outcome
            }
        };
        match outcome {
            Ok(completed) => ctx.publish(completed).await?,
            Err(failed) => ctx.publish(failed).await?,
        }
        Ok(())
    }

    #[subscribe]
    fn shop_closed(&mut self, ev: &ShopClosed) {
        println!(
            "[fulfillment] shop.closed arrived: {} order(s) in all",
            ev.orders
        );
        self.closed.notify_one();
    }
}

/// The fulfillment role: handles orders until the orders process says the shop is closed.
async fn fulfillment(options: &Options) -> anyhow::Result<bool> {
    let closed = Arc::new(Notify::new());
    let bridge = bridge(options, "fulfillment")?
        .publish_keyed(|ev: &FulfillmentCompleted| ev.order.key())
        .publish_keyed(|ev: &FulfillmentFailed| ev.order.key())
        .consume::<OrderPlaced>()
        .consume::<ShopClosed>();
    let wallets = [("alice", 10_000), ("bob", 500), ("dave", 5_000)];
    let app = App::builder()
        .actor(Fulfillment {
            stock: HashMap::from([("widget".into(), 10), ("gadget".into(), 3)]),
            wallets: wallets.map(|(who, c)| (who.into(), Money(c))).into(),
            payments: 0,
            parcels: 0,
            outcomes: HashMap::new(),
            closed: closed.clone(),
        })
        .bridge(bridge)
        .build()
        .await
        .context("starting the fulfillment app (is the broker running?)")?;
    println!("[fulfillment] waiting for orders");
    let ended = tokio::time::timeout(WAIT, closed.notified()).await;
    // Drains: the last outcomes reach the broker, the last messages are acked.
    app.shutdown().await?;
    if ended.is_err() {
        bail!("no shop.closed within {WAIT:?}: is the orders process running on the same broker and --run?");
    }
    println!("[fulfillment] done");
    Ok(true)
}

// ---- the broker and the command line --------------------------------------------------------

/// A bridge named `name` (also its consumer group) on the broker of `--broker`, on the stream
/// of `--run`.
fn bridge(options: &Options, name: &str) -> anyhow::Result<Bridge> {
    let url = &options.broker;
    let run = &options.run;
    if url.starts_with("nats://") {
        let nats = Nats::new(url)
            .stream(format!("SHOP-{run}"))
            .subject_prefix(format!("shop-{run}"));
        return Ok(Bridge::new(name, nats).ack_wait(Duration::from_secs(10)));
    }
    if url.starts_with("redis://") {
        #[cfg(feature = "redis")]
        {
            let redis = eventdriven::bridge::redis::Redis::new(url).stream(format!("shop-{run}"));
            return Ok(Bridge::new(name, redis).ack_wait(Duration::from_secs(10)));
        }
        #[cfg(not(feature = "redis"))]
        bail!("a redis:// broker needs the example built with `--features nats,redis`");
    }
    if url.starts_with("amqp://") {
        #[cfg(feature = "amqp")]
        {
            // RabbitMQ drops an event no queue is bound for: each process declares both
            // groups' queues, so what one publishes before the other first started is kept.
            let amqp = eventdriven::bridge::amqp::Amqp::new(url)
                .exchange(format!("shop-{run}"))
                .keep_for("orders", ["fulfillment.*"])
                .keep_for("fulfillment", ["order.placed", "shop.closed"]);
            return Ok(Bridge::new(name, amqp).ack_wait(Duration::from_secs(10)));
        }
        #[cfg(not(feature = "amqp"))]
        bail!("an amqp:// broker needs the example built with `--features nats,amqp`");
    }
    if url.starts_with("kafka://") {
        #[cfg(feature = "kafka")]
        {
            let kafka = eventdriven::bridge::kafka::Kafka::new(url).topic(format!("shop-{run}"));
            return Ok(Bridge::new(name, kafka).ack_wait(Duration::from_secs(10)));
        }
        #[cfg(not(feature = "kafka"))]
        bail!("a kafka:// broker needs the example built with `--features nats,kafka`");
    }
    if url.starts_with("sqs://") || url.starts_with("http://") {
        #[cfg(feature = "sqs")]
        {
            // SQS is point to point: each role consumes a queue of its own, and sends what the
            // other consumes to the other's queue (created by whichever starts first).
            let queue = |role: &str| format!("shop-{run}-{role}");
            let sqs = eventdriven::bridge::sqs::Sqs::new(url).queue(queue(name));
            let sqs = if name == "orders" {
                sqs.publish_to("order.placed", queue("fulfillment"))
                    .publish_to("shop.closed", queue("fulfillment"))
            } else {
                sqs.publish_to("fulfillment.*", queue("orders"))
            };
            return Ok(Bridge::new(name, sqs).ack_wait(Duration::from_secs(10)));
        }
        #[cfg(not(feature = "sqs"))]
        bail!("an sqs:// broker needs the example built with `--features nats,sqs`");
    }
    bail!(
        "--broker `{url}`: expected nats://host:port, redis://host:port, amqp://host:port, \
         kafka://host:port or sqs://host:port"
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Both,
    Orders,
    Fulfillment,
}

#[derive(Debug)]
struct Options {
    role: Role,
    broker: String,
    run: String,
    store: Option<String>,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut options = Self {
            role: Role::Both,
            broker: std::env::var("EVENTDRIVEN_NATS_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned()),
            run: "demo".to_owned(),
            store: None,
        };
        let mut run = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .with_context(|| format!("{name} needs a value"))
            };
            match name.as_str() {
                "--role" => {
                    options.role = match value()?.as_str() {
                        "both" => Role::Both,
                        "orders" => Role::Orders,
                        "fulfillment" => Role::Fulfillment,
                        other => bail!(
                            "unknown role `{other}`; expected one of: `both`, `orders`, `fulfillment`"
                        ),
                    }
                }
                "--broker" => options.broker = value()?,
                "--run" => run = Some(value()?),
                "--store" => options.store = Some(value()?),
                _ => bail!(
                    "unknown argument `{arg}`; expected one of: `--role`, `--broker`, `--run`, `--store`"
                ),
            }
        }
        // Two processes started by `both` get a run of their own, so reruns never mix.
        options.run = match (run, options.role) {
            (Some(run), _) => run,
            (None, Role::Both) => eventdriven_examples::run_id(),
            (None, _) => options.run,
        };
        if ![
            "nats://", "redis://", "amqp://", "kafka://", "sqs://", "http://",
        ]
        .iter()
        .any(|scheme| options.broker.starts_with(scheme))
        {
            bail!(
                "--broker `{}`: expected nats://host:port, redis://host:port, amqp://host:port, \
                 kafka://host:port or sqs://host:port",
                options.broker
            );
        }
        if !options
            .run
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("--run `{}`: letters, digits, `-` and `_` only", options.run);
        }
        Ok(options)
    }
}

/// Starts the two roles as child processes of this binary and waits (bounded) for both.
fn both(options: &Options) -> anyhow::Result<bool> {
    println!(
        "== two processes on {} (run {}): fulfillment, then orders",
        options.broker, options.run
    );
    let exe = std::env::current_exe().context("finding this program")?;
    let start = |role: &str| -> anyhow::Result<Child> {
        let mut command = Process::new(&exe);
        command.args([
            "--role",
            role,
            "--broker",
            &options.broker,
            "--run",
            &options.run,
        ]);
        if let (Some(store), "orders") = (&options.store, role) {
            command.args(["--store", store]);
        }
        command
            .spawn()
            .with_context(|| format!("starting the {role} process"))
    };
    let mut children = vec![("fulfillment", start("fulfillment")?)];
    match start("orders") {
        Ok(child) => children.push(("orders", child)),
        Err(e) => {
            let _ = children[0].1.kill();
            let _ = children[0].1.wait();
            return Err(e);
        }
    }
    let deadline = Instant::now() + WAIT + Duration::from_secs(10);
    let mut statuses = Vec::new();
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            if let Some(status) = children[i].1.try_wait()? {
                statuses.push((children.remove(i).0, status));
            } else {
                i += 1;
            }
        }
        // A role that failed leaves the other waiting for it: no point in letting it wait.
        let failed = statuses.iter().any(|(_, status)| !status.success());
        if failed || Instant::now() > deadline {
            for (role, child) in &mut children {
                let why = if failed {
                    "the other one failed"
                } else {
                    "it did not end in time"
                };
                println!("== the {role} process was killed: {why}");
                let _ = child.kill();
                let _ = child.wait();
            }
            children.clear();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    statuses.sort_by_key(|(role, _)| *role);
    for (role, status) in &statuses {
        println!("== the {role} process ended: {status}");
    }
    let ok = statuses.len() == 2 && statuses.iter().all(|(_, status)| status.success());
    println!(
        "== {}",
        if ok {
            "both processes succeeded"
        } else {
            "FAILED"
        }
    );
    Ok(ok)
}

fn main() -> ExitCode {
    let result = Options::parse().and_then(|options| {
        if options.role == Role::Both {
            return both(&options);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            match options.role {
                Role::Orders => orders(&options).await,
                _ => fulfillment(&options).await,
            }
        })
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
