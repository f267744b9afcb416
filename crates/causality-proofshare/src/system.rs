//! Proof systems and the verifier interface.
//!
//! A verifier is registered per [`ProofSystem`]; Groth16 over BN254 ships with the crate
//! (feature `groth16`), others (PLONK, STARKs) plug in by implementing [`ProofVerifier`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::error::VerifyError;

/// A proof system, as its code on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProofSystem(pub u32);

impl ProofSystem {
    /// Groth16 over BN254 (snarkjs's `bn128`), arkworks compressed encodings.
    pub const GROTH16_BN254: Self = Self(1);
}

impl fmt::Display for ProofSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::GROTH16_BN254 => f.write_str("groth16-bn254"),
            Self(code) => write!(f, "system-{code}"),
        }
    }
}

/// One proof to check: its bytes and its public inputs, each in the system's encoding.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// The proof.
    pub proof: &'a [u8],
    /// The public inputs, in order.
    pub public_inputs: &'a [Vec<u8>],
}

/// A verification key decoded, checked and prepared for verifying many proofs.
pub trait PreparedKey: Send + Sync + fmt::Debug {
    /// The system it belongs to.
    fn system(&self) -> ProofSystem;

    /// How many public inputs a proof under this key has.
    fn public_inputs(&self) -> usize;

    /// Checks one proof. Decoding errors (bad lengths, points off the curve, non-canonical
    /// field elements) and a false proof are all errors, each its own variant.
    fn verify(&self, claim: Claim<'_>) -> Result<(), VerifyError>;

    /// Checks many proofs under this key, one result per claim, in order. `seed` must be
    /// secret and fresh (it drives the random weights of a batch check). The default checks
    /// them one by one.
    fn verify_batch(&self, claims: &[Claim<'_>], seed: [u8; 32]) -> Vec<Result<(), VerifyError>> {
        let _ = seed;
        claims.iter().map(|c| self.verify(*c)).collect()
    }
}

/// A proof system's verifier: turns key bytes into a [`PreparedKey`].
pub trait ProofVerifier: Send + Sync + fmt::Debug {
    /// The system it verifies.
    fn system(&self) -> ProofSystem;

    /// Decodes and checks a verification key.
    fn prepare(&self, key: &[u8]) -> Result<Arc<dyn PreparedKey>, VerifyError>;
}

/// The verifiers a node knows, keyed by system.
#[derive(Clone, Debug, Default)]
pub struct Verifiers {
    by_system: BTreeMap<ProofSystem, Arc<dyn ProofVerifier>>,
}

impl Verifiers {
    /// No verifiers at all: every proof is refused as [`VerifyError::UnknownSystem`].
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every verifier this build has: Groth16 over BN254 with the `groth16` feature.
    pub fn standard() -> Self {
        #[allow(unused_mut)]
        let mut verifiers = Self::empty();
        #[cfg(feature = "groth16")]
        verifiers.register(Arc::new(crate::groth16::Groth16Bn254::default()));
        verifiers
    }

    /// Adds (or replaces) the verifier of its system.
    pub fn register(&mut self, verifier: Arc<dyn ProofVerifier>) {
        self.by_system.insert(verifier.system(), verifier);
    }

    /// Decodes and checks a key of `system`.
    pub fn prepare(
        &self,
        system: ProofSystem,
        key: &[u8],
    ) -> Result<Arc<dyn PreparedKey>, VerifyError> {
        self.by_system
            .get(&system)
            .ok_or(VerifyError::UnknownSystem(system.0))?
            .prepare(key)
    }

    /// The systems registered.
    pub fn systems(&self) -> Vec<ProofSystem> {
        self.by_system.keys().copied().collect()
    }
}
