//! An inbox process for the crash test (`tests/inbox_crash.rs`): takes the messages of
//! JetStream stream `args[3]` (durable consumer `args[4]`, a second's ack wait) from the
//! NATS at `args[2]` into the SQLite store at `args[1]`, recording each in table
//! `effects`. With `--abort-before-ack N` it aborts when it is about to acknowledge its
//! `N`th message, whose effect has committed: the test's consumer killed between its
//! effect and its ack. It prints `abort <id>` then, `redelivered <id>` for each message
//! delivered more than once, and `outcome <outcome>` for each message it settles.
//!
//! ```text
//! cargo run -p flext-nats --example inbox_worker -- inbox.db nats://127.0.0.1:4222 WORK inbox
//! ```

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flext::Error;
use flext::application::{Inbox, InboxHandler};
use flext::ports::sql::{Sql, migrate};
use flext::ports::{Context, InboundMessage, Labels, MessageSource, Metrics, Settle, sql_args};
use flext::sqlite::SqliteEventStore;
use flext_nats::{ConsumerOptions, JetStream, PullSource};

/// Prints a line at once (a killed process leaves no buffer behind).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The consumer, aborting the process before its `abort_at`th acknowledgement.
struct Aborting {
    inner: PullSource,
    acks: AtomicU64,
    abort_at: Option<u64>,
}

impl MessageSource for Aborting {
    type Receipt = (String, <PullSource as MessageSource>::Receipt);

    async fn fetch(&self, max: usize) -> Result<Vec<(InboundMessage, Self::Receipt)>, Error> {
        let got = self.inner.fetch(max).await?;
        Ok(got
            .into_iter()
            .map(|(m, r)| {
                if m.deliveries > 1 {
                    say(&format!("redelivered {}", m.id));
                }
                let id = m.id.clone();
                (m, (id, r))
            })
            .collect())
    }

    async fn settle(&self, (id, receipt): Self::Receipt, how: Settle) -> Result<(), Error> {
        if how == Settle::Ack {
            let n = self.acks.fetch_add(1, Ordering::SeqCst) + 1;
            if Some(n) == self.abort_at {
                say(&format!("abort {id}"));
                std::process::abort();
            }
        }
        self.inner.settle(receipt, how).await
    }

    async fn dead_letter(&self, message: &InboundMessage, error: &Error) -> Result<(), Error> {
        self.inner.dead_letter(message, error).await
    }
}

/// Prints each settled message's outcome.
struct Print;

impl Metrics for Print {
    fn count(&self, name: &'static str, _: u64, labels: Labels<'_>) {
        if name == "flext.inbox.messages"
            && let Some((_, outcome)) = labels.iter().find(|(k, _)| *k == "outcome")
        {
            say(&format!("outcome {outcome}"));
        }
    }
}

/// One row per handled message: a second effect of the same message would be a second
/// row.
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

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let (db, url, stream, durable, abort_at) = match args.as_slice() {
        [_, db, url, stream, durable] => (db, url, stream, durable, None),
        [_, db, url, stream, durable, flag, n] if flag == "--abort-before-ack" => {
            (db, url, stream, durable, n.parse().ok())
        }
        _ => {
            eprintln!("usage: inbox_worker DB NATS_URL STREAM DURABLE [--abort-before-ack N]");
            std::process::exit(2);
        }
    };
    let store = SqliteEventStore::open(db).await?;
    let nats = JetStream::connect(url).await?;
    let options = ConsumerOptions {
        ack_wait: Duration::from_secs(1),
    };
    let source = Aborting {
        inner: nats.consumer_with(stream, durable, &[], options).await?,
        acks: AtomicU64::new(0),
        abort_at,
    };
    let inbox = Inbox::builder("test.inbox", store, source)
        .handle(">", Record)
        .batch(16)
        .metrics(Arc::new(Print))
        .start()?;
    say("started");
    // Runs until killed (or aborted).
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let _ = &inbox;
    }
}
