//! Job throughput: 5,000 no-op jobs enqueued in transactions of 500, then run by one
//! process's workers (concurrency 16), on SQLite and PostgreSQL; and 2,000 jobs enqueued
//! one by one, each its own commit.
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test cargo run --release --example job_bench
//! ```
//!
//! Without `DATABASE_URL` only SQLite is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flext::Error;
use flext::application::{Job, JobContext, JobWorkers, enqueue, new_job};
use flext::ports::{Context, JobStore};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use serde::{Deserialize, Serialize};

const BATCHED: usize = 5_000;
const SINGLE: usize = 2_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noop {
    n: usize,
}

impl Job for Noop {
    const KIND: &'static str = "bench.noop";
}

async fn measure<S>(db: &str, store: S) -> Result<(), Error>
where
    S: JobStore + Clone + Send + Sync + 'static,
{
    let ctx = Context::new();
    let started = Instant::now();
    for chunk in 0..BATCHED / 500 {
        let mut tx = store.begin().await?;
        for n in 0..500 {
            store
                .enqueue_in(&mut tx, &new_job(&Noop { n: chunk * 500 + n }, &ctx)?)
                .await?;
        }
        store.commit(tx).await?;
    }
    let batched = started.elapsed();

    let done = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&done);
    let started = Instant::now();
    let workers = JobWorkers::builder(store.clone())
        .job(move |_: Noop, _: JobContext| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok::<(), Error>(())
            }
        })
        .concurrency(16)
        .poll(Duration::from_millis(10))
        .start()?;
    loop {
        let stats = store.job_stats().await?;
        if stats.iter().all(|s| s.queued + s.running == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ran = started.elapsed();
    workers.shutdown().await;

    let started = Instant::now();
    for n in 0..SINGLE {
        enqueue(&store, &Noop { n }, &ctx).await?;
    }
    let single = started.elapsed();
    println!(
        "{db:<10} enqueue {:>7.0} jobs/s in transactions of 500, {:>6.0} jobs/s one commit each; run {:>6.0} jobs/s ({} no-op jobs, 16 at once)",
        BATCHED as f64 / batched.as_secs_f64(),
        SINGLE as f64 / single.as_secs_f64(),
        BATCHED as f64 / ran.as_secs_f64(),
        done.load(Ordering::Relaxed)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let path = std::env::temp_dir().join(format!(
        "flext-job-bench-{}.db",
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
            let schema = format!("flext_job_bench_{}", uuid::Uuid::now_v7().simple());
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
