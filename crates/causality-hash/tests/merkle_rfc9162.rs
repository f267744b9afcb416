//! Cross-check of the Merkle tree against a literal transcription of RFC 9162's recursive
//! definitions (MTH, PATH, PROOF/SUBPROOF), for every tree size from 1 to 300.

use causality_hash::merkle::{
    self, ConsistencyProof, Frontier, Hash, InclusionProof, MerkleError, MerkleTree, leaf_hash,
    node_hash,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn k_of(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 9162 §2.1.1, MTH(D[n]).
fn mth(d: &[Vec<u8>]) -> Hash {
    match d.len() {
        0 => *blake3::hash(b"").as_bytes(),
        1 => {
            let mut input = vec![0u8];
            input.extend_from_slice(&d[0]);
            *blake3::hash(&input).as_bytes()
        }
        n => {
            let k = k_of(n);
            let mut input = vec![1u8];
            input.extend_from_slice(&mth(&d[..k]));
            input.extend_from_slice(&mth(&d[k..]));
            *blake3::hash(&input).as_bytes()
        }
    }
}

/// RFC 9162 §2.1.3.1, PATH(m, D[n]).
fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    if d.len() == 1 {
        return vec![];
    }
    let k = k_of(d.len());
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// RFC 9162 §2.1.4.1, SUBPROOF(m, D[n], b).
fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![mth(d)] };
    }
    let k = k_of(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

fn leaves(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("leaf {i}").into_bytes()).collect()
}

fn tamper(path: &[Hash], rng: &mut ChaCha8Rng) -> Vec<Hash> {
    let mut bad = path.to_vec();
    let i = rng.gen_range(0..bad.len());
    bad[i][rng.gen_range(0..32)] ^= 1 << rng.gen_range(0..8);
    bad
}

#[test]
fn matches_rfc9162_for_sizes_1_to_300() {
    let mut rng = ChaCha8Rng::seed_from_u64(9162);
    let all = leaves(300);
    let mut tree = MerkleTree::new();
    for n in 1..=300usize {
        let d = &all[..n];
        tree.push(leaf_hash(&d[n - 1]));
        let root = mth(d);
        assert_eq!(tree.root(), root, "root at size {n}");
        assert_eq!(tree.root_at(n as u64).unwrap(), root);

        // Inclusion: first, last and random leaves.
        let mut indices = vec![0, n - 1];
        indices.extend((0..4).map(|_| rng.gen_range(0..n)));
        for m in indices {
            let proof = tree.inclusion_proof(m as u64, n as u64).unwrap();
            assert_eq!(proof.path, path(m, d), "PATH({m}, D[{n}])");
            let leaf = leaf_hash(&d[m]);
            proof.verify(&leaf, &root).unwrap();
            // A different leaf, a different index or a tampered path fails.
            let other = leaf_hash(b"not in the tree");
            assert_eq!(proof.verify(&other, &root), Err(MerkleError::RootMismatch));
            if n > 1 {
                let wrong_index = InclusionProof {
                    index: (proof.index + 1) % n as u64,
                    ..proof.clone()
                };
                assert!(wrong_index.verify(&leaf, &root).is_err(), "index moved");
                let bad = InclusionProof {
                    path: tamper(&proof.path, &mut rng),
                    ..proof.clone()
                };
                assert!(bad.verify(&leaf, &root).is_err());
                let short = InclusionProof {
                    path: proof.path[1..].to_vec(),
                    ..proof.clone()
                };
                assert!(short.verify(&leaf, &root).is_err());
            }
        }

        // Consistency from size 1, from n itself and from random older sizes.
        let mut olds = vec![1, n];
        olds.extend((0..4).map(|_| rng.gen_range(1..=n)));
        for m in olds {
            let proof = tree.consistency_proof(m as u64, n as u64).unwrap();
            assert_eq!(proof.path, subproof(m, d, true), "PROOF({m}, D[{n}])");
            let old_root = mth(&d[..m]);
            proof.verify(&old_root, &root).unwrap();
            if m < n {
                let bad = ConsistencyProof {
                    path: tamper(&proof.path, &mut rng),
                    ..proof.clone()
                };
                assert!(bad.verify(&old_root, &root).is_err());
                assert!(proof.verify(&root, &old_root).is_err(), "swapped roots");
                let other_old = mth(&all[1..=m]);
                assert!(
                    proof.verify(&other_old, &root).is_err(),
                    "a different history"
                );
            }
        }
    }
}

#[test]
fn random_pairs_in_a_large_tree() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut tree = MerkleTree::new();
    let n = 5_000u64;
    for i in 0..n {
        tree.push(leaf_hash(&i.to_le_bytes()));
    }
    for _ in 0..200 {
        let new = rng.gen_range(1..=n);
        let old = rng.gen_range(1..=new);
        let (old_root, new_root) = (tree.root_at(old).unwrap(), tree.root_at(new).unwrap());
        tree.consistency_proof(old, new)
            .unwrap()
            .verify(&old_root, &new_root)
            .unwrap();
        let index = rng.gen_range(0..new);
        tree.inclusion_proof(index, new)
            .unwrap()
            .verify(&leaf_hash(&index.to_le_bytes()), &new_root)
            .unwrap();
    }
}

#[test]
fn frontier_reloads_from_stored_nodes() {
    let mut tree = MerkleTree::new();
    for i in 0u64..1000 {
        tree.push(leaf_hash(&i.to_le_bytes()));
        let size = i + 1;
        let loaded = Frontier::load(&tree, size).unwrap();
        assert_eq!(loaded.size(), size);
        assert_eq!(loaded.root(), tree.root());
    }
    let mut partial = Frontier::load(&tree, 500).unwrap();
    assert_eq!(partial.root(), tree.root_at(500).unwrap());
    partial.push(leaf_hash(&500u64.to_le_bytes()), |_| {});
    assert_eq!(partial.root(), tree.root_at(501).unwrap());
}

#[test]
fn frontier_reports_every_completed_node() {
    let mut frontier = Frontier::new();
    let mut nodes = Vec::new();
    for i in 0u64..8 {
        frontier.push(leaf_hash(&i.to_le_bytes()), |n| nodes.push((n.0, n.1)));
    }
    let expected = [
        (0, 0),
        (0, 1),
        (1, 0),
        (0, 2),
        (0, 3),
        (1, 1),
        (2, 0),
        (0, 4),
        (0, 5),
        (1, 2),
        (0, 6),
        (0, 7),
        (1, 3),
        (2, 1),
        (3, 0),
    ];
    assert_eq!(nodes, expected);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let mut tree = MerkleTree::new();
    assert_eq!(tree.root(), merkle::empty_root());
    assert_eq!(tree.root_at(0).unwrap(), *blake3::hash(b"").as_bytes());
    for i in 0u8..5 {
        tree.push(leaf_hash(&[i]));
    }
    assert_eq!(
        tree.inclusion_proof(5, 5),
        Err(MerkleError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        tree.inclusion_proof(0, 6),
        Err(MerkleError::SizeOutOfRange {
            requested: 6,
            available: 5
        })
    );
    assert_eq!(
        tree.consistency_proof(0, 3),
        Err(MerkleError::InvalidSizes { old: 0, new: 3 })
    );
    assert_eq!(
        tree.consistency_proof(4, 3),
        Err(MerkleError::InvalidSizes { old: 4, new: 3 })
    );
    let root = tree.root();
    let forged = InclusionProof {
        index: 0,
        size: 5,
        path: vec![[0; 32]; 65],
    };
    assert_eq!(
        forged.verify(&leaf_hash(&[0]), &root),
        Err(MerkleError::WrongLength)
    );
    let equal = ConsistencyProof {
        old: 5,
        new: 5,
        path: vec![],
    };
    equal.verify(&root, &root).unwrap();
    assert_eq!(
        equal.verify(&[1; 32], &root),
        Err(MerkleError::RootMismatch)
    );
    // A single leaf's inclusion proof is empty; its root is the leaf hash.
    let one = {
        let mut t = MerkleTree::new();
        t.push(leaf_hash(b"x"));
        t
    };
    assert_eq!(one.root(), leaf_hash(b"x"));
    assert_eq!(node_hash(&[0; 32], &[0; 32]), mth2());
}

fn mth2() -> Hash {
    let mut input = vec![1u8];
    input.extend_from_slice(&[0; 64]);
    *blake3::hash(&input).as_bytes()
}
