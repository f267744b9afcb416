//! Groth16/BN254 verification: one proof at a time against batches of 16, 64 and 256
//! (decoding included in both, as the node pays it).
//!
//! `cargo xtask bench proofshare` runs this and prints the per-proof ratios.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use causality_proofshare::groth16::Groth16Bn254;
use causality_proofshare::{Claim, ProofVerifier};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn verify(c: &mut Criterion) {
    let mut prover = common::Prover::new(3);
    let key = Groth16Bn254::default().prepare(&prover.key).unwrap();
    let made: Vec<_> = (0..256u64).map(|i| prover.prove(i + 2, i + 3)).collect();
    let claims: Vec<Claim<'_>> = made
        .iter()
        .map(|m| Claim {
            proof: &m.proof,
            public_inputs: &m.public_inputs,
        })
        .collect();
    let mut group = c.benchmark_group("groth16_verify");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.iter(|| key.verify(black_box(claims[0])).unwrap());
    });
    for n in [16usize, 64, 256] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("batch", n), &n, |b, &n| {
            b.iter(|| {
                let results = key.verify_batch(black_box(&claims[..n]), [7; 32]);
                assert!(results.iter().all(Result::is_ok));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
