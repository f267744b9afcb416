//! Verify a Groth16 proof made by snarkjs (circom's multiplier circuit), with no
//! networking: import the JSON, prepare the key once, check the proof — and see a
//! tampered public input refused. The files are the crate's test vectors.
//! `cargo run -p causality-proofshare --example verify_snarkjs`.

use causality_proofshare::groth16::{Groth16Bn254, snarkjs};
use causality_proofshare::{Claim, ProofVerifier as _};

const KEY: &str = include_str!("../tests/vectors/groth16/verification_key.json");
const PROOF: &str = include_str!("../tests/vectors/groth16/proof_1.json");
const PUBLIC: &str = include_str!("../tests/vectors/groth16/public_1.json");
const TAMPERED: &str = include_str!("../tests/vectors/groth16/public_neg_modified.json");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = snarkjs::import_key(KEY)?;
    let proof = snarkjs::import_proof(PROOF)?;
    let inputs = snarkjs::import_public(PUBLIC)?;
    println!(
        "imported: key {} B, proof {} B (compressed), {} public input(s)",
        key.len(),
        proof.len(),
        inputs.len()
    );
    // Preparing a key (pairing precomputation) is done once per key, not per proof.
    let prepared = Groth16Bn254::default().prepare(&key)?;
    prepared.verify(Claim {
        proof: &proof,
        public_inputs: &inputs,
    })?;
    println!("proof_1.json: valid");

    let tampered = snarkjs::import_public(TAMPERED)?;
    match prepared.verify(Claim {
        proof: &proof,
        public_inputs: &tampered,
    }) {
        Ok(()) => return Err("a proof verified against inputs it was not made for".into()),
        Err(e) => println!("with a modified public input: invalid ({e})"),
    }
    Ok(())
}
