//! Fuzz target: the properties of `capsign::fuzzing::jwks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capsign::fuzzing::jwks(data));
