//! Logical topics (the names applications publish on) and the bounded set of physical
//! gossip topics they are sharded onto.

use std::fmt;
use std::str::FromStr;

use crate::error::NetError;

/// Longest id inside a logical topic.
pub const MAX_TOPIC_ID_BYTES: usize = 128;

/// The kind of a logical topic: its family and what it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TopicKind {
    /// `register/creation/{domain_id}`
    RegisterCreation,
    /// `register/update/{register_id}`
    RegisterUpdate,
    /// `register/proof/{verification_key_id}`
    RegisterProof,
    /// `register/nullifier/{domain_id}`
    RegisterNullifier,
    /// `register/commitment/{resource_id}`
    RegisterCommitment,
    /// `execution/sequence/{sequence_id}`
    ExecutionSequence,
    /// `execution/node/{node_id}`
    ExecutionNode,
    /// `execution/result/{sequence_id}`
    ExecutionResult,
    /// `execution/verification/{sequence_id}`
    ExecutionVerification,
    /// `timemap/update/{domain_id}`
    TimemapUpdate,
    /// `timemap/commitment/{domain_id}`
    TimemapCommitment,
    /// `timemap/verification/{domain_id}`
    TimemapVerification,
}

impl TopicKind {
    /// Every kind, in order.
    pub const ALL: [TopicKind; 12] = [
        Self::RegisterCreation,
        Self::RegisterUpdate,
        Self::RegisterProof,
        Self::RegisterNullifier,
        Self::RegisterCommitment,
        Self::ExecutionSequence,
        Self::ExecutionNode,
        Self::ExecutionResult,
        Self::ExecutionVerification,
        Self::TimemapUpdate,
        Self::TimemapCommitment,
        Self::TimemapVerification,
    ];

    /// The family: `register`, `execution` or `timemap`.
    pub fn family(self) -> &'static str {
        match self {
            Self::RegisterCreation
            | Self::RegisterUpdate
            | Self::RegisterProof
            | Self::RegisterNullifier
            | Self::RegisterCommitment => "register",
            Self::ExecutionSequence
            | Self::ExecutionNode
            | Self::ExecutionResult
            | Self::ExecutionVerification => "execution",
            Self::TimemapUpdate | Self::TimemapCommitment | Self::TimemapVerification => "timemap",
        }
    }

    /// The kind's name within its family, e.g. `update`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RegisterCreation => "creation",
            Self::RegisterUpdate | Self::TimemapUpdate => "update",
            Self::RegisterProof => "proof",
            Self::RegisterNullifier => "nullifier",
            Self::RegisterCommitment | Self::TimemapCommitment => "commitment",
            Self::ExecutionSequence => "sequence",
            Self::ExecutionNode => "node",
            Self::ExecutionResult => "result",
            Self::ExecutionVerification | Self::TimemapVerification => "verification",
        }
    }

    fn parse(family: &str, name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.family() == family && k.name() == name)
    }
}

/// A logical topic: a kind and the id it is about, e.g. `register/update/<register_id>`.
///
/// ```
/// use causality_net::{Topic, TopicKind};
///
/// let topic: Topic = "register/proof/vk-1".parse().unwrap();
/// assert_eq!(topic.kind(), TopicKind::RegisterProof);
/// assert_eq!(topic.id(), "vk-1");
/// assert_eq!(topic.to_string(), "register/proof/vk-1");
/// assert_eq!(topic.physical(0, 16), topic.physical(0, 16));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic {
    kind: TopicKind,
    id: String,
}

impl Topic {
    /// A topic of `kind` about `id`. The id must be 1 to 128 printable ASCII characters
    /// other than `/`.
    pub fn new(kind: TopicKind, id: impl Into<String>) -> Result<Self, NetError> {
        let id = id.into();
        validate_id(&id)?;
        Ok(Self { kind, id })
    }

    /// The topic's kind.
    pub fn kind(&self) -> TopicKind {
        self.kind
    }

    /// The id the topic is about.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shard of this topic among `shards` (BLAKE3 of the id, first 8 bytes little-endian,
    /// modulo `shards`).
    pub fn shard(&self, shards: u32) -> u32 {
        let digest = blake3::hash(self.id.as_bytes());
        let word = u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"));
        u32::try_from(word % u64::from(shards.max(1))).expect("below a u32")
    }

    /// The physical gossip topic this logical topic travels on:
    /// `/causality/<major>/<family>/<kind>/<shard>`.
    pub fn physical(&self, major: u32, shards: u32) -> String {
        format!(
            "/causality/{major}/{}/{}/{}",
            self.kind.family(),
            self.kind.name(),
            self.shard(shards)
        )
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind.family(), self.kind.name(), self.id)
    }
}

impl FromStr for Topic {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| NetError::InvalidTopic {
            topic: s.chars().take(MAX_TOPIC_ID_BYTES).collect(),
            reason,
        };
        let mut parts = s.splitn(3, '/');
        let (Some(family), Some(name), Some(id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("expected <family>/<kind>/<id>"));
        };
        let kind =
            TopicKind::parse(family, name).ok_or_else(|| invalid("unknown family or kind"))?;
        Self::new(kind, id)
    }
}

fn validate_id(id: &str) -> Result<(), NetError> {
    let invalid = |reason| NetError::InvalidTopic {
        topic: id.chars().take(MAX_TOPIC_ID_BYTES).collect(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("empty id"));
    }
    if id.len() > MAX_TOPIC_ID_BYTES {
        return Err(invalid("id longer than 128 bytes"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(invalid("id must be printable ASCII without '/'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for kind in TopicKind::ALL {
            let topic = Topic::new(kind, "abc").unwrap();
            assert_eq!(topic.to_string().parse::<Topic>().unwrap(), topic);
        }
    }

    #[test]
    fn bad_topics_are_rejected_with_reasons() {
        for (text, reason) in [
            ("register/update", "expected"),
            ("register/bogus/x", "unknown"),
            ("register/update/", "empty"),
            ("register/update/a/b", "without '/'"),
            ("register/update/sp ace", "without '/'"),
        ] {
            let err = text.parse::<Topic>().unwrap_err().to_string();
            assert!(err.contains(reason), "{text}: {err}");
        }
        let long = format!("register/update/{}", "x".repeat(129));
        assert!(long.parse::<Topic>().is_err());
    }

    #[test]
    fn shards_spread_and_stay_bounded() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let topic = Topic::new(TopicKind::RegisterUpdate, format!("r{i}")).unwrap();
            assert!(topic.shard(16) < 16);
            seen.insert(topic.physical(0, 16));
        }
        assert_eq!(seen.len(), 16);
    }
}
