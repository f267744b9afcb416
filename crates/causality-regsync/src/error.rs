//! The crate's errors: what was wrong with bytes ([`DecodeError`]), with an operation
//! ([`OpError`]), with an update ([`UpdateError`]), and what a caller of the sync service
//! gets ([`SyncError`]).

use causality_hash::ContentId;
use causality_net::NetError;
use thiserror::Error;

use crate::model::{Lifecycle, RegisterId};

/// Bytes that are not a valid message.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Larger than its limit.
    #[error("{what} is {size} (limit {limit})")]
    TooLarge {
        /// Which object or count.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not protobuf of the expected message.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// A field missing or of the wrong form (an id not 32 bytes, an unknown enum value).
    #[error("bad or missing field: {0}")]
    Field(&'static str),
}

/// Why a delta does not apply to a state.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum OpError {
    /// The delta's previous state hash is not the state it was applied to.
    #[error("the delta does not follow this state (wrong previous state hash)")]
    WrongPrevious,
    /// A delta with a previous state for a register not known here.
    #[error("the previous state is not known here")]
    UnknownPrevious,
    /// A first delta that is not exactly one `Create`.
    #[error("a register's first delta must be exactly one create")]
    NotACreation,
    /// A `Create` of a register that exists.
    #[error("the register already exists")]
    AlreadyExists,
    /// A delta with no operations.
    #[error("empty delta")]
    Empty,
    /// The header's epoch is not the previous one plus one.
    #[error("epoch {got}, expected {expected}")]
    Epoch {
        /// What it must be.
        expected: u64,
        /// What it is.
        got: u64,
    },
    /// The block height went backwards.
    #[error("block height {got} is below the previous state's {previous}")]
    HeightWentBack {
        /// The previous state's height.
        previous: u64,
        /// The new one.
        got: u64,
    },
    /// A change of contents or owner on a register that is not active.
    #[error("the register is {0:?}, not active")]
    NotActive(Lifecycle),
    /// A lifecycle transition that is not allowed.
    #[error("a register may not go from {from:?} to {to:?}")]
    Transition {
        /// From.
        from: Lifecycle,
        /// To.
        to: Lifecycle,
    },
    /// A balance operation on a register that holds no balance.
    #[error("the register holds no token balance")]
    NotABalance,
    /// A balance would go negative.
    #[error("balance {balance} is less than {needed}")]
    Insufficient {
        /// What there is.
        balance: u64,
        /// What the operation takes.
        needed: u64,
    },
    /// A split or merge that does not conserve the balance.
    #[error("conservation: {0}")]
    Conservation(&'static str),
    /// Another register the operation needs is not known here (yet).
    #[error("needs register {0} first")]
    MissingDependency(RegisterId),
}

/// Why an update (a signed header with its delta or state) was not accepted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum UpdateError {
    /// Bad bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The header is not signed by the previous state's owner.
    #[error("not signed by the register's owner")]
    Unauthorized,
    /// The delta is not the one the header names.
    #[error("the delta's id is not the header's")]
    WrongDelta,
    /// The resulting state is not the one the header names.
    #[error("the resulting state hash {got} is not the announced {announced}")]
    WrongStateHash {
        /// The header's.
        announced: ContentId,
        /// What applying the delta gave.
        got: ContentId,
    },
    /// The header's fields disagree with the state (owner, epoch, height, register id).
    #[error("the header disagrees with the state: {0}")]
    HeaderMismatch(&'static str),
    /// The operations are invalid.
    #[error(transparent)]
    Op(#[from] OpError),
    /// The write carries a lower fencing token than one already accepted for its key.
    #[error("stale fencing token {got} (already accepted {seen})")]
    StaleFence {
        /// The highest accepted.
        seen: u64,
        /// The update's.
        got: u64,
    },
    /// The class requires a proof and the update carries none.
    #[error("class `{0}` requires a proof and the update has none")]
    MissingProof(String),
    /// The proof did not verify, is under another key, or does not bind this update.
    #[error("proof {proof}: {reason}")]
    InvalidProof {
        /// The proof.
        proof: ContentId,
        /// Why.
        reason: String,
    },
}

/// What the sync service's callers get.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SyncError {
    /// No peer had the register (or none answered).
    #[error("register {0} is not known here and no peer provided it")]
    NotFound(RegisterId),
    /// Peers answered, but with nothing valid.
    #[error("register {register}: {reason}")]
    Invalid {
        /// The register.
        register: RegisterId,
        /// The last reason.
        reason: String,
    },
    /// A peer could not answer a request (not connected, refused, timed out, or an
    /// answer that does not decode).
    #[error("peer: {0}")]
    Remote(String),
    /// The update was refused.
    #[error(transparent)]
    Update(#[from] UpdateError),
    /// The nullifier is already used (the accepted use is given).
    #[error("nullifier already used by {}", .0.id())]
    NullifierUsed(Box<crate::model::NullifierUse>),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// The network failed.
    #[error("network: {0}")]
    Net(String),
    /// The service stopped.
    #[error("the sync service stopped")]
    Stopped,
}

impl From<NetError> for SyncError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Closed => Self::Stopped,
            other => Self::Net(other.to_string()),
        }
    }
}
