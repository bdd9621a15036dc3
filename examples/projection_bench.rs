//! Measures projections on SQLite and PostgreSQL and prints the figures:
//!
//! - catch-up: a projection over 100,000 stored events (batches of 1,000, each committed
//!   with its checkpoint in one transaction) next to reading the same events with the
//!   store's `read_all` and with a hand-written sqlx query, in pages of 1,000, in the same
//!   run (alternately, medians of 3);
//! - live: the time from an append's return (its commit) to the projection handling the
//!   event, p50 and p99 over 500 appends, in process (the store's signal) and, on
//!   PostgreSQL, from a second store with its own pool (LISTEN/NOTIFY, as another process
//!   would see it).
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test cargo run --release --example projection_bench
//! cargo run --release --example projection_bench -- --events 20000   # quicker
//! ```
//!
//! Without `DATABASE_URL` only SQLite is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flext::application::{ProjectionOptions, ProjectionRunner, Projections};
use flext::ports::{EventStore, Projection, ProjectionStore, WatchAppends};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{Error, EventId, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId};
use tokio::sync::mpsc;

/// Counts events and sums their payload sizes: a projection whose own work is nothing,
/// so the figure is the runner's cost (read, transaction, checkpoint).
struct Count {
    name: String,
    seen: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    /// Live mode: tells the bench when each event was handled.
    live: Option<mpsc::UnboundedSender<(u64, Instant)>>,
}

impl<T: Send> Projection<T> for Count {
    fn name(&self) -> &str {
        &self.name
    }
    async fn handle(&self, _: &mut T, event: &RecordedEvent) -> Result<(), Error> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(event.payload.len() as u64, Ordering::Relaxed);
        if let Some(tx) = &self.live {
            let _ = tx.send((event.position.get(), Instant::now()));
        }
        Ok(())
    }
}

fn count(name: &str, live: Option<mpsc::UnboundedSender<(u64, Instant)>>) -> Count {
    Count {
        name: name.to_owned(),
        seen: Arc::default(),
        bytes: Arc::default(),
        live,
    }
}

fn options(batch: usize) -> ProjectionOptions {
    ProjectionOptions {
        batch_size: batch,
        ..ProjectionOptions::default()
    }
}

async fn seed<S: EventStore>(store: &S, n: usize) -> Result<Position, Error> {
    let payload = r#"{"by":1,"note":"a note of about fifty bytes of text, say"}"#;
    let mut last = Position::START;
    let mut i = 0;
    while i < n {
        let k = (n - i).min(1_000);
        let stream = StreamId::new(format!("counter-{}", i / 1_000))?;
        let events = (0..k)
            .map(|_| NewEvent::new(EventId::new(), "counter.incremented", payload))
            .collect();
        let out = store.append(&stream, ExpectedVersion::Any, events).await?;
        last = out.last_position().unwrap_or(last);
        i += k;
    }
    Ok(last)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn read_all_rate<S: EventStore>(store: &S, n: usize) -> Result<f64, Error> {
    let t = Instant::now();
    let mut after = Position::START;
    let mut got = 0;
    loop {
        let page = store.read_all(after, 1_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        got += page.len();
    }
    assert_eq!(got, n);
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

async fn catch_up_rate<S>(store: &S, name: &str, head: Position, n: usize) -> Result<f64, Error>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    let p = count(name, None);
    let seen = Arc::clone(&p.seen);
    let t = Instant::now();
    let projections = ProjectionRunner::new(store.clone())
        .register_with(p, options(1_000))?
        .start();
    projections
        .wait_for(name, head, Duration::from_secs(600))
        .await?;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    projections.shutdown().await;
    assert_eq!(seen.load(Ordering::Relaxed), n as u64);
    Ok(rate)
}

/// Appends one event at a time, 2 ms apart, and measures return-of-append to handled.
async fn live_latency<S, W>(
    store: &S,
    writer: &W,
    name: &str,
    appends: usize,
) -> Result<(Duration, Duration, Duration), Error>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
    W: EventStore,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let projections: Projections<S> = ProjectionRunner::new(store.clone())
        .register_with(count(name, Some(tx)), options(1_000))?
        .start();
    let stream = StreamId::new(format!("live-{name}"))?;
    // Let it catch up with the history first.
    let warm = writer
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new(), "warm", "0")],
        )
        .await?;
    let warm = warm.last_position().unwrap_or(Position::START);
    projections
        .wait_for(name, warm, Duration::from_secs(600))
        .await?;
    while let Ok((p, _)) = rx.try_recv() {
        if p == warm.get() {
            break;
        }
    }
    let mut lat = Vec::with_capacity(appends);
    let mut appended = Vec::with_capacity(appends);
    for i in 0..appends {
        let e = NewEvent::new(EventId::new(), "live", format!("{i}"));
        let start = Instant::now();
        let out = writer
            .append(&stream, ExpectedVersion::Any, vec![e])
            .await?;
        let committed = Instant::now();
        appended.push(committed - start);
        let position = out.last_position().map_or(0, Position::get);
        // Events of the history may still be arriving: skip to ours.
        loop {
            let Some((p, at)) = rx.recv().await else {
                return Err(Error::internal("BENCH", "the projection stopped"));
            };
            if p == position {
                lat.push(at.saturating_duration_since(committed));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    projections.shutdown().await;
    lat.sort();
    appended.sort();
    Ok((
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&appended, 0.5),
    ))
}

/// What a hand-written reader decodes: every column, into plain fields.
#[allow(dead_code)]
struct RawEvent<T> {
    position: i64,
    event_id: uuid::Uuid,
    stream_id: String,
    version: i64,
    event_type: String,
    schema_version: i32,
    payload: Vec<u8>,
    correlation_id: Option<uuid::Uuid>,
    causation_id: Option<uuid::Uuid>,
    headers: Option<String>,
    recorded_at: T,
}

async fn raw_sqlite_rate(pool: &sqlx::SqlitePool, n: usize) -> Result<f64, sqlx::Error> {
    use sqlx::Row;
    let t = Instant::now();
    let mut after = 0i64;
    let mut got = 0;
    loop {
        let rows = sqlx::query(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
             correlation_id, causation_id, headers, recorded_at FROM flext_events \
             WHERE position > ?1 ORDER BY position LIMIT 1000",
        )
        .bind(after)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        for r in &rows {
            std::hint::black_box(RawEvent::<i64> {
                position: r.get(0),
                event_id: r.get(1),
                stream_id: r.get(2),
                version: r.get(3),
                event_type: r.get(4),
                schema_version: r.get(5),
                payload: r.get(6),
                correlation_id: r.get(7),
                causation_id: r.get(8),
                headers: r.get(9),
                recorded_at: r.get(10),
            });
        }
        got += rows.len();
    }
    assert_eq!(got, n);
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

async fn raw_pg_rate(pool: &sqlx::PgPool, n: usize) -> Result<f64, sqlx::Error> {
    use sqlx::Row;
    let t = Instant::now();
    let mut after = 0i64;
    let mut got = 0;
    loop {
        let rows = sqlx::query(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
             correlation_id, causation_id, headers, recorded_at FROM flext_events \
             WHERE position > $1 \
               AND position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) \
             ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(1_000i64)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        for r in &rows {
            std::hint::black_box(RawEvent::<chrono::DateTime<chrono::Utc>> {
                position: r.get(0),
                event_id: r.get(1),
                stream_id: r.get(2),
                version: r.get(3),
                event_type: r.get(4),
                schema_version: r.get(5),
                payload: r.get(6),
                correlation_id: r.get(7),
                causation_id: r.get(8),
                headers: r.get(9),
                recorded_at: r.get(10),
            });
        }
        got += rows.len();
    }
    assert_eq!(got, n);
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn report(db: &str, projection: &[f64], store: &[f64], raw: &[f64]) {
    let (p, s, r) = (
        median(projection.to_vec()),
        median(store.to_vec()),
        median(raw.to_vec()),
    );
    println!("{db:<9} catch-up, projection (batches of 1,000)  {p:>10.0} ev/s");
    println!(
        "{db:<9} read_all, pages of 1,000               {s:>10.0} ev/s   projection/read_all {:.2}x",
        p / s
    );
    println!(
        "{db:<9} raw sqlx, pages of 1,000               {r:>10.0} ev/s   projection/raw      {:.2}x",
        p / r
    );
}

fn print_live(what: &str, (p50, p99, append): (Duration, Duration, Duration)) {
    println!(
        "{what:<52} p50 {:>7.0} us   p99 {:>7.0} us   (append itself p50 {:.0} us)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        append.as_secs_f64() * 1e6
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!("{n} events of ~60 bytes; catch-up medians of 3, live over 500 appends\n");

    // SQLite.
    let path = std::env::temp_dir().join(format!(
        "flext-projection-bench-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let sqlite = SqliteEventStore::open(&path).await?;
    let head = seed(&sqlite, n).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(sqlite.reader_pool())
        .await
        .map_err(|e| Error::internal("BENCH", e.to_string()))?;
    let (mut p, mut s, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        r.push(
            raw_sqlite_rate(sqlite.reader_pool(), n)
                .await
                .map_err(|e| Error::internal("BENCH", e.to_string()))?,
        );
        s.push(read_all_rate(&sqlite, n).await?);
        p.push(catch_up_rate(&sqlite, &format!("count-{round}"), head, n).await?);
    }
    report("sqlite", &p, &s, &r);
    print_live(
        "sqlite   live: append return -> handled, in process",
        live_latency(&sqlite, &sqlite, "live", 500).await?,
    );
    drop(sqlite);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }

    // PostgreSQL.
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("\nDATABASE_URL not set: PostgreSQL skipped");
        return Ok(());
    };
    println!();
    let schema = format!("flext_projection_bench_{}", uuid::Uuid::now_v7().simple());
    let pg = PgEventStore::builder(&url)
        .schema(&schema)
        .connect()
        .await?;
    let head = seed(&pg, n).await?;
    // Settle the table first, so autovacuum does not run during the measurements.
    sqlx::query("VACUUM ANALYZE flext_events")
        .execute(pg.pool())
        .await
        .map_err(|e| Error::internal("BENCH", e.to_string()))?;
    let (mut p, mut s, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        r.push(
            raw_pg_rate(pg.pool(), n)
                .await
                .map_err(|e| Error::internal("BENCH", e.to_string()))?,
        );
        s.push(read_all_rate(&pg, n).await?);
        p.push(catch_up_rate(&pg, &format!("count-{round}"), head, n).await?);
    }
    report("postgres", &p, &s, &r);
    print_live(
        "postgres live: append return -> handled, in process",
        live_latency(&pg, &pg, "live", 500).await?,
    );
    let other = PgEventStore::builder(&url)
        .schema(&schema)
        .connect()
        .await?;
    // Give the second store's LISTEN connection time to come up.
    let _ = other.watch_appends();
    tokio::time::sleep(Duration::from_millis(200)).await;
    print_live(
        "postgres live: append return -> handled, other store",
        live_latency(&other, &pg, "live-notify", 500).await?,
    );
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(pg.pool())
    .await;
    Ok(())
}
