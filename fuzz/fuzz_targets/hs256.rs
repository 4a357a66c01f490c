//! Fuzz target: the properties of `capsign::fuzzing::hs256`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capsign::fuzzing::hs256(data));
