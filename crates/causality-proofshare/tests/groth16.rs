//! Groth16/BN254 verification against the snarkjs vectors and arkworks-made proofs.

mod common;

use causality_proofshare::groth16::{self, Groth16Bn254, snarkjs};
use causality_proofshare::{Claim, ImportError, PreparedKey, ProofVerifier, VerifyError};
use serde_json::Value;

fn vectors() -> std::path::PathBuf {
    // At run time: a binary reused from another checkout must read this one's files.
    std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap())
        .join("tests/vectors/groth16")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(vectors().join(file)).unwrap()
}

fn hex_list(v: &Value) -> Vec<Vec<u8>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap())
        .collect()
}

/// What each case must come to, by route.
fn expected(name: &str, compressed: bool) -> Result<(), &'static str> {
    match name {
        "valid_1" | "valid_2" | "valid_3" => Ok(()),
        "neg_public_noncanonical" => Err("non_canonical_field"),
        "neg_public_wrong_count" => Err("input_count"),
        "neg_pi_c_not_on_curve" | "neg_pi_b_fp2_swapped" => Err("not_on_curve"),
        "neg_public_modified"
        | "neg_proof_public_mismatch"
        | "neg_pi_a_negated"
        | "neg_wrong_vk_other_circuit" => Err("invalid"),
        other => panic!("unknown case {other} (compressed: {compressed})"),
    }
}

fn unwrap<T>(r: Result<T, ImportError>) -> Result<T, VerifyError> {
    match r {
        Ok(v) => Ok(v),
        Err(ImportError::Invalid(e)) => Err(e),
        Err(e) => panic!("import failed outside verification: {e}"),
    }
}

fn verify_json(case: &Value) -> Result<(), VerifyError> {
    let get = |k: &str| read(case[k].as_str().unwrap());
    let key = unwrap(snarkjs::import_key(&get("vk")))?;
    let proof = unwrap(snarkjs::import_proof(&get("proof")))?;
    let inputs = unwrap(snarkjs::import_public(&get("public")))?;
    let key = Groth16Bn254::default().prepare(&key)?;
    key.verify(Claim {
        proof: &proof,
        public_inputs: &inputs,
    })
}

fn verify_compressed(case: &Value) -> Result<(), VerifyError> {
    let key = hex::decode(case["vk_compressed_hex"].as_str().unwrap()).unwrap();
    let proof = hex::decode(case["proof_compressed_hex"].as_str().unwrap()).unwrap();
    let inputs = hex_list(&case["public_inputs_compressed_hex"]);
    let key = Groth16Bn254::default().prepare(&key)?;
    key.verify(Claim {
        proof: &proof,
        public_inputs: &inputs,
    })
}

#[test]
fn every_snarkjs_vector_verifies_or_fails_for_its_own_reason() {
    let manifest: Value = serde_json::from_str(&read("manifest.json")).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 11);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        assert_eq!(
            case["valid"].as_bool().unwrap(),
            expected(name, false).is_ok()
        );
        for (compressed, result) in [(false, verify_json(case)), (true, verify_compressed(case))] {
            assert_eq!(
                result.as_ref().map_err(VerifyError::reason),
                expected(name, compressed).map(|_| &()),
                "{name} (compressed: {compressed}): {result:?}"
            );
        }
    }
}

#[test]
fn the_json_import_gives_the_arkworks_bytes() {
    let manifest: Value = serde_json::from_str(&read("manifest.json")).unwrap();
    let case = &manifest["cases"][0];
    let bundle = snarkjs::import(
        &read("verification_key.json"),
        &read("proof_1.json"),
        &read("public_1.json"),
    )
    .unwrap();
    assert_eq!(
        hex::encode(&bundle.verification_key),
        case["vk_compressed_hex"]
    );
    assert_eq!(hex::encode(&bundle.proof), case["proof_compressed_hex"]);
    assert_eq!(bundle.proof.len(), groth16::PROOF_BYTES);
    assert_eq!(bundle.verification_key.len(), groth16::key_bytes(1));
    assert_eq!(
        bundle.public_inputs,
        hex_list(&case["public_inputs_compressed_hex"])
    );
}

#[test]
fn lax_numbers_and_foreign_schemes_are_refused() {
    for bad in [
        r#"["-33"]"#,
        r#"["+33"]"#,
        r#"["0x21"]"#,
        r#"[" 33"]"#,
        r#"[33]"#,
        r#"["33.0"]"#,
    ] {
        assert!(
            matches!(snarkjs::import_public(bad), Err(ImportError::Number { .. })),
            "{bad}"
        );
    }
    let plonk = read("verification_key.json").replace("\"groth16\"", "\"plonk\"");
    assert!(matches!(
        snarkjs::import_key(&plonk),
        Err(ImportError::Unsupported {
            field: "protocol",
            ..
        })
    ));
    let huge = format!("[\"{}\"]", "1".repeat(snarkjs::MAX_JSON_BYTES));
    assert!(matches!(
        snarkjs::import_public(&huge),
        Err(ImportError::TooLarge { .. })
    ));
}

fn key_and_proof() -> (std::sync::Arc<dyn PreparedKey>, Vec<u8>, Vec<Vec<u8>>) {
    let manifest: Value = serde_json::from_str(&read("manifest.json")).unwrap();
    let case = &manifest["cases"][0];
    let key = hex::decode(case["vk_compressed_hex"].as_str().unwrap()).unwrap();
    let proof = hex::decode(case["proof_compressed_hex"].as_str().unwrap()).unwrap();
    let key = Groth16Bn254::default().prepare(&key).unwrap();
    (key, proof, hex_list(&case["public_inputs_compressed_hex"]))
}

#[test]
fn malformed_encodings_get_their_own_errors() {
    let (key, proof, inputs) = key_and_proof();
    let check = |proof: &[u8], inputs: &[Vec<u8>]| {
        key.verify(Claim {
            proof,
            public_inputs: inputs,
        })
        .map_err(|e| e.reason())
    };
    assert_eq!(check(&proof, &inputs), Ok(()));
    // Trailing and missing bytes.
    let mut long = proof.clone();
    long.push(0);
    assert_eq!(check(&long, &inputs), Err("length"));
    assert_eq!(check(&proof[..127], &inputs), Err("length"));
    // A coordinate at or above the modulus: A's x set to all ones below the flag bits.
    let mut big = proof.clone();
    big[..31].fill(0xff);
    big[31] = (big[31] & 0xc0) | 0x3f;
    assert_eq!(check(&big, &inputs), Err("non_canonical_field"));
    // Both flags at once, and infinity with a nonzero x.
    let mut flags = proof.clone();
    flags[31] |= 0xc0;
    assert_eq!(check(&flags, &inputs), Err("non_canonical_point"));
    let mut inf = proof.clone();
    inf[31] = (inf[31] & 0x3f) | 0x40;
    assert_eq!(check(&inf, &inputs), Err("non_canonical_point"));
    // The canonical infinity is a valid encoding but no proof element may be it.
    let mut zero = proof.clone();
    zero[..32].fill(0);
    zero[31] = 0x40;
    assert_eq!(check(&zero, &inputs), Err("identity"));
    // A public input at the group order r.
    let r =
        hex::decode("010000f093f5e1439170b97948e833285d588181b64550b829a031e1724e6430").unwrap();
    assert_eq!(check(&proof, &[r]), Err("non_canonical_field"));
    assert_eq!(check(&proof, &[vec![0; 31]]), Err("length"));
    // A key with trailing bytes, and one that declares more inputs than allowed.
    let manifest: Value = serde_json::from_str(&read("manifest.json")).unwrap();
    let mut vk = hex::decode(manifest["cases"][0]["vk_compressed_hex"].as_str().unwrap()).unwrap();
    vk.push(0);
    assert_eq!(
        Groth16Bn254::default().prepare(&vk).unwrap_err().reason(),
        "length"
    );
    vk.pop();
    vk[224..232].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(
        Groth16Bn254::default().prepare(&vk).unwrap_err().reason(),
        "too_many_inputs"
    );
}

#[test]
fn a_g2_point_outside_the_subgroup_is_refused() {
    // Find an x on the twist whose point is not in the r-torsion: most are (the twist's
    // cofactor is large), so the first few candidates suffice.
    use ark_bn254::{Fq, Fq2, G2Affine};
    use ark_serialize::CanonicalSerialize;
    let (key, proof, inputs) = key_and_proof();
    let mut found = false;
    for i in 1u64..64 {
        let Some(p) =
            G2Affine::get_point_from_x_unchecked(Fq2::new(Fq::from(i), Fq::from(1u8)), false)
        else {
            continue;
        };
        if p.is_in_correct_subgroup_assuming_on_curve() {
            continue;
        }
        let mut b = Vec::new();
        p.serialize_compressed(&mut b).unwrap();
        let mut bad = proof.clone();
        bad[32..96].copy_from_slice(&b);
        let result = key.verify(Claim {
            proof: &bad,
            public_inputs: &inputs,
        });
        assert_eq!(result.map_err(|e| e.reason()), Err("not_in_subgroup"));
        found = true;
        break;
    }
    assert!(found, "no off-subgroup twist point among the candidates");
}

#[test]
fn a_batch_finds_its_bad_proofs_and_accepts_the_rest() {
    let mut prover = common::Prover::new(7);
    let key = Groth16Bn254::default().prepare(&prover.key).unwrap();
    let mut made: Vec<_> = (0..64u64).map(|i| prover.prove(i + 2, 3 * i + 5)).collect();
    // One false statement (its output changed), one malformed proof.
    made[17].public_inputs = vec![groth16::encode_fr(1)];
    made[40].proof.truncate(100);
    let claims: Vec<Claim<'_>> = made
        .iter()
        .map(|m| Claim {
            proof: &m.proof,
            public_inputs: &m.public_inputs,
        })
        .collect();
    let results = key.verify_batch(&claims, [9; 32]);
    for (i, r) in results.iter().enumerate() {
        let want = match i {
            17 => Err("invalid"),
            40 => Err("length"),
            _ => Ok(()),
        };
        assert_eq!(
            r.as_ref().map_err(|e| e.reason()).copied(),
            want,
            "proof {i}"
        );
    }
    // And every proof alone agrees with the batch.
    for (i, c) in claims.iter().enumerate() {
        assert_eq!(key.verify(*c).is_ok(), results[i].is_ok(), "proof {i}");
    }
}

#[test]
fn a_batch_of_good_proofs_passes_and_two_cancelling_bad_ones_do_not() {
    let mut prover = common::Prover::new(11);
    let key = Groth16Bn254::default().prepare(&prover.key).unwrap();
    let made: Vec<_> = (0..8u64).map(|i| prover.prove(i + 1, i + 9)).collect();
    let claims: Vec<Claim<'_>> = made
        .iter()
        .map(|m| Claim {
            proof: &m.proof,
            public_inputs: &m.public_inputs,
        })
        .collect();
    assert!(key.verify_batch(&claims, [1; 32]).iter().all(Result::is_ok));
    // Swapping the public inputs of two proofs keeps the unweighted sums equal; random
    // weights catch it.
    let mut swapped = claims.clone();
    swapped[2].public_inputs = claims[5].public_inputs;
    swapped[5].public_inputs = claims[2].public_inputs;
    let results = key.verify_batch(&swapped, [1; 32]);
    let bad: Vec<usize> = (0..8).filter(|i| results[*i].is_err()).collect();
    assert_eq!(bad, vec![2, 5]);
}

#[test]
fn a_proof_under_another_circuits_key_is_invalid() {
    let mut a = common::Prover::new(1);
    let b = common::Prover::new(2);
    let made = a.prove(3, 4);
    let claim = Claim {
        proof: &made.proof,
        public_inputs: &made.public_inputs,
    };
    let ka = Groth16Bn254::default().prepare(&a.key).unwrap();
    let kb = Groth16Bn254::default().prepare(&b.key).unwrap();
    assert_eq!(ka.verify(claim), Ok(()));
    assert_eq!(kb.verify(claim), Err(VerifyError::Invalid));
}
