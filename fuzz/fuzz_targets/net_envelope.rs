//! Fuzzes a gossip envelope: `causality_net::fuzzing::envelope` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_net::fuzzing::envelope(data));
