//! The outbox relay on a real NATS with JetStream, from SQLite and PostgreSQL stores:
//! messages written in transactions by four writers at once while the relay runs are
//! published once each, in each writer's order, and never when their transaction rolled
//! back; a relay started again publishes nothing twice; published messages leave the
//! outbox table.

use std::collections::BTreeMap;
use std::time::Duration;

use flext::application::{OutboxRelay, OwnershipOptions};
use flext::ports::{Context, Instance, OutboxMessage, OutboxStore, OwnershipStore};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext_nats::JetStream;

mod common;
use common::nats_url;

const WRITERS: usize = 4;
const PER_WRITER: usize = 50;

/// Writes `PER_WRITER` messages as writer `w`, numbered from `from`, one transaction
/// each; every third transaction also writes a message and rolls back.
async fn write<S: OutboxStore>(store: S, prefix: String, w: usize, from: usize) {
    let ctx = Context::new();
    for n in from..from + PER_WRITER {
        let message = |id: String| {
            OutboxMessage::json(
                format!("{prefix}.w{w}"),
                &serde_json::json!({ "n": n }),
                &ctx,
            )
            .expect("message")
            .with_id(id)
        };
        if n % 3 == 0 {
            let mut tx = store.begin().await.expect("begin");
            store
                .send_in(&mut tx, &message(format!("rolled-{w}-{n}")))
                .await
                .expect("send");
            drop(tx);
        }
        let mut tx = store.begin().await.expect("begin");
        store
            .send_in(&mut tx, &message(format!("w{w}-{n:03}")))
            .await
            .expect("send");
        store.commit(tx).await.expect("commit");
    }
}

/// Every message id stream `name` holds, in stored order.
async fn ids(nats: &JetStream, name: &str) -> Vec<String> {
    let stream = nats.context().get_stream(name).await.expect("stream");
    let count = stream.get_info().await.expect("info").state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let m = stream.get_raw_message(seq).await.expect("message");
        out.push(
            m.headers
                .get("Nats-Msg-Id")
                .expect("an id")
                .as_str()
                .to_owned(),
        );
    }
    out
}

async fn until_stored(nats: &JetStream, name: &str, n: u64) {
    for _ in 0..600 {
        let stream = nats.context().get_stream(name).await.expect("stream");
        if stream.get_info().await.expect("info").state.messages >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} does not hold {n} messages within a minute");
}

fn relay<S>(store: &S, nats: &JetStream, name: &str) -> OutboxRelay
where
    S: OutboxStore + OwnershipStore + Clone,
{
    OutboxRelay::builder("test.outbox", store.clone(), nats.publisher(name))
        .instance(Instance::named("outbox-test"))
        .ownership(OwnershipOptions::default())
        .poll(Duration::from_millis(10))
        .batch(32)
        .start()
        .expect("start")
}

async fn publishes_each_committed_message_once<S>(store: S)
where
    S: OutboxStore + OwnershipStore + Clone,
{
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, prefix) = (format!("O_{id}"), format!("o.{id}"));
    let nats = JetStream::connect(&nats_url()).await.expect("connect");
    nats.ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(120))
        .await
        .expect("stream");

    let first = relay(&store, &nats, &name);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(store.clone(), prefix.clone(), w, 0)))
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    until_stored(&nats, &name, (WRITERS * PER_WRITER) as u64).await;
    first.shutdown().await;

    // Written while no relay runs; a new one publishes them and nothing again.
    write(store.clone(), prefix.clone(), 0, PER_WRITER).await;
    let second = relay(&store, &nats, &name);
    until_stored(&nats, &name, ((WRITERS + 1) * PER_WRITER) as u64).await;
    // What was published leaves the table (with the checkpoint, after the acks).
    for _ in 0..600 {
        if store.outbox_after(0, 10).await.expect("outbox").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.shutdown().await;
    assert!(store.outbox_after(0, 10).await.expect("outbox").is_empty());

    let stored = ids(&nats, &name).await;
    assert!(
        stored.iter().all(|i| !i.starts_with("rolled")),
        "nothing rolled back is published"
    );
    let mut by_writer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in &stored {
        let (w, _) = i.split_once('-').expect("w-n");
        by_writer.entry(w.to_owned()).or_default().push(i.clone());
    }
    assert_eq!(by_writer.len(), WRITERS);
    for (w, got) in &by_writer {
        let count = if w == "w0" {
            2 * PER_WRITER
        } else {
            PER_WRITER
        };
        let want: Vec<String> = (0..count).map(|n| format!("{w}-{n:03}")).collect();
        assert_eq!(got, &want, "{w}: each once, in order");
    }
    let _ = nats.context().delete_stream(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_relay_publishes_each_committed_message_once_from_sqlite() {
    let path =
        std::env::temp_dir().join(format!("flext-outbox-{}.db", uuid::Uuid::now_v7().simple()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    publishes_each_committed_message_once(store.clone()).await;
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_relay_publishes_each_committed_message_once_from_postgres() {
    let store: PgEventStore = flext_testkit::harness::fresh_pg_store("outbox").await;
    publishes_each_committed_message_once(store).await;
}
