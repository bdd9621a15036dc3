//! The harness for `flext-postgres`: a fresh schema per test in the database at
//! `DATABASE_URL` (the test command sets it, starting a server when none answers).

use flext_domain::{Error, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use flext_ports::AppendOutcome;
use flext_postgres::{PgEventStore, PgWriteTransaction};

use crate::{Harness, Held};

/// The database URL the PostgreSQL tests use; panics with the way to get one when unset.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set: the PostgreSQL tests need a server. Run ./scripts/test, \
             which finds or starts one, or set DATABASE_URL"
        )
    })
}

/// The prefix of every schema the PostgreSQL tests create.
const TEST_SCHEMA_PREFIX: &str = "flext_t_";

/// A store in a fresh schema `flext_t_{purpose}_{uuid v7}` of the database at
/// `DATABASE_URL`. The first call in a process also drops test schemas older than an hour
/// (left behind by tests that panicked before cleaning up), read from the UUID's time.
pub async fn fresh_pg_store(purpose: &str) -> PgEventStore {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let schema = format!(
        "{TEST_SCHEMA_PREFIX}{purpose}_{}",
        uuid::Uuid::now_v7().simple()
    );
    let store = PgEventStore::builder(database_url())
        .schema(schema)
        .max_connections(12)
        .connect()
        .await
        .expect("connect to PostgreSQL at DATABASE_URL");
    if !SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        sweep_stale_schemas(&store).await;
    }
    store
}

async fn sweep_stale_schemas(store: &PgEventStore) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(TEST_SCHEMA_PREFIX)
            .fetch_all(store.pool())
            .await
            .unwrap_or_default();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3_600);
    for name in names {
        // `flext_t_{purpose}_{uuid}`, or a tenant's `flext_t_tn_{uuid}_{tenant}`.
        let Some(stamp) = name.split('_').find_map(|seg| {
            uuid::Uuid::try_parse(seg)
                .ok()
                .and_then(|id| id.get_timestamp())
        }) else {
            continue;
        };
        let (secs, _) = stamp.to_unix();
        if std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs) < hour_ago {
            let drop = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(store.pool())
                .await;
        }
    }
}

/// Runs the suite on [`PgEventStore`], each test in its own schema, dropped afterwards.
pub struct PgHarness {
    store: PgEventStore,
    schema: String,
    tenants: flext_postgres::PgTenantStores,
    tenant_prefix: String,
}

/// A held PostgreSQL transaction.
pub struct PgHeld {
    tx: PgWriteTransaction,
    outcome: AppendOutcome,
}

impl Held for PgHeld {
    async fn commit(self) -> Result<AppendOutcome, Error> {
        self.tx.commit().await?;
        Ok(self.outcome)
    }
}

impl PgHarness {
    async fn execute(&self, sql: &'static str, stream: &StreamId, version: StreamVersion) {
        let done = sqlx::query(sql)
            .bind(stream.as_str())
            .bind(version.0 as i64)
            .execute(self.store.pool())
            .await
            .expect("corrupting statement");
        assert_eq!(done.rows_affected(), 1, "no event {version} in {stream}");
    }
}

impl Harness for PgHarness {
    type Store = PgEventStore;
    type Held = PgHeld;
    type Tenants = flext_postgres::PgTenantStores;
    const SERIALIZED_WRITERS: bool = false;

    async fn fresh() -> Self {
        let store = fresh_pg_store("conformance").await;
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(store.pool())
            .await
            .expect("the store's schema");
        let tenant_prefix = format!("{TEST_SCHEMA_PREFIX}tn_{}_", uuid::Uuid::now_v7().simple());
        let tenants = flext_postgres::PgTenantStores::new(database_url())
            .schema_prefix(&tenant_prefix)
            .max_connections(3);
        PgHarness {
            store,
            schema,
            tenants,
            tenant_prefix,
        }
    }

    fn store(&self) -> PgEventStore {
        self.store.clone()
    }

    fn tenants(&self) -> flext_postgres::PgTenantStores {
        self.tenants.clone()
    }

    async fn hold_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<PgHeld, Error> {
        let mut tx = self.store.transaction().await?;
        let outcome = tx.append(stream, expected, events).await?;
        Ok(PgHeld { tx, outcome })
    }

    crate::harness::transaction_hooks!();

    async fn corrupt_payload(&self, stream: &StreamId, version: StreamVersion) {
        self.execute(
            "UPDATE flext_events SET payload = '\\x00676172626167657b'::bytea WHERE stream_id = $1 AND version = $2",
            stream,
            version,
        )
        .await;
    }

    async fn corrupt_metadata(&self, stream: &StreamId, version: StreamVersion) -> bool {
        self.execute(
            "UPDATE flext_events SET headers = '{not json' WHERE stream_id = $1 AND version = $2",
            stream,
            version,
        )
        .await;
        true
    }

    async fn cleanup(self) {
        let _ = self.tenants.close().await;
        let tenant_schemas: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
        )
        .bind(&self.tenant_prefix)
        .fetch_all(self.store.pool())
        .await
        .unwrap_or_default();
        for name in tenant_schemas {
            let drop = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(self.store.pool())
                .await;
        }
        let drop_schema = format!("DROP SCHEMA \"{}\" CASCADE", self.schema);
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop_schema))
            .execute(self.store.pool())
            .await;
        self.store.pool().close().await;
    }
}

/// The role the shared-tables tests connect as: row-level security binds it (no
/// superuser, no `BYPASSRLS`), as it binds a production service's role.
pub const TENANT_TEST_ROLE: &str = "flext_test_tenants";

/// `url` with its user replaced by `user` (and no password).
pub fn url_as(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = match (rest.find('@'), rest.find('/')) {
        (Some(at), Some(slash)) if at < slash => &rest[at + 1..],
        (Some(at), None) => &rest[at + 1..],
        _ => rest,
    };
    format!("{scheme}://{user}@{host}")
}

/// A fresh schema `flext_t_{purpose}_{uuid v7}` owned by [`TENANT_TEST_ROLE`] (created,
/// with the right to create schemas, when missing) for tenants in shared tables; returns
/// the schema and the URL to connect as the role. Made by the `DATABASE_URL` user.
pub async fn fresh_shared_schema(purpose: &str) -> (String, String) {
    let admin = sqlx::PgPool::connect(&database_url())
        .await
        .expect("connect to PostgreSQL at DATABASE_URL");
    // Racing test processes: one creates the role, the others find it.
    let role = format!(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{TENANT_TEST_ROLE}') THEN
                 CREATE ROLE {TENANT_TEST_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS;
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$"
    );
    for attempt in 0.. {
        match sqlx::query(sqlx::AssertSqlSafe(role.as_str()))
            .execute(&admin)
            .await
        {
            Ok(_) => break,
            Err(e) if attempt < 5 => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("creating the role {TENANT_TEST_ROLE}: {e}"),
        }
    }
    let schema = format!(
        "{TEST_SCHEMA_PREFIX}{purpose}_{}",
        uuid::Uuid::now_v7().simple()
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA \"{schema}\" AUTHORIZATION {TENANT_TEST_ROLE}"
    )))
    .execute(&admin)
    .await
    .expect("creating the shared schema");
    admin.close().await;
    (schema, url_as(&database_url(), TENANT_TEST_ROLE))
}

/// Drops a schema as the `DATABASE_URL` user.
async fn drop_schema(schema: &str) {
    if let Ok(admin) = sqlx::PgPool::connect(&database_url()).await {
        let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
        admin.close().await;
    }
}

/// Runs the suite on tenants in shared tables: the store under test is tenant
/// `conformance`'s of a fresh schema, and the tenancy cases' tenants live in the same
/// tables, kept apart by row-level security alone.
pub struct PgSharedHarness {
    store: PgEventStore,
    schema: String,
    tenants: flext_postgres::PgSharedTenantStores,
}

impl PgSharedHarness {
    async fn execute(&self, sql: &'static str, stream: &StreamId, version: StreamVersion) {
        let done = sqlx::query(sql)
            .bind(stream.as_str())
            .bind(version.0 as i64)
            .execute(self.store.pool())
            .await
            .expect("corrupting statement");
        assert_eq!(done.rows_affected(), 1, "no event {version} in {stream}");
    }
}

impl Harness for PgSharedHarness {
    type Store = PgEventStore;
    type Held = PgHeld;
    type Tenants = flext_postgres::PgSharedTenantStores;
    const SERIALIZED_WRITERS: bool = false;

    async fn fresh() -> Self {
        let (schema, url) = fresh_shared_schema("shared").await;
        let store = PgEventStore::builder(url.clone())
            .schema(schema.clone())
            .tenant(flext_domain::TenantId::new("conformance").expect("valid"))
            .max_connections(12)
            .connect()
            .await
            .expect("connect as a tenant of the shared tables");
        let tenants = flext_postgres::PgSharedTenantStores::new(url)
            .schema(schema.clone())
            .max_connections(3);
        PgSharedHarness {
            store,
            schema,
            tenants,
        }
    }

    fn store(&self) -> PgEventStore {
        self.store.clone()
    }

    fn tenants(&self) -> flext_postgres::PgSharedTenantStores {
        self.tenants.clone()
    }

    async fn hold_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<PgHeld, Error> {
        let mut tx = self.store.transaction().await?;
        let outcome = tx.append(stream, expected, events).await?;
        Ok(PgHeld { tx, outcome })
    }

    crate::harness::transaction_hooks!();

    async fn corrupt_payload(&self, stream: &StreamId, version: StreamVersion) {
        self.execute(
            "UPDATE flext_events SET payload = '\\x00676172626167657b'::bytea WHERE stream_id = $1 AND version = $2",
            stream,
            version,
        )
        .await;
    }

    async fn corrupt_metadata(&self, stream: &StreamId, version: StreamVersion) -> bool {
        self.execute(
            "UPDATE flext_events SET headers = '{not json' WHERE stream_id = $1 AND version = $2",
            stream,
            version,
        )
        .await;
        true
    }

    async fn cleanup(self) {
        let _ = self.tenants.close().await;
        self.store.pool().close().await;
        drop_schema(&self.schema).await;
    }
}
