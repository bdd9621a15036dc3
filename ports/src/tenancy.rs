//! Stores confined to one tenant: [`TenantStores`] hands out, for a [`TenantId`] (or the
//! tenant of a request's [`Context`]), a store through which every append, read, replay,
//! subscription, projection, snapshot, checkpoint and idempotency record concerns that
//! tenant only.
//!
//! Deployments: on PostgreSQL a schema per tenant (`flext_postgres::PgTenantStores`) or
//! every tenant in one schema's shared tables, kept apart by row-level security
//! (`flext_postgres::PgSharedTenantStores`); on SQLite a file per tenant
//! (`flext_sqlite::SqliteTenantStores`); in memory a store per tenant
//! (`flext_memory::InMemoryTenantStores`). Projections run per tenant: a runner on each
//! tenant's store.
//!
//! ```
//! use flext::ports::{Context, EventStore, TenantStores};
//! use flext::memory::InMemoryTenantStores;
//! use flext::{EventId, ExpectedVersion, NewEvent, Position, StreamId, TenantId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), flext::Error> {
//! let tenants = InMemoryTenantStores::new();
//! let acme = Context::new().with_tenant(TenantId::new("acme")?);
//! let store = tenants.for_context(&acme).await?;
//! let event = NewEvent::new(EventId::new(), "order.placed", b"{}".to_vec());
//! store.append(&StreamId::new("order-1")?, ExpectedVersion::NoStream, vec![event]).await?;
//!
//! let other = tenants.store(&TenantId::new("globex")?).await?;
//! assert!(other.read_all(Position::START, 10).await?.is_empty());
//! let e = tenants.for_context(&Context::new()).await.unwrap_err();
//! assert_eq!(e.reason(), "TENANT_REQUIRED");
//! # Ok(())
//! # }
//! ```

use std::future::Future;

use flext_domain::{Error, TenantId};

use crate::Context;

/// Hands out stores confined to one tenant each. Asking twice for one tenant gives the
/// same store (clones share connections and live readers).
pub trait TenantStores: Send + Sync {
    /// A tenant's store.
    type Store: Clone + Send + Sync + 'static;

    /// The store of `tenant`, created (and migrated) on first use.
    fn store(&self, tenant: &TenantId) -> impl Future<Output = Result<Self::Store, Error>> + Send;

    /// The store of the request's tenant; `INVALID_ARGUMENT`/`TENANT_REQUIRED` when the
    /// context names none (a tenanted service never falls back to shared data).
    fn for_context(&self, ctx: &Context) -> impl Future<Output = Result<Self::Store, Error>> + Send
    where
        Self: Sized,
    {
        let tenant = ctx.tenant_id().cloned();
        async move {
            let tenant = tenant.ok_or_else(|| {
                Error::invalid_argument(
                    "TENANT_REQUIRED",
                    "this request names no tenant, and every store here belongs to one",
                )
            })?;
            self.store(&tenant).await
        }
    }
}
