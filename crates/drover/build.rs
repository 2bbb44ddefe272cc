//! Marks the process tests whose outside parts are missing here as ignored (see
//! `build/parts.rs`).
include!("../../build/parts.rs");

fn main() {
    probe_parts(&[
        "docker",
        "python3",
        "shell_tools",
        "sqlite3_json",
        "contract",
        "tmpfs",
        "postgres",
        "netns",
    ]);
}
