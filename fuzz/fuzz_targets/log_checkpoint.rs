//! Fuzzes a signed checkpoint note: `causality_log::fuzzing::checkpoint` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_log::fuzzing::checkpoint(data));
