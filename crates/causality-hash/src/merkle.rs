//! A Merkle tree in the shape of RFC 9162 (Certificate Transparency 2.0), hashed with BLAKE3.
//!
//! Leaf hash `H(0x00 ‖ data)`, interior node `H(0x01 ‖ left ‖ right)`, the empty tree
//! hashes to `H("")`, and a tree of `n` leaves splits at the largest power of two below `n`.
//! Inclusion and consistency proofs and their verification follow RFC 9162 §2.1.3–2.1.4,
//! for every tree size.
//!
//! Storage is separate from the algorithms: a tree is a set of *complete subtree* nodes
//! addressed by `(level, index)` — the hash of leaves `index·2^level .. (index+1)·2^level` —
//! that a [`NodeSource`] serves. [`Frontier`] appends leaves in O(log n) without reading
//! anything back and tells the caller which nodes became complete, so a persistent store
//! can write them in the same batch as the leaf. [`MerkleTree`] keeps every node in memory.

use std::fmt;

/// A 32-byte BLAKE3 tree hash.
pub type Hash = [u8; 32];

/// Proofs longer than this cannot belong to a tree of at most 2^64 leaves.
pub const MAX_PROOF_LEN: usize = 64;

/// The hash of a leaf: `BLAKE3(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    // One-shot hashing of a single block is much cheaper than the incremental hasher;
    // leaves are usually 32-byte ids.
    const BLOCK: usize = 64;
    if data.len() < BLOCK {
        let mut buf = [0u8; BLOCK];
        buf[1..=data.len()].copy_from_slice(data);
        return *blake3::hash(&buf[..=data.len()]).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.update(&[0x00]);
    h.update(data);
    *h.finalize().as_bytes()
}

/// The hash of an interior node: `BLAKE3(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    *blake3::hash(&buf).as_bytes()
}

/// The root of the empty tree: `BLAKE3("")`.
pub fn empty_root() -> Hash {
    *blake3::hash(&[]).as_bytes()
}

/// Errors from building or checking Merkle proofs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// A leaf index at or beyond the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The requested leaf.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A tree size larger than the tree that is stored.
    #[error("tree size {requested} exceeds the {available} leaves available")]
    SizeOutOfRange {
        /// The size asked for.
        requested: u64,
        /// The leaves the source holds.
        available: u64,
    },
    /// A consistency proof between sizes that do not satisfy `0 < old <= new`.
    #[error("no consistency proof from size {old} to size {new}")]
    InvalidSizes {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
    },
    /// The proof has the wrong number of hashes for its sizes.
    #[error("proof has the wrong length for its tree sizes")]
    WrongLength,
    /// The proof is well formed but does not lead to the expected root.
    #[error("proof does not match the root")]
    RootMismatch,
    /// A complete-subtree node is missing from the source.
    #[error("tree node at level {level}, index {index} is missing")]
    MissingNode {
        /// Level of the node (0 = leaves).
        level: u32,
        /// Index of the node within its level.
        index: u64,
    },
}

/// Serves the hashes of complete subtrees of a tree of [`NodeSource::size`] leaves.
pub trait NodeSource {
    /// The source's error; it must be able to carry [`MerkleError`].
    type Error: From<MerkleError>;

    /// Number of leaves stored.
    fn size(&self) -> u64;

    /// The hash of leaves `index << level .. (index + 1) << level`; only asked for
    /// subtrees that lie entirely within [`NodeSource::size`].
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of leaves `start..end`, where the range is one that the RFC 9162 recursion
/// produces (its start is aligned to the largest power of two not above its length).
fn subtree<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let len = end - start;
    debug_assert!(len > 0);
    if len.is_power_of_two() {
        let level = len.trailing_zeros();
        return src.node(level, start >> level);
    }
    // Walk down the right spine collecting complete left subtrees, then fold back up.
    let mut lefts = Vec::with_capacity(64);
    let (mut s, e) = (start, end);
    while !(e - s).is_power_of_two() {
        let k = split(e - s);
        lefts.push(src.node(k.trailing_zeros(), s >> k.trailing_zeros())?);
        s += k;
    }
    let level = (e - s).trailing_zeros();
    let mut acc = src.node(level, s >> level)?;
    for left in lefts.iter().rev() {
        acc = node_hash(left, &acc);
    }
    Ok(acc)
}

fn check_size<S: NodeSource>(src: &S, size: u64) -> Result<(), S::Error> {
    if size > src.size() {
        return Err(MerkleError::SizeOutOfRange {
            requested: size,
            available: src.size(),
        }
        .into());
    }
    Ok(())
}

/// The root of the first `size` leaves of `src`.
pub fn root_at<S: NodeSource>(src: &S, size: u64) -> Result<Hash, S::Error> {
    check_size(src, size)?;
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(src, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<InclusionProof, S::Error> {
    check_size(src, size)?;
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size }.into());
    }
    // Top-down, then reversed: RFC 9162 lists the path from the leaf upwards.
    let mut path = Vec::with_capacity(64);
    let (mut start, mut end, m) = (0, size, index);
    while end - start > 1 {
        let k = split(end - start);
        if m - start < k {
            path.push(subtree(src, start + k, end)?);
            end = start + k;
        } else {
            path.push(subtree(src, start, start + k)?);
            start += k;
        }
    }
    path.reverse();
    Ok(InclusionProof { index, size, path })
}

/// The consistency proof between the trees of the first `old` and first `new` leaves.
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    old: u64,
    new: u64,
) -> Result<ConsistencyProof, S::Error> {
    check_size(src, new)?;
    if old == 0 || old > new {
        return Err(MerkleError::InvalidSizes { old, new }.into());
    }
    let mut path = Vec::with_capacity(64);
    let (mut start, mut end, mut complete) = (0, new, true);
    let m = old;
    // SUBPROOF(m, D[start:end], complete), iteratively, top-down.
    while m - start != end - start {
        let k = split(end - start);
        if m - start <= k {
            path.push(subtree(src, start + k, end)?);
            end = start + k;
        } else {
            path.push(subtree(src, start, start + k)?);
            start += k;
            complete = false;
        }
    }
    if !complete {
        path.push(subtree(src, start, end)?);
    }
    path.reverse();
    Ok(ConsistencyProof { old, new, path })
}

/// Proof that a leaf is in a tree of a given size (RFC 9162 §2.1.3).
#[derive(Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Index of the leaf.
    pub index: u64,
    /// Size of the tree the proof is for.
    pub size: u64,
    /// Sibling hashes from the leaf up to the root.
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Checks that `leaf` (a [`leaf_hash`]) at `self.index` leads to `root`.
    pub fn verify(&self, leaf: &Hash, root: &Hash) -> Result<(), MerkleError> {
        if self.index >= self.size {
            return Err(MerkleError::IndexOutOfRange {
                index: self.index,
                size: self.size,
            });
        }
        if self.path.len() > MAX_PROOF_LEN {
            return Err(MerkleError::WrongLength);
        }
        let (mut fnode, mut snode) = (self.index, self.size - 1);
        let mut r = *leaf;
        for p in &self.path {
            if snode == 0 {
                return Err(MerkleError::WrongLength);
            }
            if fnode & 1 == 1 || fnode == snode {
                r = node_hash(p, &r);
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            } else {
                r = node_hash(&r, p);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        if snode != 0 {
            return Err(MerkleError::WrongLength);
        }
        if r != *root {
            return Err(MerkleError::RootMismatch);
        }
        Ok(())
    }
}

/// Proof that a tree of `old` leaves is a prefix of a tree of `new` leaves (RFC 9162 §2.1.4).
#[derive(Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older, smaller tree size.
    pub old: u64,
    /// The newer tree size.
    pub new: u64,
    /// The proof hashes.
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Checks the proof against the two roots.
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), MerkleError> {
        let (old, new) = (self.old, self.new);
        if old == 0 || old > new {
            return Err(MerkleError::InvalidSizes { old, new });
        }
        if self.path.len() > MAX_PROOF_LEN {
            return Err(MerkleError::WrongLength);
        }
        if old == new {
            if !self.path.is_empty() {
                return Err(MerkleError::WrongLength);
            }
            return if old_root == new_root {
                Ok(())
            } else {
                Err(MerkleError::RootMismatch)
            };
        }
        let mut path = self.path.iter();
        let first = if old.is_power_of_two() {
            *old_root
        } else {
            *path.next().ok_or(MerkleError::WrongLength)?
        };
        let (mut fnode, mut snode) = (old - 1, new - 1);
        while fnode & 1 == 1 {
            fnode >>= 1;
            snode >>= 1;
        }
        let (mut fr, mut sr) = (first, first);
        for c in path {
            if snode == 0 {
                return Err(MerkleError::WrongLength);
            }
            if fnode & 1 == 1 || fnode == snode {
                fr = node_hash(c, &fr);
                sr = node_hash(c, &sr);
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            } else {
                sr = node_hash(&sr, c);
            }
            fnode >>= 1;
            snode >>= 1;
        }
        if snode != 0 {
            return Err(MerkleError::WrongLength);
        }
        if fr != *old_root || sr != *new_root {
            return Err(MerkleError::RootMismatch);
        }
        Ok(())
    }
}

impl fmt::Debug for InclusionProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InclusionProof")
            .field("index", &self.index)
            .field("size", &self.size)
            .field("path_len", &self.path.len())
            .finish()
    }
}

impl fmt::Debug for ConsistencyProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistencyProof")
            .field("old", &self.old)
            .field("new", &self.new)
            .field("path_len", &self.path.len())
            .finish()
    }
}

/// A complete-subtree node that became available: `(level, index, hash)`.
pub type NewNode = (u32, u64, Hash);

/// The right edge of a tree: the roots of its maximal complete subtrees ("peaks").
///
/// Enough to append leaves and compute the root without reading stored nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Peak hashes, largest subtree first; one per set bit of `size`.
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the frontier of the first `size` leaves from stored nodes (O(log n) reads).
    pub fn load<S: NodeSource>(src: &S, size: u64) -> Result<Self, S::Error> {
        check_size(src, size)?;
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut offset = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                peaks.push(src.node(level, offset >> level)?);
                offset += 1 << level;
            }
        }
        Ok(Self { size, peaks })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; `on_node` receives every node that became complete, the leaf
    /// itself (level 0) first, then its completed ancestors bottom-up.
    pub fn push(&mut self, leaf: Hash, mut on_node: impl FnMut(NewNode)) {
        let index = self.size;
        on_node((0, index, leaf));
        let mut acc = leaf;
        let mut level = 0u32;
        let mut idx = index;
        while idx & 1 == 1 {
            let left = self.peaks.pop().expect("a set bit has a peak");
            acc = node_hash(&left, &acc);
            level += 1;
            idx >>= 1;
            on_node((level, idx, acc));
        }
        self.peaks.push(acc);
        self.size += 1;
    }

    /// The root of the tree.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |acc, peak| node_hash(peak, &acc))
    }
}

/// A Merkle tree with every complete-subtree node in memory (about 64 bytes per leaf).
///
/// # Example
///
/// ```
/// use causality_hash::merkle::{leaf_hash, MerkleTree};
///
/// let mut tree = MerkleTree::new();
/// for i in 0u32..10 {
///     tree.push(leaf_hash(&i.to_be_bytes()));
/// }
/// let root = tree.root();
/// let proof = tree.inclusion_proof(3, 10).unwrap();
/// proof.verify(&leaf_hash(&3u32.to_be_bytes()), &root).unwrap();
///
/// let old_root = tree.root_at(6).unwrap();
/// tree.consistency_proof(6, 10).unwrap().verify(&old_root, &root).unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct MerkleTree {
    frontier: Frontier,
    /// `levels[l][i]` is node `(l, i)`.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf hash (see [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        let levels = &mut self.levels;
        self.frontier.push(leaf, |(level, index, hash)| {
            let level = level as usize;
            if levels.len() <= level {
                levels.push(Vec::new());
            }
            debug_assert_eq!(levels[level].len() as u64, index);
            levels[level].push(hash);
        });
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.frontier.size()
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current root.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The root of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        root_at(self, size)
    }

    /// See [`inclusion_proof`].
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, MerkleError> {
        inclusion_proof(self, index, size)
    }

    /// See [`consistency_proof`].
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<ConsistencyProof, MerkleError> {
        consistency_proof(self, old, new)
    }
}

impl NodeSource for MerkleTree {
    type Error = MerkleError;

    fn size(&self) -> u64 {
        self.len()
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(MerkleError::MissingNode { level, index })
    }
}
