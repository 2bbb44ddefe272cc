//! Marks the API tests whose outside parts (python3, PostgreSQL, Python's grpcio, a RabbitMQ
//! broker, Python's pika and schemathesis, Chromium with chromedriver) are missing here as
//! ignored (see `build/parts.rs`).
include!("../../build/parts.rs");

fn main() {
    probe_parts(&[
        "python3",
        "postgres",
        "grpcio",
        "rabbitmq",
        "pika",
        "schemathesis",
        "chromium",
    ]);
}
