//! Signed envelopes: how a published payload travels, and how it is authenticated.

use causality_hash::ContentId;
use causality_version::ProtocolVersion;
use ed25519_dalek::{Signature, Signer as _};
use prost::Message as _;

use crate::error::Rejection;
use crate::limits::Limits;
use crate::peer::{Keypair, PeerId};
use crate::proto::v1 as pb;
use crate::topic::Topic;

/// Prefix of the bytes an envelope signature covers, so the signature can never be taken
/// for one over another kind of message.
pub const SIGNING_DOMAIN: &[u8] = b"causality/envelope/v1\0";

/// A message received on a subscription: an authenticated, fresh, non-replayed envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// BLAKE3 of the envelope's encoding.
    pub id: ContentId,
    /// The logical topic it was published on.
    pub topic: Topic,
    /// Who published and signed it.
    pub sender: PeerId,
    /// The sender's sequence number for it.
    pub seq: u64,
    /// The sender's clock at publication (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The sender's protocol version.
    pub version: ProtocolVersion,
    /// What the payload is.
    pub payload_type: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The peer that delivered it to us (the sender, or a relay of the gossip).
    pub via: PeerId,
}

/// A protocol's verdict on a message of a topic it validates (see
/// [`Network::subscribe_validated`](crate::Network::subscribe_validated)): whether gossip
/// forwards it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// Valid: forward it.
    Accept,
    /// Not for us to forward (a stale or unwanted message, or one we could not judge); the
    /// relay is not blamed.
    Ignore,
    /// Invalid in a way the relay could have checked: not forwarded, and the relay that
    /// delivered it is penalized. The reason is logged.
    Reject(String),
}

/// The fields of an envelope to be signed.
pub(crate) struct Draft<'a> {
    pub(crate) version: ProtocolVersion,
    pub(crate) topic: &'a Topic,
    pub(crate) seq: u64,
    pub(crate) timestamp_ms: u64,
    pub(crate) payload_type: &'a str,
    pub(crate) payload: &'a [u8],
}

/// Signs `draft` and returns the message id and the envelope's bytes.
pub(crate) fn seal(keypair: &Keypair, draft: &Draft<'_>) -> (ContentId, Vec<u8>) {
    let mut envelope = pb::Envelope {
        version: Some(draft.version.into()),
        topic: draft.topic.to_string(),
        sender: keypair.peer_id().as_bytes().to_vec(),
        seq: draft.seq,
        timestamp_ms: draft.timestamp_ms,
        payload_type: draft.payload_type.to_owned(),
        payload: draft.payload.to_vec(),
        signature: Vec::new(),
    };
    let signature = keypair.signing_key().sign(&signing_bytes(&envelope));
    envelope.signature = signature.to_bytes().to_vec();
    let bytes = envelope.encode_to_vec();
    (ContentId::of(&bytes), bytes)
}

fn signing_bytes(unsigned: &pb::Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + unsigned.encoded_len());
    out.extend_from_slice(SIGNING_DOMAIN);
    unsigned.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Signs an envelope with arbitrary fields, without publishing it. Only for tests of how
/// peers treat replays, stale timestamps and forged senders.
#[cfg(feature = "test-utils")]
pub fn sign_envelope(
    keypair: &Keypair,
    topic: &Topic,
    seq: u64,
    timestamp_ms: u64,
    payload: &[u8],
) -> Vec<u8> {
    seal(
        keypair,
        &Draft {
            version: crate::PROTOCOL_VERSION,
            topic,
            seq,
            timestamp_ms,
            payload_type: "test",
            payload,
        },
    )
    .1
}

/// A decoded envelope whose signature has not been checked yet: everything cheap was
/// checked (size, canonical encoding, field limits, version, topic, sender key), so the
/// caller can refuse misrouted, stale or replayed messages before paying for a signature.
#[derive(Debug)]
pub(crate) struct Unverified {
    message: Message,
    unsigned: pb::Envelope,
    signature: Signature,
}

impl Unverified {
    /// The message it claims to be (its sender is not yet authenticated; the payload is
    /// filled in by [`verify`](Self::verify)).
    pub(crate) fn message(&self) -> &Message {
        &self.message
    }

    /// Checks the signature; the message once it verifies.
    pub(crate) fn verify(mut self) -> Result<Message, Rejection> {
        self.message
            .sender
            .verifying_key()
            .verify_strict(&signing_bytes(&self.unsigned), &self.signature)
            .map_err(|_| Rejection::BadSignature)?;
        self.message.payload = std::mem::take(&mut self.unsigned.payload);
        Ok(self.message)
    }
}

/// Decodes an envelope and checks everything that depends only on its bytes, except the
/// signature: size, canonical encoding, field limits, topic syntax, major version, sender
/// key. Freshness, replays, routing and rate limits are checked by the caller, then
/// [`Unverified::verify`].
pub(crate) fn decode(
    bytes: &[u8],
    limits: &Limits,
    local_major: u32,
    via: PeerId,
) -> Result<Unverified, Rejection> {
    if bytes.len() > limits.max_envelope_bytes {
        return Err(Rejection::Oversize {
            size: bytes.len(),
            limit: limits.max_envelope_bytes,
        });
    }
    let mut envelope =
        pb::Envelope::decode(bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
    // One signed message, one encoding, one id: anything else (unknown fields, non-minimal
    // varints, reordered fields) is refused.
    if envelope.encoded_len() != bytes.len() || envelope.encode_to_vec() != bytes {
        return Err(Rejection::Malformed(
            "envelope is not canonically encoded".into(),
        ));
    }
    if envelope.payload_type.len() > limits.max_payload_type_bytes {
        return Err(Rejection::Malformed(format!(
            "payload type of {} bytes, limit {}",
            envelope.payload_type.len(),
            limits.max_payload_type_bytes
        )));
    }
    let version: ProtocolVersion = envelope
        .version
        .ok_or_else(|| Rejection::Malformed("envelope without a version".into()))?
        .into();
    if version.major != local_major {
        return Err(Rejection::Version(version.to_string()));
    }
    let topic: Topic = envelope
        .topic
        .parse()
        .map_err(|e: crate::NetError| Rejection::BadTopic(e.to_string()))?;
    let sender = PeerId::from_bytes(&envelope.sender)
        .map_err(|_| Rejection::Malformed("sender is not an ed25519 public key".into()))?;
    let signature = Signature::from_slice(&envelope.signature)
        .map_err(|_| Rejection::Malformed("signature is not 64 bytes".into()))?;
    envelope.signature = Vec::new();
    let message = Message {
        id: ContentId::of(bytes),
        topic,
        sender,
        seq: envelope.seq,
        timestamp_ms: envelope.timestamp_ms,
        version,
        payload_type: envelope.payload_type.clone(),
        payload: Vec::new(),
        via,
    };
    Ok(Unverified {
        message,
        unsigned: envelope,
        signature,
    })
}

/// [`decode`] then [`Unverified::verify`].
#[cfg(test)]
pub(crate) fn open(
    bytes: &[u8],
    limits: &Limits,
    local_major: u32,
    via: PeerId,
) -> Result<Message, Rejection> {
    decode(bytes, limits, local_major, via)?.verify()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::TopicKind;

    fn draft(topic: &Topic) -> Draft<'_> {
        Draft {
            version: ProtocolVersion::new(0, 1, 0),
            topic,
            seq: 1,
            timestamp_ms: 1_000,
            payload_type: "test",
            payload: b"hello",
        }
    }

    #[test]
    fn seal_then_open() {
        let keys = Keypair::from_index(1);
        let topic = Topic::new(TopicKind::new("register", "update"), "r1").unwrap();
        let (id, bytes) = seal(&keys, &draft(&topic));
        let message = open(&bytes, &Limits::default(), 0, keys.peer_id()).unwrap();
        assert_eq!(message.id, id);
        assert_eq!(message.sender, keys.peer_id());
        assert_eq!(message.payload, b"hello");
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let keys = Keypair::from_index(1);
        let topic = Topic::new(TopicKind::new("register", "update"), "r1").unwrap();
        let (_, bytes) = seal(&keys, &draft(&topic));
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                open(&bad, &Limits::default(), 0, keys.peer_id()).is_err(),
                "bit {i} flipped was accepted"
            );
        }
    }

    #[test]
    fn non_canonical_encoding_is_refused() {
        let keys = Keypair::from_index(1);
        let topic = Topic::new(TopicKind::new("register", "update"), "r1").unwrap();
        let (_, mut bytes) = seal(&keys, &draft(&topic));
        // An unknown field appended: still decodes, but is not the signed encoding.
        bytes.extend_from_slice(&[0x78, 0x01]);
        let err = open(&bytes, &Limits::default(), 0, keys.peer_id()).unwrap_err();
        assert!(matches!(err, Rejection::Malformed(_)), "{err}");
    }
}
