//! A second service beside the bank: it takes the bank's integration messages (transfers
//! completed and refunded, which `bank --nats URL` publishes to JetStream stream `BANK`)
//! through an inbox and keeps, per account, the money received and refunded and how
//! many times, in its own SQLite file. Each message counts once, however often JetStream
//! delivers it: the totals and the inbox's record of the message commit together.
//!
//! ```text
//! cargo run --example notifier -- --nats nats://127.0.0.1:4222      # one terminal
//! cargo run --example bank -- --nats nats://127.0.0.1:4222 --accounts 100 --transfers 1000
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flext::Error;
use flext::application::{Inbox, InboxHandler, relay_headers};
use flext::nats::JetStream;
use flext::ports::sql::{Sql, migrate};
use flext::ports::{Context, InboundMessage, Labels, Metrics, sql_args};
use flext::sqlite::SqliteEventStore;
use serde::Deserialize;

/// The bank's integration messages, as the bank stores its account events.
#[derive(Debug, Deserialize)]
enum BankMessage {
    /// A transfer's second leg, received by the account the message is about (its
    /// other fields, the transfer and the sender, are not needed here).
    TransferReceived { amount: i64 },
    /// A transfer that failed, its money back with the account the message is about.
    TransferRefunded { amount: i64 },
}

/// The table of totals: one row per account.
const TOTALS: &[&str] = &["CREATE TABLE notifier_totals (
    account        TEXT PRIMARY KEY,
    received       BIGINT NOT NULL,
    received_count BIGINT NOT NULL,
    refunded       BIGINT NOT NULL,
    refunded_count BIGINT NOT NULL
)"];

/// Adds a message to its account's totals, in the inbox's transaction.
struct Totals;

impl<T: Sql + Send> InboxHandler<T> for Totals {
    async fn handle(&self, tx: &mut T, m: &InboundMessage, _: &Context) -> Result<(), Error> {
        let account = m
            .header(relay_headers::STREAM_ID)
            .and_then(|s| s.strip_prefix("account-"))
            .ok_or_else(|| {
                Error::invalid_argument(
                    "NOT_AN_ACCOUNT_MESSAGE",
                    format!("message {} names no account stream", m.id),
                )
            })?
            .to_owned();
        let message: BankMessage = serde_json::from_slice(&m.payload).map_err(|e| {
            Error::invalid_argument(
                "UNREADABLE_BANK_MESSAGE",
                format!("message {} on {} does not decode: {e}", m.id, m.subject),
            )
        })?;
        let (received, refunded) = match message {
            BankMessage::TransferReceived { amount } => (amount, 0),
            BankMessage::TransferRefunded { amount } => (0, amount),
        };
        migrate(&mut *tx, "notifier_totals", TOTALS).await?;
        tx.execute(
            "INSERT INTO notifier_totals (account, received, received_count, refunded, refunded_count) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account) DO UPDATE SET \
               received = notifier_totals.received + excluded.received, \
               received_count = notifier_totals.received_count + excluded.received_count, \
               refunded = notifier_totals.refunded + excluded.refunded, \
               refunded_count = notifier_totals.refunded_count + excluded.refunded_count",
            sql_args![
                account.as_str(),
                received,
                i64::from(received != 0),
                refunded,
                i64::from(refunded != 0)
            ],
        )
        .await?;
        Ok(())
    }
}

/// Counts what the inbox did with each message, for the progress lines.
#[derive(Default)]
struct Counts {
    handled: AtomicU64,
    duplicate: AtomicU64,
    dead: AtomicU64,
}

impl Metrics for Counts {
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        if name != "flext.inbox.messages" {
            return;
        }
        let counter = match labels.iter().find(|(k, _)| *k == "outcome") {
            Some((_, "handled")) => &self.handled,
            Some((_, "duplicate")) => &self.duplicate,
            Some((_, "dead")) => &self.dead,
            _ => return,
        };
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

struct Args {
    nats: String,
    stream: String,
    sqlite: String,
}

fn parse() -> Args {
    let mut args = Args {
        nats: "nats://127.0.0.1:4222".into(),
        stream: "BANK".into(),
        sqlite: "flext-notifier.db".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| {
            it.next().unwrap_or_else(|| {
                eprintln!("{arg} needs {what}");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--nats" => args.nats = value("a URL"),
            "--stream" => args.stream = value("a name"),
            "--sqlite" => args.sqlite = value("a path"),
            _ => {
                eprintln!(
                    "usage: notifier [--nats URL] [--stream NAME] [--sqlite PATH]\n\
                     \x20 --nats URL      the NATS server (default nats://127.0.0.1:4222)\n\
                     \x20 --stream NAME   the bank's JetStream stream (default BANK; subjects\n\
                     \x20                 <name in lower case>.transfers.*)\n\
                     \x20 --sqlite PATH   the notifier's own database (default flext-notifier.db)"
                );
                std::process::exit(2)
            }
        }
    }
    args
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = parse();
    let prefix = args.stream.to_lowercase();
    let store = SqliteEventStore::open(&args.sqlite).await?;
    let nats = JetStream::connect(&args.nats).await?;
    // Either service may start first: both make sure of the bank's stream.
    nats.ensure_stream(
        &args.stream,
        &[&format!("{prefix}.transfers.>")],
        Duration::from_secs(120),
    )
    .await?;
    let dead = format!("{}_NOTIFIER_DEAD", args.stream);
    nats.ensure_stream(
        &dead,
        &[&format!("{prefix}.notifier.dead")],
        Duration::from_secs(120),
    )
    .await?;
    let source = nats
        .consumer(
            &args.stream,
            "notifier",
            &[&format!("{prefix}.transfers.>")],
        )
        .await?
        .dead_letters_to(format!("{prefix}.notifier.dead"));
    let counts = Arc::new(Counts::default());
    let inbox = Inbox::builder("notifier", store.clone(), source)
        .handle(&format!("{prefix}.transfers.*"), Totals)
        .metrics(counts.clone())
        .start()?;
    println!(
        "notifier: taking {prefix}.transfers.* from JetStream stream {} at {} into {}",
        args.stream, args.nats, args.sqlite
    );

    let mut seen = (0, 0, 0);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = (
            counts.handled.load(Ordering::Relaxed),
            counts.duplicate.load(Ordering::Relaxed),
            counts.dead.load(Ordering::Relaxed),
        );
        if now == seen {
            continue;
        }
        seen = now;
        let read = store.read_models();
        let totals: Vec<(i64, i64, i64, i64)> = read
            .fetch(
                "SELECT COUNT(*), CAST(COALESCE(SUM(received_count), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(received), 0) AS BIGINT), CAST(COALESCE(SUM(refunded_count), 0) AS BIGINT) \
                 FROM notifier_totals",
                vec![],
            )
            .await
            .unwrap_or_default();
        let (accounts, completed, money, refunded) = totals.first().copied().unwrap_or_default();
        println!(
            "notifier: {} messages taken ({} deliveries again, {} dead-lettered): {accounts} accounts, {completed} transfers received ({money} in all), {refunded} refunded",
            now.0, now.1, now.2
        );
    }
    inbox.shutdown().await;
    store.close().await
}
