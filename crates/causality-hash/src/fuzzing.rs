//! What the other crates' `fuzzing` modules share: the round-trip contract, the checks a
//! fuzzer tries first (truncations and bit flips of a valid input), and writing seed
//! corpora. Tooling for the fuzz targets in `fuzz/`, not part of the hashing API.

use std::fmt::Debug;
use std::path::Path;

use crate::ContentId;

/// Decodes `data`; when that succeeds, checks that re-encoding the value and decoding
/// again gives the same value, and returns it. Panics (what a fuzzer reports) when not.
pub fn round_trip<T: PartialEq + Debug, E: Debug>(
    data: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Option<T> {
    let value = decode(data).ok()?;
    let again = decode(&encode(&value));
    assert_eq!(
        again.as_ref().ok(),
        Some(&value),
        "changed through a re-encoding"
    );
    Some(value)
}

/// `bytes` behind a selector byte (the targets that cover several decoders read it first).
pub fn selected(selector: u8, bytes: Vec<u8>) -> Vec<u8> {
    let mut seed = Vec::with_capacity(bytes.len() + 1);
    seed.push(selector);
    seed.extend(bytes);
    seed
}

/// Runs `check` on `seed`, on every truncation of it, and on every single bit flip from
/// bit `first_bit` on (8 keeps a selector byte intact).
pub fn neighbours(seed: &[u8], first_bit: usize, check: impl Fn(&[u8])) {
    check(seed);
    for cut in 0..seed.len() {
        check(&seed[..cut]);
    }
    let mut flipped = seed.to_vec();
    for bit in first_bit..seed.len() * 8 {
        flipped[bit / 8] ^= 1 << (bit % 8);
        check(&flipped);
        flipped[bit / 8] ^= 1 << (bit % 8);
    }
}

/// Writes each `(target, bytes)` seed of the crate at `manifest_dir` as
/// `fuzz/corpus/<prefix>_<target>/<BLAKE3 hex>` of the workspace, so that a seed is
/// written once whatever the order; returns how many files were new.
///
/// # Errors
/// When a directory or file cannot be written.
pub fn write_seeds(
    manifest_dir: &str,
    prefix: &str,
    seeds: &[(&str, Vec<u8>)],
) -> std::io::Result<usize> {
    let root = Path::new(manifest_dir).join("../../fuzz/corpus");
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
