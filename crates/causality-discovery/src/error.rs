//! Errors of discovery.

use causality_net::{NetError, PeerId};

/// Why a peer record was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Encoded record larger than [`MAX_RECORD_BYTES`](crate::record::MAX_RECORD_BYTES).
    #[error("record of {0} bytes is too large")]
    TooLarge(usize),
    /// Too many or too long addresses or roles.
    #[error("record exceeds its field limits")]
    Limits,
    /// The peer id is not an ed25519 key.
    #[error("record peer id is not an ed25519 key")]
    BadPeerId,
    /// The signature does not verify.
    #[error("record of {0} has a bad signature")]
    BadSignature(PeerId),
    /// The record has expired.
    #[error("record of {0} has expired")]
    Expired(PeerId),
    /// An address does not parse.
    #[error("record address `{0}` is not a multiaddr")]
    BadAddress(String),
    /// The record expires further ahead than a record's lifetime plus the clock-skew bound.
    #[error("record of {peer} expires at {expires_at_ms}, after the latest allowed {latest}")]
    ExpiresTooLate {
        /// The peer.
        peer: PeerId,
        /// Its claimed expiry.
        expires_at_ms: u64,
        /// The latest expiry accepted now.
        latest: u64,
    },
    /// We already hold a record of this peer with the same or a higher sequence number.
    #[error("record of {peer} has stale sequence {seq} (have {have})")]
    Stale {
        /// The peer.
        peer: PeerId,
        /// The offered sequence number.
        seq: u64,
        /// The one we hold.
        have: u64,
    },
}

impl RecordError {
    /// Whether this proves the sender misbehaved (as opposed to being slow or behind).
    pub fn is_forgery(&self) -> bool {
        !matches!(self, Self::Stale { .. } | Self::Expired(_))
    }
}

/// Why a discovery operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The network failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// No live peer is known to ask.
    #[error("no live peers are known")]
    NoPeers,
    /// The discovery service has stopped.
    #[error("discovery has stopped")]
    Stopped,
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] causality_net::ConfigError),
    /// No rendezvous peer could be asked, or none answered.
    #[error("rendezvous peers unreachable: {0}")]
    Unreachable(String),
}
