//! A relay process for the crash test (`tests/crash.rs`): relays the `acct` category of
//! the SQLite store at `args[1]` into JetStream stream `args[3]` of the NATS at `args[2]`
//! (subjects `args[4].<type>`) until it is killed.
//!
//! ```text
//! cargo run -p flext-nats --example relay_worker -- events.db nats://127.0.0.1:4222 BANK bank
//! ```

use std::time::Duration;

use flext::application::{ProjectionRunner, Relay, Select};
use flext::ports::Instance;
use flext::sqlite::SqliteEventStore;
use flext_nats::JetStream;

#[tokio::main]
async fn main() -> Result<(), flext::Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, url, stream, prefix] = args.as_slice() else {
        eprintln!("usage: relay_worker DB NATS_URL STREAM SUBJECT_PREFIX");
        std::process::exit(2);
    };
    let store = SqliteEventStore::open(db).await?;
    let nats = JetStream::connect(url).await?;
    let relay = Relay::new("test.outbox", nats.publisher(stream)).route(
        Select::Category("acct".into()),
        format!("{prefix}.{{type}}"),
    );
    let runner = ProjectionRunner::new(store)
        .with_instance(Instance::named("relay-worker"))
        .relay(relay)?
        .start();
    // Runs until killed; a clean stop is not what the crash test is about.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let _ = &runner;
    }
}
