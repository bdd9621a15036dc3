//! The conformance cases: generic async functions over a [`Harness`]. Each takes a fresh
//! harness, asserts, and hands the harness back for cleanup.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use flext_domain::{
    CausationId, CorrelationId, Error, ErrorCode, EventId, EventMetadata, ExpectedVersion,
    NewEvent, Position, RecordedEvent, StreamId, StreamVersion, WRONG_EXPECTED_VERSION,
};
use std::future::Future;

use flext_ports::{
    CheckpointStore, Claim, DeadLetter, EventCodec, EventStore, IdempotencyRecord,
    IdempotencyStore, Instance, JsonCodec, OwnershipStore, ProjectionStore, ReadDirection,
    Snapshot, SnapshotStore,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Harness, Held};

pub use crate::dcb_cases::*;
pub use crate::erasure_cases::*;
pub use crate::lifecycle_cases::*;
pub use crate::tenancy_cases::*;

/// The event type the cases write.
pub const EVENT_TYPE: &str = "test.happened";

/// The typed event behind the cases' payloads, to decode them through the JSON codec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Happened {
    /// A number identifying the event within its case.
    pub n: u64,
}

impl flext_domain::DomainEvent for Happened {
    fn event_type(&self) -> &'static str {
        EVENT_TYPE
    }
}

/// A stream id from text the cases know is valid.
pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("a valid stream id")
}

/// A new event with a fresh id and the payload `{"n": n}`.
pub fn event(n: u64) -> NewEvent {
    NewEvent::new(
        EventId::new(),
        EVENT_TYPE,
        json!({ "n": n }).to_string().into_bytes(),
    )
}

/// Events `{"n": first}` .. `{"n": first + count - 1}`.
pub fn events(first: u64, count: u64) -> Vec<NewEvent> {
    (first..first + count).map(event).collect()
}

fn n_of(e: &RecordedEvent) -> u64 {
    let typed: Happened = JsonCodec::new()
        .decode(e.as_event_ref())
        .expect("a decodable test payload");
    typed.n
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version.0).collect()
}

fn assert_conflict(err: &Error, stream: &StreamId, expected: ExpectedVersion, actual: u64) {
    assert_eq!(err.code(), ErrorCode::CONFLICT, "{err}");
    assert_eq!(err.reason(), WRONG_EXPECTED_VERSION, "{err}");
    assert_eq!(err.detail("stream"), Some(&json!(stream.as_str())), "{err}");
    assert_eq!(
        err.detail("expected"),
        Some(&serde_json::to_value(expected).expect("serializable")),
        "{err}"
    );
    assert_eq!(err.detail("actual"), Some(&json!(actual)), "{err}");
}

/// Reads all events after `after` until at least `count` are visible. A PostgreSQL reader
/// sees a commit only once every older writing transaction of the cluster has ended, and
/// other tests run at the same time, so a read right after an append may need a retry.
pub async fn read_all_until<S: EventStore>(
    store: &S,
    after: Position,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    let mut cursor = after;
    for _ in 0..4_000 {
        let page = store.read_all(cursor, 1_000).await.expect("read_all");
        if let Some(last) = page.last() {
            cursor = last.position;
        }
        let empty = page.is_empty();
        out.extend(page);
        if out.len() >= count {
            return out;
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    panic!(
        "only {} of {count} events became visible after {after}",
        out.len()
    );
}

/// `NoStream` on a missing stream creates it at version 1.
pub async fn no_stream_creates_the_stream<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let out = store
        .append(&s, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    assert_eq!(out.stream_version, StreamVersion(1));
    assert_eq!(out.positions.len(), 1);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(1)
    );
    h
}

/// `NoStream` on an existing stream is a conflict carrying expected and actual.
pub async fn no_stream_on_existing_stream_conflicts<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 2))
        .await
        .expect("append");
    let err = store
        .append(&s, ExpectedVersion::NoStream, events(3, 1))
        .await
        .expect_err("conflict");
    assert_conflict(&err, &s, ExpectedVersion::NoStream, 2);
    h
}

/// `Exact(n)` on a stream at `n` appends.
pub async fn exact_version_matching_succeeds<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 2))
        .await
        .expect("append");
    let out = store
        .append(&s, ExpectedVersion::Exact(StreamVersion(2)), events(3, 1))
        .await
        .expect("append at 2");
    assert_eq!(out.stream_version, StreamVersion(3));
    h
}

/// `Exact(n)` on a stream past `n` conflicts, with the actual version.
pub async fn exact_version_behind_conflicts_with_values<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 3))
        .await
        .expect("append");
    let expected = ExpectedVersion::Exact(StreamVersion(1));
    let err = store
        .append(&s, expected, events(4, 1))
        .await
        .expect_err("conflict");
    assert_conflict(&err, &s, expected, 3);
    h
}

/// `Exact(n)` on a stream short of `n` conflicts and writes nothing (no gap of versions).
pub async fn exact_version_ahead_conflicts_and_leaves_no_gap<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 2))
        .await
        .expect("append");
    let expected = ExpectedVersion::Exact(StreamVersion(5));
    let err = store
        .append(&s, expected, events(3, 1))
        .await
        .expect_err("conflict");
    assert_conflict(&err, &s, expected, 2);
    let read = store
        .read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(versions(&read), [1, 2]);
    h
}

/// `Exact(0)` is `NoStream`: it creates a stream and conflicts on an existing one.
pub async fn exact_zero_behaves_as_no_stream<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let zero = ExpectedVersion::Exact(StreamVersion(0));
    store
        .append(&s, zero, events(1, 1))
        .await
        .expect("create with Exact(0)");
    let err = store
        .append(&s, zero, events(2, 1))
        .await
        .expect_err("conflict");
    assert_conflict(&err, &s, zero, 1);
    h
}

/// `StreamExists` on a missing stream conflicts with actual 0.
pub async fn stream_exists_on_missing_stream_conflicts<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let err = store
        .append(&s, ExpectedVersion::StreamExists, events(1, 1))
        .await
        .expect_err("conflict");
    assert_conflict(&err, &s, ExpectedVersion::StreamExists, 0);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(0)
    );
    h
}

/// `StreamExists` on an existing stream appends after its last event.
pub async fn stream_exists_on_existing_stream_appends<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 2))
        .await
        .expect("append");
    let out = store
        .append(&s, ExpectedVersion::StreamExists, events(3, 2))
        .await
        .expect("append");
    assert_eq!(out.stream_version, StreamVersion(4));
    h
}

/// `Any` appends whatever the stream's state.
pub async fn any_appends_to_missing_and_existing_streams<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let first = store
        .append(&s, ExpectedVersion::Any, events(1, 1))
        .await
        .expect("create");
    assert_eq!(first.stream_version, StreamVersion(1));
    let second = store
        .append(&s, ExpectedVersion::Any, events(2, 1))
        .await
        .expect("append");
    assert_eq!(second.stream_version, StreamVersion(2));
    h
}

/// A multi-event append gets consecutive versions and increasing positions, in order.
pub async fn multi_event_append_is_consecutive<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let out = store
        .append(&s, ExpectedVersion::NoStream, events(1, 5))
        .await
        .expect("append");
    assert_eq!(out.stream_version, StreamVersion(5));
    assert!(
        out.positions.windows(2).all(|w| w[0] < w[1]),
        "{:?}",
        out.positions
    );
    let read = store
        .read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(versions(&read), [1, 2, 3, 4, 5]);
    assert_eq!(read.iter().map(n_of).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(
        read.iter().map(|e| e.position).collect::<Vec<_>>(),
        out.positions
    );
    h
}

/// A rejected multi-event append leaves nothing behind, in the stream or in read-all.
pub async fn failed_multi_event_append_leaves_nothing<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let first = store
        .append(&s, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    let rejected = events(2, 4);
    let err = store
        .append(&s, ExpectedVersion::NoStream, rejected.clone())
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), ErrorCode::CONFLICT);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(1)
    );
    // A later append shows nothing of the rejected one came before it.
    let later = store
        .append(&s, ExpectedVersion::Exact(StreamVersion(1)), events(9, 1))
        .await
        .expect("append");
    let all = read_all_until(&store, Position::START, 2).await;
    assert_eq!(all.iter().map(n_of).collect::<Vec<_>>(), [1, 9]);
    assert_eq!(all[0].position, first.positions[0]);
    assert_eq!(all[1].position, later.positions[0]);
    h
}

/// One append carrying the same event id twice is invalid and writes nothing.
pub async fn duplicate_ids_in_one_append_are_invalid<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let e = event(1);
    let mut twin = event(2);
    twin.event_id = e.event_id;
    let err = store
        .append(&s, ExpectedVersion::Any, vec![e, twin])
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert_eq!(err.field_violations()[0].field, "events[1].event_id");
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(0)
    );
    h
}

/// An append of no events is invalid.
pub async fn empty_append_is_invalid<H: Harness>(h: H) -> H {
    let store = h.store();
    let err = store
        .append(&stream("order-1"), ExpectedVersion::Any, Vec::new())
        .await
        .expect_err("invalid");
    assert_eq!(err.reason(), "NO_EVENTS");
    h
}

/// Re-sending a `NoStream` append returns the original outcome and writes nothing.
pub async fn idempotent_retry_with_no_stream<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let batch = events(1, 3);
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");
    let again = store
        .append(&s, ExpectedVersion::NoStream, batch)
        .await
        .expect("idempotent");
    assert_eq!(again, first);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
    h
}

/// Re-sending an `Exact` append is idempotent even after the stream moved on.
pub async fn idempotent_retry_with_exact_after_stream_moved_on<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    let batch = events(2, 2);
    let expected = ExpectedVersion::Exact(StreamVersion(1));
    let first = store
        .append(&s, expected, batch.clone())
        .await
        .expect("append");
    store
        .append(&s, ExpectedVersion::Exact(StreamVersion(3)), events(4, 1))
        .await
        .expect("append");
    let again = store.append(&s, expected, batch).await.expect("idempotent");
    assert_eq!(again, first);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(4)
    );
    h
}

/// Re-sending a `StreamExists` append is idempotent.
pub async fn idempotent_retry_with_stream_exists<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    let batch = events(2, 2);
    let first = store
        .append(&s, ExpectedVersion::StreamExists, batch.clone())
        .await
        .expect("append");
    let again = store
        .append(&s, ExpectedVersion::StreamExists, batch)
        .await
        .expect("idempotent");
    assert_eq!(again, first);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
    h
}

/// An id appended again with another payload is refused, naming where it is stored.
pub async fn reused_id_with_other_payload_is_refused<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let e = event(1);
    store
        .append(&s, ExpectedVersion::NoStream, vec![e.clone()])
        .await
        .expect("append");
    let mut changed = e.clone();
    changed.payload = Bytes::from_static(br#"{"n":2}"#);
    let err = store
        .append(&s, ExpectedVersion::NoStream, vec![changed])
        .await
        .expect_err("reuse");
    assert_eq!(err.code(), ErrorCode::AlreadyExists, "{err}");
    assert_eq!(err.reason(), "EVENT_ID_REUSED");
    assert_eq!(err.detail("event_id"), Some(&json!(e.event_id.to_string())));
    assert_eq!(err.detail("version"), Some(&json!(1)));
    let read = store
        .read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(read.iter().map(n_of).collect::<Vec<_>>(), [1]);
    h
}

/// An id stored in one stream cannot be appended to another.
pub async fn reused_id_in_another_stream_is_refused<H: Harness>(h: H) -> H {
    let store = h.store();
    let e = event(1);
    store
        .append(&stream("a"), ExpectedVersion::NoStream, vec![e.clone()])
        .await
        .expect("append");
    let err = store
        .append(&stream("b"), ExpectedVersion::NoStream, vec![e])
        .await
        .expect_err("reuse");
    assert_eq!(err.reason(), "EVENT_ID_REUSED", "{err}");
    assert_eq!(err.detail("stream"), Some(&json!("a")));
    assert_eq!(
        store.stream_version(&stream("b")).await.expect("version"),
        StreamVersion(0)
    );
    h
}

/// `Any` is not idempotent: a re-sent batch is refused rather than stored twice.
pub async fn retry_with_any_is_refused_not_duplicated<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let batch = events(1, 2);
    store
        .append(&s, ExpectedVersion::Any, batch.clone())
        .await
        .expect("append");
    let err = store
        .append(&s, ExpectedVersion::Any, batch)
        .await
        .expect_err("refused");
    assert_eq!(err.reason(), "EVENT_ID_REUSED", "{err}");
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(2)
    );
    h
}

/// Reading a stream forward from a version, in pages.
pub async fn read_stream_forward_pages<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 7))
        .await
        .expect("append");
    store
        .append(&stream("other"), ExpectedVersion::NoStream, events(100, 3))
        .await
        .expect("append");
    let mut seen = Vec::new();
    let mut from = StreamVersion(1);
    loop {
        let page = store
            .read_stream(&s, from, 3, ReadDirection::Forward)
            .await
            .expect("read");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        from = last.stream_version.advanced(1);
        seen.extend(versions(&page));
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
    let tail = store
        .read_stream(&s, StreamVersion(6), 100, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(versions(&tail), [6, 7]);
    h
}

/// Reading a stream backward from the end and from a version, in pages.
pub async fn read_stream_backward_pages<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 7))
        .await
        .expect("append");
    let newest = store
        .read_stream(&s, StreamVersion::LATEST, 3, ReadDirection::Backward)
        .await
        .expect("read");
    assert_eq!(versions(&newest), [7, 6, 5]);
    let next = store
        .read_stream(&s, StreamVersion(4), 3, ReadDirection::Backward)
        .await
        .expect("read");
    assert_eq!(versions(&next), [4, 3, 2]);
    let last = store
        .read_stream(&s, StreamVersion(1), 3, ReadDirection::Backward)
        .await
        .expect("read");
    assert_eq!(versions(&last), [1]);
    let none = store
        .read_stream(&s, StreamVersion(0), 3, ReadDirection::Backward)
        .await
        .expect("read");
    assert!(none.is_empty());
    h
}

/// A stream that does not exist reads as empty, at version 0.
pub async fn missing_stream_reads_empty_at_version_zero<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("nobody");
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(0)
    );
    for direction in [ReadDirection::Forward, ReadDirection::Backward] {
        let read = store
            .read_stream(&s, StreamVersion(1), 10, direction)
            .await
            .expect("read");
        assert!(read.is_empty());
    }
    h
}

/// Replaying a stream feeds the same events as reading it, in pages, and stops at the
/// first error the consumer returns.
pub async fn replay_stream_feeds_what_read_stream_returns<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 7))
        .await
        .expect("append");
    store
        .append(&stream("other"), ExpectedVersion::NoStream, events(100, 2))
        .await
        .expect("append");
    let read = store
        .read_stream(&s, StreamVersion(1), 100, ReadDirection::Forward)
        .await
        .expect("read");
    let mut fed = Vec::new();
    let mut from = StreamVersion(1);
    loop {
        let n = store
            .replay_stream(&s, from, 3, |e| {
                assert_eq!(e.stream_id, &s);
                fed.push((
                    e.stream_version,
                    e.event_type.to_owned(),
                    e.schema_version,
                    e.payload.to_vec(),
                ));
                Ok(())
            })
            .await
            .expect("replay");
        if n == 0 {
            break;
        }
        from = from.advanced(n as u64);
    }
    let expected: Vec<_> = read
        .iter()
        .map(|e| {
            (
                e.stream_version,
                e.event_type.clone(),
                e.schema_version,
                e.payload.to_vec(),
            )
        })
        .collect();
    assert_eq!(fed, expected);
    let mut seen = 0;
    let err = store
        .replay_stream(&s, StreamVersion(1), 100, |e| {
            seen += 1;
            if e.stream_version == StreamVersion(3) {
                return Err(Error::internal("STOP", "consumer stops"));
            }
            Ok(())
        })
        .await
        .expect_err("stopped");
    assert_eq!((err.reason(), seen), ("STOP", 3));
    h
}

/// Read-all returns every stream's events in position order, in pages that resume.
pub async fn read_all_is_in_position_order_and_pages<H: Harness>(h: H) -> H {
    let store = h.store();
    let mut order = Vec::new();
    for round in 0..4u64 {
        for name in ["a", "b", "c"] {
            let s = stream(name);
            let n = round * 10 + order.len() as u64;
            store
                .append(&s, ExpectedVersion::Any, vec![event(n)])
                .await
                .expect("append");
            order.push(n);
        }
    }
    let all = read_all_until(&store, Position::START, order.len()).await;
    assert_eq!(all.iter().map(n_of).collect::<Vec<_>>(), order);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    let mut paged = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 5).await.expect("read_all");
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page.iter().map(n_of));
    }
    assert_eq!(paged, order);
    h
}

/// Reading all after the last position, or with a count of zero, returns nothing.
pub async fn read_all_past_the_end_is_empty<H: Harness>(h: H) -> H {
    let store = h.store();
    let out = store
        .append(&stream("a"), ExpectedVersion::Any, events(1, 2))
        .await
        .expect("append");
    read_all_until(&store, Position::START, 2).await;
    let last = out.last_position().expect("a position");
    assert!(store.read_all(last, 10).await.expect("read_all").is_empty());
    assert!(
        store
            .read_all(Position(u64::MAX), 10)
            .await
            .expect("read_all")
            .is_empty()
    );
    assert!(
        store
            .read_all(Position::START, 0)
            .await
            .expect("read_all")
            .is_empty()
    );
    h
}

/// Every field of an appended event comes back as written, plus version, position, time.
pub async fn recorded_events_keep_every_field<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    let correlation = CorrelationId::new();
    let causation = CausationId::new();
    let e = NewEvent::new(
        EventId::new(),
        "order.placed",
        Bytes::from_static(b"\x00\x01binary\xff"),
    )
    .with_schema_version(3)
    .with_metadata(
        EventMetadata::caused_by(correlation, causation)
            .with_header("tenant", "acme")
            .with_header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
    );
    let plain = event(2);
    let out = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![e.clone(), plain.clone()],
        )
        .await
        .expect("append");
    let read = store
        .read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(read.len(), 2);
    let r = &read[0];
    assert_eq!(r.to_new_event(), e);
    assert_eq!(r.stream_id, s);
    assert_eq!(r.stream_version, StreamVersion(1));
    assert_eq!(r.position, out.positions[0]);
    assert!(
        r.recorded_at.timestamp() > 1_600_000_000,
        "recorded time {}",
        r.recorded_at
    );
    assert_eq!(read[1].to_new_event(), plain);
    assert_eq!(read[1].metadata, EventMetadata::default());
    let all = read_all_until(&store, Position::START, 2).await;
    assert_eq!(&all[..], &read[..]);
    h
}

/// An append of 2,500 events round-trips in order (adapters that batch statements split it).
pub async fn large_append_round_trips_in_order<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("bulk");
    let out = store
        .append(&s, ExpectedVersion::NoStream, events(1, 2_500))
        .await
        .expect("append");
    assert_eq!(out.stream_version, StreamVersion(2_500));
    assert_eq!(out.positions.len(), 2_500);
    let read = store
        .read_stream(&s, StreamVersion(1), 5_000, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(
        read.iter().map(n_of).collect::<Vec<_>>(),
        (1..=2_500).collect::<Vec<_>>()
    );
    assert_eq!(
        read.iter().map(|e| e.position).collect::<Vec<_>>(),
        out.positions
    );
    h
}

/// 8 writers race on one stream with `Exact`: one success per version, no gaps, and every
/// loser gets the typed conflict.
pub async fn concurrent_exact_writers_on_one_stream<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("contended");
    const WRITERS: u64 = 8;
    const ROUNDS: u64 = 12;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let (mut wins, mut conflicts) = (Vec::new(), 0u64);
            let mut n = 0;
            while (wins.len() as u64) < ROUNDS {
                let current = store.stream_version(&s).await.expect("version");
                n += 1;
                let e = event(w * 1_000_000 + n);
                match store
                    .append(&s, ExpectedVersion::Exact(current), vec![e])
                    .await
                {
                    Ok(out) => {
                        assert_eq!(out.stream_version, current.advanced(1));
                        wins.push(out.stream_version.0);
                    }
                    Err(err) => {
                        assert_eq!(err.code(), ErrorCode::CONFLICT, "{err}");
                        assert_eq!(err.reason(), WRONG_EXPECTED_VERSION, "{err}");
                        conflicts += 1;
                    }
                }
            }
            (wins, conflicts)
        }));
    }
    let mut all_wins = Vec::new();
    for t in tasks {
        let (wins, _conflicts) = t.await.expect("writer task");
        all_wins.extend(wins);
    }
    all_wins.sort_unstable();
    let expected: Vec<u64> = (1..=WRITERS * ROUNDS).collect();
    assert_eq!(all_wins, expected, "exactly one success per version");
    let read = store
        .read_stream(&s, StreamVersion(1), 1_000, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(versions(&read), expected);
    h
}

/// 8 writers on distinct streams and a reader tailing read-all: the reader sees every event
/// exactly once, each stream in version order, positions increasing.
pub async fn concurrent_writers_on_distinct_streams_with_tailing_reader<H: Harness>(h: H) -> H {
    let store = h.store();
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 25;
    let total = (WRITERS * APPENDS * 2) as usize;
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut after = Position::START;
            let mut idle = 0u32;
            while seen.len() < total {
                let page = store.read_all(after, 37).await.expect("read_all");
                if let Some(last) = page.last() {
                    assert!(last.position > after);
                    after = last.position;
                    idle = 0;
                } else {
                    idle += 1;
                    assert!(idle < 10_000, "reader starved at {} of {total}", seen.len());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen.extend(page);
            }
            // Nothing more may appear: every event was delivered once.
            assert!(
                store
                    .read_all(after, 10)
                    .await
                    .expect("read_all")
                    .is_empty()
            );
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let s = stream(&format!("writer-{w}"));
            for i in 0..APPENDS {
                let expected = ExpectedVersion::Exact(StreamVersion(i * 2));
                let batch = events(w * 1_000 + i * 2, 2);
                store.append(&s, expected, batch).await.expect("append");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer task");
    }
    let seen = reader.await.expect("reader task");
    assert_eq!(seen.len(), total);
    let ids: HashSet<EventId> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), total, "every event exactly once");
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let mut per_stream: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &seen {
        per_stream
            .entry(e.stream_id.as_str())
            .or_default()
            .push(e.stream_version.0);
    }
    assert_eq!(per_stream.len(), WRITERS as usize);
    for (s, v) in per_stream {
        assert_eq!(
            v,
            (1..=APPENDS * 2).collect::<Vec<_>>(),
            "stream {s} in version order"
        );
    }
    h
}

/// Gap safety: while an append with a lower position is held open, an append committed
/// after it is not returned past it; once it commits, a checkpointed reader gets both, the
/// held one first.
pub async fn read_all_is_gap_safe_with_a_held_transaction<H: Harness>(h: H) -> H {
    let store = h.store();
    let base = store
        .append(&stream("before"), ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    let seen_before = read_all_until(&store, Position::START, 1).await;
    assert_eq!(seen_before.len(), 1);
    let checkpoint = base.positions[0];

    let held = h
        .hold_append(&stream("slow"), ExpectedVersion::NoStream, events(2, 1))
        .await
        .expect("held append");
    let fast = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(&stream("fast"), ExpectedVersion::NoStream, events(3, 1))
                .await
        })
    };
    let fast = if H::SERIALIZED_WRITERS {
        // The second writer waits for the first: it cannot commit ahead of it at all.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(
                store
                    .read_all(checkpoint, 10)
                    .await
                    .expect("read_all")
                    .is_empty()
            );
        }
        assert!(
            !fast.is_finished(),
            "a serialized store let a second writer past an open one"
        );
        Err(fast)
    } else {
        let committed = fast.await.expect("fast task").expect("fast append");
        Ok(committed)
    };
    // The later commit must not be visible past the open one.
    for _ in 0..5 {
        let visible = store.read_all(checkpoint, 10).await.expect("read_all");
        assert!(
            visible.is_empty(),
            "read-all returned {:?} past an open append",
            versions(&visible)
        );
        tokio::task::yield_now().await;
    }
    let held_out = held.commit().await.expect("commit held");
    let fast_out = match fast {
        Ok(out) => out,
        Err(task) => task.await.expect("fast task").expect("fast append"),
    };
    assert!(
        held_out.positions[0] < fast_out.positions[0],
        "the held append, begun first, has the lower position"
    );
    let after = read_all_until(&store, checkpoint, 2).await;
    assert_eq!(
        after.iter().map(n_of).collect::<Vec<_>>(),
        [2, 3],
        "the checkpointed reader misses nothing"
    );
    h
}

/// Stream ids with quotes, semicolons, SQL, Unicode and 1,000 characters are stored and
/// read back literally, and are distinct from their look-alikes.
pub async fn hostile_stream_ids_are_stored_literally<H: Harness>(h: H) -> H {
    let store = h.store();
    let long = "x".repeat(1_000);
    let ids = [
        "o'reilly",
        "\"quoted\"",
        "a;b",
        "'; DROP TABLE flext_events; --",
        "%_wild*cards?",
        "ümlaut-流-🦀",
        "back\\slash",
        long.as_str(),
        "x",
    ];
    for (i, id) in ids.iter().enumerate() {
        let s = stream(id);
        store
            .append(&s, ExpectedVersion::NoStream, events(i as u64, 1))
            .await
            .expect("append");
    }
    for (i, id) in ids.iter().enumerate() {
        let s = stream(id);
        let read = store
            .read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
            .await
            .expect("read");
        assert_eq!(read.len(), 1, "stream {id:?}");
        assert_eq!(read[0].stream_id.as_str(), *id);
        assert_eq!(n_of(&read[0]), i as u64);
    }
    let all = read_all_until(&store, Position::START, ids.len()).await;
    let stored: HashSet<&str> = all.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(stored, ids.iter().copied().collect::<HashSet<_>>());
    h
}

/// Event types and header values with SQL and JSON metacharacters are stored literally.
pub async fn hostile_types_and_headers_are_stored_literally<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("h");
    let mut e = event(1);
    e.event_type = "type'); DELETE FROM flext_events; --".into();
    e.metadata = EventMetadata::default()
        .with_header("quote\"key", "va'lue\\\"}")
        .with_header("", "empty key")
        .with_header("unicode", "流🦀");
    store
        .append(&s, ExpectedVersion::NoStream, vec![e.clone()])
        .await
        .expect("append");
    let read = store
        .read_stream(&s, StreamVersion(1), 1, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(read[0].to_new_event(), e);
    h
}

/// A payload corrupted behind the store's back decodes to a typed `DataLoss` error naming
/// stream and version; the stream's other events still read and decode.
pub async fn corrupted_payload_is_a_typed_error_and_the_rest_stays_readable<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("damaged");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 3))
        .await
        .expect("append");
    h.corrupt_payload(&s, StreamVersion(2)).await;
    let read = store
        .read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(versions(&read), [1, 2, 3]);
    let codec = JsonCodec::new();
    let err = EventCodec::<Happened>::decode(&codec, read[1].as_event_ref()).expect_err("corrupt");
    assert_eq!(err.code(), ErrorCode::DataLoss, "{err}");
    assert_eq!(err.reason(), "CORRUPTED_EVENT");
    assert_eq!(err.detail("stream"), Some(&json!("damaged")));
    assert_eq!(err.detail("version"), Some(&json!(2)));
    assert_eq!(n_of(&read[0]), 1);
    assert_eq!(n_of(&read[2]), 3);
    h
}

/// Stored metadata corrupted behind the store's back reads as a typed `DataLoss` error
/// naming stream and version; the events around it still read.
pub async fn corrupted_metadata_is_a_typed_error_and_the_rest_stays_readable<H: Harness>(
    h: H,
) -> H {
    let store = h.store();
    let s = stream("damaged");
    let mut batch = events(1, 3);
    for e in &mut batch {
        e.metadata = EventMetadata::default().with_header("k", "v");
    }
    store
        .append(&s, ExpectedVersion::NoStream, batch)
        .await
        .expect("append");
    if !h.corrupt_metadata(&s, StreamVersion(2)).await {
        return h;
    }
    let err = store
        .read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect_err("corrupt row");
    assert_eq!(err.code(), ErrorCode::DataLoss, "{err}");
    assert_eq!(err.reason(), "CORRUPTED_EVENT");
    assert_eq!(err.detail("stream"), Some(&json!("damaged")));
    assert_eq!(err.detail("version"), Some(&json!(2)));
    let before = store
        .read_stream(&s, StreamVersion(1), 1, ReadDirection::Forward)
        .await
        .expect("read");
    let after = store
        .read_stream(&s, StreamVersion(3), 1, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!((n_of(&before[0]), n_of(&after[0])), (1, 3));
    h
}

fn snapshot(s: &StreamId, version: u64, state: &'static [u8]) -> Snapshot {
    Snapshot {
        stream_id: s.clone(),
        version: StreamVersion(version),
        schema_version: 1,
        state: Bytes::from_static(state),
    }
}

/// The latest saved snapshot of a stream is the one loaded; streams do not mix.
pub async fn snapshots_keep_the_latest<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("agg");
    assert_eq!(store.load_snapshot(&s).await.expect("load"), None);
    store
        .save_snapshot(snapshot(&s, 10, b"ten"))
        .await
        .expect("save");
    store
        .save_snapshot(snapshot(&s, 20, b"twenty"))
        .await
        .expect("save");
    store
        .save_snapshot(snapshot(&stream("other"), 5, b"five"))
        .await
        .expect("save");
    assert_eq!(
        store.load_snapshot(&s).await.expect("load"),
        Some(snapshot(&s, 20, b"twenty"))
    );
    h
}

/// Saving a snapshot older than the stored one keeps the newer.
pub async fn older_snapshot_does_not_replace_newer<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("agg");
    store
        .save_snapshot(snapshot(&s, 20, b"twenty"))
        .await
        .expect("save");
    store
        .save_snapshot(snapshot(&s, 10, b"ten"))
        .await
        .expect("save");
    assert_eq!(
        store.load_snapshot(&s).await.expect("load"),
        Some(snapshot(&s, 20, b"twenty"))
    );
    h
}

const HOUR: Duration = Duration::from_secs(3_600);

fn done(claim: Claim) -> IdempotencyRecord {
    match claim {
        Claim::Done(record) => record,
        other => panic!("expected a stored outcome, got {other:?}"),
    }
}

/// A completed command id returns its first output, with its message type.
pub async fn idempotency_keeps_the_first_output<H: Harness>(h: H) -> H {
    let store = h.store();
    let id = uuid::Uuid::now_v7();
    assert!(matches!(
        store.claim(id, "order.place", HOUR).await.expect("claim"),
        Claim::Claimed
    ));
    let record = IdempotencyRecord {
        message_type: "order.place".into(),
        outcome: Ok(Bytes::from_static(b"\x00{\"id\":7}")),
    };
    store.complete(id, record).await.expect("complete");
    let first = done(store.claim(id, "order.place", HOUR).await.expect("claim"));
    assert_eq!(first.message_type, "order.place");
    assert_eq!(
        first.outcome.expect("an output"),
        Bytes::from_static(b"\x00{\"id\":7}")
    );
    let other = uuid::Uuid::now_v7();
    assert!(matches!(
        store
            .claim(other, "order.place", HOUR)
            .await
            .expect("claim"),
        Claim::Claimed
    ));
    h
}

/// A command that ended with an error returns that error again, whole.
pub async fn idempotency_keeps_the_first_error<H: Harness>(h: H) -> H {
    let store = h.store();
    let id = uuid::Uuid::now_v7();
    store.claim(id, "order.place", HOUR).await.expect("claim");
    let refused =
        Error::failed_precondition("OUT_OF_STOCK", "nothing left").with_detail("sku", "A-1");
    let record = IdempotencyRecord {
        message_type: "order.place".into(),
        outcome: Err(refused),
    };
    store.complete(id, record).await.expect("complete");
    let err = done(store.claim(id, "order.place", HOUR).await.expect("claim"))
        .outcome
        .expect_err("an error");
    assert_eq!(
        (err.code(), err.reason(), err.message()),
        (
            ErrorCode::FailedPrecondition,
            "OUT_OF_STOCK",
            "nothing left"
        )
    );
    assert_eq!(err.detail("sku"), Some(&json!("A-1")));
    h
}

/// A second claim while the first runs is in progress; a claim older than the stale
/// limit is taken over.
pub async fn idempotency_reports_in_progress_and_takes_over_stale_claims<H: Harness>(h: H) -> H {
    let store = h.store();
    let id = uuid::Uuid::now_v7();
    assert!(matches!(
        store.claim(id, "order.place", HOUR).await.expect("claim"),
        Claim::Claimed
    ));
    assert!(matches!(
        store.claim(id, "order.place", HOUR).await.expect("claim"),
        Claim::InProgress
    ));
    assert!(matches!(
        store
            .claim(id, "order.place", Duration::ZERO)
            .await
            .expect("claim"),
        Claim::Claimed
    ));
    h
}

/// A released claim (transient failure) lets the next dispatch run the command.
pub async fn idempotency_release_lets_a_retry_run<H: Harness>(h: H) -> H {
    let store = h.store();
    let id = uuid::Uuid::now_v7();
    store.claim(id, "order.place", HOUR).await.expect("claim");
    store.release(id).await.expect("release");
    assert!(matches!(
        store.claim(id, "order.place", HOUR).await.expect("claim"),
        Claim::Claimed
    ));
    h
}

/// A checkpoint starts absent, keeps the last saved position (also a lower one: a rebuild
/// starts over), and names are independent and stored literally.
pub async fn checkpoints_keep_the_last_saved_position_per_name<H: Harness>(h: H) -> H {
    let store = h.store();
    let name = "balances';--ümlaut";
    assert_eq!(store.load_checkpoint(name).await.expect("load"), None);
    store
        .save_checkpoint(name, Position(5))
        .await
        .expect("save");
    store
        .save_checkpoint(name, Position(9))
        .await
        .expect("save");
    store
        .save_checkpoint("history", Position(2))
        .await
        .expect("save");
    assert_eq!(
        store.load_checkpoint(name).await.expect("load"),
        Some(Position(9))
    );
    assert_eq!(
        store.load_checkpoint("history").await.expect("load"),
        Some(Position(2))
    );
    store
        .save_checkpoint(name, Position(0))
        .await
        .expect("rebuild");
    assert_eq!(
        store.load_checkpoint(name).await.expect("load"),
        Some(Position(0))
    );
    assert_eq!(store.load_checkpoint("balances").await.expect("load"), None);
    h
}

/// `read_correlated` returns every event of one business action across streams, in
/// position order, and nothing of another.
pub async fn correlation_query_returns_one_business_action<H: Harness>(h: H) -> H {
    use flext_domain::{CausationId, CorrelationId, EventMetadata};
    let store = h.store();
    let action = CorrelationId::new();
    let other = CorrelationId::new();
    let tagged = |n: u64, c: CorrelationId| {
        event(n).with_metadata(EventMetadata::caused_by(c, CausationId::new()))
    };
    let mut want = Vec::new();
    for (i, s) in ["order-1", "payment-1", "order-1", "stock-9"]
        .iter()
        .enumerate()
    {
        let mine = tagged(i as u64, action);
        let noise = tagged(100 + i as u64, other);
        let out = store
            .append(&stream(s), ExpectedVersion::Any, vec![mine, noise])
            .await
            .expect("append");
        want.push(out.positions[0]);
        store
            .append(
                &stream("untagged"),
                ExpectedVersion::Any,
                vec![event(200 + i as u64)],
            )
            .await
            .expect("append");
    }
    let got = store.read_correlated(action, 100).await.expect("read");
    assert_eq!(got.iter().map(|e| e.position).collect::<Vec<_>>(), want);
    assert!(
        got.iter()
            .all(|e| e.metadata.correlation_id == Some(action))
    );
    assert_eq!(
        got.iter().map(n_of).collect::<Vec<_>>(),
        vec![0, 1, 2, 3],
        "the action's own events"
    );
    let first_two = store.read_correlated(action, 2).await.expect("read");
    assert_eq!(first_two.len(), 2);
    assert_eq!(first_two[1].position, want[1]);
    assert!(
        store
            .read_correlated(CorrelationId::new(), 10)
            .await
            .expect("read")
            .is_empty()
    );
    h
}

/// Runs `body` in a transaction of `store` and commits it: the outcome of both.
async fn in_transaction<S, F>(store: &S, body: F) -> Result<(), Error>
where
    S: ProjectionStore,
    F: for<'t> FnOnce(
        &'t S,
        &'t mut S::Transaction,
    )
        -> std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 't>>,
{
    let mut tx = store.begin().await?;
    body(store, &mut tx).await?;
    store.commit(tx).await
}

fn assert_lost(result: Result<impl std::fmt::Debug, Error>, held: u64, current: u64) {
    let e = result.expect_err("a write under a stale lease is refused");
    assert_eq!(e.code(), ErrorCode::Aborted, "{e}");
    assert_eq!(e.reason(), "OWNERSHIP_LOST", "{e}");
    assert_eq!(e.detail("epoch_held"), Some(&json!(held)), "{e}");
    assert_eq!(e.detail("epoch_current"), Some(&json!(current)), "{e}");
}

/// A lease is exclusive until it expires or is released; every acquisition has a higher
/// epoch; a released or taken lease cannot be renewed.
pub async fn leases_are_exclusive_and_epochs_only_grow<H: Harness>(h: H) -> H {
    let store = h.store();
    let (a, b) = (Instance::named("a"), Instance::named("b"));
    let ttl = Duration::from_secs(30);
    let first = store
        .acquire_lease("balances", &a, ttl)
        .await
        .expect("acquire")
        .expect("free at first");
    assert_eq!(first.epoch, 1);
    assert_eq!(
        store.acquire_lease("balances", &b, ttl).await.expect("try"),
        None
    );
    assert_eq!(
        store.acquire_lease("balances", &a, ttl).await.expect("try"),
        None,
        "not even its owner acquires a held lease twice"
    );
    let renewed = store.renew_lease(&first, ttl).await.expect("renew");
    assert_eq!(renewed.epoch, 1);
    assert!(renewed.expires_at >= first.expires_at);
    let records = store.consumers().await.expect("consumers");
    let record = records
        .iter()
        .find(|r| r.consumer == "balances")
        .expect("a record");
    assert!(record.owned);
    assert_eq!(record.owner.as_ref().map(|o| o.name.as_str()), Some("a"));
    assert_eq!(record.owner.as_ref().map(|o| o.id), Some(a.id));

    store.release_lease(&first).await.expect("release");
    let records = store.consumers().await.expect("consumers");
    assert!(!records[0].owned && records[0].owner.is_none());
    let second = store
        .acquire_lease("balances", &b, ttl)
        .await
        .expect("acquire")
        .expect("released: free");
    assert_eq!(second.epoch, 2);
    assert_lost(store.renew_lease(&first, ttl).await, 1, 2);
    // An expired lease is not renewed either: it is acquired again, under a new epoch.
    let short = Duration::from_millis(50);
    let other = store
        .acquire_lease("history", &a, short)
        .await
        .expect("acquire")
        .expect("free");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let e = store.renew_lease(&other, ttl).await.expect_err("expired");
    assert_eq!(e.reason(), "OWNERSHIP_LOST");
    let again = store
        .acquire_lease("history", &a, ttl)
        .await
        .expect("acquire")
        .expect("expired: free");
    assert_eq!(again.epoch, other.epoch + 1);
    h
}

/// A checkpoint written under a lease that is no longer current is refused with
/// `OWNERSHIP_LOST` (consumer, epoch held, epoch current), and the transaction's other
/// changes (a dead letter here) are not kept; so is one under an expired lease that
/// nobody took (a paused owner that resumes).
pub async fn a_stale_epoch_cannot_commit<H: Harness>(h: H) -> H {
    let store = h.store();
    let (a, b) = (Instance::named("a"), Instance::named("b"));
    let out = store
        .append(&stream("fence-1"), ExpectedVersion::Any, vec![event(1)])
        .await
        .expect("append");
    let recorded = read_all_until(&store, Position::START, 1).await.remove(0);
    let short = Duration::from_millis(50);
    let old = store
        .acquire_lease("p", &a, short)
        .await
        .expect("acquire")
        .expect("free");
    let lease = old.clone();
    in_transaction(&store, move |s, tx| {
        Box::pin(async move { s.set_checkpoint(tx, &lease, Position(5)).await })
    })
    .await
    .expect("the owner commits");
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(Position(5))
    );

    // The lease lapses; nobody takes it yet: the late commit is refused all the same.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let lease = old.clone();
    let late = in_transaction(&store, move |s, tx| {
        Box::pin(async move { s.set_checkpoint(tx, &lease, Position(6)).await })
    })
    .await;
    assert_lost(late, 1, 1);

    // Another instance takes over; the former owner's batch (a dead letter and the
    // checkpoint) changes nothing.
    let new = store
        .acquire_lease("p", &b, Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("expired: free");
    assert_eq!(new.epoch, 2);
    let now = store.clock_now().await.expect("now");
    let letter = DeadLetter::of("p", &recorded, Error::internal("BOOM", "boom"), 1, now);
    let lease = old.clone();
    let late = in_transaction(&store, move |s, tx| {
        Box::pin(async move {
            s.park(tx, &letter).await?;
            s.set_checkpoint(tx, &lease, Position(9)).await
        })
    })
    .await;
    assert_lost(late, 1, 2);
    assert_lost(store.save_checkpoint_fenced(&old, Position(9)).await, 1, 2);
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(Position(5)),
        "the refused commits changed nothing"
    );
    assert!(
        store.dead_letters("p").await.expect("dl").is_empty(),
        "the refused transaction's dead letter is not kept"
    );
    // The new owner goes on from the stored checkpoint.
    store
        .save_checkpoint_fenced(&new, out.positions[0].max(Position(5)))
        .await
        .expect("the new owner commits");
    h
}

/// A checkpoint only moves forward under a lease (the same position again is a fence
/// alone); a rebuild (`rewind_checkpoint`) moves it back.
pub async fn a_checkpoint_moves_back_only_in_a_rebuild<H: Harness>(h: H) -> H {
    let store = h.store();
    let owner = Instance::named("a");
    let lease = store
        .acquire_lease("p", &owner, Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("free");
    store
        .save_checkpoint_fenced(&lease, Position(10))
        .await
        .expect("forward");
    store
        .save_checkpoint_fenced(&lease, Position(10))
        .await
        .expect("the same position");
    let e = store
        .save_checkpoint_fenced(&lease, Position(4))
        .await
        .expect_err("backwards");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert_eq!(e.reason(), "CHECKPOINT_BACKWARDS");
    let l = lease.clone();
    let e = in_transaction(&store, move |s, tx| {
        Box::pin(async move { s.set_checkpoint(tx, &l, Position(3)).await })
    })
    .await
    .expect_err("backwards in a transaction");
    assert_eq!(e.reason(), "CHECKPOINT_BACKWARDS");
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(Position(10))
    );
    let l = lease.clone();
    in_transaction(&store, move |s, tx| {
        Box::pin(async move { s.rewind_checkpoint(tx, &l, Position(2)).await })
    })
    .await
    .expect("a rebuild moves it back");
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(Position(2))
    );
    h
}

/// Instances announce themselves for a time, oldest first, and leave.
pub async fn instances_announce_lapse_and_leave<H: Harness>(h: H) -> H {
    let store = h.store();
    let (a, b, c) = (
        Instance::named("a"),
        Instance::named("b"),
        Instance::named("c"),
    );
    let ttl = Duration::from_secs(30);
    store.announce(&a, ttl).await.expect("announce");
    store
        .announce(&c, Duration::from_millis(50))
        .await
        .expect("announce");
    let members = store.announce(&b, ttl).await.expect("announce");
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].instance, a, "oldest first");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let members = store.announce(&a, ttl).await.expect("announce");
    let names: Vec<&str> = members.iter().map(|m| m.instance.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "c's announcement lapsed");
    store.leave(&b).await.expect("leave");
    let members = store.announce(&a, ttl).await.expect("announce");
    assert_eq!(members.len(), 1);
    h
}

/// An unfenced checkpoint write (`CheckpointStore::save_checkpoint`, for readers without
/// ownership) is refused with `CHECKPOINT_OWNED` while an instance owns the consumer, and
/// changes nothing; once the lease is released it is allowed again.
pub async fn an_owned_checkpoint_is_not_written_unfenced<H: Harness>(h: H) -> H {
    let store = h.store();
    let lease = store
        .acquire_lease("p", &Instance::named("a"), Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("free");
    store
        .save_checkpoint_fenced(&lease, Position(7))
        .await
        .expect("the owner writes");
    let e = store
        .save_checkpoint("p", Position(3))
        .await
        .expect_err("an unfenced write over an owned consumer");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert_eq!(e.reason(), "CHECKPOINT_OWNED");
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(Position(7))
    );
    store.release_lease(&lease).await.expect("release");
    store
        .save_checkpoint("p", Position(3))
        .await
        .expect("released: a plain reader may write it");
    assert_eq!(
        store.load_checkpoint("p").await.expect("load"),
        Some(Position(3))
    );
    h
}

/// The bounds of every numeric field of an append: the largest schema version a store
/// keeps round-trips exactly; one more is refused with the same typed error on every
/// store and stores nothing; the largest expected versions and read positions are
/// conflicts or empty reads, never a panic or a wrapped number.
pub async fn numeric_fields_of_an_append_keep_their_bounds<H: Harness>(h: H) -> H {
    use flext_ports::MAX_SCHEMA_VERSION;
    let store = h.store();
    let s = stream("bounds-1");
    let max = event(1).with_schema_version(MAX_SCHEMA_VERSION);
    let zero = event(2).with_schema_version(0);
    store
        .append(&s, ExpectedVersion::NoStream, vec![max.clone(), zero])
        .await
        .expect("the largest schema version and 0 are kept");
    let read = store
        .read_stream(&s, StreamVersion(1), 10, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(read[0].schema_version, MAX_SCHEMA_VERSION, "stored exactly");
    assert_eq!(read[1].schema_version, 0);
    // The exact retry is an idempotent replay, not EVENT_ID_REUSED.
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![max, read_back(&read[1])],
        )
        .await
        .expect("the exact retry");

    for too_big in [MAX_SCHEMA_VERSION + 1, u32::MAX] {
        let e = store
            .append(
                &stream("bounds-2"),
                ExpectedVersion::Any,
                vec![event(3).with_schema_version(too_big)],
            )
            .await
            .expect_err("refused");
        assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
        assert_eq!(e.field_violations()[0].field, "events[0].schema_version");
        assert_eq!(
            e.field_violations()[0].reason,
            "SCHEMA_VERSION_OUT_OF_RANGE"
        );
    }
    assert_eq!(
        store.stream_version(&stream("bounds-2")).await.expect("v"),
        StreamVersion(0),
        "nothing stored"
    );

    for huge in [u64::MAX, i64::MAX as u64, i64::MAX as u64 + 1] {
        let e = store
            .append(
                &s,
                ExpectedVersion::Exact(StreamVersion(huge)),
                vec![event(4)],
            )
            .await
            .expect_err("a conflict");
        assert_eq!(e.reason(), WRONG_EXPECTED_VERSION, "{e}");
        let none = store
            .read_stream(&s, StreamVersion(huge), 10, ReadDirection::Forward)
            .await
            .expect("read");
        assert!(none.is_empty());
        let none = store.read_all(Position(huge), 10).await.expect("read all");
        assert!(none.is_empty());
    }
    h
}

/// The same event as a `NewEvent` again (id, type, schema version, payload).
fn read_back(e: &RecordedEvent) -> NewEvent {
    NewEvent::new(e.event_id, e.event_type.clone(), e.payload.clone())
        .with_schema_version(e.schema_version)
}

/// Within a stream, global position order equals version order, for plain appends and for
/// appends in a transaction that wrote something first (its positions may be fixed
/// early): 4 writers append to one stream while a fifth runs such transactions against
/// it. A store may refuse such an append with a retryable conflict (`ABORTED`), never
/// reorder it.
pub async fn a_streams_versions_follow_the_global_order<H: Harness>(h: H) -> H {
    let store = h.store();
    let order = stream("order-1");
    let rounds = 60;
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let store = store.clone();
        let order = order.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..rounds {
                store
                    .append(&order, ExpectedVersion::Any, vec![event(w * 1_000 + i)])
                    .await
                    .expect("append");
            }
        }));
    }
    let mut refused = 0;
    for i in 0..rounds / 2 {
        let outbox = stream(&format!("outbox-{i}"));
        loop {
            let done = h
                .append_after_a_write(
                    &outbox,
                    vec![event(10_000 + i)],
                    &order,
                    vec![event(20_000 + i)],
                    Duration::from_millis(3),
                )
                .await;
            match done {
                Ok(()) => break,
                Err(e) if e.code() == ErrorCode::Aborted => refused += 1,
                Err(e) => panic!("a transactional append failed: {e}"),
            }
        }
    }
    for w in writers {
        w.await.expect("writer");
    }
    let all = read_all_until(&store, Position::START, (4 * rounds + rounds) as usize).await;
    let versions: Vec<u64> = all
        .iter()
        .filter(|e| e.stream_id == order)
        .map(|e| e.stream_version.0)
        .collect();
    let inversions: Vec<(u64, u64)> = versions
        .windows(2)
        .filter(|w| w[0] >= w[1])
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        inversions.is_empty(),
        "versions out of global order ({} refused and retried): {inversions:?}",
        refused
    );
    assert_eq!(versions.len() as u64, 4 * rounds + rounds / 2);
    h
}

/// An append refused inside a transaction is resolved as the transaction sees the
/// stream (its own writes included), with the same error and details as a plain append,
/// and leaves the transaction usable.
pub async fn a_refused_append_in_a_transaction_sees_its_writes<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("tx-refused");
    let (refused, rest) = h.refused_in_a_transaction(&s).await;
    assert_eq!(refused.code(), ErrorCode::Aborted, "{refused}");
    assert_eq!(refused.reason(), WRONG_EXPECTED_VERSION);
    assert_eq!(
        refused.detail("actual"),
        Some(&json!(1)),
        "the transaction's own event counts: {refused}"
    );
    rest.expect("the transaction goes on after the refusal and commits");
    assert_eq!(store.stream_version(&s).await.expect("v"), StreamVersion(2));
    h
}

/// Cancellation safety: an append, a transactional append and commit, a projection batch
/// (fenced checkpoint and commit) and an idempotency claim, each dropped at its 1st, 2nd,
/// ... poll until it completes. After every drop the store keeps working (the next
/// append succeeds at once), and nothing acknowledged is lost. Prints the number of
/// cancellation points per operation.
pub async fn every_operation_survives_cancellation_at_every_poll<H: Harness>(h: H) -> H {
    use crate::cancel::at_every_poll;
    let store = h.store();
    let s = stream("cancel-1");
    let probe = stream("cancel-probe");
    let acknowledged = std::sync::Mutex::new(Vec::<EventId>::new());
    // The store still works: a plain append succeeds and every acknowledged event is there.
    let works = |_: usize| {
        let store = store.clone();
        let probe = probe.clone();
        let acked = acknowledged.lock().expect("acked").clone();
        async move {
            let fresh = event(999);
            let id = fresh.event_id;
            tokio::time::timeout(
                Duration::from_secs(10),
                store.append(&probe, ExpectedVersion::Any, vec![fresh]),
            )
            .await
            .expect("the store answers after a cancelled operation")
            .expect("and appends");
            // Readable soon (PostgreSQL: once no older transaction is open).
            let mut ids = HashSet::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let mut after = Position::START;
                loop {
                    let page = store.read_all(after, 1_000).await.expect("read");
                    let Some(last) = page.last() else { break };
                    after = last.position;
                    ids.extend(page.iter().map(|e| e.event_id));
                }
                if ids.contains(&id) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the probe append is not readable: an abandoned transaction holds readers back"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for a in acked {
                assert!(ids.contains(&a), "acknowledged event {a} is kept");
            }
        }
    };

    let mut n = 0u64;
    let (out, appends) = at_every_poll(
        || {
            n += 1;
            let e = event(n);
            let (store, s) = (store.clone(), s.clone());
            async move {
                let id = e.event_id;
                store
                    .append(&s, ExpectedVersion::Any, vec![e])
                    .await
                    .map(|_| id)
            }
        },
        works,
    )
    .await;
    acknowledged
        .lock()
        .expect("acked")
        .push(out.expect("append"));

    let many: Vec<NewEvent> = (0..600).map(|i| event(10_000 + i)).collect();
    let (out, large) = at_every_poll(
        || {
            let batch: Vec<NewEvent> = many
                .iter()
                .map(|e| NewEvent::new(EventId::new(), e.event_type.clone(), e.payload.clone()))
                .collect();
            let (store, s) = (store.clone(), s.clone());
            async move { store.append(&s, ExpectedVersion::Any, batch).await }
        },
        works,
    )
    .await;
    out.expect("a large append");

    let (out, transactional) = at_every_poll(
        || {
            n += 1;
            let e = event(n);
            let id = e.event_id;
            let fut = h.append_in_transaction(&s, vec![e]);
            async move { fut.await.map(|_| id) }
        },
        works,
    )
    .await;
    acknowledged
        .lock()
        .expect("acked")
        .push(out.expect("tx append"));

    let lease = store
        .acquire_lease(
            "cancel-batch",
            &Instance::named("a"),
            Duration::from_secs(60),
        )
        .await
        .expect("acquire")
        .expect("free");
    let mut target = 0u64;
    let (out, batch) = at_every_poll(
        || {
            target += 1;
            let (store, lease) = (store.clone(), lease.clone());
            let p = Position(target);
            async move {
                let mut tx = store.begin().await?;
                store.set_checkpoint(&mut tx, &lease, p).await?;
                store.commit(tx).await.map(|_| p)
            }
        },
        works,
    )
    .await;
    let committed = out.expect("a batch");
    assert_eq!(
        store.load_checkpoint("cancel-batch").await.expect("load"),
        Some(committed),
        "the committed checkpoint"
    );

    let (out, claim) = at_every_poll(
        || {
            let store = store.clone();
            async move {
                store
                    .claim(
                        uuid::Uuid::now_v7(),
                        "cancel.claim",
                        Duration::from_secs(60),
                    )
                    .await
            }
        },
        works,
    )
    .await;
    assert!(matches!(out.expect("a claim"), Claim::Claimed));

    // A process manager's step: its state and a scheduled command with the checkpoint.
    let (out, step) = at_every_poll(
        || {
            target += 1;
            let (store, lease) = (store.clone(), lease.clone());
            let p = Position(target);
            let message = flext_ports::Scheduled {
                id: uuid::Uuid::now_v7(),
                key: format!("cancel-step-{target}"),
                due_at: chrono::Utc::now(),
                message: "test.step".to_owned(),
                payload: b"{}".to_vec(),
                metadata: EventMetadata::default(),
            };
            let state = flext_ports::StoredProcess {
                state: b"{}".to_vec(),
                version: target,
            };
            async move {
                use flext_ports::ProcessStore;
                let mut tx = store.begin().await?;
                store
                    .save_process(&mut tx, "cancel-pm", "x", &state)
                    .await?;
                store.schedule_in(&mut tx, &message).await?;
                store.set_checkpoint(&mut tx, &lease, p).await?;
                store.commit(tx).await.map(|_| p)
            }
        },
        works,
    )
    .await;
    out.expect("a process step");

    // Jobs: an enqueue, then a claim and its report.
    let new_job = |n: u64| flext_ports::NewJob {
        id: uuid::Uuid::now_v7(),
        kind: "cancel.job".to_owned(),
        payload: json!({ "n": n }).to_string().into_bytes(),
        metadata: EventMetadata::default(),
        run_at: chrono::Utc::now() - chrono::Duration::seconds(1),
        max_attempts: 3,
        recurring: None,
    };
    let (out, enqueue) = at_every_poll(
        || {
            n += 1;
            let (store, job) = (store.clone(), new_job(n));
            async move {
                use flext_ports::JobStore;
                store.enqueue(&job).await
            }
        },
        works,
    )
    .await;
    assert!(out.expect("an enqueue"));
    for i in 0..200 {
        use flext_ports::JobStore;
        store.enqueue(&new_job(100_000 + i)).await.expect("enqueue");
    }
    let (out, run) = at_every_poll(
        || {
            let store = store.clone();
            async move {
                use flext_ports::JobStore;
                let now = chrono::Utc::now();
                let jobs = store
                    .claim_jobs("w", &["cancel.job"], now, 1, Duration::from_secs(60))
                    .await?;
                match jobs.first() {
                    Some(job) => store.complete_job(job, now).await,
                    None => Ok(false),
                }
            }
        },
        works,
    )
    .await;
    assert!(out.expect("a job's claim and report"));

    // An inbox record with a dead letter, and an outbox message, each in a transaction;
    // then the outbox read and its removal.
    let (out, inbox) = at_every_poll(
        || {
            n += 1;
            let store = store.clone();
            let id = format!("cancel-m-{n}");
            async move {
                use flext_ports::{InboxDeadLetter, InboxStore};
                let mut tx = store.begin().await?;
                let fresh = store.receive(&mut tx, "cancel-inbox", &id).await?;
                let letter = InboxDeadLetter {
                    consumer: "cancel-inbox".to_owned(),
                    message_id: id,
                    subject: "a.b".to_owned(),
                    headers: Vec::new(),
                    payload: b"{}".to_vec(),
                    error: Error::invalid_argument("BAD", "bad"),
                    deliveries: 1,
                    parked_at: chrono::Utc::now(),
                };
                store.park_message(&mut tx, &letter).await?;
                store.commit(tx).await.map(|()| fresh)
            }
        },
        works,
    )
    .await;
    assert!(out.expect("an inbox record"));
    let (out, outbox) = at_every_poll(
        || {
            n += 1;
            let store = store.clone();
            async move {
                use flext_ports::{OutboxMessage, OutboxStore};
                let message = OutboxMessage::json(
                    "cancel.out",
                    &json!({ "n": n }),
                    &flext_ports::Context::new(),
                )?;
                let mut tx = store.begin().await?;
                store.send_in(&mut tx, &message).await?;
                store.commit(tx).await
            }
        },
        works,
    )
    .await;
    out.expect("an outbox message");
    let (out, relay) = at_every_poll(
        || {
            let store = store.clone();
            async move {
                use flext_ports::OutboxStore;
                let read = store.outbox_after(0, 100).await?;
                let Some(last) = read.last() else {
                    return Ok(0);
                };
                let mut tx = store.begin().await?;
                let removed = store.outbox_sent(&mut tx, last.order).await?;
                store.commit(tx).await.map(|()| removed)
            }
        },
        works,
    )
    .await;
    out.expect("an outbox read and removal");

    println!(
        "cancellation points: append {appends}, large append {large}, transactional append + commit {transactional}, \
         projection batch {batch}, idempotency claim {claim}, process step {step}, job enqueue {enqueue}, \
         job claim + report {run}, inbox record {inbox}, outbox message {outbox}, outbox removal {relay}"
    );
    h
}

/// Idempotency records are forgotten after their retention: a purge keeps what is younger
/// than the period and removes what is older, after which the id can be claimed anew.
pub async fn idempotency_records_are_purged_after_their_retention<H: Harness>(h: H) -> H {
    let store = h.store();
    let id = uuid::Uuid::now_v7();
    assert!(matches!(
        store
            .claim(id, "t", Duration::from_secs(60))
            .await
            .expect("claim"),
        Claim::Claimed
    ));
    store
        .complete(
            id,
            IdempotencyRecord {
                message_type: "t".into(),
                outcome: Ok(Bytes::from_static(b"1")),
            },
        )
        .await
        .expect("complete");
    assert_eq!(
        store
            .purge(Duration::from_secs(3_600))
            .await
            .expect("purge"),
        0
    );
    assert!(matches!(
        store
            .claim(id, "t", Duration::from_secs(60))
            .await
            .expect("claim"),
        Claim::Done(_)
    ));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.purge(Duration::ZERO).await.expect("purge"), 1);
    assert!(matches!(
        store
            .claim(id, "t", Duration::from_secs(60))
            .await
            .expect("claim"),
        Claim::Claimed
    ));
    h
}

/// An event of type `kind` carrying `n`.
fn typed_event(kind: &str, n: u64) -> NewEvent {
    NewEvent::new(
        EventId::new(),
        kind,
        json!({ "n": n }).to_string().into_bytes(),
    )
}

/// `read_all_of_types` returns only the types asked for, in position order, and says how
/// far it looked: to the head when fewer than asked matched, to the last match when the
/// page is full, nowhere past the position asked for when nothing is there.
pub async fn read_all_of_types_keeps_its_types_and_says_how_far_it_looked<H: Harness>(h: H) -> H {
    let store = h.store();
    let kinds = ["a", "b", "c", "b", "a", "b", "b", "c"];
    let mut positions = Vec::new();
    for (n, kind) in kinds.iter().enumerate() {
        let out = store
            .append(
                &stream(&format!("typed-{n}")),
                ExpectedVersion::NoStream,
                vec![typed_event(kind, n as u64)],
            )
            .await
            .expect("append");
        positions.push(out.positions[0]);
    }
    let head = *positions.last().expect("appended");
    // Visible to the gap-safe reads first (a transaction elsewhere may hold them back).
    read_all_until(&store, Position::START, kinds.len()).await;
    let numbers =
        |page: &flext_ports::FilteredPage| page.events.iter().map(n_of).collect::<Vec<_>>();

    let page = store
        .read_all_of_types(Position::START, 100, &["a", "c"])
        .await
        .expect("read");
    assert_eq!(numbers(&page), [0, 2, 4, 7]);
    assert!(page.events.iter().all(|e| e.event_type != "b"));
    assert_eq!(
        page.through, head,
        "fewer than asked: it looked to the head"
    );

    // Pages of two: each ends at its last match; following `through` reads each match once.
    let (mut after, mut seen, mut pages) = (Position::START, Vec::new(), 0);
    loop {
        let page = store
            .read_all_of_types(after, 2, &["a", "c"])
            .await
            .expect("read");
        assert!(page.through >= after, "through never goes back");
        if let Some(last) = page.events.last() {
            assert!(page.through >= last.position);
        }
        if page.through == after && page.events.is_empty() {
            break;
        }
        seen.extend(numbers(&page));
        after = page.through;
        pages += 1;
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(seen, [0, 2, 4, 7]);
    assert_eq!(after, head);

    // A type nobody wrote: nothing, but the read still moves past everything there.
    let none = store
        .read_all_of_types(Position::START, 100, &["z"])
        .await
        .expect("read");
    assert!(none.events.is_empty());
    assert_eq!(none.through, head);
    // Past the head: nothing, and no further than asked.
    let past = store
        .read_all_of_types(head, 100, &["a"])
        .await
        .expect("read");
    assert_eq!((past.events.len(), past.through), (0, head));
    // After position 2 (the first "c"), from the middle.
    let mid = store
        .read_all_of_types(positions[2], 100, &["c"])
        .await
        .expect("read");
    assert_eq!(numbers(&mid), [7]);
    h
}

/// Gap safety of the filtered read: while an append with a lower position is held open,
/// `through` never passes it, so a reader that checkpoints `through` gets the held events
/// once they commit. Writers of matching and other types run meanwhile.
pub async fn read_all_of_types_is_gap_safe_with_a_held_transaction<H: Harness>(h: H) -> H {
    let store = h.store();
    let base = store
        .append(
            &stream("typed-before"),
            ExpectedVersion::NoStream,
            vec![typed_event("other", 1)],
        )
        .await
        .expect("append");
    let checkpoint = base.positions[0];
    let held = h
        .hold_append(
            &stream("typed-slow"),
            ExpectedVersion::NoStream,
            vec![typed_event(EVENT_TYPE, 2)],
        )
        .await
        .expect("held append");
    let fast = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(
                    &stream("typed-fast"),
                    ExpectedVersion::NoStream,
                    vec![typed_event("other", 3), typed_event(EVENT_TYPE, 4)],
                )
                .await
        })
    };
    let fast = if H::SERIALIZED_WRITERS {
        Err(fast)
    } else {
        Ok(fast.await.expect("fast task").expect("fast append"))
    };
    let mut looked = Vec::new();
    for _ in 0..5 {
        let page = store
            .read_all_of_types(checkpoint, 10, &[EVENT_TYPE])
            .await
            .expect("read");
        assert!(
            page.events.is_empty(),
            "returned {:?} past an open append",
            versions(&page.events)
        );
        looked.push(page.through);
        tokio::task::yield_now().await;
    }
    let held_out = held.commit().await.expect("commit held");
    if let Err(task) = fast {
        task.await.expect("fast task").expect("fast append");
    }
    assert!(
        looked.iter().all(|t| *t < held_out.positions[0]),
        "through {looked:?} passed the open append at {}",
        held_out.positions[0]
    );
    let mut after = *looked.iter().max().expect("looked");
    let mut seen = Vec::new();
    for _ in 0..4_000 {
        let page = store
            .read_all_of_types(after, 10, &[EVENT_TYPE])
            .await
            .expect("read");
        seen.extend(page.events.iter().map(n_of));
        after = page.through;
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen, [2, 4], "the checkpointed reader misses nothing");
    h
}

/// Eight writers append events of two types while a reader follows one type by
/// `through` alone: it sees every event of that type exactly once, in position order.
pub async fn a_filtered_tailing_reader_misses_nothing<H: Harness>(h: H) -> H {
    let store = h.store();
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 25;
    let wanted = (WRITERS * APPENDS) as usize;
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut after, mut seen, mut idle) = (Position::START, Vec::new(), 0u32);
            while seen.len() < wanted {
                let page = store
                    .read_all_of_types(after, 7, &["wanted"])
                    .await
                    .expect("read");
                assert!(page.through >= after);
                if page.through == after {
                    idle += 1;
                    assert!(
                        idle < 10_000,
                        "reader starved at {} of {wanted}",
                        seen.len()
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    idle = 0;
                }
                after = page.through;
                seen.extend(page.events);
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let s = stream(&format!("filtered-{w}"));
            for i in 0..APPENDS {
                let batch = vec![
                    typed_event("unwanted", w * 1_000 + i),
                    typed_event("wanted", w * 1_000 + i),
                ];
                let expected = ExpectedVersion::Exact(StreamVersion(i * 2));
                store.append(&s, expected, batch).await.expect("append");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer task");
    }
    let seen = reader.await.expect("reader task");
    assert_eq!(seen.len(), wanted);
    assert!(seen.iter().all(|e| e.event_type == "wanted"));
    let ids: HashSet<EventId> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), wanted, "every event exactly once");
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    h
}

/// The schedule's rules: due messages come earliest first and only when due; scheduling
/// a key again replaces its message; `cancel` says whether something was pending;
/// `delivered` removes a message only while it is the one pending under its key.
pub async fn scheduled_messages_are_replaced_cancelled_and_delivered_by_key<H: Harness>(h: H) -> H {
    use flext_ports::{ScheduleStore, Scheduled};
    let store = h.store();
    let now = chrono::Utc::now();
    // Due times are kept to the microsecond.
    let at = |seconds: i64| {
        let t = now + chrono::Duration::seconds(seconds);
        chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).expect("a time")
    };
    let message = |key: &str, due: chrono::DateTime<chrono::Utc>, n: u64| Scheduled {
        id: uuid::Uuid::now_v7(),
        key: key.to_owned(),
        due_at: due,
        message: "test.remind".to_owned(),
        payload: json!({ "n": n }).to_string().into_bytes(),
        metadata: EventMetadata::default().with_correlation(CorrelationId::new()),
    };
    assert_eq!(store.next_due().await.expect("next"), None);
    let second = message("second", at(-5), 2);
    let first = message("first", at(-10), 1);
    let later = message("later", at(3_600), 3);
    for m in [&second, &first, &later] {
        store.schedule(m).await.expect("schedule");
    }
    let due = store.due(now, 10).await.expect("due");
    assert_eq!(
        due.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
        ["first", "second"],
        "earliest first, the later one not yet"
    );
    assert_eq!(due[0], first, "every field kept");
    assert_eq!(
        store.due(now, 1).await.expect("due").len(),
        1,
        "at most max"
    );
    assert_eq!(
        store
            .next_due()
            .await
            .expect("next")
            .map(|d| d.timestamp_micros()),
        Some(first.due_at.timestamp_micros())
    );

    // Scheduled again under "first": the old message's delivery removes nothing.
    let replaced = message("first", at(-1), 4);
    store.schedule(&replaced).await.expect("replace");
    store.delivered(&first).await.expect("delivered");
    let due = store.due(now, 10).await.expect("due");
    assert_eq!(
        due.iter().map(|m| m.id).collect::<Vec<_>>(),
        [second.id, replaced.id]
    );
    store.delivered(&replaced).await.expect("delivered");
    assert!(store.cancel("second").await.expect("cancel"));
    assert!(
        !store.cancel("second").await.expect("cancel"),
        "already gone"
    );
    assert!(store.due(now, 10).await.expect("due").is_empty());
    assert_eq!(
        store
            .next_due()
            .await
            .expect("next")
            .map(|d| d.timestamp_micros()),
        Some(later.due_at.timestamp_micros())
    );
    h
}

/// Process state and the messages a step schedules or cancels are written in the
/// projection transaction: a read through it sees its writes, a commit makes them
/// visible together, a transaction dropped before its commit leaves nothing, and one
/// whose checkpoint is refused (a stale lease) leaves nothing either.
pub async fn process_state_commits_with_the_checkpoint_or_not_at_all<H: Harness>(h: H) -> H {
    use flext_ports::{ProcessStore, ScheduleStore, Scheduled, StoredProcess};
    let store = h.store();
    let message = |key: &str| Scheduled {
        id: uuid::Uuid::now_v7(),
        key: key.to_owned(),
        due_at: chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
            .expect("a time"),
        message: "test.step".to_owned(),
        payload: json!({ "key": key }).to_string().into_bytes(),
        metadata: EventMetadata::default().with_correlation(CorrelationId::new()),
    };
    let state = |n: u64| StoredProcess {
        state: json!({ "n": n }).to_string().into_bytes(),
        version: n,
    };
    let pending = message("deadline-1");
    store.schedule(&pending).await.expect("schedule");
    let lease = store
        .acquire_lease("pm", &Instance::named("a"), Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("free");

    // Committed: state, scheduled message and cancellation together.
    let sent = message("send-1");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        store.load_process(&mut tx, "pm", "x").await.expect("load"),
        None
    );
    store
        .save_process(&mut tx, "pm", "x", &state(1))
        .await
        .expect("save");
    store
        .save_process(&mut tx, "pm", "y", &state(1))
        .await
        .expect("save");
    assert_eq!(
        store.load_process(&mut tx, "pm", "x").await.expect("load"),
        Some(state(1)),
        "a transaction reads its own writes"
    );
    store
        .save_process(&mut tx, "pm", "x", &state(2))
        .await
        .expect("save");
    store.schedule_in(&mut tx, &sent).await.expect("schedule");
    assert!(
        store
            .cancel_in(&mut tx, "deadline-1")
            .await
            .expect("cancel")
    );
    assert!(
        !store
            .cancel_in(&mut tx, "deadline-1")
            .await
            .expect("cancel"),
        "cancelled already in this transaction"
    );
    store
        .set_checkpoint(&mut tx, &lease, Position(1))
        .await
        .expect("checkpoint");
    store.commit(tx).await.expect("commit");
    assert_eq!(
        store.processes("pm").await.expect("list"),
        vec![("x".to_owned(), state(2)), ("y".to_owned(), state(1))]
    );
    assert!(store.processes("other").await.expect("list").is_empty());
    let due = store.due(chrono::Utc::now(), 10).await.expect("due");
    assert_eq!(due, vec![sent.clone()], "the cancelled deadline is gone");

    // Dropped before its commit: nothing of it stays.
    let mut tx = store.begin().await.expect("begin");
    store.end_process(&mut tx, "pm", "x").await.expect("end");
    store
        .save_process(&mut tx, "pm", "z", &state(1))
        .await
        .expect("save");
    store
        .schedule_in(&mut tx, &message("send-2"))
        .await
        .expect("schedule");
    store.cancel_in(&mut tx, "send-1").await.expect("cancel");
    drop(tx);
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(
        store.load_process(&mut tx, "pm", "x").await.expect("load"),
        Some(state(2)),
        "the dropped end changed nothing"
    );
    store.end_process(&mut tx, "pm", "y").await.expect("end");
    assert_eq!(
        store.load_process(&mut tx, "pm", "y").await.expect("load"),
        None
    );
    store.commit(tx).await.expect("commit");
    assert_eq!(
        store.processes("pm").await.expect("list"),
        vec![("x".to_owned(), state(2))]
    );
    assert_eq!(
        store.due(chrono::Utc::now(), 10).await.expect("due"),
        vec![sent.clone()]
    );

    // A stale lease: the checkpoint is refused and the step's writes with it.
    let short = store
        .acquire_lease("pm-2", &Instance::named("a"), Duration::from_millis(50))
        .await
        .expect("acquire")
        .expect("free");
    tokio::time::sleep(Duration::from_millis(150)).await;
    store
        .acquire_lease("pm-2", &Instance::named("b"), Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("lapsed: free");
    let mut tx = store.begin().await.expect("begin");
    store
        .save_process(&mut tx, "pm-2", "x", &state(1))
        .await
        .expect("save");
    store
        .schedule_in(&mut tx, &message("send-3"))
        .await
        .expect("schedule");
    store.cancel_in(&mut tx, "send-1").await.expect("cancel");
    let refused = match store.set_checkpoint(&mut tx, &short, Position(1)).await {
        Err(e) => Err(e),
        Ok(()) => store.commit(tx).await,
    };
    let e = refused.expect_err("a stale lease cannot commit");
    assert_eq!(e.reason(), "OWNERSHIP_LOST", "{e}");
    assert!(store.processes("pm-2").await.expect("list").is_empty());
    assert_eq!(
        store.due(chrono::Utc::now(), 10).await.expect("due"),
        vec![sent]
    );
    h
}

/// The job queue's rules: a claim takes due jobs earliest first and begins an attempt,
/// each job by one claimer at a time (also under concurrent claims); `complete` and
/// `fail` apply only to the caller's attempt; a failed attempt is queued again at its
/// retry time or dead, a dead job redriven; a lapsed lock is claimed again; a cancelled
/// job is never claimed; a recurring due time is enqueued once; a job enqueued in a
/// transaction exists once it commits and not if it is dropped.
pub async fn jobs_are_claimed_once_retried_dead_lettered_redriven_and_cancelled<H: Harness>(
    h: H,
) -> H {
    use flext_ports::{JobState, JobStore, NewJob};
    let store = h.store();
    let t0 = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
        .expect("a time");
    let secs = move |n: i64| t0 + chrono::Duration::seconds(n);
    let job = |kind: &str, at: chrono::DateTime<chrono::Utc>, n: u64| NewJob {
        id: uuid::Uuid::now_v7(),
        kind: kind.to_owned(),
        payload: json!({ "n": n }).to_string().into_bytes(),
        metadata: EventMetadata::default().with_correlation(CorrelationId::new()),
        run_at: at,
        max_attempts: 3,
        recurring: None,
    };
    let lock = Duration::from_secs(30);
    let (first, second, later, other) = (
        job("a", secs(-2), 1),
        job("a", secs(-1), 2),
        job("a", secs(60), 3),
        job("b", secs(-3), 4),
    );
    for j in [&second, &later, &other, &first] {
        assert!(store.enqueue(j).await.expect("enqueue"));
    }
    let claimed = store
        .claim_jobs("w1", &["a"], t0, 10, lock)
        .await
        .expect("claim");
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [first.id, second.id],
        "due ones of its kinds, earliest first"
    );
    assert!(claimed.iter().all(|j| j.attempts == 1
        && j.state == JobState::Running
        && j.locked_by.as_deref() == Some("w1")));
    assert_eq!(claimed[0].payload, first.payload, "payload kept");
    assert_eq!(claimed[0].metadata, first.metadata, "metadata kept");
    assert!(
        store
            .claim_jobs("w2", &["a"], t0, 10, lock)
            .await
            .expect("claim")
            .is_empty(),
        "running jobs are not claimed again while locked"
    );

    // Completed once; a second report is refused.
    assert!(store.complete_job(&claimed[0], t0).await.expect("complete"));
    assert!(!store.complete_job(&claimed[0], t0).await.expect("again"));

    // Failed: queued again at its retry time, then dead, then redriven.
    let j2 = &claimed[1];
    assert!(
        store
            .fail_job(j2, "boom", Some(secs(5)), t0)
            .await
            .expect("fail")
    );
    assert!(
        store
            .claim_jobs("w1", &["a"], secs(4), 10, lock)
            .await
            .expect("claim")
            .is_empty()
    );
    let again = store
        .claim_jobs("w1", &["a"], secs(5), 10, lock)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempts), (second.id, 2));
    assert_eq!(again[0].last_error.as_deref(), Some("boom"));
    assert_eq!(
        (again[0].due_at, again[0].run_at),
        (second.run_at, secs(5)),
        "the first due time is kept through a retry"
    );
    assert!(
        store
            .fail_job(&again[0], "boom again", None, secs(5))
            .await
            .expect("dead")
    );
    let dead = store
        .jobs_in(JobState::Dead, Some("a"), 10)
        .await
        .expect("dead");
    assert_eq!(dead.iter().map(|j| j.id).collect::<Vec<_>>(), [second.id]);
    assert!(
        store
            .jobs_in(JobState::Dead, Some("b"), 10)
            .await
            .expect("dead")
            .is_empty()
    );
    let stats = store.job_stats().await.expect("stats");
    let a = stats.iter().find(|s| s.kind == "a").expect("kind a");
    assert_eq!((a.queued, a.running, a.succeeded, a.dead), (1, 0, 1, 1));
    let b = stats.iter().find(|s| s.kind == "b").expect("kind b");
    assert_eq!(b.queued, 1);
    assert!(
        store
            .redrive_job(second.id, secs(6))
            .await
            .expect("redrive")
    );
    assert!(
        !store
            .redrive_job(second.id, secs(6))
            .await
            .expect("not dead")
    );
    let redriven = store
        .claim_jobs("w1", &["a"], secs(6), 10, lock)
        .await
        .expect("claim");
    assert_eq!((redriven[0].id, redriven[0].attempts), (second.id, 1));

    // A lapsed lock: another worker claims the job; the first one's report is refused.
    let short = store
        .claim_jobs("w1", &["b"], t0, 10, Duration::from_secs(1))
        .await
        .expect("claim");
    assert_eq!(short.len(), 1);
    let taken = store
        .claim_jobs("w2", &["b"], secs(2), 10, lock)
        .await
        .expect("claim");
    assert_eq!((taken[0].id, taken[0].attempts), (other.id, 2));
    assert!(
        !store.complete_job(&short[0], secs(2)).await.expect("stale"),
        "fenced"
    );
    assert!(
        !store
            .fail_job(&short[0], "x", None, secs(2))
            .await
            .expect("stale"),
        "fenced"
    );
    assert!(
        store
            .complete_job(&taken[0], secs(2))
            .await
            .expect("complete")
    );

    // Cancelled: never claimed; a running job's outcome is discarded.
    assert!(store.cancel_job(later.id).await.expect("cancel"));
    assert!(!store.cancel_job(later.id).await.expect("cancelled already"));
    let left = store
        .claim_jobs("w1", &["a"], secs(120), 10, lock)
        .await
        .expect("claim");
    assert!(
        left.iter().all(|j| j.id != later.id),
        "a cancelled job is not claimed"
    );
    assert!(
        store
            .cancel_job(redriven[0].id)
            .await
            .expect("cancel running")
    );
    assert!(
        !store
            .complete_job(&redriven[0], secs(7))
            .await
            .expect("cancelled")
    );
    assert_eq!(
        store.job(later.id).await.expect("job").map(|j| j.state),
        Some(JobState::Cancelled)
    );

    // A recurring due time once.
    let mut nightly = job("c", secs(-10), 5);
    nightly.recurring = Some("nightly".to_owned());
    assert!(store.enqueue(&nightly).await.expect("enqueue"));
    let mut twice = nightly.clone();
    twice.id = uuid::Uuid::now_v7();
    assert!(
        !store.enqueue(&twice).await.expect("enqueue"),
        "the due time is taken"
    );
    assert_eq!(
        store.last_recurring("nightly").await.expect("last"),
        Some(nightly.run_at)
    );
    assert_eq!(store.last_recurring("weekly").await.expect("last"), None);

    // In a transaction: there once committed, not at all when dropped.
    let (kept, dropped) = (job("d", secs(-1), 6), job("d", secs(-1), 7));
    let mut tx = store.begin().await.expect("begin");
    assert!(store.enqueue_in(&mut tx, &kept).await.expect("enqueue"));
    store.commit(tx).await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    assert!(store.enqueue_in(&mut tx, &dropped).await.expect("enqueue"));
    drop(tx);
    let d = store
        .claim_jobs("w1", &["d"], secs(1), 10, lock)
        .await
        .expect("claim");
    assert_eq!(d.iter().map(|j| j.id).collect::<Vec<_>>(), [kept.id]);

    // Concurrent claimers take each job once.
    for n in 0..200 {
        store
            .enqueue(&job("e", secs(-1), n))
            .await
            .expect("enqueue");
    }
    let claims = (0..4).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_jobs(&format!("w{w}"), &["e"], secs(1), 7, lock)
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        })
    });
    let mut all: Vec<uuid::Uuid> = Vec::new();
    for claim in claims.collect::<Vec<_>>() {
        all.extend(claim.await.expect("claimer"));
    }
    let unique: HashSet<uuid::Uuid> = all.iter().copied().collect();
    assert_eq!((all.len(), unique.len()), (200, 200), "each job once");

    // Completed together: each applied once.
    for n in 0..5 {
        store
            .enqueue(&job("f", secs(-1), n))
            .await
            .expect("enqueue");
    }
    let five = store
        .claim_jobs("w9", &["f"], secs(1), 10, lock)
        .await
        .expect("claim");
    assert_eq!(five.len(), 5);
    assert!(store.cancel_job(five[2].id).await.expect("cancel"));
    assert_eq!(
        store.complete_jobs(&five, secs(1)).await.expect("complete"),
        [true, true, false, true, true],
        "the cancelled one is not completed"
    );
    assert_eq!(
        store.complete_jobs(&five, secs(1)).await.expect("again"),
        [false; 5]
    );
    h
}

/// Control requests: taken by one instance only; finished with an outcome; and a request a
/// previous owner took and never finished goes back to pending when another instance
/// acquires the consumer (not for the instance that holds it itself).
pub async fn control_requests_are_taken_once_and_requeued_from_a_lost_owner<H: Harness>(h: H) -> H {
    use flext_ports::{ControlAction, ControlState, ControlStore};
    let store = h.store();
    let first = store
        .request_control("c", &ControlAction::Pause, "operator")
        .await
        .expect("request");
    let other = store
        .request_control("d", &ControlAction::Resume, "operator")
        .await
        .expect("request");
    assert!(
        store
            .take_control(first.id, "old@host:1")
            .await
            .expect("take")
    );
    assert!(
        !store
            .take_control(first.id, "new@host:2")
            .await
            .expect("take"),
        "taken once"
    );
    assert!(
        store
            .take_control(other.id, "old@host:1")
            .await
            .expect("take")
    );
    // The holder itself requeues nothing.
    assert_eq!(
        store
            .requeue_controls("c", "old@host:1")
            .await
            .expect("requeue"),
        0
    );
    let running = store
        .control_request(first.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(running.state, ControlState::Running);
    // A new owner of `c` gets its request back; `d`'s stays with its taker.
    assert_eq!(
        store
            .requeue_controls("c", "new@host:2")
            .await
            .expect("requeue"),
        1
    );
    let pending: Vec<_> = store
        .pending_controls()
        .await
        .expect("pending")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(pending, vec![first.id]);
    assert!(
        store
            .take_control(first.id, "new@host:2")
            .await
            .expect("take")
    );
    store
        .finish_control(first.id, Ok(json!({ "ok": true })))
        .await
        .expect("finish");
    let done = store
        .control_request(first.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(done.state, ControlState::Done);
    assert_eq!(done.taken_by.as_deref(), Some("new@host:2"));
    assert_eq!(done.result, Some(json!({ "ok": true })));
    // A finished request is never requeued.
    assert_eq!(
        store
            .requeue_controls("c", "third@host:3")
            .await
            .expect("requeue"),
        0
    );
    let still = store
        .control_request(other.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(still.state, ControlState::Running);
    h
}

/// Inbox records commit with the transaction or not at all, are kept per consumer, and
/// make a second delivery a duplicate, also when two transactions take the same message
/// at once; dead letters are parked, replaced and listed; old records are purged.
pub async fn inbox_records_make_a_redelivery_a_duplicate<H: Harness>(h: H) -> H {
    use flext_ports::{InboxDeadLetter, InboxStore};
    let store = h.store();

    // Rolled back: nothing recorded.
    let mut tx = store.begin().await.expect("begin");
    assert!(store.receive(&mut tx, "c", "m1").await.expect("receive"));
    assert!(
        !store.receive(&mut tx, "c", "m1").await.expect("receive"),
        "a transaction sees its own record"
    );
    drop(tx);
    let mut tx = store.begin().await.expect("begin");
    assert!(
        store.receive(&mut tx, "c", "m1").await.expect("receive"),
        "a rolled-back record is no record"
    );
    store.commit(tx).await.expect("commit");

    // Committed: a duplicate for the same consumer only.
    let mut tx = store.begin().await.expect("begin");
    assert!(!store.receive(&mut tx, "c", "m1").await.expect("receive"));
    drop(tx);
    let mut tx = store.begin().await.expect("begin");
    assert!(
        store
            .receive(&mut tx, "other", "m1")
            .await
            .expect("receive")
    );
    store.commit(tx).await.expect("commit");

    // Two transactions take the same message at once: one commits, the other finds the
    // record or fails to commit.
    let take = |store: H::Store| async move {
        let mut tx = store.begin().await?;
        if !store.receive(&mut tx, "c", "m2").await? {
            return Ok::<bool, Error>(false);
        }
        tokio::task::yield_now().await;
        store.commit(tx).await.map(|()| true)
    };
    let (a, b) = tokio::join!(
        tokio::spawn(take(store.clone())),
        tokio::spawn(take(store.clone()))
    );
    let committed = [a.expect("task"), b.expect("task")]
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    assert_eq!(committed, 1, "exactly one transaction records m2");

    // Dead letters: parked in the transaction, replaced by a second park, per consumer.
    let parked_at = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
        .expect("a time");
    let letter = |deliveries: u32| InboxDeadLetter {
        consumer: "c".to_owned(),
        message_id: "m3".to_owned(),
        subject: "a.b".to_owned(),
        headers: vec![("k".to_owned(), "v".to_owned())],
        payload: b"\x00{\"x\":1}".to_vec(),
        error: Error::invalid_argument("BAD", "bad message"),
        deliveries,
        parked_at,
    };
    let mut tx = store.begin().await.expect("begin");
    store.park_message(&mut tx, &letter(1)).await.expect("park");
    drop(tx);
    assert!(
        store
            .inbox_dead_letters("c")
            .await
            .expect("list")
            .is_empty()
    );
    for n in [1, 4] {
        let mut tx = store.begin().await.expect("begin");
        store.park_message(&mut tx, &letter(n)).await.expect("park");
        store.commit(tx).await.expect("commit");
    }
    let letters = store.inbox_dead_letters("c").await.expect("list");
    assert_eq!(letters.len(), 1, "replaced, not added");
    let got = &letters[0];
    let want = letter(4);
    assert_eq!(
        (
            &got.message_id,
            &got.subject,
            &got.headers,
            &got.payload,
            got.deliveries
        ),
        (
            &want.message_id,
            &want.subject,
            &want.headers,
            &want.payload,
            4
        )
    );
    assert_eq!(got.error.reason(), "BAD");
    assert_eq!(got.parked_at, want.parked_at);
    assert!(
        store
            .inbox_dead_letters("other")
            .await
            .expect("list")
            .is_empty()
    );

    // Purged: the consumer's old records go, another consumer's stay; a retention
    // longer than the clock reaches back removes nothing (and does not overflow).
    assert_eq!(
        store.purge_inbox("c", Duration::MAX).await.expect("purge"),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let purged = store.purge_inbox("c", Duration::ZERO).await.expect("purge");
    assert_eq!(purged, 2, "m1 and m2");
    let mut tx = store.begin().await.expect("begin");
    assert!(store.receive(&mut tx, "c", "m1").await.expect("receive"));
    assert!(
        !store
            .receive(&mut tx, "other", "m1")
            .await
            .expect("receive")
    );
    drop(tx);
    h
}

/// The outbox messages after `after`, read until at least `count` are visible (on
/// PostgreSQL, another test's open transaction anywhere on the server holds the gap-safe
/// horizon back for a moment).
async fn outbox_until<S: flext_ports::OutboxStore>(
    store: &S,
    after: u64,
    count: usize,
) -> Vec<flext_ports::OutboundMessage> {
    for _ in 0..4_000 {
        let read = store.outbox_after(after, 1_000).await.expect("read");
        if read.len() >= count {
            return read;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("fewer than {count} outbox messages became visible after {after}");
}

/// Outbox messages exist once their transaction commits, read back in position order and
/// gap-safe (a message of a transaction still open holds back the ones after it), and
/// are removed through a position in the relay's transaction.
pub async fn outbox_messages_commit_with_the_transaction_in_order<H: Harness>(h: H) -> H {
    use flext_ports::{OutboxMessage, OutboxStore};
    let store = h.store();
    let ctx = flext_ports::Context::new();
    let message = |n: u32| {
        OutboxMessage::json(format!("out.{n}"), &json!({ "n": n }), &ctx)
            .expect("message")
            .with_id(format!("m-{n}"))
            .with_header("k", "v\u{e9}")
    };
    let ids = |messages: &[flext_ports::OutboundMessage]| {
        messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>()
    };

    // Rolled back: never there.
    let mut tx = store.begin().await.expect("begin");
    store.send_in(&mut tx, &message(0)).await.expect("send");
    drop(tx);
    assert!(store.outbox_after(0, 100).await.expect("read").is_empty());

    // Committed: in order, every field kept, paged by position.
    for batch in [[1, 2], [3, 4]] {
        let mut tx = store.begin().await.expect("begin");
        for n in batch {
            store.send_in(&mut tx, &message(n)).await.expect("send");
        }
        store.commit(tx).await.expect("commit");
    }
    let all = outbox_until(&store, 0, 4).await;
    assert_eq!(ids(&all), ["m-1", "m-2", "m-3", "m-4"]);
    assert!(all.windows(2).all(|w| w[0].order < w[1].order));
    let want = message(1);
    assert_eq!(
        (&all[0].subject, &all[0].headers[..], &all[0].payload),
        (&want.subject, &want.headers[..], &want.payload)
    );
    let page = store.outbox_after(all[1].order, 1).await.expect("read");
    assert_eq!(ids(&page), ["m-3"]);

    // Gap-safe: while a transaction that wrote first is open, a later one's message is
    // not read past it.
    if !H::SERIALIZED_WRITERS {
        let mut first = store.begin().await.expect("begin");
        store.send_in(&mut first, &message(5)).await.expect("send");
        let mut second = store.begin().await.expect("begin");
        store.send_in(&mut second, &message(6)).await.expect("send");
        store.commit(second).await.expect("commit");
        let before = ids(&store.outbox_after(all[3].order, 100).await.expect("read"));
        store.commit(first).await.expect("commit");
        let after = ids(&outbox_until(&store, all[3].order, 2).await);
        assert!(
            after.starts_with(&before),
            "what was read stays first: nothing appears before it ({before:?}, then {after:?})"
        );
        let mut got = after.clone();
        got.sort();
        assert_eq!(got, ["m-5", "m-6"]);
    }

    // Removed through a position with the relay's checkpoint; rolled back, kept.
    let lease = store
        .acquire_lease("outbox", &Instance::named("a"), Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("free");
    let mut tx = store.begin().await.expect("begin");
    store
        .outbox_sent(&mut tx, all[1].order)
        .await
        .expect("sent");
    drop(tx);
    assert_eq!(
        store.outbox_after(0, 100).await.expect("read").len(),
        all.len() + if H::SERIALIZED_WRITERS { 0 } else { 2 }
    );
    let mut tx = store.begin().await.expect("begin");
    store
        .set_checkpoint(&mut tx, &lease, Position(all[1].order))
        .await
        .expect("checkpoint");
    store
        .outbox_sent(&mut tx, all[1].order)
        .await
        .expect("sent");
    store.commit(tx).await.expect("commit");
    let left = store.outbox_after(0, 100).await.expect("read");
    assert_eq!(ids(&left)[..2], ["m-3", "m-4"]);
    assert_eq!(
        store.load_checkpoint("outbox").await.expect("checkpoint"),
        Some(Position(all[1].order))
    );
    // New messages come after everything removed, never at a removed position.
    let mut tx = store.begin().await.expect("begin");
    store.send_in(&mut tx, &message(7)).await.expect("send");
    store.commit(tx).await.expect("commit");
    let last = outbox_until(&store, 0, left.len() + 1).await;
    assert_eq!(last.last().map(|m| m.id.as_str()), Some("m-7"));
    assert!(last.last().expect("m-7").order > all[3].order);
    h
}
