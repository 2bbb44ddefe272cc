//! Domain events: what an acknowledged write changed, one value per fact.
//!
//! This module owns the list of events and their stable names ([`Event::kind`]), which metrics
//! count by and the journal records. A store yields them from its one write path after the
//! commit; nothing here decides anything or does IO, and an event never carries more than it
//! takes to identify its subject and the change.

use crate::model::{NodeStatus, ReplicaState, TaskStatus};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    JobCreated {
        job_id: String,
        total_tasks: u64,
    },
    JobCancelled {
        job_id: String,
    },
    /// A waiting job was raised to a higher priority (the priority contract's aging), with
    /// its tasks not finished.
    JobPriorityRaised {
        job_id: String,
        priority: i64,
    },
    TaskClaimed {
        task_id: String,
        job_id: String,
        node_id: String,
        attempt: u32,
    },
    TaskCompleted {
        task_id: String,
        job_id: String,
        node_id: String,
        attempt: u32,
    },
    TaskFailed {
        task_id: String,
        job_id: String,
        node_id: String,
        attempt: u32,
        will_retry: bool,
    },
    /// The server took a task back (lease expired, node DOWN); `to` is NEW or FAILED.
    TaskReleased {
        task_id: String,
        job_id: String,
        node_id: Option<String>,
        attempt: u32,
        to: TaskStatus,
    },
    NodeRegistered {
        node_id: String,
    },
    /// A heartbeat; `status` is the node's status after it.
    NodeUpdated {
        node_id: String,
        status: NodeStatus,
    },
    /// A node's declared facts changed (labels, capacity: the node registry's `UpdateNode`).
    NodeDescribed {
        node_id: String,
    },
    NodeDown {
        node_id: String,
    },
    /// A DOWN node sent a heartbeat and is UP again.
    NodeRevived {
        node_id: String,
    },
    NodeForgotten {
        node_id: String,
    },
    /// An operator drained a node: it finishes what it holds and gets no new work.
    NodeDraining {
        node_id: String,
    },
    /// An operator put a drained node back to work: it is UP.
    NodeUndrained {
        node_id: String,
    },
    RunnerReserved {
        session_id: String,
        singleton: bool,
    },
    RunnerStarted {
        session_id: String,
    },
    RunnerTouched {
        session_id: String,
    },
    RunnerRemoved {
        session_id: String,
    },
    /// A node reported its live stats (the placement contract's `POST /node/{id}/stats`).
    NodeStatsReported {
        node_id: String,
    },
    SchedulerConfigured,
    ObjectRegistered {
        hash: String,
    },
    ReplicaChanged {
        hash: String,
        node_id: String,
        state: ReplicaState,
    },
}

impl Event {
    /// Every kind, in declaration order, for those who count by kind.
    pub const KINDS: &'static [&'static str] = &[
        "job_created",
        "job_cancelled",
        "job_priority_raised",
        "task_claimed",
        "task_completed",
        "task_failed",
        "task_released",
        "node_registered",
        "node_updated",
        "node_described",
        "node_down",
        "node_revived",
        "node_forgotten",
        "node_draining",
        "node_undrained",
        "runner_reserved",
        "runner_started",
        "runner_touched",
        "runner_removed",
        "node_stats_reported",
        "scheduler_configured",
        "object_registered",
        "replica_changed",
    ];

    /// A stable snake_case name: metric labels and journal records use it, so it never changes.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::JobCreated { .. } => "job_created",
            Event::JobCancelled { .. } => "job_cancelled",
            Event::JobPriorityRaised { .. } => "job_priority_raised",
            Event::TaskClaimed { .. } => "task_claimed",
            Event::TaskCompleted { .. } => "task_completed",
            Event::TaskFailed { .. } => "task_failed",
            Event::TaskReleased { .. } => "task_released",
            Event::NodeRegistered { .. } => "node_registered",
            Event::NodeUpdated { .. } => "node_updated",
            Event::NodeDescribed { .. } => "node_described",
            Event::NodeDown { .. } => "node_down",
            Event::NodeRevived { .. } => "node_revived",
            Event::NodeForgotten { .. } => "node_forgotten",
            Event::NodeDraining { .. } => "node_draining",
            Event::NodeUndrained { .. } => "node_undrained",
            Event::RunnerReserved { .. } => "runner_reserved",
            Event::RunnerStarted { .. } => "runner_started",
            Event::RunnerTouched { .. } => "runner_touched",
            Event::RunnerRemoved { .. } => "runner_removed",
            Event::NodeStatsReported { .. } => "node_stats_reported",
            Event::SchedulerConfigured => "scheduler_configured",
            Event::ObjectRegistered { .. } => "object_registered",
            Event::ReplicaChanged { .. } => "replica_changed",
        }
    }

    /// Whether this change may have made a task claimable that was not: a new job, a task
    /// sent back to NEW by a retriable failure or by the server taking it back, or a drained
    /// node put back to work. A claim waiting for work (`waitMs`) is woken by these and by
    /// nothing else.
    pub fn may_free_work(&self) -> bool {
        match self {
            Event::JobCreated { total_tasks, .. } => *total_tasks > 0,
            Event::TaskFailed { will_retry, .. } => *will_retry,
            Event::TaskReleased { to, .. } => *to == TaskStatus::New,
            Event::NodeUndrained { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_distinct_snake_case_and_listed() {
        let id = || "x".to_string();
        let all = [
            Event::JobCreated {
                job_id: id(),
                total_tasks: 1,
            },
            Event::JobCancelled { job_id: id() },
            Event::JobPriorityRaised {
                job_id: id(),
                priority: 10,
            },
            Event::TaskClaimed {
                task_id: id(),
                job_id: id(),
                node_id: id(),
                attempt: 1,
            },
            Event::TaskCompleted {
                task_id: id(),
                job_id: id(),
                node_id: id(),
                attempt: 1,
            },
            Event::TaskFailed {
                task_id: id(),
                job_id: id(),
                node_id: id(),
                attempt: 1,
                will_retry: true,
            },
            Event::TaskReleased {
                task_id: id(),
                job_id: id(),
                node_id: None,
                attempt: 1,
                to: TaskStatus::New,
            },
            Event::NodeRegistered { node_id: id() },
            Event::NodeUpdated {
                node_id: id(),
                status: NodeStatus::Up,
            },
            Event::NodeDescribed { node_id: id() },
            Event::NodeDown { node_id: id() },
            Event::NodeRevived { node_id: id() },
            Event::NodeForgotten { node_id: id() },
            Event::NodeDraining { node_id: id() },
            Event::NodeUndrained { node_id: id() },
            Event::RunnerReserved {
                session_id: id(),
                singleton: false,
            },
            Event::RunnerStarted { session_id: id() },
            Event::RunnerTouched { session_id: id() },
            Event::RunnerRemoved { session_id: id() },
            Event::NodeStatsReported { node_id: id() },
            Event::SchedulerConfigured,
            Event::ObjectRegistered { hash: id() },
            Event::ReplicaChanged {
                hash: id(),
                node_id: id(),
                state: ReplicaState::Healthy,
            },
        ];
        let kinds: Vec<&str> = all.iter().map(Event::kind).collect();
        assert_eq!(kinds, Event::KINDS);
        let waking: Vec<&str> = all
            .iter()
            .filter(|e| e.may_free_work())
            .map(Event::kind)
            .collect();
        assert_eq!(
            waking,
            [
                "job_created",
                "task_failed",
                "task_released",
                "node_undrained"
            ]
        );
        for k in kinds {
            assert!(k.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{k}");
        }
    }
}
