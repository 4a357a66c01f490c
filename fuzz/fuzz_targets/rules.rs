//! Fuzz target: the properties of `capsign::fuzzing::rules`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capsign::fuzzing::rules(data));
