//! Fuzz target: the properties of `capsign::fuzzing::auth_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capsign::fuzzing::auth_request(data));
