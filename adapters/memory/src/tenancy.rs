//! A store per tenant, in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flext_domain::{Error, TenantId};
use flext_ports::TenantStores;

use crate::InMemoryEventStore;

/// An [`InMemoryEventStore`] per tenant, created on first use. Clones share the stores.
#[derive(Clone, Default)]
pub struct InMemoryTenantStores {
    stores: Arc<Mutex<HashMap<TenantId, InMemoryEventStore>>>,
}

impl std::fmt::Debug for InMemoryTenantStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryTenantStores")
            .finish_non_exhaustive()
    }
}

impl InMemoryTenantStores {
    /// No tenants yet.
    pub fn new() -> Self {
        InMemoryTenantStores::default()
    }
}

impl TenantStores for InMemoryTenantStores {
    type Store = InMemoryEventStore;

    async fn store(&self, tenant: &TenantId) -> Result<InMemoryEventStore, Error> {
        // Nothing here panics while the lock is held: a poisoned lock is still whole.
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        Ok(stores.entry(tenant.clone()).or_default().clone())
    }
}
