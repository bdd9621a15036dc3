//! Appends that lose a version race under pool pressure: each must come back as a
//! conflict, not wait for a second pooled connection while holding its first (with a pool
//! of two and twenty racing appends, that waited out the pool's 30 s acquire timeout and
//! came back `Unavailable`).

use flext_domain::{ErrorCode, EventId, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use flext_ports::EventStore;
use flext_postgres::PgEventStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_on_a_small_pool_come_back_as_conflicts() {
    let schema = format!("flext_t_pool_{}", uuid::Uuid::now_v7().simple());
    let store = PgEventStore::builder(flext_testkit::harness::database_url())
        .schema(schema)
        .max_connections(2)
        .connect()
        .await
        .expect("connect");
    let stream = StreamId::new("raced").expect("id");
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(EventId::new(), "t", &b"{}"[..])],
        )
        .await
        .expect("first");

    let racers: Vec<_> = (0..20)
        .map(|_| {
            let (store, stream) = (store.clone(), stream.clone());
            tokio::spawn(async move {
                store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(StreamVersion(1)),
                        vec![NewEvent::new(EventId::new(), "t", &b"{}"[..])],
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.expect("task") {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(
                (e.code(), e.reason()),
                (ErrorCode::Aborted, "WRONG_EXPECTED_VERSION"),
                "{e}"
            ),
        }
    }
    assert_eq!(won, 1, "exactly one append at version 1 wins");
}
