//! A stream as an actor: its mailbox subscribes to the input event types, its handler keeps
//! time and feeds the engine, its outputs are published from the handler like any actor's.

use std::any::TypeId;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use super::engine::{minus, since, Engine, Json};
use super::{LateEvent, NoJoin, Settings, TimeFn, TimeMode};
use crate::actor::mailbox::{self, MailboxCore, QueueTx, Slot};
use crate::actor::{Begin, Delivery, HandlerOptions, MailboxItem, Routes};
use crate::app::builder::{Member, Wire, Wired};
use crate::app::routing::TableBuilder;
use crate::delivery::durable::intern;
use crate::delivery::{HandlerError, RetryPolicy};
use crate::error::{Error, Result};
use crate::message::{Event, Metadata, Timestamp};
use crate::store::{Snapshot, Store};
use crate::{Actor, ActorOptions, Context};

/// What a stream's mailbox holds.
pub(crate) enum Input<L, R> {
    Left(Delivery<L>),
    Right(Delivery<R>),
    /// The timer: processing time moved on.
    Tick(Metadata),
    /// Shutdown: publish every open window.
    Flush(Metadata),
}

/// The app's hold on a stream, for shutdown.
pub(crate) struct Hook {
    open: Arc<AtomicUsize>,
    flush: Box<dyn Fn() + Send + Sync>,
}

impl Hook {
    /// Whether the stream has windows not yet published.
    pub(crate) fn has_open(&self) -> bool {
        self.open.load(Ordering::SeqCst) > 0
    }

    /// Asks the stream to publish every open window (after what its mailbox holds).
    pub(crate) fn flush(&self) {
        (self.flush)();
    }
}

/// Event time and the watermark.
struct Clock {
    mode: TimeMode,
    out_of_orderness: Duration,
    lateness: Duration,
    idle: Option<Duration>,
    /// The latest event time seen.
    max_seen: Option<Timestamp>,
    watermark: Option<Timestamp>,
    /// When (processing time) the last event arrived.
    last_arrival: Timestamp,
}

impl Clock {
    fn now() -> Timestamp {
        Timestamp::now_on_tokio_clock()
    }

    /// Moves the watermark on for processing time or an idle stream.
    fn tick(&mut self) {
        let now = Self::now();
        match self.mode {
            TimeMode::Processing => self.raise(now),
            TimeMode::Event => {
                if let (Some(idle), Some(max)) = (self.idle, self.max_seen) {
                    let quiet = since(now, self.last_arrival);
                    if quiet >= idle {
                        self.raise(minus(max + quiet, self.out_of_orderness));
                    }
                }
            }
        }
    }

    fn raise(&mut self, to: Timestamp) {
        self.watermark = Some(self.watermark.map_or(to, |w| w.max(to)));
    }

    /// When (tokio's clock) the engine's next `due` time comes, if time alone gets there.
    fn wake_at(&self, due: Timestamp) -> Option<Instant> {
        let now = Self::now();
        let after = match self.mode {
            TimeMode::Processing => since(due, now),
            TimeMode::Event => {
                let (idle, max) = (self.idle?, self.max_seen?);
                // The watermark reaches `due` once `due + out_of_orderness - max` has passed
                // since the last event, and moves at all only after `idle`.
                let needed = since(due + self.out_of_orderness, max).max(idle);
                since(self.last_arrival + needed, now)
            }
        };
        Some(Instant::now() + after)
    }
}

/// The actor that runs one stream.
pub(crate) struct StreamActor<L, R, O> {
    name: Arc<str>,
    engine: Box<dyn Engine<L, R, O>>,
    clock: Clock,
    left_time: Option<TimeFn<L>>,
    right_time: Option<TimeFn<R>>,
    publish_late: bool,
    out: Vec<O>,
    open: Arc<AtomicUsize>,
    /// Its own queue and mailbox, for the timer's ticks.
    me: (QueueTx<Slot<Input<L, R>>>, Arc<MailboxCore>),
    timer: Option<watch::Sender<Option<Instant>>>,
    /// Checkpointed: read back before the first message, written after each.
    checkpoint: bool,
    restored: bool,
    /// Where checkpoints go; `None` without a store (or when reading the last one failed).
    store: Option<Store>,
    /// The last checkpoint's number.
    version: u64,
}

/// A stream's checkpoint: the watermark and the engine's state.
#[derive(Serialize, Deserialize)]
struct Saved {
    max_seen: Option<u64>,
    watermark: Option<u64>,
    engine: Json,
}

static OPTIONS: HandlerOptions = HandlerOptions {
    retry: None,
    idempotent: false,
};

/// Sends `msg` into the actor's own queue without taking room (like a retry).
fn push<L, R>(tx: &QueueTx<Slot<Input<L, R>>>, core: &MailboxCore, msg: Input<L, R>) -> bool {
    core.count_unreserved();
    if tx
        .send(Slot::Msg {
            msg,
            reserved: false,
        })
        .is_err()
    {
        core.uncount_unreserved();
        return false;
    }
    true
}

impl<L: Event, R: Event, O: Event> StreamActor<L, R, O> {
    /// Places an input in time; `Err` with the text for the dead letters when it is late.
    fn place(
        &mut self,
        t: Option<Timestamp>,
        meta: &Metadata,
    ) -> Result<Timestamp, (Timestamp, Timestamp)> {
        let now = Clock::now();
        let clock = &mut self.clock;
        let t = match clock.mode {
            TimeMode::Processing => now,
            TimeMode::Event => t.unwrap_or(meta.timestamp),
        };
        if !self.engine.timed() {
            return Ok(t);
        }
        if let (TimeMode::Event, Some(w)) = (clock.mode, clock.watermark) {
            if t + clock.lateness < w {
                return Err((t, w));
            }
        }
        clock.last_arrival = now;
        match clock.mode {
            TimeMode::Processing => clock.raise(now),
            TimeMode::Event => {
                let max = clock.max_seen.map_or(t, |m| m.max(t));
                clock.max_seen = Some(max);
                clock.raise(minus(max, clock.out_of_orderness));
            }
        }
        Ok(t)
    }

    async fn late<E: Event>(
        &mut self,
        event: &E,
        (t, w): (Timestamp, Timestamp),
        ctx: &mut Context<Self>,
    ) -> Result<(), HandlerError> {
        let subscribed = ctx.shared.routes.subscriber_count::<LateEvent<E>>() > 0;
        if self.publish_late && subscribed {
            return ctx
                .publish(LateEvent {
                    event: event.clone(),
                    event_time: t,
                    watermark: w,
                    stream: self.name.clone(),
                })
                .await
                .map_err(HandlerError::new);
        }
        // Published to nobody, it would be lost: dead-lettered instead, saying so.
        let unheard = if self.publish_late {
            " (and nothing subscribes to its `LateEvent`)"
        } else {
            ""
        };
        Err(HandlerError::new(format!(
            "late event: stream `{}` got `{}` at event time {t}, more than the allowed lateness of {:?} behind its watermark {w}{unheard}",
            self.name,
            E::NAME,
            self.clock.lateness
        )))
    }

    /// Closes what the watermark passed, publishes the outputs, sets the timer, writes the
    /// checkpoint.
    async fn finish(&mut self, ctx: &mut Context<Self>) -> Result<(), HandlerError> {
        if let Some(w) = self.clock.watermark {
            self.engine.advance(w, &mut self.out);
        }
        // A checkpointed stream keeps its open windows at shutdown: nothing to flush.
        let open = if self.checkpoint {
            0
        } else {
            self.engine.open()
        };
        self.open.store(open, Ordering::SeqCst);
        self.set_timer();
        self.publish(ctx).await?;
        self.save().await;
        Ok(())
    }

    /// The checkpoint's name in the store.
    fn checkpoint_name(&self) -> String {
        format!("eventdriven.stream/{}", self.name)
    }

    /// Reads the last checkpoint back, if the app has a store.
    async fn restore(&mut self, ctx: &Context<Self>) {
        let Some(durable) = &ctx.shared.durable else {
            return;
        };
        let store = durable.store.clone();
        let name = self.checkpoint_name();
        let loaded = match store.load_snapshot(&name).await {
            Ok(None) => Ok(()),
            Ok(Some(snapshot)) => {
                self.version = snapshot.version;
                serde_json::from_value::<Saved>(snapshot.state).and_then(|saved| {
                    let at = |n: Option<u64>| n.map(Timestamp::from_unix_nanos);
                    self.clock.max_seen = at(saved.max_seen);
                    self.clock.watermark = at(saved.watermark);
                    self.clock.last_arrival = Clock::now();
                    self.engine.restore(saved.engine)
                })
            }
            Err(error) => Err(serde_json::Error::io(std::io::Error::other(error))),
        };
        match loaded {
            Ok(()) => self.store = Some(store),
            // Writing over a checkpoint that could not be read would lose it for good.
            Err(error) => tracing::error!(
                stream = %self.name,
                checkpoint = %name,
                %error,
                "stream checkpoint not read; this run starts empty and writes none"
            ),
        }
    }

    /// Writes the checkpoint.
    async fn save(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let Some(engine) = self.engine.save() else {
            return;
        };
        let state = engine.and_then(|engine| {
            serde_json::to_value(Saved {
                max_seen: self.clock.max_seen.map(Timestamp::as_unix_nanos),
                watermark: self.clock.watermark.map(Timestamp::as_unix_nanos),
                engine,
            })
        });
        let name = self.checkpoint_name();
        let written = match state {
            Ok(state) => store
                .save_snapshot(Snapshot {
                    stream: name.clone(),
                    version: self.version + 1,
                    schema_version: 1,
                    state,
                    taken_at: Timestamp::now(),
                })
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match written {
            Ok(()) => self.version += 1,
            Err(error) => {
                tracing::error!(stream = %self.name, checkpoint = %name, %error, "stream checkpoint not written")
            }
        }
    }

    async fn publish(&mut self, ctx: &mut Context<Self>) -> Result<(), HandlerError> {
        // Drained, so the buffer is reused; on a failure the rest is dropped with the error.
        for output in self.out.drain(..) {
            ctx.publish(output).await.map_err(HandlerError::new)?;
        }
        Ok(())
    }

    fn set_timer(&mut self) {
        let at = self.engine.due().and_then(|due| self.clock.wake_at(due));
        if at.is_none() && self.timer.is_none() {
            return;
        }
        let timer = self.timer.get_or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            let (queue, core) = self.me.clone();
            tokio::spawn(tick(rx, queue, core));
            tx
        });
        timer.send_replace(at);
    }
}

/// The timer: sleeps until the time the stream asked for, then sends it a tick; ends with
/// the stream.
async fn tick<L, R>(
    mut at: watch::Receiver<Option<Instant>>,
    tx: QueueTx<Slot<Input<L, R>>>,
    core: Arc<MailboxCore>,
) {
    loop {
        let due = *at.borrow_and_update();
        let fired = match due {
            Some(due) => tokio::select! {
                () = tokio::time::sleep_until(due) => true,
                changed = at.changed() => if changed.is_err() { return } else { false },
            },
            None => {
                if at.changed().await.is_err() {
                    return;
                }
                false
            }
        };
        if fired {
            if !push(&tx, &core, Input::Tick(Metadata::new())) {
                return;
            }
            // The stream sets the next time once it handled the tick.
            if at.changed().await.is_err() {
                return;
            }
        }
    }
}

impl<L: Event, R: Event, O: Event> Actor for StreamActor<L, R, O> {
    const NAME: &'static str = "stream";
    type Mailbox = Input<L, R>;

    fn __routes(routes: &mut Routes<'_, Self>) {
        routes.event::<L>(Input::Left, |m| match m {
            Input::Left(d) => Some(d),
            _ => None,
        });
        if TypeId::of::<R>() != TypeId::of::<NoJoin>() {
            routes.event::<R>(Input::Right, |m| match m {
                Input::Right(d) => Some(d),
                _ => None,
            });
        }
    }

    fn __describe(msg: &Input<L, R>) -> (&'static str, &Metadata, u32) {
        match msg {
            Input::Left(d) => {
                let (name, meta) = d.describe();
                (name, meta, d.attempt())
            }
            Input::Right(d) => {
                let (name, meta) = d.describe();
                (name, meta, d.attempt())
            }
            Input::Tick(meta) => ("eventdriven.stream.tick", meta, 1),
            Input::Flush(meta) => ("eventdriven.stream.flush", meta, 1),
        }
    }

    fn __reject(
        msg: Input<L, R>,
        error: Error,
    ) -> (&'static str, Metadata, Option<crate::actor::item::Payload>) {
        match msg {
            Input::Left(d) => d.reject(error),
            Input::Right(d) => d.reject(error),
            Input::Tick(meta) => ("eventdriven.stream.tick", meta, None),
            Input::Flush(meta) => ("eventdriven.stream.flush", meta, None),
        }
    }

    async fn __handle(
        &mut self,
        msg: Input<L, R>,
        ctx: &mut Context<Self>,
    ) -> Result<(), HandlerError> {
        let timer = matches!(msg, Input::Tick(_) | Input::Flush(_));
        if self.checkpoint && !self.restored {
            self.restored = true;
            self.restore(ctx).await;
        }
        match msg {
            Input::Left(d) => {
                if !matches!(ctx.__begin_event(&d, &OPTIONS, None), Begin::Run) {
                    return Ok(());
                }
                let event = d.event();
                let t = self.left_time.as_mut().map(|f| f(event));
                match self.place(t, &d.env.meta) {
                    Ok(t) => self.engine.left(t, event, &mut self.out),
                    Err(late) => return self.late(event, late, ctx).await,
                }
            }
            Input::Right(d) => {
                if !matches!(ctx.__begin_event(&d, &OPTIONS, None), Begin::Run) {
                    return Ok(());
                }
                let event = d.event();
                let t = self.right_time.as_mut().map(|f| f(event));
                match self.place(t, &d.env.meta) {
                    Ok(t) => self.engine.right(t, event, &mut self.out),
                    Err(late) => return self.late(event, late, ctx).await,
                }
            }
            Input::Tick(meta) => {
                ctx.meta = meta;
                self.clock.tick();
            }
            Input::Flush(meta) => {
                ctx.meta = meta;
                // As if the watermark passed the end of time, without moving it: events the
                // drain still brings open new windows, which the next flush publishes.
                self.engine
                    .advance(Timestamp::from_unix_nanos(u64::MAX), &mut self.out);
            }
        }
        let outcome = self.finish(ctx).await;
        match outcome {
            // No event to dead-letter: say so.
            Err(error) if timer => {
                tracing::error!(stream = %self.name, %error, "stream outputs not published");
                Ok(())
            }
            outcome => outcome,
        }
    }
}

/// A stream ready for the builder to wire.
pub(crate) struct StreamSpec<L, R, O> {
    pub(crate) settings: Settings,
    pub(crate) engine: Box<dyn Engine<L, R, O>>,
    pub(crate) left_time: Option<TimeFn<L>>,
    pub(crate) right_time: Option<TimeFn<R>>,
    pub(crate) error: Option<String>,
}

impl<L: Event, R: Event, O: Event> Wire for StreamSpec<L, R, O> {
    fn wire(self: Box<Self>, table: &mut TableBuilder, out: &mut Vec<Wired>) -> Result<()> {
        let StreamSpec {
            settings,
            engine,
            left_time,
            right_time,
            error,
        } = *self;
        if let Some(error) = error {
            return Err(Error::Config(format!(
                "stream `{}`: {error}",
                settings.name
            )));
        }
        if settings.checkpoint && !table.checkpoints.insert(settings.name.clone()) {
            return Err(Error::Config(format!(
                "two checkpointed streams are named `{}`: their checkpoints would mix; give each its own name with `Stream::name`",
                settings.name
            )));
        }
        let capacity = settings.mailbox.capacity();
        if capacity == 0 {
            return Err(Error::Config(format!(
                "the mailbox of stream `{}` has capacity 0: use Mailbox::bounded(n) with n >= 1",
                settings.name
            )));
        }
        type A<L, R, O> = StreamActor<L, R, O>;
        let (core, tx, mut inbox) = mailbox::mailbox::<A<L, R, O>>(capacity);
        // Its own name in stats, `stream:<name>`, rather than its type's: the mailbox's core
        // is not shared yet, so its name can still be set.
        drop(core);
        if let Some(core) = Arc::get_mut(&mut inbox.core) {
            core.actor = intern(&format!("stream:{}", settings.name));
        }
        let core = inbox.core.clone();
        A::<L, R, O>::__routes(&mut Routes {
            table,
            members: std::slice::from_ref(&(core.clone(), tx.clone())),
            keys: None,
        });
        let open = Arc::new(AtomicUsize::new(0));
        let actor = StreamActor {
            name: settings.name.clone(),
            engine,
            clock: Clock {
                mode: settings.mode,
                out_of_orderness: settings.out_of_orderness,
                lateness: settings.lateness,
                idle: settings.idle,
                max_seen: None,
                watermark: None,
                last_arrival: Timestamp::from_unix_nanos(0),
            },
            left_time,
            right_time,
            publish_late: settings.publish_late,
            out: Vec::new(),
            open: open.clone(),
            me: (tx.clone(), core.clone()),
            timer: None,
            checkpoint: settings.checkpoint,
            restored: false,
            store: None,
            version: 0,
        };
        if settings.checkpoint {
            // The first message: the checkpoint is read back before any event, and a
            // processing-time window that ended while the app was down closes at once.
            push(&tx, &core, Input::Tick(Metadata::new()));
        }
        let (flush_tx, flush_core) = (tx.clone(), core.clone());
        let hook = Hook {
            open,
            flush: Box::new(move || {
                push(&flush_tx, &flush_core, Input::Flush(Metadata::new()));
            }),
        };
        // No retries: an event is folded in once; a failure (outputs not published, a late
        // event) goes to the dead letters with its reason.
        let options = ActorOptions::new()
            .mailbox(settings.mailbox)
            .retry(RetryPolicy::none());
        let mut wired = Member::new(actor, inbox, core, tx, None, &options).wired();
        wired.hook = Some(hook);
        out.push(wired);
        Ok(())
    }
}
