//! The domain types' small promises, each pinned so that breaking it fails a test: found by
//! `scripts/mutants` (cargo-mutants), which changed each of these and saw the suite pass.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use flext_domain::{
    Aggregate, AggregateRoot, CausationId, CorrelationId, DomainEvent, Entity, Error, ErrorCode,
    EventMetadata, ExpectedVersion, FieldViolation, Id, Position, ResultExt, StreamId,
    StreamVersion, Validation,
};

#[derive(Debug, Default)]
struct Counter {
    n: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Added(u64);

impl DomainEvent for Added {
    fn event_type(&self) -> &'static str {
        "counter.added"
    }
}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Event = Added;
    fn apply(&mut self, Added(k): &Added) {
        self.n += k;
    }
}

impl Counter {
    fn add(&self, k: u64) -> Result<Vec<Added>, Error> {
        if k == 0 {
            return Err(Error::invalid_argument("ZERO", "add something"));
        }
        Ok(vec![Added(k)])
    }
}

#[test]
fn ids_are_equal_ordered_and_hashed_by_their_uuid() {
    let (a, b) = (Id::<Counter>::new(), Id::<Counter>::new());
    assert_ne!(a, b);
    assert_eq!(a, Id::from_uuid(uuid::Uuid::from(a)));
    assert_eq!(uuid::Uuid::from(a).to_string(), a.to_string());
    assert_eq!(a.partial_cmp(&b), Some(uuid::Uuid::from(a).cmp(&b.into())));
    let hasher = RandomState::new();
    assert_eq!(
        hasher.hash_one(a),
        hasher.hash_one(Id::<Counter>::from_uuid(a.into()))
    );
    assert_ne!(hasher.hash_one(a), hasher.hash_one(b), "the uuid goes in");
    let set: HashSet<Id<Counter>> = [a, b, a].into_iter().collect();
    assert_eq!(set.len(), 2);
    assert_eq!(format!("{a:?}"), format!("Id({a})"));
}

struct Customer {
    id: u32,
}

impl Entity for Customer {
    type Id = u32;
    fn id(&self) -> &u32 {
        &self.id
    }
}

#[test]
fn entities_are_the_same_only_with_the_same_id() {
    assert!(Customer { id: 1 }.same_identity(&Customer { id: 1 }));
    assert!(!Customer { id: 1 }.same_identity(&Customer { id: 2 }));
}

#[test]
fn error_codes_map_to_their_http_status() {
    let expected = [
        (ErrorCode::Cancelled, 499),
        (ErrorCode::Unknown, 500),
        (ErrorCode::InvalidArgument, 400),
        (ErrorCode::DeadlineExceeded, 504),
        (ErrorCode::NotFound, 404),
        (ErrorCode::AlreadyExists, 409),
        (ErrorCode::PermissionDenied, 403),
        (ErrorCode::ResourceExhausted, 429),
        (ErrorCode::FailedPrecondition, 400),
        (ErrorCode::Aborted, 409),
        (ErrorCode::OutOfRange, 400),
        (ErrorCode::Unimplemented, 501),
        (ErrorCode::Internal, 500),
        (ErrorCode::Unavailable, 503),
        (ErrorCode::DataLoss, 500),
        (ErrorCode::Unauthenticated, 401),
    ];
    for (code, status) in expected {
        assert_eq!(code.http_status(), status, "{code}");
        assert_eq!(code.to_string(), code.as_str());
    }
}

#[test]
fn an_error_is_its_code_and_shows_everything_it_holds() {
    let e = Error::not_found("NO_ACCOUNT", "no such account");
    assert!(e.is(ErrorCode::NotFound));
    assert!(!e.is(ErrorCode::Internal));
    assert_eq!(e.to_string(), "NOT_FOUND [NO_ACCOUNT]: no such account");
    assert!(e.details().is_empty());

    let full = Error::invalid_argument("BAD", "bad input")
        .with_field_violations([
            FieldViolation::new("a", ErrorCode::InvalidArgument, "REQUIRED", "is needed"),
            FieldViolation::new("b", ErrorCode::OutOfRange, "TOO_BIG", "is too big"),
        ])
        .with_detail("limit", 3)
        .with_detail("unit", "eur");
    assert_eq!(
        full.to_string(),
        "INVALID_ARGUMENT [BAD]: bad input (a: REQUIRED is needed; b: TOO_BIG is too big) \
         {limit=3, unit=\"eur\"}"
    );
    assert_eq!(full.details().len(), 2);
    assert_eq!(full.details()["limit"], 3);
    let debug = format!("{full:?}");
    for part in ["Error", "BAD", "field_violations", "details", "TOO_BIG"] {
        assert!(debug.contains(part), "{part} in {debug}");
    }
    assert!(!format!("{e:?}").contains("field_violations"));
    assert!(!format!("{e:?}").contains("details"));
}

#[test]
fn an_errors_causes_form_a_chain() {
    let inner = Error::unavailable("DOWN", "the disk is gone");
    let outer = Error::internal("STORE", "cannot write").with_source(inner);
    let first = std::error::Error::source(&outer).expect("a cause");
    assert!(first.to_string().contains("the disk is gone"), "{first}");
    assert_eq!(outer.causes().len(), 1);
    let deep = Error::internal("TOP", "top")
        .with_source(Error::internal("MID", "mid").with_source(std::io::Error::other("bottom")));
    assert_eq!(deep.causes().len(), 2, "{:?}", deep.causes());
    assert!(deep.causes()[1].contains("bottom"), "{:?}", deep.causes());
    // And walked by hand, as any error reporter does.
    let mid = std::error::Error::source(&deep).expect("the middle cause");
    let bottom = mid.source().expect("the cause of the cause");
    assert!(bottom.to_string().contains("bottom"), "{bottom}");
    let alternate = format!("{outer:#}");
    assert!(alternate.contains("cannot write: "), "{alternate}");
    assert!(alternate.contains("the disk is gone"), "{alternate}");
}

#[test]
fn a_loader_refuses_events_out_of_sequence() {
    let id = Id::<Counter>::new();
    let mut root = AggregateRoot::new(id);
    assert_eq!(root.id(), id);
    root.apply_at(StreamVersion(1), &Added(2)).expect("first");
    let gap = root
        .apply_at(StreamVersion(3), &Added(5))
        .expect_err("a gap");
    assert_eq!(gap.reason(), "VERSION_OUT_OF_SEQUENCE");
    assert_eq!(gap.code(), ErrorCode::DataLoss);
    root.apply_at(StreamVersion(2), &Added(3)).expect("second");
    assert_eq!(root.version(), StreamVersion(2));
    assert_eq!(root.into_state().n, 5);
}

#[test]
fn an_event_type_has_no_schema_version_of_its_own_by_default() {
    assert_eq!(Added::current_schema_version("counter.added"), None);
}

#[test]
fn metadata_keeps_its_causes_and_headers() {
    let correlation = CorrelationId::new();
    let causation = CausationId::new();
    let m = EventMetadata::caused_by(correlation, causation).with_header("traceparent", "00-x");
    assert_eq!(m.correlation_id, Some(correlation));
    assert_eq!(m.causation_id, Some(causation));
    assert_eq!(m.headers["traceparent"], "00-x");
}

#[test]
fn numbers_and_names_show_themselves() {
    assert_eq!(StreamVersion(7).get(), 7);
    assert_eq!(StreamVersion(7).to_string(), "7");
    assert_eq!(Position(9).get(), 9);
    assert_eq!(Position(9).to_string(), "9");
    assert_eq!(ExpectedVersion::Any.to_string(), "any");
    assert_eq!(ExpectedVersion::NoStream.to_string(), "no stream");
    assert_eq!(ExpectedVersion::StreamExists.to_string(), "stream exists");
    let s = StreamId::new("order-1").expect("valid");
    assert_eq!(s.to_string(), "order-1");
    assert_eq!(format!("{s:?}"), "StreamId(\"order-1\")");
    assert_eq!(AsRef::<str>::as_ref(&s), "order-1");
    assert_eq!(std::borrow::Borrow::<str>::borrow(&s), "order-1");
}

#[test]
fn ensure_refuses_only_what_fails_its_predicate() {
    let ok: Result<u32, Error> = Ok(3);
    assert_eq!(
        ok.ensure(|v| *v > 2, |_| Error::internal("X", "x")).ok(),
        Some(3)
    );
    let low: Result<u32, Error> = Ok(1);
    assert!(
        low.ensure(|v| *v > 2, |_| Error::internal("X", "x"))
            .is_err()
    );
}

#[test]
fn validation_is_valid_until_something_is_pushed() {
    let mut v = Validation::new();
    assert!(v.is_valid());
    v.push(FieldViolation::new(
        "a",
        ErrorCode::InvalidArgument,
        "REQUIRED",
        "is needed",
    ))
    .push(FieldViolation::new(
        "b",
        ErrorCode::InvalidArgument,
        "REQUIRED",
        "is needed",
    ));
    assert!(!v.is_valid());
    let e = v.finish().expect_err("two violations");
    assert_eq!(e.field_violations().len(), 2);
}

#[cfg(feature = "testing")]
#[test]
fn the_fixture_decides_on_the_given_state() {
    use flext_domain::testing::AggregateFixture;

    let state = AggregateFixture::<Counter>::given([Added(2), Added(3)])
        .when(|c| c.add(4))
        .then_expect_events([Added(4)]);
    assert_eq!(state.n, 9, "given 2 and 3, then 4 was recorded");
    let state = AggregateFixture::<Counter>::given_no_events()
        .when(|c| c.add(1))
        .then_expect_events([Added(1)]);
    assert_eq!(state.n, 1);
    let e = AggregateFixture::<Counter>::given_no_events()
        .when(|c| c.add(0))
        .then_expect_error(ErrorCode::InvalidArgument);
    assert_eq!(e.reason(), "ZERO");
    let e = AggregateFixture::<Counter>::given_no_events()
        .when(|c| c.add(0))
        .then_expect_error_reason(ErrorCode::InvalidArgument, "ZERO");
    assert_eq!(e.message(), "add something");
}

#[test]
fn a_serde_json_error_becomes_a_flext_error_with_the_question_mark() {
    fn parse(text: &str) -> Result<serde_json::Value, flext_domain::Error> {
        Ok(serde_json::from_str(text)?)
    }
    let e = parse("{\"a\": ").expect_err("truncated");
    assert_eq!(
        (e.code(), e.reason()),
        (flext_domain::ErrorCode::InvalidArgument, "INVALID_JSON")
    );
    assert!(e.message().contains("line 1"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(parse("[1]").expect("valid"), serde_json::json!([1]));
}
