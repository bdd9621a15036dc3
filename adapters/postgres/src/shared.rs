//! Tenants in shared tables on PostgreSQL: one schema holds every tenant's data, each row
//! carrying its tenant, and the database itself keeps each tenant to its rows.
//!
//! A store confined to a tenant ([`crate::PgStoreBuilder::tenant`]) sets the connection
//! setting `flext.tenant` on every connection of its pool. Every flext table of the
//! schema (all but `flext_read_model_migrations`, whose DDL is one for all tenants) has a
//! `tenant_id` column defaulting to that setting, every primary key, unique constraint and
//! B-tree index led by it, and row-level security forced with one policy: a row is seen,
//! changed or written only when its `tenant_id` is the connection's tenant. So every
//! statement of the adapter is filtered by the database, including ones written later,
//! without a `WHERE tenant_id` of its own that could be forgotten; a connection without
//! a tenant sees no rows and can write none.
//!
//! The layout is reached by `confine_tables`, which reads the catalog and changes only
//! what is not confined yet (idempotent, under a lock), so a schema created by the
//! migrations is converted on its first tenant's connect and so are tables added by later
//! migrations. Constraint names do not change, so the adapter's `ON CONFLICT ON
//! CONSTRAINT` clauses hold in both layouts.
//!
//! Row-level security does not apply to superusers or roles with `BYPASSRLS`: a tenant's
//! store refuses to connect as one.
//!
//! Read models of one's own in the same schema are confined by the same recipe: a
//! `tenant_id` column defaulting to the setting, leading the key, and one policy.
//!
//! ```sql
//! CREATE TABLE balances (
//!     tenant_id TEXT NOT NULL DEFAULT current_setting('flext.tenant'),
//!     account   TEXT NOT NULL,
//!     balance   BIGINT NOT NULL,
//!     PRIMARY KEY (tenant_id, account));
//! ALTER TABLE balances ENABLE ROW LEVEL SECURITY;
//! ALTER TABLE balances FORCE ROW LEVEL SECURITY;
//! CREATE POLICY tenant ON balances USING (tenant_id = current_setting('flext.tenant', true));
//! ```
//!
//! ```no_run
//! use flext::ports::{Context, EventStore, TenantStores};
//! use flext::postgres::PgSharedTenantStores;
//! use flext::{EventId, ExpectedVersion, NewEvent, StreamId, TenantId};
//!
//! # async fn run() -> Result<(), flext::Error> {
//! // Connect as the service's role, not a superuser.
//! let tenants = PgSharedTenantStores::new("postgres://app@localhost/app").schema("tenants");
//! let ctx = Context::new().with_tenant(TenantId::new("acme")?);
//! let store = tenants.for_context(&ctx).await?;
//! let event = NewEvent::new(EventId::new(), "order.placed", &b"{}"[..]);
//! store.append(&StreamId::new("order-1")?, ExpectedVersion::NoStream, vec![event]).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use flext_domain::{Error, TenantId};
use flext_ports::TenantStores;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::Mutex;

use crate::PgEventStore;
use crate::store::db_error;

/// The connection setting naming a tenant's store's tenant.
pub const TENANT_SETTING: &str = "flext.tenant";

/// The policy every confined table has.
const POLICY: &str = "flext_tenant";

/// Tables every tenant shares: the read models' migrations (their DDL is one for all).
const UNCONFINED: &[&str] = &["flext_read_model_migrations"];

/// `FAILED_PRECONDITION`/`TENANCY_NOT_ENFORCED` unless the connection's role is subject to
/// row-level security.
pub(crate) async fn check_role(pool: &PgPool, tenant: &TenantId) -> Result<(), Error> {
    let row = sqlx::query(
        "SELECT current_user::text, rolsuper OR rolbypassrls FROM pg_roles \
         WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| db_error("reading the role's attributes", e))?;
    let role: String = row.get(0);
    let bypasses: bool = row.get(1);
    if bypasses {
        return Err(Error::failed_precondition(
            "TENANCY_NOT_ENFORCED",
            format!(
                "role {role:?} is a superuser or has BYPASSRLS, so PostgreSQL's row-level \
                 security would not keep tenant {:?} to its rows in shared tables: connect \
                 as a role without either",
                tenant.as_str()
            ),
        ));
    }
    Ok(())
}

/// One table's state in the catalog.
struct Table {
    oid: i64,
    name: String,
}

/// The statements that confine every flext table of the connection's current schema to
/// the connection's tenant, for what is not confined yet; none when all is.
pub(crate) async fn plan(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    let err = |e| db_error("reading the schema's tables", e);
    let tables: Vec<Table> = sqlx::query(
        "SELECT c.oid::bigint, c.relname::text FROM pg_class c \
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' \
           AND starts_with(c.relname, 'flext_') AND c.relname <> ALL($1) ORDER BY c.relname",
    )
    .bind(UNCONFINED)
    .fetch_all(&mut *conn)
    .await
    .map_err(err)?
    .into_iter()
    .map(|r| Table {
        oid: r.get(0),
        name: r.get(1),
    })
    .collect();
    let mut plan = Vec::new();
    for t in tables {
        let name = quote(&t.name);
        let column: Option<i16> = sqlx::query_scalar(
            "SELECT attnum FROM pg_attribute \
             WHERE attrelid = $1::oid AND attname = 'tenant_id' AND NOT attisdropped",
        )
        .bind(t.oid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(err)?;
        let lead = column.unwrap_or(0);
        if column.is_none() {
            // Rows already there (a schema converted from one tenant-less store) stay
            // under no tenant: no tenant id is empty.
            plan.push(format!(
                "ALTER TABLE {name} ADD COLUMN tenant_id TEXT NOT NULL DEFAULT ''"
            ));
            plan.push(format!(
                "ALTER TABLE {name} ALTER COLUMN tenant_id SET DEFAULT \
                 current_setting('{TENANT_SETTING}')"
            ));
        }
        let constraints = sqlx::query(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1::oid AND contype IN ('p', 'u') AND conkey[1] <> $2 \
             ORDER BY conname",
        )
        .bind(t.oid)
        .bind(lead)
        .fetch_all(&mut *conn)
        .await
        .map_err(err)?;
        for c in constraints {
            let (cname, def): (String, String) = (c.get(0), c.get(1));
            let led = lead_with_tenant(&def, "(").ok_or_else(|| unexpected(&cname, &def))?;
            plan.push(format!(
                "ALTER TABLE {name} DROP CONSTRAINT {c}, ADD CONSTRAINT {c} {led}",
                c = quote(&cname)
            ));
        }
        let indexes = sqlx::query(
            "SELECT ic.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam \
             WHERE i.indrelid = $1::oid AND am.amname = 'btree' AND i.indkey[0] <> $2 \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
             ORDER BY ic.relname",
        )
        .bind(t.oid)
        .bind(lead)
        .fetch_all(&mut *conn)
        .await
        .map_err(err)?;
        for i in indexes {
            let (iname, def): (String, String) = (i.get(0), i.get(1));
            let led =
                lead_with_tenant(&def, "USING btree (").ok_or_else(|| unexpected(&iname, &def))?;
            plan.push(format!("DROP INDEX {}", quote(&iname)));
            plan.push(led);
        }
        let secured: (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::oid",
        )
        .bind(t.oid)
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
        if !secured.0 {
            plan.push(format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"));
        }
        if !secured.1 {
            plan.push(format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY"));
        }
        let policy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = $1::oid AND polname = $2)",
        )
        .bind(t.oid)
        .bind(POLICY)
        .fetch_one(&mut *conn)
        .await
        .map_err(err)?;
        if !policy {
            let mine = format!("tenant_id = current_setting('{TENANT_SETTING}', true)");
            plan.push(format!(
                "CREATE POLICY {POLICY} ON {name} USING ({mine}) WITH CHECK ({mine})"
            ));
        }
    }
    Ok(plan)
}

/// Confines every flext table of the pool's schema to the connection's tenant (see the
/// module docs); returns how many statements that took (0 when all was confined).
pub(crate) async fn confine_tables(pool: &PgPool) -> Result<usize, Error> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| db_error("confining the tables to tenants", e))?;
    // One converter per schema at a time; the others then find nothing left to do.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.flext_tenancy'))")
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("confining the tables to tenants", e))?;
    let plan = plan(&mut tx).await?;
    for statement in &plan {
        sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&format!("confining the tables to tenants ({statement})"), e))?;
    }
    tx.commit()
        .await
        .map_err(|e| db_error("confining the tables to tenants", e))?;
    Ok(plan.len())
}

/// `def` with `tenant_id` as the first key column, right after the first `opening`.
fn lead_with_tenant(def: &str, opening: &str) -> Option<String> {
    let at = def.find(opening)? + opening.len();
    Some(format!("{}tenant_id, {}", &def[..at], &def[at..]))
}

fn unexpected(name: &str, def: &str) -> Error {
    Error::internal(
        "TENANCY_LAYOUT_UNEXPECTED",
        format!("cannot lead {name:?} with the tenant: its definition is {def:?}"),
    )
}

/// A catalog name as an identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every tenant's data in the shared tables of one schema (`flext_tenants` by default),
/// each tenant's store a [`PgEventStore`] confined to it by row-level security (see the
/// module docs). The role connecting must not be a superuser nor have `BYPASSRLS`; it
/// owns the tables it creates. Each tenant's store has a pool of its own of at most
/// [`PgSharedTenantStores::max_connections`] connections (2 by default), and a LISTEN
/// connection unless notifications are off: size them so that tenants in use times
/// connections stays under the server's `max_connections`.
#[derive(Clone)]
pub struct PgSharedTenantStores {
    url: Arc<str>,
    schema: Arc<str>,
    max_connections: u32,
    notifications: bool,
    stores: Arc<Mutex<HashMap<TenantId, PgEventStore>>>,
}

impl std::fmt::Debug for PgSharedTenantStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSharedTenantStores")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("notifications", &self.notifications)
            .finish_non_exhaustive()
    }
}

impl PgSharedTenantStores {
    /// Tenants in the shared tables of schema `flext_tenants` of the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgSharedTenantStores {
            url: url.into().into(),
            schema: "flext_tenants".into(),
            max_connections: 2,
            notifications: true,
            stores: Arc::default(),
        }
    }

    /// Keeps the shared tables in `schema` (created if missing).
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into().into();
        self
    }

    /// The most connections each tenant's pool opens (2 by default).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Whether tenants' stores use LISTEN/NOTIFY (default on; see
    /// [`crate::PgStoreBuilder::notifications`]).
    #[must_use]
    pub fn notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// Closes every tenant's pool.
    pub async fn close(&self) -> Result<(), Error> {
        let stores: Vec<PgEventStore> = self.stores.lock().await.drain().map(|(_, s)| s).collect();
        for s in stores {
            s.close().await?;
        }
        Ok(())
    }
}

impl TenantStores for PgSharedTenantStores {
    type Store = PgEventStore;

    /// Held across the first connect, so two first uses of a tenant open one pool.
    async fn store(&self, tenant: &TenantId) -> Result<PgEventStore, Error> {
        let mut stores = self.stores.lock().await;
        if let Some(s) = stores.get(tenant) {
            return Ok(s.clone());
        }
        let store = PgEventStore::builder(self.url.to_string())
            .schema(self.schema.to_string())
            .tenant(tenant.clone())
            .max_connections(self.max_connections)
            .notifications(self.notifications)
            .connect()
            .await?;
        stores.insert(tenant.clone(), store.clone());
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_led_by_the_tenant() {
        assert_eq!(
            lead_with_tenant("UNIQUE (stream_id, version)", "(").as_deref(),
            Some("UNIQUE (tenant_id, stream_id, version)")
        );
        assert_eq!(
            lead_with_tenant(
                "CREATE INDEX i ON s.t USING btree (a) WHERE (b IS NOT NULL)",
                "USING btree ("
            )
            .as_deref(),
            Some("CREATE INDEX i ON s.t USING btree (tenant_id, a) WHERE (b IS NOT NULL)")
        );
        assert_eq!(lead_with_tenant("CHECK x", "("), None);
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
