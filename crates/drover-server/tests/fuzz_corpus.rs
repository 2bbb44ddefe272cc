//! The fuzz corpus as a regular test: every file under `fuzz/corpus/<target>/` goes through the
//! same function its fuzz target calls (`fuzz/src/lib.rs`), which panics on a crash or on a
//! refusal answered as a server error. So the inputs the fuzzer found keep protecting in
//! `cargo test`, without cargo-fuzz or a nightly toolchain; `scripts/fuzz` runs the fuzzer.

#[path = "../../../fuzz/src/lib.rs"]
mod targets;

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../fuzz/corpus/{target}"));
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target} failed on {}", path.display());
        files += 1;
    }
    assert!(files > 0, "no corpus in {}", dir.display());
    eprintln!("{target}: {files} corpus files replayed");
}

#[test]
fn the_sweep_spec_corpus_replays_cleanly() {
    replay("sweep_spec", targets::sweep_spec);
}

#[test]
fn the_command_template_corpus_replays_cleanly() {
    replay("command_template", targets::command_template);
}

#[test]
fn the_request_body_corpus_replays_cleanly() {
    replay("request_body", targets::request_body);
}
