//! Fuzz target: `drover_fuzz::request_body` on every input (see `fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::request_body(data));
