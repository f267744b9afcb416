//! Signed peer records.

use causality_net::{FeatureSet, Hello, Keypair, Multiaddr, Network, PeerId, ProtocolVersion};
use prost::Message as _;

use crate::error::RecordError;
use crate::proto::v1 as pb;

/// Prefix of the bytes a record signature covers.
pub const RECORD_DOMAIN: &[u8] = b"causality/peer-record/v1\0";
/// Most addresses in a record.
pub const MAX_ADDRESSES: usize = 16;
/// Longest address text.
pub const MAX_ADDRESS_LEN: usize = 256;
/// Most roles in a record.
pub const MAX_ROLES: usize = 16;
/// Longest role name.
pub const MAX_ROLE_LEN: usize = 32;
/// Largest encoded record.
pub const MAX_RECORD_BYTES: usize = 8 * 1024;

/// What a peer says about itself: where to reach it, what it speaks, what it offers, and
/// for how long the statement holds. Signed by the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// The peer.
    pub peer: PeerId,
    /// Where it listens.
    pub addresses: Vec<Multiaddr>,
    /// The protocol version it speaks.
    pub version: ProtocolVersion,
    /// Features it supports.
    pub features: FeatureSet,
    /// Roles it offers (`prover`, `verifier`, `executor`, `storage`, …).
    pub roles: Vec<String>,
    /// Capacity for weighted rendezvous, in thousandths.
    pub weight_milli: u32,
    /// Sequence number; higher replaces lower.
    pub seq: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_at_ms: u64,
    signature: Vec<u8>,
    encoded: Vec<u8>,
}

impl PeerRecord {
    /// Signs a record for `network`'s own peer.
    pub fn sign(
        network: &Network,
        addresses: Vec<Multiaddr>,
        roles: Vec<String>,
        weight_milli: u32,
        seq: u64,
        expires_at_ms: u64,
    ) -> Self {
        let fields = Fields {
            addresses,
            roles,
            weight_milli,
            seq,
            expires_at_ms,
        };
        Self::build(network.local_peer_id(), network.hello(), fields, |m| {
            network.sign(m)
        })
    }

    /// Signs a record with `keypair` directly (for tools and for tests of the state
    /// machine, which has no network).
    pub fn sign_with(
        keypair: &Keypair,
        hello: &Hello,
        addresses: Vec<Multiaddr>,
        roles: Vec<String>,
        weight_milli: u32,
        seq: u64,
        expires_at_ms: u64,
    ) -> Self {
        let fields = Fields {
            addresses,
            roles,
            weight_milli,
            seq,
            expires_at_ms,
        };
        Self::build(keypair.peer_id(), hello, fields, |m| keypair.sign(m))
    }

    fn build(
        peer: PeerId,
        hello: &Hello,
        fields: Fields,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Self {
        let Fields {
            addresses,
            roles,
            weight_milli,
            seq,
            expires_at_ms,
        } = fields;
        let mut message = pb::PeerRecord {
            peer_id: peer.as_bytes().to_vec(),
            addresses: addresses.iter().map(ToString::to_string).collect(),
            version: Some(hello.version.into()),
            features: hello.features.bits(),
            roles: roles.clone(),
            weight_milli,
            seq,
            expires_at_ms,
            signature: Vec::new(),
        };
        message.signature = sign(&signing_bytes(&message)).to_vec();
        Self {
            signature: message.signature.clone(),
            peer,
            addresses,
            version: hello.version,
            features: hello.features,
            roles,
            weight_milli,
            seq,
            expires_at_ms,
            encoded: message.encode_to_vec(),
        }
    }

    /// The weight as a float (1.0 = a standard peer).
    pub fn weight(&self) -> f64 {
        f64::from(self.weight_milli) / 1000.0
    }

    /// Whether the record offers `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The signed wire form.
    pub fn to_proto(&self) -> pb::PeerRecord {
        pb::PeerRecord::decode(self.encoded.as_slice()).expect("our own encoding decodes")
    }

    /// The signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The signed bytes.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// Checks a record received from the network: size, field limits, canonical encoding,
    /// signature, and expiry against `now_ms`.
    pub fn verify(record: &pb::PeerRecord, now_ms: u64) -> Result<Self, RecordError> {
        Self::verify_with(record, &decode_key(&record.peer_id)?, now_ms)
    }

    /// [`verify`](Self::verify) with the record's key already decoded (decoding it, a point
    /// decompression, costs about as much as half a signature check).
    pub(crate) fn verify_with(
        record: &pb::PeerRecord,
        key: &ed25519_dalek::VerifyingKey,
        now_ms: u64,
    ) -> Result<Self, RecordError> {
        if record.peer_id.as_slice() != key.as_bytes() {
            return Err(RecordError::BadPeerId);
        }
        let encoded = record.encode_to_vec();
        if encoded.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(encoded.len()));
        }
        if record.addresses.len() > MAX_ADDRESSES
            || record.addresses.iter().any(|a| a.len() > MAX_ADDRESS_LEN)
            || record.roles.len() > MAX_ROLES
            || record
                .roles
                .iter()
                .any(|r| r.is_empty() || r.len() > MAX_ROLE_LEN)
        {
            return Err(RecordError::Limits);
        }
        let peer = PeerId::from_verifying_key(key);
        let mut unsigned = record.clone();
        unsigned.signature = Vec::new();
        let verified = ed25519_dalek::Signature::from_slice(&record.signature)
            .is_ok_and(|sig| key.verify_strict(&signing_bytes(&unsigned), &sig).is_ok());
        if !verified {
            return Err(RecordError::BadSignature(peer));
        }
        if record.expires_at_ms <= now_ms {
            return Err(RecordError::Expired(peer));
        }
        let addresses = record
            .addresses
            .iter()
            .map(|a| {
                a.parse::<Multiaddr>()
                    .map_err(|_| RecordError::BadAddress(a.chars().take(64).collect()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let version: ProtocolVersion = record.version.ok_or(RecordError::Limits)?.into();
        Ok(Self {
            peer,
            addresses,
            version,
            features: FeatureSet::from_bits(record.features),
            roles: record.roles.clone(),
            weight_milli: record.weight_milli,
            seq: record.seq,
            expires_at_ms: record.expires_at_ms,
            signature: record.signature.clone(),
            encoded,
        })
    }
}

/// Decodes a record's peer id into its public key.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<ed25519_dalek::VerifyingKey, RecordError> {
    let key: [u8; 32] = bytes.try_into().map_err(|_| RecordError::BadPeerId)?;
    ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| RecordError::BadPeerId)
}

/// The signed fields of a record, besides identity and version.
struct Fields {
    addresses: Vec<Multiaddr>,
    roles: Vec<String>,
    weight_milli: u32,
    seq: u64,
    expires_at_ms: u64,
}

fn signing_bytes(unsigned: &pb::PeerRecord) -> Vec<u8> {
    let mut out = RECORD_DOMAIN.to_vec();
    unsigned.encode(&mut out).expect("a Vec grows");
    out
}

/// Verified records shared between the state machines of one process, keyed by the BLAKE3
/// digest of their signed bytes.
///
/// A record is a pure function of its bytes once its signature checked out, so a state
/// machine that meets bytes another already verified takes the shared copy: no second
/// key decompression or signature check, and one allocation for the whole process instead
/// of one per holder. Expiry, which depends on the clock, is still checked by each holder.
/// Entries are weak: a record nobody holds any more is forgotten at the next sweep, so the
/// cache never holds more than the live records plus what dropped since the last sweep.
///
/// ```
/// use causality_discovery::{PeerRecord, RecordCache};
/// use causality_net::{default_hello, Keypair};
///
/// let keypair = Keypair::from_secret([7; 32]);
/// let record = PeerRecord::sign_with(&keypair, &default_hello(), vec![], vec![], 1000, 1, u64::MAX);
/// let cache = RecordCache::new();
/// let first = cache.verify(&record.to_proto(), 2).unwrap();
/// let second = cache.verify(&record.to_proto(), 2).unwrap();
/// assert!(std::sync::Arc::ptr_eq(&first, &second));
/// assert_eq!(cache.len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct RecordCache(std::sync::Arc<std::sync::Mutex<CacheInner>>);

#[derive(Debug, Default)]
struct CacheInner {
    records: std::collections::HashMap<[u8; 32], std::sync::Weak<PeerRecord>>,
    /// Sweep dead entries when the map grows past this.
    sweep_at: usize,
}

impl RecordCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // The map stays consistent whatever a panicking holder was doing.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The digest a record is cached under, and the shared copy when there is one.
    pub(crate) fn lookup(
        &self,
        record: &pb::PeerRecord,
    ) -> ([u8; 32], Option<std::sync::Arc<PeerRecord>>) {
        let digest = *causality_hash::ContentId::of(&record.encode_to_vec()).as_bytes();
        let found = self
            .lock()
            .records
            .get(&digest)
            .and_then(std::sync::Weak::upgrade);
        (digest, found)
    }

    /// Shares a record just verified under `digest`.
    pub(crate) fn share(&self, digest: [u8; 32], record: &std::sync::Arc<PeerRecord>) {
        let mut inner = self.lock();
        inner
            .records
            .insert(digest, std::sync::Arc::downgrade(record));
        if inner.records.len() >= inner.sweep_at {
            inner.records.retain(|_, r| r.strong_count() > 0);
            inner.sweep_at = (inner.records.len() * 2).max(1024);
        }
    }

    /// [`PeerRecord::verify`] through the cache: the shared copy when these bytes were
    /// verified before (expiry checked again against `now_ms`), else a verified new one.
    pub fn verify(
        &self,
        record: &pb::PeerRecord,
        now_ms: u64,
    ) -> Result<std::sync::Arc<PeerRecord>, RecordError> {
        let (digest, found) = self.lookup(record);
        if let Some(found) = found {
            if found.expires_at_ms <= now_ms {
                return Err(RecordError::Expired(found.peer));
            }
            return Ok(found);
        }
        let verified = std::sync::Arc::new(PeerRecord::verify(record, now_ms)?);
        self.share(digest, &verified);
        Ok(verified)
    }
}
