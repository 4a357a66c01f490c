//! Fuzz target: the properties of `capsign::fuzzing::capability`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capsign::fuzzing::capability(data));
