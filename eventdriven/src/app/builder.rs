//! [`AppBuilder`]: actors and their options in, a running [`App`] out.

use std::any::TypeId;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::routing::TableBuilder;
use super::{App, AppInner, Config, Shared};
use crate::actor::mailbox::{self, KeyFn, MailboxCore, StopHandle};
use crate::actor::supervise::Factory;
use crate::actor::{run, Actor, Context, Keys, Mailbox, Routes, Supervision};
use crate::delivery::durable::{self, intern, StoreWriter};
use crate::delivery::idempotency::IdempotentReplies;
use crate::delivery::schedule::Scheduler;
use crate::delivery::{
    DeadLetters, IdempotencyWindow, MemoryProcessedIds, ProcessedIds, RetryPolicy,
};
use crate::delivery::{NewDeadLetter, Reason};
use crate::error::{Error, Result};
use crate::message::{Message, Timestamp};
use crate::store::Store;

/// How one actor runs: its mailbox, its supervision, its default retry policy.
///
/// A [`Mailbox`] converts into options, so `.actor_with(a, Mailbox::bounded(64))` works.
///
/// ```
/// use std::time::Duration;
/// use eventdriven::{ActorOptions, Mailbox};
/// use eventdriven::actor::Supervision;
/// use eventdriven::delivery::RetryPolicy;
///
/// let options = ActorOptions::new()
///     .mailbox(Mailbox::bounded(64))
///     .supervision(Supervision::restart().at_most(5, Duration::from_secs(60)))
///     .retry(RetryPolicy::retries(3));
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ActorOptions {
    mailbox: Mailbox,
    supervision: Supervision,
    retry: Option<RetryPolicy>,
}

impl ActorOptions {
    /// The default mailbox, restart on panic, the app's retry policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the mailbox.
    pub fn mailbox(mut self, mailbox: Mailbox) -> Self {
        self.mailbox = mailbox;
        self
    }

    /// Sets the supervision policy.
    pub fn supervision(mut self, supervision: Supervision) -> Self {
        self.supervision = supervision;
        self
    }

    /// Sets the retry policy of this actor's subscriptions that have none of their own.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }
}

impl From<Mailbox> for ActorOptions {
    fn from(mailbox: Mailbox) -> Self {
        Self::new().mailbox(mailbox)
    }
}

/// Adds one validation hook to the routing table.
type AddValidator = Box<dyn FnOnce(&mut TableBuilder) + Send>;

/// Configures and starts an [`App`]. Created by [`App::builder`].
#[must_use = "call `.build().await` to start the app"]
pub struct AppBuilder {
    actors: Vec<Box<dyn Wire>>,
    send_timeout: Duration,
    shutdown_timeout: Duration,
    retry: Option<RetryPolicy>,
    handler_latency: bool,
    #[cfg(feature = "metrics")]
    metrics: Option<Duration>,
    /// Validation hooks, added to the routing table at `build()`.
    validators: Vec<AddValidator>,
    dead_letter_threshold: Option<usize>,
    processed: Option<Arc<dyn ProcessedIds>>,
    replies_window: IdempotencyWindow,
    store: Option<Store>,
    #[cfg(feature = "bridge")]
    bridges: Vec<crate::bridge::Bridge>,
    /// Misuse found while building (reported by `build`).
    errors: Vec<Error>,
}

impl AppBuilder {
    pub(super) fn new() -> Self {
        Self {
            actors: Vec::new(),
            send_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            retry: None,
            handler_latency: false,
            #[cfg(feature = "metrics")]
            metrics: None,
            validators: Vec::new(),
            dead_letter_threshold: None,
            processed: None,
            replies_window: IdempotencyWindow::default(),
            store: None,
            #[cfg(feature = "bridge")]
            bridges: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Adds an actor with the default options (mailbox of [`Mailbox::DEFAULT_CAPACITY`]).
    /// If a handler panics, the actor restarts from `Default` when it implements it, and
    /// otherwise keeps its state (use [`actor_factory`](Self::actor_factory) to give a way to
    /// rebuild it).
    pub fn actor<A: Actor>(self, actor: A) -> Self {
        self.actor_with(actor, ActorOptions::new())
    }

    /// Adds an actor with a mailbox of its own size, or other [`ActorOptions`].
    pub fn actor_with<A: Actor>(mut self, actor: A, options: impl Into<ActorOptions>) -> Self {
        let factory = A::__default_factory().map(|f| Box::new(f) as Factory<A>);
        self.actors.push(Box::new(Spec::Given {
            actor,
            factory,
            options: options.into(),
        }));
        self
    }

    /// Adds an actor built by `factory`, which also rebuilds it after a panic.
    pub fn actor_factory<A, F>(self, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.actor_factory_with(factory, ActorOptions::new())
    }

    /// [`actor_factory`](Self::actor_factory) with options.
    pub fn actor_factory_with<A, F>(mut self, factory: F, options: impl Into<ActorOptions>) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.actors.push(Box::new(Spec::Given {
            actor: factory(),
            factory: Some(Box::new(factory)),
            options: options.into(),
        }));
        self
    }

    /// Adds a pool of `size` instances of an actor, built (and rebuilt after a panic) by
    /// `factory`. The pool is one handler or subscriber to the rest of the app: each message
    /// goes to one instance, round-robin, or by a key given with
    /// [`partition_by`](Self::partition_by), so one key's messages keep their order while
    /// different keys run in parallel.
    ///
    /// ```
    /// use eventdriven::prelude::*;
    ///
    /// #[derive(Event, Clone, Debug)]
    /// struct Deposited { account: u32, amount: u64 }
    ///
    /// #[derive(Default)]
    /// struct Ledger { total: u64 }
    ///
    /// #[handlers]
    /// impl Ledger {
    ///     #[subscribe]
    ///     fn on_deposit(&mut self, ev: &Deposited) { self.total += ev.amount; }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> eventdriven::Result<()> {
    /// let app = App::builder()
    ///     .actor_pool(4, Ledger::default)
    ///     .partition_by(|ev: &Deposited| ev.account)
    ///     .build()
    ///     .await?;
    /// app.publish(Deposited { account: 7, amount: 10 }).await?;
    /// app.shutdown().await
    /// # }
    /// ```
    pub fn actor_pool<A, F>(self, size: usize, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.actor_pool_with(size, factory, ActorOptions::new())
    }

    /// [`actor_pool`](Self::actor_pool) with options for every instance.
    pub fn actor_pool_with<A, F>(
        mut self,
        size: usize,
        factory: F,
        options: impl Into<ActorOptions>,
    ) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.actors.push(Box::new(PoolSpec {
            size,
            factory: Arc::new(factory),
            options: options.into(),
            keys: Keys::new(),
        }));
        self
    }

    /// Partitions the pool added just before by a key of message type `M` (a command,
    /// query or event the pool handles): one key always goes to the same instance. Types
    /// without a key are spread round-robin.
    pub fn partition_by<M, K, F>(mut self, key: F) -> Self
    where
        M: Message,
        K: Hash,
        F: Fn(&M) -> K + Send + Sync + 'static,
    {
        let hasher = BuildHasherDefault::<DefaultHasher>::default();
        let key_fn: KeyFn<M> = Arc::new(move |m: &M| hasher.hash_one(key(m)));
        match self.actors.last_mut().and_then(|spec| spec.keys()) {
            Some(keys) => {
                if keys.insert(TypeId::of::<M>(), Box::new(key_fn)).is_some() {
                    self.errors.push(Error::Config(format!(
                        "`{}` is partitioned twice in one pool: give one key",
                        M::NAME
                    )));
                }
            }
            None => self.errors.push(Error::Config(format!(
                "`partition_by` for `{}` must follow `actor_pool`",
                M::NAME
            ))),
        }
        self
    }

    /// Adds a free `#[subscribe] fn` (a stateless subscriber).
    pub fn subscriber<A: Actor>(self, subscriber: A) -> Self {
        self.actor(subscriber)
    }

    /// [`subscriber`](Self::subscriber) with options (a retry policy, say).
    pub fn subscriber_with<A: Actor>(
        self,
        subscriber: A,
        options: impl Into<ActorOptions>,
    ) -> Self {
        self.actor_with(subscriber, options)
    }

    /// Adds a stream over the events of type `E`: `build` gets a [`Stream<E>`] and returns
    /// it with its operators, ending in `publish()`. The stream runs as a subscriber actor
    /// with its own bounded mailbox (see [`stream`](crate::stream)). Streams are declared
    /// here, not on the running app, because an app's subscribers are wired when it is
    /// built.
    ///
    /// [`Stream<E>`]: crate::stream::Stream
    ///
    /// ```
    /// use eventdriven::prelude::*;
    /// use eventdriven::stream::Stream;
    ///
    /// #[derive(Event, Clone, Debug)]
    /// struct Deposited { account: u32, amount: u64 }
    ///
    /// #[derive(Event, Clone, Debug)]
    /// struct LargeDeposit { account: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> eventdriven::Result<()> {
    /// let app = App::builder()
    ///     .stream(|s: Stream<Deposited>| {
    ///         s.filter(|d| d.amount >= 10_000)
    ///             .map(|d| LargeDeposit { account: d.account })
    ///             .publish()
    ///     })
    ///     .build()
    ///     .await?;
    /// app.publish(Deposited { account: 7, amount: 20_000 }).await?;
    /// app.shutdown().await
    /// # }
    /// ```
    pub fn stream<E: crate::Event>(
        mut self,
        build: impl FnOnce(crate::stream::Stream<E>) -> crate::stream::Pipeline,
    ) -> Self {
        self.actors.push(build(crate::stream::Stream::new()).wire);
        self
    }

    /// How long a send from inside a handler waits for mailbox room and reply before
    /// [`Error::Timeout`]. This is what ends a cycle of actors with full mailboxes.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// How long [`App::shutdown`] waits for the mailboxes to drain.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The retry policy of every subscription without one of its own or of its actor's.
    /// Without it, a failed event is dead-lettered at once.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Checks every `E` before it is published: by [`App::publish`] and the other publish
    /// methods, from handlers, and when it comes in from outside
    /// ([`App::publish_incoming`], so from a bridge). An event the hook refuses is not
    /// delivered to anyone: the publisher gets [`Error::Invalid`] with the hook's reason; an
    /// incoming one gets [`IncomingError::Invalid`](crate::IncomingError::Invalid), which a
    /// bridge dead-letters with the reason and rejects at the broker. Several hooks for one
    /// type run in the order they were added. An app without hooks only checks, per publish,
    /// that it has none; with hooks, each publish looks its type up in a map.
    ///
    /// The hook is plain code: check invariants by hand, or run a JSON schema (derived with
    /// `schemars`, say) over `serde_json::to_value(event)`.
    ///
    /// ```
    /// use eventdriven::prelude::*;
    /// use eventdriven::Error;
    ///
    /// #[derive(Event, Clone, Debug)]
    /// struct OrderPlaced { quantity: u32 }
    ///
    /// #[subscribe]
    /// async fn ship(_: &OrderPlaced) {}
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> eventdriven::Result<()> {
    /// let app = App::builder()
    ///     .subscriber(ship)
    ///     .validate(|e: &OrderPlaced| match e.quantity {
    ///         0 => Err("quantity must be at least 1".to_owned()),
    ///         _ => Ok(()),
    ///     })
    ///     .build()
    ///     .await?;
    /// app.publish(OrderPlaced { quantity: 2 }).await?;
    /// let refused = app.publish(OrderPlaced { quantity: 0 }).await;
    /// assert!(matches!(refused, Err(Error::Invalid { message: "OrderPlaced", .. })));
    /// # app.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn validate<E: crate::Event>(
        mut self,
        check: impl Fn(&E) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let check: super::routing::Validator<E> = Arc::new(check);
        self.validators
            .push(Box::new(move |table: &mut TableBuilder| {
                table.validator(check)
            }));
        self
    }

    /// Measures how long each handler takes (from taking the message out of the mailbox to the
    /// handler's end, its waits included), per actor: [`ActorStats::latency`](crate::ActorStats::latency)
    /// in [`App::stats`]. Off by default: it costs two clock reads and a histogram update per
    /// message (tens of nanoseconds). [`metrics`](Self::metrics) turns it on.
    pub fn handler_latency(mut self, measure: bool) -> Self {
        self.handler_latency = measure;
        self
    }

    /// Exports the app's figures through the [`metrics`](https://docs.rs/metrics) facade every
    /// `every` (and once more at shutdown), to the recorder the application installed; turns
    /// on [`handler_latency`](Self::handler_latency). The names and labels are in
    /// [`observe::METRICS`](crate::observe::METRICS).
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, every: Duration) -> Self {
        self.metrics = Some(every);
        self.handler_latency = true;
        self
    }

    /// Publishes `DeadLetterThresholdExceeded` when an actor's dead-letter count passes
    /// `threshold`.
    pub fn dead_letter_threshold(mut self, threshold: usize) -> Self {
        self.dead_letter_threshold = Some(threshold);
        self
    }

    /// The window of processed ids idempotent subscribers remember, and of replies kept for
    /// [`App::send_idempotent`] (in memory).
    pub fn idempotency_window(mut self, window: IdempotencyWindow) -> Self {
        self.replies_window = window;
        self.processed_ids(MemoryProcessedIds::new(window))
    }

    /// Where idempotent subscribers keep processed ids.
    pub fn processed_ids(mut self, store: impl ProcessedIds) -> Self {
        self.processed = Some(Arc::new(store));
        self
    }

    /// Keeps the app's dead letters, idempotent subscribers' processed ids and scheduled
    /// events in `store`, so they survive a restart: `build()` loads what a previous run left
    /// there (see [`delivery::durable`](crate::delivery)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> anyhow::Result<()> {
    /// use eventdriven::{store::Store, App};
    ///
    /// let app = App::builder().store(Store::memory()).build().await?;
    /// # app.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Connects the app to a broker: the bridge's outbound event types go to the broker, its
    /// consumed ones come in from it. `build()` connects (within the bridge's connect
    /// timeout) and fails if the broker cannot be reached; [`App::shutdown`] drains, then
    /// closes it. See [`bridge`](crate::bridge).
    #[cfg(feature = "bridge")]
    pub fn bridge(mut self, bridge: crate::bridge::Bridge) -> Self {
        if self.bridges.iter().any(|b| b.name() == bridge.name()) {
            self.errors.push(Error::Config(format!(
                "two bridges are named `{}`: give each its own name",
                bridge.name()
            )));
        }
        self.bridges.push(bridge);
        self
    }

    /// Builds the routing table, checks it, and starts every actor's task.
    ///
    /// Fails if a command or query has two handlers ([`Error::DuplicateHandler`]) or a mailbox
    /// has no room ([`Error::Config`]); with several problems, the first is returned and all
    /// are logged.
    pub async fn build(mut self) -> Result<App> {
        let mut table = TableBuilder::default();
        for add in std::mem::take(&mut self.validators) {
            add(&mut table);
        }
        table.table.dead_letters =
            Arc::new(DeadLetters::with_threshold(self.dead_letter_threshold));
        let mut ready = Vec::with_capacity(self.actors.len());
        let mut stops = Vec::with_capacity(self.actors.len());
        let mut mailboxes = Vec::with_capacity(self.actors.len());
        let mut hooks = Vec::new();
        table.errors.extend(self.errors);
        #[cfg(feature = "bridge")]
        let mut bridges = Vec::new();
        #[cfg(feature = "bridge")]
        for bridge in self.bridges {
            match bridge.into_parts() {
                Ok(parts) => bridges.push(parts),
                Err(e) => table.errors.push(Error::Config(e)),
            }
        }
        let mut members = Vec::new();
        let mut wire_all = |actors: Vec<Box<dyn Wire>>, table: &mut TableBuilder| {
            for actor in actors {
                if let Err(e) = actor.wire(table, &mut members) {
                    table.errors.push(e);
                }
                for wired in members.drain(..) {
                    hooks.extend(wired.hook);
                    stops.push(wired.stop);
                    mailboxes.push(wired.core);
                    ready.push(wired.launch);
                }
            }
        };
        wire_all(self.actors, &mut table);
        // Each bridge's outbound subscribers: the types it names, and the known ones its
        // patterns match (the subscribed types are known once the actors are wired).
        #[cfg(feature = "bridge")]
        {
            let subscribed = table.codecs.forwards();
            for parts in &bridges {
                let forwards = parts.forwards(&subscribed);
                let specs = forwards
                    .iter()
                    .map(|f| f.wire(parts.link.clone()))
                    .collect();
                wire_all(specs, &mut table);
            }
        }
        if !table.errors.is_empty() {
            for e in &table.errors {
                tracing::error!("{e}");
            }
            return Err(table.errors.swap_remove(0));
        }
        // Before anything starts: a broker that cannot be reached fails the build cleanly.
        #[cfg(feature = "bridge")]
        for parts in &bridges {
            parts.connect().await.map_err(Error::Config)?;
        }
        let dead_letters = table.table.dead_letters.clone();
        let durable = self.store.map(StoreWriter::start);
        if let Some(durable) = &durable {
            let _ = dead_letters.durable.set(durable.clone());
        }
        let processed = self
            .processed
            .unwrap_or_else(|| Arc::new(MemoryProcessedIds::new(IdempotencyWindow::default())));
        let shared = Arc::new(Shared {
            routes: table.table,
            config: Config {
                send_timeout: self.send_timeout,
                shutdown_timeout: self.shutdown_timeout,
                retry: self.retry,
                handler_latency: self.handler_latency,
            },
            dead_letters,
            processed,
            scheduler: Arc::new(Scheduler::default()),
            replies: IdempotentReplies::new(self.replies_window),
            durable,
            codecs: std::mem::take(&mut table.codecs),
            accepting: AtomicBool::new(true),
            abandon: AtomicBool::new(false),
            abandon_notify: Notify::new(),
            mailboxes,
        });
        if let Err(e) = recover(&shared, self.replies_window).await {
            return Err(Error::Config(format!(
                "could not load the delivery state from the store: {e}"
            )));
        }
        let tasks = ready
            .into_iter()
            .map(|launch| launch.launch(&shared))
            .collect();
        let app = App {
            inner: Arc::new(AppInner {
                shared,
                stops,
                streams: hooks,
                tasks: Mutex::new(tasks),
                #[cfg(feature = "bridge")]
                bridges: std::sync::OnceLock::new(),
                observed: Mutex::default(),
            }),
        };
        #[cfg(feature = "bridge")]
        {
            let handles = bridges
                .into_iter()
                .map(|parts| crate::bridge::BridgeHandle::start(parts.link, &app))
                .collect();
            let _ = app.inner.bridges.set(handles);
        }
        #[cfg(feature = "metrics")]
        if let Some(every) = self.metrics {
            crate::observe::export::start(&app, every);
        }
        Ok(app)
    }
}

/// Loads what a previous run left in the store: processed ids within the window, dead
/// letters (retryable again where the event type has a codec and its subscriber is here) and
/// scheduled events (scheduled again; past due ones at once).
async fn recover(shared: &Arc<Shared>, window: IdempotencyWindow) -> crate::store::StoreResult<()> {
    let Some(durable) = &shared.durable else {
        return Ok(());
    };
    let store = &durable.store;
    let actor = |name: &str| shared.mailboxes.iter().find(|core| core.actor == name);

    let since = Timestamp::from_unix_nanos(
        Timestamp::now()
            .as_unix_nanos()
            .saturating_sub(window.max_age.as_nanos() as u64),
    );
    for (consumer, id) in store.processed_since(since, window.max_ids).await? {
        if let Some(core) = actor(&consumer) {
            shared.processed.insert(core.actor, id);
        }
    }

    const PAGE: usize = 100_000;
    for letter in store.dead_letters(PAGE).await? {
        let (reason, error) = letter
            .reason
            .split_once(": ")
            .unwrap_or(("failed", &letter.reason));
        let target = actor(&letter.recipient).cloned();
        let codec = shared.codecs.get(&letter.message.name);
        let payload = match (codec, &target) {
            (Some(codec), Some(_)) if !letter.message.payload.is_null() => {
                match codec.decode(&letter.message) {
                    Some(Ok(payload)) => Some(payload),
                    Some(Err(error)) => {
                        tracing::warn!(%error, message_name = letter.message.name, "stored dead letter cannot be retried");
                        None
                    }
                    None => None,
                }
            }
            _ => None,
        };
        shared.dead_letters.load(
            NewDeadLetter {
                actor: target
                    .as_ref()
                    .map_or_else(|| intern(&letter.recipient), |core| core.actor),
                message: codec.map_or_else(|| intern(&letter.message.name), |codec| codec.name),
                meta: letter.message.metadata,
                reason: Reason::from_text(reason).unwrap_or(Reason::Failed),
                error: error.to_owned(),
                first_failure: None,
                target: payload.as_ref().and(target),
                payload,
                stored: true,
            },
            letter.failed_at.to_system_time(),
        );
    }

    let far = Timestamp::from_unix_nanos(u64::MAX);
    for schedule in store.due_schedules(far, PAGE).await? {
        let name = &schedule.message.name;
        match shared.codecs.get(name) {
            Some(codec) if schedule.kind == codec.kind => {
                // Scheduling writes it to the store again (same id: replaced).
                codec.schedule(shared, &schedule.message, durable::instant(schedule.due))?;
            }
            _ => tracing::warn!(
                message_name = %name,
                kind = schedule.kind,
                "stored scheduled message has no handler or subscriber here; left in the store"
            ),
        }
    }
    Ok(())
}

/// An actor with options, ready for the builder to wire (the runtime's own actors).
#[cfg_attr(not(feature = "bridge"), allow(dead_code))]
pub(crate) fn spec<A: Actor>(actor: A, options: ActorOptions) -> Box<dyn Wire> {
    Box::new(Spec::Given {
        factory: A::__default_factory().map(|f| Box::new(f) as Factory<A>),
        actor,
        options,
    })
}

/// An actor as given to the builder, then wired. Wiring changes it in place, so the builder's
/// allocation for it also starts it: one allocation per actor fewer at `build()`.
enum Spec<A: Actor> {
    Given {
        actor: A,
        factory: Option<Factory<A>>,
        options: ActorOptions,
    },
    Wired(Member<A>),
    /// Launched, or wiring failed.
    Spent,
}

/// Starts a wired actor's task once the shared state exists.
pub(crate) trait Launch: Send {
    /// Spawns the task.
    fn launch(self: Box<Self>, shared: &Arc<Shared>) -> JoinHandle<()>;
}

/// One instance's task, ready to start.
pub(crate) struct Member<A: Actor> {
    actor: A,
    inbox: mailbox::Inbox<A>,
    core: Arc<MailboxCore>,
    tx: mailbox::QueueTx<mailbox::Slot<A::Mailbox>>,
    factory: Option<Factory<A>>,
    retry: Option<RetryPolicy>,
    supervision: Supervision,
}

impl<A: Actor> Launch for Member<A> {
    fn launch(self: Box<Self>, shared: &Arc<Shared>) -> JoinHandle<()> {
        (*self).start(shared)
    }
}

impl<A: Actor> Launch for Spec<A> {
    fn launch(mut self: Box<Self>, shared: &Arc<Shared>) -> JoinHandle<()> {
        match std::mem::replace(&mut *self, Spec::Spent) {
            Spec::Wired(member) => member.start(shared),
            Spec::Given { .. } | Spec::Spent => unreachable!("only a wired actor is launched"),
        }
    }
}

/// An actor wired into the table, ready to start.
pub(crate) struct Wired {
    core: Arc<MailboxCore>,
    stop: StopHandle,
    launch: Box<dyn Launch>,
    /// A stream's hold for shutdown.
    pub(crate) hook: Option<crate::stream::Hook>,
}

/// Type-erases [`Spec`] and [`PoolSpec`] so the builder can hold actors of different types.
pub(crate) trait Wire: Send {
    /// Creates the mailboxes, registers the routes, and adds to `out` what starts each task
    /// (an out-parameter: one `Vec` for all actors rather than one per actor).
    fn wire(self: Box<Self>, table: &mut TableBuilder, out: &mut Vec<Wired>) -> Result<()>;
    /// A pool's partition keys.
    fn keys(&mut self) -> Option<&mut Keys> {
        None
    }
}

fn check_capacity<A: Actor>(options: &ActorOptions) -> Result<usize> {
    match options.mailbox.capacity() {
        0 => Err(Error::Config(format!(
            "the mailbox of `{}` has capacity 0: use Mailbox::bounded(n) with n >= 1",
            A::NAME
        ))),
        n => Ok(n),
    }
}

impl<A: Actor> Member<A> {
    /// The instance `actor` with its mailbox.
    pub(crate) fn new(
        actor: A,
        inbox: mailbox::Inbox<A>,
        core: Arc<MailboxCore>,
        tx: mailbox::QueueTx<mailbox::Slot<A::Mailbox>>,
        factory: Option<Factory<A>>,
        options: &ActorOptions,
    ) -> Self {
        Member {
            actor,
            inbox,
            core,
            tx,
            factory,
            retry: options.retry.clone(),
            supervision: options.supervision,
        }
    }

    /// Its core and stop handle, for the builder to keep.
    fn handles(&self) -> (Arc<MailboxCore>, StopHandle) {
        (
            self.core.clone(),
            mailbox::stop_handle::<A>(self.tx.clone()),
        )
    }

    /// Wired, in a box of its own that starts it.
    pub(crate) fn wired(self) -> Wired {
        let (core, stop) = self.handles();
        Wired {
            core,
            hook: None,
            stop,
            launch: Box::new(self),
        }
    }

    /// Spawns its task.
    fn start(self, shared: &Arc<Shared>) -> JoinHandle<()> {
        let Member {
            actor,
            inbox,
            core,
            tx,
            factory,
            retry,
            supervision,
        } = self;
        let ctx = Context::new(shared.clone(), core, tx, retry);
        tokio::spawn(run(actor, inbox, ctx, factory, supervision))
    }
}

impl<A: Actor> Wire for Spec<A> {
    fn wire(mut self: Box<Self>, table: &mut TableBuilder, out: &mut Vec<Wired>) -> Result<()> {
        let Spec::Given {
            actor,
            factory,
            options,
        } = std::mem::replace(&mut *self, Spec::Spent)
        else {
            unreachable!("an actor is wired once");
        };
        let (core, tx, inbox) = mailbox::mailbox::<A>(check_capacity::<A>(&options)?);
        A::__routes(&mut Routes {
            table,
            members: std::slice::from_ref(&(core.clone(), tx.clone())),
            keys: None,
        });
        let member = Member::new(actor, inbox, core, tx, factory, &options);
        let (core, stop) = member.handles();
        *self = Spec::Wired(member);
        out.push(Wired {
            core,
            hook: None,
            stop,
            launch: self,
        });
        Ok(())
    }
}

/// A pool as given to the builder.
struct PoolSpec<A: Actor> {
    size: usize,
    factory: Arc<dyn Fn() -> A + Send + Sync>,
    options: ActorOptions,
    keys: Keys,
}

impl<A: Actor> Wire for PoolSpec<A> {
    fn wire(self: Box<Self>, table: &mut TableBuilder, out: &mut Vec<Wired>) -> Result<()> {
        let PoolSpec {
            size,
            factory,
            options,
            keys,
        } = *self;
        if size == 0 {
            return Err(Error::Config(format!(
                "the pool of `{}` has no instances: use a size of 1 or more",
                A::NAME
            )));
        }
        let capacity = check_capacity::<A>(&options)?;
        let boxes: Vec<_> = (0..size).map(|_| mailbox::mailbox::<A>(capacity)).collect();
        let members: Vec<_> = boxes
            .iter()
            .map(|(core, tx, _)| (core.clone(), tx.clone()))
            .collect();
        A::__routes(&mut Routes {
            table,
            members: &members,
            keys: Some(&keys),
        });
        out.extend(boxes.into_iter().map(|(core, tx, inbox)| {
            let rebuild = factory.clone();
            let rebuild: Factory<A> = Box::new(move || rebuild());
            Member::new(factory(), inbox, core, tx, Some(rebuild), &options).wired()
        }));
        Ok(())
    }

    fn keys(&mut self) -> Option<&mut Keys> {
        Some(&mut self.keys)
    }
}
