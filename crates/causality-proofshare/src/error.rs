//! The crate's errors: one enum per thing that can go wrong, each variant a reason a user or
//! an operator can act on.

use causality_hash::ContentId;
use causality_net::NetError;
use thiserror::Error;

use crate::system::ProofSystem;

/// Why a proof, a verification key or a public input was not accepted.
///
/// Everything decoded from the network or a file ends here when it is bad: the caller logs
/// it, counts it by [`VerifyError::reason`] and, for a peer, penalizes it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    /// No verifier is registered for this proof system.
    #[error("unknown proof system {0}")]
    UnknownSystem(u32),
    /// The proof's system is not the verification key's.
    #[error("proof is for {proof}, the verification key for {key}")]
    SystemMismatch {
        /// The proof's system.
        proof: ProofSystem,
        /// The key's system.
        key: ProofSystem,
    },
    /// An encoding has the wrong length (trailing bytes are this too).
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        /// Which object.
        what: &'static str,
        /// How many bytes it must have.
        expected: usize,
        /// How many it has.
        got: usize,
    },
    /// A field element is not below its modulus (it would be reduced silently by a lax parser).
    #[error("{what}: field element is not canonical (not below the modulus)")]
    NonCanonicalField {
        /// Which element.
        what: &'static str,
    },
    /// A point's encoding is not the one canonical form (bad flags, junk beside infinity).
    #[error("{what}: point encoding is not canonical")]
    NonCanonicalPoint {
        /// Which point.
        what: &'static str,
    },
    /// A point is not on the curve.
    #[error("{what}: point is not on the curve")]
    NotOnCurve {
        /// Which point.
        what: &'static str,
    },
    /// A point is on the curve but not in the prime-order subgroup.
    #[error("{what}: point is not in the prime-order subgroup")]
    NotInSubgroup {
        /// Which point.
        what: &'static str,
    },
    /// A proof element is the point at infinity, which no honest prover produces.
    #[error("{what}: point at infinity")]
    Identity {
        /// Which point.
        what: &'static str,
    },
    /// The number of public inputs is not what the verification key expects.
    #[error("expected {expected} public inputs, got {got}")]
    InputCount {
        /// What the key expects.
        expected: usize,
        /// What came.
        got: usize,
    },
    /// A verification key declares more public inputs than the configured bound.
    #[error("verification key has {got} public inputs, more than the limit {limit}")]
    TooManyInputs {
        /// What it declares.
        got: u64,
        /// The bound.
        limit: usize,
    },
    /// A body does not hash to the content id it was announced or requested under.
    #[error("{what} does not match its id: announced {expected}, content is {actual}")]
    IdMismatch {
        /// Which object.
        what: &'static str,
        /// The id it came under.
        expected: ContentId,
        /// The id of what arrived.
        actual: ContentId,
    },
    /// Everything decoded, and the proof is false.
    #[error("the proof does not verify")]
    Invalid,
}

impl VerifyError {
    /// A short, stable label for metrics and logs (`invalid`, `not_on_curve`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownSystem(_) => "unknown_system",
            Self::SystemMismatch { .. } => "system_mismatch",
            Self::Length { .. } => "length",
            Self::NonCanonicalField { .. } => "non_canonical_field",
            Self::NonCanonicalPoint { .. } => "non_canonical_point",
            Self::NotOnCurve { .. } => "not_on_curve",
            Self::NotInSubgroup { .. } => "not_in_subgroup",
            Self::Identity { .. } => "identity",
            Self::InputCount { .. } => "input_count",
            Self::TooManyInputs { .. } => "too_many_inputs",
            Self::IdMismatch { .. } => "id_mismatch",
            Self::Invalid => "invalid",
        }
    }
}

/// Why a snarkjs JSON file could not be imported.
#[derive(Debug, Error)]
pub enum ImportError {
    /// Not JSON, or not the expected shape.
    #[error("not a snarkjs {what}: {reason}")]
    Shape {
        /// What was expected (`verification key`, `proof`, `public signals`).
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file is for another scheme or curve.
    #[error("unsupported {field} `{value}` (only groth16 over bn128 is supported)")]
    Unsupported {
        /// `protocol` or `curve`.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// A number is not a plain decimal integer.
    #[error("{what}: `{value}` is not a decimal integer")]
    Number {
        /// Where.
        what: &'static str,
        /// The text, truncated.
        value: String,
    },
    /// The numbers parse, but the object is not valid (off the curve, ≥ the modulus, …).
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// The file is larger than an import accepts.
    #[error("input is {got} bytes, more than the limit {limit}")]
    TooLarge {
        /// Its size.
        got: usize,
        /// The bound.
        limit: usize,
    },
}

/// Why a proof-sharing operation failed.
#[derive(Debug, Error)]
pub enum ProofShareError {
    /// The network refused or failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The proof is not in the local store.
    #[error("proof {0} is not in the local store")]
    UnknownProof(ContentId),
    /// The verification key is not known and could not be fetched.
    #[error("verification key {0} is unknown and no peer supplied it")]
    UnknownKey(ContentId),
    /// No peer supplied the proof.
    #[error("no peer supplied proof {0}")]
    NotFound(ContentId),
    /// A proof or key did not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A message is over a limit or malformed.
    #[error(transparent)]
    Message(#[from] crate::messages::MessageError),
    /// The peer that served the proof is quarantined after repeated invalid proofs.
    #[error("peer {0} is quarantined after repeated invalid proofs")]
    Quarantined(causality_net::PeerId),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}
