//! `cargo xtask check-layers`: crates depend strictly downward (docs/ARCHITECTURE.md).

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::cargo;

/// The layer of each crate, from the design notes. A crate may depend (normally or at
/// build time) only on crates of a strictly lower layer; dev-dependencies may also reach
/// sideways, to the same layer, for tests.
const LAYERS: &[(&str, u32)] = &[
    ("causality-hash", 0),
    ("causality-log", 1),
    ("causality-version", 1),
    ("causality-net", 2),
    ("causality-discovery", 3),
    ("causality-proofshare", 4),
    ("causality-regsync", 5),
    ("causality-exec", 6),
    ("causality-node", 7),
    // The whole-network simulator composes every protocol, as the node does.
    ("causality-sim", 7),
];

/// Feature unification for builds (generated; depends on no crate of ours): outside the
/// layers, and any crate may use it.
const WORKSPACE_HACK: &str = "causality-workspace-hack";

fn layer(name: &str) -> Option<u32> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

pub(crate) fn run() -> Result<()> {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: Value = serde_json::from_slice(&out.stdout)?;
    let violations = check(&metadata)?;
    if !violations.is_empty() {
        bail!("layering violated:\n  {}", violations.join("\n  "));
    }
    println!("check-layers: every causality crate depends only downward");
    Ok(())
}

fn check(metadata: &Value) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let packages = metadata["packages"].as_array().context("no packages")?;
    for package in packages {
        let name = package["name"].as_str().context("package without a name")?;
        if !name.starts_with("causality-") || name == WORKSPACE_HACK {
            continue;
        }
        let Some(own) = layer(name) else {
            violations.push(format!(
                "{name} is not in the layer table (xtask/src/layers.rs)"
            ));
            continue;
        };
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            if !dep_name.starts_with("causality-") || dep_name == WORKSPACE_HACK {
                continue;
            }
            let kind = dep["kind"].as_str().unwrap_or("normal");
            let Some(theirs) = layer(dep_name) else {
                violations.push(format!("{name} -> {dep_name}: {dep_name} has no layer"));
                continue;
            };
            let allowed = if kind == "dev" {
                // Sideways within the layer for tests; a crate may also dev-depend on itself
                // to turn on its own test features (`test-utils`).
                theirs <= own
            } else {
                theirs < own
            };
            if !allowed {
                violations.push(format!(
                    "{name} (layer {own}) -> {dep_name} (layer {theirs}) as a {kind} dependency"
                ));
            }
        }
    }
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(deps: &[(&str, &str, &str)]) -> Value {
        let mut packages: Vec<Value> = LAYERS
            .iter()
            .map(|(n, _)| json!({"name": n, "dependencies": []}))
            .collect();
        for (from, to, kind) in deps {
            let pkg = packages.iter_mut().find(|p| p["name"] == *from).unwrap();
            pkg["dependencies"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": to, "kind": if *kind == "normal" { Value::Null } else { json!(kind) }}));
        }
        json!({ "packages": packages })
    }

    #[test]
    fn downward_edges_pass_and_others_are_named() {
        assert!(
            check(&meta(&[("causality-log", "causality-hash", "normal")]))
                .unwrap()
                .is_empty()
        );
        let v = check(&meta(&[("causality-hash", "causality-log", "normal")])).unwrap();
        assert_eq!(
            v,
            ["causality-hash (layer 0) -> causality-log (layer 1) as a normal dependency"]
        );
        let v = check(&meta(&[("causality-log", "causality-version", "build")])).unwrap();
        assert_eq!(v.len(), 1, "same layer is refused");
        assert!(
            check(&meta(&[("causality-log", "causality-version", "dev")]))
                .unwrap()
                .is_empty()
        );
        assert!(
            check(&meta(&[("causality-net", "causality-net", "dev")]))
                .unwrap()
                .is_empty(),
            "a crate may dev-depend on itself for its test features"
        );
        assert_eq!(
            check(&meta(&[("causality-net", "causality-net", "normal")]))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            check(&meta(&[("causality-log", "causality-net", "dev")]))
                .unwrap()
                .len(),
            1
        );
    }
}
