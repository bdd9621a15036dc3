//! The application's health report: every component's check, aggregated for a health
//! endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flext_ports::{Health, HealthCheck, HealthFuture, HealthStatus};
use serde::Serialize;

/// The whole application's health, serializable as the body of a health endpoint:
///
/// ```json
/// {"status": "down",
///  "checks": {"postgres-event-store": {"status": "down", "details": {"reason": "..."}},
///             "projection:balances": {"status": "up", "details": {"lag_events": "0"}}}}
/// ```
///
/// `status` is the worst of the checks' (up when there are none); serve it with HTTP 200
/// when up or degraded and 503 when down ([`HealthReport::http_status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The worst status.
    pub status: HealthStatus,
    /// Each check's health, by name.
    pub checks: BTreeMap<String, Health>,
}

impl HealthReport {
    /// 200 when up or degraded, 503 when down.
    pub fn http_status(&self) -> u16 {
        match self.status {
            HealthStatus::Down => 503,
            _ => 200,
        }
    }
}

/// The health checks of an application.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use flext::application::HealthChecks;
/// use flext::memory::InMemoryEventStore;
/// use flext::ports::HealthStatus;
///
/// let checks = HealthChecks::new().with(InMemoryEventStore::new());
/// let report = checks.report().await;
/// assert_eq!(report.status, HealthStatus::Up);
/// assert!(serde_json::to_string(&report).unwrap().starts_with(r#"{"status":"up","checks":{"memory-event-store""#));
/// # });
/// ```
#[derive(Clone)]
pub struct HealthChecks {
    checks: Vec<Arc<dyn HealthCheck>>,
    timeout: Duration,
}

impl Default for HealthChecks {
    fn default() -> Self {
        HealthChecks::new()
    }
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|c| c.name().to_owned()))
            .finish()
    }
}

impl HealthChecks {
    /// No checks; each one run is bounded by 5 s.
    pub fn new() -> Self {
        HealthChecks {
            checks: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Adds a check.
    #[must_use]
    pub fn with(mut self, check: impl HealthCheck + 'static) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Adds a shared check.
    #[must_use]
    pub fn with_arc(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Bounds each check (a check that does not answer in time is down).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs every check (one after the other, each bounded) and aggregates.
    pub async fn report(&self) -> HealthReport {
        let mut checks = BTreeMap::new();
        for c in &self.checks {
            let health = match tokio::time::timeout(self.timeout, c.check()).await {
                Ok(h) => h,
                Err(_) => Health::down(format!("no answer within {:?}", self.timeout)),
            };
            checks.insert(c.name().to_owned(), health);
        }
        let status = checks
            .values()
            .map(|h| h.status)
            .max()
            .unwrap_or(HealthStatus::Up);
        HealthReport { status, checks }
    }
}

impl HealthCheck for crate::PluginRegistry {
    fn name(&self) -> &str {
        "plugins"
    }

    /// The worst of the started plugins' health, each plugin's status as a detail.
    fn check(&self) -> HealthFuture<'_> {
        let registry = self.health();
        let mut health = match registry.status {
            HealthStatus::Up => Health::up(),
            HealthStatus::Degraded => Health::degraded("a plugin is degraded"),
            HealthStatus::Down => Health::down("a plugin is down"),
        };
        for (name, h) in registry.plugins {
            health = health.with_detail(
                name,
                serde_json::to_value(h.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            );
        }
        Box::pin(async move { health })
    }
}
