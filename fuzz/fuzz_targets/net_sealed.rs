//! Fuzzes a payload sealed to recipients: `causality_net::fuzzing::sealed` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_net::fuzzing::sealed(data));
