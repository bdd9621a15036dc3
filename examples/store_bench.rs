//! Measures flext's SQLite and PostgreSQL stores against hand-written sqlx on the same
//! schema and durability (synchronous commits), in one process and one run, and prints the
//! figures side by side.
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test cargo run --release --example store_bench
//! cargo run --release --example store_bench -- --scale 0.2   # a quicker, noisier run
//! ```
//!
//! Without `DATABASE_URL` only SQLite is measured. Each flext figure and its raw twin are
//! measured alternately, three times (loads and read-all five times), and the medians
//! printed, so drift in the disk or the server hits both sides alike.
//! `FLEXT_BENCH_ONLY=commands,appends,loads,readall` and `FLEXT_BENCH_DB=sqlite|postgres`
//! pick parts (for profiling). `FLEXT_BENCH_TENANT_ROLE=<role>` (a role without
//! `BYPASSRLS`, which the `DATABASE_URL` user can give a schema) also measures, as
//! `pg-tenant`, a tenant's store in tables shared by tenants (row-level security on every
//! statement) against the same raw baseline.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use flext::application::Repository;
use flext::ports::{EventStore, SnapshotStore};
use flext::postgres::PgEventStore;
use flext::prelude::*;
use flext::sqlite::SqliteEventStore;
use flext::{Error, EventId, ExpectedVersion, Id, NewEvent, Position, StreamId, StreamVersion};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

// ---------------------------------------------------------------------------------------
// The aggregate both sides run.

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    value: u64,
    notes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum CounterEvent {
    Incremented { by: u64, note: String },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> &'static str {
        "counter.incremented"
    }
}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Event = CounterEvent;
    fn apply(&mut self, e: &CounterEvent) {
        let CounterEvent::Incremented { by, note } = e;
        self.value += by;
        self.notes += note.len() as u64;
    }
}

fn increment(_: &Counter) -> Result<Vec<CounterEvent>, Error> {
    Ok(vec![sample_event()])
}

fn sample_event() -> CounterEvent {
    CounterEvent::Incremented {
        by: 1,
        note: "a note long enough to make the payload look like a real event".into(),
    }
}

fn payload() -> Vec<u8> {
    serde_json::to_vec(&sample_event()).expect("encodable")
}

fn new_events(n: usize) -> Vec<NewEvent> {
    let p = bytes_of(payload());
    (0..n)
        .map(|_| NewEvent::new(EventId::new(), "counter.incremented", p.clone()))
        .collect()
}

fn bytes_of(v: Vec<u8>) -> flext::reexport::bytes::Bytes {
    flext::reexport::bytes::Bytes::from(v)
}

// ---------------------------------------------------------------------------------------
// Timing helpers.

async fn throughput<F, Fut>(tasks: usize, ops_per_task: usize, f: F) -> f64
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
                for i in 0..ops_per_task {
                    f(t, i).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    (tasks * ops_per_task) as f64 / start.elapsed().as_secs_f64()
}

async fn median_ms<F, Fut>(runs: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

struct Report {
    rows: Vec<(String, String, f64, f64, &'static str, bool)>,
}

impl Report {
    /// A figure where higher is better (throughput).
    fn rate(&mut self, db: &str, what: &str, flext: f64, raw: f64, unit: &'static str) {
        self.rows
            .push((db.into(), what.into(), flext, raw, unit, true));
        self.print_last();
    }
    /// A figure where lower is better (time).
    fn time(&mut self, db: &str, what: &str, flext: f64, raw: f64) {
        self.rows
            .push((db.into(), what.into(), flext, raw, "ms", false));
        self.print_last();
    }
    fn print_last(&self) {
        let (db, what, flext, raw, unit, higher) = self.rows.last().expect("a row");
        let ratio = if *higher { flext / raw } else { raw / flext };
        println!("{db:<9} {what:<58} {flext:>10.1} {raw:>10.1} {unit:<6} {ratio:>5.2}x");
    }
}

// ---------------------------------------------------------------------------------------
// Hand-written sqlx on the same schema: PostgreSQL.

const PG_RAW_TABLE: &str = "CREATE TABLE raw_events (
    position BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL UNIQUE, stream_id TEXT NOT NULL,
    version BIGINT NOT NULL, event_type TEXT NOT NULL, schema_version INTEGER NOT NULL,
    payload BYTEA NOT NULL, correlation_id UUID, causation_id UUID, headers TEXT,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (stream_id, version))";

#[derive(Clone)]
struct RawPg(PgPool);

impl RawPg {
    async fn load(&self, stream: &str) -> (Counter, i64) {
        let rows = sqlx::query(
            "SELECT version, payload FROM raw_events WHERE stream_id = $1 ORDER BY version",
        )
        .bind(stream)
        .fetch_all(&self.0)
        .await
        .expect("raw load");
        let mut c = Counter::default();
        let mut version = 0;
        for r in &rows {
            version = r.get::<i64, _>(0);
            let e: CounterEvent = serde_json::from_slice(r.get::<&[u8], _>(1)).expect("decode");
            c.apply(&e);
        }
        (c, version)
    }

    async fn insert(&self, stream: &str, version: i64, payload: &[u8]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO raw_events (event_id, stream_id, version, event_type, schema_version, payload) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(stream)
        .bind(version)
        .bind("counter.incremented")
        .bind(1i32)
        .bind(payload)
        .execute(&self.0)
        .await
        .map(|_| ())
    }

    async fn command(&self, stream: &str, payload: &[u8]) {
        loop {
            let (state, version) = self.load(stream).await;
            let _ = increment(&state);
            if self.insert(stream, version + 1, payload).await.is_ok() {
                return;
            }
        }
    }

    async fn append_batch(&self, stream: &str, first_version: i64, n: usize, payload: &[u8]) {
        let ids: Vec<uuid::Uuid> = (0..n).map(|_| uuid::Uuid::now_v7()).collect();
        let versions: Vec<i64> = (0..n as i64).map(|i| first_version + i).collect();
        let payloads: Vec<&[u8]> = vec![payload; n];
        let types: Vec<&str> = vec!["counter.incremented"; n];
        let schema_versions: Vec<i32> = vec![1; n];
        sqlx::query(
            "INSERT INTO raw_events (event_id, stream_id, version, event_type, schema_version, payload) \
             SELECT id, $1, v, t, sv, p FROM unnest($2::uuid[], $3::int8[], $4::text[], $5::int4[], $6::bytea[]) AS x(id, v, t, sv, p)",
        )
        .bind(stream)
        .bind(&ids)
        .bind(&versions)
        .bind(&types)
        .bind(&schema_versions)
        .bind(&payloads)
        .execute(&self.0)
        .await
        .expect("raw batch");
    }

    async fn read_all(&self, total: usize, page: i64) -> usize {
        let mut after = 0i64;
        let mut seen = 0;
        while seen < total {
            let rows = sqlx::query(
                "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                 correlation_id, causation_id, headers, recorded_at FROM raw_events \
                 WHERE position > $1 ORDER BY position LIMIT $2",
            )
            .bind(after)
            .bind(page)
            .fetch_all(&self.0)
            .await
            .expect("raw read");
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let row = RawRow {
                    position: r.get(0),
                    event_id: r.get(1),
                    stream_id: r.get(2),
                    version: r.get(3),
                    event_type: r.get(4),
                    schema_version: r.get::<i32, _>(5) as i64,
                    payload: r.get(6),
                    correlation_id: r.get(7),
                    causation_id: r.get(8),
                    headers: r.get(9),
                    recorded_micros: r
                        .get::<chrono::DateTime<chrono::Utc>, _>(10)
                        .timestamp_micros(),
                };
                after = row.position;
                std::hint::black_box(&row);
            }
            seen += rows.len();
        }
        seen
    }

    async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM raw_events")
            .fetch_one(&self.0)
            .await
            .expect("count")
    }
}

/// What a raw reader decodes each row into: the same fields as a recorded event.
#[allow(dead_code)]
struct RawRow {
    position: i64,
    event_id: uuid::Uuid,
    stream_id: String,
    version: i64,
    event_type: String,
    schema_version: i64,
    payload: Vec<u8>,
    correlation_id: Option<uuid::Uuid>,
    causation_id: Option<uuid::Uuid>,
    headers: Option<String>,
    recorded_micros: i64,
}

// ---------------------------------------------------------------------------------------
// Hand-written sqlx on the same schema: SQLite.

#[derive(Clone)]
struct RawSqlite(SqlitePool);

impl RawSqlite {
    async fn load(&self, stream: &str) -> (Counter, i64) {
        let rows = sqlx::query(
            "SELECT version, payload FROM raw_events WHERE stream_id = ?1 ORDER BY version",
        )
        .bind(stream)
        .fetch_all(&self.0)
        .await
        .expect("raw load");
        let mut c = Counter::default();
        let mut version = 0;
        for r in &rows {
            version = r.get::<i64, _>(0);
            let e: CounterEvent = serde_json::from_slice(r.get::<&[u8], _>(1)).expect("decode");
            c.apply(&e);
        }
        (c, version)
    }

    async fn insert(&self, stream: &str, version: i64, payload: &[u8]) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO raw_events (event_id, stream_id, version, event_type, schema_version, payload, recorded_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(stream)
        .bind(version)
        .bind("counter.incremented")
        .bind(1i64)
        .bind(payload)
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(&self.0)
        .await
        .map(|_| ())
    }

    async fn command(&self, stream: &str, payload: &[u8]) {
        loop {
            let (state, version) = self.load(stream).await;
            let _ = increment(&state);
            if self.insert(stream, version + 1, payload).await.is_ok() {
                return;
            }
        }
    }

    async fn append_batch(&self, stream: &str, first_version: i64, n: usize, payload: &[u8]) {
        // Each row binds its own id, version, type, schema version and payload, as a
        // hand-written store would; anonymous placeholders, bound in order.
        let mut sql = String::from(
            "INSERT INTO raw_events (event_id, stream_id, version, event_type, schema_version, payload, recorded_at) VALUES ",
        );
        for i in 0..n {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
        }
        let now = chrono::Utc::now().timestamp_micros();
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in 0..n {
            q = q
                .bind(uuid::Uuid::now_v7())
                .bind(stream)
                .bind(first_version + i as i64)
                .bind("counter.incremented")
                .bind(1i64)
                .bind(payload)
                .bind(now);
        }
        q.execute(&self.0).await.expect("raw batch");
    }

    async fn read_all(&self, total: usize, page: i64) -> usize {
        let mut after = 0i64;
        let mut seen = 0;
        while seen < total {
            let rows = sqlx::query(
                "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                 correlation_id, causation_id, headers, recorded_at FROM raw_events \
                 WHERE position > ?1 ORDER BY position LIMIT ?2",
            )
            .bind(after)
            .bind(page)
            .fetch_all(&self.0)
            .await
            .expect("raw read");
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let row = RawRow {
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
                    recorded_micros: r.get(10),
                };
                after = row.position;
                std::hint::black_box(&row);
            }
            seen += rows.len();
        }
        seen
    }

    async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM raw_events")
            .fetch_one(&self.0)
            .await
            .expect("count")
    }
}

// ---------------------------------------------------------------------------------------
// One raw side per database, behind one shape, so the workloads are written once.

#[derive(Clone)]
enum Raw {
    Pg(RawPg),
    Sqlite(RawSqlite),
}

impl Raw {
    async fn load(&self, s: &str) -> (Counter, i64) {
        match self {
            Raw::Pg(r) => r.load(s).await,
            Raw::Sqlite(r) => r.load(s).await,
        }
    }
    async fn insert(&self, s: &str, v: i64, p: &[u8]) {
        match self {
            Raw::Pg(r) => r.insert(s, v, p).await.expect("raw insert"),
            Raw::Sqlite(r) => r.insert(s, v, p).await.expect("raw insert"),
        }
    }
    async fn command(&self, s: &str, p: &[u8]) {
        match self {
            Raw::Pg(r) => r.command(s, p).await,
            Raw::Sqlite(r) => r.command(s, p).await,
        }
    }
    async fn append_batch(&self, s: &str, first: i64, n: usize, p: &[u8]) {
        match self {
            Raw::Pg(r) => r.append_batch(s, first, n, p).await,
            Raw::Sqlite(r) => r.append_batch(s, first, n, p).await,
        }
    }
    async fn read_all(&self, total: usize, page: i64) -> usize {
        match self {
            Raw::Pg(r) => r.read_all(total, page).await,
            Raw::Sqlite(r) => r.read_all(total, page).await,
        }
    }
    async fn count(&self) -> i64 {
        match self {
            Raw::Pg(r) => r.count().await,
            Raw::Sqlite(r) => r.count().await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The workloads.

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

/// Runs `a` and `b` alternately `rounds` times (so drift in the disk or the server hits
/// both alike) and returns the median of each.
async fn interleaved<FA, FB, A, B>(rounds: usize, mut a: FA, mut b: FB) -> (f64, f64)
where
    FA: FnMut(usize) -> A,
    FB: FnMut(usize) -> B,
    A: Future<Output = f64>,
    B: Future<Output = f64>,
{
    let (mut xa, mut xb) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        xa.push(a(r).await);
        xb.push(b(r).await);
    }
    xa.sort_by(f64::total_cmp);
    xb.sort_by(f64::total_cmp);
    (xa[rounds / 2], xb[rounds / 2])
}

fn wanted(group: &str) -> bool {
    std::env::var("FLEXT_BENCH_ONLY").map_or(true, |only| only.split(',').any(|g| g == group))
}

const ROUNDS: usize = 3;

async fn run_all<S>(db: &str, store: S, raw: Raw, scale: f64, report: &mut Report)
where
    S: EventStore + SnapshotStore + Clone + 'static,
{
    let payload: Arc<[u8]> = payload().into();
    let run = uuid::Uuid::now_v7().simple().to_string();

    // End-to-end commands: each task works through its own 100 aggregates.
    for tasks in [1usize, 8] {
        if !wanted("commands") {
            break;
        }
        let ops = scaled(if tasks == 1 { 600 } else { 160 }, scale);
        let ids: Arc<Vec<Vec<Id<Counter>>>> = Arc::new(
            (0..tasks)
                .map(|_| (0..100).map(|_| Id::new()).collect())
                .collect(),
        );
        let cold = Arc::new(Repository::<Counter, _>::new(store.clone()));
        let (flext_cold, raw_cmd) = interleaved(
            ROUNDS,
            |_| {
                let (repo, ids) = (cold.clone(), ids.clone());
                throughput(tasks, ops, move |t, i| {
                    let (repo, id) = (repo.clone(), ids[t][i % 100]);
                    async move {
                        repo.execute_with_metadata(id, &Default::default(), increment)
                            .await
                            .expect("command");
                    }
                })
            },
            |_| {
                let (raw, payload, run) = (raw.clone(), payload.clone(), run.clone());
                throughput(tasks, ops, move |t, i| {
                    let (raw, payload) = (raw.clone(), payload.clone());
                    let stream = format!("raw-cmd-{run}-{tasks}-{t}-{}", i % 100);
                    async move { raw.command(&stream, &payload).await }
                })
            },
        )
        .await;
        report.rate(
            db,
            &format!("command: load, decide, append; {tasks} task(s)"),
            flext_cold,
            raw_cmd,
            "cmd/s",
        );

        let warm = Arc::new(Repository::<Counter, _>::new(store.clone()).with_cache(10_000));
        for row in ids.iter() {
            for id in row {
                warm.execute_with_metadata(*id, &Default::default(), increment)
                    .await
                    .expect("warm-up");
            }
        }
        let (flext_warm, raw_floor) = interleaved(
            ROUNDS,
            |_| {
                let (repo, ids) = (warm.clone(), ids.clone());
                throughput(tasks, ops, move |t, i| {
                    let (repo, id) = (repo.clone(), ids[t][i % 100]);
                    async move {
                        repo.execute_with_metadata(id, &Default::default(), increment)
                            .await
                            .expect("command");
                    }
                })
            },
            |r| {
                let (raw, payload, run) = (raw.clone(), payload.clone(), run.clone());
                throughput(tasks, ops, move |t, i| {
                    let (raw, payload) = (raw.clone(), payload.clone());
                    let stream = format!("raw-floor-{run}-{tasks}-{t}-{r}");
                    async move { raw.insert(&stream, i as i64 + 1, &payload).await }
                })
            },
        )
        .await;
        report.rate(
            db,
            &format!("command, warm cache vs raw INSERT+commit; {tasks} task(s)"),
            flext_warm,
            raw_floor,
            "cmd/s",
        );
    }

    // Append only: batches of 1 and 100, 1 and 8 writers, each on its own stream.
    for batch in [1usize, 100] {
        for writers in [1usize, 8] {
            if !wanted("appends") {
                break;
            }
            let appends = scaled(
                match (batch, writers) {
                    (1, 1) => 600,
                    (1, _) => 120,
                    (_, 1) => 60,
                    _ => 16,
                },
                scale,
            );
            let (flext_rate, raw_rate) = interleaved(
                ROUNDS,
                |r| {
                    let (store, run) = (store.clone(), run.clone());
                    throughput(writers, appends, move |w, i| {
                        let store = store.clone();
                        let name = format!("append-{run}-{batch}-{writers}-{w}-{r}");
                        let stream = StreamId::new(name).expect("stream id");
                        async move {
                            let expected =
                                ExpectedVersion::Exact(StreamVersion((i * batch) as u64));
                            store
                                .append(&stream, expected, new_events(batch))
                                .await
                                .expect("append");
                        }
                    })
                },
                |r| {
                    let (raw, payload, run) = (raw.clone(), payload.clone(), run.clone());
                    throughput(writers, appends, move |w, i| {
                        let (raw, payload) = (raw.clone(), payload.clone());
                        let stream = format!("raw-append-{run}-{batch}-{writers}-{w}-{r}");
                        async move {
                            raw.append_batch(&stream, (i * batch) as i64 + 1, batch, &payload)
                                .await
                        }
                    })
                },
            )
            .await;
            let (flext_rate, raw_rate) = (flext_rate * batch as f64, raw_rate * batch as f64);
            report.rate(
                db,
                &format!("append {batch} event(s) per call; {writers} writer(s)"),
                flext_rate,
                raw_rate,
                "ev/s",
            );
        }
    }

    // Aggregate load of a long stream, with and without a snapshot.
    let snapshots = Repository::<Counter, _>::new(store.clone()).with_snapshots(1_000_000, 1);
    for history in [1_000usize, 10_000] {
        if !wanted("loads") {
            break;
        }
        let id: Id<Counter> = Id::new();
        let stream = StreamId::for_aggregate(id);
        let raw_stream = format!("raw-load-{run}-{history}");
        for chunk in 0..history / 1_000 {
            let expected = ExpectedVersion::Exact(StreamVersion((chunk * 1_000) as u64));
            store
                .append(&stream, expected, new_events(1_000))
                .await
                .expect("fill");
            raw.append_batch(&raw_stream, (chunk * 1_000) as i64 + 1, 1_000, &payload)
                .await;
        }
        let plain = Repository::<Counter, _>::new(store.clone());
        let (flext_ms, raw_ms) = interleaved(
            5,
            |_| {
                median_ms(3, || async {
                    let root = plain.load(id).await.expect("load");
                    assert_eq!(root.version(), StreamVersion(history as u64));
                })
            },
            |_| {
                median_ms(3, || async {
                    let (_, v) = raw.load(&raw_stream).await;
                    assert_eq!(v, history as i64);
                })
            },
        )
        .await;
        report.time(
            db,
            &format!("load a {history}-event aggregate, no snapshot"),
            flext_ms,
            raw_ms,
        );
        let root = snapshots.load(id).await.expect("load");
        snapshots.snapshot(&root).await.expect("snapshot");
        let snap_ms = median_ms(7, || async {
            let root = snapshots.load(id).await.expect("load");
            assert_eq!(root.version(), StreamVersion(history as u64));
        })
        .await;
        report.time(
            db,
            &format!("load a {history}-event aggregate from a snapshot at the end"),
            snap_ms,
            raw_ms,
        );
    }

    // Read-all of 100,000 events in pages of 1,000.
    if !wanted("readall") {
        return;
    }
    let total = scaled(100_000, scale);
    let mut flext_count = read_all_count(&store, usize::MAX).await;
    let mut filler = 0;
    while flext_count < total {
        let s = StreamId::new(format!("fill-{run}-{filler}")).expect("stream id");
        store
            .append(&s, ExpectedVersion::NoStream, new_events(1_000))
            .await
            .expect("fill");
        flext_count += 1_000;
        filler += 1;
    }
    let mut raw_count = raw.count().await as usize;
    while raw_count < total {
        raw.append_batch(&format!("raw-fill-{run}-{raw_count}"), 1, 1_000, &payload)
            .await;
        raw_count += 1_000;
    }
    let (flext_ms, raw_ms) = interleaved(
        5,
        |_| {
            median_ms(1, || async {
                let n = read_all_count(&store, total).await;
                assert!(n >= total);
            })
        },
        |_| {
            median_ms(1, || async {
                let n = raw.read_all(total, 1_000).await;
                assert!(n >= total);
            })
        },
    )
    .await;
    report.rate(
        db,
        &format!("read-all {total} events in pages of 1,000"),
        total as f64 / flext_ms * 1e3,
        total as f64 / raw_ms * 1e3,
        "ev/s",
    );
}

async fn read_all_count<S: EventStore>(store: &S, limit: usize) -> usize {
    let mut after = Position::START;
    let mut n = 0;
    while n < limit {
        let page = store.read_all(after, 1_000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        after = last.position;
        n += page.len();
        std::hint::black_box(&page);
    }
    n
}

/// `url` with its user replaced by `user` (no password: the bench's server trusts).
fn as_role_url(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let scale = args
        .iter()
        .position(|a| a == "--scale")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    println!(
        "{:<9} {:<58} {:>10} {:>10} {:<6} {:>6}",
        "database", "workload", "flext", "raw sqlx", "unit", "ratio"
    );
    let mut report = Report { rows: Vec::new() };

    // SQLite: synchronous=FULL in WAL mode on both sides.
    let dir = std::env::temp_dir();
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let flext_sqlite = SqliteEventStore::open(dir.join(format!("flext-bench-{tag}.db"))).await?;
    let raw_options = SqliteConnectOptions::new()
        .filename(dir.join(format!("flext-bench-raw-{tag}.db")))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(std::time::Duration::from_secs(30));
    let raw_pool = SqlitePoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect_with(raw_options)
        .await?;
    flext::sqlite::migrator().run(&raw_pool).await?;
    sqlx::query("ALTER TABLE flext_events RENAME TO raw_events")
        .execute(&raw_pool)
        .await?;
    let only_db = std::env::var("FLEXT_BENCH_DB").ok();
    if only_db.as_deref().is_none_or(|d| d == "sqlite") {
        run_all(
            "sqlite",
            flext_sqlite,
            Raw::Sqlite(RawSqlite(raw_pool)),
            scale,
            &mut report,
        )
        .await;
    }

    match std::env::var("DATABASE_URL") {
        Ok(_) if only_db.as_deref().is_some_and(|d| d != "postgres") => {}
        Ok(url) => {
            let schema = format!("flext_bench_{tag}");
            let flext_pg = PgEventStore::builder(&url)
                .schema(schema.clone())
                .max_connections(10)
                .connect()
                .await?;
            let raw_pool = PgPoolOptions::new()
                .max_connections(10)
                .test_before_acquire(false)
                .connect_with(
                    url.parse::<sqlx::postgres::PgConnectOptions>()?
                        .options([("search_path", schema.as_str())]),
                )
                .await?;
            sqlx::query(PG_RAW_TABLE).execute(&raw_pool).await?;
            run_all(
                "postgres",
                flext_pg.clone(),
                Raw::Pg(RawPg(raw_pool.clone())),
                scale,
                &mut report,
            )
            .await;
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&raw_pool)
                .await?;
            if let Ok(role) = std::env::var("FLEXT_BENCH_TENANT_ROLE") {
                let schema = format!("flext_bench_tenants_{tag}");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA {schema} AUTHORIZATION \"{role}\""
                )))
                .execute(&raw_pool)
                .await?;
                let mut as_role = url.parse::<sqlx::postgres::PgConnectOptions>()?;
                as_role = as_role.username(&role);
                let tenant = PgEventStore::builder(as_role_url(&url, &role))
                    .schema(schema.clone())
                    .tenant(flext::TenantId::new("bench")?)
                    .max_connections(10)
                    .connect()
                    .await?;
                let raw_tenant = PgPoolOptions::new()
                    .max_connections(10)
                    .test_before_acquire(false)
                    .connect_with(as_role.options([("search_path", schema.as_str())]))
                    .await?;
                sqlx::query(PG_RAW_TABLE).execute(&raw_tenant).await?;
                run_all(
                    "pg-tenant",
                    tenant.clone(),
                    Raw::Pg(RawPg(raw_tenant.clone())),
                    scale,
                    &mut report,
                )
                .await;
                tenant.close().await?;
                raw_tenant.close().await;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&raw_pool)
                    .await?;
            }
        }
        Err(_) => println!("DATABASE_URL is not set: PostgreSQL skipped"),
    }
    println!("ratio: flext / raw for rates, raw / flext for times (above 1 means flext is faster)");
    Ok(())
}
