//! Fuzzes a log entry read back from disk: `causality_log::fuzzing::entry` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_log::fuzzing::entry(data));
