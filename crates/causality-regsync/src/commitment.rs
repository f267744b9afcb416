//! State commitments: a Merkle tree (causality-hash's RFC 9162 tree) over a domain's
//! registers sorted by id, each leaf `register id ‖ state hash`. One register is shown to
//! be in the committed set, at a state, by an inclusion proof; to be absent by the
//! inclusion proofs of its two neighbours, adjacent in the sorted order.

use causality_hash::ContentId;
use causality_hash::merkle::{Hash, leaf_hash};
use causality_hash::merkle::{InclusionProof, MerkleTree};

use crate::model::{RegisterId, StateHash};

/// The leaf of a register at a state.
pub(crate) fn leaf(register: &RegisterId, state: &StateHash) -> Hash {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(register.as_bytes());
    bytes[32..].copy_from_slice(state.as_bytes());
    leaf_hash(&bytes)
}

/// A commitment to a set of registers (sorted by id, one state each).
#[derive(Clone, Debug)]
pub struct SetCommitment {
    entries: Vec<(RegisterId, StateHash)>,
    tree: MerkleTree,
}

/// A register's leaf with its inclusion proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenLeaf {
    /// The register.
    pub register_id: RegisterId,
    /// Its committed state.
    pub state_hash: StateHash,
    /// Position and path.
    pub proof: InclusionProof,
}

/// Whether, and at what state, a register is in a committed set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipProof {
    /// In the set, at this state.
    Included(ProvenLeaf),
    /// Not in the set: the neighbours on either side (none beyond an end).
    Excluded {
        /// The greatest id below it.
        left: Option<ProvenLeaf>,
        /// The least id above it.
        right: Option<ProvenLeaf>,
    },
}

/// Why a membership proof does not check out.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// A path does not lead to the root.
    #[error("a Merkle path does not lead to the committed root")]
    Path,
    /// An inclusion proof for another register.
    #[error("the proof is for another register")]
    OtherRegister,
    /// Neighbours that are not adjacent or not around the register.
    #[error("the neighbours do not bracket the register")]
    NotBracketing,
    /// A proof for a tree of another size.
    #[error("the proof is for a set of another size")]
    Size,
}

impl SetCommitment {
    /// The commitment to `entries` (sorted here; ids must be distinct).
    pub fn new(mut entries: Vec<(RegisterId, StateHash)>) -> Self {
        entries.sort();
        entries.dedup_by_key(|(id, _)| *id);
        let mut tree = MerkleTree::new();
        for (id, state) in &entries {
            tree.push(leaf(id, state));
        }
        Self { entries, tree }
    }

    /// The root.
    pub fn root(&self) -> ContentId {
        ContentId::from_bytes(self.tree.root())
    }

    /// Registers in the set.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn proven(&self, index: usize) -> ProvenLeaf {
        let (register_id, state_hash) = self.entries[index];
        ProvenLeaf {
            register_id,
            state_hash,
            proof: self
                .tree
                .inclusion_proof(index as u64, self.len())
                .expect("index within the tree"),
        }
    }

    /// Proves `register`'s membership (or absence).
    pub fn prove(&self, register: &RegisterId) -> MembershipProof {
        match self.entries.binary_search_by(|(id, _)| id.cmp(register)) {
            Ok(i) => MembershipProof::Included(self.proven(i)),
            Err(i) => MembershipProof::Excluded {
                left: i.checked_sub(1).map(|l| self.proven(l)),
                right: (i < self.entries.len()).then(|| self.proven(i)),
            },
        }
    }
}

fn check(leaf_: &ProvenLeaf, root: &ContentId, size: u64) -> Result<(), ProofError> {
    if leaf_.proof.size != size {
        return Err(ProofError::Size);
    }
    leaf_
        .proof
        .verify(
            &leaf(&leaf_.register_id, &leaf_.state_hash),
            root.as_bytes(),
        )
        .map_err(|_| ProofError::Path)
}

impl MembershipProof {
    /// Checks the proof against a commitment (`root` over `size` registers); returns the
    /// register's committed state, or `None` when the proof shows it absent.
    pub fn verify(
        &self,
        register: &RegisterId,
        root: &ContentId,
        size: u64,
    ) -> Result<Option<StateHash>, ProofError> {
        match self {
            Self::Included(l) => {
                if l.register_id != *register {
                    return Err(ProofError::OtherRegister);
                }
                check(l, root, size)?;
                Ok(Some(l.state_hash))
            }
            Self::Excluded { left, right } => {
                for l in [left, right].into_iter().flatten() {
                    check(l, root, size)?;
                }
                let ok = match (left, right) {
                    (None, None) => size == 0,
                    (Some(l), None) => l.register_id < *register && l.proof.index + 1 == size,
                    (None, Some(r)) => *register < r.register_id && r.proof.index == 0,
                    (Some(l), Some(r)) => {
                        l.register_id < *register
                            && *register < r.register_id
                            && l.proof.index + 1 == r.proof.index
                    }
                };
                if ok {
                    Ok(None)
                } else {
                    Err(ProofError::NotBracketing)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContentId {
        ContentId::of(&[n])
    }

    #[test]
    fn inclusion_and_exclusion_verify_and_lies_do_not() {
        let entries: Vec<_> = (0..20u8).map(|n| (id(n), id(n + 100))).collect();
        let c = SetCommitment::new(entries[..19].to_vec());
        let root = c.root();
        for (i, s) in &entries[..19] {
            assert_eq!(c.prove(i).verify(i, &root, 19), Ok(Some(*s)));
        }
        let absent = entries[19].0;
        assert_eq!(c.prove(&absent).verify(&absent, &root, 19), Ok(None));
        // An inclusion proof presented for another register, a wrong size, a wrong root.
        let present = entries[3].0;
        assert_eq!(
            c.prove(&present).verify(&absent, &root, 19),
            Err(ProofError::OtherRegister)
        );
        assert_eq!(
            c.prove(&present).verify(&present, &root, 20),
            Err(ProofError::Size)
        );
        assert_eq!(
            c.prove(&present).verify(&present, &id(1), 19),
            Err(ProofError::Path)
        );
        // An exclusion claimed for a present register with non-adjacent neighbours.
        let MembershipProof::Excluded { left, right } = c.prove(&absent) else {
            panic!()
        };
        let far = SetCommitment::new(entries[..19].to_vec());
        let mut sorted = entries[..19].to_vec();
        sorted.sort();
        let lie = MembershipProof::Excluded {
            left: Some(far.proven(0)),
            right: Some(far.proven(2)),
        };
        assert_eq!(
            lie.verify(&sorted[1].0, &root, 19),
            Err(ProofError::NotBracketing)
        );
        assert!(left.is_some() || right.is_some());
    }

    #[test]
    fn the_empty_set_excludes_everything() {
        let c = SetCommitment::new(Vec::new());
        assert_eq!(c.prove(&id(1)).verify(&id(1), &c.root(), 0), Ok(None));
    }
}
