//! Fuzzes compressed Groth16 keys, proofs and scalars: `causality_proofshare::fuzzing::groth16` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_proofshare::fuzzing::groth16(data));
