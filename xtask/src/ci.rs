//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.

use anyhow::{Result, bail};

use crate::util::{cargo, exec, step};
use crate::{codegen, layers, prereq};

pub(crate) fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask ci");
    }
    // In CI the lock file must be committed and obeyed.
    let locked: &[&str] = if std::env::var_os("CI").is_some() {
        &["--locked"]
    } else {
        &[]
    };
    step("prerequisites", prereq::ensure)?;
    step("rustfmt", || {
        exec(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("generated code", || codegen::run(&["--check".to_owned()]))?;
    step("layering", layers::run)?;
    step("clippy", || {
        exec(
            cargo()
                .args(["clippy", "--workspace", "--all-targets", "--all-features"])
                .args(locked)
                .args(["--", "-D", "warnings"]),
        )
    })?;
    // Everything else builds with all features; the libraries must also build without
    // their optional backends (RocksDB, libp2p, NAT traversal), so a downstream project can
    // leave them out. (`cargo check` of the RocksDB feature alone would recompile RocksDB's
    // C++ for a different feature set, so that combination is covered by the full build.)
    step("feature combinations", || {
        exec(
            cargo()
                .args(["check", "-p", "causality-log", "--no-default-features"])
                .args(locked),
        )?;
        exec(
            cargo()
                .args(["check", "-p", "causality-net", "--no-default-features"])
                .args(locked),
        )?;
        exec(cargo().args(["check", "-p", "causality-net"]).args(locked))?;
        // The protocol alone: no arkworks, no RocksDB; and the verifier without threads.
        exec(
            cargo()
                .args([
                    "check",
                    "-p",
                    "causality-proofshare",
                    "--no-default-features",
                ])
                .args(locked),
        )?;
        exec(
            cargo()
                .args([
                    "check",
                    "-p",
                    "causality-proofshare",
                    "--no-default-features",
                    "--features",
                    "groth16",
                ])
                .args(locked),
        )?;
        // Register sync and execution coordination without RocksDB.
        exec(
            cargo()
                .args(["check", "-p", "causality-regsync", "--no-default-features"])
                .args(locked),
        )?;
        exec(
            cargo()
                .args(["check", "-p", "causality-exec", "--no-default-features"])
                .args(locked),
        )
    })?;
    step("tests", || {
        exec(
            cargo()
                .args(["test", "--workspace", "--all-features"])
                .args(locked),
        )
    })?;
    step("benchmarks in test mode", || {
        exec(
            cargo()
                .args(["test", "--workspace", "--all-features", "--benches"])
                .args(locked),
        )
    })?;
    step("rustdoc", || {
        exec(
            cargo()
                .args(["doc", "--workspace", "--all-features", "--no-deps"])
                .args(locked)
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;
    println!("\nci: all checks passed");
    Ok(())
}
