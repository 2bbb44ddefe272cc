//! Identifiers for jobs, tasks, nodes, sessions and server instances.
//!
//! Ids are a kind prefix and a UUIDv7 in simple form, so they sort by creation time, which keeps
//! the stores' unique indexes append-mostly.

use uuid::Uuid;

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

pub fn job_id() -> String {
    new_id("job")
}

pub fn task_id() -> String {
    new_id("task")
}

pub fn node_id() -> String {
    new_id("spot")
}

/// A server instance (one data directory), named in the labels of the sandboxes it starts.
pub fn instance_id() -> String {
    new_id("drover")
}

/// A session id for a client that did not bring one: a UUID v4, as the session-runners
/// contract generates.
pub fn session_id() -> String {
    Uuid::new_v4().to_string()
}
