//! A file per tenant on SQLite.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flext_domain::{Error, TenantId};
use flext_ports::TenantStores;
use tokio::sync::Mutex;

use crate::{SqliteEventStore, SqliteStoreBuilder};

type Configure = dyn Fn(SqliteStoreBuilder) -> SqliteStoreBuilder + Send + Sync;

/// A [`SqliteEventStore`] per tenant, each in its own file `<dir>/<tenant id>.db`, opened
/// (and migrated) on first use. A tenant's data is a file no other tenant's store opens:
/// it can be backed up, moved or deleted on its own.
#[derive(Clone)]
pub struct SqliteTenantStores {
    dir: Arc<Path>,
    configure: Arc<Configure>,
    stores: Arc<Mutex<HashMap<TenantId, SqliteEventStore>>>,
}

impl std::fmt::Debug for SqliteTenantStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTenantStores")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SqliteTenantStores {
    /// Tenants' files in `dir` (created on first use if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SqliteTenantStores {
            dir: Arc::from(dir.into().as_path()),
            configure: Arc::new(|b| b),
            stores: Arc::default(),
        }
    }

    /// Sets each tenant's store up with `configure` (durability, readers...).
    #[must_use]
    pub fn configure(
        mut self,
        configure: impl Fn(SqliteStoreBuilder) -> SqliteStoreBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Arc::new(configure);
        self
    }

    /// The file `tenant`'s events are kept in. Tenant ids are safe file names: lower-case
    /// letters, digits, `-` and `_`, beginning with a letter or digit.
    pub fn path_of(&self, tenant: &TenantId) -> PathBuf {
        self.dir.join(format!("{}.db", tenant.as_str()))
    }

    /// Closes every tenant's store (each file is then whole on its own).
    pub async fn close(&self) -> Result<(), Error> {
        let stores: Vec<SqliteEventStore> =
            self.stores.lock().await.drain().map(|(_, s)| s).collect();
        for s in stores {
            s.close().await?;
        }
        Ok(())
    }
}

impl TenantStores for SqliteTenantStores {
    type Store = SqliteEventStore;

    /// Held across the first open, so two first uses of a tenant open one store.
    async fn store(&self, tenant: &TenantId) -> Result<SqliteEventStore, Error> {
        let mut stores = self.stores.lock().await;
        if let Some(s) = stores.get(tenant) {
            return Ok(s.clone());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            Error::unavailable(
                "TENANT_DIRECTORY_UNAVAILABLE",
                format!("cannot create {}: {e}", self.dir.display()),
            )
        })?;
        let store = (self.configure)(SqliteEventStore::builder(self.path_of(tenant)))
            .open()
            .await?;
        stores.insert(tenant.clone(), store.clone());
        Ok(store)
    }
}
