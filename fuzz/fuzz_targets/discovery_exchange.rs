//! Fuzzes a peer exchange request or response and its records: `causality_discovery::fuzzing::exchange` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_discovery::fuzzing::exchange(data));
