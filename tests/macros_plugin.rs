//! `#[plugin]`: a plugin type registered by attribute and found by the registry.
#![cfg(feature = "macros")]

use flext::application::PluginRegistry;
use flext::plugin;
use flext::ports::{Plugin, PluginDependency};

#[plugin]
#[derive(Default)]
struct Ledger;

impl Plugin for Ledger {
    fn name(&self) -> &str {
        "ledger"
    }
    fn version(&self) -> &str {
        "2.1.0"
    }
}

#[plugin]
#[derive(Default)]
struct Audit;

impl Plugin for Audit {
    fn name(&self) -> &str {
        "audit"
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn dependencies(&self) -> Vec<PluginDependency> {
        vec![PluginDependency::new("ledger", "^2")]
    }
}

#[tokio::test]
async fn registered_plugins_are_found_and_started_in_order() {
    let mut plugins = PluginRegistry::new();
    plugins.with_registered().unwrap();
    plugins.start_all().await.unwrap();
    assert_eq!(plugins.started(), ["ledger", "audit"]);
    let mut twice = PluginRegistry::new();
    twice.with_registered().unwrap();
    let err = twice.with_registered().unwrap_err();
    assert_eq!(err.reason(), "DUPLICATE_PLUGIN");
    assert_eq!(
        err.message().matches("macros_plugin.rs:").count(),
        2,
        "{err}"
    );
}
