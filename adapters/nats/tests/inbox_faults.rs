//! The inbox when the way to NATS fails: its connection cut through a TCP proxy again and
//! again while it takes messages in. The pull consumer comes back by itself, what was in
//! flight is delivered again, and every message has its effect exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flext::Error;
use flext::application::{Inbox, InboxHandler};
use flext::ports::sql::{Sql, migrate};
use flext::ports::{Context, InboundMessage, sql_args};
use flext::sqlite::SqliteEventStore;
use flext_nats::{ConsumerOptions, JetStream};
use flext_testkit::proxy::FaultProxy;

mod common;
use common::nats_url;

const MESSAGES: usize = 1_000;

/// One row per handled message (no key: a second effect is a second row).
struct Record;

impl<T: Sql + Send> InboxHandler<T> for Record {
    async fn handle(&self, tx: &mut T, m: &InboundMessage, _: &Context) -> Result<(), Error> {
        migrate(
            &mut *tx,
            "effects",
            &["CREATE TABLE effects (message_id TEXT NOT NULL)"],
        )
        .await?;
        tx.execute(
            "INSERT INTO effects (message_id) VALUES ($1)",
            sql_args![m.id.as_str()],
        )
        .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_whose_connection_is_cut_again_and_again_takes_each_message_once() {
    let url = nats_url();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, prefix) = (format!("FI_{id}"), format!("fi.{id}"));
    let direct = JetStream::connect(&url).await.expect("connect");
    direct
        .ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(120))
        .await
        .expect("stream");
    for n in 0..MESSAGES {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("m-{n:04}").as_str());
        direct
            .context()
            .publish_with_headers(format!("{prefix}.work"), h, bytes::Bytes::new())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let proxy = FaultProxy::for_url(&url).await.expect("proxy");
    let through = JetStream::connect(&proxy.url_for(&url))
        .await
        .expect("connect through the proxy");
    let source = through
        .consumer_with(
            &name,
            "inbox",
            &[],
            ConsumerOptions {
                ack_wait: Duration::from_secs(1),
            },
        )
        .await
        .expect("consumer")
        .wait(Duration::from_millis(200));
    let path = std::env::temp_dir().join(format!("flext-inbox-faults-{id}.db"));
    let store = SqliteEventStore::open(&path).await.expect("open");
    let inbox = Inbox::builder("test.inbox", store.clone(), source)
        .handle(&format!("{prefix}.*"), Record)
        .batch(16)
        .start()
        .expect("start");

    let done = Arc::new(AtomicBool::new(false));
    let cuts = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) && n < 8 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(200)).await;
                proxy.pass();
                n += 1;
            }
            (proxy, n)
        })
    };
    // Every message acknowledged: nothing pending, nothing awaiting its ack.
    let settled = common::until_consumer_settled(&direct, &name, "inbox").await;
    done.store(true, Ordering::SeqCst);
    let (_proxy, n) = cuts.await.expect("cuts");
    assert!(settled, "every message acknowledged within two minutes");
    assert!(n > 0, "the connection was cut");
    inbox.shutdown().await;

    let effects: Vec<(String,)> = store
        .read_models()
        .fetch("SELECT message_id FROM effects ORDER BY message_id", vec![])
        .await
        .expect("effects");
    let expected: Vec<(String,)> = (0..MESSAGES).map(|n| (format!("m-{n:04}"),)).collect();
    assert_eq!(effects, expected, "each message's effect exactly once");
    store.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
    let _ = direct.context().delete_stream(&name).await;
}
