//! Disk housekeeping for a persistent target directory. CI keeps one across runs so that
//! RocksDB's C++ is compiled once; but every dependency or feature change leaves a second
//! copy of everything above it, and incremental state grows per build. Before building,
//! this drops incremental state when incremental builds are off, and when free space is
//! short removes what recent builds have not read, then (if still short) the whole
//! directory: a cold build is slow, a full disk fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

/// Free space a full `cargo xtask ci` build wants: the workspace's debug build (~12 GiB)
/// and the downstream projects' (~4 GiB), with room to spare.
const WANTED_FREE: u64 = 20 << 30;
/// Where compiled artifacts live (relative to the target directory).
const ARTIFACT_DIRS: &[&str] = &[
    "debug/deps",
    "debug/examples",
    "downstream/debug/deps",
    "downstream/debug/examples",
];
/// Files not read or written for this long count as left over from earlier builds.
const STALE_AFTER: Duration = Duration::from_secs(2 * 24 * 3600);

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::util::root().join("target"), PathBuf::from)
}

/// Bytes free on the file system holding `path` (its nearest existing ancestor).
fn free_bytes(path: &Path) -> Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let output = Command::new("df")
        .args(["-Pk"])
        .arg(existing)
        .output()
        .context("could not run df")?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse_df(&text).with_context(|| format!("unexpected df output: {text}"))
}

/// The available bytes from `df -Pk` output (second line, fourth column, in KiB).
fn parse_df(text: &str) -> Option<u64> {
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// Removes files under `dir` neither read nor modified within [`STALE_AFTER`]; returns the
/// bytes freed. (Reading a file refreshes its access time at least daily under the usual
/// `relatime` mount option, so what recent builds used stays.)
fn remove_stale(dir: &Path, now: SystemTime) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            freed += remove_stale(&path, now);
            continue;
        }
        let last_used = [meta.accessed(), meta.modified()]
            .into_iter()
            .flatten()
            .max();
        let stale = last_used
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if stale && std::fs::remove_file(&path).is_ok() {
            freed += meta.len();
        }
    }
    freed
}

/// Prepares the target directory for a build; prints what it did.
pub(crate) fn prepare() -> Result<()> {
    let target = target_dir();
    if std::env::var_os("CARGO_INCREMENTAL").is_some_and(|v| v == "0") {
        for dir in ["debug/incremental", "downstream/debug/incremental"] {
            let path = target.join(dir);
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
                println!(
                    "disk: removed {} (incremental builds are off)",
                    path.display()
                );
            }
        }
    }
    let free = free_bytes(&target)?;
    println!(
        "disk: {:.1} GiB free for {} (a full build wants {:.0})",
        gib(free),
        target.display(),
        gib(WANTED_FREE)
    );
    if free >= WANTED_FREE {
        return Ok(());
    }
    // Only artifact directories: cargo tracks every file there and rebuilds what is
    // missing. (Build-script outputs and fingerprints stay.)
    let now = SystemTime::now();
    let freed: u64 = ARTIFACT_DIRS
        .iter()
        .map(|dir| remove_stale(&target.join(dir), now))
        .sum();
    let free = free_bytes(&target)?;
    println!(
        "disk: removed {:.1} GiB unused for two days; {:.1} GiB free",
        gib(freed),
        gib(free)
    );
    if free >= WANTED_FREE {
        return Ok(());
    }
    if target.exists() {
        println!(
            "disk: still short; removing {} (the next build is a cold one)",
            target.display()
        );
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("cannot remove {}", target.display()))?;
    }
    let free = free_bytes(&target)?;
    if free < WANTED_FREE / 2 {
        bail!(
            "only {:.1} GiB free for {}; a build needs about {:.0} GiB",
            gib(free),
            target.display(),
            gib(WANTED_FREE)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output_is_read_in_kib() {
        let text = "Filesystem     1024-blocks      Used Available Capacity Mounted on\n\
                    /dev/vda         264212084  11529104  83756784      13% /\n";
        assert_eq!(parse_df(text), Some(83_756_784 * 1024));
        assert_eq!(parse_df("garbage"), None);
    }

    #[test]
    fn only_files_unused_for_two_days_are_removed() {
        let dir = std::env::temp_dir().join(format!("xtask-disk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("deps")).unwrap();
        std::fs::write(dir.join("deps/used"), b"12345").unwrap();
        // Seen from three days on, the file is stale; seen from now, it is not.
        let later = SystemTime::now() + Duration::from_secs(3 * 24 * 3600);
        assert_eq!(remove_stale(&dir, SystemTime::now()), 0);
        assert!(dir.join("deps/used").exists());
        assert_eq!(remove_stale(&dir, later), 5);
        assert!(!dir.join("deps/used").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
