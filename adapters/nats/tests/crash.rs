//! The relay as a real process, SIGKILLed ten times in the middle of its work and started
//! again: afterwards the JetStream stream holds every selected event once, in order per
//! stream (whatever a killed process had published past its checkpoint is skipped, not
//! stored again).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flext::ports::EventStore;
use flext::sqlite::SqliteEventStore;
use flext::{EventId, ExpectedVersion, NewEvent, StreamId};
use flext_nats::JetStream;

mod common;
use common::{nats_url, stored};
use serde_json::json;

const STREAMS: [&str; 5] = ["acct-1", "acct-2", "acct-3", "acct-4", "acct-5"];
const PER_STREAM: u64 = 1_000;

fn worker_binary() -> std::path::PathBuf {
    common::example_binary("relay_worker")
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_ten_times_mid_batch_publishes_each_event_once() {
    let url = nats_url();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, prefix) = (format!("K_{id}"), format!("k.{id}"));
    let nats = JetStream::connect(&url).await.expect("connect");
    nats.ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(120))
        .await
        .expect("stream");
    let path = std::env::temp_dir().join(format!("flext-crash-{id}.db"));
    let store = SqliteEventStore::open(&path).await.expect("open");
    for turn in (0..PER_STREAM).step_by(100) {
        for stream in STREAMS {
            let events = (turn..turn + 100)
                .map(|n| {
                    NewEvent::new(
                        EventId::new(),
                        "acct.moved",
                        serde_json::to_vec(&json!({ "n": n })).expect("json"),
                    )
                })
                .collect();
            store
                .append(
                    &StreamId::new(stream).expect("id"),
                    ExpectedVersion::Any,
                    events,
                )
                .await
                .expect("append");
        }
    }
    let spawn = || {
        Worker(
            Command::new(worker_binary())
                .arg(&path)
                .args([url.as_str(), name.as_str(), prefix.as_str()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the relay"),
        )
    };
    let js = nats.context().get_stream(&name).await.expect("stream");
    let total = PER_STREAM * STREAMS.len() as u64;
    let mut killed_mid_way = 0;
    for round in 0..10u64 {
        let worker = spawn();
        // Kill it once it has published something more, at a different point each round.
        let before = js.get_info().await.expect("info").state.messages;
        let mut tries = 0;
        loop {
            let now = js.get_info().await.expect("info").state.messages;
            if now > before + 200 * (round % 3) || now == total {
                break;
            }
            tries += 1;
            assert!(tries < 3_000, "the relay published nothing for a long time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(worker); // SIGKILL
        if js.get_info().await.expect("info").state.messages < total {
            killed_mid_way += 1;
        }
    }
    assert!(
        killed_mid_way >= 5,
        "only {killed_mid_way} kills landed before the end"
    );
    // The last one runs to the end.
    let _last = spawn();
    let mut tries = 0;
    while js.get_info().await.expect("info").state.messages < total {
        tries += 1;
        assert!(tries < 6_000, "the relay never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment more: anything stored twice would show now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = js.get_info().await.expect("info").state.messages;
    assert_eq!(count, total, "nothing stored twice");
    let s = stored(&nats, &name).await;
    assert_eq!(s.ids.len() as u64, total);
    let by_stream = s.by_stream;
    let expected: Vec<u64> = (0..PER_STREAM).collect();
    for (stream, ns) in &by_stream {
        assert_eq!(ns, &expected, "{stream}: every event once, in order");
    }
    nats.context().delete_stream(&name).await.expect("drop");
    store.close().await.expect("close");
    let _ = std::fs::remove_file(path);
}
