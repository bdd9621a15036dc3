//! The plugin registry: dependency order, reverse stop, missing dependencies, version
//! requirements, cycles, roll-back of a failed start, manifests and health.

use std::sync::{Arc, Mutex};

use flext_application::PluginRegistry;
use flext_domain::Error;
use flext_ports::{Health, HealthStatus, Plugin, PluginDependency, PluginFuture};

type Log = Arc<Mutex<Vec<String>>>;

struct TestPlugin {
    name: &'static str,
    version: &'static str,
    deps: Vec<(&'static str, &'static str)>,
    fail: Option<&'static str>,
    health: HealthStatus,
    log: Log,
}

impl TestPlugin {
    fn new(name: &'static str, version: &'static str, log: &Log) -> Self {
        TestPlugin {
            name,
            version,
            deps: Vec::new(),
            fail: None,
            health: HealthStatus::Up,
            log: log.clone(),
        }
    }
    fn needs(mut self, name: &'static str, requirement: &'static str) -> Self {
        self.deps.push((name, requirement));
        self
    }
    fn failing(mut self, hook: &'static str) -> Self {
        self.fail = Some(hook);
        self
    }
    fn health(mut self, status: HealthStatus) -> Self {
        self.health = status;
        self
    }
    fn hook(&self, hook: &'static str) -> Result<(), Error> {
        self.log
            .lock()
            .expect("log")
            .push(format!("{hook} {}", self.name));
        if self.fail == Some(hook) {
            return Err(Error::unavailable(
                "BROKER_DOWN",
                format!("{} cannot reach its broker", self.name),
            ));
        }
        Ok(())
    }
}

impl Plugin for TestPlugin {
    fn name(&self) -> &str {
        self.name
    }
    fn version(&self) -> &str {
        self.version
    }
    fn dependencies(&self) -> Vec<PluginDependency> {
        self.deps
            .iter()
            .map(|(n, r)| PluginDependency::new(*n, *r))
            .collect()
    }
    fn init<'a>(&'a self, config: &'a serde_json::Value) -> PluginFuture<'a> {
        if !config.is_null() {
            self.log
                .lock()
                .expect("log")
                .push(format!("config {} {config}", self.name));
        }
        Box::pin(async move { self.hook("init") })
    }
    fn start(&self) -> PluginFuture<'_> {
        Box::pin(async move { self.hook("start") })
    }
    fn stop(&self) -> PluginFuture<'_> {
        Box::pin(async move { self.hook("stop") })
    }
    fn health(&self) -> Health {
        match self.health {
            HealthStatus::Up => Health::up(),
            HealthStatus::Degraded => Health::degraded("slow"),
            HealthStatus::Down => Health::down("gone"),
        }
    }
}

fn log() -> Log {
    Arc::default()
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().expect("log").clone()
}

#[tokio::test]
async fn plugins_start_in_dependency_order_and_stop_in_reverse() {
    let log = log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(
            TestPlugin::new("web", "1.0.0", &log)
                .needs("auth", "^2")
                .needs("store", "^1"),
        )
        .unwrap()
        .register(TestPlugin::new("auth", "2.3.1", &log).needs("store", ">=1.1"))
        .unwrap()
        .register(TestPlugin::new("store", "1.4.0", &log))
        .unwrap();
    plugins.start_all().await.unwrap();
    assert_eq!(plugins.started(), ["store", "auth", "web"]);
    plugins.stop_all().await.unwrap();
    let stops: Vec<String> = entries(&log)
        .into_iter()
        .filter(|e| e.starts_with("stop"))
        .collect();
    assert_eq!(stops, ["stop web", "stop auth", "stop store"]);
    assert!(plugins.started().is_empty());
}

#[tokio::test]
async fn a_missing_dependency_names_the_chain() {
    let log = log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(TestPlugin::new("web", "1.0.0", &log).needs("auth", "^2"))
        .unwrap()
        .register(TestPlugin::new("auth", "2.0.0", &log).needs("ldap", "^1"))
        .unwrap();
    let err = plugins.start_all().await.unwrap_err();
    assert_eq!(err.reason(), "PLUGIN_DEPENDENCY_MISSING");
    assert!(
        err.message()
            .contains("auth -> ldap: plugin ldap is not registered"),
        "{err}"
    );
    assert!(entries(&log).is_empty(), "nothing was started");
}

#[tokio::test]
async fn an_unmet_version_requirement_names_both_versions() {
    let log = log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(TestPlugin::new("web", "1.0.0", &log).needs("auth", "^3"))
        .unwrap()
        .register(TestPlugin::new("auth", "2.9.0", &log))
        .unwrap();
    let err = plugins.start_all().await.unwrap_err();
    assert_eq!(err.reason(), "PLUGIN_VERSION_MISMATCH");
    assert!(
        err.message()
            .contains("web requires auth ^3, but version 2.9.0 is registered"),
        "{err}"
    );
}

#[tokio::test]
async fn a_cycle_is_reported_with_its_chain() {
    let log = log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(TestPlugin::new("a", "1.0.0", &log).needs("b", "*"))
        .unwrap()
        .register(TestPlugin::new("b", "1.0.0", &log).needs("c", "*"))
        .unwrap()
        .register(TestPlugin::new("c", "1.0.0", &log).needs("a", "*"))
        .unwrap();
    let err = plugins.start_all().await.unwrap_err();
    assert_eq!(err.reason(), "PLUGIN_DEPENDENCY_CYCLE");
    assert!(err.message().ends_with("a -> b -> c -> a"), "{err}");
}

#[tokio::test]
async fn a_failed_start_stops_what_it_started_in_reverse_and_names_the_cause() {
    let log = log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(TestPlugin::new("store", "1.0.0", &log))
        .unwrap()
        .register(TestPlugin::new("cache", "1.0.0", &log).needs("store", "^1"))
        .unwrap()
        .register(
            TestPlugin::new("queue", "1.0.0", &log)
                .needs("cache", "^1")
                .failing("start"),
        )
        .unwrap();
    let err = plugins.start_all().await.unwrap_err();
    assert_eq!(err.reason(), "PLUGIN_START_FAILED");
    assert!(
        err.message()
            .contains("plugin queue failed to start: queue cannot reach its broker"),
        "{err}"
    );
    assert_eq!(
        err.detail("cause_code"),
        Some(&serde_json::json!("UNAVAILABLE"))
    );
    assert_eq!(
        entries(&log),
        [
            "init store",
            "start store",
            "init cache",
            "start cache",
            "init queue",
            "start queue",
            "stop cache",
            "stop store"
        ]
    );
    assert!(plugins.started().is_empty());

    let log = self::log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(TestPlugin::new("x", "1.0.0", &log).failing("init"))
        .unwrap();
    let err = plugins.start_all().await.unwrap_err();
    assert!(err.message().contains("plugin x failed to init"), "{err}");
}

#[tokio::test]
async fn manifests_enable_configure_and_constrain_plugins() {
    let dir =
        std::env::temp_dir().join(format!("flext-manifests-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("audit.json"),
        r#"{"name":"audit","version":"^1","settings":{"table":"audit_log"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("mailer.json"),
        r#"{"name":"mailer","enabled":false}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let log = log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(TestPlugin::new("audit", "1.2.0", &log))
        .unwrap()
        .register(TestPlugin::new("mailer", "1.0.0", &log))
        .unwrap()
        .load_manifests(&dir)
        .unwrap();
    plugins.start_all().await.unwrap();
    assert_eq!(plugins.started(), ["audit"]);
    assert!(entries(&log).contains(&r#"config audit {"table":"audit_log"}"#.to_owned()));

    // A manifest's version requirement the registered plugin does not meet.
    std::fs::write(dir.join("audit.json"), r#"{"name":"audit","version":"^2"}"#).unwrap();
    let mut strict = PluginRegistry::new();
    strict
        .register(TestPlugin::new("audit", "1.2.0", &log))
        .unwrap();
    strict
        .register(TestPlugin::new("mailer", "1.0.0", &log))
        .unwrap();
    strict.load_manifests(&dir).unwrap();
    let err = strict.start_all().await.unwrap_err();
    assert_eq!(err.reason(), "PLUGIN_VERSION_MISMATCH");
    assert!(
        err.message()
            .contains("audit.json requires audit ^2, but version 1.2.0"),
        "{err}"
    );

    // Malformed and unknown manifests are errors naming the file.
    std::fs::write(
        dir.join("zzz.json"),
        r#"{"name": "audit", "enabeld": true}"#,
    )
    .unwrap();
    let mut broken = PluginRegistry::new();
    broken
        .register(TestPlugin::new("audit", "1.2.0", &log))
        .unwrap();
    broken
        .register(TestPlugin::new("mailer", "1.0.0", &log))
        .unwrap();
    let err = broken.load_manifests(&dir).unwrap_err();
    assert_eq!(err.reason(), "MALFORMED_MANIFEST");
    assert!(err.message().contains("zzz.json"), "{err}");
    std::fs::write(dir.join("zzz.json"), r#"{"name": "billing"}"#).unwrap();
    let mut unknown = PluginRegistry::new();
    unknown
        .register(TestPlugin::new("audit", "1.2.0", &log))
        .unwrap();
    unknown
        .register(TestPlugin::new("mailer", "1.0.0", &log))
        .unwrap();
    let err = unknown.load_manifests(&dir).unwrap_err();
    assert_eq!(err.reason(), "UNKNOWN_PLUGIN");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn health_is_the_worst_of_the_started_plugins() {
    let log = log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(TestPlugin::new("a", "1.0.0", &log))
        .unwrap()
        .register(TestPlugin::new("b", "1.0.0", &log).health(HealthStatus::Degraded))
        .unwrap();
    assert_eq!(plugins.health().status, HealthStatus::Up, "nothing started");
    plugins.start_all().await.unwrap();
    let health = plugins.health();
    assert_eq!(health.status, HealthStatus::Degraded);
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["plugins"]["b"]["details"]["reason"], "slow");
    assert_eq!(json["plugins"]["a"]["status"], "up");
}

#[test]
fn a_name_registered_twice_names_both_sites() {
    let log = log();
    let mut plugins = PluginRegistry::new();
    plugins
        .register(TestPlugin::new("a", "1.0.0", &log))
        .unwrap();
    let err = plugins
        .register(TestPlugin::new("a", "2.0.0", &log))
        .unwrap_err();
    assert_eq!(err.reason(), "DUPLICATE_PLUGIN");
    assert_eq!(
        err.message().matches("plugin_lifecycle.rs:").count(),
        2,
        "{err}"
    );
    let err = plugins
        .register(TestPlugin::new("b", "one", &log))
        .unwrap_err();
    assert_eq!(err.reason(), "INVALID_PLUGIN_VERSION");
}
