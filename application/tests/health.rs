//! Health checks: a PostgreSQL store behind a TCP proxy that is cut and restored (the
//! shared server is never stopped) turns its check and the aggregate report down, then up
//! again; a lagging projection reads degraded and a failed one down; SQLite, memory and
//! the plugin registry report up; the report's JSON shape.

mod support;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use flext_application::{
    HealthChecks, PluginRegistry, PoisonPolicy, ProjectionOptions, ProjectionRunner,
};
use flext_domain::{EventId, ExpectedVersion, NewEvent, StreamId};
use flext_memory::InMemoryEventStore;
use flext_ports::{EventStore, HealthCheck, HealthStatus};
use flext_postgres::PgEventStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::Backend;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy to PostgreSQL on a fixed local port that can be cut (listener and every
/// connection dropped) and restored.
struct Proxy {
    port: u16,
    upstream: String,
    tasks: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = probe.local_addr().expect("addr").port();
        drop(probe);
        let p = Proxy {
            port,
            upstream,
            tasks: Arc::default(),
        };
        p.restore();
        p
    }

    fn restore(&self) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket
            .bind(([127, 0, 0, 1], self.port).into())
            .expect("bind the proxy port");
        let listener = socket.listen(64).expect("listen");
        let upstream = self.upstream.clone();
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().expect("tasks").push(conn);
            }
        });
        self.tasks.lock().expect("tasks").push(accept);
    }

    fn cut(&self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

async fn status_within(check: &dyn HealthCheck, want: HealthStatus) -> flext_ports::Health {
    let mut last = None;
    for _ in 0..100 {
        let h = check.check().await;
        if h.status == want {
            return h;
        }
        last = Some(h);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never reported {want:?}; last: {last:?}", check.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_turns_the_store_and_the_report_down_then_up_again() {
    let direct = support::postgres().await;
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(direct.pool())
        .await
        .expect("schema");
    let url = flext_testkit::harness::database_url();
    let options = PgConnectOptions::from_str(&url).expect("url");
    let proxy = Proxy::start(format!("{}:{}", options.get_host(), options.get_port()));
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_with(
            options
                .clone()
                .host("127.0.0.1")
                .port(proxy.port)
                .options([("search_path", schema.as_str())]),
        )
        .await
        .expect("through the proxy");
    let store = PgEventStore::with_pool(pool).await.expect("store");
    let checks = HealthChecks::new()
        .with(store.clone())
        .with(InMemoryEventStore::new())
        .with_timeout(Duration::from_secs(3));

    let up = store.check().await;
    assert_eq!(up.status, HealthStatus::Up, "{up:?}");
    assert_eq!(
        up.details.get("migration_version"),
        up.details.get("expected_migration_version")
    );
    assert_eq!(checks.report().await.status, HealthStatus::Up);

    proxy.cut();
    let down = status_within(&store, HealthStatus::Down).await;
    assert!(down.details["reason"].contains("database"), "{down:?}");
    let report = checks.report().await;
    assert_eq!(report.status, HealthStatus::Down);
    assert_eq!(report.http_status(), 503);
    assert_eq!(report.checks["memory-event-store"].status, HealthStatus::Up);

    proxy.restore();
    status_within(&store, HealthStatus::Up).await;
    let report = checks.report().await;
    assert_eq!(report.status, HealthStatus::Up);
    assert_eq!(report.http_status(), 200);
    proxy.cut();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_read_degraded_when_lagging_and_down_when_failed() {
    let store = InMemoryEventStore::new();
    let model = store.model("lagging").await;
    let failing = store.model("failing").await;
    failing.knobs.poison.store(true, Ordering::SeqCst);
    let projections = ProjectionRunner::new(store.clone())
        .register(model.clone())
        .expect("register")
        .register_with(
            failing.clone(),
            ProjectionOptions {
                on_poison: PoisonPolicy::Stop,
                max_attempts: 1,
                ..ProjectionOptions::default()
            },
        )
        .expect("register")
        .start();
    let s = StreamId::new("s").expect("id");
    let first = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new(), "added", "1")],
        )
        .await
        .expect("append");
    projections
        .wait_for("lagging", first.positions[0], Duration::from_secs(10))
        .await
        .expect("caught up");
    let lagging = projections.health_check("lagging", 3).expect("check");
    assert_eq!(lagging.name(), "projection:lagging");
    let h = lagging.check().await;
    assert_eq!(
        (h.status, h.details["lag_events"].as_str()),
        (HealthStatus::Up, "0")
    );
    // Stall it and let 5 events wait.
    model.knobs.stall_on.store(2, Ordering::SeqCst);
    let mut events = vec![NewEvent::new(EventId::new(), "added", "2")];
    events.extend((0..5).map(|_| NewEvent::new(EventId::new(), "added", "3")));
    store
        .append(&s, ExpectedVersion::Any, events)
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(10), model.knobs.stalled.notified())
        .await
        .expect("stalls");
    let h = lagging.check().await;
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert_eq!(h.details["lag_events"], "6");
    // The failing projection stopped on its first poison event.
    store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new(), "poison", "4")],
        )
        .await
        .expect("append");
    let failed = projections.health_check("failing", 1_000).expect("check");
    let h = status_within(&failed, HealthStatus::Down).await;
    assert_eq!(h.details["state"], "failed");
    assert_eq!(h.details["last_error"], "POISON");
    let report = HealthChecks::new()
        .with(lagging)
        .with(failed)
        .with(PluginRegistry::new())
        .report()
        .await;
    assert_eq!(report.status, HealthStatus::Down);
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["status"], "down");
    assert_eq!(json["checks"]["projection:lagging"]["status"], "degraded");
    assert_eq!(
        json["checks"]["projection:failing"]["details"]["state"],
        "failed"
    );
    assert_eq!(json["checks"]["plugins"]["status"], "up");
    assert!(projections.health_check("nope", 1).is_err());
    projections.abort();
}

#[tokio::test]
async fn sqlite_reports_its_migrations() {
    let store = support::sqlite().await;
    let h = store.check().await;
    assert_eq!(h.status, HealthStatus::Up, "{h:?}");
    let latest = flext_sqlite::migrator()
        .iter()
        .map(|m| m.version)
        .max()
        .expect("migrations");
    assert_eq!(h.details["migration_version"], latest.to_string());
    assert_eq!(store.name(), "sqlite-event-store");
}
