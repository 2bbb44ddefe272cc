//! Strategies shared by the core's property tests. Test-only; no rules live here.

use crate::model::{JobStatus, NodeStatus, TaskStatus};
use crate::time::Timestamp;
use chrono::{DateTime, Utc};
use proptest::prelude::*;

/// Any instant a store can hold, the last representable one included (leases saturate there).
pub fn any_instant() -> impl Strategy<Value = Timestamp> {
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    prop_oneof![
        (0i64..=4_102_444_800).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
        (max - 1_000_000..=max).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default()),
    ]
}

pub fn any_node_status() -> impl Strategy<Value = NodeStatus> {
    prop::sample::select(NodeStatus::ALL)
}

pub fn any_task_status() -> impl Strategy<Value = TaskStatus> {
    prop::sample::select(TaskStatus::ALL)
}

pub fn any_job_status() -> impl Strategy<Value = JobStatus> {
    prop::sample::select(JobStatus::ALL)
}
