//! Competing job workers as real processes: 10,000 jobs on PostgreSQL, three worker
//! processes (this test's own executable, started again), each job's effect counted in
//! a table: every job ran once, no job twice, and each process took a share.
//! (`harness = false`: the same binary is the test and its child processes.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flext_application::{Job, JobContext, JobWorkers, new_job};
use flext_domain::Error;
use flext_ports::{Context, JobStore, ProjectionStore};
use flext_postgres::PgEventStore;
use serde::{Deserialize, Serialize};

const JOBS: usize = 10_000;
const WORKERS: usize = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Count {
    n: u64,
}

impl Job for Count {
    const KIND: &'static str = "test.count";
}

async fn connect(schema: &str) -> PgEventStore {
    PgEventStore::builder(flext_testkit::harness::database_url())
        .schema(schema)
        .max_connections(12)
        .connect()
        .await
        .expect("connect")
}

/// A worker process: runs jobs until none is left, each recording its effect; prints
/// how many it ran.
async fn child(schema: &str, name: &str) {
    let store = connect(schema).await;
    let pool = store.pool().clone();
    let ran = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&ran);
    let worker = name.to_owned();
    let workers = JobWorkers::builder(store.clone())
        .job(move |_: Count, cx: JobContext| {
            let (pool, counter, worker) = (pool.clone(), Arc::clone(&counter), worker.clone());
            async move {
                sqlx::query(
                    "INSERT INTO job_effects (job_id, n, worker) VALUES ($1, 1, $2) \
                     ON CONFLICT (job_id) DO UPDATE SET n = job_effects.n + 1",
                )
                .bind(cx.id().to_string())
                .bind(worker)
                .execute(&pool)
                .await
                .map_err(|e| Error::unavailable("EFFECT", e.to_string()))?;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        })
        .concurrency(8)
        .poll(Duration::from_millis(20))
        .name(name)
        .start()
        .expect("workers");
    println!("started");
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = store.job_stats().await.expect("stats");
        let left: u64 = stats.iter().map(|s| s.queued + s.running).sum();
        if left == 0 {
            break;
        }
    }
    workers.shutdown().await;
    println!("ran {}", ran.load(std::sync::atomic::Ordering::SeqCst));
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(spec) = std::env::var("FLEXT_JOBS_CHILD") {
        let (schema, name) = spec.split_once('|').expect("schema|name");
        runtime.block_on(child(schema, name));
        return;
    }
    runtime.block_on(async {
        let store = flext_testkit::harness::fresh_pg_store("jobs").await;
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(store.pool())
            .await
            .expect("schema");
        sqlx::query(
            "CREATE TABLE job_effects (job_id TEXT PRIMARY KEY, n INT NOT NULL, worker TEXT NOT NULL)",
        )
        .execute(store.pool())
        .await
        .expect("effects table");
        // Enqueued in transactions of 1,000 (as with the events they would follow from).
        for chunk in 0..JOBS / 1_000 {
            let mut tx = store.begin().await.expect("begin");
            for n in 0..1_000 {
                let job = new_job(
                    &Count {
                        n: (chunk * 1_000 + n) as u64,
                    },
                    &Context::new(),
                )
                .expect("job");
                assert!(store.enqueue_in(&mut tx, &job).await.expect("enqueue"));
            }
            store.commit(tx).await.expect("commit");
        }

        let started = Instant::now();
        let children: Vec<_> = (0..WORKERS)
            .map(|i| {
                let mut child = Command::new(std::env::current_exe().expect("own executable"))
                    .env("FLEXT_JOBS_CHILD", format!("{schema}|worker-{i}"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("spawn a worker");
                let out = child.stdout.take().expect("stdout");
                (child, out)
            })
            .collect();
        let mut ran_by = Vec::new();
        for (mut child, out) in children {
            let lines: Vec<String> = BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .collect();
            let status = child.wait().expect("wait");
            assert!(status.success(), "a worker failed: {lines:?}");
            let ran: u64 = lines
                .iter()
                .find_map(|l| l.strip_prefix("ran "))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a worker said {lines:?}"));
            ran_by.push(ran);
        }
        let elapsed = started.elapsed();

        let (rows, most, total): (i64, i32, i64) =
            sqlx::query_as("SELECT count(*), coalesce(max(n), 0), coalesce(sum(n), 0) FROM job_effects")
                .fetch_one(store.pool())
                .await
                .expect("count");
        assert_eq!(rows, JOBS as i64, "every job's effect is there");
        assert_eq!(most, 1, "no job's effect twice");
        assert_eq!(total, JOBS as i64);
        assert_eq!(ran_by.iter().sum::<u64>(), JOBS as u64, "{ran_by:?}");
        assert!(ran_by.iter().all(|r| *r > 0), "each process took a share: {ran_by:?}");
        let stats = store.job_stats().await.expect("stats");
        let count = stats.iter().find(|s| s.kind == Count::KIND).expect("kind");
        assert_eq!((count.succeeded, count.dead, count.queued, count.running), (JOBS as u64, 0, 0, 0));
        println!(
            "{JOBS} jobs by {WORKERS} worker processes on PostgreSQL ({ran_by:?}): each once, in {:.2} s, {:.0} jobs/s",
            elapsed.as_secs_f64(),
            JOBS as f64 / elapsed.as_secs_f64()
        );
    });
}
