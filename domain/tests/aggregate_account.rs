//! Given/when/then tests of a small account aggregate through the `testing` fixture.
#![cfg(feature = "testing")]

use flext_domain::testing::AggregateFixture;
use flext_domain::{
    Aggregate, AggregateRoot, DomainEvent, Error, ErrorCode, Id, StreamVersion, Validation,
};

#[derive(Debug, Default)]
struct Account {
    open: bool,
    balance: i64,
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Opened,
    Deposited(i64),
    Withdrawn(i64),
}

impl DomainEvent for Event {
    fn event_type(&self) -> &'static str {
        match self {
            Event::Opened => "account.opened",
            Event::Deposited(_) => "account.deposited",
            Event::Withdrawn(_) => "account.withdrawn",
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Event = Event;
    fn apply(&mut self, event: &Event) {
        match event {
            Event::Opened => self.open = true,
            Event::Deposited(n) => self.balance += n,
            Event::Withdrawn(n) => self.balance -= n,
        }
    }
}

impl Account {
    fn withdraw(&self, amount: i64) -> Result<Vec<Event>, Error> {
        let mut v = Validation::new();
        v.ensure(amount > 0, "amount", "NOT_POSITIVE", "must be > 0");
        v.ensure_code(
            self.open,
            "account",
            ErrorCode::FailedPrecondition,
            "NOT_OPEN",
            "not open",
        );
        v.finish()?;
        if amount > self.balance {
            return Err(Error::failed_precondition(
                "INSUFFICIENT_FUNDS",
                "balance too low",
            ));
        }
        Ok(vec![Event::Withdrawn(amount)])
    }
}

#[test]
fn withdraw_within_balance_records_the_withdrawal() {
    let state = AggregateFixture::<Account>::given([Event::Opened, Event::Deposited(100)])
        .when(|a| a.withdraw(40))
        .then_expect_events([Event::Withdrawn(40)]);
    assert_eq!(state.balance, 60);
}

#[test]
fn overdraft_is_refused_with_its_reason() {
    AggregateFixture::<Account>::given([Event::Opened, Event::Deposited(10)])
        .when(|a| a.withdraw(11))
        .then_expect_error_reason(ErrorCode::FailedPrecondition, "INSUFFICIENT_FUNDS");
}

#[test]
fn every_violation_is_reported_with_its_code() {
    let err = AggregateFixture::<Account>::given_no_events()
        .when(|a| a.withdraw(-5))
        .then_expect_error(ErrorCode::InvalidArgument);
    let got: Vec<_> = err
        .field_violations()
        .iter()
        .map(|v| (v.field.as_str(), v.code, v.reason.as_ref()))
        .collect();
    assert_eq!(
        got,
        [
            ("amount", ErrorCode::InvalidArgument, "NOT_POSITIVE"),
            ("account", ErrorCode::FailedPrecondition, "NOT_OPEN"),
        ]
    );
}

#[test]
fn fixture_fails_loudly_when_the_events_differ() {
    let result = std::panic::catch_unwind(|| {
        AggregateFixture::<Account>::given([Event::Opened, Event::Deposited(100)])
            .when(|a| a.withdraw(40))
            .then_expect_events([Event::Withdrawn(41)]);
    });
    let panic = result.unwrap_err();
    let msg = panic.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("Withdrawn(41)") && msg.contains("Withdrawn(40)"),
        "{msg}"
    );
}

#[test]
fn loading_refuses_an_event_out_of_sequence() {
    let mut root = AggregateRoot::<Account>::new(Id::new());
    root.apply_at(StreamVersion(1), &Event::Opened).unwrap();
    let err = root
        .apply_at(StreamVersion(3), &Event::Deposited(1))
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DataLoss);
    assert_eq!(err.reason(), "VERSION_OUT_OF_SEQUENCE");
    assert_eq!(
        root.version(),
        StreamVersion(1),
        "nothing applied past the gap"
    );
}

#[test]
fn uncommitted_events_and_versions() {
    let mut root =
        AggregateRoot::<Account>::from_history(Id::new(), &[Event::Opened, Event::Deposited(5)]);
    assert_eq!(root.version(), StreamVersion(2));
    root.execute(|a| a.withdraw(5)).unwrap();
    assert_eq!(root.version(), StreamVersion(3));
    assert_eq!(root.committed_version(), StreamVersion(2));
    assert_eq!(root.take_uncommitted(), vec![Event::Withdrawn(5)]);
    assert_eq!(root.committed_version(), StreamVersion(3));
    assert!(root.stream_id().as_str().starts_with("account-"));
}
