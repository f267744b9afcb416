//! Fuzzes register gossip, requests, responses and symbols: `causality_regsync::fuzzing::messages` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_regsync::fuzzing::messages(data));
