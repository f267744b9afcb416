//! [`FeatureSet`]: named capability flags over a `u64`.

use std::fmt;

/// A set of protocol features, one bit each.
///
/// Bits this version does not name are kept as they are, never rejected: a newer peer's
/// features survive decoding, comparison and re-encoding by an older node.
///
/// ```
/// use causality_version::FeatureSet;
///
/// let ours = FeatureSet::PUB_SUB | FeatureSet::PROOF_SHARING;
/// let theirs = FeatureSet::PUB_SUB | FeatureSet::from_bits(1 << 40);
/// assert_eq!(ours & theirs, FeatureSet::PUB_SUB);
/// assert_eq!(ours.missing_from(theirs), FeatureSet::PROOF_SHARING);
/// assert_eq!(theirs.to_string(), "PubSub|bit40");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct FeatureSet(u64);

macro_rules! features {
    ($($(#[$doc:meta])* $name:ident = $bit:expr, $text:literal;)*) => {
        impl FeatureSet {
            $($(#[$doc])* pub const $name: Self = Self(1 << $bit);)*

            /// Every feature this version names.
            pub const KNOWN: Self = Self(0 $(| (1 << $bit))*);

            const NAMES: &'static [(u32, &'static str)] = &[$(($bit, $text)),*];
        }
    };
}

features! {
    /// Point-to-point messages and request-response.
    BASIC_MESSAGING = 0, "BasicMessaging";
    /// Topic publish/subscribe.
    PUB_SUB = 1, "PubSub";
    /// Objects named by content id and pulled by id.
    CONTENT_ADDRESSING = 2, "ContentAddressing";
    /// Peer discovery by rendezvous hashing.
    RENDEZVOUS_DISCOVERY = 3, "RendezvousDiscovery";
    /// Encrypted, authenticated transports.
    SECURE_TRANSPORT = 4, "SecureTransport";
    /// Peers authenticated by their identity keys.
    PEER_AUTH = 5, "PeerAuth";
    /// AutoNAT, relays and hole punching.
    NAT_TRAVERSAL = 6, "NatTraversal";
    /// Compressed payloads.
    COMPRESSION = 7, "Compression";
    /// Zero-knowledge proof sharing.
    PROOF_SHARING = 8, "ProofSharing";
    /// Register state synchronization.
    REGISTER_SYNC = 9, "RegisterSync";
    /// Execution-sequence coordination.
    EXECUTION_COORDINATION = 10, "ExecutionCoordination";
}

impl FeatureSet {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// A set from raw bits; unknown bits are kept.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every feature of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The features of `self` that `other` lacks.
    pub const fn missing_from(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// The bits this version does not name.
    pub const fn unknown(self) -> Self {
        Self(self.0 & !Self::KNOWN.0)
    }

    /// Looks a feature up by its name, e.g. `"PubSub"`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(bit, _)| Self(1 << bit))
    }

    /// The names of the features in the set; unknown bits as `bitN`.
    pub fn names(self) -> impl Iterator<Item = String> {
        (0..64u32).filter(move |b| self.0 & (1 << b) != 0).map(|b| {
            Self::NAMES
                .iter()
                .find(|(bit, _)| *bit == b)
                .map_or_else(|| format!("bit{b}"), |(_, n)| (*n).to_owned())
        })
    }
}

impl fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<String> = self.names().collect();
        f.write_str(&names.join("|"))
    }
}

impl fmt::Debug for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeatureSet({self})")
    }
}

impl std::ops::BitOr for FeatureSet {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for FeatureSet {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl std::ops::BitAnd for FeatureSet {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}
