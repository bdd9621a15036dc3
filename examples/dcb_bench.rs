//! Conditional appends (dynamic consistency boundaries) on flext's SQLite and PostgreSQL
//! stores next to hand-written sqlx doing the same work, in one run: each operation reads
//! the events of one tag, then appends one event with that tag on the condition that no
//! event of the tag came since.
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test cargo run --release --example dcb_bench
//! cargo run --release --example dcb_bench -- --scale 0.2   # quicker, noisier
//! ```
//!
//! The raw side: PostgreSQL `BEGIN`, an exclusive advisory lock on the tag's hash, the
//! check, the `INSERT`, `COMMIT` (the same protocol, on a table with a position sequence,
//! `UNIQUE (stream_id, version)`, a unique event id and a GIN index on the tags); SQLite
//! `BEGIN IMMEDIATE`, the check on a tag index table, two `INSERT`s, `COMMIT`. Every tag
//! receives ten events, so reads stay small. Each figure is the median of three runs,
//! flext and raw alternating.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use flext::ports::{AppendCondition, DcbStore, EventQuery, QueryItem};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{EventId, ExpectedVersion, NewEvent, Position, StreamId};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

const PAYLOAD: &[u8] =
    br#"{"course":"c-1","student":"s-1","note":"a payload of a realistic size"}"#;

/// Runs `ops` operations on each of `tasks` tasks and returns operations per second.
async fn throughput<F, Fut>(tasks: usize, ops: usize, f: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let f = f.clone();
            tokio::spawn(async move {
                for i in 0..ops {
                    f(t, i).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    (tasks * ops) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A tag no earlier run used: ten operations per tag.
fn tag(run: u64, task: usize, op: usize) -> String {
    format!("course:{run}-{task}-{}", op / 10)
}

/// Conditions that failed and were decided again (on PostgreSQL a gap-safe read may not
/// yet show a writer's own last append while older transactions are open).
static RETRIES: AtomicU64 = AtomicU64::new(0);

async fn flext_op<S: DcbStore>(store: &S, tag: String) {
    let query = EventQuery::of(QueryItem::tags([tag.clone()]));
    let stream = StreamId::new(format!("enrolment-{}", EventId::new())).expect("stream");
    let event = NewEvent::new(EventId::new(), "student.enrolled", PAYLOAD).with_tag(tag);
    loop {
        let page = store
            .read_matching(&query, Position::START, 100)
            .await
            .expect("read");
        let out = store
            .append_if(
                &stream,
                ExpectedVersion::NoStream,
                vec![event.clone()],
                &AppendCondition::new(query.clone(), page.through),
            )
            .await;
        match out {
            Ok(_) => return,
            Err(e) if e.reason() == flext::ports::APPEND_CONDITION_FAILED => {
                RETRIES.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("conditional append: {e}"),
        }
    }
}

const PG_SCHEMA: &str = "\
CREATE TABLE raw_dcb (
    position   BIGSERIAL PRIMARY KEY,
    event_id   UUID   NOT NULL UNIQUE,
    stream_id  TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    event_type TEXT   NOT NULL,
    payload    BYTEA  NOT NULL,
    tags       TEXT[],
    UNIQUE (stream_id, version)
);
CREATE INDEX raw_dcb_tags ON raw_dcb USING gin (tags)";

async fn raw_pg_op(pool: &PgPool, tag: String) {
    let rows = sqlx::query(
        "SELECT position, event_id, stream_id, version, event_type, payload, tags FROM raw_dcb \
         WHERE tags @> ARRAY[$1] ORDER BY position LIMIT 100",
    )
    .bind(&tag)
    .fetch_all(pool)
    .await
    .expect("raw read");
    let after: i64 = rows.last().map_or(0, |r| r.get(0));
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(&tag)
        .execute(&mut *tx)
        .await
        .expect("lock");
    let later: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM raw_dcb WHERE tags @> ARRAY[$1] AND position > $2)",
    )
    .bind(&tag)
    .bind(after)
    .fetch_one(&mut *tx)
    .await
    .expect("check");
    assert!(!later, "no other writer uses this tag");
    sqlx::query(
        "INSERT INTO raw_dcb (event_id, stream_id, version, event_type, payload, tags) \
         VALUES ($1, $2, 1, 'student.enrolled', $3, ARRAY[$4])",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(format!("enrolment-{}", uuid::Uuid::now_v7()))
    .bind(PAYLOAD)
    .bind(&tag)
    .execute(&mut *tx)
    .await
    .expect("insert");
    tx.commit().await.expect("commit");
}

const SQLITE_SCHEMA: &str = "\
CREATE TABLE raw_events (
    position   INTEGER PRIMARY KEY,
    event_id   BLOB    NOT NULL UNIQUE,
    stream_id  TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    tags       TEXT,
    UNIQUE (stream_id, version)
);
CREATE TABLE raw_tags (tag TEXT NOT NULL, position INTEGER NOT NULL,
                       PRIMARY KEY (tag, position)) WITHOUT ROWID";

async fn raw_sqlite_op(readers: &SqlitePool, writer: &SqlitePool, tag: String) {
    let rows = sqlx::query(
        "SELECT e.position, e.event_id, e.stream_id, e.version, e.event_type, e.payload, e.tags \
         FROM raw_tags t JOIN raw_events e ON e.position = t.position WHERE t.tag = ? \
         ORDER BY t.position LIMIT 100",
    )
    .bind(&tag)
    .fetch_all(readers)
    .await
    .expect("raw read");
    let after: i64 = rows.last().map_or(0, |r| r.get(0));
    let mut conn = writer.acquire().await.expect("writer");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .expect("begin");
    let later: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM raw_tags WHERE tag = ? AND position > ?)")
            .bind(&tag)
            .bind(after)
            .fetch_one(&mut *conn)
            .await
            .expect("check");
    assert!(!later, "no other writer uses this tag");
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO raw_events (event_id, stream_id, version, event_type, payload, tags) \
         VALUES (?, ?, 1, 'student.enrolled', ?, ?) RETURNING position",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(format!("enrolment-{}", uuid::Uuid::now_v7()))
    .bind(PAYLOAD)
    .bind(format!("[{tag:?}]"))
    .fetch_one(&mut *conn)
    .await
    .expect("insert");
    sqlx::query("INSERT INTO raw_tags (tag, position) VALUES (?, ?)")
        .bind(&tag)
        .bind(position)
        .execute(&mut *conn)
        .await
        .expect("insert tag");
    sqlx::query("COMMIT")
        .execute(&mut *conn)
        .await
        .expect("commit");
}

fn row(db: &str, what: &str, flext: f64, raw: f64) {
    println!(
        "{db:<10} {what:<44} {flext:>9.0} {raw:>9.0} op/s {:>5.2}x",
        flext / raw
    );
}

async fn compare<A, AF, B, BF>(db: &str, tasks: usize, ops: usize, runs: &AtomicU64, a: A, b: B)
where
    A: Fn(String) -> AF + Send + Sync + Clone + 'static,
    AF: Future<Output = ()> + Send,
    B: Fn(String) -> BF + Send + Sync + Clone + 'static,
    BF: Future<Output = ()> + Send,
{
    let (mut flext, mut raw) = (Vec::new(), Vec::new());
    let retried = RETRIES.load(Ordering::Relaxed);
    for _ in 0..3 {
        let run = runs.fetch_add(1, Ordering::Relaxed);
        let a = a.clone();
        flext.push(throughput(tasks, ops, move |t, i| a(tag(run, t, i))).await);
        let run = runs.fetch_add(1, Ordering::Relaxed);
        let b = b.clone();
        raw.push(throughput(tasks, ops, move |t, i| b(tag(run, t, i))).await);
    }
    let what = format!("read + conditional append, {tasks} writer(s)");
    row(db, &what, median(flext), median(raw));
    let retried = RETRIES.load(Ordering::Relaxed) - retried;
    if retried > 0 {
        println!(
            "{:<10} ({retried} of {} flext decisions taken again)",
            "",
            3 * tasks * ops
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let scale: f64 = args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let ops = |n: f64| ((n * scale) as usize).max(10);
    let runs = Arc::new(AtomicU64::new(0));
    println!(
        "{:<10} {:<44} {:>9} {:>9}      ratio",
        "store", "workload", "flext", "raw"
    );

    let dir = std::env::temp_dir().join(format!("flext-dcb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteEventStore::open(dir.join("flext.db")).await?;
    let options = SqliteConnectOptions::new()
        .filename(dir.join("raw.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    sqlx::raw_sql(SQLITE_SCHEMA).execute(&writer).await?;
    let readers = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options.read_only(true))
        .await?;
    for (tasks, n) in [(1, ops(300.0)), (8, ops(60.0))] {
        let (s, r, w) = (store.clone(), readers.clone(), writer.clone());
        compare(
            "sqlite",
            tasks,
            n,
            &runs,
            move |tag| {
                let s = s.clone();
                async move { flext_op(&s, tag).await }
            },
            move |tag| {
                let (r, w) = (r.clone(), w.clone());
                async move { raw_sqlite_op(&r, &w, tag).await }
            },
        )
        .await;
    }
    store.close().await?;
    std::fs::remove_dir_all(&dir)?;

    if let Ok(url) = std::env::var("DATABASE_URL") {
        let schema = format!("flext_dcb_bench_{}", std::process::id());
        let store = PgEventStore::builder(&url)
            .schema(&schema)
            .connect()
            .await?;
        let raw_schema = format!("{schema}_raw");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {raw_schema}")))
            .execute(store.pool())
            .await?;
        let search_path = raw_schema.clone();
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .after_connect(move |conn, _| {
                let sql = format!("SET search_path TO {search_path}");
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        sqlx::raw_sql(PG_SCHEMA).execute(&pool).await?;
        for (tasks, n) in [(1, ops(300.0)), (8, ops(150.0))] {
            let (s, p) = (store.clone(), pool.clone());
            compare(
                "postgresql",
                tasks,
                n,
                &runs,
                move |tag| {
                    let s = s.clone();
                    async move { flext_op(&s, tag).await }
                },
                move |tag| {
                    let p = p.clone();
                    async move { raw_pg_op(&p, tag).await }
                },
            )
            .await;
        }
        pool.close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {schema} CASCADE; DROP SCHEMA {raw_schema} CASCADE"
        )))
        .execute(store.pool())
        .await?;
    }
    Ok(())
}
