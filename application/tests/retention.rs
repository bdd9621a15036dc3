//! The retention task on a SQLite file: it applies a stream's policy at once and again on
//! every pass, reports each pass, and stops when shut down.

use std::time::Duration;

use flext_application::RetentionTask;
use flext_domain::{EventId, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use flext_ports::{EventStore, FixedClock, ReadDirection, RetentionPolicy, StreamLifecycle};
use flext_sqlite::SqliteEventStore;

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| NewEvent::new(EventId::new(), "reading.taken", b"{}".to_vec()))
        .collect()
}

async fn versions(store: &SqliteEventStore, s: &StreamId) -> Vec<u64> {
    store
        .read_stream(s, StreamVersion(1), 100, ReadDirection::Forward)
        .await
        .expect("read")
        .iter()
        .map(|e| e.stream_version.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_applies_policies_on_every_pass_until_shut_down() {
    let path = std::env::temp_dir().join(format!(
        "flext-retention-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let store = SqliteEventStore::open(&path).await.expect("store");
    let (counted, aged) = (
        StreamId::new("sensor-1").expect("id"),
        StreamId::new("sensor-2").expect("id"),
    );
    store
        .append(&counted, ExpectedVersion::NoStream, events(5))
        .await
        .expect("append");
    store
        .append(&aged, ExpectedVersion::NoStream, events(2))
        .await
        .expect("append");
    store
        .set_retention(&counted, Some(RetentionPolicy::max_count(2)))
        .await
        .expect("policy");
    store
        .set_retention(
            &aged,
            Some(RetentionPolicy::max_age(Duration::from_secs(3_600)).archiving()),
        )
        .await
        .expect("policy");
    // A day later by the task's clock: the aged stream's events are all past their age.
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let task = RetentionTask::builder(store.clone())
        .every(Duration::from_millis(10))
        .clock(FixedClock(later))
        .start();
    let mut passes = task.passes();
    let first = passes
        .wait_for(|p| p.is_some())
        .await
        .expect("a pass")
        .clone()
        .expect("some")
        .expect("the pass succeeded");
    assert_eq!((first.streams, first.removed, first.archived), (2, 3, 2));
    assert_eq!(versions(&store, &counted).await, vec![4, 5]);
    // Archived, not removed: still read through.
    assert_eq!(versions(&store, &aged).await, vec![1, 2]);

    passes.borrow_and_update();
    store
        .append(
            &counted,
            ExpectedVersion::Exact(StreamVersion(5)),
            events(3),
        )
        .await
        .expect("append");
    // Passes in between remove nothing; the first to see the append removes its surplus.
    loop {
        passes.changed().await.expect("the task runs");
        let removed = match &*passes.borrow_and_update() {
            Some(Ok(r)) => r.removed,
            other => panic!("a failed pass: {other:?}"),
        };
        if removed > 0 {
            assert_eq!(removed, 3);
            break;
        }
    }
    assert_eq!(versions(&store, &counted).await, vec![7, 8]);

    task.shutdown().await;
    // A pass that ran before the shutdown may be unseen; after it, none can come.
    passes.borrow_and_update();
    assert!(
        passes.changed().await.is_err(),
        "no pass is reported after shutdown"
    );
    drop(store);
    let _ = std::fs::remove_file(&path);
}

/// What a projection (and so any subscription: both read the global order) sees of each
/// lifecycle operation, built from the start after them: a soft-deleted stream's old
/// events and its revival, nothing of a tombstoned stream, and of truncated and archived
/// streams only the events still in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_built_after_lifecycle_operations_sees_what_read_all_keeps() {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use flext_application::ProjectionRunner;
    use flext_domain::{Error, RecordedEvent};
    use flext_memory::{InMemoryEventStore, MemoryTransaction};
    use flext_ports::Projection;

    #[derive(Clone, Default)]
    struct PerStream(Arc<Mutex<BTreeMap<String, Vec<u64>>>>);
    impl Projection<MemoryTransaction> for PerStream {
        fn name(&self) -> &str {
            "per-stream"
        }
        async fn handle(&self, _: &mut MemoryTransaction, e: &RecordedEvent) -> Result<(), Error> {
            let mut seen = self.0.lock().expect("lock");
            seen.entry(e.stream_id.as_str().to_owned())
                .or_default()
                .push(e.stream_version.0);
            Ok(())
        }
    }

    let store = InMemoryEventStore::new();
    let id = |s: &str| StreamId::new(s).expect("id");
    let (kept, soft, hard, cut, cold) = (id("kept"), id("soft"), id("hard"), id("cut"), id("cold"));
    for (s, n) in [(&kept, 2), (&soft, 2), (&hard, 2), (&cut, 3), (&cold, 3)] {
        store
            .append(s, ExpectedVersion::NoStream, events(n))
            .await
            .expect("append");
    }
    store
        .delete_stream(&soft, ExpectedVersion::Any)
        .await
        .expect("delete");
    store
        .tombstone_stream(&hard, ExpectedVersion::Any)
        .await
        .expect("tombstone");
    store
        .truncate_stream(&cut, StreamVersion(3))
        .await
        .expect("truncate");
    store
        .archive_stream(&cold, StreamVersion(3))
        .await
        .expect("archive");
    let head = store
        .append(&soft, ExpectedVersion::NoStream, events(1))
        .await
        .expect("revive")
        .last_position()
        .expect("position");

    let model = PerStream::default();
    let projections = ProjectionRunner::new(store.clone())
        .register(model.clone())
        .expect("register")
        .start();
    projections
        .wait_for("per-stream", head, Duration::from_secs(20))
        .await
        .expect("caught up");
    projections.shutdown().await;
    let seen = model.0.lock().expect("lock").clone();
    let expected: BTreeMap<String, Vec<u64>> = [
        ("kept", vec![1, 2]),
        ("soft", vec![1, 2, 3]),
        ("cut", vec![3]),
        ("cold", vec![3]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(seen, expected);
}
