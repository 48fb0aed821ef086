//! The actor's task: receive, handle inside a span, survive panics.

use std::any::Any;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use tracing::Instrument;

use super::mailbox::Inbox;
use super::{panic_text, Actor, Context};

/// Makes a fresh actor after a panic.
pub(crate) type Factory<A> = Box<dyn Fn() -> A + Send + Sync>;

/// Polls `fut`, turning a panic inside it into `Err` with the payload.
async fn catch_panic<F: Future>(fut: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut fut = pin!(fut);
    poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await
}

/// Runs an actor until its mailbox delivers `Stop`.
///
/// A panicking handler is caught: the message is dead-lettered (an event with its payload, a
/// command or query by name and metadata, its sender getting [`Error::NoReply`]), and the
/// actor is rebuilt from its factory, keeping its mailbox, so it goes on receiving. Without a
/// factory (an actor that is not `Default`, added with `actor`), it resumes with its state as
/// the handler left it.
///
/// [`Error::NoReply`]: crate::Error::NoReply
pub(crate) async fn run<A: Actor>(
    mut actor: A,
    mut inbox: Inbox<A>,
    mut ctx: Context<A>,
    factory: Option<Factory<A>>,
) {
    while let Some(msg) = inbox.recv().await {
        let (name, meta) = A::__describe(&msg);
        let span = tracing::info_span!(
            "handle",
            actor = A::NAME,
            message_name = name,
            id = %meta.id,
            correlation_id = %meta.correlation_id,
        );
        let outcome = catch_panic(actor.__handle(msg, &mut ctx))
            .instrument(span)
            .await;
        if let Err(payload) = outcome {
            let error = format!("handler panicked: {}", panic_text(&*payload));
            inbox.core.panics.fetch_add(1, Ordering::Relaxed);
            let restarted = match &factory {
                Some(make) => {
                    actor = make();
                    true
                }
                None => false,
            };
            tracing::error!(
                actor = A::NAME,
                message_name = ctx.message,
                id = %ctx.meta.id,
                correlation_id = %ctx.meta.correlation_id,
                restarted,
                "{error}"
            );
            let event = ctx.event.take();
            ctx.shared
                .dead_letters
                .push(A::NAME, ctx.message, &ctx.meta, error, event);
        }
        inbox.core.mark_done();
    }
    for msg in inbox.close() {
        let (name, meta) = A::__describe(&msg);
        let meta = meta.clone();
        tracing::error!(actor = A::NAME, message_name = name, id = %meta.id, "actor stopped before handling the message; dead-lettered");
        ctx.shared.dead_letters.push(
            A::NAME,
            name,
            &meta,
            "actor stopped before handling it".to_owned(),
            None,
        );
    }
}
