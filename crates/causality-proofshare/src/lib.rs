#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod error;
#[cfg(feature = "groth16")]
pub mod groth16;
mod system;

pub use crate::error::{ImportError, ProofShareError, VerifyError};
pub use crate::system::{Claim, PreparedKey, ProofSystem, ProofVerifier, Verifiers};
