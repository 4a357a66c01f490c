//! Fuzz target: the properties of `capsign::fuzzing::webhook_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| capsign::fuzzing::webhook_answer(data));
