//! Health checks: a named check that reports up, degraded or down with details. Stores,
//! projections and the plugin registry implement it; `flext_application::HealthChecks`
//! aggregates them into one report for a health endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::plugin::Health;

/// The future of [`HealthCheck::check`].
pub type HealthFuture<'a> = Pin<Box<dyn Future<Output = Health> + Send + 'a>>;

/// One component's health.
pub trait HealthCheck: Send + Sync {
    /// The component's name in a report (`postgres-event-store`, `projection:balances`).
    fn name(&self) -> &str;

    /// Checks now. A check does not fail: a problem is a `Down` or `Degraded` health with
    /// details saying what is wrong. It should answer within a second or two; the
    /// aggregate report bounds it anyway.
    fn check(&self) -> HealthFuture<'_>;
}

impl<H: HealthCheck + ?Sized> HealthCheck for Arc<H> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn check(&self) -> HealthFuture<'_> {
        (**self).check()
    }
}
