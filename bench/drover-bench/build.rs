//! Marks the PostgreSQL smoke run as ignored where no PostgreSQL server binaries are installed
//! (see `build/parts.rs`).
include!("../../build/parts.rs");

fn main() {
    probe_parts(&["postgres"]);
}
