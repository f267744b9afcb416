//! Real Groth16 proofs for the scenarios: a circuit proving knowledge of `a`, `b` with
//! `a · b = out` (`out` public), set up and proved once with arkworks from a fixed seed,
//! and invalid proofs made from valid ones. Which is which is established here by arkworks
//! itself, not by the code under test.

use std::collections::BTreeSet;

use ark_bn254::{Bn254, Fr};
use ark_groth16::Groth16;
use ark_relations::lc;
use ark_relations::r1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError};
use ark_snark::SNARK;
use ark_std::rand::SeedableRng;
use ark_std::rand::rngs::StdRng;
use causality_hash::ContentId;
use causality_proofshare::groth16::{fr_bytes, key_bytes_of, proof_bytes};
use causality_proofshare::{ProofMessage, ProofSystem, VerificationKey};

#[derive(Clone, Copy)]
struct Multiply {
    a: Option<Fr>,
    b: Option<Fr>,
}

impl ConstraintSynthesizer<Fr> for Multiply {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let a = cs.new_witness_variable(|| self.a.ok_or(SynthesisError::AssignmentMissing))?;
        let b = cs.new_witness_variable(|| self.b.ok_or(SynthesisError::AssignmentMissing))?;
        let out = cs.new_input_variable(|| {
            Ok(self.a.ok_or(SynthesisError::AssignmentMissing)?
                * self.b.ok_or(SynthesisError::AssignmentMissing)?)
        })?;
        cs.enforce_constraint(lc!() + a, lc!() + b, lc!() + out)
    }
}

/// A key, valid proofs under it and invalid ones.
#[derive(Clone, Debug)]
pub struct ProofPool {
    /// The verification key.
    pub key: VerificationKey,
    /// Proofs that verify.
    pub valid: Vec<ProofMessage>,
    /// Proofs that do not: each a valid proof with its public output changed, or its
    /// bytes from another proof.
    pub invalid: Vec<ProofMessage>,
    valid_ids: BTreeSet<ContentId>,
    invalid_ids: BTreeSet<ContentId>,
}

impl ProofPool {
    /// `valid` proofs and as many invalid ones, from a fixed setup.
    ///
    /// # Errors
    /// When arkworks fails to set up or prove, or a proof's verdict is not what it was
    /// made to be.
    pub fn new(valid: usize) -> anyhow::Result<Self> {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let (pk, vk) =
            Groth16::<Bn254>::circuit_specific_setup(Multiply { a: None, b: None }, &mut rng)?;
        let pvk = Groth16::<Bn254>::process_vk(&vk)?;
        let key = VerificationKey {
            system: ProofSystem::GROTH16_BN254,
            key: key_bytes_of(&vk),
        };
        let key_id = key.id();
        let mut pool = Self {
            key,
            valid: Vec::new(),
            invalid: Vec::new(),
            valid_ids: BTreeSet::new(),
            invalid_ids: BTreeSet::new(),
        };
        let mut proofs = Vec::new();
        for i in 0..valid as u64 {
            let (a, b) = (Fr::from(i + 2), Fr::from(i + 3));
            let proof = Groth16::<Bn254>::prove(
                &pk,
                Multiply {
                    a: Some(a),
                    b: Some(b),
                },
                &mut rng,
            )?;
            proofs.push((proof, a * b));
        }
        for (i, (proof, out)) in proofs.iter().enumerate() {
            anyhow::ensure!(
                Groth16::<Bn254>::verify_with_processed_vk(&pvk, &[*out], proof)?,
                "proof {i} does not verify"
            );
            let message = ProofMessage::new(
                key_id,
                ProofSystem::GROTH16_BN254,
                vec![fr_bytes(out)],
                proof_bytes(proof),
                Default::default(),
            )?;
            pool.valid_ids.insert(message.proof_id);
            pool.valid.push(message);
            // Invalid: the claimed output is off by one, or the bytes are the next proof's.
            let wrong_out = *out + Fr::from(1u64);
            let other = &proofs[(i + 1) % proofs.len()].0;
            for (input, bytes) in [(wrong_out, proof), (*out, other)] {
                if Groth16::<Bn254>::verify_with_processed_vk(&pvk, &[input], bytes)? {
                    continue;
                }
                let message = ProofMessage::new(
                    key_id,
                    ProofSystem::GROTH16_BN254,
                    vec![fr_bytes(&input)],
                    proof_bytes(bytes),
                    Default::default(),
                )?;
                pool.invalid_ids.insert(message.proof_id);
                pool.invalid.push(message);
            }
        }
        anyhow::ensure!(!pool.invalid.is_empty(), "no invalid proof could be made");
        Ok(pool)
    }

    /// The key's id.
    pub fn key_id(&self) -> ContentId {
        self.key.id()
    }

    /// Whether `id` is one of the valid proofs.
    pub fn is_valid(&self, id: &ContentId) -> bool {
        self.valid_ids.contains(id)
    }

    /// Whether `id` is one of the invalid proofs.
    pub fn is_invalid(&self, id: &ContentId) -> bool {
        self.invalid_ids.contains(id)
    }
}
