//! Test fixtures: an aggregate's behaviour as given events, a command, expected outcome.
//!
//! ```
//! # use eventdriven::aggregate::Aggregate;
//! # use eventdriven::prelude::*;
//! use eventdriven::testing::AggregateFixture;
//! # #[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
//! # struct Opened { owner: String }
//! # #[derive(Event, Clone, Debug, PartialEq, Serialize, Deserialize)]
//! # struct Closed;
//! # #[derive(Events, Clone, Debug, PartialEq)]
//! # enum AccountEvent { Opened(Opened), Closed(Closed) }
//! # #[derive(Default)]
//! # struct Account { open: bool }
//! # #[derive(Debug, PartialEq, thiserror::Error)]
//! # #[error("the account is not open")]
//! # struct NotOpen;
//! # #[derive(Clone)]
//! # enum AccountCommand { Close }
//! # impl Aggregate for Account {
//! #     const TYPE: &'static str = "account";
//! #     type Command = AccountCommand;
//! #     type Event = AccountEvent;
//! #     type Error = NotOpen;
//! #     fn handle(&self, _: AccountCommand) -> Result<Vec<AccountEvent>, NotOpen> {
//! #         if self.open { Ok(vec![Closed.into()]) } else { Err(NotOpen) }
//! #     }
//! #     fn apply(&mut self, e: &AccountEvent) { self.open = matches!(e, AccountEvent::Opened(_)); }
//! # }
//!
//! AggregateFixture::<Account>::given([Opened { owner: "ada".into() }.into()])
//!     .when(AccountCommand::Close)
//!     .then_expect_events([Closed.into()]);
//!
//! AggregateFixture::<Account>::given_no_previous_events()
//!     .when(AccountCommand::Close)
//!     .then_expect_error(NotOpen);
//! ```

use std::fmt::Debug;

use crate::aggregate::{Aggregate, Events};
use crate::message::Metadata;
use crate::saga::{ProcessContext, ProcessManager, RecordedCommand, Transition};
use crate::store::StoredEvent;

/// Given past events, when a command, then expected events or error. Events given and
/// produced are also run through their storage encoding and back, so a type that would not
/// survive the store fails here.
pub struct AggregateFixture<A: Aggregate> {
    state: A,
    version: u64,
}

/// The outcome of [`AggregateFixture::when`], to check with the `then_*` methods.
#[must_use = "check the outcome with a `then_*` method"]
pub struct FixtureOutcome<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateFixture<A> {
    /// An aggregate that has recorded `events`.
    #[track_caller]
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut fixture = Self {
            state: A::default(),
            version: 0,
        };
        for event in events {
            let event = fixture.round_trip(&event);
            fixture.state.apply(&event);
        }
        fixture
    }

    /// A new aggregate: no events yet.
    pub fn given_no_previous_events() -> Self {
        Self::given([])
    }

    /// The aggregate's state after the given events.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Runs `command`.
    #[track_caller]
    pub fn when(mut self, command: A::Command) -> FixtureOutcome<A> {
        let result = self.state.handle(command).map(|events| {
            events
                .iter()
                .map(|event| self.round_trip(event))
                .collect::<Vec<_>>()
        });
        if let Ok(events) = &result {
            for event in events {
                self.state.apply(event);
            }
        }
        FixtureOutcome {
            state: self.state,
            result,
        }
    }

    /// Encodes `event` as the store would and decodes it back.
    #[track_caller]
    fn round_trip(&mut self, event: &A::Event) -> A::Event {
        let name = event.name();
        let data = event
            .encode(Metadata::new())
            .unwrap_or_else(|e| panic!("event `{name}` does not encode: {e}"));
        self.version += 1;
        let stored = StoredEvent {
            position: self.version,
            stream: "fixture".to_owned(),
            version: self.version,
            name: data.name,
            schema_version: data.schema_version,
            payload: data.payload,
            metadata: data.metadata,
        };
        A::Event::decode(&stored)
            .unwrap_or_else(|e| panic!("event `{name}` does not decode from what it encodes: {e}"))
    }
}

impl<A: Aggregate> FixtureOutcome<A> {
    /// Asserts the command produced exactly `expected`, in order. Returns the state after
    /// applying them, for further checks.
    #[track_caller]
    pub fn then_expect_events(self, expected: impl IntoIterator<Item = A::Event>) -> A
    where
        A::Event: PartialEq + Debug,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(
                events, expected,
                "the command produced other events than expected (left: produced, right: expected)"
            ),
            Err(error) => {
                panic!("expected events {expected:?}, but the command was refused: {error}")
            }
        }
        self.state
    }

    /// Asserts the command was accepted without recording anything.
    #[track_caller]
    pub fn then_expect_no_events(self) -> A
    where
        A::Event: PartialEq + Debug,
    {
        self.then_expect_events([])
    }

    /// Asserts the command was refused with `expected`.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error)
    where
        A::Error: PartialEq + Debug,
        A::Event: Debug,
    {
        match self.result {
            Err(error) => assert_eq!(
                error, expected,
                "the command was refused with another error"
            ),
            Ok(events) => {
                panic!("expected the error {expected:?}, but the command produced {events:?}")
            }
        }
    }

    /// Asserts the command was refused with an error that `check` accepts.
    #[track_caller]
    pub fn then_expect_error_matching(self, check: impl FnOnce(&A::Error) -> bool)
    where
        A::Event: Debug,
    {
        match self.result {
            Err(error) => assert!(
                check(&error),
                "the command was refused with an unexpected error: {error:?}"
            ),
            Ok(events) => panic!("expected an error, but the command produced {events:?}"),
        }
    }

    /// The raw outcome, for checks of your own.
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}

/// Given the events a process manager instance has handled, when one more event (or its
/// timeout), then the commands it sent, its state, and whether it is done — without a bus or
/// a store: commands sent with [`ProcessContext::tell`](crate::saga::ProcessContext::tell) are
/// recorded.
///
/// ```ignore
/// ProcessFixture::<Fulfilment>::given([OrderPlaced { order: 1 }.into()])
///     .when(StockReserved { order: 1 }.into())
///     .then_expect_command(Charge { order: 1 })
///     .then_expect_continue();
/// ```
pub struct ProcessFixture<P: ProcessManager> {
    state: Option<P>,
    id: Option<String>,
    done: bool,
    timeout: Option<crate::Timestamp>,
}

/// The outcome of [`ProcessFixture::when`] or [`ProcessFixture::when_timeout`].
#[must_use = "check the outcome with a `then_*` method"]
pub struct ProcessOutcome<P: ProcessManager> {
    state: Option<P>,
    commands: Vec<RecordedCommand>,
    result: Result<Option<Transition>, String>,
    timeout: Option<crate::Timestamp>,
}

impl<P: ProcessManager> ProcessFixture<P> {
    /// An instance that has handled `events` (their commands are not checked).
    #[track_caller]
    pub fn given(events: impl IntoIterator<Item = P::Event>) -> Self {
        let mut fixture = Self {
            state: None,
            id: None,
            done: false,
            timeout: None,
        };
        for event in events {
            let mut commands = Vec::new();
            if let Err(error) = fixture.run(Some(event), &mut commands) {
                panic!("a given event failed: {error}");
            }
        }
        fixture
    }

    /// No instance yet.
    pub fn given_no_previous_events() -> Self {
        Self::given([])
    }

    /// Handles `event` as the process managers would: passed over unless it correlates to
    /// this instance (or starts one).
    #[track_caller]
    pub fn when(self, event: P::Event) -> ProcessOutcome<P> {
        self.step(Some(event))
    }

    /// Fires the instance's timeout.
    #[track_caller]
    pub fn when_timeout(self) -> ProcessOutcome<P> {
        self.step(None)
    }

    #[track_caller]
    fn step(mut self, event: Option<P::Event>) -> ProcessOutcome<P> {
        let mut commands = Vec::new();
        let result = self.run(event, &mut commands);
        ProcessOutcome {
            state: self.state,
            commands,
            result,
            timeout: self.timeout,
        }
    }

    fn run(
        &mut self,
        event: Option<P::Event>,
        commands: &mut Vec<RecordedCommand>,
    ) -> Result<Option<Transition>, String> {
        let stored = event.as_ref().map(|event| {
            let data = event.encode(Metadata::new()).expect("the event encodes");
            StoredEvent {
                position: 1,
                stream: "fixture".to_owned(),
                version: 1,
                name: data.name,
                schema_version: data.schema_version,
                payload: data.payload,
                metadata: data.metadata,
            }
        });
        let event = match (&stored, event) {
            (Some(stored), Some(_)) => Some(
                P::Event::decode(stored).map_err(|e| format!("the event does not decode: {e}"))?,
            ),
            _ => None,
        };
        if self.done {
            return Ok(None);
        }
        if let Some(event) = &event {
            let Some(id) = P::correlate(event) else {
                return Ok(None);
            };
            match (&self.id, &self.state) {
                (Some(mine), _) if *mine != id => return Ok(None),
                (None, None) if !P::starts(event) => return Ok(None),
                _ => {}
            }
            self.id = Some(id);
        }
        let id = self.id.clone().unwrap_or_default();
        let mut state = self.state.take().unwrap_or_default();
        let mut ctx =
            ProcessContext::recording(P::NAME, &id, stored.as_ref(), self.timeout, commands);
        let transition = match event {
            Some(event) => futures_block_on(state.handle(event, &mut ctx)),
            None => futures_block_on(state.timeout(&mut ctx)),
        }
        .map_err(|e| e.to_string());
        let timeout = ctx.timeout_at();
        // Through storage and back, as the process managers keep it.
        let stored_state =
            serde_json::to_value(&state).map_err(|e| format!("the state does not encode: {e}"))?;
        self.state = Some(
            serde_json::from_value(stored_state)
                .map_err(|e| format!("the state does not decode from what it encodes: {e}"))?,
        );
        let transition = transition?;
        self.timeout = match transition {
            Transition::Continue => timeout,
            Transition::Done => None,
        };
        self.done = transition == Transition::Done;
        Ok(Some(transition))
    }
}

/// Runs a handler's future to completion on the calling thread (fixtures are synchronous).
fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}

impl<P: ProcessManager> ProcessOutcome<P> {
    /// The commands sent, in order.
    pub fn commands(&self) -> &[RecordedCommand] {
        &self.commands
    }

    /// Asserts exactly one command was sent, equal to `expected`.
    #[track_caller]
    pub fn then_expect_command<C>(self, expected: C) -> Self
    where
        C: crate::Command + PartialEq + Debug,
    {
        self.assert_ran();
        match self.commands.as_slice() {
            [only] => match only.command.downcast_ref::<C>() {
                Some(sent) => assert_eq!(sent, &expected, "another command than expected"),
                None => panic!("expected {expected:?}, but the process sent {only:?}"),
            },
            other => panic!("expected one command, {expected:?}; the process sent {other:?}"),
        }
        self
    }

    /// Asserts the names of the commands sent, in order.
    #[track_caller]
    pub fn then_expect_command_names(self, names: &[&str]) -> Self {
        self.assert_ran();
        let sent: Vec<&str> = self.commands.iter().map(|c| c.name).collect();
        assert_eq!(
            sent, names,
            "other commands than expected: {:?}",
            self.commands
        );
        self
    }

    /// Asserts nothing was sent.
    #[track_caller]
    pub fn then_expect_no_commands(self) -> Self {
        self.then_expect_command_names(&[])
    }

    /// Asserts the instance goes on (waits for more events).
    #[track_caller]
    pub fn then_expect_continue(self) -> Self {
        assert_eq!(
            self.assert_ran(),
            Transition::Continue,
            "the instance ended"
        );
        self
    }

    /// Asserts the instance ended.
    #[track_caller]
    pub fn then_expect_done(self) -> Self {
        assert_eq!(self.assert_ran(), Transition::Done, "the instance goes on");
        self
    }

    /// Asserts the event was passed over (not this instance's, or the instance had ended).
    #[track_caller]
    pub fn then_expect_ignored(self) -> Self {
        match &self.result {
            Ok(None) => self,
            Ok(Some(t)) => {
                panic!("expected the event to be passed over, but it was handled: {t:?}")
            }
            Err(e) => panic!("expected the event to be passed over, but the handler failed: {e}"),
        }
    }

    /// Asserts a timeout is set (or not).
    #[track_caller]
    pub fn then_expect_timeout(self, set: bool) -> Self {
        assert_eq!(
            self.timeout.is_some(),
            set,
            "timeout set: {:?}",
            self.timeout
        );
        self
    }

    /// Asserts the handler failed with an error containing `text`.
    #[track_caller]
    pub fn then_expect_error(self, text: &str) {
        match &self.result {
            Err(error) => assert!(error.contains(text), "another error: {error}"),
            Ok(t) => panic!("expected an error containing {text:?}, got {t:?}"),
        }
    }

    /// Checks the state after the event with `check`.
    #[track_caller]
    pub fn then_expect_state(self, check: impl FnOnce(&P)) -> Self {
        check(self.state.as_ref().expect("the instance has a state"));
        self
    }

    #[track_caller]
    fn assert_ran(&self) -> Transition {
        match &self.result {
            Ok(Some(transition)) => *transition,
            Ok(None) => panic!("the event was passed over: not this instance's, or it had ended"),
            Err(error) => panic!("the handler failed: {error}"),
        }
    }
}
