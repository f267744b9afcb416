//! Signed checkpoints in the C2SP `tlog-checkpoint` format, carried in a C2SP `signed-note`.
//!
//! A checkpoint commits to a log: its origin (a unique name), its size and its Merkle root.
//!
//! ```text
//! example.com/causality/node-1
//! 42
//! qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=
//!
//! — example.com/causality/node-1 Az3grl+bZ8I3T5oNB5ZvgZ9pjmhhsTLq...
//! ```
//!
//! The signature line is `— <key name> <base64(key id ‖ Ed25519 signature)>`, where the key
//! id is the first 4 bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`. Verifier keys are
//! written `<name>+<key id hex>+<base64(0x01 ‖ public key)>`, as in Go's `sumdb/note`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use causality_hash::merkle::Hash;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::limits::{MAX_NOTE_LEN, MAX_NOTE_SIGNATURES};

const ALG_ED25519: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a checkpoint or note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The note text is not well formed.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// No signature line from the verifier's key.
    #[error("no signature from key {0}")]
    UnknownKey(String),
    /// A signature line from the verifier's key that does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    /// A key name or verifier key string that is not valid.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
}

/// A log state: origin, tree size and root hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique name of the log, e.g. `example.com/causality/node-1`.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Merkle root of the first `size` entries.
    pub root: Hash,
    /// Optional extension lines (no blank lines).
    pub extensions: Vec<String>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("size", &self.size)
            .field("root", &B64.encode(self.root))
            .finish()
    }
}

impl Checkpoint {
    /// The note body: origin, size, base64 root and extensions, one per line.
    pub fn body(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        text
    }

    pub(crate) fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let mut lines = body
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("body does not end in a newline"))?
            .split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or(CheckpointError::Malformed("missing origin"))?;
        let size = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing tree size"))?;
        if size.is_empty()
            || (size.len() > 1 && size.starts_with('0'))
            || !size.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(CheckpointError::Malformed(
                "tree size is not a decimal number",
            ));
        }
        let size = size
            .parse()
            .map_err(|_| CheckpointError::Malformed("tree size out of range"))?;
        let root = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing root hash"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "root hash is not 32 bytes of base64",
            ))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty line inside the body"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(key.as_bytes());
    h.finalize()[..4].try_into().expect("4 bytes")
}

fn check_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains(['+', ' ', '\n']) || name.chars().any(char::is_whitespace) {
        return Err(CheckpointError::InvalidKey(
            "key names are non-empty, without '+' or spaces",
        ));
    }
    Ok(())
}

/// Signs checkpoints with an Ed25519 key.
///
/// ```
/// use causality_log::{Checkpoint, CheckpointSigner};
///
/// let signer = CheckpointSigner::new("example.com/log", [7; 32]).unwrap();
/// let checkpoint = Checkpoint { origin: "example.com/log".into(), size: 3, root: [1; 32], extensions: vec![] };
/// let note = signer.sign(&checkpoint);
/// let verifier = signer.verifier();
/// assert_eq!(verifier.verify(&note).unwrap(), checkpoint);
/// assert!(verifier.verify(&note.replace("\n3\n", "\n4\n")).is_err());
/// ```
#[derive(Clone)]
pub struct CheckpointSigner {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// A signer named `name` with the Ed25519 secret key `secret`.
    pub fn new(name: &str, secret: [u8; 32]) -> Result<Self, CheckpointError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The signed note for `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{body}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// Checks notes signed by one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointVerifier {
    name: String,
    key: VerifyingKey,
}

impl CheckpointVerifier {
    /// Parses a verifier key `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
    pub fn parse(vkey: &str) -> Result<Self, CheckpointError> {
        let mut parts = vkey.split('+');
        let (Some(name), Some(id), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CheckpointError::InvalidKey("expected <name>+<id>+<key>"));
        };
        check_name(name)?;
        let key = B64
            .decode(key)
            .map_err(|_| CheckpointError::InvalidKey("key is not base64"))?;
        let [ALG_ED25519, rest @ ..] = key.as_slice() else {
            return Err(CheckpointError::InvalidKey("not an Ed25519 key"));
        };
        let bytes: [u8; 32] = rest
            .try_into()
            .map_err(|_| CheckpointError::InvalidKey("Ed25519 key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| CheckpointError::InvalidKey("not a valid Ed25519 point"))?;
        let expected: String = key_id(name, &key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if id != expected {
            return Err(CheckpointError::InvalidKey("key id does not match the key"));
        }
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Verifies `note` and returns the checkpoint it carries.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(CheckpointError::Malformed("note exceeds the size limit"));
        }
        let split = note.rfind("\n\n").ok_or(CheckpointError::Malformed(
            "no blank line before the signatures",
        ))?;
        let (body, sigs) = (&note[..=split], &note[split + 2..]);
        let sigs = sigs
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("note does not end in a newline"))?;
        let id = key_id(&self.name, &self.key);
        let mut seen = 0;
        let mut ours = None;
        for line in sigs.split('\n') {
            seen += 1;
            if seen > MAX_NOTE_SIGNATURES {
                return Err(CheckpointError::Malformed("too many signatures"));
            }
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or(CheckpointError::Malformed(
                    "signature line without the em dash prefix",
                ))?;
            let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::Malformed(
                "signature line without a key name",
            ))?;
            let blob = B64
                .decode(blob)
                .map_err(|_| CheckpointError::Malformed("signature is not base64"))?;
            if blob.len() < 4 {
                return Err(CheckpointError::Malformed(
                    "signature shorter than a key id",
                ));
            }
            if name == self.name && blob[..4] == id {
                ours = Some(blob);
            }
        }
        let blob = ours.ok_or_else(|| CheckpointError::UnknownKey(self.name.clone()))?;
        let signature = Signature::from_slice(&blob[4..])
            .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
        self.key
            .verify(body.as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
        Checkpoint::parse_body(body)
    }
}

impl fmt::Display for CheckpointVerifier {
    /// The verifier key string, as accepted by [`CheckpointVerifier::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id: String = key_id(&self.name, &self.key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{id}+{}", self.name, B64.encode(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/causality/test".into(),
            size: 1234,
            root: [9; 32],
            extensions: vec!["ext line".into()],
        }
    }

    #[test]
    fn round_trip_and_vkey() {
        let signer = CheckpointSigner::new("example.com/causality/test", [3; 32]).unwrap();
        let note = signer.sign(&checkpoint());
        assert!(note.starts_with("example.com/causality/test\n1234\n"));
        let vkey = signer.verifier().to_string();
        let verifier = CheckpointVerifier::parse(&vkey).unwrap();
        assert_eq!(verifier.verify(&note).unwrap(), checkpoint());
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused() {
        let signer = CheckpointSigner::new("a.example/log", [3; 32]).unwrap();
        let note = signer.sign(&checkpoint());
        let v = signer.verifier();
        let tampered = note.replace("1234", "1235");
        assert_eq!(
            v.verify(&tampered),
            Err(CheckpointError::BadSignature("a.example/log".into()))
        );
        let other = CheckpointSigner::new("a.example/log", [4; 32])
            .unwrap()
            .verifier();
        assert_eq!(
            other.verify(&note),
            Err(CheckpointError::UnknownKey("a.example/log".into()))
        );
        assert!(matches!(
            v.verify("garbage"),
            Err(CheckpointError::Malformed(_))
        ));
        assert!(matches!(
            v.verify(&note.replace('\u{2014}', "-")),
            Err(CheckpointError::Malformed(_))
        ));
        let vkey = v.to_string();
        let id_start = vkey.find('+').unwrap() + 1;
        let flipped = if &vkey[id_start..=id_start] == "0" {
            "1"
        } else {
            "0"
        };
        let mut wrong_id = vkey.clone();
        wrong_id.replace_range(id_start..=id_start, flipped);
        assert_eq!(
            CheckpointVerifier::parse(&wrong_id),
            Err(CheckpointError::InvalidKey("key id does not match the key"))
        );
        assert!(CheckpointSigner::new("has space", [0; 32]).is_err());
    }

    #[test]
    fn body_parsing_is_strict() {
        for bad in [
            "o\n01\nAAAA\n",
            "o\nx\nAAAA\n",
            "o\n1\nnotbase64!\n",
            "\n1\nAAAA\n",
            "o\n1\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }
}
