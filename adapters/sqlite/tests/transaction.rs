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

/// A write from a connection of its own to the store's file, as another process (or the
/// read pool) makes one: waits up to 10 s for the file's write lock.
async fn foreign_write(path: &std::path::Path) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(std::time::Duration::from_secs(10));
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS foreign_writes (n INTEGER)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO foreign_writes VALUES (1)")
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// A transaction dropped unfinished (a cancelled request) gives the file's write lock back
/// at once, not when this store next writes: until then another process could not write
/// at all. It held the lock until the store's next write before.
#[tokio::test]
async fn a_dropped_transaction_gives_the_file_back_to_other_writers() {
    let path = std::env::temp_dir().join(format!("flext-tx-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("store");
    let a = StreamId::new("a").unwrap();
    {
        let mut tx = store.transaction().await.unwrap();
        tx.append(&a, ExpectedVersion::NoStream, events(2))
            .await
            .unwrap();
    }
    foreign_write(&path)
        .await
        .expect("another connection writes while the store is idle");
    assert_eq!(store.read_all(Position::START, 10).await.unwrap().len(), 0);
}

/// The same for an append dropped at any of its await points: the file is free for other
/// writers after each, and an append happened whole or not at all (a try dropped after
/// its COMMIT was sent is stored: the caller cannot tell, which is why appends carry ids).
#[tokio::test]
async fn an_append_dropped_half_way_gives_the_file_back_to_other_writers() {
    let path = std::env::temp_dir().join(format!("flext-tx-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("store");
    let a = StreamId::new("a").unwrap();
    let (out, points) = flext_testkit::cancel::at_every_poll(
        || store.append(&a, ExpectedVersion::Any, events(500)),
        |polls| {
            let path = path.clone();
            async move {
                foreign_write(&path)
                    .await
                    .unwrap_or_else(|e| panic!("dropped at poll {polls}: {e}"));
            }
        },
    )
    .await;
    out.expect("the last try completes");
    assert!(points > 0, "the append had await points to drop it at");
    let stored = store
        .read_all(Position::START, 100_000)
        .await
        .unwrap()
        .len();
    assert!(
        stored >= 500 && stored % 500 == 0,
        "{stored} events: a partial append"
    );
}

/// A conditional append inside a caller's transaction: it sees the transaction's own
/// earlier append (the condition fails on it), a failed condition leaves the
/// transaction usable, and what holds commits with the rest.
#[tokio::test]
async fn a_conditional_append_in_a_transaction_sees_its_writes_and_leaves_it_usable() {
    use flext_ports::{APPEND_CONDITION_FAILED, AppendCondition, EventQuery, QueryItem};
    let store = store().await;
    let seat = EventQuery::of(QueryItem::tags(["seat:1"]));
    let booked = || NewEvent::new(EventId::new(), "booked", &b"{}"[..]).with_tag("seat:1");
    let condition = AppendCondition::new(seat.clone(), Position::START);
    let (a, b, c) = (
        StreamId::new("booking-a").unwrap(),
        StreamId::new("booking-b").unwrap(),
        StreamId::new("other").unwrap(),
    );
    let mut tx = store.transaction().await.unwrap();
    let first = tx
        .append_if(&a, ExpectedVersion::NoStream, vec![booked()], &condition)
        .await
        .unwrap();
    let refused = tx
        .append_if(&b, ExpectedVersion::NoStream, vec![booked()], &condition)
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), APPEND_CONDITION_FAILED, "{refused}");
    assert_eq!(
        refused.detail("position"),
        Some(&serde_json::json!(first.positions[0].0))
    );
    tx.append(&c, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.stream_version(&a).await.unwrap(), StreamVersion(1));
    assert_eq!(store.stream_version(&b).await.unwrap(), StreamVersion(0));
    assert_eq!(store.stream_version(&c).await.unwrap(), StreamVersion(1));
}
