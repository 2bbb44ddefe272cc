//! Fuzz target: `drover_fuzz::command_template` on every input (see `fuzz/src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::command_template(data));
