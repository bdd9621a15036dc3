//! Relay figures on this machine's NATS (`FLEXT_NATS_URL`, default 127.0.0.1:4222):
//! raw async-nats JetStream publishing with acknowledgements (pipelined, the same bound
//! on acks in flight) next to the relay publishing the same number of stored events from
//! a SQLite file; then the latency from an append to the message arriving at a
//! subscriber, and from an append to its effect committed by an inbox in another store
//! (a second SQLite file), p50 and p99, with the relay running live; and the inbox's
//! throughput taking the relayed events in.
//!
//! ```text
//! cargo run --release -p flext-nats --example relay_bench
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flext::application::{
    Inbox, InboxHandler, PoisonPolicy, ProjectionOptions, ProjectionRunner, Relay, Select,
};
use flext::ports::sql::{Sql, migrate};
use flext::ports::{Context, EventStore, InboundMessage, Instance, Labels, Metrics, sql_args};
use flext::sqlite::SqliteEventStore;
use flext::{EventId, ExpectedVersion, NewEvent, Position, StreamId};
use flext_nats::{JetStream, JetStreamOptions};
use futures_util::StreamExt;

const N: u64 = 20_000;

/// The consumed effect: a row per message, holding the message's `i` (or -1).
struct Effect(Arc<AtomicI64>);

impl<T: Sql + Send> InboxHandler<T> for Effect {
    async fn handle(
        &self,
        tx: &mut T,
        m: &InboundMessage,
        _: &Context,
    ) -> Result<(), flext::Error> {
        let i = serde_json::from_slice::<serde_json::Value>(&m.payload)?["i"]
            .as_i64()
            .unwrap_or(-1);
        migrate(
            &mut *tx,
            "effects",
            &["CREATE TABLE effects (i BIGINT NOT NULL)"],
        )
        .await?;
        tx.execute("INSERT INTO effects (i) VALUES ($1)", sql_args![i])
            .await?;
        self.0.store(i, Ordering::SeqCst);
        Ok(())
    }
}

/// Tells the `i` of each message whose effect committed (the inbox takes one message
/// at a time and counts it handled after its commit).
struct Committed {
    last: Arc<AtomicI64>,
    done: tokio::sync::mpsc::UnboundedSender<i64>,
}

impl Metrics for Committed {
    fn count(&self, name: &'static str, _: u64, labels: Labels<'_>) {
        if name == "flext.inbox.messages" && labels.contains(&("outcome", "handled")) {
            let _ = self.done.send(self.last.load(Ordering::SeqCst));
        }
    }
}
/// Events per batch: `BATCH` env, else 2,000.
static BATCH_ENV: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(2_000)
});

/// "p50 …, p99 …, max …" of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len().saturating_sub(1)) as f64 * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("FLEXT_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let id = uuid::Uuid::now_v7().simple().to_string();
    let nats = JetStream::connect_with(&url, JetStreamOptions::default()).await?;

    // Raw: N messages of 64 bytes, up to 256 acks in flight, each with a message id.
    let raw = format!("RAW_{id}");
    nats.ensure_stream(&raw, &[&format!("raw.{id}.>")], Duration::from_secs(120))
        .await?;
    let payload = Bytes::from(vec![b'x'; 64]);
    let started = Instant::now();
    let mut acks = VecDeque::new();
    for i in 0..N {
        if acks.len() >= 256 {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                acks.pop_front().expect("one");
            ack.await?;
        }
        // The headers a relayed event carries, so both publish the same bytes.
        let mut publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(format!("{id}-{i}"));
        for (k, v) in [
            ("Flext-Event-Type", "acct.moved"),
            ("Flext-Schema-Version", "1"),
            ("Flext-Stream-Id", "acct-17"),
            ("Flext-Stream-Version", "123"),
            ("Flext-Position", "12345"),
            ("Flext-Recorded-At", "2026-12-01T23:56:07.757171+00:00"),
            (
                "Flext-Correlation-Id",
                "01a23409-80cc-7028-9f7c-a55dea9c103d",
            ),
            ("Flext-Order", "12345"),
        ] {
            publish = publish.header(k, v);
        }
        acks.push_back(
            nats.context()
                .send_publish(format!("raw.{id}.m"), publish)
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
    let raw_rate = N as f64 / started.elapsed().as_secs_f64();
    println!(
        "raw async-nats JetStream publish, {N} messages with the relay's headers: {raw_rate:.0} msg/s"
    );

    // The relay: N stored events over 50 streams, from the start.
    let path = std::env::temp_dir().join(format!("flext-relay-bench-{id}.db"));
    let store = SqliteEventStore::open(&path).await?;
    let mut head = Position::START;
    for turn in 0..N / 500 {
        for s in 0..50 {
            let events = (0..10)
                .map(|_| {
                    NewEvent::new(
                        EventId::new(),
                        "acct.moved",
                        br#"{"amount":64,"note":"a payload of about sixty-four bytes"}"#.to_vec(),
                    )
                })
                .collect();
            head = store
                .append(
                    &StreamId::new(format!("acct-{s}"))?,
                    ExpectedVersion::Any,
                    events,
                )
                .await?
                .last_position()
                .unwrap_or(head);
        }
        let _ = turn;
    }
    let out = format!("OUT_{id}");
    nats.ensure_stream(&out, &[&format!("out.{id}.>")], Duration::from_secs(120))
        .await?;
    let started = Instant::now();
    let runner = ProjectionRunner::new(store.clone())
        .with_instance(Instance::named("relay-bench"))
        .relay_with(
            Relay::new("bench.outbox", nats.publisher(&out)).route(
                Select::Category("acct".into()),
                format!("out.{id}.{{type}}"),
            ),
            ProjectionOptions {
                batch_size: *BATCH_ENV,
                on_poison: PoisonPolicy::Stop,
                ..ProjectionOptions::default()
            },
        )?
        .start();
    runner
        .wait_for("bench.outbox", head, Duration::from_secs(600))
        .await?;
    let relay_rate = N as f64 / started.elapsed().as_secs_f64();
    println!(
        "relay from SQLite, {N} events in batches of {}: {relay_rate:.0} events/s ({:.2}x raw)",
        *BATCH_ENV,
        relay_rate / raw_rate
    );

    // Latency: one event appended at a time, timed to its arrival at a subscriber.
    let client = async_nats::connect(&url).await?;
    let mut sub = client.subscribe(format!("out.{id}.>")).await?;
    client.flush().await?;
    let mut samples = Vec::new();
    for i in 0..1_000u64 {
        let body = serde_json::to_vec(&serde_json::json!({ "i": i }))?;
        let sent = Instant::now();
        store
            .append(
                &StreamId::new(format!("acct-{}", i % 50))?,
                ExpectedVersion::Any,
                vec![NewEvent::new(EventId::new(), "acct.moved", body)],
            )
            .await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await?
                .ok_or("the subscription ended")?;
            let v: serde_json::Value = serde_json::from_slice(&m.payload)?;
            if v["i"] == i {
                samples.push(sent.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "append to arrival, 1,000 single appends: {}",
        percentiles(samples)
    );

    // The inbox: every relayed event taken into a second store, a transaction per batch.
    let consumer_path = std::env::temp_dir().join(format!("flext-relay-bench-{id}-in.db"));
    let consumer_store = SqliteEventStore::open(&consumer_path).await?;
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let last = Arc::new(AtomicI64::new(-1));
    let source = nats.consumer(&out, "bench", &[]).await?;
    let started = Instant::now();
    let inbox = Inbox::builder("bench.inbox", consumer_store.clone(), source)
        .handle(">", Effect(last.clone()))
        .batch(256)
        .metrics(Arc::new(Committed {
            last,
            done: done_tx,
        }))
        .start()?;
    let total = N + 1_000;
    for _ in 0..total {
        tokio::time::timeout(Duration::from_secs(60), done.recv())
            .await?
            .ok_or("the inbox stopped")?;
    }
    println!(
        "inbox into SQLite, {total} messages (a transaction per fetched batch): {:.0} msg/s",
        total as f64 / started.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    for i in 0..1_000u64 {
        let n = 1_000_000 + i;
        let body = serde_json::to_vec(&serde_json::json!({ "i": n }))?;
        let sent = Instant::now();
        store
            .append(
                &StreamId::new(format!("acct-{}", i % 50))?,
                ExpectedVersion::Any,
                vec![NewEvent::new(EventId::new(), "acct.moved", body)],
            )
            .await?;
        loop {
            let got = tokio::time::timeout(Duration::from_secs(10), done.recv())
                .await?
                .ok_or("the inbox stopped")?;
            if got == n as i64 {
                samples.push(sent.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "append to consumed effect (relay, JetStream, inbox commit), 1,000 single appends: {}",
        percentiles(samples)
    );
    inbox.shutdown().await;
    consumer_store.close().await?;
    let _ = std::fs::remove_file(consumer_path);

    runner.shutdown().await;
    nats.context().delete_stream(&raw).await?;
    nats.context().delete_stream(&out).await?;
    store.close().await?;
    let _ = std::fs::remove_file(path);
    Ok(())
}
