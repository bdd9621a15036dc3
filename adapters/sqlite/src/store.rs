//! The SQLite store: one queued writer connection, a pool of readers.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flext_domain::{CorrelationId, EventId};
use flext_domain::{
    Error, EventMetadata, EventRef, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
    StreamVersion,
};
use flext_ports::adapter::{
    StoredEvent, StoredRow, assemble_dead_letter, assemble_recorded, corrupted_event, encode_error,
    resolve_rejected_append_in_life, stored_claim, stored_number, validate_append,
};
use flext_ports::{
    AppendOutcome, AppendSignal, AppendWatcher, CheckpointStore, Claim, Clock, DeadLetter,
    EventStore, FilteredPage, Health, HealthCheck, HealthFuture, IdempotencyRecord,
    IdempotencyStore, Lease, Metrics, ProjectionStore, ReadDirection, Snapshot, SnapshotStore,
    StoreTelemetry, SystemClock, WatchAppends,
};
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

/// The table in which this adapter records its applied migrations, apart from the host
/// application's `_sqlx_migrations`.
pub const MIGRATIONS_TABLE: &str = "_flext_sqlite_migrations";

/// The adapter's embedded migrations, recorded in [`MIGRATIONS_TABLE`].
pub fn migrator() -> Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m
}

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit survives power loss (`synchronous=FULL`). The default.
    #[default]
    Full,
    /// Commits survive a crash of the program but the last ones may be lost on power loss
    /// (`synchronous=NORMAL` in WAL mode); about twice the commit rate.
    Normal,
}

/// Rows per INSERT statement: 12 bound values per row stays far below SQLite's limit.
const ROWS_PER_STATEMENT: usize = 500;

const COLUMNS: &str = "position, event_id, stream_id, version, event_type, schema_version, \
                       payload, correlation_id, causation_id, headers, recorded_at, tags";

/// A sqlx error as flext's, by what it means for the caller: a busy or unreachable file is
/// `UNAVAILABLE` (retryable), a read-only one `PERMISSION_DENIED`, a full disk
/// `RESOURCE_EXHAUSTED`, a damaged one `DATA_LOSS`; told apart by SQLite's result code.
pub(crate) fn db_error(what: &str, e: sqlx::Error) -> Error {
    let unavailable = || {
        Error::unavailable(
            "STORE_UNAVAILABLE",
            format!("SQLite store unavailable while {what}"),
        )
    };
    let code_error = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => unavailable(),
        sqlx::Error::Configuration(_) => Error::invalid_argument(
            "STORE_MISCONFIGURED",
            format!("the SQLite store is misconfigured (while {what})"),
        ),
        sqlx::Error::Database(db) => {
            // The primary result code is the low byte of the extended one.
            let primary = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map_or(0, |c| c & 0xff);
            let said = db.message();
            match primary {
                5 | 6 | 10 => unavailable(),
                3 | 8 | 23 => Error::permission_denied(
                    "STORE_READ_ONLY",
                    format!("SQLite store cannot write while {what}: {said}"),
                ),
                13 => Error::resource_exhausted(
                    "STORE_FULL",
                    format!("SQLite store is full while {what}: {said}"),
                ),
                11 | 26 => Error::data_loss(
                    "STORE_CORRUPT",
                    format!("SQLite file is damaged or not a database ({what}): {said}"),
                ),
                14 => Error::failed_precondition(
                    "STORE_CANNOT_OPEN",
                    format!("SQLite cannot open the file while {what}: {said}"),
                ),
                _ => Error::internal(
                    "STORE_ERROR",
                    format!("SQLite store failed while {what}: {said}"),
                ),
            }
        }
        _ => Error::internal("STORE_ERROR", format!("SQLite store failed while {what}")),
    };
    code_error.with_source(e)
}

/// Refuses, with the fitting code, a path SQLite could not open or write as a store: a
/// directory, a file in a directory that does not exist, a read-only file.
fn check_path(path: &Path) -> Result<(), Error> {
    let shown = path.display().to_string();
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            return Err(Error::invalid_argument(
                "PATH_IS_A_DIRECTORY",
                format!("{shown} is a directory, not a SQLite file"),
            )
            .with_detail("path", shown));
        }
        if meta.permissions().readonly() {
            return Err(Error::permission_denied(
                "STORE_READ_ONLY",
                format!("{shown} is read-only: the store writes to it"),
            )
            .with_detail("path", shown));
        }
        return Ok(());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => return Ok(()),
    };
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid_argument(
            "PATH_NOT_IN_A_DIRECTORY",
            format!("{} is not a directory", parent.display()),
        )
        .with_detail("path", shown)),
        Err(_) => Err(Error::not_found(
            "DIRECTORY_NOT_FOUND",
            format!("the directory of {shown} does not exist; create it first"),
        )
        .with_detail("path", shown)),
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn limit(max_count: usize) -> i64 {
    i64::try_from(max_count).unwrap_or(i64::MAX)
}

pub(crate) struct Writer {
    pub(crate) conn: SqliteConnection,
    /// `close` was called: every write is refused.
    closed: bool,
    /// A transaction may be open on the connection that nobody will finish: set before a
    /// BEGIN (or a multi-statement append) is sent and cleared once it is finished, so a
    /// future dropped at any await point leaves this set and the next user rolls back.
    open_tx: bool,
}

impl Writer {
    pub(crate) async fn settle(&mut self) -> Result<(), Error> {
        if self.closed {
            return Err(Error::unavailable(
                "STORE_CLOSED",
                "the SQLite store was closed",
            ));
        }
        if self.open_tx {
            // The abandoned work may have finished (a COMMIT dropped after it was sent) or
            // never started (a BEGIN dropped before): then there is nothing to roll back
            // and SQLite says so; either way the connection is in autocommit afterwards.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
            self.open_tx = false;
        }
        Ok(())
    }
}

/// Configures and opens a [`SqliteEventStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    synchronous: Synchronous,
    readers: u32,
    acquire_timeout: Duration,
    /// Options parsed from a URL (`open_url`): in-memory, read-only and the like, kept.
    /// (the options, whether they are read-only)
    from_url: Option<(SqliteConnectOptions, bool)>,
    /// Whether opening runs the migrations (default true).
    migrate: bool,
}

impl SqliteStoreBuilder {
    /// Commit durability (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Reader connections in the pool (default 4).
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// The pool's size: the reader connections, as `PgStoreBuilder::max_connections` sets
    /// PostgreSQL's (the one writer connection comes on top).
    pub fn max_connections(self, n: u32) -> Self {
        self.readers(n)
    }

    /// How long a read waits for a pooled connection before it fails `UNAVAILABLE`
    /// (default 5 s, as on PostgreSQL).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Whether opening runs the store's migrations (default true). Off, the store works
    /// only on a schema that is up to date; `StoreInspect::migrations` tells what is
    /// missing and [`SqliteEventStore::apply_migrations`] applies it.
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// [`SqliteStoreBuilder::open`], under the name `PgStoreBuilder` uses.
    pub async fn connect(self) -> Result<SqliteEventStore, Error> {
        self.open().await
    }

    /// Opens (creating if missing) the database file, runs the migrations and returns the
    /// store.
    pub async fn open(self) -> Result<SqliteEventStore, Error> {
        let (base, read_only) = match self.from_url.clone() {
            Some((options, read_only)) => (options, read_only),
            None => {
                check_path(&self.path)?;
                let options = SqliteConnectOptions::new()
                    .filename(&self.path)
                    .create_if_missing(true);
                (options, false)
            }
        };
        let options = base
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match self.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(30))
            // Deleted content is overwritten with zeros, so what is deleted (a forgotten
            // data key, a rebuilt read model's old rows) does not linger in the file.
            .pragma("secure_delete", "ON");
        let readers = SqlitePoolOptions::new()
            .max_connections(self.readers)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|e| db_error(&format!("opening {}", self.path.display()), e))?;
        // A read-only store cannot migrate; its writes fail `PERMISSION_DENIED`.
        if !read_only && self.migrate {
            migrator().run(&readers).await.map_err(|e| {
                Error::unavailable("MIGRATION_FAILED", "the SQLite store's migrations failed")
                    .with_source(e)
            })?;
        }
        let conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| db_error("opening the writer connection", e))?;
        Ok(SqliteEventStore {
            readers,
            writer: Arc::new(Mutex::new(Writer {
                conn,
                open_tx: false,
                closed: false,
            })),
            clock: Arc::new(SystemClock),
            appended: AppendSignal::new(),
            consumers_changed: AppendSignal::new(),
            telemetry: StoreTelemetry::new("sqlite", "flext_events")
                .with_namespace(self.path.display().to_string()),
            path: Arc::new(self.path.clone()),
        })
    }
}

/// An event and snapshot store in one SQLite file. Clones share the connections.
#[derive(Clone)]
pub struct SqliteEventStore {
    pub(crate) readers: SqlitePool,
    pub(crate) writer: Arc<Mutex<Writer>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Pulsed after every commit that appended; SQLite cannot tell one process about
    /// another's writes, so readers in other processes of the same file poll.
    appended: AppendSignal,
    /// Pulsed when a consumer's checkpoint or lease changed in this process.
    pub(crate) consumers_changed: AppendSignal,
    pub(crate) telemetry: StoreTelemetry,
    /// The database file (empty for an in-memory database).
    pub(crate) path: Arc<PathBuf>,
}

impl std::fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEventStore").finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// A builder for the store in the file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_owned(),
            synchronous: Synchronous::Full,
            readers: 4,
            acquire_timeout: Duration::from_secs(5),
            from_url: None,
            migrate: true,
        }
    }

    /// Opens the store in the file at `path` with the defaults.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        SqliteEventStore::builder(path).open().await
    }

    /// [`SqliteEventStore::open_url`], under the name `PgEventStore::connect` has: both
    /// stores open from a URL with `connect`.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        SqliteEventStore::open_url(url).await
    }

    /// Opens the store at a `sqlite:` URL (`sqlite://events.db`, `sqlite:events.db`), with
    /// the URL's options: `sqlite::memory:` keeps everything in memory (nothing on disk),
    /// `?mode=ro` opens an existing store read-only (reads work, writes fail
    /// `PERMISSION_DENIED`), `?mode=rwc` creates the file if missing.
    pub async fn open_url(url: &str) -> Result<Self, Error> {
        SqliteEventStore::builder_url(url)?.open().await
    }

    /// A builder for the store at a `sqlite:` URL, with the URL's options (as
    /// [`SqliteEventStore::open_url`]).
    pub fn builder_url(url: &str) -> Result<SqliteStoreBuilder, Error> {
        // Neither the URL nor the parser's message (which may quote it) goes into the
        // error as given: a URL may carry a password.
        if !url.starts_with("sqlite:") {
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            return Err(Error::invalid_argument(
                "INVALID_DATABASE_URL",
                format!(
                    "{:?} is not a SQLite URL (it starts with {scheme:?}, not \"sqlite:\")",
                    flext_ports::redact_url(url)
                ),
            ));
        }
        let options = SqliteConnectOptions::from_str(url).map_err(|_| {
            Error::invalid_argument(
                "INVALID_DATABASE_URL",
                format!("{:?} is not a SQLite URL", flext_ports::redact_url(url)),
            )
        })?;
        let mut builder = SqliteEventStore::builder(options.get_filename());
        let read_only = url
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p == "mode=ro"));
        // Without a mode, as `open`: the file is created when missing.
        let options = if url.contains("mode=") {
            options
        } else {
            options.create_if_missing(true)
        };
        builder.from_url = Some((options, read_only));
        Ok(builder)
    }

    /// Applies the store's migrations that have not run (for a store opened with
    /// `migrate(false)`); returns how many ran.
    pub async fn apply_migrations(&self) -> Result<usize, Error> {
        let before = self.applied_versions().await?.len();
        migrator().run(&self.readers).await.map_err(|e| {
            Error::unavailable("MIGRATION_FAILED", "the SQLite store's migrations failed")
                .with_source(e)
        })?;
        Ok(self.applied_versions().await?.len().saturating_sub(before))
    }

    /// The versions (and times, in microseconds) of the applied migrations; none when the
    /// store was never migrated.
    pub(crate) async fn applied_versions(&self) -> Result<Vec<(i64, DateTime<Utc>)>, Error> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?")
                .bind(MIGRATIONS_TABLE)
                .fetch_optional(&self.readers)
                .await
                .map_err(|e| db_error("reading the migrations", e))?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT version, installed_on FROM {MIGRATIONS_TABLE} WHERE success ORDER BY version"
        )))
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("reading the migrations", e))?;
        Ok(rows)
    }

    /// Closes the store: waits for the writer (a transaction in hand commits or rolls
    /// back first), copies the write-ahead log into the database file and truncates it,
    /// so the `.db` file alone holds everything, and closes the readers. Every later
    /// operation fails `UNAVAILABLE`/`STORE_CLOSED`.
    pub async fn close(&self) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("checkpointing the write-ahead log", e))?;
        writer.closed = true;
        drop(writer);
        self.readers.close().await;
        Ok(())
    }

    /// Copies the write-ahead log into the database file and truncates it, so no older
    /// image of a page survives in the log. Deleted content is zeroed in the file itself
    /// (`secure_delete`); the log keeps earlier page images until a checkpoint. Call it
    /// after forgetting subjects and rebuilding their projections, so none of their
    /// personal values survives anywhere in the store's files. `UNAVAILABLE`/`WAL_BUSY`
    /// when a reader held the log back (try again).
    pub async fn scrub(&self) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut writer.conn)
            .await
            .map_err(|e| db_error("checkpointing the write-ahead log", e))?;
        if busy != 0 {
            return Err(Error::unavailable(
                "WAL_BUSY",
                "a reader held the write-ahead log back: it was not truncated; try again",
            ));
        }
        Ok(())
    }

    /// Records times from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Records append and read durations and sizes (`flext.store.duration`,
    /// `flext.store.events`) on `metrics`. Spans are opened either way.
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.telemetry = self.telemetry.with_metrics(metrics);
        self
    }

    /// The pool of reader connections, for queries of your own (read models in the same
    /// file, diagnostics).
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.readers
    }

    /// The pool for queries of your own: the reader pool, under the name `PgEventStore`
    /// uses for its pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.readers
    }

    /// The reader pool as [`ReadModels`](flext_ports::sql::ReadModels): portable SQL for
    /// queries over read models, the same type as `PgEventStore::read_models`. Write read
    /// models in a projection's transaction (which holds the store's one writer), not here.
    pub fn read_models(&self) -> flext_ports::sql::ReadModels {
        flext_ports::sql::ReadModels::new(crate::sql::SqliteReadPool(self.readers.clone()))
    }

    /// Begins a write transaction on the store's one writer connection: appends and your
    /// own statements in it commit together (exactly-once read models). Every other write
    /// waits until it commits, rolls back or is dropped (a drop rolls back).
    pub async fn transaction(&self) -> Result<SqliteWriteTransaction, Error> {
        let mut writer = self.writer.clone().lock_owned().await;
        writer.settle().await?;
        // Marked before it is sent: dropped at any point, the next user rolls it back.
        writer.open_tx = true;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("beginning a transaction", e))?;
        Ok(SqliteWriteTransaction {
            writer,
            clock: self.clock.clone(),
            appended: None,
            signal: self.appended.clone(),
            checkpointed: false,
            consumers_signal: self.consumers_changed.clone(),
        })
    }
}

/// A write transaction on the store's writer connection; see
/// [`SqliteEventStore::transaction`].
pub struct SqliteWriteTransaction {
    writer: OwnedMutexGuard<Writer>,
    clock: Arc<dyn Clock>,
    /// The last position this transaction appended, if it did.
    appended: Option<Position>,
    signal: AppendSignal,
    /// Whether a fenced checkpoint was written.
    checkpointed: bool,
    consumers_signal: AppendSignal,
}

impl SqliteWriteTransaction {
    /// Appends within this transaction, with the same rules as [`EventStore::append`].
    pub async fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        let now = self.clock.now();
        let out = append_on(&mut self.writer.conn, stream, expected, events, now).await?;
        self.appended = self.appended.max(out.last_position());
        Ok(out)
    }

    /// Sets a checkpoint within this transaction, so a read model written in the same
    /// transaction and its checkpoint commit together (exactly once).
    pub async fn save_checkpoint(&mut self, name: &str, position: Position) -> Result<(), Error> {
        let now = self.clock.now();
        save_checkpoint_on(&mut self.writer.conn, name, position, now).await
    }

    /// Moves the checkpoint of `lease.consumer` to `position` within this transaction,
    /// under `lease` (see `flext_ports::ProjectionStore::set_checkpoint`): refused with
    /// `OWNERSHIP_LOST` when the lease is not current, with `CHECKPOINT_BACKWARDS` when
    /// `position` is below the stored one and `rewind` is false.
    pub async fn save_checkpoint_fenced(
        &mut self,
        lease: &Lease,
        position: Position,
        rewind: bool,
    ) -> Result<(), Error> {
        let now = self.clock.now().timestamp_micros();
        crate::ownership::fenced_on(&mut self.writer.conn, lease, position, rewind, now).await?;
        self.checkpointed = true;
        Ok(())
    }

    /// The connection, for statements of your own in this transaction.
    pub fn connection(&mut self) -> &mut SqliteConnection {
        &mut self.writer.conn
    }

    /// Commits everything done in the transaction.
    pub async fn commit(mut self) -> Result<(), Error> {
        sqlx::query("COMMIT")
            .execute(&mut self.writer.conn)
            .await
            .map_err(|e| db_error("committing", e))?;
        self.writer.open_tx = false;
        if self.appended.is_some() {
            self.signal.pulse();
        }
        if self.checkpointed {
            self.consumers_signal.pulse();
        }
        Ok(())
    }

    /// Rolls back everything done in the transaction.
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.writer.settle().await
    }
}

/// A transaction dropped unfinished (a cancelled request, an error returned with `?`)
/// is rolled back at once in a task of its own, so the file's write lock goes back to
/// other writers (other processes among them) now rather than at this store's next
/// write. Without a runtime the next writer rolls it back, as before.
impl Drop for SqliteWriteTransaction {
    fn drop(&mut self) {
        if !self.writer.open_tx {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let writer = OwnedMutexGuard::mutex(&self.writer).clone();
            // Queued behind this guard, released right after this returns; `settle` is
            // a no-op if a writer waiting already rolled it back.
            runtime.spawn(async move {
                let _ = writer.lock().await.settle().await;
            });
        }
    }
}

/// A plain multi-row INSERT of `rows` events with explicit positions and versions. Only
/// anonymous `?` placeholders: SQLite finds a numbered one by a linear scan, so binding n
/// of them costs O(n^2). (An INSERT ... SELECT that reads the table it writes makes SQLite
/// copy every row to a temporary table first: three times slower for 100 events.)
fn insert_sql(rows: usize) -> String {
    const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::with_capacity(200 + rows * (ROW.len() + 2));
    sql.push_str(
        "INSERT INTO flext_events (position, event_id, stream_id, version, event_type, \
         schema_version, payload, correlation_id, causation_id, headers, recorded_at, tags) \
         VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(ROW);
    }
    sql
}

fn headers_json(metadata: &EventMetadata) -> Option<String> {
    if metadata.headers.is_empty() {
        None
    } else {
        serde_json::to_string(&metadata.headers).ok()
    }
}

/// A stream's events from a version on: the current life's, from the log and, below
/// `archived_below`, from the archive.
const READ_STREAM_FORWARD_SQL: &str = "\
WITH life AS (
    SELECT max(life_start, truncated_before) AS first, archived_below
    FROM flext_streams WHERE stream_id = ?1
)
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_events
WHERE stream_id = ?1 AND version >= max(?2, coalesce((SELECT first FROM life), 1))
UNION ALL
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_archive
WHERE stream_id = ?1 AND version >= max(?2, (SELECT first FROM life))
  AND version < (SELECT archived_below FROM life)
ORDER BY version ASC LIMIT ?3";

/// The same backwards from a version.
const READ_STREAM_BACKWARD_SQL: &str = "\
WITH life AS (
    SELECT max(life_start, truncated_before) AS first, archived_below
    FROM flext_streams WHERE stream_id = ?1
)
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_events
WHERE stream_id = ?1 AND version <= ?2 AND version >= coalesce((SELECT first FROM life), 1)
UNION ALL
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_archive
WHERE stream_id = ?1 AND version <= ?2 AND version >= (SELECT first FROM life)
  AND version < (SELECT archived_below FROM life)
ORDER BY version DESC LIMIT ?3";

/// What an aggregate load reads: the forward read's rows, only the columns a decode uses.
const REPLAY_SQL: &str = "\
WITH life AS (
    SELECT max(life_start, truncated_before) AS first, archived_below
    FROM flext_streams WHERE stream_id = ?1
)
SELECT version, event_type, schema_version, payload
FROM flext_events
WHERE stream_id = ?1 AND version >= max(?2, coalesce((SELECT first FROM life), 1))
UNION ALL
SELECT version, event_type, schema_version, payload
FROM flext_archive
WHERE stream_id = ?1 AND version >= max(?2, (SELECT first FROM life))
  AND version < (SELECT archived_below FROM life)
ORDER BY version ASC LIMIT ?3";

/// How often an append looks again after another process wrote between its read of the
/// stream's head and its insert.
const CONTENTION_RETRIES: usize = 16;

/// What an append needs to know before it inserts, read in one statement.
pub(crate) struct Heads {
    /// The stream's version (its lifecycle floor included).
    pub(crate) version: i64,
    /// The highest position ever given.
    pub(crate) position: i64,
    /// Its lifecycle state (0 live, 1 deleted, 2 tombstoned).
    pub(crate) state: i64,
    /// The first version of its current life.
    pub(crate) life_start: i64,
}

/// The stream's version and lifecycle and the store's last position, in one statement.
pub(crate) async fn heads(conn: &mut SqliteConnection, stream: &StreamId) -> Result<Heads, Error> {
    let row = sqlx::query(
        "SELECT max(coalesce((SELECT max(version) FROM flext_events WHERE stream_id = ?1), 0),                     coalesce(s.version, 0)),                 max((SELECT coalesce(max(position), 0) FROM flext_events),                     coalesce((SELECT value FROM flext_counters WHERE name = 'position'), 0)),                 coalesce(s.state, 0), coalesce(s.life_start, 1)          FROM (SELECT 1) LEFT JOIN flext_streams s ON s.stream_id = ?1",
    )
    .bind(stream.as_str())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error("reading the stream's head", e))?;
    let read = |i| {
        row.try_get::<i64, _>(i)
            .map_err(|e| db_error("reading the stream's head", e))
    };
    Ok(Heads {
        version: read(0)?,
        position: read(1)?,
        state: read(2)?,
        life_start: read(3)?,
    })
}

async fn insert_chunk(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    first_version: i64,
    first_position: i64,
    events: &[NewEvent],
    now_micros: i64,
) -> Result<(), sqlx::Error> {
    let mut q = sqlx::query(AssertSqlSafe(insert_sql(events.len())));
    for (i, e) in events.iter().enumerate() {
        q = q
            .bind(first_position + i as i64)
            .bind(e.event_id.as_uuid())
            .bind(stream.as_str())
            .bind(first_version + i as i64)
            .bind(e.event_type.as_str())
            .bind(i64::from(e.schema_version))
            .bind(e.payload.as_ref())
            .bind(e.metadata.correlation_id.map(|c| c.as_uuid()))
            .bind(e.metadata.causation_id.map(|c| c.as_uuid()))
            .bind(headers_json(&e.metadata))
            .bind(now_micros)
            .bind(tags_json(&e.tags));
    }
    q.execute(&mut *conn).await?;
    let tagged: Vec<(i64, &str)> = events
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            e.tags
                .iter()
                .map(move |t| (first_position + i as i64, t.as_str()))
        })
        .collect();
    for chunk in tagged.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from("INSERT INTO flext_event_tags (tag, position) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?)" } else { ", (?, ?)" });
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (position, tag) in chunk {
            q = q.bind(*tag).bind(*position);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The stored form of an event's tags: a JSON array, or NULL when it has none.
fn tags_json(tags: &[String]) -> Option<String> {
    if tags.is_empty() {
        None
    } else {
        serde_json::to_string(tags).ok()
    }
}

/// Inserts the events after `version` and `position`: one statement when they fit and
/// carry no tags, else a savepoint around several (the events' and their tag index rows),
/// so the append stays all or nothing.
async fn insert_all(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    version: i64,
    position: i64,
    events: &[NewEvent],
    now_micros: i64,
) -> Result<(), sqlx::Error> {
    if events.len() <= ROWS_PER_STATEMENT && events.iter().all(|e| e.tags.is_empty()) {
        return insert_chunk(conn, stream, version + 1, position + 1, events, now_micros).await;
    }
    sqlx::query("SAVEPOINT flext_append")
        .execute(&mut *conn)
        .await?;
    let mut result = Ok(());
    for (i, chunk) in events.chunks(ROWS_PER_STATEMENT).enumerate() {
        let done = (i * ROWS_PER_STATEMENT) as i64;
        result = insert_chunk(
            conn,
            stream,
            version + done + 1,
            position + done + 1,
            chunk,
            now_micros,
        )
        .await;
        if result.is_err() {
            break;
        }
    }
    end_savepoint(conn, "flext_append", result.is_err()).await?;
    result
}

/// Ends savepoint `name` (one of this file's): rolled back to first when `failed`, then
/// released.
async fn end_savepoint(
    conn: &mut SqliteConnection,
    name: &'static str,
    failed: bool,
) -> Result<(), sqlx::Error> {
    if failed {
        sqlx::query(AssertSqlSafe(format!("ROLLBACK TO {name}")))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(AssertSqlSafe(format!("RELEASE {name}")))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The append that revives a soft-deleted stream: its events and the change of state
/// under one savepoint.
async fn revive_and_insert(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    version: i64,
    position: i64,
    events: &[NewEvent],
    now_micros: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SAVEPOINT flext_revive")
        .execute(&mut *conn)
        .await?;
    let mut result = insert_all(conn, stream, version, position, events, now_micros).await;
    if result.is_ok() {
        result = sqlx::query("UPDATE flext_streams SET state = 0 WHERE stream_id = ?1")
            .bind(stream.as_str())
            .execute(&mut *conn)
            .await
            .map(|_| ());
    }
    end_savepoint(conn, "flext_revive", result.is_err()).await?;
    result
}

/// The append on the writer connection: read the stream's head, check the expectation,
/// insert with explicit versions and positions. Appends of this process are serialized by
/// the writer queue, so the head cannot move between the read and the insert unless
/// another process writes the file; the unique constraints then reject the insert and
/// the append looks again.
async fn append_on(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<AppendOutcome, Error> {
    validate_append(&events)?;
    let n = events.len() as i64;
    for _ in 0..CONTENTION_RETRIES {
        let heads = heads(&mut *conn, stream).await?;
        let (version, position) = (heads.version, heads.position);
        let actual = StreamVersion(stored_number(stream.as_str(), "version", version)?);
        stored_number(stream.as_str(), "position", position)?;
        let (checked, life_start) = flext_ports::lifecycle::append_expectation(
            stream,
            heads.state,
            heads.life_start,
            actual,
        )?;
        if !expected.accepts(checked) {
            let existing = stored_with_ids(&mut *conn, &events).await?;
            return resolve_rejected_append_in_life(
                stream, expected, checked, life_start, &events, &existing,
            );
        }
        let revive = heads.state == flext_ports::lifecycle::StoredLife::DELETED;
        let now_micros = now.timestamp_micros();
        let inserted = if revive {
            revive_and_insert(&mut *conn, stream, version, position, &events, now_micros).await
        } else {
            insert_all(&mut *conn, stream, version, position, &events, now_micros).await
        };
        match inserted {
            Ok(()) => {
                // Both are non-negative (checked above) and grew by at most 10,000.
                return Ok(AppendOutcome {
                    stream_version: actual.advanced(n as u64),
                    positions: (1..=n)
                        .map(|i| Position(position.saturating_add(i).unsigned_abs()))
                        .collect(),
                });
            }
            Err(sqlx::Error::Database(e)) if e.kind() == ErrorKind::UniqueViolation => {
                let existing = stored_with_ids(&mut *conn, &events).await?;
                if !existing.is_empty() {
                    let heads = self::heads(&mut *conn, stream).await?;
                    let actual =
                        StreamVersion(stored_number(stream.as_str(), "version", heads.version)?);
                    let (checked, life_start) = flext_ports::lifecycle::append_expectation(
                        stream,
                        heads.state,
                        heads.life_start,
                        actual,
                    )?;
                    return resolve_rejected_append_in_life(
                        stream, expected, checked, life_start, &events, &existing,
                    );
                }
                // Another process took the version or the position: look again.
            }
            Err(e) => return Err(db_error("appending", e)),
        }
    }
    Err(Error::unavailable(
        "WRITE_CONTENTION",
        format!(
            "other writers of the SQLite file kept taking stream {:?}'s next version",
            stream.as_str()
        ),
    ))
}

/// The stream's version; `STREAM_DELETED` when it is deleted.
async fn stream_version_on(
    conn: &mut SqliteConnection,
    stream: &StreamId,
) -> Result<StreamVersion, Error> {
    let life = crate::lifecycle::load(conn, stream).await?;
    life.readable(stream)?;
    Ok(life.info().version)
}

pub(crate) async fn stored_with_ids(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> Result<Vec<StoredEvent>, Error> {
    let mut out = Vec::new();
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let placeholders = vec!["?"; chunk.len()];
        let sql = format!(
            "SELECT {COLUMNS} FROM flext_events WHERE event_id IN ({})",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for e in chunk {
            q = q.bind(e.event_id.as_uuid());
        }
        let rows = q
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error("looking up event ids", e))?;
        for row in &rows {
            let r = decode_row(row, &mut None)?;
            out.push(StoredEvent {
                event_id: r.event_id,
                stream_id: r.stream_id,
                stream_version: r.stream_version,
                position: r.position,
                event_type: r.event_type,
                schema_version: r.schema_version,
                payload: r.payload,
            });
        }
    }
    Ok(out)
}

/// A filtered read's page from its rows: how far it looked is its last event when the page
/// is full, else the head read before it.
pub(crate) fn filtered_page(
    rows: &[SqliteRow],
    max_count: usize,
    after: Position,
    head: i64,
) -> Result<FilteredPage, Error> {
    let mut last = None;
    let events = rows
        .iter()
        .map(|r| decode_row(r, &mut last))
        .collect::<Result<Vec<_>, _>>()?;
    let through = match events.last() {
        Some(e) if events.len() >= max_count => e.position,
        _ => Position(stored_number("flext_events", "head", head)?).max(after),
    };
    Ok(FilteredPage { events, through })
}

/// Decodes one row; `last_stream` carries the previous row's stream id, reused (one
/// shared string, no allocation) while consecutive rows belong to the same stream.
pub(crate) fn decode_row(
    row: &SqliteRow,
    last_stream: &mut Option<StreamId>,
) -> Result<RecordedEvent, Error> {
    let position: i64 = row
        .try_get(0)
        .map_err(|e| corrupted_event("?", -1, format_args!("unreadable position: {e}")))?;
    let stream: String = row.try_get(2).map_err(|e| {
        corrupted_event(
            "?",
            -1,
            format_args!("the event at position {position} has an unreadable stream id: {e}"),
        )
    })?;
    let version: i64 = row
        .try_get(3)
        .map_err(|e| corrupted_event(&stream, -1, format_args!("unreadable version: {e}")))?;
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        corrupted_event(&stream, version, format_args!("{what}: {e}"))
    };
    let event_id: Uuid = row.try_get(1).map_err(|e| bad("unreadable event id", &e))?;
    let event_type: String = row
        .try_get(4)
        .map_err(|e| bad("unreadable event type", &e))?;
    let schema_version: i64 = row
        .try_get(5)
        .map_err(|e| bad("unreadable schema version", &e))?;
    let payload: Vec<u8> = row.try_get(6).map_err(|e| bad("unreadable payload", &e))?;
    let correlation: Option<Uuid> = row
        .try_get(7)
        .map_err(|e| bad("unreadable correlation id", &e))?;
    let causation: Option<Uuid> = row
        .try_get(8)
        .map_err(|e| bad("unreadable causation id", &e))?;
    let headers: Option<String> = row.try_get(9).map_err(|e| bad("unreadable headers", &e))?;
    let recorded: i64 = row
        .try_get(10)
        .map_err(|e| bad("unreadable recorded time", &e))?;
    let recorded_at = DateTime::<Utc>::from_timestamp_micros(recorded)
        .ok_or_else(|| bad("recorded time out of range", &recorded))?;
    let tags: Option<String> = row.try_get(11).map_err(|e| bad("unreadable tags", &e))?;
    let tags = match tags {
        None => Vec::new(),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| bad("tags are not a JSON array of strings", &e))?,
    };
    assemble_recorded(
        StoredRow {
            position,
            event_id,
            stream,
            version,
            event_type,
            schema_version,
            payload,
            correlation_id: correlation,
            causation_id: causation,
            headers,
            recorded_at,
            tags,
        },
        last_stream,
    )
}

impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        let op = self.telemetry.append(stream, &events);
        op.append(async move {
            validate_append(&events)?;
            let now = self.clock.now();
            let mut writer = self.writer.lock().await;
            writer.settle().await?;
            // A large append runs under a savepoint (a transaction of its own): marked, so
            // an append dropped half-way is rolled back by the next user.
            writer.open_tx = true;
            let out = append_on(&mut writer.conn, stream, expected, events, now).await;
            writer.open_tx = false;
            let out = out?;
            drop(writer);
            self.appended.pulse();
            Ok(out)
        })
        .await
    }

    async fn read_correlated(
        &self,
        correlation: CorrelationId,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.telemetry.read("read_correlated", None).read(async move {
            let rows = sqlx::query(
                "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                 correlation_id, causation_id, headers, recorded_at, tags FROM flext_events \
                 WHERE correlation_id = ?1 ORDER BY position LIMIT ?2",
            )
            .bind(correlation.as_uuid())
            .bind(limit(max_count))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error("reading a business action", e))?;
            let mut last = None;
            rows.iter().map(|r| decode_row(r, &mut last)).collect()
        })
        .await
    }

    async fn count_after(&self, after: Position) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM flext_events WHERE position > ?")
            .bind(to_i64(after.0))
            .fetch_one(&self.readers)
            .await
            .map_err(|e| db_error("counting events", e))?;
        Ok(n.max(0) as u64)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        direction: ReadDirection,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.telemetry
            .read("read_stream", Some(stream))
            .read(async move {
                let sql = match direction {
                    ReadDirection::Forward => READ_STREAM_FORWARD_SQL,
                    ReadDirection::Backward => READ_STREAM_BACKWARD_SQL,
                };
                let rows = sqlx::query(sql)
                    .bind(stream.as_str())
                    .bind(to_i64(from.0))
                    .bind(limit(max_count))
                    .fetch_all(&self.readers)
                    .await
                    .map_err(|e| db_error("reading a stream", e))?;
                if rows.is_empty() {
                    self.readable(stream).await?;
                }
                let mut last = Some(stream.clone());
                rows.iter().map(|r| decode_row(r, &mut last)).collect()
            })
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.telemetry.read("read_all", None).read(async move {
            let rows = sqlx::query(
                "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                 correlation_id, causation_id, headers, recorded_at, tags FROM flext_events \
                 WHERE position > ?1 ORDER BY position ASC LIMIT ?2",
            )
            .bind(to_i64(after.0))
            .bind(limit(max_count))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error("reading all events", e))?;
            let mut last = None;
            rows.iter().map(|r| decode_row(r, &mut last)).collect()
        })
        .await
    }

    /// The head first, then the matches up to it: positions are given in commit order
    /// (one writer at a time, even across processes), so every event at or before a head
    /// once read is committed and the second statement sees it.
    async fn read_all_of_types(
        &self,
        after: Position,
        max_count: usize,
        types: &[&str],
    ) -> Result<FilteredPage, Error> {
        let types = serde_json::to_string(types)
            .map_err(|e| Error::internal("ENCODING_FAILED", format!("event types: {e}")))?;
        self.telemetry.read("read_all_of_types", None).read_page(async move {
            let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM flext_events")
                .fetch_one(&self.readers)
                .await
                .map_err(|e| db_error("reading the head", e))?;
            let rows = sqlx::query(
                "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                 correlation_id, causation_id, headers, recorded_at, tags FROM flext_events \
                 WHERE position > ?1 AND position <= ?2 \
                 AND event_type IN (SELECT value FROM json_each(?3)) \
                 ORDER BY position ASC LIMIT ?4",
            )
            .bind(to_i64(after.0))
            .bind(head)
            .bind(types)
            .bind(limit(max_count))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error("reading events by type", e))?;
            filtered_page(&rows, max_count, after, head)
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, Error> {
        let mut conn = self
            .readers
            .acquire()
            .await
            .map_err(|e| db_error("acquiring a reader", e))?;
        stream_version_on(&mut conn, stream).await
    }

    async fn replay_stream<F>(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max_count: usize,
        mut apply: F,
    ) -> Result<usize, Error>
    where
        F: FnMut(EventRef<'_>) -> Result<(), Error> + Send,
    {
        let rows = sqlx::query(REPLAY_SQL)
            .bind(stream.as_str())
            .bind(to_i64(from.0))
            .bind(limit(max_count))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| db_error("replaying a stream", e))?;
        // Nothing, or a first version later than asked: deleted, truncated or revived?
        let first = rows.first().and_then(|r| r.try_get::<i64, _>(0).ok());
        if first.is_none_or(|v| v > to_i64(from.0.max(1))) {
            let mut conn = self
                .readers
                .acquire()
                .await
                .map_err(|e| db_error("acquiring a reader", e))?;
            crate::lifecycle::load(&mut conn, stream)
                .await?
                .replay_start(stream, from)?;
        }
        for row in &rows {
            let version: i64 = row.try_get(0).map_err(|e| {
                corrupted_event(stream.as_str(), -1, format_args!("unreadable version: {e}"))
            })?;
            let bad = |what: &str, e: &dyn std::fmt::Display| {
                corrupted_event(stream.as_str(), version, format_args!("{what}: {e}"))
            };
            let event_type: &str = row
                .try_get(1)
                .map_err(|e| bad("unreadable event type", &e))?;
            let schema_version: i64 = row
                .try_get(2)
                .map_err(|e| bad("unreadable schema version", &e))?;
            let payload: &[u8] = row.try_get(3).map_err(|e| bad("unreadable payload", &e))?;
            apply(EventRef {
                stream_id: stream,
                stream_version: StreamVersion(stored_number(stream.as_str(), "version", version)?),
                event_type,
                schema_version: u32::try_from(schema_version)
                    .map_err(|e| bad("invalid schema version", &e))?,
                payload,
            })?;
        }
        Ok(rows.len())
    }
}

impl SnapshotStore for SqliteEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query(
            "INSERT INTO flext_snapshots (stream_id, version, schema_version, state) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, \
             schema_version = excluded.schema_version, state = excluded.state \
             WHERE excluded.version >= flext_snapshots.version",
        )
        .bind(snapshot.stream_id.as_str())
        .bind(to_i64(snapshot.version.0))
        .bind(i64::from(snapshot.schema_version))
        .bind(snapshot.state.as_ref())
        .execute(&mut writer.conn)
        .await
        .map_err(|e| db_error("saving a snapshot", e))?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        let row = sqlx::query(
            "SELECT version, schema_version, state FROM flext_snapshots WHERE stream_id = ?1",
        )
        .bind(stream.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| db_error("loading a snapshot", e))?;
        let Some(row) = row else { return Ok(None) };
        let decoded: Result<(i64, i64, Vec<u8>), sqlx::Error> =
            (|| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))();
        // A snapshot is a cache: one that cannot be read is as good as none.
        let Ok((version, schema_version, state)) = decoded else {
            return Ok(None);
        };
        let Ok(schema_version) = u32::try_from(schema_version) else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            version: StreamVersion(version.max(0) as u64),
            schema_version,
            state: Bytes::from(state),
        }))
    }
}

impl IdempotencyStore for SqliteEventStore {
    async fn claim(
        &self,
        id: Uuid,
        message_type: &str,
        stale_after: std::time::Duration,
    ) -> Result<Claim, Error> {
        let now = self.clock.now().timestamp_micros();
        let stale = now.saturating_sub(i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX));
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let claimed = sqlx::query(
            "INSERT INTO flext_idempotency (command_id, message_type, state, claimed_at) \
             VALUES (?, ?, 'pending', ?) \
             ON CONFLICT (command_id) DO UPDATE SET message_type = excluded.message_type, \
             claimed_at = excluded.claimed_at \
             WHERE flext_idempotency.state = 'pending' AND flext_idempotency.claimed_at <= ?",
        )
        .bind(id)
        .bind(message_type)
        .bind(now)
        .bind(stale)
        .execute(&mut writer.conn)
        .await
        .map_err(|e| db_error("claiming a command id", e))?;
        if claimed.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        let row = sqlx::query(
            "SELECT state, message_type, output, error FROM flext_idempotency WHERE command_id = ?",
        )
        .bind(id)
        .fetch_one(&mut writer.conn)
        .await
        .map_err(|e| db_error("reading a command outcome", e))?;
        claim_from_row(id, &row)
    }

    async fn complete(&self, id: Uuid, record: IdempotencyRecord) -> Result<(), Error> {
        let (output, error) = match &record.outcome {
            Ok(bytes) => (Some(bytes.to_vec()), None),
            Err(e) => (None, Some(encode_error(e))),
        };
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query("UPDATE flext_idempotency SET state = 'done', output = ?, error = ? WHERE command_id = ?")
            .bind(output)
            .bind(error)
            .bind(id)
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("storing a command outcome", e))?;
        Ok(())
    }

    async fn release(&self, id: Uuid) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        sqlx::query("DELETE FROM flext_idempotency WHERE command_id = ? AND state = 'pending'")
            .bind(id)
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("releasing a command id", e))?;
        Ok(())
    }

    async fn purge(&self, older_than: std::time::Duration) -> Result<u64, Error> {
        self.purge_idempotency(older_than).await
    }
}

impl SqliteEventStore {
    async fn purge_idempotency(&self, older_than: std::time::Duration) -> Result<u64, Error> {
        let now = self.clock.now().timestamp_micros();
        let cutoff = now.saturating_sub(i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX));
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        let done = sqlx::query("DELETE FROM flext_idempotency WHERE claimed_at < ?")
            .bind(cutoff)
            .execute(&mut writer.conn)
            .await
            .map_err(|e| db_error("purging command outcomes", e))?;
        Ok(done.rows_affected())
    }
}

fn claim_from_row(id: Uuid, row: &SqliteRow) -> Result<Claim, Error> {
    let read = |e: sqlx::Error| {
        Error::data_loss(
            "CORRUPTED_IDEMPOTENCY_RECORD",
            format!("the record of command {id} cannot be read"),
        )
        .with_source(e)
    };
    Ok(stored_claim(
        id,
        &row.try_get::<String, _>(0).map_err(read)?,
        row.try_get(1).map_err(read)?,
        row.try_get(2).map_err(read)?,
        row.try_get(3).map_err(read)?,
    ))
}

async fn save_checkpoint_on(
    conn: &mut SqliteConnection,
    name: &str,
    position: Position,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // Never over a consumer an instance owns: its checkpoint is written under its lease.
    let done = sqlx::query(
        "INSERT INTO flext_checkpoints (name, position) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position \
         WHERE flext_checkpoints.owner_id IS NULL OR flext_checkpoints.expires_at <= ?3",
    )
    .bind(name)
    .bind(to_i64(position.0))
    .bind(now.timestamp_micros())
    .execute(conn)
    .await
    .map_err(|e| db_error("saving a checkpoint", e))?;
    if done.rows_affected() == 0 {
        return Err(flext_ports::adapter::checkpoint_owned(name));
    }
    Ok(())
}

impl CheckpointStore for SqliteEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, Error> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM flext_checkpoints WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.readers)
                .await
                .map_err(|e| db_error("loading a checkpoint", e))?;
        Ok(position.map(|p| Position(p.max(0) as u64)))
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), Error> {
        let mut writer = self.writer.lock().await;
        writer.settle().await?;
        save_checkpoint_on(&mut writer.conn, name, position, self.clock.now()).await?;
        drop(writer);
        self.consumers_changed.pulse();
        Ok(())
    }
}

impl WatchAppends for SqliteEventStore {
    fn watch_appends(&self) -> AppendWatcher {
        self.appended.watcher()
    }
}

impl ProjectionStore for SqliteEventStore {
    type Transaction = SqliteWriteTransaction;

    async fn shadow(&self, name: &str) -> Result<Self, Error> {
        self.open_shadow(name).await
    }

    async fn compare_shadow(&self, shadow: &Self) -> Result<Vec<flext_ports::TableDiff>, Error> {
        self.diff_shadow(shadow).await
    }

    async fn drop_shadow(&self, shadow: Self) -> Result<(), Error> {
        self.remove_shadow(shadow).await
    }

    async fn migrate(
        &self,
        tx: &mut SqliteWriteTransaction,
        name: &str,
        steps: &[&str],
    ) -> Result<(), Error> {
        if steps.is_empty() {
            return Ok(());
        }
        flext_ports::sql::migrate(tx, name, steps).await
    }

    fn exactly_once(&self) -> bool {
        true
    }

    async fn begin(&self) -> Result<SqliteWriteTransaction, Error> {
        self.transaction().await
    }

    async fn set_checkpoint(
        &self,
        tx: &mut SqliteWriteTransaction,
        lease: &Lease,
        position: Position,
    ) -> Result<(), Error> {
        tx.save_checkpoint_fenced(lease, position, false).await
    }

    async fn rewind_checkpoint(
        &self,
        tx: &mut SqliteWriteTransaction,
        lease: &Lease,
        position: Position,
    ) -> Result<(), Error> {
        tx.save_checkpoint_fenced(lease, position, true).await
    }

    async fn commit(&self, tx: SqliteWriteTransaction) -> Result<(), Error> {
        tx.commit().await
    }

    async fn park(
        &self,
        tx: &mut SqliteWriteTransaction,
        letter: &DeadLetter,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO flext_dead_letters (projection, event_id, position, stream_id, version, \
             event_type, error, attempts, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (projection, event_id) DO UPDATE SET error = excluded.error, \
             attempts = excluded.attempts, parked_at = excluded.parked_at",
        )
        .bind(&letter.projection)
        .bind(letter.event_id.as_uuid())
        .bind(to_i64(letter.position.0))
        .bind(letter.stream_id.as_str())
        .bind(to_i64(letter.stream_version.0))
        .bind(&letter.event_type)
        .bind(encode_error(&letter.error))
        .bind(i64::from(letter.attempts))
        .bind(letter.parked_at)
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("parking a dead letter", e))?;
        Ok(())
    }

    async fn unpark(
        &self,
        tx: &mut SqliteWriteTransaction,
        projection: &str,
        event_id: EventId,
    ) -> Result<bool, Error> {
        let done =
            sqlx::query("DELETE FROM flext_dead_letters WHERE projection = ? AND event_id = ?")
                .bind(projection)
                .bind(event_id.as_uuid())
                .execute(tx.connection())
                .await
                .map_err(|e| db_error("removing a dead letter", e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, Error> {
        let rows = sqlx::query(
            "SELECT projection, position, event_id, stream_id, version, event_type, error, \
             attempts, parked_at FROM flext_dead_letters WHERE projection = ? ORDER BY position",
        )
        .bind(projection)
        .fetch_all(&self.readers)
        .await
        .map_err(|e| db_error("listing dead letters", e))?;
        rows.iter().map(decode_dead_letter).collect()
    }
}

fn decode_dead_letter(row: &SqliteRow) -> Result<DeadLetter, Error> {
    let bad = |e: sqlx::Error| {
        Error::data_loss(
            "CORRUPTED_DEAD_LETTER",
            format!("a stored dead letter cannot be read: {e}"),
        )
    };
    let stream: String = row.try_get(3).map_err(bad)?;
    let error: String = row.try_get(6).map_err(bad)?;
    assemble_dead_letter(
        row.try_get(0).map_err(bad)?,
        row.try_get(1).map_err(bad)?,
        row.try_get(2).map_err(bad)?,
        &stream,
        row.try_get(4).map_err(bad)?,
        row.try_get(5).map_err(bad)?,
        &error,
        row.try_get(7).map_err(bad)?,
        row.try_get(8).map_err(bad)?,
    )
}

impl HealthCheck for SqliteEventStore {
    fn name(&self) -> &str {
        "sqlite-event-store"
    }

    /// Up when the database answers within 2 s and its applied migrations are this
    /// adapter's (details `migration_version`, `expected_migration_version`); degraded
    /// when migrations are missing; down when it does not answer.
    fn check(&self) -> HealthFuture<'_> {
        Box::pin(async move {
            let expected = migrator().iter().map(|m| m.version).max().unwrap_or(0);
            let applied = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT max(version) FROM _flext_sqlite_migrations WHERE success",
            )
            .fetch_one(&self.readers);
            match tokio::time::timeout(std::time::Duration::from_secs(2), applied).await {
                Ok(Ok(v)) => {
                    let v = v.unwrap_or(0);
                    let health = if v >= expected {
                        Health::up()
                    } else {
                        Health::degraded("the store's migrations are not all applied")
                    };
                    health
                        .with_detail("migration_version", v)
                        .with_detail("expected_migration_version", expected)
                }
                Ok(Err(e)) => Health::down(format!("the database does not answer: {e}")),
                Err(_) => Health::down("the database did not answer within 2 s"),
            }
        })
    }
}
