//! Batch verification of Groth16 proofs under one key by a random linear combination.
//!
//! One proof checks `e(A, B) · e(IC(x), −γ) · e(C, −δ) = e(α, β)`. For proofs `i` with
//! secret random 128-bit weights `rᵢ`, all hold (except with probability about 2⁻¹²⁸) when
//!
//! ```text
//! ∏ e(rᵢ·Aᵢ, Bᵢ) · e(Σ rᵢ·IC(xᵢ), −γ) · e(Σ rᵢ·Cᵢ, −δ) · e(−(Σ rᵢ)·α, β) = 1
//! ```
//!
//! which is one multi-Miller loop over n + 3 pairs and one final exponentiation, with
//! `Σ rᵢ·IC(xᵢ) = (Σ rᵢ)·IC₀ + Σⱼ (Σᵢ rᵢ·xᵢⱼ)·ICⱼ` one multi-scalar multiplication over the
//! key's IC points and `Σ rᵢ·Cᵢ` another over the proofs. When a batch fails, it is split in
//! halves until the bad proofs are found (a single proof is checked on its own).

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective};
use ark_ec::pairing::Pairing;
use ark_ec::{CurveGroup, VariableBaseMSM};
use ark_ff::One;
use ark_groth16::{Groth16, Proof};

use super::Key;

/// The indices of the proofs in `items` that do not verify.
pub(super) fn find_invalid(
    key: &Key,
    items: &[(Proof<Bn254>, Vec<Fr>)],
    transcript: &[u8; 32],
    seed: [u8; 32],
) -> Vec<usize> {
    if items.is_empty() {
        return Vec::new();
    }
    let weights = weights(items.len(), transcript, seed);
    let mut bad = Vec::new();
    bisect(key, items, &weights, 0, items.len(), &mut bad);
    bad
}

/// Weights bound to the secret seed and to every claim: an attacker who cannot read the
/// seed cannot choose proofs whose errors cancel.
fn weights(n: usize, transcript: &[u8; 32], seed: [u8; 32]) -> Vec<Fr> {
    let mut xof = blake3::Hasher::new_keyed(&seed)
        .update(b"causality/proofshare/groth16-batch-weights/v1")
        .update(transcript)
        .finalize_xof();
    (0..n)
        .map(|_| {
            let mut b = [0u8; 16];
            xof.fill(&mut b);
            // Nonzero, so no proof drops out of the combination.
            Fr::from(u128::from_le_bytes(b) | 1)
        })
        .collect()
}

fn bisect(
    key: &Key,
    items: &[(Proof<Bn254>, Vec<Fr>)],
    weights: &[Fr],
    start: usize,
    end: usize,
    bad: &mut Vec<usize>,
) {
    if end - start == 1 {
        let (proof, inputs) = &items[start];
        if !matches!(
            Groth16::<Bn254>::verify_proof(&key.pvk, proof, inputs),
            Ok(true)
        ) {
            bad.push(start);
        }
        return;
    }
    if holds(key, &items[start..end], &weights[start..end]) {
        return;
    }
    let mid = start + (end - start) / 2;
    bisect(key, items, weights, start, mid, bad);
    bisect(key, items, weights, mid, end, bad);
}

/// Whether the combined equation holds for `items` with `weights`.
fn holds(key: &Key, items: &[(Proof<Bn254>, Vec<Fr>)], weights: &[Fr]) -> bool {
    let vk = &key.pvk.vk;
    let inputs = vk.gamma_abc_g1.len() - 1;
    let mut sum_r = Fr::from(0u8);
    // Σᵢ rᵢ·xᵢⱼ per input j, with the constant term first.
    let mut ic_scalars = vec![Fr::from(0u8); inputs + 1];
    let mut cs = Vec::with_capacity(items.len());
    for ((proof, xs), r) in items.iter().zip(weights) {
        sum_r += r;
        for (s, x) in ic_scalars[1..].iter_mut().zip(xs) {
            *s += *r * x;
        }
        cs.push(proof.c);
    }
    // Per proof: rᵢ·Aᵢ and Bᵢ's line coefficients, independent of each other.
    let pair = |((proof, _), r): (&(Proof<Bn254>, Vec<Fr>), &Fr)| {
        (
            <Bn254 as Pairing>::G1Prepared::from((proof.a * r).into_affine()),
            <Bn254 as Pairing>::G2Prepared::from(proof.b),
        )
    };
    #[cfg(feature = "parallel")]
    let pairs: Vec<_> = {
        use rayon::prelude::*;
        items.par_iter().zip(weights).map(pair).collect()
    };
    #[cfg(not(feature = "parallel"))]
    let pairs: Vec<_> = items.iter().zip(weights).map(pair).collect();
    let (mut g1, mut g2): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    ic_scalars[0] = sum_r;
    let ic = G1Projective::msm(&vk.gamma_abc_g1, &ic_scalars).expect("lengths match");
    let c = G1Projective::msm(&cs, weights).expect("lengths match");
    let alpha: G1Affine = (vk.alpha_g1 * -sum_r).into_affine();
    g1.extend([
        ic.into_affine().into(),
        c.into_affine().into(),
        alpha.into(),
    ]);
    g2.extend([
        key.pvk.gamma_g2_neg_pc.clone(),
        key.pvk.delta_g2_neg_pc.clone(),
        key.beta.clone(),
    ]);
    match Bn254::final_exponentiation(Bn254::multi_miller_loop(g1, g2)) {
        Some(out) => out.0.is_one(),
        None => false,
    }
}
