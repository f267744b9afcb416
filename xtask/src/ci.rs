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
                .args(["clippy", "--workspace", "--all-targets"])
                .args(locked)
                .args(["--", "-D", "warnings"]),
        )
    })?;
    step("tests", || {
        exec(cargo().args(["test", "--workspace"]).args(locked))
    })?;
    step("benchmarks in test mode", || {
        exec(
            cargo()
                .args(["test", "--workspace", "--benches"])
                .args(locked),
        )
    })?;
    step("rustdoc", || {
        exec(
            cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .args(locked)
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;
    println!("\nci: all checks passed");
    Ok(())
}
