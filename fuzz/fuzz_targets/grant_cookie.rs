//! Fuzz target: the properties of `capsign::fuzzing::grant_cookie`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capsign::fuzzing::grant_cookie(data));
