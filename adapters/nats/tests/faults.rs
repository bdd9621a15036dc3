//! The relay when the way to NATS fails: its connection cut through a TCP proxy again and
//! again while events are appended, and the NATS server (one this test starts) killed and
//! started again mid-relay. Afterwards every selected event is in the JetStream stream
//! once, in order per stream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flext::application::{ProjectionRunner, Projections, Relay, Select};
use flext::ports::{EventStore, Instance};
use flext::sqlite::SqliteEventStore;
use flext::{EventId, ExpectedVersion, NewEvent, Position, StreamId};
use flext_nats::{JetStream, JetStreamOptions, StreamPublisher};

mod common;
use common::stored;
use flext_testkit::proxy::FaultProxy;
use serde_json::json;

const STREAMS: [&str; 5] = ["acct-1", "acct-2", "acct-3", "acct-4", "acct-5"];
const PER_STREAM: u64 = 300;

fn nats_addr() -> SocketAddr {
    let url = std::env::var("FLEXT_NATS_URL").unwrap_or_else(|_| {
        panic!("FLEXT_NATS_URL is not set: run ./scripts/test, which finds or starts a NATS")
    });
    let hp = url.trim_start_matches("nats://");
    hp.parse()
        .unwrap_or_else(|e| panic!("{hp:?} is not host:port: {e}"))
}

/// Appends `PER_STREAM` events to each stream, ten at a time in turns, yielding between
/// appends so the relay runs meanwhile; the last position.
async fn write(store: SqliteEventStore) -> Position {
    let mut last = Position::START;
    for turn in (0..PER_STREAM).step_by(10) {
        for stream in STREAMS {
            let events = (turn..turn + 10)
                .map(|n| {
                    NewEvent::new(
                        EventId::new(),
                        "acct.moved",
                        serde_json::to_vec(&json!({ "n": n })).expect("json"),
                    )
                })
                .collect();
            last = store
                .append(
                    &StreamId::new(stream).expect("id"),
                    ExpectedVersion::Any,
                    events,
                )
                .await
                .expect("append")
                .last_position()
                .expect("a position");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    last
}

fn assert_each_once_in_order(by_stream: &BTreeMap<String, Vec<u64>>, count: u64) {
    let expected: Vec<u64> = (0..PER_STREAM).collect();
    assert_eq!(by_stream.len(), STREAMS.len());
    for (stream, ns) in by_stream {
        assert_eq!(ns, &expected, "{stream}: every event once, in order");
    }
    assert_eq!(count, PER_STREAM * STREAMS.len() as u64, "nothing twice");
}

fn start(
    store: &SqliteEventStore,
    publisher: StreamPublisher,
    prefix: &str,
) -> Projections<SqliteEventStore> {
    ProjectionRunner::new(store.clone())
        .with_instance(Instance::named("relay-faults"))
        .relay(Relay::new("test.outbox", publisher).route(
            Select::Category("acct".into()),
            format!("{prefix}.{{type}}"),
        ))
        .expect("register")
        .start()
}

async fn sqlite() -> (SqliteEventStore, std::path::PathBuf) {
    let path =
        std::env::temp_dir().join(format!("flext-relay-{}.db", uuid::Uuid::now_v7().simple()));
    (SqliteEventStore::open(&path).await.expect("open"), path)
}

fn quick() -> JetStreamOptions {
    JetStreamOptions {
        ack_timeout: Duration::from_secs(1),
        ..JetStreamOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_again_and_again_loses_doubles_and_reorders_nothing() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, prefix) = (format!("CUT_{id}"), format!("cut.{id}"));
    let direct = JetStream::connect(&format!("nats://{}", nats_addr()))
        .await
        .expect("connect");
    direct
        .ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(120))
        .await
        .expect("stream");
    let proxy = FaultProxy::start(nats_addr()).await.expect("proxy");
    let through = JetStream::connect_with(&format!("nats://{}", proxy.addr()), quick())
        .await
        .expect("connect through the proxy");
    let (store, path) = sqlite().await;
    let projections = start(&store, through.publisher(&name), &prefix);
    let writer = tokio::spawn(write(store.clone()));
    let done = Arc::new(AtomicBool::new(false));
    let cuts = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) && n < 8 {
                tokio::time::sleep(Duration::from_millis(120)).await;
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(200)).await;
                proxy.pass();
                n += 1;
            }
            (proxy, n)
        })
    };
    let head = writer.await.expect("writer");
    done.store(true, Ordering::SeqCst);
    let (_proxy, n) = cuts.await.expect("cuts");
    assert!(n > 0, "the connection was cut");
    projections
        .wait_for("test.outbox", head, Duration::from_secs(120))
        .await
        .expect("relayed after the cuts");
    let s = stored(&direct, &name).await;
    assert_each_once_in_order(&s.by_stream, s.ids.len() as u64);
    projections.shutdown().await;
    direct.context().delete_stream(&name).await.expect("drop");
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}

/// A NATS server of this test's own, on a free port, storing in `dir`.
struct Server(Child);

impl Server {
    fn start(port: u16, dir: &std::path::Path) -> Server {
        let bin = std::env::var("FLEXT_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        Server(
            Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {bin}: {e} (Debian: apt-get install nats-server)")
                }),
        )
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restarted_mid_relay_loses_doubles_and_reorders_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = std::env::temp_dir().join(format!("flext-nats-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("nats://127.0.0.1:{port}");
    let server = Server::start(port, &dir);
    let nats = JetStream::connect_with(&url, quick())
        .await
        .expect("connect");
    nats.ensure_stream("RESTART", &["restart.>"], Duration::from_secs(120))
        .await
        .expect("stream");
    let (store, path) = sqlite().await;
    let projections = start(&store, nats.publisher("RESTART"), "restart");
    let writer = tokio::spawn(write(store.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _server = Server::start(port, &dir);
    let head = writer.await.expect("writer");
    projections
        .wait_for("test.outbox", head, Duration::from_secs(120))
        .await
        .expect("relayed after the restart");
    let s = stored(&nats, "RESTART").await;
    assert_each_once_in_order(&s.by_stream, s.ids.len() as u64);
    projections.shutdown().await;
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_dir_all(dir);
}
