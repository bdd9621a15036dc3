//! The inbox as a real process (`examples/inbox_worker`), killed ten times between a
//! message's committed effect and its acknowledgement, then run to the end: JetStream
//! delivers each killed message again, the inbox finds its record and acknowledges it
//! without a second effect; every message has its effect exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext::sqlite::SqliteEventStore;
use flext_nats::JetStream;

mod common;
use common::nats_url;

const MESSAGES: usize = 300;
/// Where each run aborts: before its `n`th acknowledgement.
const ABORTS: [u64; 10] = [23, 41, 17, 60, 9, 33, 12, 50, 28, 19];

fn worker_binary() -> std::path::PathBuf {
    common::example_binary("inbox_worker")
}

/// A worker process and the lines it printed so far.
struct Worker {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(args: &[&str]) -> Worker {
        let mut child = Command::new(worker_binary())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the worker");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Worker { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Waits (at most two minutes) for the process to end by itself.
    async fn ended(&mut self) -> std::process::ExitStatus {
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Let the reader take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the worker did not abort: {:?}", self.lines());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_between_its_effect_and_its_ack_has_the_redelivery_deduplicated() {
    let url = nats_url();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (name, prefix) = (format!("IC_{id}"), format!("ic.{id}"));
    let nats = JetStream::connect(&url).await.expect("connect");
    nats.ensure_stream(&name, &[&format!("{prefix}.>")], Duration::from_secs(120))
        .await
        .expect("stream");
    for n in 0..MESSAGES {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("m-{n:03}").as_str());
        nats.context()
            .publish_with_headers(format!("{prefix}.work"), h, bytes::Bytes::new())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let path = std::env::temp_dir().join(format!("flext-inbox-crash-{id}.db"));
    let db = path.to_str().expect("path").to_owned();
    // The schema exists before the workers race to open the file.
    SqliteEventStore::open(&path)
        .await
        .expect("open")
        .close()
        .await
        .expect("close");

    let mut printed = Vec::new();
    let mut aborted = Vec::new();
    for n in ABORTS {
        let n = n.to_string();
        let mut worker = Worker::start(&[&db, &url, &name, "inbox", "--abort-before-ack", &n]);
        let status = worker.ended().await;
        assert!(!status.success(), "the worker aborted");
        let lines = worker.lines();
        let abort = lines
            .iter()
            .find_map(|l| l.strip_prefix("abort "))
            .unwrap_or_else(|| panic!("no abort line: {lines:?}"))
            .to_owned();
        aborted.push(abort);
        printed.extend(lines);
    }

    // The last run goes to the end: every message acknowledged.
    let last = Worker::start(&[&db, &url, &name, "inbox"]);
    let store = SqliteEventStore::open(&path).await.expect("open");
    let settled = common::until_consumer_settled(&nats, &name, "inbox").await;
    assert!(settled, "every message acknowledged within two minutes");
    printed.extend(last.lines());
    drop(last);

    let effects: Vec<(String,)> = store
        .read_models()
        .fetch("SELECT message_id FROM effects ORDER BY message_id", vec![])
        .await
        .expect("effects");
    let expected: Vec<(String,)> = (0..MESSAGES).map(|n| (format!("m-{n:03}"),)).collect();
    assert_eq!(effects, expected, "each message's effect exactly once");
    let count = |line: &str| printed.iter().filter(|l| *l == line).count();
    assert!(
        count("outcome handled") <= MESSAGES,
        "no message handled twice (a batch committed whole may be cut off before it is \
         counted)"
    );
    for id in &aborted {
        assert!(
            printed.contains(&format!("redelivered {id}")),
            "{id}, whose ack was never sent, was delivered again"
        );
    }
    assert!(
        count("outcome duplicate") >= ABORTS.len(),
        "each redelivery of a killed message was a duplicate: {}",
        count("outcome duplicate")
    );
    store.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
    let _ = nats.context().delete_stream(&name).await;
}
