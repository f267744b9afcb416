//! Groth16 over BN254, verified with arkworks 0.5.
//!
//! Wire encodings are arkworks' compressed forms (little-endian; flags in the top two bits
//! of a point's last x byte): a proof is `a` (32) ‖ `b` (64) ‖ `c` (32) = 128 bytes, a
//! verification key `alpha` (32) ‖ `beta` (64) ‖ `gamma` (64) ‖ `delta` (64) ‖ u64-LE
//! count ‖ 32 bytes per IC point, a public input 32 bytes. Decoding is strict: a field
//! element must be below its modulus (never reduced), a point must be on the curve and in
//! the prime-order subgroup, the point at infinity has exactly one encoding, and there are
//! no trailing bytes. Each failure is its own [`VerifyError`].
//!
//! ```
//! use causality_proofshare::groth16::Groth16Bn254;
//! use causality_proofshare::{Claim, ProofVerifier, VerifyError};
//!
//! let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap() + "/tests/vectors/groth16/";
//! let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
//! let bundle = causality_proofshare::groth16::snarkjs::import(
//!     &read("verification_key.json"),
//!     &read("proof_1.json"),
//!     &read("public_1.json"),
//! )
//! .unwrap();
//! let key = Groth16Bn254::default().prepare(&bundle.verification_key).unwrap();
//! let claim = Claim { proof: &bundle.proof, public_inputs: &bundle.public_inputs };
//! assert_eq!(key.verify(claim), Ok(()));
//!
//! let wrong = vec![causality_proofshare::groth16::encode_fr(34)];
//! let claim = Claim { proof: &bundle.proof, public_inputs: &wrong };
//! assert_eq!(key.verify(claim), Err(VerifyError::Invalid));
//! ```

mod batch;
pub mod snarkjs;

use std::sync::Arc;

use ark_bn254::{Bn254, Fq, Fr, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ec::pairing::Pairing;
use ark_ec::short_weierstrass::{Affine, SWCurveConfig};
use ark_ff::{PrimeField, Zero};
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};

use crate::error::VerifyError;
use crate::system::{Claim, PreparedKey, ProofSystem, ProofVerifier};

/// Bytes of a compressed G1 point.
pub const G1_BYTES: usize = 32;
/// Bytes of a compressed G2 point.
pub const G2_BYTES: usize = 64;
/// Bytes of a compressed proof.
pub const PROOF_BYTES: usize = 2 * G1_BYTES + G2_BYTES;
/// Bytes of a public input (a scalar, little-endian).
pub const FR_BYTES: usize = 32;

/// The length of a verification key with `public_inputs` inputs.
pub const fn key_bytes(public_inputs: usize) -> usize {
    G1_BYTES + 3 * G2_BYTES + 8 + G1_BYTES * (public_inputs + 1)
}

/// The Groth16/BN254 verifier.
#[derive(Clone, Copy, Debug)]
pub struct Groth16Bn254 {
    /// Keys declaring more public inputs are refused (default 1024), which bounds the
    /// memory and time one key costs.
    pub max_public_inputs: usize,
}

impl Default for Groth16Bn254 {
    fn default() -> Self {
        Self {
            max_public_inputs: 1024,
        }
    }
}

impl ProofVerifier for Groth16Bn254 {
    fn system(&self) -> ProofSystem {
        ProofSystem::GROTH16_BN254
    }

    fn prepare(&self, key: &[u8]) -> Result<Arc<dyn PreparedKey>, VerifyError> {
        Ok(Arc::new(Key::decode(key, self.max_public_inputs)?))
    }
}

/// A prepared Groth16/BN254 verification key.
#[derive(Debug)]
pub struct Key {
    pvk: PreparedVerifyingKey<Bn254>,
    /// `beta`, prepared for the batch check's `e(-Σr·alpha, beta)` term.
    beta: <Bn254 as Pairing>::G2Prepared,
}

impl Key {
    /// Decodes a compressed verification key, refusing keys with more than `max_inputs`
    /// public inputs.
    pub fn decode(bytes: &[u8], max_inputs: usize) -> Result<Self, VerifyError> {
        const WHAT: &str = "verification key";
        let fixed = G1_BYTES + 3 * G2_BYTES;
        if bytes.len() < fixed + 8 {
            return Err(VerifyError::Length {
                what: WHAT,
                expected: key_bytes(0),
                got: bytes.len(),
            });
        }
        let count = u64::from_le_bytes(bytes[fixed..fixed + 8].try_into().expect("8 bytes"));
        if count == 0 || count - 1 > max_inputs as u64 {
            return Err(VerifyError::TooManyInputs {
                got: count.saturating_sub(1),
                limit: max_inputs,
            });
        }
        let inputs = (count - 1) as usize;
        if bytes.len() != key_bytes(inputs) {
            return Err(VerifyError::Length {
                what: WHAT,
                expected: key_bytes(inputs),
                got: bytes.len(),
            });
        }
        let alpha_g1 = decode_g1(&bytes[..32], "vk alpha", false)?;
        let beta_g2 = decode_g2(&bytes[32..96], "vk beta", false)?;
        let gamma_g2 = decode_g2(&bytes[96..160], "vk gamma", false)?;
        let delta_g2 = decode_g2(&bytes[160..224], "vk delta", false)?;
        let gamma_abc_g1 = bytes[fixed + 8..]
            .chunks_exact(G1_BYTES)
            .map(|c| decode_g1(c, "vk IC", true))
            .collect::<Result<Vec<_>, _>>()?;
        let vk = VerifyingKey {
            alpha_g1,
            beta_g2,
            gamma_g2,
            delta_g2,
            gamma_abc_g1,
        };
        Ok(Self::from_vk(&vk))
    }

    /// The key as decoded.
    #[cfg(any(fuzzing, test))]
    pub(crate) fn vk(&self) -> &VerifyingKey<Bn254> {
        &self.pvk.vk
    }

    /// Prepares an arkworks key.
    pub fn from_vk(vk: &VerifyingKey<Bn254>) -> Self {
        Self {
            pvk: ark_groth16::prepare_verifying_key(vk),
            beta: vk.beta_g2.into(),
        }
    }

    fn decode_claim(&self, claim: Claim<'_>) -> Result<(Proof<Bn254>, Vec<Fr>), VerifyError> {
        let proof = decode_proof(claim.proof)?;
        let expected = self.pvk.vk.gamma_abc_g1.len() - 1;
        if claim.public_inputs.len() != expected {
            return Err(VerifyError::InputCount {
                expected,
                got: claim.public_inputs.len(),
            });
        }
        let inputs = claim
            .public_inputs
            .iter()
            .map(|b| decode_fr(b))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((proof, inputs))
    }
}

impl PreparedKey for Key {
    fn system(&self) -> ProofSystem {
        ProofSystem::GROTH16_BN254
    }

    fn public_inputs(&self) -> usize {
        self.pvk.vk.gamma_abc_g1.len() - 1
    }

    fn verify(&self, claim: Claim<'_>) -> Result<(), VerifyError> {
        let (proof, inputs) = self.decode_claim(claim)?;
        match Groth16::<Bn254>::verify_proof(&self.pvk, &proof, &inputs) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(VerifyError::Invalid),
        }
    }

    fn verify_batch(&self, claims: &[Claim<'_>], seed: [u8; 32]) -> Vec<Result<(), VerifyError>> {
        let mut results: Vec<Result<(), VerifyError>> = Vec::with_capacity(claims.len());
        let mut decoded = Vec::with_capacity(claims.len());
        let mut positions = Vec::with_capacity(claims.len());
        #[cfg(feature = "parallel")]
        let each: Vec<_> = {
            use rayon::prelude::*;
            claims.par_iter().map(|c| self.decode_claim(*c)).collect()
        };
        #[cfg(not(feature = "parallel"))]
        let each: Vec<_> = claims.iter().map(|c| self.decode_claim(*c)).collect();
        for (i, one) in each.into_iter().enumerate() {
            match one {
                Ok(d) => {
                    decoded.push(d);
                    positions.push(i);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        for bad in batch::find_invalid(self, &decoded, &claims_transcript(claims), seed) {
            results[positions[bad]] = Err(VerifyError::Invalid);
        }
        results
    }
}

/// What the batch weights are bound to besides the secret seed: every claim's bytes.
fn claims_transcript(claims: &[Claim<'_>]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for c in claims {
        h.update(&(c.proof.len() as u64).to_le_bytes());
        h.update(c.proof);
        h.update(&(c.public_inputs.len() as u64).to_le_bytes());
        for input in c.public_inputs {
            h.update(&(input.len() as u64).to_le_bytes());
            h.update(input);
        }
    }
    *h.finalize().as_bytes()
}

/// Decodes a 128-byte compressed proof. None of its points may be the identity.
pub fn decode_proof(bytes: &[u8]) -> Result<Proof<Bn254>, VerifyError> {
    if bytes.len() != PROOF_BYTES {
        return Err(VerifyError::Length {
            what: "proof",
            expected: PROOF_BYTES,
            got: bytes.len(),
        });
    }
    Ok(Proof {
        a: decode_g1(&bytes[..32], "proof A", false)?,
        b: decode_g2(&bytes[32..96], "proof B", false)?,
        c: decode_g1(&bytes[96..], "proof C", false)?,
    })
}

/// Decodes a 32-byte little-endian scalar, which must be below the group order.
pub fn decode_fr(bytes: &[u8]) -> Result<Fr, VerifyError> {
    if bytes.len() != FR_BYTES {
        return Err(VerifyError::Length {
            what: "public input",
            expected: FR_BYTES,
            got: bytes.len(),
        });
    }
    Fr::deserialize_compressed(bytes).map_err(|_| VerifyError::NonCanonicalField {
        what: "public input",
    })
}

/// The 32-byte encoding of a small scalar (handy for public inputs in tests and examples).
pub fn encode_fr(value: u64) -> Vec<u8> {
    fr_bytes(&Fr::from(value))
}

/// The 32-byte encoding of a scalar.
pub fn fr_bytes(value: &Fr) -> Vec<u8> {
    let mut out = Vec::with_capacity(FR_BYTES);
    value
        .serialize_compressed(&mut out)
        .expect("serializing into a Vec cannot fail");
    out
}

/// The compressed encoding of a proof.
pub fn proof_bytes(proof: &Proof<Bn254>) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROOF_BYTES);
    proof
        .serialize_compressed(&mut out)
        .expect("serializing into a Vec cannot fail");
    out
}

/// The compressed encoding of a verification key.
pub fn key_bytes_of(vk: &VerifyingKey<Bn254>) -> Vec<u8> {
    let mut out = Vec::with_capacity(key_bytes(vk.gamma_abc_g1.len().saturating_sub(1)));
    vk.serialize_compressed(&mut out)
        .expect("serializing into a Vec cannot fail");
    out
}

/// The flag bits of a compressed point's last x byte.
const INFINITY: u8 = 1 << 6;
const NEGATIVE: u8 = 1 << 7;

fn canonical_fq(bytes: &[u8], what: &'static str) -> Result<Fq, VerifyError> {
    Fq::deserialize_compressed(bytes).map_err(|_| VerifyError::NonCanonicalField { what })
}

/// Checks the flags and the x coordinate's field elements, then lets arkworks recover y.
fn decode_point<P: SWCurveConfig>(
    bytes: &[u8],
    what: &'static str,
    allow_identity: bool,
) -> Result<Affine<P>, VerifyError> {
    let last = bytes.len() - 1;
    let flags = bytes[last] & (INFINITY | NEGATIVE);
    let mut x = bytes.to_vec();
    x[last] &= !(INFINITY | NEGATIVE);
    let mut x_is_zero = true;
    for coordinate in x.chunks_exact(32) {
        x_is_zero &= canonical_fq(coordinate, what)?.is_zero();
    }
    if flags & INFINITY != 0 {
        // One encoding of infinity: the flag alone, x all zero, no sign.
        if flags & NEGATIVE != 0 || !x_is_zero {
            return Err(VerifyError::NonCanonicalPoint { what });
        }
        if !allow_identity {
            return Err(VerifyError::Identity { what });
        }
        return Ok(Affine::<P>::zero());
    }
    // The x coordinate is canonical and the flags are well-formed, so the only way left to
    // fail is that no y exists: x is not on the curve.
    let point = Affine::<P>::deserialize_compressed_unchecked(bytes)
        .map_err(|_| VerifyError::NotOnCurve { what })?;
    if !point.is_in_correct_subgroup_assuming_on_curve() {
        return Err(VerifyError::NotInSubgroup { what });
    }
    Ok(point)
}

fn decode_g1(
    bytes: &[u8],
    what: &'static str,
    allow_identity: bool,
) -> Result<G1Affine, VerifyError> {
    decode_point(bytes, what, allow_identity)
}

fn decode_g2(
    bytes: &[u8],
    what: &'static str,
    allow_identity: bool,
) -> Result<G2Affine, VerifyError> {
    decode_point(bytes, what, allow_identity)
}

/// A checked scalar from a decimal or a big integer, refusing values at or above the order.
pub(crate) fn fr_from_biguint(value: &num_bigint::BigUint) -> Option<Fr> {
    Fr::from_bigint(value.clone().try_into().ok()?)
}

/// A checked base-field element from a big integer, refusing values at or above the modulus.
pub(crate) fn fq_from_biguint(value: &num_bigint::BigUint) -> Option<Fq> {
    Fq::from_bigint(value.clone().try_into().ok()?)
}
