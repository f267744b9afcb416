//! Real Groth16 proofs for tests: a circuit proving knowledge of `a`, `b` with `a·b = out`
//! (`out` public), set up and proved with arkworks from a seeded RNG.

#![allow(dead_code, unreachable_pub)]

use ark_bn254::{Bn254, Fr};
use ark_groth16::{Groth16, ProvingKey};
use ark_relations::lc;
use ark_relations::r1cs::{ConstraintSynthesizer, ConstraintSystemRef, SynthesisError, Variable};
use ark_snark::SNARK;
use ark_std::rand::SeedableRng;
use ark_std::rand::rngs::StdRng;
use causality_proofshare::groth16::{fr_bytes, key_bytes_of, proof_bytes};

/// `a · b = out`, `out` public, and `extra` more public inputs `1, 2, …` (each bound by a
/// trivial constraint): a bigger verification key for bandwidth figures.
#[derive(Clone, Copy)]
struct Multiply {
    a: Option<Fr>,
    b: Option<Fr>,
    extra: u64,
}

impl ConstraintSynthesizer<Fr> for Multiply {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let a = cs.new_witness_variable(|| self.a.ok_or(SynthesisError::AssignmentMissing))?;
        let b = cs.new_witness_variable(|| self.b.ok_or(SynthesisError::AssignmentMissing))?;
        let out = cs.new_input_variable(|| {
            Ok(self.a.ok_or(SynthesisError::AssignmentMissing)?
                * self.b.ok_or(SynthesisError::AssignmentMissing)?)
        })?;
        cs.enforce_constraint(lc!() + a, lc!() + b, lc!() + out)?;
        for i in 1..=self.extra {
            let x = cs.new_input_variable(|| Ok(Fr::from(i)))?;
            cs.enforce_constraint(lc!() + x, lc!() + Variable::One, lc!() + x)?;
        }
        Ok(())
    }
}

/// A circuit's keys and a way to make proofs with it.
pub struct Prover {
    pk: ProvingKey<Bn254>,
    rng: StdRng,
    extra: u64,
    /// The compressed verification key.
    pub key: Vec<u8>,
}

/// One proof and its public inputs, encoded.
#[derive(Clone, Debug)]
pub struct Made {
    pub proof: Vec<u8>,
    pub public_inputs: Vec<Vec<u8>>,
}

impl Prover {
    /// A fresh setup from `seed` (a different seed is a different circuit key).
    pub fn new(seed: u64) -> Self {
        Self::with_extra_inputs(seed, 0)
    }

    /// A setup whose proofs carry `extra` more public inputs.
    pub fn with_extra_inputs(seed: u64, extra: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let circuit = Multiply {
            a: None,
            b: None,
            extra,
        };
        let (pk, vk) = Groth16::<Bn254>::circuit_specific_setup(circuit, &mut rng).expect("setup");
        Self {
            pk,
            rng,
            extra,
            key: key_bytes_of(&vk),
        }
    }

    /// A proof that `a · b` is its public output.
    pub fn prove(&mut self, a: u64, b: u64) -> Made {
        let (a, b) = (Fr::from(a), Fr::from(b));
        let proof = Groth16::<Bn254>::prove(
            &self.pk,
            Multiply {
                a: Some(a),
                b: Some(b),
                extra: self.extra,
            },
            &mut self.rng,
        )
        .expect("prove");
        Made {
            proof: proof_bytes(&proof),
            public_inputs: std::iter::once(a * b)
                .chain((1..=self.extra).map(Fr::from))
                .map(|x| fr_bytes(&x))
                .collect(),
        }
    }
}
