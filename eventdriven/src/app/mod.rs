//! The app: a builder that wires actors into a routing table, and the handle that sends,
//! publishes, queries and shuts down.

pub(crate) mod routing;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::actor::mailbox::{self, MailboxCore, StopHandle};
use crate::actor::{run, supervise, Actor, Context, Mailbox, Routes};
use crate::delivery::DeadLetters;
use crate::error::{Error, Result, TrySendError};
use crate::message::{Command, Envelope, Event, Message, Query};
use routing::{RouteTable, Sender, TableBuilder};

pub use routing::ReplyFuture;

/// Settings shared by every actor.
pub(crate) struct Config {
    pub(crate) send_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
}

/// What every actor's context and the app handle share.
pub(crate) struct Shared {
    pub(crate) routes: RouteTable,
    pub(crate) config: Config,
    pub(crate) dead_letters: Arc<DeadLetters>,
    accepting: AtomicBool,
    mailboxes: Vec<Arc<MailboxCore>>,
}

/// Configures and starts an [`App`]. Created by [`App::builder`].
#[must_use = "call `.build().await` to start the app"]
pub struct AppBuilder {
    actors: Vec<Box<dyn Wire>>,
    send_timeout: Duration,
    shutdown_timeout: Duration,
}

/// A running app: the actors' tasks and the routing table between them.
///
/// Cloning is cheap and every clone drives the same app.
///
/// ```
/// use eventdriven::prelude::*;
///
/// #[derive(Command, Debug)]
/// #[command(reply = u64)]
/// struct Add(u64);
///
/// #[derive(Query, Debug)]
/// #[query(reply = u64)]
/// struct Total;
///
/// #[derive(Default)]
/// struct Counter { total: u64 }
///
/// #[handlers]
/// impl Counter {
///     #[handle]
///     fn add(&mut self, cmd: Add) -> u64 {
///         self.total += cmd.0;
///         self.total
///     }
///
///     #[query]
///     fn total(&self, _: Total) -> u64 {
///         self.total
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> eventdriven::Result<()> {
/// let app = App::builder().actor(Counter::default()).build().await?;
/// assert_eq!(app.send(Add(2)).await?, 2);
/// app.tell(Add(3)).await?;
/// assert_eq!(app.query(Total).await?, 5);
/// app.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    shared: Arc<Shared>,
    stops: Vec<StopHandle>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Figures for one actor, from [`App::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActorStats {
    /// The actor's name.
    pub actor: &'static str,
    /// Its mailbox's capacity.
    pub capacity: usize,
    /// Messages waiting now.
    pub queued: usize,
    /// The most messages ever seen waiting at once; never above `capacity`.
    pub peak: usize,
    /// Messages handled (successfully or not).
    pub handled: u64,
    /// Handlers that panicked.
    pub panics: u64,
}

/// The app's figures, from [`App::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// One entry per actor, in registration order.
    pub actors: Vec<ActorStats>,
    /// Dead letters so far.
    pub dead_letters: usize,
}

impl App {
    /// A builder with default settings: send timeout 30 s inside handlers, shutdown deadline
    /// 30 s.
    pub fn builder() -> AppBuilder {
        AppBuilder {
            actors: Vec::new(),
            send_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    #[inline]
    fn accept<M: Message>(&self) -> Result<()> {
        if self.shared().accepting.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(Error::ShuttingDown { message: M::NAME })
        }
    }

    #[inline]
    fn try_accept<M: Message, T>(&self, message: T) -> Result<T, TrySendError<T>> {
        match self.accept::<M>() {
            Ok(()) => Ok(message),
            Err(error) => Err(TrySendError { message, error }),
        }
    }

    /// Sends a command to its handler and waits for the reply. Waits for mailbox room first.
    pub async fn send<C: Command>(&self, command: C) -> Result<C::Reply> {
        self.send_envelope(Envelope::new(command)).await
    }

    /// [`send`](Self::send) with metadata of your own (correlation id, headers).
    pub async fn send_envelope<C: Command>(&self, env: Envelope<C>) -> Result<C::Reply> {
        self.accept::<C>()?;
        let routes = &self.shared().routes;
        routes
            .ask(routes.command::<C>()?, env, Sender::OUTSIDE)
            .await
    }

    /// [`send`](Self::send), giving up with [`Error::Timeout`] after `timeout` (room and reply
    /// together).
    pub async fn send_timeout<C: Command>(
        &self,
        command: C,
        timeout: Duration,
    ) -> Result<C::Reply> {
        self.accept::<C>()?;
        let routes = &self.shared().routes;
        let from = Sender {
            me: None,
            timeout: Some(timeout),
        };
        routes
            .ask(routes.command::<C>()?, Envelope::new(command), from)
            .await
    }

    /// Sends a command if its handler's mailbox has room now (otherwise [`Error::Full`] with the
    /// command handed back); await the returned future for the reply.
    pub fn try_send<C: Command>(
        &self,
        command: C,
    ) -> Result<ReplyFuture<C::Reply>, TrySendError<C>> {
        let command = self.try_accept::<C, _>(command)?;
        let routes = &self.shared().routes;
        match routes.command::<C>() {
            Ok(to) => routes.try_ask(to, Envelope::new(command), Sender::OUTSIDE),
            Err(error) => Err(TrySendError {
                message: command,
                error,
            }),
        }
    }

    /// Sends a command without waiting for its reply (the reply is dropped). Waits for mailbox
    /// room. The cheapest way to hand work to an actor: no allocation per message.
    pub async fn tell<C: Command>(&self, command: C) -> Result<()> {
        self.accept::<C>()?;
        let routes = &self.shared().routes;
        routes
            .tell(
                routes.command::<C>()?,
                Envelope::new(command),
                Sender::OUTSIDE,
            )
            .await
    }

    /// [`tell`](Self::tell) if the mailbox has room now.
    pub fn try_tell<C: Command>(&self, command: C) -> Result<(), TrySendError<C>> {
        let command = self.try_accept::<C, _>(command)?;
        let routes = &self.shared().routes;
        match routes.command::<C>() {
            Ok(to) => routes.try_tell(to, Envelope::new(command), Sender::OUTSIDE),
            Err(error) => Err(TrySendError {
                message: command,
                error,
            }),
        }
    }

    /// Asks a query and waits for the answer.
    pub async fn query<Q: Query>(&self, query: Q) -> Result<Q::Reply> {
        self.query_envelope(Envelope::new(query)).await
    }

    /// [`query`](Self::query) with metadata of your own.
    pub async fn query_envelope<Q: Query>(&self, env: Envelope<Q>) -> Result<Q::Reply> {
        self.accept::<Q>()?;
        let routes = &self.shared().routes;
        routes.ask(routes.query::<Q>()?, env, Sender::OUTSIDE).await
    }

    /// Asks a query if its handler's mailbox has room now.
    pub fn try_query<Q: Query>(&self, query: Q) -> Result<ReplyFuture<Q::Reply>, TrySendError<Q>> {
        let query = self.try_accept::<Q, _>(query)?;
        let routes = &self.shared().routes;
        match routes.query::<Q>() {
            Ok(to) => routes.try_ask(to, Envelope::new(query), Sender::OUTSIDE),
            Err(error) => Err(TrySendError {
                message: query,
                error,
            }),
        }
    }

    /// Publishes an event to every subscriber (none is fine). Waits until every subscriber's
    /// mailbox has room, then delivers to all of them: never to some only.
    pub async fn publish<E: Event>(&self, event: E) -> Result<()> {
        self.publish_envelope(Envelope::new(event)).await
    }

    /// [`publish`](Self::publish) with metadata of your own.
    pub async fn publish_envelope<E: Event>(&self, env: Envelope<E>) -> Result<()> {
        self.accept::<E>()?;
        self.shared().routes.publish(env, Sender::OUTSIDE).await
    }

    /// Publishes if every subscriber's mailbox has room now; otherwise delivers to none and
    /// returns [`Error::Full`] with the event.
    pub fn try_publish<E: Event>(&self, event: E) -> Result<(), TrySendError<E>> {
        let event = self.try_accept::<E, _>(event)?;
        self.shared()
            .routes
            .try_publish(Envelope::new(event), Sender::OUTSIDE)
            .map_err(|e| TrySendError {
                message: e.message.message,
                error: e.error,
            })
    }

    /// Messages that could not be handled, with why.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.shared().dead_letters
    }

    /// Mailbox and handler figures per actor.
    pub fn stats(&self) -> Stats {
        Stats {
            actors: self
                .shared()
                .mailboxes
                .iter()
                .map(|core| ActorStats {
                    actor: core.actor,
                    capacity: core.capacity,
                    queued: core.len(),
                    peak: core.peak(),
                    handled: core.done(),
                    panics: core.panics.load(Ordering::Relaxed),
                })
                .collect(),
            dead_letters: self.dead_letters().len(),
        }
    }

    /// Stops taking messages from outside, lets the actors finish every accepted message
    /// (including what their handlers send on), then stops them. Gives up after the
    /// builder's shutdown timeout with [`Error::ShutdownTimeout`].
    pub async fn shutdown(&self) -> Result<()> {
        self.shutdown_within(self.shared().config.shutdown_timeout)
            .await
    }

    /// [`shutdown`](Self::shutdown) with its own deadline.
    pub async fn shutdown_within(&self, deadline: Duration) -> Result<()> {
        let shared = self.shared();
        shared.accepting.store(false, Ordering::SeqCst);
        let until = Instant::now() + deadline;
        while !self.quiescent() {
            if Instant::now() >= until {
                let unhandled = self.unhandled();
                for task in self.take_tasks() {
                    task.abort();
                }
                return Err(Error::ShutdownTimeout {
                    deadline,
                    unhandled,
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for stop in &self.inner.stops {
            stop();
        }
        for task in self.take_tasks() {
            // A task ends once it reads `Stop`, which now sits behind nothing.
            if let Err(e) = task.await {
                tracing::error!("actor task failed: {e}");
            }
        }
        Ok(())
    }

    fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn unhandled(&self) -> u64 {
        self.shared()
            .mailboxes
            .iter()
            .map(|core| core.pushed() - core.done())
            .sum()
    }

    /// True when no message is queued or being handled anywhere. Two scans must agree: a
    /// handler that sends to a mailbox already scanned and then finishes would fool one scan,
    /// but it changes the pushed counts the second scan compares.
    fn quiescent(&self) -> bool {
        let scan = || {
            let mut pushed = 0u64;
            for core in &self.shared().mailboxes {
                let p = core.pushed();
                if core.done() != p {
                    return None;
                }
                pushed += p;
            }
            Some(pushed)
        };
        matches!((scan(), scan()), (Some(a), Some(b)) if a == b)
    }
}

impl AppBuilder {
    /// Adds an actor with the default mailbox ([`Mailbox::DEFAULT_CAPACITY`]). If a handler
    /// panics, the actor restarts from `Default` when it implements it, and otherwise keeps
    /// its state (use [`actor_factory`](Self::actor_factory) to give a way to rebuild it).
    pub fn actor<A: Actor>(self, actor: A) -> Self {
        self.actor_with(actor, Mailbox::default())
    }

    /// Adds an actor with a mailbox of its own size.
    pub fn actor_with<A: Actor>(mut self, actor: A, mailbox: Mailbox) -> Self {
        let factory = A::__default_factory().map(|f| Box::new(f) as supervise::Factory<A>);
        self.actors.push(Box::new(Spec {
            actor,
            factory,
            mailbox,
        }));
        self
    }

    /// Adds an actor built by `factory`, which also rebuilds it after a panic.
    pub fn actor_factory<A, F>(self, factory: F) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.actor_factory_with(factory, Mailbox::default())
    }

    /// [`actor_factory`](Self::actor_factory) with a mailbox of its own size.
    pub fn actor_factory_with<A, F>(mut self, factory: F, mailbox: Mailbox) -> Self
    where
        A: Actor,
        F: Fn() -> A + Send + Sync + 'static,
    {
        self.actors.push(Box::new(Spec {
            actor: factory(),
            factory: Some(Box::new(factory)),
            mailbox,
        }));
        self
    }

    /// Adds a free `#[subscribe] fn` (a stateless subscriber).
    pub fn subscriber<A: Actor>(self, subscriber: A) -> Self {
        self.actor(subscriber)
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

    /// Builds the routing table, checks it, and starts every actor's task.
    ///
    /// Fails if a command or query has two handlers ([`Error::DuplicateHandler`]) or a mailbox
    /// has no room ([`Error::Config`]); with several problems, the first is returned and all
    /// are logged.
    pub async fn build(self) -> Result<App> {
        let mut table = TableBuilder::default();
        let mut ready = Vec::with_capacity(self.actors.len());
        let mut stops = Vec::with_capacity(self.actors.len());
        let mut mailboxes = Vec::with_capacity(self.actors.len());
        for actor in self.actors {
            match actor.wire(&mut table) {
                Ok(wired) => {
                    stops.push(wired.stop);
                    mailboxes.push(wired.core);
                    ready.push(wired.launch);
                }
                Err(e) => table.errors.push(e),
            }
        }
        if !table.errors.is_empty() {
            for e in &table.errors {
                tracing::error!("{e}");
            }
            return Err(table.errors.swap_remove(0));
        }
        let dead_letters = table.table.dead_letters.clone();
        let shared = Arc::new(Shared {
            routes: table.table,
            config: Config {
                send_timeout: self.send_timeout,
                shutdown_timeout: self.shutdown_timeout,
            },
            dead_letters,
            accepting: AtomicBool::new(true),
            mailboxes,
        });
        let tasks = ready.into_iter().map(|launch| launch(&shared)).collect();
        Ok(App {
            inner: Arc::new(AppInner {
                shared,
                stops,
                tasks: Mutex::new(tasks),
            }),
        })
    }
}

/// An actor as given to the builder.
struct Spec<A: Actor> {
    actor: A,
    factory: Option<supervise::Factory<A>>,
    mailbox: Mailbox,
}

/// Starts a wired actor's task once the shared state exists.
type Launch = Box<dyn FnOnce(&Arc<Shared>) -> JoinHandle<()> + Send>;

/// An actor wired into the table, ready to start.
struct Wired {
    core: Arc<MailboxCore>,
    stop: StopHandle,
    launch: Launch,
}

/// Type-erases [`Spec`] so the builder can hold actors of different types.
trait Wire: Send {
    fn wire(self: Box<Self>, table: &mut TableBuilder) -> Result<Wired>;
}

impl<A: Actor> Wire for Spec<A> {
    fn wire(self: Box<Self>, table: &mut TableBuilder) -> Result<Wired> {
        let Spec {
            actor,
            factory,
            mailbox,
        } = *self;
        if mailbox.capacity() == 0 {
            return Err(Error::Config(format!(
                "the mailbox of `{}` has capacity 0: use Mailbox::bounded(n) with n >= 1",
                A::NAME
            )));
        }
        let (core, tx, inbox) = mailbox::mailbox::<A>(mailbox.capacity());
        A::__routes(&mut Routes {
            table,
            core: core.clone(),
            tx: tx.clone(),
        });
        let launch_core = core.clone();
        Ok(Wired {
            core,
            stop: mailbox::stop_handle::<A>(tx),
            launch: Box::new(move |shared: &Arc<Shared>| {
                let ctx = Context::new(shared.clone(), launch_core);
                tokio::spawn(run(actor, inbox, ctx, factory))
            }),
        })
    }
}
