//! Fuzzes the handshake request body: `causality_net::fuzzing::handshake` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_net::fuzzing::handshake(data));
