//! The mixed "monolith" workload: commands, events and queries across 5 actors, eventdriven
//! against hand-wired tokio tasks and channels doing the same.
//!
//! Per order: the producer tells `PlaceOrder` to **orders**, which records it and publishes
//! `OrderPlaced`; **inventory** (reserves stock, publishes `StockReserved`), **payments**
//! (captures, publishes `PaymentCaptured`) and the **read model** subscribe to it; **shipping**
//! waits for both `StockReserved` and `PaymentCaptured` of an order and publishes `Shipped`; the
//! read model tracks every order's status and the revenue. Every 100th order the producer also
//! queries an order's status, and at the end of an iteration the revenue. That is 1 command,
//! 4 events (7 deliveries) and 0.01 + 1/N queries per order. An iteration ends when the read
//! model has seen every order of it shipped (it counts down a [`Latch`]).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use eventdriven::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

use super::{on_runtime, runtime, Latch, Runner, CAPACITY};

/// Orders per iteration.
pub(crate) const ORDERS: u64 = 10_000;
/// One status query per this many orders.
const QUERY_EVERY: u64 = 100;
/// Distinct stock-keeping units.
const SKUS: usize = 64;

const PLACED: u8 = 1;
const PAID: u8 = 2;
const SHIPPED: u8 = 3;

fn order(id: u64) -> (u32, u32, u64) {
    (
        (id % SKUS as u64) as u32,
        1 + (id % 3) as u32,
        1 + id % 1000,
    )
}

// ---------------------------------------------------------------------------------------------
// eventdriven
// ---------------------------------------------------------------------------------------------

/// Command: place an order.
#[derive(Command, Debug)]
pub(crate) struct PlaceOrder {
    id: u64,
    sku: u32,
    qty: u32,
    amount: u64,
}

/// Event: an order was placed.
#[derive(Event, Clone, Debug)]
pub(crate) struct OrderPlaced {
    id: u64,
    sku: u32,
    qty: u32,
    amount: u64,
}

/// Event: stock was reserved for an order.
#[derive(Event, Clone, Debug)]
pub(crate) struct StockReserved {
    id: u64,
}

/// Event: an order was paid.
#[derive(Event, Clone, Debug)]
pub(crate) struct PaymentCaptured {
    id: u64,
    amount: u64,
}

/// Event: an order was shipped.
#[derive(Event, Clone, Debug)]
pub(crate) struct Shipped {
    id: u64,
}

/// Query: an order's status.
#[derive(Query, Debug)]
#[query(reply = u8)]
pub(crate) struct OrderStatus(u64);

/// Query: the revenue so far.
#[derive(Query, Debug)]
#[query(reply = u64)]
pub(crate) struct Revenue;

/// Records orders and announces them.
#[derive(Default)]
pub(crate) struct Orders {
    orders: HashMap<u64, (u32, u32, u64)>,
}

#[handlers]
impl Orders {
    #[handle]
    async fn place(&mut self, cmd: PlaceOrder, ctx: &mut Context<Self>) {
        self.orders.insert(cmd.id, (cmd.sku, cmd.qty, cmd.amount));
        let ev = OrderPlaced {
            id: cmd.id,
            sku: cmd.sku,
            qty: cmd.qty,
            amount: cmd.amount,
        };
        ctx.publish(ev).await.expect("publish");
    }
}

/// Reserves stock.
pub(crate) struct Inventory {
    stock: Vec<u64>,
}

#[handlers]
impl Inventory {
    #[subscribe]
    async fn on_placed(&mut self, ev: &OrderPlaced, ctx: &mut Context<Self>) {
        let slot = &mut self.stock[ev.sku as usize];
        *slot = slot.wrapping_sub(u64::from(ev.qty));
        ctx.publish(StockReserved { id: ev.id })
            .await
            .expect("publish");
    }
}

/// Captures payments.
#[derive(Default)]
pub(crate) struct Payments {
    captured: u64,
}

#[handlers]
impl Payments {
    #[subscribe]
    async fn on_placed(&mut self, ev: &OrderPlaced, ctx: &mut Context<Self>) {
        self.captured = self.captured.wrapping_add(ev.amount);
        let paid = PaymentCaptured {
            id: ev.id,
            amount: ev.amount,
        };
        ctx.publish(paid).await.expect("publish");
    }
}

/// Ships an order once it is both reserved and paid.
#[derive(Default)]
pub(crate) struct Shipping {
    pending: HashMap<u64, u8>,
}

impl Shipping {
    /// Marks `flag` for `id`; true when the order is now ready to ship.
    fn mark(&mut self, id: u64, flag: u8) -> bool {
        let flags = self.pending.entry(id).or_insert(0);
        *flags |= flag;
        if *flags == 0b11 {
            self.pending.remove(&id);
            true
        } else {
            false
        }
    }
}

#[handlers]
impl Shipping {
    #[subscribe]
    async fn on_reserved(&mut self, ev: &StockReserved, ctx: &mut Context<Self>) {
        if self.mark(ev.id, 0b01) {
            ctx.publish(Shipped { id: ev.id }).await.expect("publish");
        }
    }

    #[subscribe]
    async fn on_paid(&mut self, ev: &PaymentCaptured, ctx: &mut Context<Self>) {
        if self.mark(ev.id, 0b10) {
            ctx.publish(Shipped { id: ev.id }).await.expect("publish");
        }
    }
}

/// Order statuses and revenue, queried by the producer.
pub(crate) struct ReadModel {
    status: HashMap<u64, u8>,
    revenue: u64,
    shipped: u64,
    latch: Arc<Latch>,
}

impl ReadModel {
    fn new(latch: Arc<Latch>) -> Self {
        Self {
            status: HashMap::new(),
            revenue: 0,
            shipped: 0,
            latch,
        }
    }

    fn set(&mut self, id: u64, status: u8) {
        let slot = self.status.entry(id).or_insert(0);
        *slot = (*slot).max(status);
    }

    fn shipped(&mut self, id: u64) {
        self.set(id, SHIPPED);
        self.shipped += 1;
        if self.shipped == ORDERS {
            self.latch.arrive(std::mem::take(&mut self.shipped));
        }
    }
}

#[handlers]
impl ReadModel {
    #[subscribe]
    fn on_placed(&mut self, ev: &OrderPlaced) {
        // An iteration reuses the ids of the one before: start the order afresh.
        self.status.insert(ev.id, PLACED);
    }

    #[subscribe]
    fn on_paid(&mut self, ev: &PaymentCaptured) {
        self.set(ev.id, PAID);
        self.revenue = self.revenue.wrapping_add(ev.amount);
    }

    #[subscribe]
    fn on_shipped(&mut self, ev: &Shipped) {
        self.shipped(ev.id);
    }

    #[query]
    fn status(&self, q: OrderStatus) -> u8 {
        self.status.get(&q.0).copied().unwrap_or(0)
    }

    #[query]
    fn revenue(&self, _: Revenue) -> u64 {
        self.revenue
    }
}

/// The 5 actors in one app, `Mailbox::bounded(CAPACITY)` each.
pub(crate) fn eventdriven() -> Runner {
    let rt = runtime();
    let latch = Latch::new(1);
    let app = rt
        .block_on(
            App::builder()
                .actor_with(Orders::default(), Mailbox::bounded(CAPACITY))
                .actor_with(
                    Inventory {
                        stock: vec![u64::MAX / 2; SKUS],
                    },
                    Mailbox::bounded(CAPACITY),
                )
                .actor_with(Payments::default(), Mailbox::bounded(CAPACITY))
                .actor_with(Shipping::default(), Mailbox::bounded(CAPACITY))
                .actor_with(ReadModel::new(latch.clone()), Mailbox::bounded(CAPACITY))
                .build(),
        )
        .expect("build app");
    let rig = EdRig { rt, app };
    Box::new(move |iters| {
        let (app, latch) = (rig.app.clone(), latch.clone());
        on_runtime(&rig.rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for id in 0..ORDERS {
                    let (sku, qty, amount) = order(id);
                    let cmd = PlaceOrder {
                        id,
                        sku,
                        qty,
                        amount,
                    };
                    app.tell(cmd).await.expect("tell");
                    if id % QUERY_EVERY == QUERY_EVERY - 1 {
                        let status = app.query(OrderStatus(id / 2)).await.expect("query");
                        black_box(status);
                    }
                }
                assert_eq!(latch.wait().await, ORDERS);
                black_box(app.query(Revenue).await.expect("query"));
            }
            start.elapsed()
        })
    })
}

struct EdRig {
    rt: Runtime,
    app: App,
}

impl Drop for EdRig {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.app.shutdown());
    }
}

// ---------------------------------------------------------------------------------------------
// tokio, hand-wired
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Placed {
    id: u64,
    sku: u32,
    qty: u32,
    amount: u64,
}

enum ShippingMsg {
    Reserved(u64),
    Paid(u64),
}

enum ReadMsg {
    Placed(u64),
    Paid(u64, u64),
    Shipped(u64),
    Status(u64, oneshot::Sender<u8>),
    Revenue(oneshot::Sender<u64>),
}

/// The producer's handles.
#[derive(Clone)]
struct Wires {
    orders: mpsc::Sender<Placed>,
    read: mpsc::Sender<ReadMsg>,
}

fn wire(latch: Arc<Latch>) -> Wires {
    let (orders_tx, mut orders_rx) = mpsc::channel::<Placed>(CAPACITY);
    let (inventory_tx, mut inventory_rx) = mpsc::channel::<Placed>(CAPACITY);
    let (payments_tx, mut payments_rx) = mpsc::channel::<Placed>(CAPACITY);
    let (shipping_tx, mut shipping_rx) = mpsc::channel::<ShippingMsg>(CAPACITY);
    let (read_tx, mut read_rx) = mpsc::channel::<ReadMsg>(CAPACITY);

    // orders
    let read = read_tx.clone();
    tokio::spawn(async move {
        let mut orders = HashMap::new();
        while let Some(cmd) = orders_rx.recv().await {
            orders.insert(cmd.id, (cmd.sku, cmd.qty, cmd.amount));
            read.send(ReadMsg::Placed(cmd.id)).await.expect("send");
            inventory_tx.send(cmd).await.expect("send");
            payments_tx.send(cmd).await.expect("send");
        }
    });
    // inventory
    let shipping = shipping_tx.clone();
    tokio::spawn(async move {
        let mut stock = vec![u64::MAX / 2; SKUS];
        while let Some(ev) = inventory_rx.recv().await {
            let slot = &mut stock[ev.sku as usize];
            *slot = slot.wrapping_sub(u64::from(ev.qty));
            shipping
                .send(ShippingMsg::Reserved(ev.id))
                .await
                .expect("send");
        }
    });
    // payments
    let read = read_tx.clone();
    tokio::spawn(async move {
        let mut captured = 0u64;
        while let Some(ev) = payments_rx.recv().await {
            captured = captured.wrapping_add(ev.amount);
            shipping_tx
                .send(ShippingMsg::Paid(ev.id))
                .await
                .expect("send");
            read.send(ReadMsg::Paid(ev.id, ev.amount))
                .await
                .expect("send");
        }
        black_box(captured);
    });
    // shipping
    let read = read_tx.clone();
    tokio::spawn(async move {
        let mut shipping = Shipping::default();
        while let Some(msg) = shipping_rx.recv().await {
            let (id, flag) = match msg {
                ShippingMsg::Reserved(id) => (id, 0b01),
                ShippingMsg::Paid(id) => (id, 0b10),
            };
            if shipping.mark(id, flag) {
                read.send(ReadMsg::Shipped(id)).await.expect("send");
            }
        }
    });
    // read model
    tokio::spawn(async move {
        let mut model = ReadModel::new(latch);
        while let Some(msg) = read_rx.recv().await {
            match msg {
                ReadMsg::Placed(id) => {
                    model.status.insert(id, PLACED);
                }
                ReadMsg::Paid(id, amount) => {
                    model.set(id, PAID);
                    model.revenue = model.revenue.wrapping_add(amount);
                }
                ReadMsg::Shipped(id) => model.shipped(id),
                ReadMsg::Status(id, reply) => {
                    let _ = reply.send(model.status.get(&id).copied().unwrap_or(0));
                }
                ReadMsg::Revenue(reply) => {
                    let _ = reply.send(model.revenue);
                }
            }
        }
    });
    Wires {
        orders: orders_tx,
        read: read_tx,
    }
}

/// The same 5 actors as tasks with `mpsc::channel(CAPACITY)` each, the events sent by hand.
pub(crate) fn tokio() -> Runner {
    let rt = runtime();
    let latch = Latch::new(1);
    let wires = rt.block_on(async { wire(latch.clone()) });
    Box::new(move |iters| {
        let (wires, latch) = (wires.clone(), latch.clone());
        on_runtime(&rt, async move {
            let start = Instant::now();
            for _ in 0..iters {
                for id in 0..ORDERS {
                    let (sku, qty, amount) = order(id);
                    let cmd = Placed {
                        id,
                        sku,
                        qty,
                        amount,
                    };
                    wires.orders.send(cmd).await.expect("send");
                    if id % QUERY_EVERY == QUERY_EVERY - 1 {
                        let (reply, rx) = oneshot::channel();
                        let q = ReadMsg::Status(id / 2, reply);
                        wires.read.send(q).await.expect("send");
                        black_box(rx.await.expect("reply"));
                    }
                }
                assert_eq!(latch.wait().await, ORDERS);
                let (reply, rx) = oneshot::channel();
                wires
                    .read
                    .send(ReadMsg::Revenue(reply))
                    .await
                    .expect("send");
                black_box(rx.await.expect("reply"));
            }
            start.elapsed()
        })
    })
}
