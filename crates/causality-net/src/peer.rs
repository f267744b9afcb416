//! Peer identities: ed25519 keys, peer ids, and the identity file of a data directory.

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};

use crate::error::NetError;

/// The protobuf prefix libp2p puts before a 32-byte ed25519 key in an identity-multihash
/// peer id: multihash code 0x00 (identity), length 36, then `PublicKey { Type = Ed25519, Data }`.
const LIBP2P_ED25519_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// A peer's identity: its ed25519 public key.
///
/// The text form is the libp2p peer id of the same key (`12D3KooW…`), so operators see the
/// same id in our logs as in any libp2p tool.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; 32]);

/// Decompressed public keys kept per thread for signature checks.
const DECOMPRESSED_KEYS: usize = 4096;

/// The decompressed point of `key`, if it is one, from a per-thread cache of recent keys:
/// decoding a peer id and checking its signatures both need the point, and the same few
/// peers sign (and are named in) most messages. Invalid keys are not kept.
fn decompressed(key: &[u8; 32]) -> Option<VerifyingKey> {
    thread_local! {
        static KEYS: std::cell::RefCell<std::collections::HashMap<[u8; 32], VerifyingKey>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some(point) = keys.get(key) {
            return Some(*point);
        }
        let point = VerifyingKey::from_bytes(key).ok()?;
        if keys.len() >= DECOMPRESSED_KEYS {
            // A flood of fresh keys evicts everything at once: bounded, and honest peers'
            // keys come back on their next message.
            keys.clear();
        }
        keys.insert(*key, point);
        Some(point)
    })
}

impl PeerId {
    /// The peer id of a public key given as 32 bytes. Fails when the bytes are not a valid
    /// ed25519 point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NetError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| NetError::InvalidPeerId(format!("{} bytes, expected 32", bytes.len())))?;
        decompressed(&key)
            .ok_or_else(|| NetError::InvalidPeerId("not an ed25519 public key".into()))?;
        Ok(Self(key))
    }

    /// The 32 raw public-key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The peer id of an already decoded public key (no second point decompression).
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        Self(key.to_bytes())
    }

    /// The public key, for signature checks. Decompressing a point costs about as much as
    /// a third of a signature check, and the same few peers sign most messages, so recent
    /// keys are kept decompressed (per thread, at most 4,096).
    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        // Every PeerId is built from a valid key (see `from_bytes` and `Keypair`).
        decompressed(&self.0).expect("PeerId holds a valid ed25519 key")
    }

    /// Whether `signature` is this peer's valid ed25519 signature of `message` (strict
    /// verification: no malleable or small-order encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|sig| self.verifying_key().verify_strict(message, &sig).is_ok())
    }

    /// The bytes of the equivalent libp2p peer id (an identity multihash).
    pub fn to_libp2p_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(38);
        out.extend_from_slice(&LIBP2P_ED25519_PREFIX);
        out.extend_from_slice(&self.0);
        out
    }

    /// Parses the bytes of a libp2p peer id; only ed25519 identity ids convert.
    pub fn from_libp2p_bytes(bytes: &[u8]) -> Result<Self, NetError> {
        match bytes.strip_prefix(&LIBP2P_ED25519_PREFIX[..]) {
            Some(key) => Self::from_bytes(key),
            None => Err(NetError::InvalidPeerId(
                "not an ed25519 identity peer id".into(),
            )),
        }
    }

    /// A short form for logs: the last 8 characters of the text form.
    pub fn short(&self) -> String {
        let text = self.to_string();
        text[text.len().saturating_sub(8)..].to_owned()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.to_libp2p_bytes()).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|e| NetError::InvalidPeerId(format!("not base58: {e}")))?;
        Self::from_libp2p_bytes(&bytes)
    }
}

/// A node's ed25519 key pair.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

impl Keypair {
    /// A fresh key pair from `rng`.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self {
            signing: SigningKey::generate(rng),
        }
    }

    /// The key pair whose secret key is `secret` (32 bytes); deterministic, for tests and
    /// simulations.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// A deterministic key pair for simulation node `n`.
    pub fn from_index(n: u64) -> Self {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&n.to_le_bytes());
        secret[8..16].copy_from_slice(b"causalty");
        Self::from_secret(*blake3::hash(&secret).as_bytes())
    }

    /// The 32 secret-key bytes.
    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// This key pair's peer id.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Loads the identity stored at `path`, or creates one there when the file does not
    /// exist. The file holds the 32 secret bytes, mode 0600. Creation is atomic and
    /// exclusive: the key is written to a temporary file of a unique name, then linked into
    /// place only if no file is there yet, so processes racing to create an identity all
    /// end up with the one that won.
    pub fn load_or_create(path: &Path) -> Result<Self, NetError> {
        if let Some(keypair) = Self::load(path)? {
            return Ok(keypair);
        }
        let keypair = Self::generate(&mut rand::rngs::OsRng);
        let created = create_secret(path, &keypair.secret())
            .map_err(|e| NetError::Identity(format!("cannot write {}: {e}", path.display())))?;
        if created {
            return Ok(keypair);
        }
        // Another process created it first: use theirs.
        Self::load(path)?.ok_or_else(|| {
            NetError::Identity(format!("{} vanished while being created", path.display()))
        })
    }

    /// Loads the identity stored at `path`; `None` when there is no file (nothing is
    /// created). A file that is not a 32-byte secret is an error.
    pub fn load(path: &Path) -> Result<Option<Self>, NetError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    NetError::Identity(format!(
                        "{}: {} bytes, expected a 32-byte ed25519 secret key",
                        path.display(),
                        bytes.len()
                    ))
                })?;
                Ok(Some(Self::from_secret(secret)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NetError::Identity(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }
}

/// Writes `secret` to `path` unless a file is already there; `false` when one was.
fn create_secret(path: &Path, secret: &[u8; 32]) -> std::io::Result<bool> {
    use rand::RngCore as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::rngs::OsRng.next_u64()
    ));
    let tmp = std::path::PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(secret)?;
        file.sync_all()
    })();
    // A hard link fails when the target exists: an exclusive, atomic publish.
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_looks_like_libp2p() {
        let id = Keypair::from_index(7).peer_id();
        let text = id.to_string();
        assert!(text.starts_with("12D3KooW"), "{text}");
        assert_eq!(text.parse::<PeerId>().unwrap(), id);
        assert!("12D3KooWnotbase58!".parse::<PeerId>().is_err());
    }

    /// Processes (here threads) racing to create one identity all get the same key, and
    /// no temporary file is left behind. Before, each wrote `identity.tmp` and renamed it
    /// into place: the racers ran with different keys and the file held only one of them.
    #[test]
    fn racing_creators_agree_on_one_identity() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("identity.key");
            let barrier = std::sync::Barrier::new(8);
            let ids: Vec<PeerId> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            Keypair::load_or_create(&path).unwrap().peer_id()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
            assert_eq!(Keypair::load_or_create(&path).unwrap().peer_id(), ids[0]);
            let files = std::fs::read_dir(dir.path()).unwrap().count();
            assert_eq!(files, 1, "temporary files left behind");
        }
    }

    #[test]
    fn identity_file_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let a = Keypair::load_or_create(&path).unwrap();
        let b = Keypair::load_or_create(&path).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        std::fs::write(&path, b"short").unwrap();
        let err = Keypair::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("expected a 32-byte"), "{err}");
    }
}
