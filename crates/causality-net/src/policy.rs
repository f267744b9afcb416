//! Authorization: who may do what. Peers are authenticated by their key (the transport
//! proves it); this policy decides what an authenticated peer is allowed to do, and upper
//! crates ask it before sensitive operations.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::NetError;
use crate::peer::PeerId;

/// A role a peer can hold, e.g. `prover`, `verifier`, `executor`, `storage`, `admin`.
pub type Role = String;

/// The authorization policy.
///
/// ```
/// use causality_net::{Keypair, Policy};
///
/// let alice = Keypair::from_index(1).peer_id();
/// let bob = Keypair::from_index(2).peer_id();
/// let policy = Policy::open()
///     .grant(alice, "executor")
///     .require("/causality/exec/claim", "executor");
/// assert!(policy.authorize(&alice, "/causality/exec/claim").is_ok());
/// assert!(policy.authorize(&bob, "/causality/exec/claim").is_err());
/// assert!(policy.authorize(&bob, "/causality/ping").is_ok());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// When set, only these peers may connect at all.
    allowlist: Option<BTreeSet<PeerId>>,
    /// Peers never allowed.
    denylist: BTreeSet<PeerId>,
    roles: BTreeMap<PeerId, BTreeSet<Role>>,
    /// Operation (protocol id or name) → role required to perform it.
    required: BTreeMap<String, Role>,
}

impl Policy {
    /// A policy that lets every authenticated peer connect and requires no roles.
    pub fn open() -> Self {
        Self::default()
    }

    /// Only peers in `peers` may connect.
    pub fn allow_only(mut self, peers: impl IntoIterator<Item = PeerId>) -> Self {
        self.allowlist = Some(peers.into_iter().collect());
        self
    }

    /// `peer` may never connect.
    pub fn deny(mut self, peer: PeerId) -> Self {
        self.denylist.insert(peer);
        self
    }

    /// Gives `peer` a role.
    pub fn grant(mut self, peer: PeerId, role: impl Into<Role>) -> Self {
        self.roles.entry(peer).or_default().insert(role.into());
        self
    }

    /// Performing `operation` requires `role`.
    pub fn require(mut self, operation: impl Into<String>, role: impl Into<Role>) -> Self {
        self.required.insert(operation.into(), role.into());
        self
    }

    /// Whether `peer` may connect.
    pub fn may_connect(&self, peer: &PeerId) -> bool {
        !self.denylist.contains(peer) && self.allowlist.as_ref().is_none_or(|a| a.contains(peer))
    }

    /// Whether `peer` holds `role`.
    pub fn has_role(&self, peer: &PeerId, role: &str) -> bool {
        self.roles.get(peer).is_some_and(|r| r.contains(role))
    }

    /// Checks that `peer` may perform `operation`.
    pub fn authorize(&self, peer: &PeerId, operation: &str) -> Result<(), NetError> {
        let allowed = self.may_connect(peer)
            && self
                .required
                .get(operation)
                .is_none_or(|role| self.has_role(peer, role));
        if allowed {
            Ok(())
        } else {
            Err(NetError::Unauthorized {
                peer: *peer,
                operation: operation.to_owned(),
            })
        }
    }
}
