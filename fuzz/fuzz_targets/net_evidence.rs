//! Fuzzes equivocation evidence passed on by a peer: `causality_net::fuzzing::evidence` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_net::fuzzing::evidence(data));
