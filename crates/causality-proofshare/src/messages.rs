//! Proof sharing's domain types and wire messages (`proto/causality/proofshare/v1`):
//! canonical encodings, content ids checked on receipt, and decoding with every size
//! bounded by [`Limits`] before anything is allocated for it.

use std::collections::BTreeMap;

use causality_hash::ContentId;
use causality_net::{Keypair, PeerId};
use prost::Message as _;

use crate::proto::v1 as pb;
use crate::system::ProofSystem;

/// Every size limit of the protocol, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a proof's `proof_data` (default 256 KiB: Groth16 needs 128, STARKs more).
    pub max_proof_bytes: usize,
    /// Public inputs per proof (default 1024).
    pub max_public_inputs: usize,
    /// Bytes of one public input (default 64).
    pub max_input_bytes: usize,
    /// Metadata entries per proof (default 32).
    pub max_metadata_entries: usize,
    /// Bytes of all metadata keys and values together (default 4 KiB).
    pub max_metadata_bytes: usize,
    /// Bytes of a verification key (default 64 KiB: Groth16/BN254 with 1024 inputs is 33 KB).
    pub max_key_bytes: usize,
    /// Ids in one inventory answer (default 1024).
    pub max_inventory: usize,
    /// Proofs in one batch (default 1024).
    pub max_batch_proofs: usize,
    /// Bytes of one batch's encoding (default 4 MiB).
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_proof_bytes: 256 << 10,
            max_public_inputs: 1024,
            max_input_bytes: 64,
            max_metadata_entries: 32,
            max_metadata_bytes: 4 << 10,
            max_key_bytes: 64 << 10,
            max_inventory: 1024,
            max_batch_proofs: 1024,
            max_batch_bytes: 4 << 20,
        }
    }
}

impl Limits {
    /// The largest encoded proof these limits allow.
    pub fn max_proof_message(&self) -> usize {
        self.max_proof_bytes
            + self.max_public_inputs * (self.max_input_bytes + 4)
            + self.max_metadata_bytes
            + self.max_metadata_entries * 8
            + 128
    }

    /// The largest request or response body.
    pub fn max_body(&self) -> usize {
        self.max_proof_message()
            .max(self.max_key_bytes + 64)
            .max(self.max_inventory * 48 + 64)
            .max(lz4_flex::block::get_maximum_output_size(self.max_batch_bytes) + 64)
    }
}

/// Why a proof-sharing message was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// Larger than its limit.
    #[error("{what} of {size} is over the limit of {limit}")]
    TooLarge {
        /// Which part.
        what: &'static str,
        /// Its size (bytes or count).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid protobuf message, or a field of the wrong shape.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A metadata value that is not canonical JSON.
    #[error("metadata `{0}` is not canonical JSON")]
    Metadata(String),
    /// A body that does not hash to the id it came under.
    #[error("content {actual} does not match the id {expected}")]
    IdMismatch {
        /// The id asked for or announced.
        expected: ContentId,
        /// The id of what came.
        actual: ContentId,
    },
    /// An acknowledgement whose signature does not verify.
    #[error("acknowledgement signature does not verify")]
    BadSignature,
}

fn malformed(e: impl std::fmt::Display) -> MessageError {
    MessageError::Malformed(e.to_string())
}

fn cap(what: &'static str, size: usize, limit: usize) -> Result<(), MessageError> {
    if size > limit {
        return Err(MessageError::TooLarge { what, size, limit });
    }
    Ok(())
}

fn content_id(bytes: &[u8]) -> Result<ContentId, MessageError> {
    ContentId::from_slice(bytes).map_err(malformed)
}

/// A verification key: its system and its bytes in that system's encoding. Its id is the
/// BLAKE3 of its canonical encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationKey {
    /// The proof system.
    pub system: ProofSystem,
    /// The key's bytes.
    pub key: Vec<u8>,
}

impl VerificationKey {
    /// The key's canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The key's content id.
    pub fn id(&self) -> ContentId {
        ContentId::of(&self.encode())
    }

    pub(crate) fn to_proto(&self) -> pb::VerificationKey {
        pb::VerificationKey {
            system: self.system.0,
            key: self.key.clone(),
        }
    }

    pub(crate) fn from_proto(
        p: pb::VerificationKey,
        limits: &Limits,
    ) -> Result<Self, MessageError> {
        cap("verification key", p.key.len(), limits.max_key_bytes)?;
        Ok(Self {
            system: ProofSystem(p.system),
            key: p.key,
        })
    }

    /// Decodes a key, bounded by `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, MessageError> {
        cap(
            "verification key message",
            bytes.len(),
            limits.max_key_bytes + 64,
        )?;
        Self::from_proto(
            pb::VerificationKey::decode(bytes).map_err(malformed)?,
            limits,
        )
    }
}

/// A proof with what it proves: the key it verifies under, its public inputs, the proof
/// bytes and application metadata. `proof_id` is the BLAKE3 of the canonical encoding of
/// everything else, so it is computed, never trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofMessage {
    /// The proof's content id.
    pub proof_id: ContentId,
    /// The id of its verification key.
    pub verification_key_id: ContentId,
    /// Its proof system.
    pub system: ProofSystem,
    /// Public inputs, in order, in the system's encoding.
    pub public_inputs: Vec<Vec<u8>>,
    /// The proof bytes.
    pub proof_data: Vec<u8>,
    /// Ordered string keys → JSON values.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl ProofMessage {
    /// A proof message, its id computed. Fails when it is over `Limits::default()`.
    pub fn new(
        verification_key_id: ContentId,
        system: ProofSystem,
        public_inputs: Vec<Vec<u8>>,
        proof_data: Vec<u8>,
        metadata: BTreeMap<String, serde_json::Value>,
    ) -> Result<Self, MessageError> {
        let mut message = Self {
            proof_id: ContentId::of(&[]),
            verification_key_id,
            system,
            public_inputs,
            proof_data,
            metadata,
        };
        let proto = message.to_proto();
        Self::check(&proto, &Limits::default())?;
        message.proof_id = ContentId::of(&proto.encode_to_vec());
        Ok(message)
    }

    /// The canonical encoding (what `proof_id` hashes).
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    pub(crate) fn to_proto(&self) -> pb::Proof {
        pb::Proof {
            verification_key_id: self.verification_key_id.as_bytes().to_vec(),
            system: self.system.0,
            public_inputs: self.public_inputs.clone(),
            proof_data: self.proof_data.clone(),
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        }
    }

    fn check(p: &pb::Proof, limits: &Limits) -> Result<(), MessageError> {
        cap("proof", p.proof_data.len(), limits.max_proof_bytes)?;
        cap(
            "public inputs",
            p.public_inputs.len(),
            limits.max_public_inputs,
        )?;
        for input in &p.public_inputs {
            cap("public input", input.len(), limits.max_input_bytes)?;
        }
        cap(
            "metadata entries",
            p.metadata.len(),
            limits.max_metadata_entries,
        )?;
        let bytes: usize = p.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        cap("metadata", bytes, limits.max_metadata_bytes)
    }

    /// A proof from its wire form: bounded, metadata canonical, id computed.
    pub(crate) fn from_proto(p: pb::Proof, limits: &Limits) -> Result<Self, MessageError> {
        Self::check(&p, limits)?;
        let proof_id = ContentId::of(&p.encode_to_vec());
        let mut metadata = BTreeMap::new();
        for (k, text) in &p.metadata {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|_| MessageError::Metadata(k.clone()))?;
            // One text per value, so one id per proof.
            if serde_json::to_string(&value).ok().as_deref() != Some(text.as_str()) {
                return Err(MessageError::Metadata(k.clone()));
            }
            metadata.insert(k.clone(), value);
        }
        Ok(Self {
            proof_id,
            verification_key_id: content_id(&p.verification_key_id)?,
            system: ProofSystem(p.system),
            public_inputs: p.public_inputs,
            proof_data: p.proof_data,
            metadata,
        })
    }

    /// Decodes a proof, bounded by `limits`, and computes its id.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, MessageError> {
        cap("proof message", bytes.len(), limits.max_proof_message())?;
        Self::from_proto(pb::Proof::decode(bytes).map_err(malformed)?, limits)
    }

    /// The encoded size.
    pub fn encoded_len(&self) -> usize {
        self.to_proto().encoded_len()
    }
}

/// What gossip carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// A small proof, whole.
    Inline(ProofMessage),
    /// A proof announced by id, to be pulled.
    Reference {
        /// The proof's id.
        proof_id: ContentId,
        /// Its key's id.
        verification_key_id: ContentId,
        /// Its encoded size (a hint).
        size: u64,
    },
    /// A batch announced by id, to be pulled.
    Batch {
        /// The batch's id.
        batch_id: ContentId,
        /// The key all its proofs verify under.
        verification_key_id: ContentId,
        /// The Merkle root over its proof ids.
        root: [u8; 32],
        /// How many proofs it holds.
        count: u32,
        /// Its encoded size (a hint).
        size: u64,
    },
    /// A verifier's signed statement that it verified one part of a batch.
    Attestation {
        /// The batch.
        batch_id: ContentId,
        /// Its key.
        verification_key_id: ContentId,
        /// Which part.
        part: u32,
        /// Signed over [`part_id`]`(batch_id, part)`.
        ack: Ack,
    },
}

/// The id a part of a batch is attested under.
pub fn part_id(batch_id: &ContentId, part: u32) -> ContentId {
    let mut bytes = b"causality/proofshare/part/v1".to_vec();
    bytes.extend_from_slice(batch_id.as_bytes());
    bytes.extend_from_slice(&part.to_le_bytes());
    ContentId::of(&bytes)
}

impl Announcement {
    /// The key it is announced under.
    pub fn verification_key_id(&self) -> ContentId {
        match self {
            Self::Inline(p) => p.verification_key_id,
            Self::Reference {
                verification_key_id,
                ..
            }
            | Self::Batch {
                verification_key_id,
                ..
            }
            | Self::Attestation {
                verification_key_id,
                ..
            } => *verification_key_id,
        }
    }

    /// The proof's id.
    pub fn proof_id(&self) -> ContentId {
        match self {
            Self::Inline(p) => p.proof_id,
            Self::Reference { proof_id, .. } => *proof_id,
            Self::Batch { batch_id, .. } | Self::Attestation { batch_id, .. } => *batch_id,
        }
    }

    /// Its encoding.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            Self::Inline(p) => pb::announcement::Kind::Inline(p.to_proto()),
            Self::Reference {
                proof_id,
                verification_key_id,
                size,
            } => pb::announcement::Kind::Reference(pb::ProofRef {
                proof_id: proof_id.as_bytes().to_vec(),
                verification_key_id: verification_key_id.as_bytes().to_vec(),
                size: *size,
            }),
            Self::Batch {
                batch_id,
                verification_key_id,
                root,
                count,
                size,
            } => pb::announcement::Kind::Batch(pb::BatchRef {
                batch_id: batch_id.as_bytes().to_vec(),
                verification_key_id: verification_key_id.as_bytes().to_vec(),
                root: root.to_vec(),
                count: *count,
                size: *size,
            }),
            Self::Attestation {
                batch_id,
                verification_key_id,
                part,
                ack,
            } => pb::announcement::Kind::Attestation(pb::Attestation {
                batch_id: batch_id.as_bytes().to_vec(),
                verification_key_id: verification_key_id.as_bytes().to_vec(),
                part: *part,
                ack: Some(ack.to_proto()),
            }),
        };
        pb::Announcement { kind: Some(kind) }.encode_to_vec()
    }

    /// Decodes an announcement, bounded by `limits`.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, MessageError> {
        cap("announcement", bytes.len(), limits.max_proof_message() + 16)?;
        match pb::Announcement::decode(bytes).map_err(malformed)?.kind {
            Some(pb::announcement::Kind::Inline(p)) => {
                Ok(Self::Inline(ProofMessage::from_proto(p, limits)?))
            }
            Some(pb::announcement::Kind::Reference(r)) => Ok(Self::Reference {
                proof_id: content_id(&r.proof_id)?,
                verification_key_id: content_id(&r.verification_key_id)?,
                size: r.size,
            }),
            Some(pb::announcement::Kind::Batch(b)) => Ok(Self::Batch {
                batch_id: content_id(&b.batch_id)?,
                verification_key_id: content_id(&b.verification_key_id)?,
                root: b
                    .root
                    .as_slice()
                    .try_into()
                    .map_err(|_| malformed("batch root is not 32 bytes"))?,
                count: b.count,
                size: b.size,
            }),
            Some(pb::announcement::Kind::Attestation(a)) => {
                let batch_id = content_id(&a.batch_id)?;
                let ack = Ack::from_proto(
                    a.ack
                        .ok_or_else(|| malformed("attestation without an ack"))?,
                )?;
                if ack.proof_id != part_id(&batch_id, a.part) {
                    return Err(malformed("attestation signed over another part"));
                }
                Ok(Self::Attestation {
                    batch_id,
                    verification_key_id: content_id(&a.verification_key_id)?,
                    part: a.part,
                    ack,
                })
            }
            None => Err(malformed("announcement without a kind")),
        }
    }
}

/// Many proofs under one key, shipped as one object: the key id and system once, then each
/// proof's own fields. Its id is the BLAKE3 of its canonical encoding; its root commits to
/// its proof ids in order (a Merkle tree of `causality-hash`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The key every proof verifies under.
    pub verification_key_id: ContentId,
    /// Their system.
    pub system: ProofSystem,
    /// The proofs, in order.
    pub proofs: Vec<ProofMessage>,
}

impl Batch {
    /// A batch of `proofs`, which must be at least one, all under one key and system, and
    /// within `Limits::default()`.
    pub fn new(proofs: Vec<ProofMessage>) -> Result<Self, MessageError> {
        let limits = Limits::default();
        let first = proofs
            .first()
            .ok_or_else(|| malformed("a batch needs at least one proof"))?;
        let (verification_key_id, system) = (first.verification_key_id, first.system);
        if proofs
            .iter()
            .any(|p| p.verification_key_id != verification_key_id || p.system != system)
        {
            return Err(malformed("a batch's proofs share one key and system"));
        }
        cap("batch", proofs.len(), limits.max_batch_proofs)?;
        let batch = Self {
            verification_key_id,
            system,
            proofs,
        };
        cap(
            "batch encoding",
            batch.to_proto().encoded_len(),
            limits.max_batch_bytes,
        )?;
        Ok(batch)
    }

    fn to_proto(&self) -> pb::Batch {
        pb::Batch {
            verification_key_id: self.verification_key_id.as_bytes().to_vec(),
            system: self.system.0,
            entries: self
                .proofs
                .iter()
                .map(|p| {
                    let p = p.to_proto();
                    pb::BatchEntry {
                        public_inputs: p.public_inputs,
                        proof_data: p.proof_data,
                        metadata: p.metadata,
                    }
                })
                .collect(),
        }
    }

    /// The canonical encoding (what the id hashes).
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// The batch's content id.
    pub fn id(&self) -> ContentId {
        ContentId::of(&self.encode())
    }

    /// The Merkle root over the proof ids, in order.
    pub fn root(&self) -> [u8; 32] {
        let mut tree = causality_hash::merkle::MerkleTree::new();
        for p in &self.proofs {
            tree.push(causality_hash::merkle::leaf_hash(p.proof_id.as_bytes()));
        }
        tree.root()
    }

    /// Decodes a batch, bounded by `limits`; every proof's id is computed.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, MessageError> {
        cap("batch encoding", bytes.len(), limits.max_batch_bytes)?;
        let b = pb::Batch::decode(bytes).map_err(malformed)?;
        cap("batch", b.entries.len(), limits.max_batch_proofs)?;
        if b.entries.is_empty() {
            return Err(malformed("empty batch"));
        }
        let verification_key_id = content_id(&b.verification_key_id)?;
        let proofs = b
            .entries
            .into_iter()
            .map(|e| {
                ProofMessage::from_proto(
                    pb::Proof {
                        verification_key_id: b.verification_key_id.clone(),
                        system: b.system,
                        public_inputs: e.public_inputs,
                        proof_data: e.proof_data,
                        metadata: e.metadata,
                    },
                    limits,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            verification_key_id,
            system: ProofSystem(b.system),
            proofs,
        })
    }
}

/// Packs a batch encoding for the wire: LZ4 when that makes it smaller.
pub(crate) fn pack(encoding: &[u8]) -> pb::PackedBatch {
    let compressed = lz4_flex::block::compress(encoding);
    if compressed.len() < encoding.len() {
        pb::PackedBatch {
            codec: 1,
            size: encoding.len() as u64,
            data: compressed,
        }
    } else {
        pb::PackedBatch {
            codec: 0,
            size: encoding.len() as u64,
            data: encoding.to_vec(),
        }
    }
}

/// Unpacks a batch encoding, refusing sizes over `limits` before decompressing.
pub(crate) fn unpack(packed: pb::PackedBatch, limits: &Limits) -> Result<Vec<u8>, MessageError> {
    let size = usize::try_from(packed.size).unwrap_or(usize::MAX);
    cap("batch encoding", size, limits.max_batch_bytes)?;
    let data = match packed.codec {
        0 => packed.data,
        1 => lz4_flex::block::decompress(&packed.data, size).map_err(malformed)?,
        other => return Err(malformed(format!("unknown batch codec {other}"))),
    };
    if data.len() != size {
        return Err(malformed("batch size does not match its encoding"));
    }
    Ok(data)
}

/// The domain an acknowledgement's signature is made in.
pub const ACK_DOMAIN: &[u8] = b"causality/proof-ack/v1\0";

/// A verifier's signed statement that a proof verified. Anyone can check it; a node may
/// count acks from distinct verifiers (see `AcceptPolicy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The proof.
    pub proof_id: ContentId,
    /// Who verified it.
    pub verifier: PeerId,
    /// When (ms since the Unix epoch, the verifier's clock).
    pub verified_at_ms: u64,
    /// Ed25519 by `verifier` over [`ACK_DOMAIN`] ‖ the encoding with no signature.
    pub signature: [u8; 64],
}

impl Ack {
    fn unsigned(proof_id: ContentId, verifier: PeerId, verified_at_ms: u64) -> pb::Ack {
        pb::Ack {
            proof_id: proof_id.as_bytes().to_vec(),
            verifier: verifier.as_bytes().to_vec(),
            verified_at_ms,
            signature: Vec::new(),
        }
    }

    fn signing_bytes(unsigned: &pb::Ack) -> Vec<u8> {
        let mut bytes = ACK_DOMAIN.to_vec();
        unsigned.encode(&mut bytes).expect("a Vec grows");
        bytes
    }

    /// Signs an acknowledgement of `proof_id` with `keypair`.
    pub fn sign(keypair: &Keypair, proof_id: ContentId, verified_at_ms: u64) -> Self {
        let unsigned = Self::unsigned(proof_id, keypair.peer_id(), verified_at_ms);
        Self {
            proof_id,
            verifier: keypair.peer_id(),
            verified_at_ms,
            signature: keypair.sign(&Self::signing_bytes(&unsigned)),
        }
    }

    /// Whether the signature is the verifier's.
    pub fn verify(&self) -> Result<(), MessageError> {
        let unsigned = Self::unsigned(self.proof_id, self.verifier, self.verified_at_ms);
        if self
            .verifier
            .verify(&Self::signing_bytes(&unsigned), &self.signature)
        {
            Ok(())
        } else {
            Err(MessageError::BadSignature)
        }
    }

    pub(crate) fn to_proto(&self) -> pb::Ack {
        pb::Ack {
            signature: self.signature.to_vec(),
            ..Self::unsigned(self.proof_id, self.verifier, self.verified_at_ms)
        }
    }

    /// An acknowledgement from its wire form, its signature checked.
    pub(crate) fn from_proto(p: pb::Ack) -> Result<Self, MessageError> {
        let ack = Self {
            proof_id: content_id(&p.proof_id)?,
            verifier: PeerId::from_bytes(&p.verifier).map_err(malformed)?,
            verified_at_ms: p.verified_at_ms,
            signature: p
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| malformed("signature is not 64 bytes"))?,
        };
        ack.verify()?;
        Ok(ack)
    }

    /// Its encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Decodes and checks an acknowledgement.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        cap("ack", bytes.len(), 256)?;
        Self::from_proto(pb::Ack::decode(bytes).map_err(malformed)?)
    }
}

/// Acknowledgements in one request, at most.
pub const MAX_ACKS_PER_REQUEST: usize = 64;

/// The largest request body: 64 acknowledgements of ~140 bytes each.
pub const MAX_REQUEST_BYTES: usize = 16 << 10;

/// A request body, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    Proof(ContentId),
    Key(ContentId),
    Acks(Vec<Ack>),
    Batch(ContentId),
    Inventory {
        key: ContentId,
        since_ms: u64,
        limit: usize,
    },
}

impl Request {
    pub(crate) fn encode(&self) -> Vec<u8> {
        use pb::request::Kind;
        let kind = match self {
            Self::Proof(id) => Kind::Proof(id.as_bytes().to_vec()),
            Self::Key(id) => Kind::VerificationKey(id.as_bytes().to_vec()),
            Self::Batch(id) => Kind::Batch(id.as_bytes().to_vec()),
            Self::Acks(acks) => Kind::Acks(pb::Acks {
                acks: acks.iter().map(Ack::to_proto).collect(),
            }),
            Self::Inventory {
                key,
                since_ms,
                limit,
            } => Kind::Inventory(pb::Inventory {
                verification_key_id: key.as_bytes().to_vec(),
                since_ms: *since_ms,
                limit: u32::try_from(*limit).unwrap_or(u32::MAX),
            }),
        };
        pb::Request { kind: Some(kind) }.encode_to_vec()
    }

    pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, MessageError> {
        use pb::request::Kind;
        cap("request", bytes.len(), MAX_REQUEST_BYTES)?;
        Ok(match pb::Request::decode(bytes).map_err(malformed)?.kind {
            Some(Kind::Proof(id)) => Self::Proof(content_id(&id)?),
            Some(Kind::VerificationKey(id)) => Self::Key(content_id(&id)?),
            Some(Kind::Batch(id)) => Self::Batch(content_id(&id)?),
            Some(Kind::Acks(acks)) => {
                cap("acks", acks.acks.len(), MAX_ACKS_PER_REQUEST)?;
                Self::Acks(
                    acks.acks
                        .into_iter()
                        .map(Ack::from_proto)
                        .collect::<Result<_, _>>()?,
                )
            }
            Some(Kind::Inventory(i)) => Self::Inventory {
                key: content_id(&i.verification_key_id)?,
                since_ms: i.since_ms,
                limit: (i.limit as usize).min(limits.max_inventory),
            },
            None => return Err(malformed("request without a kind")),
        })
    }
}

/// A response body, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Response {
    Proof(ProofMessage),
    Key(VerificationKey),
    Acked,
    /// A batch's encoding (packed on the wire).
    Batch(Vec<u8>),
    Ids {
        ids: Vec<(ContentId, u64)>,
        more: bool,
    },
    NotFound,
}

impl Response {
    pub(crate) fn encode(&self) -> Vec<u8> {
        use pb::response::Kind;
        let kind = match self {
            Self::Proof(p) => Kind::Proof(p.to_proto()),
            Self::Key(k) => Kind::VerificationKey(k.to_proto()),
            Self::Acked => Kind::Acked(true),
            Self::Batch(encoding) => Kind::Batch(pack(encoding)),
            Self::Ids { ids, more } => Kind::Ids(pb::Ids {
                ids: ids.iter().map(|(id, _)| id.as_bytes().to_vec()).collect(),
                received_ms: ids.iter().map(|(_, at)| *at).collect(),
                more: *more,
            }),
            Self::NotFound => Kind::NotFound(true),
        };
        pb::Response { kind: Some(kind) }.encode_to_vec()
    }

    pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, MessageError> {
        use pb::response::Kind;
        cap("response", bytes.len(), limits.max_body())?;
        Ok(match pb::Response::decode(bytes).map_err(malformed)?.kind {
            Some(Kind::Proof(p)) => Self::Proof(ProofMessage::from_proto(p, limits)?),
            Some(Kind::VerificationKey(k)) => Self::Key(VerificationKey::from_proto(k, limits)?),
            Some(Kind::Acked(_)) => Self::Acked,
            Some(Kind::Batch(packed)) => Self::Batch(unpack(packed, limits)?),
            Some(Kind::Ids(ids)) => {
                cap("inventory", ids.ids.len(), limits.max_inventory)?;
                if ids.ids.len() != ids.received_ms.len() {
                    return Err(malformed("ids and times differ in length"));
                }
                Self::Ids {
                    ids: ids
                        .ids
                        .iter()
                        .zip(ids.received_ms)
                        .map(|(id, at)| Ok((content_id(id)?, at)))
                        .collect::<Result<_, MessageError>>()?,
                    more: ids.more,
                }
            }
            Some(Kind::NotFound(_)) => Self::NotFound,
            None => return Err(malformed("response without a kind")),
        })
    }
}
