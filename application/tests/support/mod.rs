//! A read model for projection tests, on every store: per stream, the number of events
//! and the sum of their amounts. On SQLite and PostgreSQL it lives in tables of the store's
//! database, written through the runner's transaction (exactly once), with a table of the
//! event ids it applied whose primary key turns any second application into an error; in
//! memory it is a map that deduplicates by event id (at least once).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flext_domain::{Error, EventId, RecordedEvent};
use flext_memory::{InMemoryEventStore, MemoryTransaction};
use flext_ports::{EventStore, Projection, ProjectionStore, WatchAppends};
use flext_postgres::{PgEventStore, PgWriteTransaction};
use flext_sqlite::{SqliteEventStore, SqliteWriteTransaction};
use tokio::sync::Notify;

/// Per stream: (events, sum of amounts).
pub(crate) type Totals = BTreeMap<String, (i64, i64)>;

/// Knobs shared by a model and its test.
#[derive(Default)]
pub(crate) struct Knobs {
    /// While set, events of type "poison" fail.
    pub(crate) poison: AtomicBool,
    /// When nonzero, the handler stops forever (pending) on the event whose amount is
    /// this, after writing to the read model: a crash between the write and the
    /// checkpoint, once the runner is aborted.
    pub(crate) stall_on: AtomicU64,
    /// Pulsed when the handler stalls.
    pub(crate) stalled: Notify,
    /// Events handled (every attempt).
    pub(crate) handled: AtomicU64,
    /// Microseconds to sleep after writing each event (widens the window between the
    /// read-model write and the checkpoint for the crash tests).
    pub(crate) delay_us: AtomicU64,
    /// While nonzero, events of type "flaky" fail with `UNAVAILABLE` (a transient error,
    /// as when a read model's table is not there yet), one attempt less each time.
    pub(crate) unavailable_left: AtomicU64,
    /// When nonzero, the handler panics on the event whose amount is this.
    pub(crate) panic_on: AtomicU64,
    /// A file: the first process to create it (on an event of type "pause") writes its
    /// pid in it and stops itself with SIGSTOP, in the middle of a batch.
    pub(crate) pause_marker: Mutex<Option<std::path::PathBuf>>,
}

/// The model's projection on one store.
#[derive(Clone)]
pub(crate) struct Model<S> {
    pub(crate) name: String,
    pub(crate) knobs: Arc<Knobs>,
    pub(crate) store: S,
    /// The memory store's read model.
    pub(crate) memory: Arc<Mutex<(HashSet<EventId>, Totals)>>,
}

pub(crate) fn amount(event: &RecordedEvent) -> Result<i64, Error> {
    std::str::from_utf8(&event.payload)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::invalid_argument("BAD_AMOUNT", "the payload is not a number"))
}

impl<S> Model<S> {
    async fn check(&self, event: &RecordedEvent) -> Result<i64, Error> {
        self.knobs.handled.fetch_add(1, Ordering::SeqCst);
        if event.event_type == "pause" {
            self.pause_once();
        }
        if event.event_type == "flaky"
            && self
                .knobs
                .unavailable_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(Error::unavailable(
                "READ_MODEL_MISSING",
                "the read model's table is not there yet",
            ));
        }
        let panic_on = self.knobs.panic_on.load(Ordering::SeqCst);
        if panic_on != 0 && amount(event).ok() == Some(panic_on as i64) {
            panic!("the projection blew up on {panic_on}");
        }
        if event.event_type == "poison" && self.knobs.poison.load(Ordering::SeqCst) {
            return Err(Error::failed_precondition(
                "POISON",
                "this event cannot be projected",
            ));
        }
        amount(event)
    }

    /// Stops this process (SIGSTOP) if it is the first to create the pause marker.
    fn pause_once(&self) {
        let marker = self.knobs.pause_marker.lock().expect("knobs").clone();
        let Some(path) = marker else { return };
        let Ok(mut file) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        else {
            return;
        };
        use std::io::Write as _;
        let pid = std::process::id();
        file.write_all(pid.to_string().as_bytes()).expect("marker");
        drop(file);
        std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("kill -STOP");
    }

    async fn maybe_stall(&self, amount: i64) {
        let delay = self.knobs.delay_us.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_micros(delay)).await;
        }
        let at = self.knobs.stall_on.load(Ordering::SeqCst);
        if at != 0 && amount == at as i64 {
            self.knobs.stalled.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// A store the model runs on.
pub(crate) trait Backend: ProjectionStore + EventStore + WatchAppends + Clone {
    /// Creates the model's tables (if any) and returns its projection.
    fn model(&self, name: &str) -> impl Future<Output = Model<Self>> + Send;
    /// Reads the model.
    fn totals(&self, model: &Model<Self>) -> impl Future<Output = Totals> + Send;
}

impl Backend for InMemoryEventStore {
    async fn model(&self, name: &str) -> Model<Self> {
        Model {
            name: name.to_owned(),
            knobs: Arc::default(),
            store: self.clone(),
            memory: Arc::default(),
        }
    }
    async fn totals(&self, model: &Model<Self>) -> Totals {
        model.memory.lock().expect("model").1.clone()
    }
}

impl Projection<MemoryTransaction> for Model<InMemoryEventStore> {
    fn name(&self) -> &str {
        &self.name
    }
    async fn handle(
        &self,
        _tx: &mut MemoryTransaction,
        event: &RecordedEvent,
    ) -> Result<(), Error> {
        let n = self.check(event).await?;
        {
            let mut m = self.memory.lock().expect("model");
            if m.0.insert(event.event_id) {
                let t = m.1.entry(event.stream_id.as_str().to_owned()).or_default();
                t.0 += 1;
                t.1 += n;
            }
        }
        self.maybe_stall(n).await;
        Ok(())
    }
    async fn reset(&self, _tx: &mut MemoryTransaction) -> Result<(), Error> {
        *self.memory.lock().expect("model") = Default::default();
        Ok(())
    }
}

fn table(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("rm_{clean}")
}

fn sql_error(e: sqlx::Error) -> Error {
    Error::internal("READ_MODEL", "the read model failed").with_source(e)
}

impl Backend for SqliteEventStore {
    async fn model(&self, name: &str) -> Model<Self> {
        let t = table(name);
        for sql in [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (stream TEXT PRIMARY KEY, n INTEGER NOT NULL, total INTEGER NOT NULL)"
            ),
            format!("CREATE TABLE IF NOT EXISTS {t}_seen (event_id TEXT PRIMARY KEY)"),
        ] {
            let mut tx = self.transaction().await.expect("tx");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(tx.connection())
                .await
                .expect("create the model");
            tx.commit().await.expect("commit");
        }
        Model {
            name: name.to_owned(),
            knobs: Arc::default(),
            store: self.clone(),
            memory: Arc::default(),
        }
    }
    async fn totals(&self, model: &Model<Self>) -> Totals {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT stream, n, total FROM {}",
            table(&model.name)
        )))
        .fetch_all(self.reader_pool())
        .await
        .expect("read the model");
        rows.into_iter().map(|(s, n, t)| (s, (n, t))).collect()
    }
}

impl Projection<SqliteWriteTransaction> for Model<SqliteEventStore> {
    fn name(&self) -> &str {
        &self.name
    }
    async fn handle(
        &self,
        tx: &mut SqliteWriteTransaction,
        event: &RecordedEvent,
    ) -> Result<(), Error> {
        let n = self.check(event).await?;
        let t = table(&self.name);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t}_seen (event_id) VALUES (?)"
        )))
        .bind(event.event_id.to_string())
        .execute(tx.connection())
        .await
        .map_err(sql_error)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t} (stream, n, total) VALUES (?, 1, ?) \
             ON CONFLICT (stream) DO UPDATE SET n = n + 1, total = total + excluded.total"
        )))
        .bind(event.stream_id.as_str())
        .bind(n)
        .execute(tx.connection())
        .await
        .map_err(sql_error)?;
        self.maybe_stall(n).await;
        Ok(())
    }
    async fn reset(&self, tx: &mut SqliteWriteTransaction) -> Result<(), Error> {
        let t = table(&self.name);
        for sql in [format!("DELETE FROM {t}"), format!("DELETE FROM {t}_seen")] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(tx.connection())
                .await
                .map_err(sql_error)?;
        }
        Ok(())
    }
}

impl Backend for PgEventStore {
    async fn model(&self, name: &str) -> Model<Self> {
        let t = table(name);
        for sql in [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (stream TEXT PRIMARY KEY, n BIGINT NOT NULL, total BIGINT NOT NULL)"
            ),
            format!("CREATE TABLE IF NOT EXISTS {t}_seen (event_id UUID PRIMARY KEY)"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(self.pool())
                .await
                .expect("create the model");
        }
        Model {
            name: name.to_owned(),
            knobs: Arc::default(),
            store: self.clone(),
            memory: Arc::default(),
        }
    }
    async fn totals(&self, model: &Model<Self>) -> Totals {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT stream, n, total FROM {}",
            table(&model.name)
        )))
        .fetch_all(self.pool())
        .await
        .expect("read the model");
        rows.into_iter().map(|(s, n, t)| (s, (n, t))).collect()
    }
}

impl Projection<PgWriteTransaction> for Model<PgEventStore> {
    fn name(&self) -> &str {
        &self.name
    }
    async fn handle(
        &self,
        tx: &mut PgWriteTransaction,
        event: &RecordedEvent,
    ) -> Result<(), Error> {
        let n = self.check(event).await?;
        let t = table(&self.name);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t}_seen (event_id) VALUES ($1)"
        )))
        .bind(event.event_id.as_uuid())
        .execute(tx.connection())
        .await
        .map_err(sql_error)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {t} (stream, n, total) VALUES ($1, 1, $2) \
             ON CONFLICT (stream) DO UPDATE SET n = {t}.n + 1, total = {t}.total + excluded.total"
        )))
        .bind(event.stream_id.as_str())
        .bind(n)
        .execute(tx.connection())
        .await
        .map_err(sql_error)?;
        self.maybe_stall(n).await;
        Ok(())
    }
    async fn reset(&self, tx: &mut PgWriteTransaction) -> Result<(), Error> {
        let t = table(&self.name);
        for sql in [format!("DELETE FROM {t}"), format!("DELETE FROM {t}_seen")] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(tx.connection())
                .await
                .map_err(sql_error)?;
        }
        Ok(())
    }
}

/// What the model must hold: the totals of every stored event but those of `skip` types.
pub(crate) async fn expected<S: EventStore>(store: &S, skip: &[&str]) -> Totals {
    let mut out = Totals::new();
    let mut after = flext_domain::Position::START;
    loop {
        let page = store.read_all(after, 1_000).await.expect("read all");
        let Some(last) = page.last() else {
            return out;
        };
        after = last.position;
        for e in &page {
            if skip.contains(&e.event_type.as_str()) {
                continue;
            }
            let t = out.entry(e.stream_id.as_str().to_owned()).or_default();
            t.0 += 1;
            t.1 += amount(e).expect("amount");
        }
    }
}

pub(crate) async fn sqlite() -> SqliteEventStore {
    let path =
        std::env::temp_dir().join(format!("flext-proj-{}.db", uuid::Uuid::now_v7().simple()));
    SqliteEventStore::open(path).await.expect("sqlite store")
}

pub(crate) async fn postgres() -> PgEventStore {
    flext_testkit::harness::fresh_pg_store("proj").await
}

/// A runner whose leases outlast any pause a loaded test machine imposes (30 s, renewed
/// every second): for tests that are not about ownership, so a renewal delayed past the
/// default 1.5 s lease cannot turn into an `OWNERSHIP_LOST` they do not test.
#[allow(dead_code)]
pub(crate) fn runner<S>(store: S) -> flext_application::ProjectionRunner<S>
where
    S: ProjectionStore + EventStore + WatchAppends + Clone,
{
    flext_application::ProjectionRunner::new(store).with_ownership_options(
        flext_application::OwnershipOptions {
            lease_ttl: std::time::Duration::from_secs(30),
            renew_every: std::time::Duration::from_secs(1),
            ..flext_application::OwnershipOptions::default()
        },
    )
}
