//! Small helpers shared by the tasks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of `xtask/`). Read from the environment `cargo run` sets,
/// not the compile-time path: a target directory shared between checkouts can hand this
/// binary to another checkout unrebuilt.
pub(crate) fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    Path::new(&manifest_dir)
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cargo that runs us, so toolchain overrides carry through. The variables `cargo run`
/// set for this binary (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …) are not passed on: build
/// scripts that watch them (ring's does) would otherwise rerun, and recompile everything
/// above them, whenever a build by hand follows one from here.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs a command to completion, streaming its output; fails with the command line if it fails.
pub(crate) fn exec(cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {line}"))?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    Ok(())
}

/// Prints a step banner, runs `f`, prints how long it took.
pub(crate) fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n==> {name}");
    let start = Instant::now();
    let result = f().with_context(|| format!("step `{name}` failed"));
    let took = start.elapsed().as_secs_f64();
    match &result {
        Ok(()) => println!("<== {name}: ok ({took:.1}s)"),
        Err(_) => println!("<== {name}: FAILED ({took:.1}s)"),
    }
    result
}
