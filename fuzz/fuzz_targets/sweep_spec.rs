//! Fuzz target: `drover_fuzz::sweep_spec` on every input (see `fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::sweep_spec(data));
