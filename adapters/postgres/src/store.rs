//! The PostgreSQL store: one-statement appends, xid-ordered positions, a sqlx pool.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flext_domain::{CorrelationId, EventId};
use flext_domain::{
    Error, EventMetadata, EventRef, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
    StreamVersion, TenantId,
};
use flext_ports::adapter::{
    StoredEvent, StoredRow, assemble_dead_letter, assemble_recorded, corrupted_event, encode_error,
    resolve_rejected_append_in_life, stored_claim, stored_number, validate_append,
};
use flext_ports::lifecycle::append_expectation;
use flext_ports::{
    AppendOutcome, AppendWatcher, CheckpointStore, Claim, Clock, DeadLetter, EventStore,
    FilteredPage, Health, HealthCheck, HealthFuture, IdempotencyRecord, IdempotencyStore, Lease,
    Metrics, ProjectionStore, ReadDirection, Snapshot, SnapshotStore, StoreTelemetry, SystemClock,
    WatchAppends,
};

use crate::notify::Notifications;
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row};
use uuid::Uuid;

/// The table in which this adapter records its applied migrations, apart from the host
/// application's `_sqlx_migrations`.
pub const MIGRATIONS_TABLE: &str = "_flext_pg_migrations";

/// The adapter's embedded migrations, recorded in [`MIGRATIONS_TABLE`].
pub fn migrator() -> Migrator {
    let mut m = sqlx::migrate!("./migrations");
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m
}

/// Events one transaction may append: positions give each transaction 2^20 slots.
const MAX_EVENTS_PER_TRANSACTION: usize = (1 << 20) - 1;

/// How long an operation waits for a pooled connection by default.
const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an `Any` or `StreamExists` append retries after losing a race for a version.
const VERSION_RACE_RETRIES: usize = 64;

const COLUMNS: &str = "position, event_id, stream_id, version, event_type, schema_version, \
                       payload, correlation_id, causation_id, headers, recorded_at, tags";

/// The append of several events: checks the stream's version against the bounds ($3,
/// $4), numbers versions after it and positions after the transaction's slot base plus
/// the events it already appended ($12), and inserts them all from one array per column.
///
/// Tagged events first take a shared advisory lock per tag ($13, sorted), before the
/// transaction id is read, so a conditional append holding one of those keys exclusively
/// is either seen by them or sees them (ADR 0008). Untagged appends pass an empty array.
///
/// Lifecycle (ADR 0007): the stream's `flext_streams` row, if it has one, raises the
/// version to number from (its events may be gone), makes a deleted stream count as
/// absent for the expectation and revives it when the append goes in, and refuses any
/// append to a tombstoned one (no row returned; the store then finds out why).
///
/// Order guard: a transaction that wrote before it appends has its id, and so its
/// positions, fixed early; if another transaction appended to the stream and committed
/// meanwhile with a later id, the new events would sort before that stream's last event.
/// (The stream's last position at or above `base + 2^20` is another transaction's: this
/// one's own events sit below it.) Then nothing is inserted and the statement returns one
/// row `(-1, version)`, which the
/// store reports as a retryable `STREAM_ORDER` conflict. (In autocommit the id is taken
/// after the statement's snapshot, later than every committed event it sees: never.)
const APPEND_SQL: &str = "\
WITH locks AS (
    SELECT count(*) AS n FROM (
        SELECT pg_advisory_xact_lock_shared(k) FROM unnest($13::bigint[]) k ORDER BY k
    ) l
), last AS (
    SELECT version, position FROM flext_events WHERE stream_id = $1
    ORDER BY version DESC LIMIT 1
), life AS (
    SELECT state, version FROM flext_streams WHERE stream_id = $1
), cur AS (
    SELECT greatest(coalesce((SELECT version FROM last), 0),
                    coalesce((SELECT version FROM life), 0)) AS v,
           coalesce((SELECT state FROM life), 0) AS st,
           coalesce((SELECT position FROM last), 0) AS p,
           pg_current_xact_id()::text::bigint << 20 AS base
    FROM locks
), ins AS (
    INSERT INTO flext_events (position, event_id, stream_id, version, event_type,
                              schema_version, payload, correlation_id, causation_id, headers,
                              recorded_at, tags)
    SELECT cur.base + $12 + e.ord, e.id, $1, cur.v + e.ord, e.t, e.sv, e.p, e.c, e.ca, e.h, $2,
           CASE WHEN e.g IS NULL THEN NULL
                ELSE ARRAY(SELECT jsonb_array_elements_text(e.g::jsonb)) END
    FROM cur,
         unnest($5::uuid[], $6::text[], $7::int4[], $8::bytea[], $9::uuid[], $10::uuid[],
                $11::text[], $14::text[]) WITH ORDINALITY AS e(id, t, sv, p, c, ca, h, g, ord)
    WHERE cur.st <> 2 AND (CASE WHEN cur.st = 1 THEN 0 ELSE cur.v END) BETWEEN $3 AND $4
      AND cur.p < cur.base + 1048576
    RETURNING position, version
), revive AS (
    UPDATE flext_streams SET state = 0
    WHERE stream_id = $1 AND state = 1 AND EXISTS (SELECT 1 FROM ins)
)
SELECT position, version FROM ins
UNION ALL
SELECT -1, cur.v FROM cur
WHERE cur.st <> 2 AND (CASE WHEN cur.st = 1 THEN 0 ELSE cur.v END) BETWEEN $3 AND $4
  AND cur.p >= cur.base + 1048576";

/// The same for one event with scalar parameters: no arrays to encode, parse and unnest
/// (about 10% more appends per second for single events).
const APPEND_ONE_SQL: &str = "\
WITH locks AS (
    SELECT count(*) AS n FROM (
        SELECT pg_advisory_xact_lock_shared(k) FROM unnest($13::bigint[]) k ORDER BY k
    ) l
), last AS (
    SELECT version, position FROM flext_events WHERE stream_id = $1
    ORDER BY version DESC LIMIT 1
), life AS (
    SELECT state, version FROM flext_streams WHERE stream_id = $1
), cur AS (
    SELECT greatest(coalesce((SELECT version FROM last), 0),
                    coalesce((SELECT version FROM life), 0)) AS v,
           coalesce((SELECT state FROM life), 0) AS st,
           coalesce((SELECT position FROM last), 0) AS p,
           pg_current_xact_id()::text::bigint << 20 AS base
    FROM locks
), ins AS (
    INSERT INTO flext_events (position, event_id, stream_id, version, event_type,
                              schema_version, payload, correlation_id, causation_id, headers,
                              recorded_at, tags)
    SELECT cur.base + $12 + 1, $5, $1, cur.v + 1, $6, $7, $8, $9, $10, $11, $2, $14
    FROM cur
    WHERE cur.st <> 2 AND (CASE WHEN cur.st = 1 THEN 0 ELSE cur.v END) BETWEEN $3 AND $4
      AND cur.p < cur.base + 1048576
    RETURNING position, version
), revive AS (
    UPDATE flext_streams SET state = 0
    WHERE stream_id = $1 AND state = 1 AND EXISTS (SELECT 1 FROM ins)
)
SELECT position, version FROM ins
UNION ALL
SELECT -1, cur.v FROM cur
WHERE cur.st <> 2 AND (CASE WHEN cur.st = 1 THEN 0 ELSE cur.v END) BETWEEN $3 AND $4
  AND cur.p >= cur.base + 1048576";

/// The plain read of a stream's events from a version on, with one more column: the
/// stream's lifecycle state if it has a `flext_streams` row (NULL for nearly every
/// stream). Only when it is not NULL (or nothing came back) does the store read again
/// with the lifecycle-aware statement below: the plain one keeps the ordered index scan
/// (the union's unknown bounds make the planner sort, twice as slow for 10,000 events).
const READ_STREAM_FORWARD_FAST_SQL: &str = "\
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags,
       (SELECT state FROM flext_streams WHERE stream_id = $1)
FROM flext_events WHERE stream_id = $1 AND version >= $2 ORDER BY version ASC LIMIT $3";

/// The same backwards.
const READ_STREAM_BACKWARD_FAST_SQL: &str = "\
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags,
       (SELECT state FROM flext_streams WHERE stream_id = $1)
FROM flext_events WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT $3";

/// The plain replay, with the same extra column.
const REPLAY_FAST_SQL: &str = "\
SELECT version, event_type, schema_version, payload,
       (SELECT state FROM flext_streams WHERE stream_id = $1)
FROM flext_events WHERE stream_id = $1 AND version >= $2 ORDER BY version ASC LIMIT $3";

/// Whether a plain read's rows need the lifecycle-aware read: none came back, or the
/// stream has a lifecycle row (its state in column `col`).
fn needs_lifecycle(rows: &[PgRow], col: usize) -> Result<bool, Error> {
    match rows.first() {
        None => Ok(true),
        Some(r) => r
            .try_get::<Option<i32>, _>(col)
            .map(|state| state.is_some())
            .map_err(|e| db_error("reading a stream's lifecycle", e)),
    }
}

/// A stream's events from a version on: the current life's, from the log and, below
/// `archived_below`, from the archive (a branch the planner skips when the stream has no
/// lifecycle row).
const READ_STREAM_FORWARD_SQL: &str = "\
WITH life AS (
    SELECT greatest(life_start, truncated_before) AS first, archived_below
    FROM flext_streams WHERE stream_id = $1
)
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_events
WHERE stream_id = $1 AND version >= greatest($2, coalesce((SELECT first FROM life), 1))
UNION ALL
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_archive
WHERE stream_id = $1 AND version >= greatest($2, (SELECT first FROM life))
  AND version < (SELECT archived_below FROM life)
ORDER BY version ASC LIMIT $3";

/// The same backwards from a version.
const READ_STREAM_BACKWARD_SQL: &str = "\
WITH life AS (
    SELECT greatest(life_start, truncated_before) AS first, archived_below
    FROM flext_streams WHERE stream_id = $1
)
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_events
WHERE stream_id = $1 AND version <= $2 AND version >= coalesce((SELECT first FROM life), 1)
UNION ALL
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_archive
WHERE stream_id = $1 AND version <= $2 AND version >= (SELECT first FROM life)
  AND version < (SELECT archived_below FROM life)
ORDER BY version DESC LIMIT $3";

/// What an aggregate load reads: the forward read's rows, only the columns a decode uses.
const REPLAY_SQL: &str = "\
WITH life AS (
    SELECT greatest(life_start, truncated_before) AS first, archived_below
    FROM flext_streams WHERE stream_id = $1
)
SELECT version, event_type, schema_version, payload
FROM flext_events
WHERE stream_id = $1 AND version >= greatest($2, coalesce((SELECT first FROM life), 1))
UNION ALL
SELECT version, event_type, schema_version, payload
FROM flext_archive
WHERE stream_id = $1 AND version >= greatest($2, (SELECT first FROM life))
  AND version < (SELECT archived_below FROM life)
ORDER BY version ASC LIMIT $3";

const READ_ALL_SQL: &str = "\
SELECT position, event_id, stream_id, version, event_type, schema_version, payload,
       correlation_id, causation_id, headers, recorded_at, tags
FROM flext_events
WHERE position > $1
  AND position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)
ORDER BY position
LIMIT $2";

/// A sqlx error as flext's, by what it means for the caller: the server away or the
/// connection lost is `UNAVAILABLE` (retryable); a configuration mistake gets the fitting
/// code and the server's own words (never the URL: it may carry a password). Database
/// errors are told apart by their SQLSTATE, PostgreSQL's stable machine-readable code.
pub(crate) fn db_error(what: &str, e: sqlx::Error) -> Error {
    let unavailable = || {
        Error::unavailable(
            "STORE_UNAVAILABLE",
            format!("PostgreSQL store unavailable while {what}"),
        )
    };
    let err = match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => unavailable(),
        sqlx::Error::Configuration(_) => Error::invalid_argument(
            "STORE_MISCONFIGURED",
            format!("the PostgreSQL store is misconfigured (while {what})"),
        ),
        sqlx::Error::Database(db) => {
            let state = db.code().unwrap_or_default();
            let said = db.message();
            match &*state {
                // Connection exceptions, shutdowns, too many connections.
                s if s.starts_with("08") => unavailable(),
                "57P01" | "57P02" | "57P03" | "53300" => unavailable(),
                // Serialization failure, deadlock: try again.
                "40001" | "40P01" => Error::conflict(
                    "STORE_CONFLICT",
                    format!("PostgreSQL aborted a transaction while {what}: {said}"),
                ),
                "3D000" => Error::not_found(
                    "DATABASE_NOT_FOUND",
                    format!("PostgreSQL store: {said} (while {what})"),
                ),
                "28000" | "28P01" => Error::permission_denied(
                    "STORE_ACCESS_DENIED",
                    format!("PostgreSQL store refused the login: {said} (while {what})"),
                ),
                "42501" => Error::permission_denied(
                    "STORE_ACCESS_DENIED",
                    format!("PostgreSQL store: {said} (while {what})"),
                ),
                "53100" | "53200" => Error::resource_exhausted(
                    "STORE_EXHAUSTED",
                    format!("PostgreSQL store out of resources while {what}: {said}"),
                ),
                _ => Error::internal(
                    "STORE_ERROR",
                    format!("PostgreSQL store failed while {what}: {said}"),
                ),
            }
        }
        _ => Error::internal(
            "STORE_ERROR",
            format!("PostgreSQL store failed while {what}"),
        ),
    };
    err.with_source(e)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn limit(max_count: usize) -> i64 {
    i64::try_from(max_count).unwrap_or(i64::MAX)
}

/// Configures and connects a [`PgEventStore`]. Its `Debug` shows the URL without its
/// password.
#[derive(Clone)]
pub struct PgStoreBuilder {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    notifications: bool,
    migrate: bool,
    tenant: Option<TenantId>,
}

impl std::fmt::Debug for PgStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreBuilder")
            .field("url", &flext_ports::redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("notifications", &self.notifications)
            .field("tenant", &self.tenant)
            .finish()
    }
}

impl PgStoreBuilder {
    /// Keeps the store's tables (and its migrations table) in `schema`, created if
    /// missing, by setting the pool's `search_path`. The name is `[A-Za-z_][A-Za-z0-9_-]*`, at
    /// most 63 bytes, and case-sensitive.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The pool's size (default 10).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long an operation waits for a connection (connecting included) before it
    /// fails `UNAVAILABLE` (default 5 s: while the server is away, callers learn it fast).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Whether the store tells other processes of its appends (and listens for theirs)
    /// with LISTEN/NOTIFY (default on). Off, readers of another process's appends poll
    /// (a subscription's `idle_recheck`); appends in this process still wake this
    /// process's readers at once. Either way the notifications use connections of their
    /// own, never the pool's.
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// Confines the store to `tenant` in a schema of tables shared by tenants (usually
    /// reached through [`crate::PgSharedTenantStores`]): every connection names the tenant
    /// in the setting `flext.tenant`, and row-level security keeps every statement to the
    /// tenant's rows (see [`crate::shared`]). With migrations on, connecting also converts
    /// the schema's tables to that layout where they are not yet. Connecting fails
    /// `FAILED_PRECONDITION`/`TENANCY_NOT_ENFORCED` as a role that bypasses row-level
    /// security (a superuser, or `BYPASSRLS`), and `TENANCY_LAYOUT_MISSING` with migrations
    /// off on a schema not yet converted.
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// Whether connecting runs the store's migrations (default true). Off, the store
    /// works only on a schema that is up to date; `StoreInspect::migrations` tells what is
    /// missing and [`PgEventStore::apply_migrations`] applies it.
    pub fn migrate(mut self, on: bool) -> Self {
        self.migrate = on;
        self
    }

    /// Connects, creates the schema if one was named, runs the migrations.
    pub async fn connect(self) -> Result<PgEventStore, Error> {
        let scheme = self.url.split_once("://").map_or("", |(s, _)| s);
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(Error::invalid_argument(
                "INVALID_DATABASE_URL",
                format!(
                    "{:?} is not a PostgreSQL URL (its scheme is {scheme:?}, not \"postgres\")",
                    flext_ports::redact_url(&self.url)
                ),
            ));
        }
        let mut options = PgConnectOptions::from_str(&self.url).map_err(|e| {
            Error::invalid_argument("INVALID_DATABASE_URL", "the PostgreSQL URL is invalid")
                .with_source(e)
        })?;
        if let Some(schema) = &self.schema {
            let valid = schema.len() <= 63
                && schema
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(Error::invalid_argument(
                    "INVALID_SCHEMA_NAME",
                    format!(
                        "{schema:?} is not a schema name flext uses: 1 to 63 of letters, \
                         digits, '_' and '-', beginning with a letter or '_'"
                    ),
                ));
            }
            let mut conn =
                tokio::time::timeout(self.acquire_timeout, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| {
                        Error::unavailable(
                            "STORE_UNAVAILABLE",
                            format!(
                                "PostgreSQL did not answer within {:?} while connecting",
                                self.acquire_timeout
                            ),
                        )
                    })?
                    .map_err(|e| db_error("connecting", e))?;
            // Only when missing: `CREATE SCHEMA IF NOT EXISTS` asks for the right to create
            // schemas even when it exists, which a service's role often lacks.
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(schema)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| db_error("looking for the schema", e))?;
            if !exists {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
                )))
                .execute(&mut conn)
                .await
                .map_err(|e| db_error("creating the schema", e))?;
            }
            // Quoted: a name with '-' (a tenant's) is not a bare identifier.
            options = options.options([("search_path", format!("\"{schema}\""))]);
        }
        if let Some(tenant) = &self.tenant {
            // Tenant ids are `[a-z0-9_-]`: nothing to escape in a startup option.
            options = options.options([(crate::shared::TENANT_SETTING, tenant.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| db_error("connecting", e))?;
        let Some(tenant) = &self.tenant else {
            return PgEventStore::open_pool(pool, self.notifications, self.migrate).await;
        };
        crate::shared::check_role(&pool, tenant).await?;
        let store = PgEventStore::open_pool(pool, self.notifications, self.migrate).await?;
        if self.migrate {
            crate::shared::confine_tables(&store.pool).await?;
        } else {
            let mut conn = store
                .pool
                .acquire()
                .await
                .map_err(|e| db_error("reading the schema's tables", e))?;
            let missing = crate::shared::plan(&mut conn).await?;
            if let Some(first) = missing.first() {
                return Err(Error::failed_precondition(
                    "TENANCY_LAYOUT_MISSING",
                    format!(
                        "the schema's tables are not confined to tenants yet ({} statements \
                         missing, the first: {first}); connect once with migrations on",
                        missing.len()
                    ),
                ));
            }
        }
        Ok(store)
    }
}

async fn run_migrations(pool: &PgPool) -> Result<(), Error> {
    migrator().run(pool).await.map_err(|e| {
        Error::unavailable(
            "MIGRATION_FAILED",
            "the PostgreSQL store's migrations failed",
        )
        .with_source(e)
    })
}

/// An event and snapshot store in PostgreSQL (13 or newer). Clones share the pool.
#[derive(Clone)]
pub struct PgEventStore {
    pub(crate) pool: PgPool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) notifications: Arc<Notifications>,
    pub(crate) telemetry: StoreTelemetry,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore").finish_non_exhaustive()
    }
}

impl PgEventStore {
    /// A builder for the store at `url`.
    pub fn builder(url: impl Into<String>) -> PgStoreBuilder {
        PgStoreBuilder {
            url: url.into(),
            schema: None,
            max_connections: 10,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            notifications: true,
            migrate: true,
            tenant: None,
        }
    }

    /// Closes the pool (waiting for the connections in use to come back) and stops the
    /// notification tasks; every later operation fails `UNAVAILABLE`. Never fails; it
    /// returns a `Result` as `SqliteEventStore::close` does, so code over either store
    /// reads the same.
    pub async fn close(&self) -> Result<(), Error> {
        self.pool.close().await;
        self.notifications.stop();
        Ok(())
    }

    /// Connects to `url` with the defaults and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        PgEventStore::builder(url).connect().await
    }

    /// Uses an existing pool (its `search_path` decides the schema) and runs the
    /// migrations; notifications on.
    pub async fn with_pool(pool: PgPool) -> Result<Self, Error> {
        PgEventStore::open_pool(pool, true, true).await
    }

    pub(crate) async fn open_pool(
        pool: PgPool,
        notifications: bool,
        migrate: bool,
    ) -> Result<Self, Error> {
        if migrate {
            run_migrations(&pool).await?;
        }
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(|e| db_error("reading the current schema", e))?;
        Ok(PgEventStore {
            telemetry: StoreTelemetry::new("postgresql", "flext_events").with_namespace(&schema),
            notifications: Arc::new(Notifications::new(&pool, schema, notifications)),
            pool,
            clock: Arc::new(SystemClock),
        })
    }

    /// Applies the store's migrations that have not run (for a store connected with
    /// `migrate(false)`); returns how many ran. A tenant's store of shared tables
    /// ([`PgStoreBuilder::tenant`]) then confines the tables they added.
    pub async fn apply_migrations(&self) -> Result<usize, Error> {
        let before = self.applied_versions().await?.len();
        run_migrations(&self.pool).await?;
        let tenant: Option<String> = sqlx::query_scalar("SELECT current_setting($1, true)")
            .bind(crate::shared::TENANT_SETTING)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("reading the connection's tenant", e))?;
        if tenant.is_some_and(|t| !t.is_empty()) {
            crate::shared::confine_tables(&self.pool).await?;
        }
        Ok(self.applied_versions().await?.len().saturating_sub(before))
    }

    /// The versions and times of the applied migrations; none when never migrated.
    pub(crate) async fn applied_versions(&self) -> Result<Vec<(i64, DateTime<Utc>)>, Error> {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(MIGRATIONS_TABLE)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("reading the migrations", e))?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT version, installed_on FROM {MIGRATIONS_TABLE} WHERE success ORDER BY version"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("reading the migrations", e))
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

    /// The pool, for queries of your own (`SqliteEventStore::pool` is its counterpart).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool as [`ReadModels`](flext_ports::sql::ReadModels): portable SQL for queries
    /// over read models in the store's schema, the same type as
    /// `SqliteEventStore::read_models`.
    pub fn read_models(&self) -> flext_ports::sql::ReadModels {
        flext_ports::sql::ReadModels::new(crate::sql::PgReadPool(self.pool.clone()))
    }

    /// The server process id of the connection that LISTENs for other processes'
    /// appends, once it is connected (for diagnostics: `pg_stat_activity`).
    pub fn listener_backend_pid(&self) -> Option<i32> {
        self.notifications.listener_pid()
    }

    /// Begins a transaction in which appends and your own statements commit together
    /// (exactly-once read models, outbox rows).
    pub async fn transaction(&self) -> Result<PgWriteTransaction, Error> {
        let conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("acquiring a connection", e))?;
        // From here the connection is closed, not pooled, unless the transaction ends
        // cleanly: a BEGIN dropped after it was sent must not leave an open transaction
        // on a pooled connection (it would hold every gap-safe reader back).
        let mut tx = PgWriteTransaction {
            conn,
            finished: false,
            store: self.clone(),
            appended: 0,
            outboxed: 0,
            checkpointed: false,
        };
        savepoint(tx.connection(), "BEGIN").await?;
        Ok(tx)
    }

    pub(crate) async fn resolve(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, Error> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("acquiring a connection", e))?;
        self.resolve_on(&mut conn, stream, expected, events).await
    }

    /// Finds out why an append was refused, on `conn` (a transaction's own connection
    /// sees that transaction's writes).
    async fn resolve_on(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendOutcome, Error> {
        let life = crate::lifecycle::load(&mut *conn, stream).await?;
        let actual = life.info().version;
        let (checked, life_start) =
            append_expectation(stream, life.state, life.life_start, actual)?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id.as_uuid()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM flext_events WHERE event_id = ANY($1)"
        )))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error("looking up event ids", e))?;
        let existing = rows
            .iter()
            .map(|row| {
                decode_row(row, &mut None).map(|r| StoredEvent {
                    event_id: r.event_id,
                    stream_id: r.stream_id,
                    stream_version: r.stream_version,
                    position: r.position,
                    event_type: r.event_type,
                    schema_version: r.schema_version,
                    payload: r.payload,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        resolve_rejected_append_in_life(stream, expected, checked, life_start, events, &existing)
    }

    /// Appends on `conn`. `offset` is how many events this transaction appended before
    /// (their positions take the first slots of its range). A refused append hands the
    /// events back, to be resolved by the caller; a plain append resolves it after it has
    /// given its connection back, so a burst of conflicting appends cannot hold every
    /// pooled connection while each waits for one more.
    pub(crate) async fn try_append(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        offset: usize,
        retry_races: bool,
    ) -> Result<Attempt, Error> {
        validate_append(&events)?;
        let bounds = match expected {
            ExpectedVersion::Any => (0, i64::MAX),
            ExpectedVersion::NoStream => (0, 0),
            ExpectedVersion::StreamExists => (1, i64::MAX),
            ExpectedVersion::Exact(v) => (to_i64(v.0), to_i64(v.0)),
        };
        let offset = offset as i64;
        let now = self.clock.now();
        let keys = crate::dcb::tag_keys(&events);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match events.as_slice() {
                [e] => {
                    sqlx::query(APPEND_ONE_SQL)
                        .bind(stream.as_str())
                        .bind(now)
                        .bind(bounds.0)
                        .bind(bounds.1)
                        .bind(e.event_id.as_uuid())
                        .bind(e.event_type.as_str())
                        .bind(i32::try_from(e.schema_version).unwrap_or(i32::MAX))
                        .bind(e.payload.as_ref())
                        .bind(e.metadata.correlation_id.map(|id| id.as_uuid()))
                        .bind(e.metadata.causation_id.map(|id| id.as_uuid()))
                        .bind(headers_json(&e.metadata))
                        .bind(offset)
                        .bind(&keys)
                        .bind((!e.tags.is_empty()).then_some(&e.tags))
                        .fetch_all(&mut *conn)
                        .await
                }
                many => {
                    let columns = Columns::of(many);
                    sqlx::query(APPEND_SQL)
                        .bind(stream.as_str())
                        .bind(now)
                        .bind(bounds.0)
                        .bind(bounds.1)
                        .bind(&columns.ids)
                        .bind(&columns.types)
                        .bind(&columns.schema_versions)
                        .bind(&columns.payloads)
                        .bind(&columns.correlations)
                        .bind(&columns.causations)
                        .bind(&columns.headers)
                        .bind(offset)
                        .bind(&keys)
                        .bind(&columns.tags)
                        .fetch_all(&mut *conn)
                        .await
                }
            };
            match result {
                Ok(rows) if rows.is_empty() => return Ok(Attempt::Refused(events)),
                Ok(rows) if rows.len() == 1 && rows[0].try_get::<i64, _>(0).ok() == Some(-1) => {
                    return Err(stream_order(stream, &rows[0]));
                }
                Ok(rows) => return outcome(stream, &rows).map(Attempt::Done),
                Err(sqlx::Error::Database(e)) if e.kind() == ErrorKind::UniqueViolation => {
                    let version_race = e.constraint() == Some("flext_events_stream_version_key");
                    let may_retry = matches!(
                        expected,
                        ExpectedVersion::Any | ExpectedVersion::StreamExists
                    );
                    if version_race && may_retry && retry_races && attempt < VERSION_RACE_RETRIES {
                        continue;
                    }
                    return Ok(Attempt::Refused(events));
                }
                Err(e) => return Err(db_error("appending", e)),
            }
        }
    }
}

/// The retryable conflict of an append that would sort before its stream's last event.
fn stream_order(stream: &StreamId, row: &PgRow) -> Error {
    let version: i64 = row.try_get(1).unwrap_or(0);
    Error::conflict(
        "STREAM_ORDER",
        format!(
            "stream {:?} was appended (version {version}) by a transaction that committed \
             after this one had begun writing; appending now would put its next version \
             before that one in the global order: roll the transaction back and retry it",
            stream.as_str()
        ),
    )
    .with_detail("stream", stream.as_str())
    .with_detail("version", version)
}

/// Runs a savepoint statement on a transaction's connection.
async fn savepoint(conn: &mut PgConnection, sql: &'static str) -> Result<(), Error> {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| db_error("setting a savepoint", e))
}

/// What one append statement did.
pub(crate) enum Attempt {
    /// Appended.
    Done(AppendOutcome),
    /// Refused (a version or id conflict); the events, to find out why.
    Refused(Vec<NewEvent>),
}

fn headers_json(metadata: &EventMetadata) -> Option<String> {
    if metadata.headers.is_empty() {
        None
    } else {
        serde_json::to_string(&metadata.headers).ok()
    }
}

/// The append's events as one array per column, borrowing from the events.
struct Columns<'a> {
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    payloads: Vec<&'a [u8]>,
    correlations: Vec<Option<Uuid>>,
    causations: Vec<Option<Uuid>>,
    headers: Vec<Option<String>>,
    /// Each event's tags as a JSON array, or NULL.
    tags: Vec<Option<String>>,
}

impl<'a> Columns<'a> {
    fn of(events: &'a [NewEvent]) -> Columns<'a> {
        let n = events.len();
        let mut c = Columns {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            correlations: Vec::with_capacity(n),
            causations: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            tags: Vec::with_capacity(n),
        };
        for e in events {
            c.ids.push(e.event_id.as_uuid());
            c.types.push(&e.event_type);
            c.schema_versions
                .push(i32::try_from(e.schema_version).unwrap_or(i32::MAX));
            c.payloads.push(&e.payload);
            c.correlations
                .push(e.metadata.correlation_id.map(|id| id.as_uuid()));
            c.causations
                .push(e.metadata.causation_id.map(|id| id.as_uuid()));
            c.headers.push(headers_json(&e.metadata));
            c.tags.push(if e.tags.is_empty() {
                None
            } else {
                serde_json::to_string(&e.tags).ok()
            });
        }
        c
    }
}

fn outcome(stream: &StreamId, rows: &[PgRow]) -> Result<AppendOutcome, Error> {
    let mut pairs = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()
        .map_err(|e| db_error("reading the append's result", e))?;
    pairs.sort_unstable_by_key(|(_, v)| *v);
    let last = pairs.last().map_or(0, |(_, v)| *v);
    let s = stream.as_str();
    Ok(AppendOutcome {
        stream_version: StreamVersion(stored_number(s, "version", last)?),
        positions: pairs
            .iter()
            .map(|(p, _)| stored_number(s, "position", *p).map(Position))
            .collect::<Result<_, _>>()?,
    })
}

/// A transaction on one pooled connection; see [`PgEventStore::transaction`]. Dropping it
/// without committing rolls it back.
pub struct PgWriteTransaction {
    pub(crate) conn: PoolConnection<Postgres>,
    /// Committed or rolled back: the connection may go back to the pool.
    finished: bool,
    store: PgEventStore,
    pub(crate) appended: usize,
    /// Outbox messages written (their positions follow the transaction id).
    pub(crate) outboxed: u32,
    /// Whether a fenced checkpoint was written.
    checkpointed: bool,
}

impl PgWriteTransaction {
    /// Appends within this transaction, with the same rules and the same errors as
    /// [`EventStore::append`] (a conflict reports the stream's version as this transaction
    /// sees it). A refused append leaves the transaction usable (it runs under a
    /// savepoint).
    /// When this transaction wrote before and another one appended to the stream and
    /// committed since, the append is refused with `ABORTED`/`STREAM_ORDER` (its events
    /// would sort before that stream's last event): roll back and retry.
    /// One transaction may append at most 1,048,575 events.
    pub async fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        if self.appended + events.len() > MAX_EVENTS_PER_TRANSACTION {
            return Err(Error::resource_exhausted(
                "TOO_MANY_EVENTS_IN_TRANSACTION",
                format!("one transaction may append at most {MAX_EVENTS_PER_TRANSACTION} events"),
            ));
        }
        let n = events.len();
        let guard_keys = crate::dcb::guard_keys(&events);
        // A savepoint: a refused append (a unique violation aborts the statement) rolls
        // back to it, so the transaction stays usable and the refusal is resolved on the
        // transaction's own connection, which sees its own writes and needs no second
        // connection from the pool.
        savepoint(self.connection(), "SAVEPOINT flext_append").await?;
        let attempt = self
            .store
            .try_append(
                &mut self.conn,
                stream,
                expected,
                events,
                self.appended,
                false,
            )
            .await;
        match attempt {
            Ok(Attempt::Done(out)) => {
                let first = out.positions.first().copied().unwrap_or(Position::START);
                if let Err(e) =
                    crate::dcb::order_guard(self.connection(), stream, &guard_keys, first).await
                {
                    let _ =
                        savepoint(self.connection(), "ROLLBACK TO SAVEPOINT flext_append").await;
                    let _ = savepoint(self.connection(), "RELEASE SAVEPOINT flext_append").await;
                    return Err(e);
                }
                savepoint(self.connection(), "RELEASE SAVEPOINT flext_append").await?;
                self.appended += n;
                Ok(out)
            }
            Ok(Attempt::Refused(events)) => {
                savepoint(self.connection(), "ROLLBACK TO SAVEPOINT flext_append").await?;
                savepoint(self.connection(), "RELEASE SAVEPOINT flext_append").await?;
                self.store
                    .resolve_on(&mut self.conn, stream, expected, &events)
                    .await
            }
            Err(e) => {
                // The statement failed (a STREAM_ORDER refusal, the connection): leave the
                // transaction as it was before the append, when the connection allows.
                let _ = savepoint(self.connection(), "ROLLBACK TO SAVEPOINT flext_append").await;
                let _ = savepoint(self.connection(), "RELEASE SAVEPOINT flext_append").await;
                Err(e)
            }
        }
    }

    /// Sets a checkpoint within this transaction, so a read model written in the same
    /// transaction and its checkpoint commit together (exactly once).
    pub async fn save_checkpoint(&mut self, name: &str, position: Position) -> Result<(), Error> {
        save_checkpoint_on(self.connection(), name, position).await
    }

    /// Moves the checkpoint of `lease.consumer` to `position` within this transaction,
    /// under `lease` (see `flext_ports::ProjectionStore::set_checkpoint`): refused with
    /// `OWNERSHIP_LOST` when the lease is not current, with `CHECKPOINT_BACKWARDS` when
    /// `position` is below the stored one and `rewind` is false. Write it last: it holds
    /// the consumer's row lock until the commit.
    pub async fn save_checkpoint_fenced(
        &mut self,
        lease: &Lease,
        position: Position,
        rewind: bool,
    ) -> Result<(), Error> {
        crate::ownership::fenced_on(self.connection(), lease, position, rewind).await?;
        self.checkpointed = true;
        Ok(())
    }

    /// The connection, for statements of your own in this transaction.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Commits. Dropped before it returns, the transaction's connection is closed instead
    /// of pooled: the server commits what it received, or rolls it back.
    pub async fn commit(mut self) -> Result<(), Error> {
        savepoint(self.connection(), "COMMIT").await?;
        self.finished = true;
        if self.appended > 0 {
            self.store.notifications.appended();
        }
        if self.checkpointed {
            self.store.notifications.consumers_changed();
        }
        Ok(())
    }

    /// Rolls back.
    pub async fn rollback(mut self) -> Result<(), Error> {
        savepoint(self.connection(), "ROLLBACK").await?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for PgWriteTransaction {
    /// Not committed or rolled back (dropped, or cancelled at any await point): the
    /// connection is closed, so the server rolls back and no pooled connection keeps an
    /// open transaction.
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// Decodes one row; `last_stream` carries the previous row's stream id, reused (one
/// shared string, no allocation) while consecutive rows belong to the same stream.
/// A filtered read's page from its rows: how far it looked is its last event when the page
/// is full, else the last event under the horizon (`below`), else where it started.
pub(crate) fn filtered_page(
    rows: &[PgRow],
    max_count: usize,
    after: Position,
    below: Option<i64>,
) -> Result<FilteredPage, Error> {
    let mut last = None;
    let events = rows
        .iter()
        .map(|r| decode_row(r, &mut last))
        .collect::<Result<Vec<_>, _>>()?;
    let through = match (events.last(), below) {
        (Some(e), _) if events.len() >= max_count => e.position,
        (_, Some(b)) => Position(stored_number("flext_events", "position", b)?).max(after),
        (_, None) => after,
    };
    Ok(FilteredPage { events, through })
}

pub(crate) fn decode_row(
    row: &PgRow,
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
    let schema_version: i32 = row
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
    let recorded_at: DateTime<Utc> = row
        .try_get(10)
        .map_err(|e| bad("unreadable recorded time", &e))?;
    let tags: Option<Vec<String>> = row.try_get(11).map_err(|e| bad("unreadable tags", &e))?;
    assemble_recorded(
        StoredRow {
            position,
            event_id,
            stream,
            version,
            event_type,
            schema_version: i64::from(schema_version),
            payload,
            correlation_id: correlation,
            causation_id: causation,
            headers,
            recorded_at,
            tags: tags.unwrap_or_default(),
        },
        last_stream,
    )
}

impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, Error> {
        let op = self.telemetry.append(stream, &events);
        op.append(async move {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(|e| db_error("acquiring a connection", e))?;
            let attempt = self
                .try_append(&mut conn, stream, expected, events, 0, true)
                .await;
            drop(conn);
            match attempt? {
                Attempt::Done(out) => {
                    self.notifications.appended();
                    Ok(out)
                }
                Attempt::Refused(events) => self.resolve(stream, expected, &events).await,
            }
        })
        .await
    }

    async fn read_all_withheld(&self, after: Position) -> Result<bool, Error> {
        // `ORDER BY position LIMIT 1`, not `EXISTS (...)`: after five runs PostgreSQL
        // may switch a prepared statement to its generic plan, and the generic plan of the
        // EXISTS form is a sequential scan (8 ms on 100,000 events, on every wake of every
        // live reader); this form stays an index probe.
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM flext_events WHERE position > $1 ORDER BY position LIMIT 1",
        )
        .bind(to_i64(after.0))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("looking for withheld events", e))?;
        Ok(next.is_some())
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
                 WHERE correlation_id = $1 ORDER BY position LIMIT $2",
            )
            .bind(correlation.as_uuid())
            .bind(limit(max_count))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("reading a business action", e))?;
            let mut last = None;
            rows.iter().map(|r| decode_row(r, &mut last)).collect()
        })
        .await
    }

    async fn count_after(&self, after: Position) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM flext_events WHERE position > $1")
            .bind(to_i64(after.0))
            .fetch_one(&self.pool)
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
                let (fast, full) = match direction {
                    ReadDirection::Forward => {
                        (READ_STREAM_FORWARD_FAST_SQL, READ_STREAM_FORWARD_SQL)
                    }
                    ReadDirection::Backward => {
                        (READ_STREAM_BACKWARD_FAST_SQL, READ_STREAM_BACKWARD_SQL)
                    }
                };
                let read = |sql: &'static str| {
                    sqlx::query(sql)
                        .bind(stream.as_str())
                        .bind(to_i64(from.0))
                        .bind(limit(max_count))
                        .fetch_all(&self.pool)
                };
                let mut rows = read(fast)
                    .await
                    .map_err(|e| db_error("reading a stream", e))?;
                if needs_lifecycle(&rows, 12)? {
                    let life = self.lifecycle(stream).await?;
                    life.readable(stream)?;
                    if !rows.is_empty() || life.archived_below > 1 {
                        rows = read(full)
                            .await
                            .map_err(|e| db_error("reading a stream", e))?;
                    }
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
        self.telemetry
            .read("read_all", None)
            .read(async move {
                let rows = sqlx::query(READ_ALL_SQL)
                    .bind(to_i64(after.0))
                    .bind(limit(max_count))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| db_error("reading all events", e))?;
                let mut last = None;
                rows.iter().map(|r| decode_row(r, &mut last)).collect()
            })
            .await
    }

    /// Two statements: the gap-safe horizon (positions below it belong to transactions
    /// that have ended, and no later one can take one below it) with the last event under
    /// it, then the matches under that same horizon. What lies between the last match and
    /// that last event is skipped by `through`.
    async fn read_all_of_types(
        &self,
        after: Position,
        max_count: usize,
        types: &[&str],
    ) -> Result<FilteredPage, Error> {
        let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
        self.telemetry.read("read_all_of_types", None).read_page(async move {
            let (horizon, below): (i64, Option<i64>) = sqlx::query_as(
                "SELECT s.h, (SELECT max(position) FROM flext_events \
                 WHERE position > $1 AND position < s.h) \
                 FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20 AS h) s",
            )
            .bind(to_i64(after.0))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("reading the gap-safe horizon", e))?;
            let rows = sqlx::query(
                "SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                 correlation_id, causation_id, headers, recorded_at, tags FROM flext_events \
                 WHERE position > $1 AND position < $2 AND event_type = ANY($3) \
                 ORDER BY position LIMIT $4",
            )
            .bind(to_i64(after.0))
            .bind(horizon)
            .bind(&types)
            .bind(limit(max_count))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error("reading events by type", e))?;
            filtered_page(&rows, max_count, after, below)
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, Error> {
        let life = self.lifecycle(stream).await?;
        life.readable(stream)?;
        Ok(life.info().version)
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
        let read = |sql: &'static str| {
            sqlx::query(sql)
                .bind(stream.as_str())
                .bind(to_i64(from.0))
                .bind(limit(max_count))
                .fetch_all(&self.pool)
        };
        let mut rows = read(REPLAY_FAST_SQL)
            .await
            .map_err(|e| db_error("replaying a stream", e))?;
        // Nothing, or a stream whose life changed: deleted, truncated, revived, archived?
        if needs_lifecycle(&rows, 4)? {
            let life = self.lifecycle(stream).await?;
            life.replay_start(stream, from)?;
            if !rows.is_empty() || life.archived_below > 1 {
                rows = read(REPLAY_SQL)
                    .await
                    .map_err(|e| db_error("replaying a stream", e))?;
            }
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
            let schema_version: i32 = row
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

impl SnapshotStore for PgEventStore {
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO flext_snapshots (stream_id, version, schema_version, state) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT ON CONSTRAINT flext_snapshots_pkey DO UPDATE SET version = excluded.version, \
             schema_version = excluded.schema_version, state = excluded.state \
             WHERE excluded.version >= flext_snapshots.version",
        )
        .bind(snapshot.stream_id.as_str())
        .bind(to_i64(snapshot.version.0))
        .bind(i32::try_from(snapshot.schema_version).unwrap_or(i32::MAX))
        .bind(snapshot.state.as_ref())
        .execute(&self.pool)
        .await
        .map_err(|e| db_error("saving a snapshot", e))?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>, Error> {
        let row = sqlx::query(
            "SELECT version, schema_version, state FROM flext_snapshots WHERE stream_id = $1",
        )
        .bind(stream.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("loading a snapshot", e))?;
        let Some(row) = row else { return Ok(None) };
        let decoded: Result<(i64, i32, Vec<u8>), sqlx::Error> =
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

/// How many times a claim tries again when the id it found pending was released before
/// it could read the record.
const CLAIM_ROUNDS: usize = 16;

impl IdempotencyStore for PgEventStore {
    async fn claim(
        &self,
        id: Uuid,
        message_type: &str,
        stale_after: std::time::Duration,
    ) -> Result<Claim, Error> {
        // The upsert and the read of a record it did not take are two statements: the
        // holder may release the id in between, and then the id is free, so claim again.
        // Each round needs someone else's claim and release in between; a few rounds in a
        // row mean a hot id, a retryable conflict.
        for _ in 0..CLAIM_ROUNDS {
            let now = self.clock.now().timestamp_micros();
            let stale =
                now.saturating_sub(i64::try_from(stale_after.as_micros()).unwrap_or(i64::MAX));
            let claimed = sqlx::query(
                "INSERT INTO flext_idempotency (command_id, message_type, state, claimed_at) \
                 VALUES ($1, $2, 'pending', $3) \
                 ON CONFLICT ON CONSTRAINT flext_idempotency_pkey DO UPDATE SET message_type = excluded.message_type, \
                 claimed_at = excluded.claimed_at \
                 WHERE flext_idempotency.state = 'pending' AND flext_idempotency.claimed_at <= $4",
            )
            .bind(id)
            .bind(message_type)
            .bind(now)
            .bind(stale)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("claiming a command id", e))?;
            if claimed.rows_affected() == 1 {
                return Ok(Claim::Claimed);
            }
            let row = sqlx::query(
                "SELECT state, message_type, output, error FROM flext_idempotency \
                 WHERE command_id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_error("reading a command outcome", e))?;
            if let Some(row) = row {
                return claim_from_row(id, &row);
            }
        }
        Err(Error::conflict(
            "CLAIM_CONTENDED",
            format!(
                "command {id} was claimed and released {CLAIM_ROUNDS} times while this claim \
                 ran; try again"
            ),
        ))
    }

    async fn complete(&self, id: Uuid, record: IdempotencyRecord) -> Result<(), Error> {
        let (output, error) = match &record.outcome {
            Ok(bytes) => (Some(bytes.to_vec()), None),
            Err(e) => (None, Some(encode_error(e))),
        };
        sqlx::query("UPDATE flext_idempotency SET state = 'done', output = $1, error = $2 WHERE command_id = $3")
            .bind(output)
            .bind(error)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("storing a command outcome", e))?;
        Ok(())
    }

    async fn release(&self, id: Uuid) -> Result<(), Error> {
        sqlx::query("DELETE FROM flext_idempotency WHERE command_id = $1 AND state = 'pending'")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("releasing a command id", e))?;
        Ok(())
    }

    async fn purge(&self, older_than: std::time::Duration) -> Result<u64, Error> {
        let now = self.clock.now().timestamp_micros();
        let cutoff = now.saturating_sub(i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX));
        let done = sqlx::query("DELETE FROM flext_idempotency WHERE claimed_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(|e| db_error("purging command outcomes", e))?;
        Ok(done.rows_affected())
    }
}

fn claim_from_row(id: Uuid, row: &PgRow) -> Result<Claim, Error> {
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
    conn: &mut PgConnection,
    name: &str,
    position: Position,
) -> Result<(), Error> {
    // Never over a consumer an instance owns: its checkpoint is written under its lease.
    let done = sqlx::query(
        "INSERT INTO flext_checkpoints (name, position) VALUES ($1, $2) \
         ON CONFLICT ON CONSTRAINT flext_checkpoints_pkey DO UPDATE SET position = excluded.position \
         WHERE flext_checkpoints.owner_id IS NULL \
         OR flext_checkpoints.expires_at <= clock_timestamp()",
    )
    .bind(name)
    .bind(to_i64(position.0))
    .execute(conn)
    .await
    .map_err(|e| db_error("saving a checkpoint", e))?;
    if done.rows_affected() == 0 {
        return Err(flext_ports::adapter::checkpoint_owned(name));
    }
    Ok(())
}

impl CheckpointStore for PgEventStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, Error> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM flext_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db_error("loading a checkpoint", e))?;
        Ok(position.map(|p| Position(p.max(0) as u64)))
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), Error> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("acquiring a connection", e))?;
        save_checkpoint_on(&mut conn, name, position).await?;
        self.notifications.consumers_changed();
        Ok(())
    }
}

impl WatchAppends for PgEventStore {
    fn watch_appends(&self) -> AppendWatcher {
        self.notifications.watch()
    }
}

impl ProjectionStore for PgEventStore {
    type Transaction = PgWriteTransaction;

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
        tx: &mut PgWriteTransaction,
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

    async fn begin(&self) -> Result<PgWriteTransaction, Error> {
        self.transaction().await
    }

    async fn set_checkpoint(
        &self,
        tx: &mut PgWriteTransaction,
        lease: &Lease,
        position: Position,
    ) -> Result<(), Error> {
        tx.save_checkpoint_fenced(lease, position, false).await
    }

    async fn rewind_checkpoint(
        &self,
        tx: &mut PgWriteTransaction,
        lease: &Lease,
        position: Position,
    ) -> Result<(), Error> {
        tx.save_checkpoint_fenced(lease, position, true).await
    }

    async fn commit(&self, tx: PgWriteTransaction) -> Result<(), Error> {
        tx.commit().await
    }

    async fn park(&self, tx: &mut PgWriteTransaction, letter: &DeadLetter) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO flext_dead_letters (projection, event_id, position, stream_id, version, \
             event_type, error, attempts, parked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT ON CONSTRAINT flext_dead_letters_pkey DO UPDATE SET error = excluded.error, \
             attempts = excluded.attempts, parked_at = excluded.parked_at",
        )
        .bind(&letter.projection)
        .bind(letter.event_id.as_uuid())
        .bind(to_i64(letter.position.0))
        .bind(letter.stream_id.as_str())
        .bind(to_i64(letter.stream_version.0))
        .bind(&letter.event_type)
        .bind(encode_error(&letter.error))
        .bind(i32::try_from(letter.attempts).unwrap_or(i32::MAX))
        .bind(letter.parked_at)
        .execute(tx.connection())
        .await
        .map_err(|e| db_error("parking a dead letter", e))?;
        Ok(())
    }

    async fn unpark(
        &self,
        tx: &mut PgWriteTransaction,
        projection: &str,
        event_id: EventId,
    ) -> Result<bool, Error> {
        let done =
            sqlx::query("DELETE FROM flext_dead_letters WHERE projection = $1 AND event_id = $2")
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
             attempts, parked_at FROM flext_dead_letters WHERE projection = $1 ORDER BY position",
        )
        .bind(projection)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing dead letters", e))?;
        rows.iter().map(decode_dead_letter).collect()
    }
}

fn decode_dead_letter(row: &PgRow) -> Result<DeadLetter, Error> {
    let bad = |e: sqlx::Error| {
        Error::data_loss(
            "CORRUPTED_DEAD_LETTER",
            format!("a stored dead letter cannot be read: {e}"),
        )
    };
    let stream: String = row.try_get(3).map_err(bad)?;
    let error: String = row.try_get(6).map_err(bad)?;
    let attempts: i32 = row.try_get(7).map_err(bad)?;
    assemble_dead_letter(
        row.try_get(0).map_err(bad)?,
        row.try_get(1).map_err(bad)?,
        row.try_get(2).map_err(bad)?,
        &stream,
        row.try_get(4).map_err(bad)?,
        row.try_get(5).map_err(bad)?,
        &error,
        i64::from(attempts),
        row.try_get(8).map_err(bad)?,
    )
}

impl HealthCheck for PgEventStore {
    fn name(&self) -> &str {
        "postgres-event-store"
    }

    /// Up when the database answers within 2 s and its applied migrations are this
    /// adapter's (details `migration_version`, `expected_migration_version`); degraded
    /// when migrations are missing; down when it does not answer.
    fn check(&self) -> HealthFuture<'_> {
        Box::pin(async move {
            let expected = migrator().iter().map(|m| m.version).max().unwrap_or(0);
            let applied = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT max(version) FROM _flext_pg_migrations WHERE success",
            )
            .fetch_one(&self.pool);
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
