//! The C toolchain RocksDB's bindings need: a C++ compiler, clang and libclang.
//!
//! Checked without compiling anything. As root, missing pieces are installed with apt-get;
//! otherwise the exact command is printed and the task fails.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::util::exec;

const APT_PACKAGES: &[&str] = &["clang", "libclang-dev"];

/// Makes sure the prerequisites are present, installing them when we may.
pub(crate) fn ensure() -> Result<()> {
    if !is_root() {
        println!(
            "\n*** WARNING: not running as root: the full-disk tests (a small tmpfs) will be \
             SKIPPED. CI runs as root and runs them. ***\n"
        );
    }
    let absent = missing();
    if absent.is_empty() {
        println!("prerequisites: clang, libclang and a C++ compiler are present");
        return Ok(());
    }
    println!("prerequisites missing: {}", absent.join(", "));
    let command = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        APT_PACKAGES.join(" ")
    );
    if !is_root() {
        bail!(
            "RocksDB's bindings need clang and libclang. Install them with:\n\n    sudo {command}\n\nthen run the task again"
        );
    }
    println!("installing as root: {command}");
    exec(Command::new("apt-get").arg("update").arg("-q"))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(APT_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = missing();
    if !still.is_empty() {
        bail!("still missing after installing: {}", still.join(", "));
    }
    Ok(())
}

fn missing() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if !on_path("clang") {
        missing.push("clang");
    }
    if !has_libclang() {
        missing.push("libclang");
    }
    if !on_path("c++") && !on_path("g++") && !on_path("clang++") {
        missing.push("a C++ compiler");
    }
    missing
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Looks where clang-sys looks: `LIBCLANG_PATH`, then the usual system directories.
fn has_libclang() -> bool {
    let mut dirs: Vec<String> = std::env::var("LIBCLANG_PATH").into_iter().collect();
    dirs.extend(
        [
            "/usr/lib",
            "/usr/lib64",
            "/usr/local/lib",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
        ]
        .map(String::from),
    );
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("llvm") {
                dirs.push(format!("/usr/lib/{name}/lib"));
            }
        }
    }
    dirs.iter().any(|dir| {
        std::fs::read_dir(Path::new(dir)).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("libclang") && name.contains(".so") && !name.contains("cpp")
            })
        })
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
