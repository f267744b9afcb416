//! `cargo xtask fuzz`: builds every target in `fuzz/` with the nightly toolchain and the
//! flags `cargo fuzz` uses (libFuzzer coverage, AddressSanitizer, `--cfg fuzzing`), then
//! runs each for a while from its committed corpus.
//!
//! Driven directly rather than through `cargo fuzz` so that CI needs no extra tool
//! installed: the layout is cargo-fuzz's, so `cargo fuzz run <target>` works as well. New
//! inputs go to a scratch corpus under the target directory; the committed corpus
//! (`fuzz/corpus/<target>/`) is only read. A crash fails the task and names the input
//! that reproduces it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{cargo, exec, root};

const USAGE: &str = "usage: cargo xtask fuzz [--time SECONDS] [--target NAME] [--write-seeds]";

/// The flags `cargo fuzz build` passes (its defaults on Linux, AddressSanitizer).
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cllvm-args=-sanitizer-coverage-stack-depth --cfg fuzzing -Cdebug-assertions \
    -Zsanitizer=address";

struct Options {
    seconds: u64,
    only: Option<String>,
    write_seeds: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        seconds: 60,
        only: None,
        write_seeds: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--time" => {
                options.seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("--time takes seconds\n{USAGE}"))?;
            }
            "--target" => {
                options.only = Some(args.next().cloned().context(USAGE)?);
            }
            "--write-seeds" => options.write_seeds = true,
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(options)
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    if options.write_seeds {
        return write_seeds();
    }
    let Some(host) = nightly_host() else {
        println!(
            "fuzz: SKIPPED — the nightly toolchain is not installed (libFuzzer and the \
             sanitizers need it). Install it with:\n\n    rustup toolchain install nightly\n"
        );
        return Ok(());
    };
    let mut targets = targets()?;
    if let Some(only) = &options.only {
        targets.retain(|t| t == only);
        if targets.is_empty() {
            bail!("no fuzz target `{only}` (see fuzz/fuzz_targets/)");
        }
    }
    let target_dir = target_dir();
    println!(
        "==> building {} fuzz targets (nightly, AddressSanitizer, release)",
        targets.len()
    );
    let start = Instant::now();
    exec(
        nightly()
            .args([
                "build",
                "--release",
                "--locked",
                "--bins",
                "--target",
                &host,
            ])
            .arg("--manifest-path")
            .arg(root().join("fuzz/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", RUSTFLAGS),
    )?;
    println!("built in {:.0} s", start.elapsed().as_secs_f64());
    let bin_dir = target_dir.join(&host).join("release");
    println!(
        "\n{:<22} {:>8} {:>12} {:>10} {:>9} {:>7}",
        "target", "seconds", "executions", "execs/s", "coverage", "corpus"
    );
    let mut failures = Vec::new();
    for target in &targets {
        match fuzz_one(&bin_dir, &target_dir, target, options.seconds)? {
            Outcome::Clean(stats) => println!(
                "{:<22} {:>8.1} {:>12} {:>10.0} {:>9} {:>7}",
                target,
                stats.seconds,
                stats.executions,
                stats.executions as f64 / stats.seconds.max(0.001),
                stats.coverage,
                stats.corpus,
            ),
            Outcome::Crashed(report) => {
                println!("{target:<22} FAILED");
                failures.push(report);
            }
        }
    }
    if !failures.is_empty() {
        bail!("fuzzing found failures:\n{}", failures.join("\n"));
    }
    println!("\nfuzz: {} targets, no failures", targets.len());
    Ok(())
}

/// Runs the ignored `write_seeds` test of each crate a target fuzzes (`<crate>_<what>`
/// is `causality-<crate>`'s), which writes its valid encodings into `fuzz/corpus/`.
fn write_seeds() -> Result<()> {
    let mut crates: Vec<String> = targets()?
        .iter()
        .filter_map(|t| t.split_once('_'))
        .map(|(krate, _)| format!("causality-{krate}"))
        .collect();
    crates.dedup();
    for krate in &crates {
        exec(
            cargo()
                .args(["test", "--locked", "--all-features", "--lib", "-p", krate])
                .args(["fuzzing::tests::write_seeds", "--", "--ignored", "--exact"])
                .arg("--nocapture"),
        )?;
    }
    Ok(())
}

struct Stats {
    seconds: f64,
    executions: u64,
    coverage: u64,
    corpus: u64,
}

enum Outcome {
    Clean(Stats),
    Crashed(String),
}

fn fuzz_one(bin_dir: &Path, target_dir: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let scratch = target_dir.join("corpus").join(target);
    let artifacts = target_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&scratch)?;
    std::fs::create_dir_all(&artifacts)?;
    let committed = root().join("fuzz/corpus").join(target);
    let binary = bin_dir.join(target);
    let start = Instant::now();
    let output = Command::new(&binary)
        .arg(&scratch)
        .arg(&committed)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run {}", binary.display()))?;
    let elapsed = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let input = log
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .unwrap_or("(no input written)")
            .trim()
            .to_owned();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Ok(Outcome::Crashed(format!(
            "--- {target}: {}\n{}\nreproduce: {} {input}",
            output.status,
            tail.join("\n"),
            binary.display()
        )));
    }
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // The last status line carries coverage and corpus size: `#N DONE cov: C ft: F corp: K/..`.
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains(" cov: "))
        .unwrap_or("");
    let field = |key: &str| {
        last.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Outcome::Clean(Stats {
        seconds: elapsed,
        executions: stat("number_of_executed_units"),
        coverage: field("cov:"),
        corpus: field("corp:"),
    }))
}

/// The fuzz targets, from `fuzz/fuzz_targets/*.rs`.
fn targets() -> Result<Vec<String>> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".rs").map(str::to_owned))
        .collect();
    targets.sort();
    Ok(targets)
}

/// Where the sanitizer build goes: beside the normal build, never mixed with it.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), PathBuf::from)
        .join("fuzz")
}

/// `cargo` of the nightly toolchain, with what the outer (stable) cargo set removed.
fn nightly() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(root());
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "RUSTC_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The nightly toolchain's host triple, or `None` when it is not installed.
fn nightly_host() -> Option<String> {
    let output = Command::new("rustup")
        .args(["run", "nightly", "rustc", "-vV"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
}
