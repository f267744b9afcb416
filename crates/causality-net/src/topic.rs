//! Logical topics (the names protocols publish on) and the bounded set of physical gossip
//! topics they are sharded onto.
//!
//! The network layer owns the mechanics only: the syntax of a logical topic, the shard
//! rule and receiver-side filtering. Which families exist (`register/…`, `execution/…`,
//! `timemap/…`) is decided by the crates that own those protocols; each defines its
//! [`TopicKind`]s as constants.

use std::fmt;
use std::str::FromStr;

use crate::error::NetError;

/// Longest id inside a logical topic.
pub const MAX_TOPIC_ID_BYTES: usize = 128;
/// Longest family or kind name.
pub const MAX_TOPIC_NAME_BYTES: usize = 32;

/// The kind of a logical topic: a family (`register`) and a name within it (`update`).
/// Protocol crates define their kinds as constants:
///
/// ```
/// use causality_net::TopicKind;
///
/// pub const REGISTER_UPDATE: TopicKind = TopicKind::new("register", "update");
/// let topic = REGISTER_UPDATE.topic("r1").unwrap();
/// assert_eq!(topic.to_string(), "register/update/r1");
/// ```
///
/// Family and name are 1 to 32 characters of `a-z`, `0-9` and `-`; [`TopicKind::new`]
/// checks this at compile time when used in a `const`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicKind {
    family: &'static str,
    name: &'static str,
}

impl TopicKind {
    /// A kind. Panics (at compile time in a `const`) when a part is not a valid name.
    pub const fn new(family: &'static str, name: &'static str) -> Self {
        assert!(valid_name(family.as_bytes()), "invalid topic family");
        assert!(valid_name(name.as_bytes()), "invalid topic kind name");
        Self { family, name }
    }

    /// The family, e.g. `register`.
    pub fn family(&self) -> &str {
        self.family
    }

    /// The kind's name within its family, e.g. `update`.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The logical topic of this kind about `id`.
    pub fn topic(self, id: impl Into<String>) -> Result<Topic, NetError> {
        Topic::new(self, id)
    }
}

const fn valid_name(bytes: &[u8]) -> bool {
    if bytes.is_empty() || bytes.len() > MAX_TOPIC_NAME_BYTES {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

/// A logical topic: `<family>/<kind>/<id>`, e.g. `register/update/<register_id>`.
///
/// ```
/// use causality_net::Topic;
///
/// let topic: Topic = "register/proof/vk-1".parse().unwrap();
/// assert_eq!((topic.family(), topic.kind_name(), topic.id()), ("register", "proof", "vk-1"));
/// assert_eq!(topic.to_string(), "register/proof/vk-1");
/// assert_eq!(topic.physical(0, 16), topic.physical(0, 16));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic {
    /// `family/kind/id`, validated.
    text: Box<str>,
    /// Where the id starts in `text`.
    id_at: u16,
    /// Where the kind name starts.
    kind_at: u16,
}

impl Topic {
    /// A topic of `kind` about `id`. The id must be 1 to 128 printable ASCII characters
    /// other than `/`.
    pub fn new(kind: TopicKind, id: impl Into<String>) -> Result<Self, NetError> {
        let id = id.into();
        validate_id(&id)?;
        Ok(Self::assemble(kind.family, kind.name, &id))
    }

    fn assemble(family: &str, name: &str, id: &str) -> Self {
        let text = format!("{family}/{name}/{id}");
        let kind_at = u16::try_from(family.len() + 1).expect("bounded names");
        let id_at = u16::try_from(family.len() + name.len() + 2).expect("bounded names");
        Self {
            text: text.into_boxed_str(),
            id_at,
            kind_at,
        }
    }

    /// The family, e.g. `register`.
    pub fn family(&self) -> &str {
        &self.text[..usize::from(self.kind_at) - 1]
    }

    /// The kind's name within its family, e.g. `update`.
    pub fn kind_name(&self) -> &str {
        &self.text[usize::from(self.kind_at)..usize::from(self.id_at) - 1]
    }

    /// Whether this topic is of `kind`.
    pub fn is(&self, kind: TopicKind) -> bool {
        self.family() == kind.family && self.kind_name() == kind.name
    }

    /// The id the topic is about.
    pub fn id(&self) -> &str {
        &self.text[usize::from(self.id_at)..]
    }

    /// The text form, `family/kind/id`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The shard of this topic among `shards` (BLAKE3 of the id, first 8 bytes little-endian,
    /// modulo `shards`).
    pub fn shard(&self, shards: u32) -> u32 {
        let digest = blake3::hash(self.id().as_bytes());
        let word = u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"));
        u32::try_from(word % u64::from(shards.max(1))).expect("below a u32")
    }

    /// The physical gossip topic this logical topic travels on:
    /// `/causality/<major>/<family>/<kind>/<shard>`.
    pub fn physical(&self, major: u32, shards: u32) -> PhysicalTopic {
        PhysicalTopic(
            format!(
                "/causality/{major}/{}/{}/{}",
                self.family(),
                self.kind_name(),
                self.shard(shards)
            )
            .into(),
        )
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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
        if !valid_name(family.as_bytes()) || !valid_name(name.as_bytes()) {
            return Err(invalid(
                "family and kind must be 1-32 characters of a-z, 0-9 and '-'",
            ));
        }
        validate_id(id)?;
        Ok(Self::assemble(family, name, id))
    }
}

/// A physical gossip topic, `/causality/<major>/<family>/<kind>/<shard>`: what gossip
/// meshes are formed on. Many logical topics share one; receivers filter on the logical
/// topic inside each envelope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhysicalTopic(std::sync::Arc<str>);

impl PhysicalTopic {
    /// The topic string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A physical topic named by a transport (e.g. a gossipsub topic string). Names not of
    /// our form never match a logical topic, so are harmless.
    #[cfg(feature = "libp2p")]
    pub(crate) fn from_wire(name: &str) -> Self {
        Self(name.into())
    }
}

impl fmt::Display for PhysicalTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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

    const UPDATE: TopicKind = TopicKind::new("register", "update");

    #[test]
    fn topics_round_trip_for_any_family() {
        for kind in [
            UPDATE,
            TopicKind::new("execution", "node"),
            TopicKind::new("timemap", "commitment"),
        ] {
            let topic = kind.topic("abc").unwrap();
            assert!(topic.is(kind));
            assert_eq!(topic.to_string().parse::<Topic>().unwrap(), topic);
            assert_eq!(topic.family(), kind.family());
            assert_eq!(topic.kind_name(), kind.name());
        }
    }

    #[test]
    fn bad_topics_are_rejected_with_reasons() {
        for (text, reason) in [
            ("register/update", "expected"),
            ("Register/update/x", "family and kind"),
            ("register//x", "family and kind"),
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
            let topic = UPDATE.topic(format!("r{i}")).unwrap();
            assert!(topic.shard(16) < 16);
            seen.insert(topic.physical(0, 16));
        }
        assert_eq!(seen.len(), 16);
    }
}
