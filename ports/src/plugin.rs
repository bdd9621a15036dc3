//! The plugin port: a unit of functionality with a name, a version, dependencies, a
//! lifecycle and a health report.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use flext_domain::Error;
use serde::Serialize;

/// The future a lifecycle hook returns.
pub type PluginFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// A plugin another one needs: its name and a semver requirement (`"^1.2"`, `">=2, <3"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDependency {
    /// The needed plugin's name.
    pub name: String,
    /// The versions that will do, as a semver requirement.
    pub requirement: String,
}

impl PluginDependency {
    /// A dependency on `name` at `requirement`.
    pub fn new(name: impl Into<String>, requirement: impl Into<String>) -> Self {
        PluginDependency {
            name: name.into(),
            requirement: requirement.into(),
        }
    }
}

/// A version requirement placed on a plugin by someone else: a dependent plugin (its
/// [`PluginDependency`]) or a manifest (its `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRequirement {
    /// Who requires it: `plugin audit`, `manifest plugins/store.json`.
    pub required_by: String,
    /// The versions that will do, as a semver requirement.
    pub requirement: String,
}

/// How well something is doing; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working.
    Up,
    /// Working with problems (failures isolated, a dependency slow).
    Degraded,
    /// Not working.
    Down,
}

/// A health report: a status and details to explain it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The status.
    pub status: HealthStatus,
    /// Details, e.g. `{"reason": "3 handler panics"}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl Health {
    /// Up, no details.
    pub fn up() -> Self {
        Health {
            status: HealthStatus::Up,
            details: BTreeMap::new(),
        }
    }

    /// Degraded, for `reason`.
    pub fn degraded(reason: impl Into<String>) -> Self {
        Health::up().with_status(HealthStatus::Degraded, reason)
    }

    /// Down, for `reason`.
    pub fn down(reason: impl Into<String>) -> Self {
        Health::up().with_status(HealthStatus::Down, reason)
    }

    /// Adds a detail.
    #[must_use]
    pub fn with_detail(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.details.insert(key.into(), value.to_string());
        self
    }

    fn with_status(mut self, status: HealthStatus, reason: impl Into<String>) -> Self {
        self.status = status;
        self.details.insert("reason".to_owned(), reason.into());
        self
    }
}

/// What plugins contribute to the application, by kind: handler registrations,
/// behaviors, services, projections. The application decides what it takes (by type): the
/// plugin registry gathers every started plugin's contributions, and the code that builds
/// the buses takes the kinds it knows (`flext-application` takes its `Behavior`s and
/// handler registrations from here).
#[derive(Default)]
pub struct Contributions {
    items: Vec<(TypeId, &'static str, Box<dyn Any + Send + Sync>)>,
}

impl std::fmt::Debug for Contributions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.items.iter().map(|(_, name, _)| name))
            .finish()
    }
}

impl Contributions {
    /// No contributions.
    pub fn new() -> Self {
        Contributions::default()
    }

    /// Adds a contribution of kind `T`.
    pub fn add<T: Any + Send + Sync>(&mut self, item: T) -> &mut Self {
        self.items.push((
            TypeId::of::<T>(),
            std::any::type_name::<T>(),
            Box::new(item),
        ));
        self
    }

    /// Takes every contribution of kind `T`, in the order added.
    pub fn take<T: Any>(&mut self) -> Vec<T> {
        let mut taken = Vec::new();
        let mut rest = Vec::with_capacity(self.items.len());
        for (id, name, item) in self.items.drain(..) {
            if id == TypeId::of::<T>() {
                if let Ok(item) = item.downcast::<T>() {
                    taken.push(*item);
                }
            } else {
                rest.push((id, name, item));
            }
        }
        self.items = rest;
        taken
    }

    /// Moves `other`'s contributions after these.
    pub fn extend(&mut self, mut other: Contributions) {
        self.items.append(&mut other.items);
    }

    /// How many contributions are left.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none are left.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// A plugin: named and versioned (semver), depending on other plugins, initialised with
/// its configuration, started and stopped, reporting its health. Hooks default to doing
/// nothing; a plugin implements the ones it needs. Hook futures are boxed so plugins can
/// live behind `Arc<dyn Plugin>`.
pub trait Plugin: Send + Sync + 'static {
    /// The unique name, e.g. `audit`.
    fn name(&self) -> &str;

    /// The version, in semver (`1.4.0`).
    fn version(&self) -> &str;

    /// The plugins this one needs started before it.
    fn dependencies(&self) -> Vec<PluginDependency> {
        Vec::new()
    }

    /// Told by the registry, before the plugin starts, the version requirements placed on
    /// it (by dependents and the manifest), each of which its version satisfies then. A
    /// plugin whose version can change while it runs (a hot-swap slot) keeps them and
    /// refuses a version that breaks one; others ignore them (the default).
    fn required(&self, requirements: Vec<VersionRequirement>) {
        let _ = requirements;
    }

    /// Reads the configuration (the manifest's `settings`, or `null`).
    fn init<'a>(&'a self, config: &'a serde_json::Value) -> PluginFuture<'a> {
        let _ = config;
        Box::pin(async { Ok(()) })
    }

    /// Starts working; its dependencies are started.
    fn start(&self) -> PluginFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    /// Stops working; the plugins that depend on it are stopped.
    fn stop(&self) -> PluginFuture<'_> {
        Box::pin(async { Ok(()) })
    }

    /// How the plugin is doing.
    fn health(&self) -> Health {
        Health::up()
    }

    /// What the plugin adds to the application (handlers, behaviors, services,
    /// projections); nothing by default.
    fn contribute(&self, contributions: &mut Contributions) {
        let _ = contributions;
    }
}
