//! [`Hello`], the capability announcement, and [`negotiate`].

use prost::Message as _;

use crate::proto::v1 as pb;
use crate::{Error, FeatureSet, ProtocolVersion};

/// Largest encoded [`Hello`] accepted from the network.
pub const MAX_HELLO_LEN: usize = 1024;
/// Longest agent string accepted, in bytes.
pub const MAX_AGENT_LEN: usize = 256;

/// What a node speaks and what it requires of its peers: the first message on a connection.
///
/// ```
/// use causality_version::{negotiate, FeatureSet, Hello, ProtocolVersion};
///
/// let a = Hello::new(ProtocolVersion::new(1, 3, 0), FeatureSet::PUB_SUB | FeatureSet::PROOF_SHARING)
///     .with_required_features(FeatureSet::PUB_SUB);
/// let b = Hello::new(ProtocolVersion::new(1, 2, 5), FeatureSet::PUB_SUB);
/// let agreed = negotiate(&a, &b).unwrap();
/// assert_eq!(agreed.version, ProtocolVersion::new(1, 2, 5));
/// assert_eq!(agreed.features, FeatureSet::PUB_SUB);
///
/// let strict = a.clone().with_required_features(FeatureSet::PROOF_SHARING);
/// let err = negotiate(&strict, &b).unwrap_err();
/// assert_eq!(err.to_string(), "the remote peer lacks required features: ProofSharing");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The highest version this node speaks.
    pub version: ProtocolVersion,
    /// The oldest peer version this node accepts; same major as `version`.
    pub min_peer_version: ProtocolVersion,
    /// Features this node supports.
    pub features: FeatureSet,
    /// Features this node requires its peers to support.
    pub required_features: FeatureSet,
    /// Implementation name and version, e.g. `causality-node/0.1.0`.
    pub agent: String,
}

impl Hello {
    /// A node speaking `version` with `features`, accepting any peer of the same major
    /// version and requiring no features.
    pub fn new(version: ProtocolVersion, features: FeatureSet) -> Self {
        Self {
            version,
            min_peer_version: ProtocolVersion::new(version.major, 0, 0),
            features,
            required_features: FeatureSet::EMPTY,
            agent: String::new(),
        }
    }

    /// Accept only peers at `min` or newer (its major must equal ours).
    pub fn with_min_peer_version(mut self, min: ProtocolVersion) -> Self {
        self.min_peer_version = min;
        self
    }

    /// Require these features of every peer.
    pub fn with_required_features(mut self, required: FeatureSet) -> Self {
        self.required_features = required;
        self
    }

    /// Set the agent string.
    pub fn with_agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = agent.into();
        self
    }

    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        pb::Hello::from(self).encode_to_vec()
    }

    /// Decodes and validates a `Hello` received from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_HELLO_LEN {
            return Err(Error::TooLarge {
                len: bytes.len(),
                max: MAX_HELLO_LEN,
            });
        }
        pb::Hello::decode(bytes)?.try_into()
    }
}

impl From<ProtocolVersion> for pb::ProtocolVersion {
    fn from(v: ProtocolVersion) -> Self {
        Self {
            major: v.major,
            minor: v.minor,
            patch: v.patch,
        }
    }
}

impl From<pb::ProtocolVersion> for ProtocolVersion {
    fn from(v: pb::ProtocolVersion) -> Self {
        Self::new(v.major, v.minor, v.patch)
    }
}

impl From<&Hello> for pb::Hello {
    fn from(h: &Hello) -> Self {
        Self {
            version: Some(h.version.into()),
            min_peer_version: Some(h.min_peer_version.into()),
            features: h.features.bits(),
            required_features: h.required_features.bits(),
            agent: h.agent.clone(),
        }
    }
}

impl TryFrom<pb::Hello> for Hello {
    type Error = Error;

    fn try_from(h: pb::Hello) -> Result<Self, Error> {
        let version: ProtocolVersion = h
            .version
            .ok_or(Error::InvalidHello("missing version"))?
            .into();
        let min_peer_version: ProtocolVersion = h
            .min_peer_version
            .ok_or(Error::InvalidHello("missing min_peer_version"))?
            .into();
        if min_peer_version.major != version.major {
            return Err(Error::InvalidHello(
                "min_peer_version has a different major version",
            ));
        }
        if h.agent.len() > MAX_AGENT_LEN {
            return Err(Error::InvalidHello("agent string longer than 256 bytes"));
        }
        Ok(Self {
            version,
            min_peer_version,
            features: FeatureSet::from_bits(h.features),
            required_features: FeatureSet::from_bits(h.required_features),
            agent: h.agent,
        })
    }
}

/// What two compatible nodes agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// The version both speak: the older of the two.
    pub version: ProtocolVersion,
    /// The features both support.
    pub features: FeatureSet,
}

/// Why two nodes cannot talk, seen from the local side.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Incompatibility {
    /// Different major versions.
    #[error("major versions differ: local {local}, remote {remote}")]
    MajorMismatch {
        /// Our version.
        local: ProtocolVersion,
        /// Their version.
        remote: ProtocolVersion,
    },
    /// The remote is older than we accept.
    #[error("the remote peer speaks {offered}; we require at least {required}")]
    RemoteTooOld {
        /// Our minimum.
        required: ProtocolVersion,
        /// What they speak.
        offered: ProtocolVersion,
    },
    /// We are older than the remote accepts.
    #[error("we speak {offered}; the remote peer requires at least {required}")]
    LocalTooOld {
        /// Their minimum.
        required: ProtocolVersion,
        /// What we speak.
        offered: ProtocolVersion,
    },
    /// The remote lacks features we require.
    #[error("the remote peer lacks required features: {0}")]
    RemoteMissingFeatures(FeatureSet),
    /// We lack features the remote requires.
    #[error("we lack features the remote peer requires: {0}")]
    LocalMissingFeatures(FeatureSet),
}

impl Incompatibility {
    /// The same incompatibility as the remote side sees it.
    pub fn mirrored(&self) -> Self {
        match self.clone() {
            Self::MajorMismatch { local, remote } => Self::MajorMismatch {
                local: remote,
                remote: local,
            },
            Self::RemoteTooOld { required, offered } => Self::LocalTooOld { required, offered },
            Self::LocalTooOld { required, offered } => Self::RemoteTooOld { required, offered },
            Self::RemoteMissingFeatures(f) => Self::LocalMissingFeatures(f),
            Self::LocalMissingFeatures(f) => Self::RemoteMissingFeatures(f),
        }
    }
}

/// Decides whether `local` and `remote` can talk, and on what.
///
/// Compatible when the majors are equal, each side's version is at least the other's
/// `min_peer_version`, and each side supports the other's required features. The checks
/// run in that order and the first failure is returned. Success is symmetric:
/// `negotiate(b, a)` succeeds exactly when `negotiate(a, b)` does, with the same
/// agreement; when only one check fails, each side reports it
/// [mirrored](Incompatibility::mirrored).
pub fn negotiate(local: &Hello, remote: &Hello) -> Result<Agreement, Incompatibility> {
    if local.version.major != remote.version.major {
        return Err(Incompatibility::MajorMismatch {
            local: local.version,
            remote: remote.version,
        });
    }
    if remote.version < local.min_peer_version {
        return Err(Incompatibility::RemoteTooOld {
            required: local.min_peer_version,
            offered: remote.version,
        });
    }
    if local.version < remote.min_peer_version {
        return Err(Incompatibility::LocalTooOld {
            required: remote.min_peer_version,
            offered: local.version,
        });
    }
    let they_lack = local.required_features.missing_from(remote.features);
    if !they_lack.is_empty() {
        return Err(Incompatibility::RemoteMissingFeatures(they_lack));
    }
    let we_lack = remote.required_features.missing_from(local.features);
    if !we_lack.is_empty() {
        return Err(Incompatibility::LocalMissingFeatures(we_lack));
    }
    Ok(Agreement {
        version: local.version.min(remote.version),
        features: local.features & remote.features,
    })
}
