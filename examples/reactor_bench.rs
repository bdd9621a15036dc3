//! Reactor throughput next to projection catch-up, on SQLite and PostgreSQL, in one run:
//!
//! - a projection that counts the events (the runner's cost: read, transaction,
//!   checkpoint per batch of 1,000);
//! - a reactor whose handler does nothing (the reactor's own cost: grouping by stream,
//!   running streams concurrently, a checkpoint per batch);
//! - a reactor that dispatches a command per event through a command bus, whose handler
//!   appends one event to the store: "react with a follow-up command", the work a
//!   process manager does.
//!
//! Each over the same stored events (50 streams), from the start, medians of 3.
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test cargo run --release --example reactor_bench
//! cargo run --release --example reactor_bench -- --events 2000   # quicker
//! ```
//!
//! Without `DATABASE_URL` only SQLite is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flext::application::{
    CommandBus, Pipeline, ProjectionOptions, ProjectionRunner, Reactor, ReactorOptions, Registry,
};
use flext::ports::{
    Command, CommandHandler, Context, EventStore, Projection, ProjectionStore, WatchAppends,
};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{Error, EventId, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};

const STREAMS: usize = 50;

/// Counts the events: a projection with no work of its own.
struct Count(String, Arc<AtomicU64>);

impl<T: Send> Projection<T> for Count {
    fn name(&self) -> &str {
        &self.0
    }
    fn event_types(&self) -> Option<&[&str]> {
        Some(&["transfer.sent"])
    }
    async fn handle(&self, _: &mut T, _: &RecordedEvent) -> Result<(), Error> {
        self.1.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The follow-up command: record the receipt of a transfer.
#[derive(Debug, Clone)]
struct Receive {
    transfer: EventId,
}

impl Command for Receive {
    type Output = ();
    const NAME: &'static str = "bench.receive";
}

/// Appends one event per command, under the command's message id.
struct ReceiveHandler<S>(S);

impl<S: EventStore + Send + Sync + 'static> CommandHandler<Receive> for ReceiveHandler<S> {
    async fn handle(&self, command: Receive, ctx: &Context) -> Result<(), Error> {
        let event = NewEvent::new(
            EventId::from_uuid(ctx.message_id()),
            "transfer.received",
            format!("{{\"of\":\"{}\"}}", command.transfer),
        )
        .with_metadata(ctx.event_metadata());
        self.0
            .append(
                &StreamId::new(format!("receipt-{}", command.transfer))?,
                ExpectedVersion::NoStream,
                vec![event],
            )
            .await
            .map(drop)
    }
}

/// A reactor: counts, and dispatches `Receive` when it has a bus.
struct React {
    name: String,
    seen: Arc<AtomicU64>,
    bus: Option<CommandBus>,
}

impl Reactor for React {
    fn name(&self) -> &str {
        &self.name
    }
    fn event_types(&self) -> Option<&[&str]> {
        Some(&["transfer.sent"])
    }
    async fn react(&self, event: &RecordedEvent, ctx: &Context) -> Result<(), Error> {
        if let Some(bus) = &self.bus {
            bus.dispatch(
                Receive {
                    transfer: event.event_id,
                },
                &ctx.child_for("receive"),
            )
            .await?;
        }
        self.seen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn seed<S: EventStore>(store: &S, n: usize) -> Result<Position, Error> {
    let payload = r#"{"amount":25,"to":"account-7"}"#;
    let mut last = Position::START;
    let mut i = 0;
    while i < n {
        let k = (n - i).min(100);
        let stream = StreamId::new(format!("transfer-{}", (i / 100) % STREAMS))?;
        let events = (0..k)
            .map(|_| NewEvent::new(EventId::new(), "transfer.sent", payload))
            .collect();
        let out = store.append(&stream, ExpectedVersion::Any, events).await?;
        last = out.last_position().unwrap_or(last);
        i += k;
    }
    Ok(last)
}

fn options() -> ProjectionOptions {
    ProjectionOptions {
        batch_size: 1_000,
        ..ProjectionOptions::default()
    }
}

/// Events per second for one consumer from the start to `head`.
async fn rate<S>(
    store: &S,
    what: &str,
    round: usize,
    head: Position,
    n: usize,
) -> Result<f64, Error>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone + Send + Sync + 'static,
{
    let name = format!("{what}-{round}");
    let seen = Arc::new(AtomicU64::new(0));
    let runner = ProjectionRunner::new(store.clone());
    let runner = match what {
        "projection" => runner.register_with(Count(name.clone(), seen.clone()), options())?,
        _ => {
            let bus = (what == "command")
                .then(|| {
                    Registry::new()
                        .command::<Receive, _>(ReceiveHandler(store.clone()))
                        .command_bus(Pipeline::new())
                })
                .transpose()?;
            let reactor = React {
                name: name.clone(),
                seen: seen.clone(),
                bus,
            };
            runner.reactor_with(reactor, options(), ReactorOptions::default())?
        }
    };
    let t = Instant::now();
    let running = runner.start();
    running
        .wait_for(&name, head, Duration::from_secs(600))
        .await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    running.shutdown().await;
    assert_eq!(seen.load(Ordering::Relaxed), n as u64, "{name}");
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure<S>(db: &str, store: &S, n: usize) -> Result<(), Error>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone + Send + Sync + 'static,
{
    let head = seed(store, n).await?;
    let (mut p, mut r, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        p.push(rate(store, "projection", round, head, n).await?);
        r.push(rate(store, "reactor", round, head, n).await?);
        // Each round's commands append n events of their own: measured up to `head`,
        // the events seeded, which the reactor selects by type.
        c.push(rate(store, "command", round, head, n).await?);
    }
    println!(
        "{db:<10} projection catch-up (no-op, batches of 1,000)   {:>9.0} ev/s",
        median(p)
    );
    println!(
        "{db:<10} reactor, no-op handler (16 streams at once)     {:>9.0} ev/s",
        median(r)
    );
    println!(
        "{db:<10} reactor dispatching a command that appends      {:>9.0} ev/s",
        median(c)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!("{n} stored events over {STREAMS} streams; medians of 3\n");

    let path = std::env::temp_dir().join(format!(
        "flext-reactor-bench-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let sqlite = SqliteEventStore::open(&path).await?;
    measure("sqlite", &sqlite, n).await?;
    sqlite.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let schema = format!("flext_reactor_bench_{}", uuid::Uuid::now_v7().simple());
            let pg = PgEventStore::builder(&url)
                .schema(&schema)
                .connect()
                .await?;
            measure("postgresql", &pg, n).await?;
            let pool = pg.pool().clone();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&pool)
                .await
                .map_err(|e| Error::internal("BENCH", e.to_string()))?;
            pg.close().await?;
        }
        Err(_) => println!("\nDATABASE_URL not set: PostgreSQL skipped"),
    }
    Ok(())
}
