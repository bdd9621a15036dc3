//! Scheduler lateness: 500 commands due 4 ms apart, stored before the scheduler
//! starts and delivered by it; lateness (the handler's clock minus the due time) p50, p99 and max, on
//! SQLite and PostgreSQL.
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test cargo run --release --example scheduler_bench
//! ```
//!
//! Without `DATABASE_URL` only SQLite is measured.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use flext::Error;
use flext::application::{Pipeline, Registry, Scheduler, schedule};
use flext::ports::{Command, CommandHandler, Context, OwnershipStore, ScheduleStore};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use serde::{Deserialize, Serialize};

const COUNT: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Due {
    at_us: i64,
}

impl Command for Due {
    type Output = ();
    const NAME: &'static str = "bench.due";
}

/// Records how late each command arrived, in microseconds.
struct Late(Arc<Mutex<Vec<i64>>>);

impl CommandHandler<Due> for Late {
    async fn handle(&self, command: Due, _: &Context) -> Result<(), Error> {
        let late = Utc::now().timestamp_micros() - command.at_us;
        self.0
            .lock()
            .map_err(|_| Error::internal("BENCH", "poisoned"))?
            .push(late);
        Ok(())
    }
}

async fn measure<S>(db: &str, store: S) -> Result<(), Error>
where
    S: ScheduleStore + OwnershipStore + Clone + Send + Sync + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let commands = Registry::new()
        .command::<Due, _>(Late(seen.clone()))
        .command_bus(Pipeline::new())?;
    // Scheduled first, due from two seconds on: the figure is the delivery's lateness
    // (a message scheduled while the scheduler sleeps is noticed within its poll
    // interval, 100 ms by default).
    let start = Utc::now() + chrono::Duration::seconds(2);
    let ctx = Context::new();
    for i in 0..COUNT {
        let at = start + chrono::Duration::milliseconds((i * 4) as i64);
        let due = Due {
            at_us: at.timestamp_micros(),
        };
        schedule(&store, &format!("due-{i}"), at, &due, &ctx).await?;
    }
    let scheduler = Scheduler::builder(store.clone(), commands)
        .command::<Due>()
        .start()?;
    while seen.lock().map_or(0, |s| s.len()) < COUNT {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scheduler.shutdown().await;
    let mut late = seen.lock().map(|s| s.clone()).unwrap_or_default();
    late.sort_unstable();
    let at = |p: f64| late[((late.len() - 1) as f64 * p).round() as usize] as f64 / 1_000.0;
    println!(
        "{db:<10} lateness over {COUNT} commands due 4 ms apart: p50 {:>6.1} ms, p99 {:>6.1} ms, max {:>6.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let path = std::env::temp_dir().join(format!(
        "flext-scheduler-bench-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let sqlite = SqliteEventStore::open(&path).await?;
    measure("sqlite", sqlite.clone()).await?;
    sqlite.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let schema = format!("flext_scheduler_bench_{}", uuid::Uuid::now_v7().simple());
            let pg = PgEventStore::builder(&url)
                .schema(&schema)
                .connect()
                .await?;
            measure("postgresql", pg.clone()).await?;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(pg.pool())
                .await;
            pg.close().await?;
        }
        Err(_) => println!("DATABASE_URL not set: PostgreSQL skipped"),
    }
    Ok(())
}
