//! Notifications on a network that fails quietly: a LISTEN connection left half-open
//! (the socket looks open, nothing crosses it) is noticed within its heartbeat and
//! replaced, and notifications flow again.

use std::time::Duration;

use flext_domain::{EventId, ExpectedVersion, NewEvent, StreamId};
use flext_ports::{EventStore, WatchAppends};
use flext_postgres::PgEventStore;
use flext_testkit::proxy::FaultProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_listen_connection_is_noticed_and_replaced() {
    let url = flext_testkit::harness::database_url();
    let direct = flext_testkit::harness::fresh_pg_store("notify").await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(direct.pool())
        .await
        .expect("schema");
    let proxy = FaultProxy::for_url(&url).await.expect("proxy");
    let proxied = PgEventStore::builder(proxy.url_for(&url))
        .schema(schema.as_str())
        .connect()
        .await
        .expect("connect through the proxy");

    let _first = proxied.watch_appends();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let before = loop {
        if let Some(pid) = proxied.listener_backend_pid() {
            break pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "LISTEN never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // The LISTEN connection's socket stays open but carries nothing from now on.
    proxy.stall_open_connections();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match proxied.listener_backend_pid() {
            Some(pid) if pid != before => break pid,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the half-open LISTEN connection (backend {before}) was never replaced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(before, after);

    // Notifications of another store's appends arrive on the new connection.
    let mut watcher = proxied.watch_appends();
    direct
        .append(
            &StreamId::new("s").expect("stream"),
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new(), "t", &b"{}"[..])],
        )
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(10), watcher.changed())
        .await
        .expect("the append is announced through the new LISTEN connection");
    drop(proxy);
}
