//! Fuzzes a request or response frame on a stream: `causality_net::fuzzing::frame` holds the contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| causality_net::fuzzing::frame(data));
