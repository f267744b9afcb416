//! `tests/downstream/`: small projects outside the workspace, each a project of its own,
//! that use one or two of our crates by path the way a user would. Each is built and run,
//! and its dependency tree (`cargo tree`) is checked for what its choice of crates and
//! features must not bring in. They share one target directory (`downstream/` under ours),
//! so a second run rebuilds nothing.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, exec, root};

/// libp2p's transport stack (every part of it depends on these). `libp2p-identity` alone
/// is not in it: `multiaddr` uses it for `/p2p/` addresses.
const LIBP2P: [&str; 3] = ["libp2p", "libp2p-core", "libp2p-swarm"];
/// RocksDB and its bindings.
const ROCKSDB: [&str; 2] = ["rocksdb", "librocksdb-sys"];

/// (project, what must not be in its tree, why). A name ending in `-*` matches every
/// package with that prefix (`ark-*`: arkworks); others match exactly.
const PROJECTS: &[(&str, &[&str], &str)] = &[
    (
        "log-alone",
        &[LIBP2P[0], LIBP2P[1], LIBP2P[2], "ark-*", "causality-net"],
        "the log needs no networking and no proof system",
    ),
    (
        "net-memory",
        &[
            LIBP2P[0], LIBP2P[1], LIBP2P[2], ROCKSDB[0], ROCKSDB[1], "ark-*",
        ],
        "the in-memory network needs neither libp2p nor a database nor a proof system",
    ),
    (
        "exec-memory",
        &[
            LIBP2P[0], LIBP2P[1], LIBP2P[2], ROCKSDB[0], ROCKSDB[1], "ark-*",
        ],
        "execution coordination over memory stores needs neither libp2p nor a database nor a proof system",
    ),
    (
        "proof-verify",
        &[LIBP2P[0], LIBP2P[1], LIBP2P[2], ROCKSDB[0], ROCKSDB[1]],
        "verifying proofs needs neither libp2p nor a database",
    ),
];

/// Crates that must stay light whoever uses them, checked inside a project's tree:
/// (project, crate, forbidden, why).
const LIGHT: &[(&str, &str, &[&str], &str)] = &[(
    "log-alone",
    "causality-hash",
    &["tokio", LIBP2P[0], LIBP2P[1], ROCKSDB[0], "ark-*"],
    "hashing is synchronous and self-contained",
)];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("downstream")
}

fn manifest(project: &str) -> PathBuf {
    root()
        .join("tests/downstream")
        .join(project)
        .join("Cargo.toml")
}

/// The packages in `package`'s tree of normal and build dependencies, in `project`.
fn tree(project: &str, package: &str, locked: &[&str]) -> Result<Vec<String>> {
    let output = cargo()
        .arg("tree")
        .arg("--manifest-path")
        .arg(manifest(project))
        .args(["-p", package, "-e", "normal,build", "--prefix", "none"])
        .args(["--format", "{p}"])
        .args(locked)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .with_context(|| format!("could not run cargo tree -p {package}"))?;
    if !output.status.success() {
        bail!(
            "cargo tree -p {package} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(packages(&String::from_utf8_lossy(&output.stdout)))
}

/// Package names from `cargo tree --prefix none --format {p}` lines (`name vX.Y.Z …`).
fn packages(tree: &str) -> Vec<String> {
    let mut names: Vec<String> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The packages of `tree` that `forbidden` names.
fn violations(tree: &[String], forbidden: &[&str]) -> Vec<String> {
    tree.iter()
        .filter(|name| {
            forbidden.iter().any(|f| match f.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name.as_str() == *f,
            })
        })
        .cloned()
        .collect()
}

fn check_tree(
    project: &str,
    package: &str,
    forbidden: &[&str],
    why: &str,
    locked: &[&str],
) -> Result<()> {
    let found = violations(&tree(project, package, locked)?, forbidden);
    if !found.is_empty() {
        bail!(
            "{package} depends on {} ({why}); see `cargo tree --manifest-path {} -p {package} -i {}`",
            found.join(", "),
            manifest(project).display(),
            found[0]
        );
    }
    println!("{package}: none of {} in its tree", forbidden.join(", "));
    Ok(())
}

pub(crate) fn check(locked: &[&str]) -> Result<()> {
    for (project, forbidden, why) in PROJECTS {
        println!("--- {project}");
        exec(
            cargo()
                .arg("run")
                .arg("--manifest-path")
                .arg(manifest(project))
                .arg("-q")
                .args(locked)
                .env("CARGO_TARGET_DIR", target_dir()),
        )?;
        check_tree(project, project, forbidden, why, locked)?;
    }
    for (project, package, forbidden, why) in LIGHT {
        check_tree(project, package, forbidden, why, locked)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forbidden_crate_in_the_tree_is_named() {
        let tree = packages(
            "net-memory v0.0.0 (/w/tests/downstream/net-memory)\n\
             causality-net v0.1.0 (/w/crates/causality-net)\n\
             libp2p-core v0.43.0\n\
             tokio v1.54.1\n\
             tokio v1.54.1 (*)\n\
             arkworks-free v1.0.0\n\
             ark-ff v0.5.0\n",
        );
        assert_eq!(
            violations(&tree, &["libp2p", "libp2p-core", "rocksdb", "ark-*"]),
            vec!["ark-ff".to_owned(), "libp2p-core".to_owned()]
        );
        assert!(
            violations(&tree, &["libp2p", "ark"]).is_empty(),
            "exact names"
        );
        assert!(violations(&tree, &["rocksdb"]).is_empty());
        assert_eq!(violations(&tree, &["tokio"]), vec!["tokio".to_owned()]);
    }
}
