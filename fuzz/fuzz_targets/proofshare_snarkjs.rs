//! Fuzzes snarkjs JSON files: `causality_proofshare::fuzzing::snarkjs` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_proofshare::fuzzing::snarkjs(data));
