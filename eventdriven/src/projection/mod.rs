//! Read models kept from the event store, and the relay that delivers stored events to the bus.
//!
//! - A [`Projection`] folds stored events into a read model. A [`Projector`] runs it on a task
//!   of its own: it catches up from the projection's checkpoint, then follows new events as
//!   they are appended, one cursor for both, so the switch from catching up to live neither
//!   skips nor repeats an event. Each batch of events is applied inside one [`StoreTx`] that
//!   also moves the checkpoint: a projection that writes its rows through that transaction
//!   (`ctx.tx()`) has **exactly-once** effects; one that writes anywhere else is
//!   **at-least-once** (after a crash, the events since the last checkpoint are applied again).
//!   [`ProjectionHandle::rebuild`] resets the read model and replays from position 0 while the
//!   app runs; [`ProjectionHandle::status`] reports progress.
//! - A [`Relay`] is the event store used as the outbox: it tails the store by global position
//!   and publishes every stored event whose type the app subscribes to on the bus, with the
//!   metadata it was stored with (so idempotent subscribers recognise a redelivery), and moves
//!   its own checkpoint past an event only once every subscriber is done with it (handled, or
//!   dead-lettered): a crash while an event waits in a mailbox or runs in a handler delivers it
//!   again after the restart, at least once (`tests/tests/crash.rs` kills the process 20 times
//!   with SIGKILL and finds every event delivered). An event appended in a transaction (an
//!   aggregate's, or one a handler appended in its own `StoreTx` as its outbox) is relayed only
//!   once that transaction committed.
//!
//! [`StoreTx`]: crate::store::StoreTx

mod relay;
mod runner;

pub use relay::{Relay, RelayHandle};
pub use runner::{
    Projection, ProjectionContext, ProjectionError, ProjectionHandle, ProjectionState,
    ProjectionStatus, Projector,
};
