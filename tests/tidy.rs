//! Architecture rules checked from `cargo metadata`: dependency arrows point one way.
//!
//! - `flext-domain` pulls in no async runtime, no sqlx, no other crate of ours;
//! - `flext-ports` depends on no crate of ours but `flext-domain`;
//! - no adapter crate (under `adapters/`) depends on `flext-application`;
//! - `flext-bridge` depends on no crate of ours but `flext-domain`.
//!
//! The rules read the resolved graph with every feature on, so a feature-gated arrow counts,
//! and they apply to crates as they are added.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Crates a pure domain must never reach, directly or through another crate.
const RUNTIMES_AND_IO: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "async-io",
    "mio",
    "futures-executor",
    "sqlx",
    "sqlx-core",
    "actix-rt",
];

/// The dependency graph: package name -> (manifest path, names of its normal dependencies).
struct Graph {
    packages: BTreeMap<String, Package>,
    workspace: BTreeSet<String>,
}

struct Package {
    manifest: String,
    deps: BTreeSet<String>,
}

impl Graph {
    fn from_metadata(meta: &Value) -> Graph {
        let mut names = BTreeMap::new();
        let mut packages = BTreeMap::new();
        for p in meta["packages"].as_array().expect("packages") {
            let id = p["id"].as_str().expect("id").to_owned();
            let name = p["name"].as_str().expect("name").to_owned();
            names.insert(id, name.clone());
            let manifest = p["manifest_path"]
                .as_str()
                .expect("manifest")
                .replace('\\', "/");
            packages.insert(
                name,
                Package {
                    manifest,
                    deps: BTreeSet::new(),
                },
            );
        }
        for node in meta["resolve"]["nodes"].as_array().expect("resolve nodes") {
            let name = &names[node["id"].as_str().expect("node id")];
            for dep in node["deps"].as_array().expect("deps") {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|k| k["kind"].is_null());
                if normal {
                    let dep_name = names[dep["pkg"].as_str().expect("pkg")].clone();
                    packages
                        .get_mut(name)
                        .expect("package")
                        .deps
                        .insert(dep_name);
                }
            }
        }
        let workspace = meta["workspace_members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|id| names[id.as_str().expect("member id")].clone())
            .collect();
        Graph {
            packages,
            workspace,
        }
    }

    /// The path of names from `from` to `to` through normal dependencies, if there is one.
    fn path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![vec![from.to_owned()]];
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty path");
            if last == to && path.len() > 1 {
                return Some(path);
            }
            if !seen.insert(last.clone()) {
                continue;
            }
            if let Some(p) = self.packages.get(last) {
                for d in &p.deps {
                    let mut next = path.clone();
                    next.push(d.clone());
                    stack.push(next);
                }
            }
        }
        None
    }

    /// Every rule broken, each as one line naming the offending path.
    fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let ours = |n: &str| self.workspace.contains(n);
        if self.packages.contains_key("flext-domain") {
            for banned in RUNTIMES_AND_IO {
                if let Some(p) = self.path("flext-domain", banned) {
                    out.push(format!("flext-domain reaches {banned}: {}", p.join(" -> ")));
                }
            }
            for dep in &self.packages["flext-domain"].deps {
                if ours(dep) {
                    out.push(format!(
                        "flext-domain depends on {dep}; the domain depends on no crate of ours"
                    ));
                }
            }
        }
        for only_domain in ["flext-ports", "flext-bridge"] {
            if let Some(p) = self.packages.get(only_domain) {
                for dep in p.deps.iter().filter(|d| ours(d) && *d != "flext-domain") {
                    out.push(format!(
                        "{only_domain} depends on {dep}; it may depend only on flext-domain of ours"
                    ));
                }
            }
        }
        for name in &self.workspace {
            let p = &self.packages[name];
            if p.manifest.contains("/adapters/")
                && let Some(path) = self.path(name, "flext-application")
            {
                out.push(format!(
                    "adapter {name} depends on flext-application: {}",
                    path.join(" -> ")
                ));
            }
        }
        out
    }
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--all-features"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn dependency_arrows_point_one_way() {
    let graph = Graph::from_metadata(&metadata());
    assert!(
        graph.workspace.contains("flext-domain"),
        "the workspace has flext-domain"
    );
    let violations = graph.violations();
    assert!(
        violations.is_empty(),
        "architecture rules broken:\n{}",
        violations.join("\n")
    );
}

/// The rules themselves catch each wrong arrow (a synthetic graph, so the check can fail).
#[test]
fn the_rules_catch_wrong_arrows() {
    let pkg = |manifest: &str, deps: &[&str]| Package {
        manifest: manifest.to_owned(),
        deps: deps.iter().map(|d| (*d).to_owned()).collect(),
    };
    let mut packages = BTreeMap::new();
    packages.insert(
        "flext-domain".into(),
        pkg("/w/domain/Cargo.toml", &["helper"]),
    );
    packages.insert("helper".into(), pkg("/reg/helper/Cargo.toml", &["tokio"]));
    packages.insert("tokio".into(), pkg("/reg/tokio/Cargo.toml", &[]));
    packages.insert(
        "flext-ports".into(),
        pkg(
            "/w/ports/Cargo.toml",
            &["flext-domain", "flext-application"],
        ),
    );
    packages.insert(
        "flext-application".into(),
        pkg("/w/application/Cargo.toml", &["flext-ports"]),
    );
    packages.insert(
        "flext-memory".into(),
        pkg("/w/adapters/memory/Cargo.toml", &["flext-ports", "glue"]),
    );
    packages.insert(
        "glue".into(),
        pkg("/w/glue/Cargo.toml", &["flext-application"]),
    );
    packages.insert(
        "flext-bridge".into(),
        pkg("/w/bridge/Cargo.toml", &["flext-domain", "flext-ports"]),
    );
    let workspace = [
        "flext-domain",
        "flext-ports",
        "flext-application",
        "flext-memory",
        "glue",
        "flext-bridge",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let v = Graph {
        packages,
        workspace,
    }
    .violations();
    let joined = v.join("\n");
    assert!(
        joined.contains("flext-domain reaches tokio: flext-domain -> helper -> tokio"),
        "{joined}"
    );
    assert!(
        joined.contains("flext-ports depends on flext-application"),
        "{joined}"
    );
    assert!(joined.contains("adapter flext-memory depends on flext-application: flext-memory -> glue -> flext-application"), "{joined}");
    assert!(
        joined.contains("flext-bridge depends on flext-ports"),
        "{joined}"
    );
}

/// The minimum Rust version is stated once, in the workspace's `rust-version`, and the
/// README says the same (a reader installs what it says).
#[test]
fn the_readme_states_the_minimum_rust_version_of_the_manifest() {
    let root = env!("CARGO_MANIFEST_DIR");
    let manifest = std::fs::read_to_string(format!("{root}/Cargo.toml")).expect("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("a rust-version in the workspace");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    assert!(
        readme.contains(&format!("Rust {msrv} or newer")),
        "README.md must say \"Rust {msrv} or newer\""
    );
    let stated: Vec<&str> = readme
        .match_indices("Rust 1.")
        .map(|(i, _)| readme[i..].split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert!(
        stated.iter().all(|v| *v == msrv),
        "README.md names other Rust versions: {stated:?}"
    );
}
