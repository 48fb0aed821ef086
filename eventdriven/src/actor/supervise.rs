//! The actor's task: receive, skip what expired, handle inside a span, survive panics by
//! policy, and stop cleanly, dead-lettering whatever it could not handle.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::mailbox::{Inbox, MailboxCore};
use super::{panic_text, Actor, Context};
use crate::delivery::{HandlerError, NewDeadLetter, Reason};
use crate::error::Error;
use crate::message::{Event, Message};

/// Makes a fresh actor after a panic.
pub(crate) type Factory<A> = Box<dyn Fn() -> A + Send + Sync>;

/// What to do with an actor whose handler panicked. The message itself goes through its
/// retry policy and then to the dead letters either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnPanic {
    /// Rebuild the actor from its factory (`Default`, or the builder's closure); without one,
    /// resume.
    Restart,
    /// Keep the actor's state as the handler left it.
    Resume,
    /// Stop the actor: publish [`ActorFailed`], dead-letter what is queued, and refuse further
    /// messages with [`Error::Stopped`].
    Stop,
}

/// A supervision policy: what a panic does to the actor, and how many panics in a window are
/// tolerated before the actor is stopped (escalation).
///
/// ```
/// use std::time::Duration;
/// use eventdriven::actor::Supervision;
///
/// // Restart on panic, but stop after 3 restarts within 10 seconds.
/// let policy = Supervision::restart().at_most(3, Duration::from_secs(10));
/// # let _ = policy;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supervision {
    on_panic: OnPanic,
    /// At most this many panics within `window` (`u32::MAX`: no limit). Two fields rather
    /// than an `Option<(u32, Duration)>`, which takes 8 bytes more in every actor's task.
    restarts: u32,
    window: Duration,
}

impl Supervision {
    const NO_LIMIT: u32 = u32::MAX;

    /// Restart on every panic (the default).
    pub const fn restart() -> Self {
        Self::on(OnPanic::Restart)
    }

    /// Keep the state on every panic.
    pub const fn resume() -> Self {
        Self::on(OnPanic::Resume)
    }

    /// Stop at the first panic.
    pub const fn stop() -> Self {
        Self::on(OnPanic::Stop)
    }

    const fn on(on_panic: OnPanic) -> Self {
        Self {
            on_panic,
            restarts: Self::NO_LIMIT,
            window: Duration::ZERO,
        }
    }

    /// Stops the actor when more than `restarts` panics happen within `window`.
    pub const fn at_most(mut self, restarts: u32, window: Duration) -> Self {
        // `u32::MAX` panics cannot be counted in a window anyway: one fewer is the same policy.
        self.restarts = if restarts == Self::NO_LIMIT {
            Self::NO_LIMIT - 1
        } else {
            restarts
        };
        self.window = window;
        self
    }

    /// What a panic does.
    pub const fn on_panic(&self) -> OnPanic {
        self.on_panic
    }

    /// The most panics tolerated within a window, and the window; `None` without a limit.
    fn intensity(&self) -> Option<(u32, Duration)> {
        (self.restarts != Self::NO_LIMIT).then_some((self.restarts, self.window))
    }
}

impl Default for Supervision {
    fn default() -> Self {
        Self::restart()
    }
}

/// Published when supervision stops an actor (its policy says stop, or it panicked more often
/// than its intensity allows). From then on, sending to it fails with [`Error::Stopped`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorFailed {
    /// The stopped actor.
    pub actor: &'static str,
    /// The last panic's text.
    pub error: String,
    /// Panics counted in the intensity window.
    pub panics: u32,
}

impl Message for ActorFailed {
    const NAME: &'static str = "eventdriven.actor_failed";
}

#[diagnostic::do_not_recommend]
impl Event for ActorFailed {}

/// How a handler's future ended.
enum Ran<T> {
    Done(T),
    Panicked(Box<dyn Any + Send>),
    /// Dropped on shutdown's order, having outlived the deadline.
    Aborted,
}

pin_project_lite::pin_project! {
    /// Polls a handler's future inside its span, catching a panic inside it, and dropping it
    /// if shutdown gives up on it. A future of its own rather than an `async fn`, which would
    /// keep the handler's future twice in the actor's task (its parameter and the pinned
    /// copy): the task is every idle actor's memory. The fast path (a handler that completes
    /// at its first poll) costs one atomic load besides the poll.
    struct Guard<'a, F> {
        #[pin]
        fut: F,
        core: &'a MailboxCore,
        span: Option<&'a tracing::Span>,
    }
}

impl<F: Future> Future for Guard<'_, F> {
    type Output = Ran<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let core = *this.core;
        if core.aborting() {
            return Poll::Ready(Ran::Aborted);
        }
        let _entered = this.span.map(tracing::Span::enter);
        let mut fut = this.fut;
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ran::Done(out)),
            Ok(Poll::Pending) => {
                // Room taken and not given back yet must not wait with the handler.
                core.release_taken();
                core.park(cx.waker());
                // An abort between the check above and `park` would find no waker.
                if core.aborting() {
                    return Poll::Ready(Ran::Aborted);
                }
                Poll::Pending
            }
            Err(payload) => Poll::Ready(Ran::Panicked(payload)),
        }
    }
}

/// Applies a supervision policy to panics, counting them in the intensity window (in the
/// context's rarely used part: most actors never panic).
struct Supervisor<A> {
    policy: Supervision,
    factory: Option<Factory<A>>,
}

impl<A: Actor> Supervisor<A> {
    /// Restarts or resumes `actor` after a panic; `true` when it must stop instead.
    fn on_panic(&mut self, actor: &mut A, ctx: &mut Context<A>, error: &str) -> bool {
        ctx.me.count_panic();
        let now = Instant::now();
        let panics = &mut ctx.rare().panics;
        panics.push_back(now);
        let over_limit = self.policy.intensity().is_some_and(|(max, window)| {
            while panics
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                panics.pop_front();
            }
            panics.len() > max as usize
        });
        let stop = over_limit || self.policy.on_panic == OnPanic::Stop;
        let restarted = !stop && self.policy.on_panic == OnPanic::Restart && self.factory.is_some();
        if let (true, Some(make)) = (restarted, &self.factory) {
            *actor = make();
        }
        tracing::error!(
            actor = A::NAME,
            message_name = ctx.message,
            id = %ctx.meta.id,
            correlation_id = %ctx.meta.correlation_id,
            restarted,
            stopping = stop,
            "{error}"
        );
        stop
    }
}

/// Polls a future, turning a panic inside it into `Err` with the panic's text. Used by
/// generated code for command handlers with a retry policy, which must keep the command and
/// its reply slot across a panic.
#[doc(hidden)]
pub async fn catch<F: Future>(fut: F) -> Result<F::Output, String> {
    let mut fut = pin!(fut);
    poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                Poll::Ready(Err(format!("handler panicked: {}", panic_text(&*payload))))
            }
        },
    )
    .await
}

/// How the loop ended.
enum End {
    /// Shutdown's `Stop` arrived after the mailboxes drained.
    Stopped,
    /// The shutdown deadline passed.
    Abandoned,
    /// Supervision stopped the actor.
    Failed,
}

/// Runs an actor until its mailbox delivers `Stop`, the shutdown deadline passes, or
/// supervision stops it.
///
/// The future is every idle actor's memory, so it is kept small: it is an `async move` block
/// rather than an `async fn` (whose parameters the compiler copies into the state a second
/// time), and the paths that wait rarely (rejecting, settling a failure, escalating) are
/// boxed, so their futures take space only while they run.
// Written out on purpose: an `async fn` would keep its parameters twice (see above).
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<A: Actor>(
    mut actor: A,
    mut inbox: Inbox<A>,
    mut ctx: Context<A>,
    factory: Option<Factory<A>>,
    supervision: Supervision,
) -> impl Future<Output = ()> + Send {
    // Made here and moved in, so the future holds it once rather than also its parts.
    let mut supervisor = Supervisor {
        policy: supervision,
        factory,
    };
    async move {
        let end = loop {
            let msg = match ctx.next_ready() {
                Some(msg) => {
                    // Released from a sequence: handled before anything newer.
                    inbox.core.take_ready();
                    msg
                }
                None => match inbox.recv().await {
                    Some(msg) => msg,
                    None => break End::Stopped,
                },
            };
            if ctx.shared.is_abandoned() {
                Box::pin(reject(&mut ctx, msg, Reason::Shutdown)).await;
                inbox.core.finish();
                break End::Abandoned;
            }
            let (name, meta, attempt) = A::__describe(&msg);
            if meta.expires_at.is_some() && meta.is_expired_at(crate::Timestamp::now()) {
                tracing::warn!(actor = A::NAME, message_name = name, id = %meta.id, "expired before it was handled; dead-lettered");
                Box::pin(reject(&mut ctx, msg, Reason::Expired)).await;
                inbox.core.finish();
                continue;
            }
            // `info_span!` on its own still records the fields for the `log` crate when no
            // subscriber listens (tracing's `log` feature, which dependencies turn on), and even
            // a disabled span costs its drop; checking the level first makes an unobserved
            // message cost one load.
            // Boxed: a pointer in the actor's future instead of a whole `Span` (which only
            // exists when a subscriber listens, and then allocates anyway).
            // Its parent is the span of the handler that sent the message, when known
            // (`observe`): one request's flow reads as one trace.
            let span = tracing::level_enabled!(tracing::Level::INFO).then(|| {
                let sender = crate::observe::sender_span(meta.id);
                Box::new(tracing::info_span!(
                    parent: sender.as_ref().and_then(tracing::Span::id),
                    "handle",
                    actor = A::NAME,
                    message_name = name,
                    id = %meta.id,
                    correlation_id = %meta.correlation_id,
                    causation_id = meta.causation_id.map(tracing::field::display),
                    attempt,
                ))
            });
            // 0 when latency is not measured: a plain `u64` is 8 bytes less in every
            // actor's task than an `Option` held across the handler's await.
            let started = if ctx.shared.config.handler_latency {
                crate::clock::now_nanos().max(1)
            } else {
                0
            };
            let handling = Guard {
                fut: actor.__handle(msg, &mut ctx),
                core: &inbox.core,
                span: span.as_deref(),
            };
            let outcome = match handling.await {
                Ran::Done(outcome) => outcome,
                Ran::Aborted => {
                    tracing::error!(actor = A::NAME, message_name = ctx.message, id = %ctx.meta.id, "handler still running after the shutdown deadline; dropped");
                    Box::pin(ctx.abandon_current()).await;
                    inbox.core.finish();
                    break End::Abandoned;
                }
                Ran::Panicked(payload) => Err(HandlerError::panic(format!(
                    "handler panicked: {}",
                    panic_text(&*payload)
                ))),
            };
            if started != 0 {
                let took = crate::clock::now_nanos().saturating_sub(started);
                inbox.core.counters().latency().record(took);
            }
            if outcome.is_err() {
                inbox.core.counters().failed.fetch_add(1, Ordering::Relaxed);
            }
            let stop = match &outcome {
                Err(error) if error.panicked() => {
                    supervisor.on_panic(&mut actor, &mut ctx, error.message())
                }
                _ => false,
            };
            let panic_text = match (&outcome, stop) {
                (Err(error), true) => Some(error.message().to_owned()),
                _ => None,
            };
            let succeeded = outcome.is_ok();
            if outcome.is_err() || ctx.needs_settling() {
                Box::pin(ctx.settle(outcome)).await;
            } else {
                ctx.settled();
            }
            let completes_later = std::mem::take(&mut ctx.completes_later);
            if std::mem::take(&mut ctx.just_parked) {
                inbox.core.park_done();
            } else {
                if succeeded && !completes_later {
                    // A failure is done when it is dead-lettered, not while a retry is to come.
                    ctx.shared.routes.completions.done(ctx.meta.id);
                }
                inbox.core.finish();
            }
            if let Some(error) = panic_text {
                let panics = ctx.rare().panics.len() as u32;
                Box::pin(escalate(&mut ctx, error, panics)).await;
                break End::Failed;
            }
        };
        let reason = match end {
            End::Stopped | End::Abandoned => Reason::Shutdown,
            End::Failed => Reason::Stopped,
        };
        for msg in ctx.take_parked() {
            Box::pin(reject(&mut ctx, msg, reason)).await;
            inbox.core.finish();
        }
        for msg in ctx.take_ready() {
            inbox.core.take_ready();
            Box::pin(reject(&mut ctx, msg, reason)).await;
            inbox.core.finish();
        }
        for msg in inbox.close() {
            Box::pin(reject(&mut ctx, msg, reason)).await;
            inbox.core.finish();
        }
        inbox.core.mark_stopped();
    }
}

/// Takes a message out unhandled: its sender (if waiting) gets the error, the message goes
/// to the dead letters.
async fn reject<A: Actor>(ctx: &mut Context<A>, msg: A::Mailbox, reason: Reason) {
    let error = match reason {
        Reason::Expired => Error::Expired {
            actor: A::NAME,
            message: A::__describe(&msg).0,
        },
        Reason::Shutdown => Error::ShuttingDown {
            message: A::__describe(&msg).0,
        },
        _ => Error::Stopped {
            actor: A::NAME,
            message: A::__describe(&msg).0,
        },
    };
    let text = error.to_string();
    let (message, meta, payload) = A::__reject(msg, error);
    ctx.me
        .counters()
        .dead_lettered
        .fetch_add(1, Ordering::Relaxed);
    ctx.shared
        .dead_letter(NewDeadLetter {
            actor: A::NAME,
            message,
            meta,
            reason,
            error: text,
            first_failure: None,
            target: payload.as_ref().map(|_| ctx.me.clone()),
            payload,
            stored: false,
        })
        .await;
}

/// Stops the actor for good: no more room is handed out, and everyone hears of it.
async fn escalate<A: Actor>(ctx: &mut Context<A>, error: String, panics: u32) {
    ctx.me.room.close();
    tracing::error!(actor = A::NAME, panics, "supervision stopped the actor");
    let event = ActorFailed {
        actor: A::NAME,
        error,
        panics,
    };
    if let Err(e) = ctx.shared.publish_from_runtime(event, &ctx.me).await {
        tracing::error!(actor = A::NAME, "could not publish ActorFailed: {e}");
    }
}
