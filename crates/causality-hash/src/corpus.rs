//! Writes fuzzing seed corpora (used by the other crates' `fuzzing` modules; not part of
//! the hashing API).

use std::path::Path;

use crate::ContentId;

/// Writes each `(target, bytes)` seed as `root/<prefix>_<target>/<BLAKE3 hex>`, so that a
/// seed is written once whatever the order; returns how many files were new.
///
/// # Errors
/// When a directory or file cannot be written.
pub fn write_seeds(root: &Path, prefix: &str, seeds: &[(&str, Vec<u8>)]) -> std::io::Result<usize> {
    let mut written = 0;
    for (target, bytes) in seeds {
        let dir = root.join(format!("{prefix}_{target}"));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(ContentId::of(bytes).to_hex());
        if !path.exists() {
            std::fs::write(&path, bytes)?;
            written += 1;
        }
    }
    Ok(written)
}
