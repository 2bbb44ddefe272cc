//! Marks the broker tests as ignored where RabbitMQ's server is not installed (see
//! `build/parts.rs`).
include!("../../build/parts.rs");

fn main() {
    probe_parts(&["rabbitmq"]);
}
