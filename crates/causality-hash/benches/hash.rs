//! Hashing, rendezvous selection and Merkle proofs.
//!
//! `cargo xtask bench hash` runs this and prints the figures in a table.

use std::hint::black_box;

use causality_hash::merkle::{MerkleTree, leaf_hash};
use causality_hash::{ContentId, PeerDigest, Rendezvous};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn content_id(c: &mut Criterion) {
    let mut group = c.benchmark_group("blake3");
    for (name, len) in [("1KiB", 1024usize), ("1MiB", 1 << 20)] {
        let data = vec![0xa5u8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| b.iter(|| ContentId::of(black_box(&data))));
    }
    group.finish();
}

/// The first rule (version 1), kept here as the baseline: one BLAKE3 of
/// `salt ‖ key ‖ peer` per peer per lookup.
fn top3_rule1(salt: &[u8], key: &[u8], peers: &[[u8; 32]]) -> [usize; 3] {
    let mut input = Vec::with_capacity(salt.len() + key.len() + 32);
    input.extend_from_slice(salt);
    input.extend_from_slice(key);
    let prefix = input.len();
    let mut best = [(0u64, usize::MAX); 3];
    for (i, peer) in peers.iter().enumerate() {
        input.truncate(prefix);
        input.extend_from_slice(peer);
        let digest = blake3::hash(&input);
        let score = u64::from_le_bytes(digest.as_bytes()[..8].try_into().unwrap());
        if score > best[2].0 {
            best[2] = (score, i);
            best.sort_unstable_by(|a, b| b.cmp(a));
        }
    }
    best.map(|(_, i)| i)
}

fn rendezvous(c: &mut Criterion) {
    let mut group = c.benchmark_group("hrw_top3");
    let hrw = Rendezvous::for_epoch(1);
    for n in [1_000u32, 10_000] {
        let peers: Vec<[u8; 32]> = (0..n)
            .map(|i| ContentId::of(&i.to_le_bytes()).to_bytes())
            .collect();
        // Digests computed once per epoch, as the view keeps them.
        let prepared: Vec<(PeerDigest, [u8; 32])> =
            peers.iter().map(|p| (hrw.peer_digest(p), *p)).collect();
        let mut key = 0u64;
        group.bench_with_input(BenchmarkId::new("prepared", n), &prepared, |b, prepared| {
            b.iter(|| {
                key += 1;
                let key = ContentId::of(&key.to_le_bytes());
                black_box(
                    hrw.top_k_prepared(key.as_bytes(), prepared, 3, |(d, p)| (*d, p.as_slice()))
                        .len(),
                )
            });
        });
        group.bench_with_input(
            BenchmarkId::new("digests_each_call", n),
            &peers,
            |b, peers| {
                b.iter(|| {
                    key += 1;
                    let key = ContentId::of(&key.to_le_bytes());
                    black_box(hrw.top_k(key.as_bytes(), peers, 3).len())
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("rule1", n), &peers, |b, peers| {
            b.iter(|| {
                key += 1;
                let key = ContentId::of(&key.to_le_bytes());
                black_box(top3_rule1(hrw.salt(), key.as_bytes(), peers))
            });
        });
    }
    group.finish();
}

fn merkle(c: &mut Criterion) {
    let n = 1u64 << 20;
    let mut tree = MerkleTree::new();
    for i in 0..n {
        tree.push(leaf_hash(&i.to_le_bytes()));
    }
    let root = tree.root();
    let mut group = c.benchmark_group("merkle_2^20");
    let mut i = 0u64;
    group.bench_function("inclusion_proof", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(tree.inclusion_proof(i, n).unwrap())
        });
    });
    let proofs: Vec<_> = (0..1024u64)
        .map(|j| {
            let index = j * 1021 % n;
            (
                leaf_hash(&index.to_le_bytes()),
                tree.inclusion_proof(index, n).unwrap(),
            )
        })
        .collect();
    let mut j = 0;
    group.bench_function("inclusion_verify", |b| {
        b.iter(|| {
            j = (j + 1) % proofs.len();
            let (leaf, proof) = &proofs[j];
            proof.verify(leaf, &root).unwrap();
        });
    });
    group.bench_function("consistency_proof", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            black_box(tree.consistency_proof(i.max(1), n).unwrap())
        });
    });
    group.finish();
}

criterion_group!(benches, content_id, rendezvous, merkle);
criterion_main!(benches);
