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
//!   metadata it was stored with (so idempotent subscribers recognise a redelivery), then moves
//!   its own checkpoint. An event appended in a transaction (an aggregate's, or one a handler
//!   appended in its own `StoreTx` as its outbox) is relayed only once that transaction
//!   committed; a crash between publishing and checkpointing delivers again: at least once.
//!
//! [`StoreTx`]: crate::store::StoreTx

mod relay;
mod runner;

pub use relay::{Relay, RelayHandle};
pub use runner::{
    Projection, ProjectionContext, ProjectionError, ProjectionHandle, ProjectionState,
    ProjectionStatus, Projector,
};
