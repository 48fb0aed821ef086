//! Event-sourced aggregates: state rebuilt from its events, commands checked against it.
//!
//! An aggregate is a type with [`Default`] state that
//! - [`handle`](Aggregate::handle)s a command against its current state and returns the
//!   events it decides on (or refuses with its error), and
//! - [`apply`](Aggregate::apply)s an event to its state (never fails: the event happened).
//!
//! Its events are an enum with one variant per event type, `#[derive(Events)]`: the derive
//! writes the encoding of each variant under its event's stable name and schema version, the
//! decoding back by name, the `From` conversions, and the publishing of each variant's event on
//! the bus, so no dispatch is written by hand.
//!
//! A [`Repository`] loads an aggregate (its latest snapshot plus newer events, upcast to the
//! current schema), lets it handle a command, appends the events with the version it loaded
//! as the expected version, retries on a concurrency conflict, snapshots every N events, and
//! publishes what it appended after the commit.
//!
//! ```
//! use eventdriven::aggregate::Repository;
//! use eventdriven::prelude::*;
//! use eventdriven::store::Store;
//!
//! #[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
//! #[event(name = "counter.incremented")]
//! struct Incremented { by: u32 }
//!
//! #[derive(Events, Clone, Debug, PartialEq)]
//! enum CounterEvent { Incremented(Incremented) }
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter { total: u32 }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("a counter only goes up")]
//! struct Refused;
//!
//! impl Aggregate for Counter {
//!     const TYPE: &'static str = "counter";
//!     type Command = u32;
//!     type Event = CounterEvent;
//!     type Error = Refused;
//!
//!     fn handle(&self, by: u32) -> Result<Vec<CounterEvent>, Refused> {
//!         if by == 0 { return Err(Refused); }
//!         Ok(vec![Incremented { by }.into()])
//!     }
//!
//!     fn apply(&mut self, event: &CounterEvent) {
//!         match event { CounterEvent::Incremented(e) => self.total += e.by }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let repo = Repository::<Counter>::new(Store::memory()).snapshot_every(100);
//! repo.execute("c1", 2).await?;
//! repo.execute("c1", 3).await?;
//! let loaded = repo.load("c1").await?;
//! assert_eq!((loaded.state.total, loaded.version), (5, 2));
//! # Ok(())
//! # }
//! ```

mod repository;
mod upcast;

use std::future::Future;

pub use repository::{Committed, Loaded, Repository, RepositoryError};
pub use upcast::Upcasters;

/// `#[derive(Events)]`: importing `Events` from here brings the trait and its derive, as with
/// serde's `Serialize`.
pub use eventdriven_macros::Events;

use crate::message::Metadata;
use crate::store::{EventData, StoreResult, StoredEvent};
use crate::App;

/// An event-sourced aggregate. See the [module docs](self).
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate type's name: its streams are named `"{TYPE}-{id}"`.
    const TYPE: &'static str;
    /// The schema version of the state as snapshots store it. Raise it when the state's
    /// shape changes: older snapshots are then ignored and the state is replayed from events.
    const SNAPSHOT_VERSION: u32 = 1;

    /// What the aggregate is asked to do (often an enum of command structs).
    type Command: Send + 'static;
    /// What it records: an enum with `#[derive(Events)]`.
    type Event: Events;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides on `command` against the current state: the events to record, or a refusal.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);
}

/// The events of one aggregate: an enum whose variants each hold one event type, with
/// `#[derive(Events)]`. The methods are what the repository needs to store, load and publish
/// them; they are generated, not written.
pub trait Events: Clone + Sized + Send + Sync + 'static {
    /// The stable name of the variant's event (`Message::NAME`).
    fn name(&self) -> &'static str;

    /// The schema version of the variant's event (`Message::VERSION`).
    fn schema_version(&self) -> u32;

    /// Encodes the variant's event with `metadata`.
    fn encode(&self, metadata: Metadata) -> StoreResult<EventData>;

    /// Decodes a stored event (already upcast) into the variant of its name.
    fn decode(event: &StoredEvent) -> StoreResult<Self>;

    /// Publishes the variant's event on the bus with `metadata`.
    fn publish(
        self,
        app: &App,
        metadata: Metadata,
    ) -> impl Future<Output = crate::Result<()>> + Send;

    /// Publishes the variant's event from inside a handler of actor `A`, with `metadata`.
    fn publish_in<A: crate::Actor>(
        self,
        ctx: &mut crate::Context<A>,
        metadata: Metadata,
    ) -> impl Future<Output = crate::Result<()>> + Send;
}

/// The header, on every event a repository appends (and publishes), that names its stream.
pub const STREAM_HEADER: &str = "stream";

/// The header, on every event a repository appends (and publishes), that holds its version in
/// the stream.
pub const VERSION_HEADER: &str = "stream-version";

/// The stream of aggregate `A`'s instance `id`: `"{TYPE}-{id}"`.
pub fn stream_name<A: Aggregate>(id: &str) -> String {
    format!("{}-{id}", A::TYPE)
}
