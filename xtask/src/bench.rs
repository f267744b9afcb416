//! `cargo xtask bench [crate...]`: run the criterion benchmarks in release mode and print
//! the figures they measured as one table, plus the ratios the targets are stated in.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::util::{cargo, exec};

/// Crates with benchmarks, by the short name accepted on the command line.
const CRATES: &[&str] = &[
    "hash",
    "log",
    "net",
    "discovery",
    "proofshare",
    "regsync",
    "exec",
];

/// Ratios worth printing: (label, numerator benchmark id, denominator benchmark id).
/// Both are criterion ids, `group/function[/parameter]`; a ratio of times.
const RATIOS: &[(&str, &str, &str)] = &[
    (
        "HRW top-3 over 10,000 peers: rule 1 / rule 2 prepared (speed-up)",
        "hrw_top3/rule1/10000",
        "hrw_top3/prepared/10000",
    ),
    (
        "RocksLog / raw RocksDB, no sync (time ratio; target <= 1.25)",
        "append_256B/rocks_log_nosync",
        "append_256B/raw_rocksdb_nosync",
    ),
    (
        "Floor (encode + BLAKE3 id + put) / raw RocksDB, no sync",
        "append_256B/floor_rocksdb_nosync",
        "append_256B/raw_rocksdb_nosync",
    ),
    (
        "RocksLog group commit 1000 / raw RocksDB put, fsync per 1000",
        "append_256B/rocks_log_group1000",
        "append_256B/raw_rocksdb_group1000",
    ),
    (
        "RocksLog group commit 1000 / raw RocksDB batch of 1000, fsync",
        "append_256B/rocks_log_group1000",
        "append_256B/raw_rocksdb_batch1000",
    ),
    (
        "Floor / raw RocksDB, batch of 1000, fsync",
        "append_256B/floor_rocksdb_batch1000",
        "append_256B/raw_rocksdb_batch1000",
    ),
    (
        "RocksLog periodic fsync 1000 / raw RocksDB put, fsync per 1000",
        "append_256B/rocks_log_periodic1000",
        "append_256B/raw_rocksdb_periodic1000",
    ),
    (
        "RocksLog / raw RocksDB, sync each",
        "append_256B/rocks_log_sync",
        "append_256B/raw_rocksdb_sync",
    ),
    (
        "regsync apply / raw RocksDB write of the same bytes (time ratio)",
        "regsync_apply/rocksdb",
        "regsync_apply/raw_rocksdb",
    ),
    (
        "regsync apply / floor (decode + one signature check + state hash + the raw write)",
        "regsync_apply/rocksdb",
        "regsync_apply/floor_rocksdb",
    ),
];

/// Ratios of time per element (benchmarks with `Throughput::Elements`): (label,
/// numerator, denominator).
const PER_ELEMENT: &[(&str, &str, &str)] = &[
    (
        "Groth16 single / batch of 16, per proof (speed-up)",
        "groth16_verify/single",
        "groth16_verify/batch/16",
    ),
    (
        "Groth16 single / batch of 64, per proof (speed-up; target >= 4)",
        "groth16_verify/single",
        "groth16_verify/batch/64",
    ),
    (
        "Groth16 single / batch of 256, per proof (speed-up)",
        "groth16_verify/single",
        "groth16_verify/batch/256",
    ),
];

/// Network sizes of `bench discovery --scale`.
const SCALE_SIZES: &[&str] = &["1000", "3000", "10000"];

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(at) = args.iter().position(|a| a == "--scale") {
        let rest: Vec<&String> = args
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .map(|(_, a)| a)
            .collect();
        if rest
            .iter()
            .any(|a| a.strip_prefix("causality-").unwrap_or(a) != "discovery")
        {
            bail!("--scale is a discovery scenario: `cargo xtask bench discovery --scale [N...]`");
        }
        return scale();
    }
    let selected: Vec<&str> = if args.is_empty() {
        CRATES.to_vec()
    } else {
        args.iter()
            .map(|a| {
                let short = a.strip_prefix("causality-").unwrap_or(a);
                CRATES
                    .iter()
                    .copied()
                    .find(|c| *c == short)
                    .with_context(|| {
                        format!("no benchmarks for `{a}`; known: {}", CRATES.join(", "))
                    })
            })
            .collect::<Result<_>>()?
    };
    let started = SystemTime::now();
    // Benchmarks that measure pairs themselves append their lines here.
    let report = target_dir()?.join("causality-bench-report.txt");
    let _ = std::fs::remove_file(&report);
    for krate in &selected {
        println!("==> benchmarks of causality-{krate} (release build)");
        exec(
            cargo()
                .args(["bench", "-p", &format!("causality-{krate}")])
                .env("CAUSALITY_BENCH_REPORT", &report),
        )?;
    }
    let dir = target_dir()?.join("criterion");
    let mut rows = Vec::new();
    collect(&dir, started, &mut rows)?;
    if rows.is_empty() {
        bail!("no criterion results were written under {}", dir.display());
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    println!(
        "\n{:<48} {:>14} {:>20}",
        "benchmark", "median", "throughput"
    );
    for row in &rows {
        println!(
            "{:<48} {:>14} {:>20}",
            row.id,
            fmt_time(row.median_ns),
            row.throughput()
        );
    }
    for (label, num, den) in RATIOS {
        let find = |id: &str| rows.iter().find(|r| r.id == id).map(|r| r.median_ns);
        if let (Some(n), Some(d)) = (find(num), find(den)) {
            println!("{label}: {:.2}x time, {:.2}x throughput", n / d, d / n);
        }
    }
    for (label, num, den) in PER_ELEMENT {
        let find = |id: &str| {
            rows.iter()
                .find(|r| r.id == id)
                .and_then(Row::per_element_ns)
        };
        if let (Some(n), Some(d)) = (find(num), find(den)) {
            println!(
                "{label}: {:.2}x ({} vs {} per element)",
                n / d,
                fmt_time(n),
                fmt_time(d)
            );
        }
    }
    if let Ok(paired) = std::fs::read_to_string(&report) {
        println!("\nMeasured in interleaved pairs:");
        print!("{paired}");
    }
    Ok(())
}

struct Row {
    id: String,
    median_ns: f64,
    throughput: Option<(String, f64)>,
}

impl Row {
    fn per_element_ns(&self) -> Option<f64> {
        match &self.throughput {
            Some((kind, n)) if kind == "Elements" && *n > 0.0 => Some(self.median_ns / n),
            _ => None,
        }
    }

    fn throughput(&self) -> String {
        match &self.throughput {
            Some((kind, n)) if kind == "Bytes" || kind == "BytesDecimal" => {
                format!("{:.1} MiB/s", n / self.median_ns * 1e9 / (1024.0 * 1024.0))
            }
            Some((_, n)) => format!("{:.0} /s", n / self.median_ns * 1e9),
            None => String::new(),
        }
    }
}

fn collect(dir: &Path, since: SystemTime, rows: &mut Vec<Row>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some(row) = read_row(&path, since)? {
                    rows.push(row);
                }
            } else if path
                .file_name()
                .is_none_or(|n| n != "base" && n != "change" && n != "report")
            {
                collect(&path, since, rows)?;
            }
        }
    }
    Ok(())
}

fn read_row(dir: &Path, since: SystemTime) -> Result<Option<Row>> {
    let estimates = dir.join("estimates.json");
    let modified = std::fs::metadata(&estimates).and_then(|m| m.modified());
    if modified.is_err() || modified.as_ref().is_ok_and(|m| *m < since) {
        return Ok(None);
    }
    let est: Value = serde_json::from_str(&std::fs::read_to_string(&estimates)?)?;
    let bench: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("benchmark.json"))?)?;
    let id = bench["full_id"].as_str().unwrap_or_default().to_owned();
    let median_ns = est["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
    let throughput = bench["throughput"].as_object().and_then(|t| {
        let (kind, n) = t.iter().next()?;
        Some((kind.clone(), n.as_f64()?))
    });
    Ok(Some(Row {
        id,
        median_ns,
        throughput,
    }))
}

fn fmt_time(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.1} ns"),
        n if n < 1e6 => format!("{:.2} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

fn target_dir() -> Result<PathBuf> {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()?;
    let metadata: Value = serde_json::from_slice(&out.stdout)?;
    Ok(PathBuf::from(
        metadata["target_directory"]
            .as_str()
            .context("no target directory")?,
    ))
}

/// Whole simulated networks of 1,000, 3,000 and 10,000 discovery nodes in one process
/// each (release build): convergence, traffic, memory, gossip latency, simulated time
/// per wall second. `CAUSALITY_SCALE_SIZES` (comma-separated) overrides the sizes.
fn scale() -> Result<()> {
    let sizes: Vec<String> = match std::env::var("CAUSALITY_SCALE_SIZES") {
        Ok(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
        Err(_) => SCALE_SIZES.iter().map(|s| (*s).to_owned()).collect(),
    };
    println!(
        "==> discovery at scale: {} nodes (release build, one process per size)",
        sizes.join(", ")
    );
    exec(
        cargo()
            .args(["run", "--release", "--locked", "-p", "causality-discovery"])
            .args(["--example", "scale", "--"])
            .args(&sizes),
    )
}
