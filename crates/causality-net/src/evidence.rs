//! Equivocation evidence: two envelopes one sender signed under one sequence number, with
//! different content. A sender that does this can split the network (each half accepts
//! one version and sees the other as a replay), so the pair is proof enough to ban it, and
//! anyone can check the proof without trusting whoever shows it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use causality_hash::ContentId;
use prost::Message as _;

use crate::envelope;
use crate::error::Rejection;
use crate::limits::Limits;
use crate::peer::PeerId;
use crate::proto::v1 as pb;

/// Largest envelope accepted inside evidence: evidence may come from a node configured
/// with a larger envelope limit than ours.
const MAX_EVIDENCE_ENVELOPE: usize = 4 << 20;

/// Two envelopes signed by one sender under one sequence number, with different content:
/// checked proof that the sender equivocated. (The example signs envelopes with
/// `sign_envelope`, of the `test-utils` feature.)
///
/// ```
/// use causality_net::{Equivocation, EvidenceError, Keypair, Topic, TopicKind, sign_envelope};
///
/// let keys = Keypair::from_index(7);
/// let topic = Topic::new(TopicKind::new("demo", "chat"), "room")?;
/// let a = sign_envelope(&keys, &topic, 5, 1_000, b"to the left half");
/// let b = sign_envelope(&keys, &topic, 5, 1_000, b"to the right half");
/// let evidence = Equivocation::check(&a, &b)?;
/// assert_eq!(evidence.sender(), keys.peer_id());
/// assert_eq!(evidence.seq(), 5);
/// // Its encoding is what nodes pass on; decoding checks it again.
/// assert_eq!(Equivocation::from_bytes(&evidence.to_bytes())?, evidence);
/// // One envelope twice proves nothing.
/// assert!(matches!(Equivocation::check(&a, &a), Err(EvidenceError::Identical)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    sender: PeerId,
    seq: u64,
    /// The two envelopes, the one with the lower id first (so the same equivocation has
    /// one encoding whoever found it).
    first: Arc<[u8]>,
    second: Arc<[u8]>,
}

/// Why bytes are not evidence of an equivocation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The evidence message does not decode.
    #[error("malformed evidence: {0}")]
    Malformed(String),
    /// One of the envelopes does not decode or its signature does not verify.
    #[error("{which} envelope: {reason}")]
    Envelope {
        /// `first` or `second`.
        which: &'static str,
        /// What is wrong with it.
        reason: Rejection,
    },
    /// The envelopes name different senders.
    #[error("the envelopes have different senders ({first} and {second})")]
    DifferentSenders {
        /// The first envelope's sender.
        first: PeerId,
        /// The second's.
        second: PeerId,
    },
    /// The envelopes carry different sequence numbers.
    #[error("the envelopes have different sequence numbers ({first} and {second})")]
    DifferentSequence {
        /// The first envelope's sequence number.
        first: u64,
        /// The second's.
        second: u64,
    },
    /// Both are the same envelope.
    #[error("the two envelopes are the same")]
    Identical,
}

impl Equivocation {
    /// Checks that `a` and `b` are two different envelopes, both validly signed by one
    /// sender under one sequence number.
    pub fn check(a: &[u8], b: &[u8]) -> Result<Self, EvidenceError> {
        let limits = Limits {
            max_envelope_bytes: MAX_EVIDENCE_ENVELOPE,
            ..Limits::default()
        };
        Self::check_with(a, b, &limits, crate::PROTOCOL_VERSION.major)
    }

    /// [`check`](Self::check) under a node's own envelope limits and major version.
    pub(crate) fn check_with(
        a: &[u8],
        b: &[u8],
        limits: &Limits,
        major: u32,
    ) -> Result<Self, EvidenceError> {
        if a == b {
            return Err(EvidenceError::Identical);
        }
        let nobody = crate::Keypair::from_index(0).peer_id();
        let open = |bytes: &[u8], which: &'static str| {
            // Who relayed it is irrelevant here; the sender is what the evidence is about.
            let unverified = envelope::decode(bytes, limits, major, nobody)
                .map_err(|reason| EvidenceError::Envelope { which, reason })?;
            unverified
                .verify()
                .map_err(|reason| EvidenceError::Envelope { which, reason })
        };
        let first = open(a, "first")?;
        let second = open(b, "second")?;
        if first.sender != second.sender {
            return Err(EvidenceError::DifferentSenders {
                first: first.sender,
                second: second.sender,
            });
        }
        if first.seq != second.seq {
            return Err(EvidenceError::DifferentSequence {
                first: first.seq,
                second: second.seq,
            });
        }
        let (first_bytes, second_bytes) = if first.id <= second.id {
            (a, b)
        } else {
            (b, a)
        };
        Ok(Self {
            sender: first.sender,
            seq: first.seq,
            first: first_bytes.into(),
            second: second_bytes.into(),
        })
    }

    /// Decodes evidence passed on by another node and checks it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EvidenceError> {
        let (first, second) = decode(bytes)?;
        Self::check(&first, &second)
    }

    /// The encoding nodes pass on (`causality.net.v1.Equivocation`).
    pub fn to_bytes(&self) -> Vec<u8> {
        pb::Equivocation {
            first: self.first.to_vec(),
            second: self.second.to_vec(),
        }
        .encode_to_vec()
    }

    /// The sender that equivocated.
    pub fn sender(&self) -> PeerId {
        self.sender
    }

    /// The sequence number it used twice.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The two envelopes' encodings, the one with the lower message id first.
    pub fn envelopes(&self) -> (&[u8], &[u8]) {
        (&self.first, &self.second)
    }
}

/// The two envelopes of an evidence message, not yet checked.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>), EvidenceError> {
    let message =
        pb::Equivocation::decode(bytes).map_err(|e| EvidenceError::Malformed(e.to_string()))?;
    Ok((message.first, message.second))
}

/// Recently accepted envelopes by id, within a byte budget (oldest dropped first): the
/// first half of any evidence.
#[derive(Debug)]
pub(crate) struct Recent {
    bytes: HashMap<ContentId, Arc<[u8]>>,
    order: VecDeque<ContentId>,
    held: usize,
    budget: usize,
}

impl Recent {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            bytes: HashMap::new(),
            order: VecDeque::new(),
            held: 0,
            budget,
        }
    }

    pub(crate) fn insert(&mut self, id: ContentId, envelope: &[u8]) {
        if envelope.len() > self.budget || self.bytes.contains_key(&id) {
            return;
        }
        while self.held + envelope.len() > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(b) = self.bytes.remove(&old) {
                self.held -= b.len();
            }
        }
        self.held += envelope.len();
        self.bytes.insert(id, envelope.into());
        self.order.push_back(id);
    }

    pub(crate) fn get(&self, id: &ContentId) -> Option<&[u8]> {
        self.bytes.get(id).map(|b| &b[..])
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.held
    }
}

/// Senders proven to have equivocated, with their evidence: at most this many kept (the
/// oldest forgotten first; their bans run on).
pub(crate) const MAX_EQUIVOCATORS: usize = 4096;

/// The evidence known, by sender.
#[derive(Debug, Default)]
pub(crate) struct Known {
    by_sender: HashMap<PeerId, Equivocation>,
    order: VecDeque<PeerId>,
}

impl Known {
    pub(crate) fn contains(&self, sender: &PeerId) -> bool {
        self.by_sender.contains_key(sender)
    }

    /// Records `evidence`; `false` when its sender was known already.
    pub(crate) fn insert(&mut self, evidence: Equivocation) -> bool {
        if self.contains(&evidence.sender) {
            return false;
        }
        if self.order.len() >= MAX_EQUIVOCATORS
            && let Some(old) = self.order.pop_front()
        {
            self.by_sender.remove(&old);
        }
        self.order.push_back(evidence.sender);
        self.by_sender.insert(evidence.sender, evidence);
        true
    }

    pub(crate) fn all(&self) -> Vec<Equivocation> {
        self.order
            .iter()
            .filter_map(|p| self.by_sender.get(p).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Keypair;
    use crate::topic::{Topic, TopicKind};

    fn envelope(keys: &Keypair, seq: u64, payload: &[u8]) -> Vec<u8> {
        let topic = Topic::new(TopicKind::new("t", "k"), "x").unwrap();
        envelope::seal(
            keys,
            &envelope::Draft {
                version: crate::PROTOCOL_VERSION,
                topic: &topic,
                seq,
                timestamp_ms: 1,
                payload_type: "test",
                payload,
            },
        )
        .1
    }

    #[test]
    fn evidence_is_checked_whichever_order_it_comes_in() {
        let keys = Keypair::from_index(1);
        let (a, b) = (envelope(&keys, 3, b"a"), envelope(&keys, 3, b"b"));
        let ab = Equivocation::check(&a, &b).unwrap();
        let ba = Equivocation::check(&b, &a).unwrap();
        assert_eq!(ab, ba, "one encoding for one equivocation");
        assert_eq!(ab.to_bytes(), ba.to_bytes());
        assert_eq!(Equivocation::from_bytes(&ab.to_bytes()).unwrap(), ab);
    }

    #[test]
    fn what_is_not_an_equivocation_is_refused_for_its_reason() {
        let keys = Keypair::from_index(1);
        let other = Keypair::from_index(2);
        let a = envelope(&keys, 3, b"a");
        assert_eq!(Equivocation::check(&a, &a), Err(EvidenceError::Identical));
        assert!(matches!(
            Equivocation::check(&a, &envelope(&other, 3, b"b")),
            Err(EvidenceError::DifferentSenders { .. })
        ));
        assert!(matches!(
            Equivocation::check(&a, &envelope(&keys, 4, b"b")),
            Err(EvidenceError::DifferentSequence {
                first: 3,
                second: 4
            })
        ));
        let mut forged = envelope(&keys, 3, b"b");
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(matches!(
            Equivocation::check(&a, &forged),
            Err(EvidenceError::Envelope {
                which: "second",
                reason: Rejection::BadSignature
            })
        ));
        assert!(matches!(
            Equivocation::from_bytes(b"\xff\xff junk"),
            Err(EvidenceError::Malformed(_))
        ));
    }

    #[test]
    fn recent_envelopes_stay_within_their_budget() {
        let mut recent = Recent::new(1000);
        for n in 0u64..100 {
            recent.insert(ContentId::of(&n.to_le_bytes()), &[0; 90]);
        }
        assert!(recent.held() <= 1000);
        assert!(recent.get(&ContentId::of(&99u64.to_le_bytes())).is_some());
        assert!(recent.get(&ContentId::of(&0u64.to_le_bytes())).is_none());
        recent.insert(ContentId::of(b"huge"), &[0; 2000]);
        assert!(recent.get(&ContentId::of(b"huge")).is_none());
    }
}
