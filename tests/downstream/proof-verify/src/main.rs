//! Proof verification alone: snarkjs JSON in, valid or invalid with the reason out.

use causality_proofshare::groth16::{Groth16Bn254, snarkjs};
use causality_proofshare::{Claim, ProofVerifier as _};

const VECTORS: &str = "../../../crates/causality-proofshare/tests/vectors/groth16";

fn read(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key =
        Groth16Bn254::default().prepare(&snarkjs::import_key(&read("verification_key.json"))?)?;
    for i in 1..=3 {
        let proof = snarkjs::import_proof(&read(&format!("proof_{i}.json")))?;
        let inputs = snarkjs::import_public(&read(&format!("public_{i}.json")))?;
        key.verify(Claim {
            proof: &proof,
            public_inputs: &inputs,
        })?;
        println!("proof_{i}: valid");
    }
    let proof = snarkjs::import_proof(&read("proof_1.json"))?;
    let wrong = snarkjs::import_public(&read("public_neg_modified.json"))?;
    let refused = key.verify(Claim {
        proof: &proof,
        public_inputs: &wrong,
    });
    assert!(refused.is_err(), "a proof verified against other inputs");
    println!(
        "proof_1 against modified inputs: invalid ({})",
        refused.unwrap_err()
    );
    Ok(())
}
