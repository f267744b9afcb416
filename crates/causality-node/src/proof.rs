//! `causality-node proof verify` and `proof import`: Groth16 proofs checked offline.
//!
//! Each input file is read in whichever of its forms it is in, told apart by content:
//! - snarkjs/circom JSON (`verification_key.json`, `proof.json`, `public.json`);
//! - the node's own form, the messages proof sharing puts on the wire: a
//!   `causality.proofshare.v1.VerificationKey` (system and compressed key; its content id
//!   is what proofs name) and a `causality.proofshare.v1.Proof` (key id, system, public
//!   inputs and compressed proof) — what `proof import` writes;
//! - arkworks' bare compressed bytes: a verification key, a 128-byte proof, and public
//!   inputs as 32-byte little-endian scalars one after another.
//!
//! A proof in the node's form carries its public inputs; any other needs `--public`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use causality_proofshare::groth16::{FR_BYTES, snarkjs};
use causality_proofshare::{Claim, Limits, ProofMessage, ProofSystem, VerificationKey, Verifiers};

/// Files larger than this are refused before they are read whole.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why a proof is not accepted: the reason printed after `invalid:`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid(pub(crate) String);

/// A file's bytes, refused when it is too large to be a key or a proof.
fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?
        .len();
    if size > MAX_FILE_BYTES {
        bail!(
            "{what} {}: {size} bytes, more than a {what} can be ({MAX_FILE_BYTES})",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("{what} {}: cannot read it", path.display()))
}

/// JSON when the first byte that is not white space opens an object or an array and the
/// whole parses (binary forms may start with `[` or `{` too).
fn json(bytes: &[u8]) -> Option<&str> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(first, b'{' | b'[') {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok()
        .then_some(text)
}

/// A verification key from any of its forms.
pub(crate) fn key(bytes: &[u8]) -> Result<VerificationKey, Invalid> {
    if let Some(text) = json(bytes) {
        let key =
            snarkjs::import_key(text).map_err(|e| Invalid(format!("verification key: {e}")))?;
        return Ok(VerificationKey {
            system: ProofSystem::GROTH16_BN254,
            key,
        });
    }
    match VerificationKey::decode(bytes, &Limits::default()) {
        // A bare arkworks key is not a valid message of known system by accident: its
        // first byte would have to be a field tag, and the system a registered one.
        Ok(key) if Verifiers::standard().systems().contains(&key.system) => Ok(key),
        _ => Ok(VerificationKey {
            system: ProofSystem::GROTH16_BN254,
            key: bytes.to_vec(),
        }),
    }
}

/// Public inputs from JSON or from concatenated 32-byte scalars.
pub(crate) fn public(bytes: &[u8]) -> Result<Vec<Vec<u8>>, Invalid> {
    if let Some(text) = json(bytes) {
        return snarkjs::import_public(text).map_err(|e| Invalid(format!("public inputs: {e}")));
    }
    if !bytes.len().is_multiple_of(FR_BYTES) {
        return Err(Invalid(format!(
            "public inputs: {} bytes is not a whole number of {FR_BYTES}-byte scalars",
            bytes.len()
        )));
    }
    Ok(bytes.chunks(FR_BYTES).map(<[u8]>::to_vec).collect())
}

/// What a proof file holds: a bare proof, or the node's message with its inputs and key id.
pub(crate) enum ProofFile {
    /// Compressed proof bytes (from JSON or bare).
    Bare(Vec<u8>),
    /// A proof message.
    Message(ProofMessage),
}

/// A proof from any of its forms.
pub(crate) fn proof(bytes: &[u8]) -> Result<ProofFile, Invalid> {
    if let Some(text) = json(bytes) {
        return snarkjs::import_proof(text)
            .map(ProofFile::Bare)
            .map_err(|e| Invalid(format!("proof: {e}")));
    }
    if bytes.len() == causality_proofshare::groth16::PROOF_BYTES {
        return Ok(ProofFile::Bare(bytes.to_vec()));
    }
    ProofMessage::decode(bytes, &Limits::default())
        .map(ProofFile::Message)
        .map_err(|e| Invalid(format!("proof: {e}")))
}

/// Checks `proof` under `key`, with `public` replacing the proof message's inputs when given.
pub(crate) fn check(
    key: &VerificationKey,
    proof: ProofFile,
    public: Option<Vec<Vec<u8>>>,
) -> Result<(), Invalid> {
    let (proof, system, inputs) = match proof {
        ProofFile::Bare(bytes) => {
            let inputs = public.ok_or_else(|| {
                Invalid("the proof carries no public inputs: give them with --public".into())
            })?;
            (bytes, ProofSystem::GROTH16_BN254, inputs)
        }
        ProofFile::Message(message) => {
            if message.verification_key_id != key.id() {
                return Err(Invalid(format!(
                    "the proof is for verification key {}, the key given is {}",
                    message.verification_key_id,
                    key.id()
                )));
            }
            let inputs = public.unwrap_or(message.public_inputs);
            (message.proof_data, message.system, inputs)
        }
    };
    if system != key.system {
        return Err(Invalid(format!(
            "the proof is for {system}, the verification key for {}",
            key.system
        )));
    }
    let prepared = Verifiers::standard()
        .prepare(key.system, &key.key)
        .map_err(|e| Invalid(format!("verification key: {e}")))?;
    prepared
        .verify(Claim {
            proof: &proof,
            public_inputs: &inputs,
        })
        .map_err(|e| Invalid(e.to_string()))
}

/// `proof verify`: prints `valid` (exit 0) or `invalid: <reason>` (exit 1); a file that
/// cannot be read is an error (exit 2 through the caller).
pub(crate) fn verify(vk: &Path, proof_path: &Path, public_path: Option<&Path>) -> Result<ExitCode> {
    let key_bytes = read(vk, "verification key")?;
    let proof_bytes = read(proof_path, "proof")?;
    let public_bytes = public_path.map(|p| read(p, "public inputs")).transpose()?;
    let outcome = (|| {
        let key = key(&key_bytes)?;
        let proof = proof(&proof_bytes)?;
        let public = public_bytes.as_deref().map(public).transpose()?;
        check(&key, proof, public)
    })();
    match outcome {
        Ok(()) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(Invalid(reason)) => {
            println!("invalid: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `proof import`: converts snarkjs JSON into the node's form, `OUT/key.bin` and
/// `OUT/proof.bin`, after checking that the proof verifies. Prints both ids.
pub(crate) fn import(
    vk: &Path,
    proof_path: &Path,
    public_path: &Path,
    out: &PathBuf,
) -> Result<()> {
    let text = |path: &Path, what: &str| -> Result<String> {
        String::from_utf8(read(path, what)?)
            .with_context(|| format!("{what} {}: not UTF-8 JSON", path.display()))
    };
    let bundle = snarkjs::import(
        &text(vk, "verification key")?,
        &text(proof_path, "proof")?,
        &text(public_path, "public inputs")?,
    )
    .context("cannot import the snarkjs files")?;
    let key = VerificationKey {
        system: ProofSystem::GROTH16_BN254,
        key: bundle.verification_key,
    };
    let message = ProofMessage::new(
        key.id(),
        key.system,
        bundle.public_inputs,
        bundle.proof,
        Default::default(),
    )
    .context("cannot build the proof message")?;
    if let Err(Invalid(reason)) = check(&key, ProofFile::Message(message.clone()), None) {
        bail!("the proof does not verify, nothing written: {reason}");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomically(&out.join("key.bin"), &key.encode())?;
    write_atomically(&out.join("proof.bin"), &message.encode())?;
    println!("key   {} {}", key.id(), out.join("key.bin").display());
    println!(
        "proof {} {}",
        message.proof_id,
        out.join("proof.bin").display()
    );
    Ok(())
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut file, bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
