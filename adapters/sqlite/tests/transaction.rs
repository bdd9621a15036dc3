//! Appends inside a write transaction: several appends commit together with the caller's
//! own statements, or not at all; other writers wait for it.

use flext_domain::{EventId, ExpectedVersion, NewEvent, Position, StreamId, StreamVersion};
use flext_ports::{CheckpointStore, EventStore};
use flext_sqlite::SqliteEventStore;

async fn store() -> SqliteEventStore {
    let path = std::env::temp_dir().join(format!("flext-tx-{}.db", uuid::Uuid::now_v7().simple()));
    SqliteEventStore::open(path).await.expect("store")
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
    sqlx::query("CREATE TABLE read_model (n int)")
        .execute(tx.connection())
        .await
        .unwrap();
    assert_eq!(
        store.stream_version(&a).await.unwrap(),
        StreamVersion(0),
        "nothing visible before commit"
    );
    tx.commit().await.unwrap();
    let positions: Vec<Position> = [first.positions, second.positions].concat();
    let all = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        positions
    );
    sqlx::query("SELECT count(*) FROM read_model")
        .execute(store.reader_pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_before_the_next_write() {
    let store = store().await;
    let a = StreamId::new("a").unwrap();
    {
        let mut tx = store.transaction().await.unwrap();
        tx.append(&a, ExpectedVersion::NoStream, events(2))
            .await
            .unwrap();
    }
    let out = store
        .append(&a, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    assert_eq!(out.stream_version, StreamVersion(1));
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 1);
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
