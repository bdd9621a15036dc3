//! Appends inside a caller's transaction: several appends commit together with the
//! caller's own statements, or not at all.

use flext_domain::{EventId, ExpectedVersion, NewEvent, Position, StreamId, StreamVersion};
use flext_ports::{CheckpointStore, EventStore};
use flext_postgres::PgEventStore;

async fn store() -> PgEventStore {
    flext_testkit::harness::fresh_pg_store("tx").await
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|_| NewEvent::new(EventId::new(), "t", &b"{}"[..]))
        .collect()
}

#[tokio::test]
async fn several_appends_and_own_statements_commit_together() {
    let store = store().await;
    let (a, b) = (StreamId::new("a").unwrap(), StreamId::new("b").unwrap());
    let mut tx = store.transaction().await.unwrap();
    let first = tx
        .append(&a, ExpectedVersion::NoStream, events(2))
        .await
        .unwrap();
    let second = tx
        .append(&b, ExpectedVersion::NoStream, events(3))
        .await
        .unwrap();
    let third = tx
        .append(&a, ExpectedVersion::Exact(StreamVersion(2)), events(1))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE read_model (n int)")
        .execute(tx.connection())
        .await
        .unwrap();
    let positions: Vec<Position> = [first.positions, second.positions, third.positions].concat();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(
        store.stream_version(&a).await.unwrap(),
        StreamVersion(0),
        "nothing visible before commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(store.stream_version(&a).await.unwrap(), StreamVersion(3));
    let all = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions
    );
    sqlx::query("SELECT count(*) FROM read_model")
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dropped_transaction_leaves_nothing() {
    let store = store().await;
    let a = StreamId::new("a").unwrap();
    {
        let mut tx = store.transaction().await.unwrap();
        tx.append(&a, ExpectedVersion::NoStream, events(2))
            .await
            .unwrap();
    }
    assert_eq!(store.stream_version(&a).await.unwrap(), StreamVersion(0));
    let out = store
        .append(&a, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    assert_eq!(out.stream_version, StreamVersion(1));
}

#[tokio::test]
async fn a_checkpoint_saved_in_a_transaction_commits_or_rolls_back_with_it() {
    let store = store().await;
    let a = StreamId::new("a").unwrap();
    let mut tx = store.transaction().await.unwrap();
    let out = tx
        .append(&a, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    tx.save_checkpoint("projection", out.positions[0])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(store.load_checkpoint("projection").await.unwrap(), None);

    let mut tx = store.transaction().await.unwrap();
    let out = tx
        .append(&a, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    tx.save_checkpoint("projection", out.positions[0])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.load_checkpoint("projection").await.unwrap(),
        Some(out.positions[0])
    );
}
