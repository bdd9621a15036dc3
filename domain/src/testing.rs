//! Given/when/then fixture for aggregates (feature `testing`).

use std::fmt::Debug;

use crate::aggregate::{Aggregate, AggregateRoot};
use crate::error::{Error, ErrorCode};
use crate::id::Id;

/// Tests an aggregate's decisions: given past events, when a decision runs, then expect
/// the events it records or an error with a given code.
///
/// The assertions panic with a message showing expected and actual values, like
/// `assert_eq!`, at the caller's line.
///
/// ```
/// use flext::testing::AggregateFixture;
/// use flext::{Aggregate, DomainEvent, Error, ErrorCode};
///
/// #[derive(Default)]
/// struct Light { on: bool }
/// #[derive(Debug, PartialEq)]
/// enum Switched { On, Off }
/// impl DomainEvent for Switched {
///     fn event_type(&self) -> &'static str { "light.switched" }
/// }
/// impl Aggregate for Light {
///     const TYPE: &'static str = "light";
///     type Event = Switched;
///     fn apply(&mut self, e: &Switched) { self.on = *e == Switched::On; }
/// }
/// impl Light {
///     fn switch_on(&self) -> Result<Vec<Switched>, Error> {
///         if self.on { return Err(Error::failed_precondition("ALREADY_ON", "light is on")); }
///         Ok(vec![Switched::On])
///     }
/// }
///
/// AggregateFixture::<Light>::given_no_events()
///     .when(Light::switch_on)
///     .then_expect_events([Switched::On]);
/// AggregateFixture::<Light>::given([Switched::On])
///     .when(Light::switch_on)
///     .then_expect_error_reason(ErrorCode::FailedPrecondition, "ALREADY_ON");
/// ```
pub struct AggregateFixture<A: Aggregate> {
    root: AggregateRoot<A>,
}

impl<A: Aggregate> AggregateFixture<A> {
    /// An aggregate that has had these events, in order.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut root = AggregateRoot::new(Id::new());
        for event in events {
            root.apply(&event);
        }
        AggregateFixture { root }
    }

    /// A new aggregate with no events.
    pub fn given_no_events() -> Self {
        AggregateFixture::given([])
    }

    /// Runs a decision against the given state.
    pub fn when<F>(mut self, decide: F) -> Outcome<A>
    where
        F: FnOnce(&A) -> Result<Vec<A::Event>, Error>,
    {
        let result = self.root.execute(decide).map(|_| ());
        Outcome {
            root: self.root,
            result,
        }
    }
}

/// What a decision did, to assert on.
pub struct Outcome<A: Aggregate> {
    root: AggregateRoot<A>,
    result: Result<(), Error>,
}

impl<A: Aggregate> Outcome<A>
where
    A::Event: Debug + PartialEq,
{
    /// Asserts that the decision succeeded and recorded exactly these events, in order.
    /// Returns the state after them, for further checks.
    #[track_caller]
    pub fn then_expect_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(()) => assert_eq!(
                self.root.uncommitted(),
                expected.as_slice(),
                "the decision recorded other events than expected"
            ),
            Err(e) => panic!("expected events {expected:?}, the decision failed: {e}"),
        }
        self.root.into_state()
    }

    /// Asserts that the decision failed with `code`, and returns the error for further
    /// checks. Nothing may have been recorded.
    #[track_caller]
    pub fn then_expect_error(self, code: ErrorCode) -> Error {
        match self.result {
            Ok(()) => panic!(
                "expected an error with code {code}, the decision recorded {:?}",
                self.root.uncommitted()
            ),
            Err(e) => {
                assert_eq!(e.code(), code, "the decision failed with another code: {e}");
                assert!(
                    self.root.uncommitted().is_empty(),
                    "a failed decision recorded events"
                );
                e
            }
        }
    }

    /// Asserts that the decision failed with `code` and `reason`.
    #[track_caller]
    pub fn then_expect_error_reason(self, code: ErrorCode, reason: &str) -> Error {
        let e = self.then_expect_error(code);
        assert_eq!(
            e.reason(),
            reason,
            "the decision failed with another reason: {e}"
        );
        e
    }
}
