//! A schema per tenant on PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;

use flext_domain::{Error, TenantId};
use flext_ports::TenantStores;
use tokio::sync::Mutex;

use crate::PgEventStore;

/// A [`PgEventStore`] per tenant, each in a schema of its own named `prefix` + tenant id
/// (`tenant_acme` by default) in one database, created and migrated on first use. Every
/// statement of a tenant's store runs in its schema (the pool's `search_path`), so no
/// public call reaches another tenant's tables. Each tenant's store has its own pool of
/// at most [`PgTenantStores::max_connections`] connections: size them so that tenants
/// times connections stays under the server's `max_connections`.
#[derive(Clone)]
pub struct PgTenantStores {
    url: Arc<str>,
    prefix: Arc<str>,
    max_connections: u32,
    stores: Arc<Mutex<HashMap<TenantId, PgEventStore>>>,
}

impl std::fmt::Debug for PgTenantStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTenantStores")
            .field("prefix", &self.prefix)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl PgTenantStores {
    /// Tenants' schemas in the database at `url`, named `tenant_<id>`, 4 connections each.
    pub fn new(url: impl Into<String>) -> Self {
        PgTenantStores {
            url: url.into().into(),
            prefix: "tenant_".into(),
            max_connections: 4,
            stores: Arc::default(),
        }
    }

    /// Names tenants' schemas `prefix` + tenant id. The prefix keeps them apart from
    /// other schemas (a tenant named `public` must not land in `public`); a name longer
    /// than PostgreSQL's 63 bytes is refused when the tenant's store is first asked for.
    #[must_use]
    pub fn schema_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// The most connections each tenant's pool opens (4 by default).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The schema `tenant` is kept in.
    pub fn schema_of(&self, tenant: &TenantId) -> String {
        format!("{}{}", self.prefix, tenant.as_str())
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

impl TenantStores for PgTenantStores {
    type Store = PgEventStore;

    /// Held across the first connect, so two first uses of a tenant open one pool.
    async fn store(&self, tenant: &TenantId) -> Result<PgEventStore, Error> {
        let mut stores = self.stores.lock().await;
        if let Some(s) = stores.get(tenant) {
            return Ok(s.clone());
        }
        let store = PgEventStore::builder(self.url.to_string())
            .schema(self.schema_of(tenant))
            .max_connections(self.max_connections)
            .connect()
            .await?;
        stores.insert(tenant.clone(), store.clone());
        Ok(store)
    }
}
