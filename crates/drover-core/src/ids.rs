//! Identifiers for jobs, tasks and nodes.
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
