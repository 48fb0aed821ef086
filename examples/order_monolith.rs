//! The order flow as one process (a modular monolith), on SQLite in a fresh temp directory.
//!
//! `PlaceOrder` (command) -> the `Order` aggregate records `order.placed` -> the app starts the
//! order's `order-fulfillment` saga, which sends commands to the other modules, one step at a
//! time, and undoes the completed steps in reverse when one fails:
//!
//! | step                | command to       | compensation            |
//! |---------------------|------------------|-------------------------|
//! | `accept order`      | (none: placed)   | cancel the order        |
//! | `reserve inventory` | `Inventory`      | release the stock       |
//! | `charge payment`    | `Payments`       | refund the payment      |
//! | `create shipment`   | `Shipping`       | cancel the shipment     |
//! | `confirm order`     | `Orders`         | (none: the last step)   |
//!
//! - alice: every step succeeds; the saga is `completed` and her order confirmed.
//! - bob: his payment is declined; the saga releases his stock (there is nothing to refund)
//!   and cancels the order: `compensated`.
//! - dave: his parcel goes through a remote warehouse that answers after a second, but
//!   `create shipment` may take 300 ms: the step times out, the saga refunds him, releases his
//!   stock and cancels the order: `compensated`. The warehouse's late answer still arrives
//!   (a step that timed out did not complete, so it is not compensated): shipping calls off
//!   parcels of cancelled orders itself, told by `order.cancelled`.
//! - carol: her order is empty; the aggregate refuses it and no saga starts.
//!
//! Each order is an event-sourced aggregate: `Order` decides on `Place`, `Confirm` and `Cancel`
//! against its state rebuilt from its events, and the `Orders` actor runs them through a
//! `Repository` with `execute_in`, which appends `order.placed`, `order.confirmed` or
//! `order.cancelled` to the order's stream (`order-1`, ...) and then publishes them on the bus,
//! where a notifier tells the customer and a read model answers `GetOrder`.
//!
//! The saga instances are kept in the same store as the events: the runner writes each
//! instance after every step, so after a crash `Sagas::resume` continues it from the last step
//! written, calling the step in flight again with the same idempotency key. The app keeps its
//! dead letters and the notifiers' processed message ids (they are idempotent) there too
//! (`AppBuilder::store`). At the end the example lists the saga instances, prints what the
//! store holds and reloads one order from its events.
//!
//! The store is `orders.db` in a fresh directory under the system temp directory, removed when
//! the example ends (also when it fails). Run it with `cargo run --example order_monolith`.
//!
//! With the `live-view` feature, `--serve 127.0.0.1:PORT` keeps the app running after the four
//! orders and serves its live view there (the actors, dead letters and saga instances on a
//! page refreshed every second, and `/metrics` for Prometheus; see
//! `eventdriven_examples::live_view`), while more orders keep coming, one every 300 ms: some
//! declined, some timing out, and a rewards module whose points service fails the first time
//! for every third confirmed order, so dead letters pile up to be retried or purged from the
//! page. It ends on Ctrl-C, or after `--serve-for SECONDS`, with the usual summary:
//!
//! ```text
//! cargo run --example order_monolith --features live-view -- --serve 127.0.0.1:8080
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use eventdriven::aggregate::{stream_name, Committed, Repository, RepositoryError};
use eventdriven::prelude::*;
use eventdriven::saga::{Saga, SagaRef, SagaStatus, Sagas, StepContext, StepError, StepResult};
use eventdriven::store::Store;
use eventdriven::Timestamp;
use eventdriven_examples::TempDir;

// ---- the messages -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct OrderId(u64);

impl OrderId {
    /// The aggregate id of the order (its stream is `order-{key}`), and its saga's id.
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

/// `quantity` widgets at $2.50.
fn widget(quantity: u32) -> Item {
    Item {
        sku: "widget".into(),
        quantity,
        unit_price: Money(250),
    }
}

/// `quantity` gadgets at $19.99.
fn gadget(quantity: u32) -> Item {
    Item {
        sku: "gadget".into(),
        quantity,
        unit_price: Money(1999),
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

/// Replies with the order as placed, which the app starts the order's saga with.
#[derive(Command, Debug)]
#[command(reply = Result<OrderPlaced, RepositoryError<OrderError>>, name = "order.place")]
struct PlaceOrder {
    customer: String,
    address: String,
    items: Vec<Item>,
}

// The commands the saga's steps send. Their replies are `Clone` (what `send_idempotent`
// keeps for a repeated key), so the order's own errors come back as text.

#[derive(Command, Debug)]
#[command(reply = Result<(), String>, name = "order.confirm")]
struct ConfirmOrder {
    order: OrderId,
    tracking: String,
}

#[derive(Command, Debug)]
#[command(reply = Result<(), String>, name = "order.cancel")]
struct CancelOrder {
    order: OrderId,
    reason: String,
}

#[derive(Command, Debug)]
#[command(reply = Result<(), OutOfStock>, name = "inventory.reserve")]
struct ReserveStock {
    order: OrderId,
    items: Vec<Item>,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{sku} is out of stock")]
struct OutOfStock {
    sku: String,
}

#[derive(Command, Debug)]
#[command(reply = (), name = "inventory.release")]
struct ReleaseStock(OrderId);

/// Replies with the payment's id.
#[derive(Command, Debug)]
#[command(reply = Result<String, Declined>, name = "payment.charge")]
struct ChargePayment {
    order: OrderId,
    customer: String,
    amount: Money,
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("insufficient funds: {available} available, {due} due")]
struct Declined {
    available: Money,
    due: Money,
}

#[derive(Command, Debug)]
#[command(reply = (), name = "payment.refund")]
struct RefundPayment(OrderId);

/// Replies with the parcel's tracking number.
#[derive(Command, Debug)]
#[command(reply = String, name = "shipping.create")]
struct CreateShipment {
    order: OrderId,
    address: String,
}

#[derive(Command, Debug)]
#[command(reply = (), name = "shipping.cancel")]
struct CancelShipment(OrderId);

// The order's own events: the `Order` aggregate records them in its stream, then they are
// published. (`Serialize`/`Deserialize` also let a dead letter keep its payload in the store,
// so it can be retried after a restart.)

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.placed")]
struct OrderPlaced {
    order: OrderId,
    customer: String,
    address: String,
    items: Vec<Item>,
    total: Money,
}

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "order.confirmed")]
struct OrderConfirmed {
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

#[derive(Query, Debug)]
#[query(reply = Option<OrderView>, name = "order.get")]
struct GetOrder(OrderId);

#[derive(Query, Debug)]
#[query(reply = Option<Parcel>, name = "shipping.parcel")]
struct GetParcel(OrderId);

/// Where an order stands.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    Placed,
    Confirmed { tracking: String },
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
    /// Confirming and cancelling need an order that is placed and not yet closed.
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
                address,
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
                    address,
                    items,
                    total,
                }
                .into()
            }
            OrderCommand::Confirm { tracking } => {
                // Confirmed already with this parcel: a saga step called again after a crash.
                // Nothing more to record.
                if self.status
                    == Some(Status::Confirmed {
                        tracking: tracking.clone(),
                    })
                {
                    return Ok(vec![]);
                }
                self.check_open()?;
                let (order, customer) = (self.id, self.customer.clone());
                OrderConfirmed {
                    order,
                    customer,
                    tracking,
                }
                .into()
            }
            OrderCommand::Cancel { reason } => {
                if matches!(self.status, Some(Status::Cancelled { .. })) {
                    return Ok(vec![]);
                }
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
            OrderEvent::Confirmed(e) => {
                let tracking = e.tracking.clone();
                self.status = Some(Status::Confirmed { tracking });
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
                OrderEvent::Confirmed(_) => "confirmed".to_owned(),
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
    ) -> Result<OrderPlaced, RepositoryError<OrderError>> {
        // An id is used up only by an order that was stored.
        let order = OrderId(self.next + 1);
        let place = OrderCommand::Place {
            order,
            customer: cmd.customer,
            address: cmd.address,
            items: cmd.items,
        };
        let committed = self.execute(ctx, order, place).await?;
        self.next = order.0;
        let [OrderEvent::Placed(placed)] = &committed.events[..] else {
            unreachable!("placing an order records `order.placed`");
        };
        Ok(placed.clone())
    }

    #[handle]
    async fn confirm(&mut self, cmd: ConfirmOrder, ctx: &mut Context<Self>) -> Result<(), String> {
        let confirm = OrderCommand::Confirm {
            tracking: cmd.tracking,
        };
        match self.execute(ctx, cmd.order, confirm).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[handle]
    async fn cancel(&mut self, cmd: CancelOrder, ctx: &mut Context<Self>) -> Result<(), String> {
        let cancel = OrderCommand::Cancel { reason: cmd.reason };
        match self.execute(ctx, cmd.order, cancel).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Holds stock; reserves it for orders and releases it. Both are idempotent per order: a
/// command repeated for the same order finds it done.
struct Inventory {
    stock: HashMap<String, u32>,
    reserved: HashMap<OrderId, Vec<Item>>,
}

#[handlers]
impl Inventory {
    #[handle]
    fn reserve(&mut self, cmd: ReserveStock) -> Result<(), OutOfStock> {
        if self.reserved.contains_key(&cmd.order) {
            return Ok(());
        }
        if let Some(missing) = cmd
            .items
            .iter()
            .find(|i| self.stock.get(&i.sku).copied().unwrap_or(0) < i.quantity)
        {
            println!(
                "[inventory]     {} cannot be reserved: {} is out of stock",
                cmd.order, missing.sku
            );
            let sku = missing.sku.clone();
            return Err(OutOfStock { sku });
        }
        for item in &cmd.items {
            *self.stock.get_mut(&item.sku).expect("checked above") -= item.quantity;
        }
        println!(
            "[inventory]     {} reserved {} item(s)",
            cmd.order,
            cmd.items.len()
        );
        self.reserved.insert(cmd.order, cmd.items);
        Ok(())
    }

    #[handle]
    fn release(&mut self, cmd: ReleaseStock) {
        if let Some(items) = self.reserved.remove(&cmd.0) {
            for item in items {
                *self.stock.entry(item.sku).or_default() += item.quantity;
            }
            println!("[inventory]     {} stock released", cmd.0);
        }
    }
}

/// Charges customers' wallets, and refunds them: once per order.
struct Payments {
    wallets: HashMap<String, Money>,
    /// The payments taken, by order: id, customer, amount.
    charged: HashMap<OrderId, (String, String, Money)>,
}

#[handlers]
impl Payments {
    #[handle]
    fn charge(&mut self, cmd: ChargePayment) -> Result<String, Declined> {
        if let Some((id, ..)) = self.charged.get(&cmd.order) {
            return Ok(id.clone());
        }
        let wallet = self.wallets.entry(cmd.customer.clone()).or_default();
        if *wallet < cmd.amount {
            let declined = Declined {
                available: *wallet,
                due: cmd.amount,
            };
            println!("[payments]      {} declined: {declined}", cmd.order);
            return Err(declined);
        }
        wallet.0 -= cmd.amount.0;
        let id = format!("PAY-{:04}", self.charged.len() + 1);
        println!(
            "[payments]      {} charged {} to {} ({id})",
            cmd.order, cmd.amount, cmd.customer
        );
        let charge = (id.clone(), cmd.customer, cmd.amount);
        self.charged.insert(cmd.order, charge);
        Ok(id)
    }

    #[handle]
    fn refund(&mut self, cmd: RefundPayment) {
        // The entry stays (its amount zeroed): the order's payment id is not reused.
        if let Some((id, customer, amount)) = self.charged.get_mut(&cmd.0) {
            if amount.0 > 0 {
                self.wallets.entry(customer.clone()).or_default().0 += amount.0;
                println!(
                    "[payments]      {} refunded {amount} to {customer} ({id})",
                    cmd.0
                );
                *amount = Money(0);
            }
        }
    }
}

/// Where the remote warehouse ships to; it takes a second to answer.
const REMOTE: &str = "Far Isle";

#[derive(Clone, Debug)]
struct Parcel {
    tracking: String,
    called_off: bool,
}

/// Dispatches parcels (once per order), and calls them off.
#[derive(Default)]
struct Shipping {
    parcels: HashMap<OrderId, Parcel>,
}

impl Shipping {
    fn call_off(&mut self, order: OrderId, why: &str) {
        if let Some(parcel) = self.parcels.get_mut(&order) {
            if !parcel.called_off {
                parcel.called_off = true;
                println!(
                    "[shipping]      {order} parcel {} called off: {why}",
                    parcel.tracking
                );
            }
        }
    }
}

#[handlers]
impl Shipping {
    #[handle]
    async fn create(&mut self, cmd: CreateShipment) -> String {
        if let Some(parcel) = self.parcels.get(&cmd.order) {
            return parcel.tracking.clone();
        }
        if cmd.address == REMOTE {
            println!(
                "[shipping]      {} goes to {REMOTE}: asking the remote warehouse",
                cmd.order
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let tracking = format!("TRK-{:04}", self.parcels.len() + 1);
        println!(
            "[shipping]      {} dispatched to {} as {tracking}",
            cmd.order, cmd.address
        );
        let parcel = Parcel {
            tracking: tracking.clone(),
            called_off: false,
        };
        self.parcels.insert(cmd.order, parcel);
        tracking
    }

    #[handle]
    fn cancel(&mut self, cmd: CancelShipment) {
        self.call_off(cmd.0, "the saga undid it");
    }

    /// A parcel of a cancelled order: the saga cancels only shipments it knows of, and a
    /// shipment whose step timed out is not one of them, though it may still be made.
    #[subscribe]
    fn on_cancelled(&mut self, ev: &OrderCancelled) {
        self.call_off(ev.order, "the order was cancelled");
    }

    #[query]
    fn parcel(&self, q: GetParcel) -> Option<Parcel> {
        self.parcels.get(&q.0).cloned()
    }
}

/// Tells customers what happened: stateless, so free functions. Idempotent: an event
/// delivered twice (say, retried from the dead letters) tells the customer once; the ids
/// they handled are kept in the store.
#[subscribe(idempotent)]
fn notify_confirmed(ev: &OrderConfirmed) {
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

/// The read model: one view per order, built from the order's events.
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
    fn confirmed(&mut self, ev: &OrderConfirmed) {
        let tracking = ev.tracking.clone();
        self.set(ev.order, Status::Confirmed { tracking });
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

// ---- the saga: fulfilling an order --------------------------------------------------------

const FULFILMENT: &str = "order-fulfillment";

/// The saga's data: what its steps need, and what they did. The runner stores it after every
/// step; each step gets it as the step before left it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Fulfilment {
    order: OrderId,
    customer: String,
    address: String,
    items: Vec<Item>,
    total: Money,
    /// Set by `charge payment`, cleared by its compensation.
    payment: Option<String>,
    /// Set by `create shipment`, cleared by its compensation.
    tracking: Option<String>,
}

impl From<OrderPlaced> for Fulfilment {
    fn from(placed: OrderPlaced) -> Self {
        Self {
            order: placed.order,
            customer: placed.customer,
            address: placed.address,
            items: placed.items,
            total: placed.total,
            payment: None,
            tracking: None,
        }
    }
}

/// The steps in order, each with what undoes it. `store` is where the runner keeps the
/// instances (see `cancel_order`).
fn fulfilment_saga(store: Store) -> Saga<Fulfilment> {
    Saga::new(FULFILMENT)
        // Nothing to do: the order was placed before the saga started. Its compensation runs
        // last whenever a later step fails (the first one too), and cancels the order.
        .step(
            "accept order",
            |data, _ctx| async move { Ok(data) },
            move |data, ctx| cancel_order(data, ctx, store.clone()),
        )
        .step("reserve inventory", reserve_stock, release_stock)
        .step("charge payment", charge_payment, refund_payment)
        .step("create shipment", create_shipment, cancel_shipment)
        // The remote warehouse takes a second: the step fails after 300 ms instead. (The
        // timeout holds for the step's compensation too.)
        .timeout(Duration::from_millis(300))
        .step_without_compensation("confirm order", confirm_order)
        // A compensation that fails is tried again (3 tries in all, 100 ms then 200 ms apart);
        // if it still fails, the saga stops as `needs_attention`.
        .compensation_retries(3, Duration::from_millis(100))
}

/// Sends a step's command with the step's idempotency key. When the process crashes in the
/// middle of a step, `Sagas::resume` calls the step again after the restart, with the same
/// key: the target must not do its work twice. `send_idempotent` returns the first reply for a
/// key already sent by this app, and sends the key along (`idempotency-key` header) for a
/// target that keeps the keys it saw; the handlers here also do nothing twice for one order.
async fn send<C>(ctx: &StepContext, command: C) -> Result<C::Reply, StepError>
where
    C: Command,
    C::Reply: Clone + Sync,
{
    Ok(ctx
        .app()
        .send_idempotent(&ctx.idempotency_key(), command)
        .await?)
}

async fn reserve_stock(data: Fulfilment, ctx: StepContext) -> StepResult<Fulfilment> {
    let items = data.items.clone();
    let reserve = ReserveStock {
        order: data.order,
        items,
    };
    send(&ctx, reserve).await??;
    Ok(data)
}

async fn release_stock(data: Fulfilment, ctx: StepContext) -> StepResult<Fulfilment> {
    send(&ctx, ReleaseStock(data.order)).await?;
    Ok(data)
}

async fn charge_payment(mut data: Fulfilment, ctx: StepContext) -> StepResult<Fulfilment> {
    let charge = ChargePayment {
        order: data.order,
        customer: data.customer.clone(),
        amount: data.total,
    };
    data.payment = Some(send(&ctx, charge).await??);
    Ok(data)
}

async fn refund_payment(mut data: Fulfilment, ctx: StepContext) -> StepResult<Fulfilment> {
    send(&ctx, RefundPayment(data.order)).await?;
    data.payment = None;
    Ok(data)
}

async fn create_shipment(mut data: Fulfilment, ctx: StepContext) -> StepResult<Fulfilment> {
    let address = data.address.clone();
    let create = CreateShipment {
        order: data.order,
        address,
    };
    data.tracking = Some(send(&ctx, create).await?);
    Ok(data)
}

async fn cancel_shipment(mut data: Fulfilment, ctx: StepContext) -> StepResult<Fulfilment> {
    send(&ctx, CancelShipment(data.order)).await?;
    data.tracking = None;
    Ok(data)
}

async fn confirm_order(data: Fulfilment, ctx: StepContext) -> StepResult<Fulfilment> {
    let tracking = data
        .tracking
        .clone()
        .ok_or_else(|| StepError::new("no parcel to confirm"))?;
    let confirm = ConfirmOrder {
        order: data.order,
        tracking,
    };
    send(&ctx, confirm).await?.map_err(StepError::new)?;
    Ok(data)
}

/// Cancels the order, giving why the saga failed. A compensation is not told why; the failed
/// step's error is the instance's last error in the store, so the reason is read from there.
async fn cancel_order(data: Fulfilment, ctx: StepContext, store: Store) -> StepResult<Fulfilment> {
    let instance = store.load_saga(FULFILMENT, ctx.saga_id()).await?;
    let reason = instance
        .and_then(|saga| saga.error)
        .unwrap_or_else(|| "fulfilment failed".to_owned());
    let cancel = CancelOrder {
        order: data.order,
        reason,
    };
    send(&ctx, cancel).await?.map_err(StepError::new)?;
    Ok(data)
}

// ---- the app ------------------------------------------------------------------------------

/// Places an order and, if the order is taken, runs its fulfilment saga to the end; shows how
/// both ended. The order, if placed.
async fn order(
    app: &App,
    sagas: &Sagas,
    saga: &SagaRef<Fulfilment>,
    customer: &str,
    address: &str,
    items: Vec<Item>,
) -> anyhow::Result<Option<OrderId>> {
    let place = PlaceOrder {
        customer: customer.into(),
        address: address.into(),
        items,
    };
    let placed = match app.send(place).await? {
        Ok(placed) => placed,
        Err(e) => {
            println!("== refused: {e} (nothing stored, no saga started)\n");
            return Ok(None);
        }
    };
    // (Were the process to stop right here, the order would stay placed without its saga: an
    // app that must not lose one would start the saga from the stored `order.placed` event.)
    let order = placed.order;
    let run = sagas.start(saga, &order.key(), placed.into()).await?;
    let done = run
        .wait(Duration::from_secs(30))
        .await
        .with_context(|| format!("the saga of order {order} did not end within 30 s"))?;
    // The order's events were published before the saga's last step returned, so the read
    // model has them.
    let view = app
        .query(GetOrder(order))
        .await?
        .with_context(|| format!("no view of order {order}"))?;
    println!(
        "== order {} of {}: {:?}, total {}; saga {}\n",
        view.order, view.customer, view.status, view.total, done.status
    );
    Ok(Some(order))
}

/// The command line: `--serve ADDR` and `--serve-for SECONDS` (feature `live-view`).
#[derive(Debug, Default)]
struct Options {
    serve: Option<String>,
    serve_for: Option<Duration>,
}

impl Options {
    fn parse() -> anyhow::Result<Self> {
        let mut options = Options::default();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .with_context(|| format!("{name} needs a value"))
            };
            match name.as_str() {
                "--serve" => options.serve = Some(value()?),
                "--serve-for" => {
                    let secs = value()?;
                    let secs: u64 = secs.parse().with_context(|| {
                        format!("--serve-for takes whole seconds, not `{secs}`")
                    })?;
                    options.serve_for = Some(Duration::from_secs(secs));
                }
                _ => anyhow::bail!(
                    "unknown argument `{name}`; the options are `--serve 127.0.0.1:PORT` and \
                     `--serve-for SECONDS`"
                ),
            }
        }
        if options.serve.is_none() && options.serve_for.is_some() {
            anyhow::bail!("--serve-for needs --serve 127.0.0.1:PORT");
        }
        if options.serve.is_some() && !cfg!(feature = "live-view") {
            anyhow::bail!(
                "--serve needs the `live-view` feature: \
                 cargo run --example order_monolith --features live-view -- --serve 127.0.0.1:8080"
            );
        }
        Ok(options)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse()?;
    let serving = options.serve.is_some();
    // The store: a fresh SQLite file. `temp` is declared first, so it is dropped (and the
    // directory removed) after everything that holds the store.
    let temp = TempDir::new("orders")?;
    let path = temp.0.join("orders.db");
    let store = Store::sqlite(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    println!("store: {} at {}", store.backend_name(), path.display());

    let wallets = [("alice", 10_000), ("bob", 500), ("dave", 5_000)]
        .map(|(who, cents)| (who.into(), Money(cents)));
    let mut wallets = HashMap::from(wallets);
    // The live view's orders come without end, from customers of its own: the stock must
    // not run out.
    let (widgets, gadgets) = if serving {
        wallets.extend(live::WALLETS.map(|(who, cents)| (who.into(), Money(cents))));
        (1_000_000, 1_000_000)
    } else {
        (10, 3)
    };

    let repo = Repository::<Order>::new(store.clone());
    let builder = App::builder()
        // Dead letters, processed ids and scheduled events go to the store too.
        .store(store.clone())
        .actor(Orders {
            repo: repo.clone(),
            next: 0,
        })
        .actor_with(
            Inventory {
                stock: HashMap::from([("widget".into(), widgets), ("gadget".into(), gadgets)]),
                reserved: HashMap::new(),
            },
            Mailbox::bounded(64),
        )
        .actor(Payments {
            wallets,
            charged: HashMap::new(),
        })
        .actor(Shipping::default())
        .actor(OrderViews::default())
        .subscriber(notify_confirmed)
        .subscriber(notify_cancelled);
    // The live view's extras: the rewards module, and the metrics for its Prometheus page.
    let (builder, recorder) = live::prepare(builder, serving)?;
    let app = builder.build().await?;

    // The saga runner keeps its instances in the same store. After a restart, `resume`
    // continues the instances a crash left unfinished; a fresh store has none.
    let sagas = Sagas::new(store.clone(), &app);
    let fulfilment = sagas.register(fulfilment_saga(store.clone()));
    let resumed = sagas.resume().await?;
    println!("sagas resumed from the store: {}\n", resumed.len());

    println!("== alice orders 4 widgets and a gadget");
    let alice = order(
        &app,
        &sagas,
        &fulfilment,
        "alice",
        "Springfield",
        vec![widget(4), gadget(1)],
    )
    .await?;

    println!("== bob orders 2 gadgets, but his wallet holds $5.00");
    let bob = order(
        &app,
        &sagas,
        &fulfilment,
        "bob",
        "Springfield",
        vec![gadget(2)],
    )
    .await?;

    println!("== dave orders 2 widgets and a gadget, to {REMOTE}");
    let dave = order(
        &app,
        &sagas,
        &fulfilment,
        "dave",
        REMOTE,
        vec![widget(2), gadget(1)],
    )
    .await?;
    // The saga gave up on the shipment, but the remote warehouse still answers. The query
    // waits behind the late shipment and the `order.cancelled` event in shipping's mailbox.
    if let Some(dave) = dave {
        let parcel = app.query(GetParcel(dave)).await?;
        println!("== a second later, shipping holds for {dave}: {parcel:?}\n");
    }

    println!("== carol sends an empty order");
    let carol = order(&app, &sagas, &fulfilment, "carol", "Springfield", vec![]).await?;

    if let (Some(addr), Some(recorder)) = (&options.serve, recorder) {
        live::serve(addr, options.serve_for, recorder, &app, &sagas, &fulfilment).await?;
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

    // The saga instances, as the runner stored them.
    println!("== the sagas ({FULFILMENT})");
    for saga in sagas.list(Some(FULFILMENT), 10).await? {
        // (`step` is where a running or compensating instance is; one that ended has none.)
        println!(
            "   {}  {:<11}  step {}  last error: {}",
            saga.id,
            saga.status.as_str(),
            saga.step.as_deref().unwrap_or("-"),
            saga.last_error.as_deref().unwrap_or("-")
        );
    }
    let counts = sagas.counts(Some(FULFILMENT)).await?;
    let statuses = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::NeedsAttention,
    ];
    let counts: Vec<String> = statuses
        .iter()
        .map(|s| format!("{s} {}", counts.get(s).copied().unwrap_or(0)))
        .collect();
    println!("   by status: {}\n", counts.join(", "));

    // What the store holds: the orders' events, and what the app keeps for delivery.
    println!("== the store");
    let events = store.read_all(0, 1_000).await?;
    let head = store.head().await?;
    println!("   {} events (head at position {head})", events.len());
    for order in [alice, bob, dave, carol].into_iter().flatten() {
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
    let instances = store.list_sagas(None, 1_000).await?.len();
    println!("   saga instances stored: {instances}");
    // Replay: the order's state rebuilt from nothing but its stored events.
    let first = alice.context("alice's order was refused")?;
    let loaded = repo.load(&first.key()).await?;
    let (order, replayed, version) = (&loaded.state, loaded.replayed, loaded.version);
    let status = order.status.as_ref().context("order #1 is not stored")?;
    println!(
        "   order {} reloaded from {replayed} events: {} for {}, {status:?} (version {version})",
        order.id, order.customer, order.total
    );
    Ok(())
}

// ---- the live view (`--serve`, feature `live-view`) ----------------------------------------

#[cfg(feature = "live-view")]
mod live {
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    use anyhow::Context as _;
    use eventdriven::prelude::*;
    use eventdriven::saga::{SagaRef, Sagas};
    use eventdriven::AppBuilder;
    use eventdriven_examples::live_view::LiveView;
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::{gadget, order, widget, Fulfilment, OrderConfirmed, OrderId, REMOTE};

    /// The live view's customers: two with money, one without.
    pub(super) const WALLETS: [(&str, u64); 3] = [
        ("erin", 1_000_000_000),
        ("frank", 100),
        ("grace", 1_000_000_000),
    ];

    /// Awards loyalty points for confirmed orders; only in the live view (`--serve`). Its points
    /// service fails the first time for every third confirmed order: no retry policy, so the
    /// event goes to the dead letters at once, and delivering it again from there succeeds.
    #[derive(Default)]
    struct Rewards {
        points: HashMap<String, u64>,
        confirmed: u64,
        /// The orders whose first delivery failed.
        failed_once: HashSet<OrderId>,
    }

    #[handlers]
    impl Rewards {
        #[subscribe]
        fn confirmed(&mut self, ev: &OrderConfirmed) -> Result<(), String> {
            if !self.failed_once.contains(&ev.order) {
                self.confirmed += 1;
                if self.confirmed.is_multiple_of(3) {
                    self.failed_once.insert(ev.order);
                    return Err(format!(
                        "the points service did not answer for order {}",
                        ev.order
                    ));
                }
            }
            let points = self.points.entry(ev.customer.clone()).or_default();
            *points += 10;
            println!(
                "[rewards]       {} gave {} 10 points ({points} in all)",
                ev.order, ev.customer
            );
            Ok(())
        }
    }

    /// What serving needs before the app is built: the rewards module, the metrics exported
    /// to a Prometheus recorder (which also measures handler latency).
    pub(super) fn prepare(
        builder: AppBuilder,
        serving: bool,
    ) -> anyhow::Result<(AppBuilder, Option<Recorder>)> {
        if !serving {
            return Ok((builder, None));
        }
        let prometheus = PrometheusBuilder::new()
            .install_recorder()
            .context("installing the Prometheus recorder")?;
        let builder = builder
            .actor(Rewards::default())
            .metrics(Duration::from_millis(500));
        Ok((builder, Some(Recorder(prometheus))))
    }

    /// The recorder's handle, until the app exists for the view.
    pub(super) struct Recorder(metrics_exporter_prometheus::PrometheusHandle);

    /// Serves the live view at `addr` and places an order every 300 ms until Ctrl-C or
    /// `serve_for` has passed; then stops the server (after the order in flight).
    pub(super) async fn serve(
        addr: &str,
        serve_for: Option<Duration>,
        recorder: Recorder,
        app: &App,
        sagas: &Sagas,
        saga: &SagaRef<Fulfilment>,
    ) -> anyhow::Result<()> {
        // Ctrl-C is caught from now on (a task, so the handler is in place before the first
        // order), and ends the serving like `--serve-for` does.
        let (end_tx, mut end) = tokio::sync::watch::channel(false);
        let ctrl_c = tokio::spawn(async move {
            let why = match serve_for {
                Some(limit) => tokio::select! {
                    _ = tokio::signal::ctrl_c() => "Ctrl-C",
                    () = tokio::time::sleep(limit) => "--serve-for passed",
                },
                None => {
                    if let Err(e) = tokio::signal::ctrl_c().await {
                        eprintln!("cannot catch Ctrl-C ({e}): serving until killed");
                        std::future::pending::<()>().await;
                    }
                    "Ctrl-C"
                }
            };
            println!("== {why}: the live view stops");
            let _ = end_tx.send(true);
        });

        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        let live = LiveView::new("order_monolith", app.clone(), sagas.clone(), recorder.0);
        let mut stop = end.clone();
        let server = tokio::spawn(live.serve(listener, async move {
            let _ = stop.wait_for(|ended| *ended).await;
        }));
        println!("== live view at http://{local}/ (Prometheus: http://{local}/metrics)");

        // Shipped; shipped to the slow warehouse (timed out); declined; shipped twice: round
        // and round. (The declined order leaves the warehouse time to answer.)
        let rounds = [
            ("erin", "Springfield"),
            ("grace", REMOTE),
            ("frank", "Shelbyville"),
            ("erin", "Ogdenville"),
            ("grace", "Springfield"),
        ];
        for (n, (customer, address)) in rounds.iter().cycle().enumerate() {
            if *end.borrow() {
                break;
            }
            let items = vec![widget(1 + n as u32 % 3), gadget(1)];
            if let Err(e) = order(app, sagas, saga, customer, address, items).await {
                eprintln!("order of {customer} failed: {e:#}");
            }
            tokio::select! {
                _ = end.wait_for(|ended| *ended) => break,
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
        ctrl_c.abort();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .context("the live view did not stop within 10 s")?
            .context("the live view's task")?
            .context("serving the live view")?;
        Ok(())
    }
}

/// Without the `live-view` feature, `--serve` is refused when parsing the command line.
#[cfg(not(feature = "live-view"))]
mod live {
    use eventdriven::AppBuilder;

    pub(super) const WALLETS: [(&str, u64); 0] = [];

    /// Never made.
    pub(super) enum Recorder {}

    pub(super) fn prepare(
        builder: AppBuilder,
        _serving: bool,
    ) -> anyhow::Result<(AppBuilder, Option<Recorder>)> {
        Ok((builder, None))
    }

    pub(super) async fn serve(
        _addr: &str,
        _serve_for: Option<std::time::Duration>,
        recorder: Recorder,
        _app: &eventdriven::App,
        _sagas: &eventdriven::saga::Sagas,
        _saga: &eventdriven::saga::SagaRef<super::Fulfilment>,
    ) -> anyhow::Result<()> {
        match recorder {}
    }
}
