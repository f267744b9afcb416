//! Fuzzes proof-sharing gossip, requests and responses: `causality_proofshare::fuzzing::messages` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_proofshare::fuzzing::messages(data));
