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

/// Where a batch's time per proof goes.
fn parts(c: &mut Criterion) {
    use ark_bn254::{Bn254, Fr};
    use ark_ec::pairing::Pairing;
    let mut prover = common::Prover::new(3);
    let made = prover.prove(2, 3);
    let proof = causality_proofshare::groth16::decode_proof(&made.proof).unwrap();
    let mut group = c.benchmark_group("groth16_parts");
    group.bench_function("decode_proof", |b| {
        b.iter(|| causality_proofshare::groth16::decode_proof(black_box(&made.proof)).unwrap());
    });
    group.bench_function("prepare_g2", |b| {
        b.iter(|| <Bn254 as Pairing>::G2Prepared::from(black_box(proof.b)));
    });
    let r = Fr::from(u128::MAX - 12345);
    group.bench_function("g1_mul_128bit", |b| b.iter(|| black_box(proof.a) * r));
    group.finish();
}

criterion_group!(benches, verify, parts);
criterion_main!(benches);
