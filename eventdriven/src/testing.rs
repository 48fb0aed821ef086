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
