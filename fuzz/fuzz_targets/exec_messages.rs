//! Fuzzes execution sequences, status messages, results and tokens: `causality_exec::fuzzing::messages` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_exec::fuzzing::messages(data));
