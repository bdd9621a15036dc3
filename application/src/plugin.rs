//! The plugin registry: registration, manifests, dependency order, lifecycle with
//! roll-back, and the aggregate health.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use flext_domain::Error;
use flext_ports::{Contributions, Health, HealthStatus, Plugin, VersionRequirement};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::bus::Site;

/// What a manifest file says about one plugin: whether to enable it, which versions are
/// acceptable, and its settings.
///
/// ```json
/// { "name": "audit", "version": "^1.2", "enabled": true, "settings": { "table": "audit_log" } }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name.
    pub name: String,
    /// The versions that will do (semver requirement); any when absent.
    #[serde(default)]
    pub version: Option<String>,
    /// Whether to start it (default true).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Its configuration, handed to `Plugin::init`.
    #[serde(default)]
    pub settings: serde_json::Value,
}

fn enabled_by_default() -> bool {
    true
}

struct Registered {
    plugin: Arc<dyn Plugin>,
    version: Version,
    site: Site,
}

/// A plugin registration made by `#[plugin]`, collected with `inventory`.
#[derive(Debug)]
pub struct PluginRegistration {
    /// Makes the plugin.
    pub make: fn() -> Arc<dyn Plugin>,
    /// Where `#[plugin]` was written.
    pub site: Site,
}

inventory::collect!(PluginRegistration);

/// The registry's health: the worst of its started plugins', with each one's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryHealth {
    /// The worst status (up when no plugin is started).
    pub status: HealthStatus,
    /// Each started plugin's report, by name.
    pub plugins: BTreeMap<String, Health>,
}

/// Holds the plugins, decides which to enable (manifests), starts them in dependency order
/// and stops them in reverse.
///
/// ```
/// use flext::application::PluginRegistry;
/// use flext::ports::{Plugin, PluginDependency};
///
/// struct Store;
/// impl Plugin for Store {
///     fn name(&self) -> &str { "store" }
///     fn version(&self) -> &str { "1.2.0" }
/// }
/// struct Audit;
/// impl Plugin for Audit {
///     fn name(&self) -> &str { "audit" }
///     fn version(&self) -> &str { "0.3.0" }
///     fn dependencies(&self) -> Vec<PluginDependency> { vec![PluginDependency::new("store", "^1")] }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut plugins = PluginRegistry::new();
/// plugins.register(Audit)?.register(Store)?;
/// plugins.start_all().await?;
/// assert_eq!(plugins.started(), ["store", "audit"]);
/// plugins.stop_all().await?;
/// # Ok::<(), flext::Error>(())
/// # }).unwrap();
/// ```
#[derive(Default)]
pub struct PluginRegistry {
    plugins: BTreeMap<String, Registered>,
    manifests: HashMap<String, (Manifest, String)>,
    started: Vec<String>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry")
            .field("plugins", &self.plugins.keys().collect::<Vec<_>>())
            .field("started", &self.started)
            .finish()
    }
}

fn plugin_error(reason: &'static str, message: String) -> Error {
    Error::failed_precondition(reason, message)
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        PluginRegistry::default()
    }

    /// Adds a plugin. A name registered twice is `AlreadyExists`/`DUPLICATE_PLUGIN` naming
    /// both sites; a version that is not semver is `InvalidArgument`.
    #[track_caller]
    pub fn register(&mut self, plugin: impl Plugin) -> Result<&mut Self, Error> {
        self.register_at(Arc::new(plugin), Site::caller())
    }

    /// [`PluginRegistry::register`] with a shared plugin and an explicit site.
    pub fn register_at(&mut self, plugin: Arc<dyn Plugin>, site: Site) -> Result<&mut Self, Error> {
        let name = plugin.name().to_owned();
        if let Some(first) = self.plugins.get(&name) {
            return Err(Error::already_exists(
                "DUPLICATE_PLUGIN",
                format!(
                    "plugin {name} is registered twice, at {} and at {site}",
                    first.site
                ),
            ));
        }
        let version = Version::parse(plugin.version()).map_err(|e| {
            Error::invalid_argument(
                "INVALID_PLUGIN_VERSION",
                format!(
                    "plugin {name} has version {:?}, which is not semver: {e}",
                    plugin.version()
                ),
            )
        })?;
        self.plugins.insert(
            name,
            Registered {
                plugin,
                version,
                site,
            },
        );
        Ok(self)
    }

    /// Adds every plugin registered with `#[plugin]`; a name registered twice is an error
    /// naming both sites.
    pub fn with_registered(&mut self) -> Result<&mut Self, Error> {
        for registration in inventory::iter::<PluginRegistration> {
            self.register_at((registration.make)(), registration.site)?;
        }
        Ok(self)
    }

    /// Reads every `*.json` manifest in `dir` (one plugin each). A malformed file is
    /// `InvalidArgument` naming it; a manifest for a plugin that is not registered is
    /// `NotFound` naming both.
    pub fn load_manifests(&mut self, dir: impl AsRef<Path>) -> Result<&mut Self, Error> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::invalid_argument(
                "MANIFEST_DIR_UNREADABLE",
                format!("{} cannot be read: {e}", dir.display()),
            )
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::invalid_argument(
                    "MANIFEST_UNREADABLE",
                    format!("{shown} cannot be read: {e}"),
                )
            })?;
            let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
                Error::invalid_argument(
                    "MALFORMED_MANIFEST",
                    format!("{shown} is not a plugin manifest: {e}"),
                )
            })?;
            if !self.plugins.contains_key(&manifest.name) {
                return Err(Error::not_found(
                    "UNKNOWN_PLUGIN",
                    format!(
                        "{shown} configures plugin {}, which is not registered",
                        manifest.name
                    ),
                ));
            }
            if let Some((_, first)) = self.manifests.get(&manifest.name) {
                return Err(Error::already_exists(
                    "DUPLICATE_MANIFEST",
                    format!(
                        "plugin {} is configured twice, in {first} and in {shown}",
                        manifest.name
                    ),
                ));
            }
            self.manifests
                .insert(manifest.name.clone(), (manifest, shown));
        }
        Ok(self)
    }

    fn enabled(&self, name: &str) -> bool {
        self.manifests.get(name).is_none_or(|(m, _)| m.enabled)
    }

    /// The enabled plugins in start order: every plugin after its dependencies, ties by
    /// name. A missing or disabled dependency, an unmet version requirement (the
    /// manifest's or a dependent's) or a cycle is `FailedPrecondition` naming the chain.
    pub fn start_order(&self) -> Result<Vec<String>, Error> {
        for (name, (manifest, file)) in &self.manifests {
            let Some(requirement) = &manifest.version else {
                continue;
            };
            let req = VersionReq::parse(requirement).map_err(|e| {
                Error::invalid_argument(
                    "INVALID_VERSION_REQUIREMENT",
                    format!("{file}: {requirement:?}: {e}"),
                )
            })?;
            let version = &self.plugins[name].version;
            if manifest.enabled && !req.matches(version) {
                return Err(plugin_error(
                    "PLUGIN_VERSION_MISMATCH",
                    format!(
                        "{file} requires {name} {requirement}, but version {version} is registered"
                    ),
                ));
            }
        }
        let mut order = Vec::new();
        let mut done = std::collections::HashSet::new();
        for name in self.plugins.keys().filter(|n| self.enabled(n)) {
            let mut path = Vec::new();
            self.visit(name, &mut path, &mut done, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        path: &mut Vec<String>,
        done: &mut std::collections::HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), Error> {
        if done.contains(name) {
            return Ok(());
        }
        if let Some(at) = path.iter().position(|p| p == name) {
            let mut chain: Vec<&str> = path[at..].iter().map(String::as_str).collect();
            chain.push(name);
            return Err(plugin_error(
                "PLUGIN_DEPENDENCY_CYCLE",
                format!("plugin dependencies form a cycle: {}", chain.join(" -> ")),
            ));
        }
        path.push(name.to_owned());
        let mut dependencies = self.plugins[name].plugin.dependencies();
        dependencies.sort_by(|a, b| a.name.cmp(&b.name));
        for dep in dependencies {
            let chain = format!("{} -> {}", path.join(" -> "), dep.name);
            let Some(needed) = self
                .plugins
                .get(&dep.name)
                .filter(|_| self.enabled(&dep.name))
            else {
                let why = if self.plugins.contains_key(&dep.name) {
                    "disabled"
                } else {
                    "not registered"
                };
                return Err(plugin_error(
                    "PLUGIN_DEPENDENCY_MISSING",
                    format!("{chain}: plugin {} is {why}", dep.name),
                ));
            };
            let req = VersionReq::parse(&dep.requirement).map_err(|e| {
                Error::invalid_argument(
                    "INVALID_VERSION_REQUIREMENT",
                    format!(
                        "plugin {name} requires {} {:?}: {e}",
                        dep.name, dep.requirement
                    ),
                )
            })?;
            if !req.matches(&needed.version) {
                return Err(plugin_error(
                    "PLUGIN_VERSION_MISMATCH",
                    format!(
                        "{chain}: {name} requires {} {}, but version {} is registered",
                        dep.name, dep.requirement, needed.version
                    ),
                ));
            }
            self.visit(&dep.name, path, done, order)?;
        }
        path.pop();
        done.insert(name.to_owned());
        order.push(name.to_owned());
        Ok(())
    }

    /// Initialises and starts every enabled plugin in dependency order. If one fails, the
    /// plugins started by this call are stopped again in reverse order, and the error names
    /// the plugin and the cause; nothing stays half started.
    pub async fn start_all(&mut self) -> Result<(), Error> {
        let order = self.start_order()?;
        let mut started_now: Vec<String> = Vec::new();
        for name in order {
            if self.started.contains(&name) {
                continue;
            }
            let plugin = self.plugins[&name].plugin.clone();
            plugin.required(self.requirements_on(&name));
            let config = self
                .manifests
                .get(&name)
                .map(|(m, _)| m.settings.clone())
                .unwrap_or(serde_json::Value::Null);
            let outcome = match lifecycle("init", &name, plugin.init(&config)).await {
                Ok(()) => lifecycle("start", &name, plugin.start())
                    .await
                    .map_err(|e| ("start", e)),
                Err(e) => Err(("init", e)),
            };
            if let Err((hook, cause)) = outcome {
                for started in started_now.iter().rev() {
                    let plugin = &self.plugins[started].plugin;
                    let _ = lifecycle("stop", started, plugin.stop()).await;
                    self.started.retain(|s| s != started);
                }
                return Err(Error::failed_precondition(
                    "PLUGIN_START_FAILED",
                    format!("plugin {name} failed to {hook}: {}", cause.message()),
                )
                .with_detail("plugin", name.as_str())
                .with_detail("cause_code", cause.code().as_str())
                .with_source(cause));
            }
            started_now.push(name.clone());
            self.started.push(name);
        }
        Ok(())
    }

    /// The version requirements on `name`: its manifest's, and each enabled dependent's.
    fn requirements_on(&self, name: &str) -> Vec<VersionRequirement> {
        let manifest = self.manifests.get(name).and_then(|(m, file)| {
            m.version.as_ref().map(|requirement| VersionRequirement {
                required_by: format!("manifest {file}"),
                requirement: requirement.clone(),
            })
        });
        let dependents = self
            .plugins
            .iter()
            .filter(|(dependent, _)| self.enabled(dependent))
            .flat_map(|(dependent, registered)| {
                registered
                    .plugin
                    .dependencies()
                    .into_iter()
                    .filter(|d| d.name == name)
                    .map(move |d| VersionRequirement {
                        required_by: format!("plugin {dependent}"),
                        requirement: d.requirement,
                    })
            });
        manifest.into_iter().chain(dependents).collect()
    }

    /// Stops the started plugins in reverse start order. Every plugin is asked to stop even
    /// if one fails; the first failure is returned.
    pub async fn stop_all(&mut self) -> Result<(), Error> {
        let mut first_error = None;
        while let Some(name) = self.started.pop() {
            if let Err(e) = lifecycle("stop", &name, self.plugins[&name].plugin.stop()).await {
                first_error.get_or_insert(
                    Error::unavailable(
                        "PLUGIN_STOP_FAILED",
                        format!("plugin {name} failed to stop: {}", e.message()),
                    )
                    .with_source(e),
                );
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The contributions of every started plugin, in start order.
    pub fn contributions(&self) -> Contributions {
        let mut all = Contributions::new();
        for name in &self.started {
            let mut own = Contributions::new();
            self.plugins[name].plugin.contribute(&mut own);
            all.extend(own);
        }
        all
    }

    /// The started plugins, in start order.
    pub fn started(&self) -> &[String] {
        &self.started
    }

    /// The worst health of the started plugins, with each one's report.
    pub fn health(&self) -> RegistryHealth {
        let plugins: BTreeMap<String, Health> = self
            .started
            .iter()
            .map(|name| (name.clone(), self.plugins[name].plugin.health()))
            .collect();
        let status = plugins
            .values()
            .map(|h| h.status)
            .max()
            .unwrap_or(HealthStatus::Up);
        RegistryHealth { status, plugins }
    }
}

/// Runs one lifecycle hook of plugin `name` in a span `flext.plugin` (`otel.name`
/// `"{hook} {name}"`, `flext.plugin.name`, `flext.plugin.hook`, and on failure `error.type`
/// and `otel.status_code = ERROR`).
async fn lifecycle(
    hook: &'static str,
    name: &str,
    work: impl Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "flext.plugin",
        otel.name = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        flext.plugin.name = name,
        flext.plugin.hook = hook,
        error.type = tracing::field::Empty,
    );
    if !span.is_disabled() {
        span.record(
            "otel.name",
            tracing::field::display(format_args!("{hook} {name}")),
        );
    }
    let result = work.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", e.reason());
    }
    result
}
