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

/// With a pool of one connection, held by a transaction, a refused append in it is still
/// resolved (on the transaction's own connection) instead of waiting for a second one.
#[tokio::test]
async fn a_refused_append_needs_no_second_connection() {
    let schema = format!("flext_t_pool1_{}", uuid::Uuid::now_v7().simple());
    let store = PgEventStore::builder(flext_testkit::harness::database_url())
        .schema(schema.as_str())
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let s = StreamId::new("one").unwrap();
    let mut tx = store.transaction().await.unwrap();
    tx.append(&s, ExpectedVersion::NoStream, events(1))
        .await
        .unwrap();
    let refused = tx
        .append(&s, ExpectedVersion::Exact(StreamVersion(5)), events(1))
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), "WRONG_EXPECTED_VERSION", "{refused:#}");
    assert_eq!(refused.detail("actual"), Some(&serde_json::json!(1)));
    tx.append(&s, ExpectedVersion::Exact(StreamVersion(1)), events(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.stream_version(&s).await.unwrap(), StreamVersion(2));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(store.pool())
        .await
        .unwrap();
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

/// The records the order guard reads are purged once no running transaction can need
/// them, and the guard still refuses a transaction that took its place before a
/// conditional append committed.
#[tokio::test]
async fn conditional_append_records_are_purged_below_the_horizon() {
    use flext_ports::{AppendCondition, DcbStore, EventQuery, QueryItem};
    let store = store().await;
    let tagged = |t: &str| NewEvent::new(EventId::new(), "booked", &b"{}"[..]).with_tag(t);
    let count = |store: PgEventStore| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM flext_dcb_conditions")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    // A transaction that wrote before the conditional append below.
    let mut early = store.transaction().await.unwrap();
    early
        .append(
            &StreamId::new("early-a").unwrap(),
            ExpectedVersion::NoStream,
            events(1),
        )
        .await
        .unwrap();
    for i in 0..3 {
        let tag = format!("room:{i}");
        store
            .append_if(
                &StreamId::new(format!("booking-{i}")).unwrap(),
                ExpectedVersion::NoStream,
                vec![tagged(&tag)],
                &AppendCondition::new(
                    EventQuery::of(QueryItem::tags([tag.clone()])),
                    Position::START,
                ),
            )
            .await
            .unwrap();
    }
    assert_eq!(count(store.clone()).await, 3);
    // The early transaction still runs: nothing may go yet.
    assert_eq!(store.purge_dcb_conditions().await.unwrap(), 0);
    let refused = early
        .append(
            &StreamId::new("early-b").unwrap(),
            ExpectedVersion::NoStream,
            vec![tagged("room:1")],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.reason(), "CONDITION_ORDER", "{refused}");
    early.rollback().await.unwrap();
    // Other tests' transactions in the cluster may hold the horizon back a moment.
    let mut purged = 0;
    for _ in 0..1_000 {
        purged += store.purge_dcb_conditions().await.unwrap();
        if purged == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(purged, 3);
    assert_eq!(count(store.clone()).await, 0);
}
