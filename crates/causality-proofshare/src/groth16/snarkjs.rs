//! Import of snarkjs/circom JSON: verification keys, proofs and public signals.
//!
//! snarkjs writes numbers as decimal strings and points in affine form with an explicit z:
//! G1 `[x, y, "1"]`, G2 `[[x.c0, x.c1], [y.c0, y.c1], ["1", "0"]]` (c0 first — the Solidity
//! calldata order, c1 first, is wrong here), the point at infinity with z = 0. Every number
//! must be below its modulus: it is refused, never reduced (`Fr::from_str` in ark-ff reduces
//! silently, so it is not used). Points must be on the curve and in the subgroup. The result
//! is the crate's compressed encoding, which the verifier decodes again with the same checks.

use ark_bn254::{Fq, Fq2, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_groth16::{Proof, VerifyingKey};
use num_bigint::BigUint;
use serde_json::Value;

use super::{fq_from_biguint, fr_bytes, fr_from_biguint, key_bytes_of, proof_bytes};
use crate::error::{ImportError, VerifyError};

/// Files larger than this are refused before parsing.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// A verification key, a proof and its public inputs in the crate's encodings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The compressed verification key.
    pub verification_key: Vec<u8>,
    /// The compressed proof (128 bytes).
    pub proof: Vec<u8>,
    /// The public inputs, 32 bytes each, in snarkjs order.
    pub public_inputs: Vec<Vec<u8>>,
}

/// Imports the three files `snarkjs groth16 prove` and `zkey export verificationkey` write.
pub fn import(key: &str, proof: &str, public: &str) -> Result<Bundle, ImportError> {
    Ok(Bundle {
        verification_key: import_key(key)?,
        proof: import_proof(proof)?,
        public_inputs: import_public(public)?,
    })
}

/// Imports `verification_key.json`.
pub fn import_key(json: &str) -> Result<Vec<u8>, ImportError> {
    const WHAT: &str = "verification key";
    let v = parse(json, WHAT)?;
    check_scheme(&v)?;
    let ic = field(&v, "IC", WHAT)?
        .as_array()
        .ok_or_else(|| shape(WHAT, "`IC` is not an array"))?;
    if let Some(n) = v.get("nPublic") {
        let n = n
            .as_u64()
            .ok_or_else(|| shape(WHAT, "`nPublic` is not a number"))?;
        if n + 1 != ic.len() as u64 {
            return Err(shape(
                WHAT,
                format!("`nPublic` is {n} but `IC` has {} points", ic.len()),
            ));
        }
    }
    if ic.is_empty() || ic.len() > super::Groth16Bn254::default().max_public_inputs + 1 {
        return Err(VerifyError::TooManyInputs {
            got: ic.len().saturating_sub(1) as u64,
            limit: super::Groth16Bn254::default().max_public_inputs,
        }
        .into());
    }
    let vk = VerifyingKey {
        alpha_g1: g1(field(&v, "vk_alpha_1", WHAT)?, "vk alpha", false)?,
        beta_g2: g2(field(&v, "vk_beta_2", WHAT)?, "vk beta")?,
        gamma_g2: g2(field(&v, "vk_gamma_2", WHAT)?, "vk gamma")?,
        delta_g2: g2(field(&v, "vk_delta_2", WHAT)?, "vk delta")?,
        gamma_abc_g1: ic
            .iter()
            .map(|p| g1(p, "vk IC", true))
            .collect::<Result<_, _>>()?,
    };
    Ok(key_bytes_of(&vk))
}

/// Imports `proof.json`.
pub fn import_proof(json: &str) -> Result<Vec<u8>, ImportError> {
    const WHAT: &str = "proof";
    let v = parse(json, WHAT)?;
    check_scheme(&v)?;
    let proof = Proof {
        a: g1(field(&v, "pi_a", WHAT)?, "proof A", false)?,
        b: g2(field(&v, "pi_b", WHAT)?, "proof B")?,
        c: g1(field(&v, "pi_c", WHAT)?, "proof C", false)?,
    };
    Ok(proof_bytes(&proof))
}

/// Imports `public.json`: an array of decimal strings.
pub fn import_public(json: &str) -> Result<Vec<Vec<u8>>, ImportError> {
    const WHAT: &str = "public signals";
    let v = parse(json, WHAT)?;
    let items = v.as_array().ok_or_else(|| shape(WHAT, "not an array"))?;
    items
        .iter()
        .map(|item| {
            let n = number(item, "public input")?;
            let fr = fr_from_biguint(&n).ok_or(VerifyError::NonCanonicalField {
                what: "public input",
            })?;
            Ok(fr_bytes(&fr))
        })
        .collect()
}

fn parse(json: &str, what: &'static str) -> Result<Value, ImportError> {
    if json.len() > MAX_JSON_BYTES {
        return Err(ImportError::TooLarge {
            got: json.len(),
            limit: MAX_JSON_BYTES,
        });
    }
    serde_json::from_str(json).map_err(|e| shape(what, e.to_string()))
}

fn shape(what: &'static str, reason: impl Into<String>) -> ImportError {
    ImportError::Shape {
        what,
        reason: reason.into(),
    }
}

fn field<'a>(v: &'a Value, name: &str, what: &'static str) -> Result<&'a Value, ImportError> {
    v.get(name)
        .ok_or_else(|| shape(what, format!("missing `{name}`")))
}

fn check_scheme(v: &Value) -> Result<(), ImportError> {
    for (name, expected) in [("protocol", "groth16"), ("curve", "bn128")] {
        if let Some(value) = v.get(name) {
            let value = value.as_str().unwrap_or_default();
            if value != expected {
                return Err(ImportError::Unsupported {
                    field: name,
                    value: value.chars().take(32).collect(),
                });
            }
        }
    }
    Ok(())
}

/// A plain decimal integer of at most 80 digits (the moduli have 77).
fn number(v: &Value, what: &'static str) -> Result<BigUint, ImportError> {
    let bad = || ImportError::Number {
        what,
        value: v.to_string().chars().take(90).collect(),
    };
    let s = v.as_str().ok_or_else(bad)?;
    if s.is_empty() || s.len() > 80 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    BigUint::parse_bytes(s.as_bytes(), 10).ok_or_else(bad)
}

fn fq(v: &Value, what: &'static str) -> Result<Fq, ImportError> {
    let n = number(v, what)?;
    Ok(fq_from_biguint(&n).ok_or(VerifyError::NonCanonicalField { what })?)
}

fn triple<'a>(v: &'a Value, what: &'static str) -> Result<&'a [Value], ImportError> {
    let a = v
        .as_array()
        .filter(|a| a.len() == 3)
        .ok_or_else(|| shape(what, "a point is an array of three coordinates"))?;
    Ok(a)
}

fn pair<'a>(v: &'a Value, what: &'static str) -> Result<(&'a Value, &'a Value), ImportError> {
    match v.as_array().map(Vec::as_slice) {
        Some([c0, c1]) => Ok((c0, c1)),
        _ => Err(shape(what, "an Fq2 element is an array [c0, c1]")),
    }
}

fn g1(v: &Value, what: &'static str, allow_identity: bool) -> Result<G1Affine, ImportError> {
    let [x, y, z] = triple(v, what)? else {
        unreachable!("triple returns three")
    };
    let z = number(z, what)?;
    if z == BigUint::ZERO {
        if !allow_identity {
            return Err(VerifyError::Identity { what }.into());
        }
        return Ok(G1Affine::zero());
    }
    if z != BigUint::from(1u8) {
        return Err(VerifyError::NonCanonicalPoint { what }.into());
    }
    let point = G1Affine::new_unchecked(fq(x, what)?, fq(y, what)?);
    check(
        point.is_on_curve(),
        point.is_in_correct_subgroup_assuming_on_curve(),
        what,
    )?;
    Ok(point)
}

fn g2(v: &Value, what: &'static str) -> Result<G2Affine, ImportError> {
    let [x, y, z] = triple(v, what)? else {
        unreachable!("triple returns three")
    };
    let (z0, z1) = pair(z, what)?;
    if number(z1, what)? != BigUint::ZERO || number(z0, what)? != BigUint::from(1u8) {
        // snarkjs writes infinity as z = [0, 0]; no G2 point of ours may be it.
        return Err(VerifyError::Identity { what }.into());
    }
    let (x0, x1) = pair(x, what)?;
    let (y0, y1) = pair(y, what)?;
    let point = G2Affine::new_unchecked(
        Fq2::new(fq(x0, what)?, fq(x1, what)?),
        Fq2::new(fq(y0, what)?, fq(y1, what)?),
    );
    let on_curve = point.is_on_curve();
    check(
        on_curve,
        on_curve && point.is_in_correct_subgroup_assuming_on_curve(),
        what,
    )?;
    Ok(point)
}

fn check(on_curve: bool, in_subgroup: bool, what: &'static str) -> Result<(), ImportError> {
    if !on_curve {
        return Err(VerifyError::NotOnCurve { what }.into());
    }
    if !in_subgroup {
        return Err(VerifyError::NotInSubgroup { what }.into());
    }
    Ok(())
}
