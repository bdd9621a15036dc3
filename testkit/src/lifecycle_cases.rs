//! Conformance cases for stream lifecycle: soft and hard deletion, truncation, archiving
//! and retention ([`flext_ports::StreamLifecycle`]). Re-exported from [`crate::cases`].

use std::sync::Arc;
use std::time::Duration;

use flext_domain::{
    Error, ErrorCode, ExpectedVersion, Position, RecordedEvent, StreamId, StreamVersion,
    WRONG_EXPECTED_VERSION,
};
use flext_ports::{
    EventStore, ReadDirection, RetentionPolicy, STREAM_DELETED, STREAM_TRUNCATED, Snapshot,
    SnapshotStore, StreamLifecycle, StreamStatus,
};
use serde_json::json;
use tokio::sync::Barrier;

use crate::Harness;
use crate::cases::{event, events, stream};
use crate::dcb_cases::visible;

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.stream_version.0).collect()
}

async fn read<S: EventStore>(store: &S, s: &StreamId) -> Result<Vec<u64>, Error> {
    store
        .read_stream(s, StreamVersion(1), 1_000, ReadDirection::Forward)
        .await
        .map(|e| versions(&e))
}

async fn replay<S: EventStore>(store: &S, s: &StreamId, from: u64) -> Result<Vec<u64>, Error> {
    let mut seen = Vec::new();
    store
        .replay_stream(s, StreamVersion(from), 1_000, |e| {
            seen.push(e.stream_version.0);
            Ok(())
        })
        .await?;
    Ok(seen)
}

/// Every event of `s` in `read_all`, once every event appended so far is visible: a marker
/// is appended to a stream of its own and waited for.
async fn in_read_all<S: EventStore>(store: &S, s: &StreamId, marker: &str) -> Vec<u64> {
    let m = store
        .append(&stream(marker), ExpectedVersion::Any, events(0, 1))
        .await
        .expect("marker");
    visible(store, m.positions[0]).await;
    let mut out = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 1_000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        after = last.position;
        let done = after >= m.positions[0];
        out.extend(
            page.iter()
                .filter(|e| &e.stream_id == s)
                .map(|e| e.stream_version.0),
        );
        if done {
            break;
        }
    }
    out
}

fn assert_deleted(result: Result<impl std::fmt::Debug, Error>, hard: bool) {
    let e = result.expect_err("a deleted stream's read must fail");
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert_eq!(e.reason(), STREAM_DELETED, "{e}");
    assert_eq!(e.detail("hard"), Some(&json!(hard)), "{e}");
}

/// A soft-deleted stream's reads, loads and version say `STREAM_DELETED`; its events stay
/// in `read_all` (what projections saw before stays true); other streams are untouched.
pub async fn a_deleted_stream_reads_as_deleted_and_stays_in_read_all<H: Harness>(h: H) -> H {
    let store = h.store();
    let (s, other) = (stream("cart-1"), stream("cart-2"));
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 3))
        .await
        .expect("append");
    store
        .append(&other, ExpectedVersion::NoStream, events(1, 2))
        .await
        .expect("append");
    store
        .save_snapshot(Snapshot {
            stream_id: s.clone(),
            version: StreamVersion(3),
            schema_version: 1,
            state: bytes::Bytes::from_static(b"{}"),
        })
        .await
        .expect("snapshot");
    let v = store
        .delete_stream(&s, ExpectedVersion::Exact(StreamVersion(3)))
        .await
        .expect("delete");
    assert_eq!(v, StreamVersion(3));
    // A revived stream starts a new life: the old life's snapshot must not seed it.
    assert!(store.load_snapshot(&s).await.expect("load").is_none());
    assert_deleted(read(&store, &s).await, false);
    assert_deleted(
        store
            .read_stream(&s, StreamVersion(3), 10, ReadDirection::Backward)
            .await,
        false,
    );
    assert_deleted(replay(&store, &s, 1).await, false);
    assert_deleted(store.stream_version(&s).await, false);
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!(info.status, StreamStatus::Deleted);
    assert_eq!(info.version, StreamVersion(3));
    assert_eq!(in_read_all(&store, &s, "marker").await, vec![1, 2, 3]);
    assert_eq!(read(&store, &other).await.expect("other"), vec![1, 2]);
    h
}

/// Deleting checks its expectation against the stream's version, refuses absent streams
/// by name, and deleting again with `Any` is a no-op that reports the same version.
pub async fn deleting_checks_the_expectation_and_refuses_absent_streams<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("cart-1");
    let e = store
        .delete_stream(&s, ExpectedVersion::Any)
        .await
        .expect_err("absent");
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
    assert_eq!(e.reason(), "STREAM_NOT_FOUND", "{e}");
    let e = store
        .tombstone_stream(&s, ExpectedVersion::Any)
        .await
        .expect_err("absent");
    assert_eq!(e.reason(), "STREAM_NOT_FOUND", "{e}");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 2))
        .await
        .expect("append");
    let e = store
        .delete_stream(&s, ExpectedVersion::Exact(StreamVersion(1)))
        .await
        .expect_err("stale");
    assert_eq!(e.reason(), WRONG_EXPECTED_VERSION, "{e}");
    assert_eq!(e.detail("actual"), Some(&json!(2)), "{e}");
    assert_eq!(read(&store, &s).await.expect("still live"), vec![1, 2]);
    for _ in 0..2 {
        let v = store
            .delete_stream(&s, ExpectedVersion::Any)
            .await
            .expect("delete");
        assert_eq!(v, StreamVersion(2));
    }
    let e = store
        .delete_stream(&s, ExpectedVersion::Exact(StreamVersion(2)))
        .await
        .expect_err("an exact expectation on a deleted stream");
    assert_eq!(e.reason(), STREAM_DELETED, "{e}");
    h
}

/// An append to a soft-deleted stream sees it as absent (`NoStream` and `Any` pass, an
/// exact version or `StreamExists` conflict), continues its numbering and revives it:
/// reads and loads then return only the new life's events.
pub async fn appending_to_a_deleted_stream_revives_it_with_continued_numbering<H: Harness>(
    h: H,
) -> H {
    let store = h.store();
    let s = stream("cart-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 3))
        .await
        .expect("append");
    store
        .delete_stream(&s, ExpectedVersion::Any)
        .await
        .expect("delete");
    for refused in [
        ExpectedVersion::Exact(StreamVersion(3)),
        ExpectedVersion::StreamExists,
    ] {
        let e = store
            .append(&s, refused, events(10, 1))
            .await
            .expect_err("the deleted stream counts as absent");
        assert_eq!(e.reason(), WRONG_EXPECTED_VERSION, "{e}");
        assert_eq!(e.detail("actual"), Some(&json!(0)), "{e}");
    }
    let retried = events(4, 2);
    let out = store
        .append(&s, ExpectedVersion::NoStream, retried.clone())
        .await
        .expect("revive");
    assert_eq!(out.stream_version, StreamVersion(5));
    // The exact retry of the reviving append returns its outcome.
    let again = store
        .append(&s, ExpectedVersion::NoStream, retried)
        .await
        .expect("retry");
    assert_eq!(again, out);
    assert_eq!(read(&store, &s).await.expect("read"), vec![4, 5]);
    assert_eq!(replay(&store, &s, 1).await.expect("replay"), vec![4, 5]);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(5)
    );
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!(info.status, StreamStatus::Live);
    assert_eq!(info.first_readable, StreamVersion(4));
    store
        .append(&s, ExpectedVersion::Exact(StreamVersion(5)), events(6, 1))
        .await
        .expect("the revived stream takes exact expectations");
    assert_eq!(
        in_read_all(&store, &s, "marker").await,
        vec![1, 2, 3, 4, 5, 6]
    );
    h
}

/// A tombstoned stream loses its events (read-all too), reads say so, and every later
/// append is refused, whatever its expectation; tombstoning again succeeds.
pub async fn a_tombstoned_stream_refuses_appends_forever_and_leaves_read_all<H: Harness>(
    h: H,
) -> H {
    let store = h.store();
    let (s, other) = (stream("user-1"), stream("user-2"));
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 3))
        .await
        .expect("append");
    store
        .append(&other, ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    store
        .save_snapshot(Snapshot {
            stream_id: s.clone(),
            version: StreamVersion(3),
            schema_version: 1,
            state: bytes::Bytes::from_static(b"{}"),
        })
        .await
        .expect("snapshot");
    let e = store
        .tombstone_stream(&s, ExpectedVersion::Exact(StreamVersion(2)))
        .await
        .expect_err("stale");
    assert_eq!(e.reason(), WRONG_EXPECTED_VERSION, "{e}");
    let v = store
        .tombstone_stream(&s, ExpectedVersion::Exact(StreamVersion(3)))
        .await
        .expect("tombstone");
    assert_eq!(v, StreamVersion(3));
    assert_deleted(read(&store, &s).await, true);
    assert_deleted(replay(&store, &s, 4).await, true);
    assert!(store.load_snapshot(&s).await.expect("load").is_none());
    assert_deleted(store.stream_version(&s).await, true);
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(StreamVersion(3)),
        ExpectedVersion::StreamExists,
    ] {
        let e = store
            .append(&s, expected, events(9, 1))
            .await
            .expect_err("a tombstoned stream takes nothing");
        assert_eq!(e.code(), ErrorCode::FailedPrecondition, "{e}");
        assert_eq!(e.reason(), STREAM_DELETED, "{e}");
    }
    let e = store
        .delete_stream(&s, ExpectedVersion::Any)
        .await
        .expect_err("soft delete of a tombstone");
    assert_eq!(e.reason(), STREAM_DELETED, "{e}");
    assert_eq!(
        store
            .tombstone_stream(&s, ExpectedVersion::Any)
            .await
            .expect("again"),
        StreamVersion(3)
    );
    assert_eq!(
        store.stream_info(&s).await.expect("info").status,
        StreamStatus::Tombstoned
    );
    assert!(in_read_all(&store, &s, "marker").await.is_empty());
    assert_eq!(read(&store, &other).await.expect("other"), vec![1]);
    h
}

/// Truncating before version t removes the events below it (read-all too): reads start
/// at t, a replay from below t is `STREAM_TRUNCATED`, numbering continues; truncating past
/// the end removes everything and keeps the numbering.
pub async fn truncating_removes_events_before_a_version_and_keeps_numbering<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("log-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 5))
        .await
        .expect("append");
    let e = store
        .truncate_stream(&stream("log-9"), StreamVersion(2))
        .await
        .expect_err("absent");
    assert_eq!(e.reason(), "STREAM_NOT_FOUND", "{e}");
    assert_eq!(
        store
            .truncate_stream(&s, StreamVersion(1))
            .await
            .expect("nothing below 1"),
        0
    );
    assert_eq!(
        store
            .truncate_stream(&s, StreamVersion(3))
            .await
            .expect("truncate"),
        2
    );
    assert_eq!(read(&store, &s).await.expect("read"), vec![3, 4, 5]);
    let back = store
        .read_stream(&s, StreamVersion(9), 10, ReadDirection::Backward)
        .await
        .expect("backward");
    assert_eq!(versions(&back), vec![5, 4, 3]);
    let e = replay(&store, &s, 1).await.expect_err("truncated");
    assert_eq!(e.code(), ErrorCode::FailedPrecondition, "{e}");
    assert_eq!(e.reason(), STREAM_TRUNCATED, "{e}");
    assert_eq!(e.detail("first_version"), Some(&json!(3)), "{e}");
    assert_eq!(replay(&store, &s, 3).await.expect("from 3"), vec![3, 4, 5]);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(5)
    );
    assert_eq!(in_read_all(&store, &s, "marker-1").await, vec![3, 4, 5]);
    // Past the end: all gone, numbering kept.
    assert_eq!(
        store
            .truncate_stream(&s, StreamVersion(100))
            .await
            .expect("all"),
        3
    );
    assert!(read(&store, &s).await.expect("read").is_empty());
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(5)
    );
    let e = store
        .append(&s, ExpectedVersion::NoStream, events(9, 1))
        .await
        .expect_err("the stream still exists");
    assert_eq!(e.reason(), WRONG_EXPECTED_VERSION, "{e}");
    let out = store
        .append(&s, ExpectedVersion::Exact(StreamVersion(5)), events(6, 1))
        .await
        .expect("append after truncation");
    assert_eq!(out.stream_version, StreamVersion(6));
    assert_eq!(read(&store, &s).await.expect("read"), vec![6]);
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!(info.first_readable, StreamVersion(6));
    // Removing the newest event of the store never lets its position be given again:
    // a reader that saw it would miss what takes its place.
    let newest = store
        .append(&stream("tail-1"), ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    store
        .truncate_stream(&stream("tail-1"), StreamVersion(2))
        .await
        .expect("truncate the newest event");
    let next = store
        .append(&stream("tail-2"), ExpectedVersion::NoStream, events(1, 1))
        .await
        .expect("append");
    assert!(
        next.positions[0] > newest.positions[0],
        "{:?} was given again",
        next.positions[0]
    );
    h
}

/// An aggregate whose stream was truncated below its snapshot loads as before: the
/// snapshot and the replay from the version after it.
pub async fn a_truncated_stream_loads_from_its_snapshot<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("account-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 6))
        .await
        .expect("append");
    store
        .save_snapshot(Snapshot {
            stream_id: s.clone(),
            version: StreamVersion(4),
            schema_version: 1,
            state: bytes::Bytes::from_static(b"{\"n\":4}"),
        })
        .await
        .expect("snapshot");
    store
        .truncate_stream(&s, StreamVersion(5))
        .await
        .expect("truncate up to the snapshot");
    let snap = store
        .load_snapshot(&s)
        .await
        .expect("load")
        .expect("a snapshot");
    assert_eq!(snap.version, StreamVersion(4));
    assert_eq!(
        replay(&store, &s, snap.version.0 + 1)
            .await
            .expect("the rest"),
        vec![5, 6]
    );
    let e = replay(&store, &s, 4).await.expect_err("one too early");
    assert_eq!(e.reason(), STREAM_TRUNCATED, "{e}");
    h
}

/// Archived events leave `read_all` but stream reads (both directions) and loads read
/// through them unchanged; appends continue; a later truncation removes from the archive
/// too.
pub async fn archived_events_read_through_and_leave_read_all<H: Harness>(h: H) -> H {
    let store = h.store();
    let s = stream("order-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1, 6))
        .await
        .expect("append");
    let before = store
        .read_stream(&s, StreamVersion(1), 100, ReadDirection::Forward)
        .await
        .expect("read");
    assert_eq!(
        store
            .archive_stream(&s, StreamVersion(5))
            .await
            .expect("archive"),
        4
    );
    assert_eq!(
        store
            .archive_stream(&s, StreamVersion(5))
            .await
            .expect("again"),
        0
    );
    let after = store
        .read_stream(&s, StreamVersion(1), 100, ReadDirection::Forward)
        .await
        .expect("read through");
    assert_eq!(after, before, "every field reads back from the archive");
    let page = store
        .read_stream(&s, StreamVersion(3), 3, ReadDirection::Forward)
        .await
        .expect("a page across the boundary");
    assert_eq!(versions(&page), vec![3, 4, 5]);
    let back = store
        .read_stream(&s, StreamVersion(5), 3, ReadDirection::Backward)
        .await
        .expect("backward");
    assert_eq!(versions(&back), vec![5, 4, 3]);
    assert_eq!(
        replay(&store, &s, 1).await.expect("load"),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(in_read_all(&store, &s, "marker-1").await, vec![5, 6]);
    store
        .append(&s, ExpectedVersion::Exact(StreamVersion(6)), events(7, 1))
        .await
        .expect("append");
    let info = store.stream_info(&s).await.expect("info");
    assert_eq!(info.archived_below, StreamVersion(5));
    assert_eq!(
        store
            .truncate_stream(&s, StreamVersion(3))
            .await
            .expect("truncate"),
        2
    );
    assert_eq!(read(&store, &s).await.expect("read"), vec![3, 4, 5, 6, 7]);
    // Tombstoning removes archived events as well: reviving is impossible, and read-all
    // never had them.
    store
        .tombstone_stream(&s, ExpectedVersion::Any)
        .await
        .expect("tombstone");
    assert_deleted(read(&store, &s).await, true);
    h
}

/// Retention: a count keeps the newest events, an age drops those recorded before the
/// cutoff, an archiving policy moves instead of removing, a pass is idempotent, and
/// policies are validated.
pub async fn retention_policies_keep_the_newest_and_archive_on_request<H: Harness>(h: H) -> H {
    let store = h.store();
    let (counted, aged, archived) = (
        stream("metrics-1"),
        stream("metrics-2"),
        stream("metrics-3"),
    );
    for s in [&counted, &aged, &archived] {
        store
            .append(s, ExpectedVersion::NoStream, events(1, 5))
            .await
            .expect("append");
    }
    let e = store
        .set_retention(&counted, Some(RetentionPolicy::max_count(0)))
        .await
        .expect_err("zero");
    assert_eq!(e.reason(), "INVALID_RETENTION", "{e}");
    store
        .set_retention(&counted, Some(RetentionPolicy::max_count(2)))
        .await
        .expect("policy");
    store
        .set_retention(
            &aged,
            Some(RetentionPolicy::max_age(Duration::from_secs(60))),
        )
        .await
        .expect("policy");
    store
        .set_retention(&archived, Some(RetentionPolicy::max_count(1).archiving()))
        .await
        .expect("policy");
    // A policy on a stream not appended to yet is kept and skipped.
    store
        .set_retention(&stream("metrics-4"), Some(RetentionPolicy::max_count(1)))
        .await
        .expect("policy ahead of the stream");
    assert_eq!(
        store.stream_info(&counted).await.expect("info").retention,
        Some(RetentionPolicy::max_count(2))
    );
    let recorded = store
        .read_stream(&aged, StreamVersion(5), 1, ReadDirection::Backward)
        .await
        .expect("read")[0]
        .recorded_at;
    // Now: a minute after the last event was recorded, the aged stream's events all
    // expire; its numbering stays.
    let now = recorded + chrono::Duration::seconds(61);
    let report = store.apply_retention(now).await.expect("apply");
    assert_eq!(report.streams, 4);
    assert_eq!(report.removed, 3 + 5);
    assert_eq!(report.archived, 4);
    assert_eq!(read(&store, &counted).await.expect("read"), vec![4, 5]);
    assert!(read(&store, &aged).await.expect("read").is_empty());
    assert_eq!(
        store.stream_version(&aged).await.expect("version"),
        StreamVersion(5)
    );
    assert_eq!(
        read(&store, &archived).await.expect("read through"),
        vec![1, 2, 3, 4, 5]
    );
    let again = store.apply_retention(now).await.expect("again");
    assert_eq!((again.removed, again.archived), (0, 0));
    // Before the cutoff nothing of a fresh stream goes.
    let young = stream("metrics-5");
    store
        .append(&young, ExpectedVersion::NoStream, events(1, 2))
        .await
        .expect("append");
    store
        .set_retention(
            &young,
            Some(RetentionPolicy::max_age(Duration::from_secs(3600))),
        )
        .await
        .expect("policy");
    store.apply_retention(now).await.expect("apply");
    assert_eq!(read(&store, &young).await.expect("read"), vec![1, 2]);
    store
        .set_retention(&counted, None)
        .await
        .expect("clear the policy");
    store
        .append(&counted, ExpectedVersion::Any, events(6, 3))
        .await
        .expect("append");
    store.apply_retention(now).await.expect("apply");
    assert_eq!(
        read(&store, &counted).await.expect("read"),
        vec![4, 5, 6, 7, 8]
    );
    h
}

/// Eight writers append to one stream while it is deleted, and to another while it is
/// tombstoned: every append lands wholly before or after the operation. Of the deleted
/// stream, what was appended after the deletion is exactly what reads return and the
/// stream is live again; of the tombstoned one, no acknowledged append is later than the
/// tombstone and none of its events remain.
pub async fn appends_racing_deletes_land_before_or_after_them<H: Harness>(h: H) -> H {
    let store = h.store();
    let (soft, hard) = (stream("race-soft"), stream("race-hard"));
    for s in [&soft, &hard] {
        store
            .append(s, ExpectedVersion::NoStream, events(0, 1))
            .await
            .expect("append");
    }
    let writers = 8;
    let start = Arc::new(Barrier::new(writers + 1));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, start, soft, hard) = (store.clone(), start.clone(), soft.clone(), hard.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut soft_versions = Vec::new();
            let mut hard_versions = Vec::new();
            for i in 0..6u64 {
                let n = (w as u64) * 100 + i;
                if let Ok(out) = store
                    .append(&soft, ExpectedVersion::Any, vec![event(n)])
                    .await
                {
                    soft_versions.push(out.stream_version.0);
                }
                match store
                    .append(&hard, ExpectedVersion::Any, vec![event(n)])
                    .await
                {
                    Ok(out) => hard_versions.push(out.stream_version.0),
                    Err(e) => assert_eq!(e.reason(), STREAM_DELETED, "{e}"),
                }
            }
            (soft_versions, hard_versions)
        }));
    }
    start.wait().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let deleted_at = store
        .delete_stream(&soft, ExpectedVersion::Any)
        .await
        .expect("delete");
    let tombstoned_at = store
        .tombstone_stream(&hard, ExpectedVersion::Any)
        .await
        .expect("tombstone");
    let mut soft_after = Vec::new();
    for t in tasks {
        let (s, hv) = t.await.expect("writer");
        soft_after.extend(s.into_iter().filter(|v| *v > deleted_at.0));
        for v in hv {
            assert!(
                v <= tombstoned_at.0,
                "an append acknowledged at version {v} after the tombstone at {}",
                tombstoned_at.0
            );
        }
    }
    soft_after.sort_unstable();
    match store.stream_info(&soft).await.expect("info").status {
        StreamStatus::Live => {
            assert!(!soft_after.is_empty(), "revived without an append after");
            assert_eq!(read(&store, &soft).await.expect("read"), soft_after);
        }
        StreamStatus::Deleted => assert!(
            soft_after.is_empty(),
            "appended {soft_after:?} after the deletion but the stream still reads as deleted"
        ),
        other => panic!("unexpected status {other:?}"),
    }
    assert!(in_read_all(&store, &hard, "marker").await.is_empty());
    h
}
