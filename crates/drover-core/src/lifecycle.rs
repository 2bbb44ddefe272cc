//! The task lifecycle as pure decisions.
//!
//! ```text
//! NEW --claim--> RUNNING --complete--> DONE
//! RUNNING --fail(retriable, attempts left)--> NEW
//! RUNNING --fail(no retry or attempts spent)--> FAILED
//! lease expiry or node DOWN: a retriable failure; cancel: NEW/RUNNING --> CANCELLED
//! ```
//!
//! A store reads the task and the reporter's own attempt record inside its transaction, asks
//! [`decide_report`] what to do, and writes exactly that. Because every store goes through the
//! same function, fencing and idempotency cannot drift between backends or surfaces.

use crate::model::{TaskResult, TaskStatus};

/// What a node reports about a task it ran.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportKind {
    Complete(TaskResult),
    Fail { error: String, retriable: bool },
}

/// How one attempt of a task ended, as recorded in the attempt history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Still held by its node.
    Running,
    Completed,
    /// The node reported a failure and the task went back to NEW.
    FailedWillRetry,
    /// The node reported a failure and the task became FAILED.
    FailedFinal,
    /// The server took the task back (lease expired or node DOWN).
    Reaped,
    /// The job was cancelled while this attempt ran.
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "RUNNING",
            AttemptOutcome::Completed => "COMPLETED",
            AttemptOutcome::FailedWillRetry => "FAILED_WILL_RETRY",
            AttemptOutcome::FailedFinal => "FAILED",
            AttemptOutcome::Reaped => "REAPED",
            AttemptOutcome::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RUNNING" => AttemptOutcome::Running,
            "COMPLETED" => AttemptOutcome::Completed,
            "FAILED_WILL_RETRY" => AttemptOutcome::FailedWillRetry,
            "FAILED" => AttemptOutcome::FailedFinal,
            "REAPED" => AttemptOutcome::Reaped,
            "CANCELLED" => AttemptOutcome::Cancelled,
            _ => return None,
        })
    }
}

/// One attempt of a task by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub node_id: String,
    pub outcome: AttemptOutcome,
}

/// The parts of a task that a report decision looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView<'a> {
    pub status: TaskStatus,
    pub attempt: u32,
    pub max_attempts: u32,
    pub assigned_to: Option<&'a str>,
}

/// The answer a report gets. Every variant but the conflicts is a success (HTTP 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Completed,
    AlreadyCompleted,
    /// The failure was recorded; `will_retry` says whether the task went back to NEW.
    Failed {
        will_retry: bool,
    },
    /// A repeated fail for an attempt whose failure is already recorded while the task lives on.
    AlreadyReported {
        will_retry: bool,
    },
    AlreadyTerminal,
    TaskNotFound,
    /// The reporter does not hold the task (fencing), or never did.
    NotHolder,
    /// The task was cancelled while the reporter held it.
    Cancelled,
    /// The reporter already reported the opposite outcome for this attempt.
    Contradicts,
}

impl ReportOutcome {
    pub fn is_success(self) -> bool {
        !matches!(
            self,
            ReportOutcome::TaskNotFound
                | ReportOutcome::NotHolder
                | ReportOutcome::Cancelled
                | ReportOutcome::Contradicts
        )
    }
}

/// A change the store must write, with the outcome to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Move the task to `to`, close the current attempt with `attempt_outcome`.
    Apply {
        to: TaskStatus,
        attempt_outcome: AttemptOutcome,
        reply: ReportOutcome,
    },
    /// Change nothing and answer `reply`.
    Reply(ReportOutcome),
}

/// The retry rule, shared by worker failures and by the reapers: a retriable failure goes back
/// to NEW while the attempts made so far are fewer than the maximum.
pub fn retry_allowed(attempts_made: u32, max_attempts: u32, retriable: bool) -> bool {
    retriable && attempts_made < max_attempts
}

/// Where a RUNNING task goes when the server takes it back from its node.
pub fn status_after_release(attempts_made: u32, max_attempts: u32) -> TaskStatus {
    if retry_allowed(attempts_made, max_attempts, true) {
        TaskStatus::New
    } else {
        TaskStatus::Failed
    }
}

/// Decides a complete or fail report from `node` about `task`.
///
/// `own_attempt` is the reporter's attempt record for this task: the one named by
/// `claimed_attempt` if the report names one, else the reporter's latest. It is what makes
/// repeated reports idempotent even after the task moved on, and late reports refusable.
pub fn decide_report(
    task: &TaskView<'_>,
    node: &str,
    claimed_attempt: Option<u32>,
    kind: &ReportKind,
    own_attempt: Option<&AttemptRecord>,
) -> Decision {
    let holds_current = task.status == TaskStatus::Running
        && task.assigned_to == Some(node)
        && claimed_attempt.is_none_or(|a| a == task.attempt);
    if holds_current {
        return match kind {
            ReportKind::Complete(_) => Decision::Apply {
                to: TaskStatus::Done,
                attempt_outcome: AttemptOutcome::Completed,
                reply: ReportOutcome::Completed,
            },
            ReportKind::Fail { retriable, .. } => {
                let will_retry = retry_allowed(task.attempt, task.max_attempts, *retriable);
                Decision::Apply {
                    to: if will_retry {
                        TaskStatus::New
                    } else {
                        TaskStatus::Failed
                    },
                    attempt_outcome: if will_retry {
                        AttemptOutcome::FailedWillRetry
                    } else {
                        AttemptOutcome::FailedFinal
                    },
                    reply: ReportOutcome::Failed { will_retry },
                }
            }
        };
    }
    let Some(own) = own_attempt.filter(|a| a.node_id == node) else {
        return Decision::Reply(ReportOutcome::NotHolder);
    };
    let reply = match (kind, own.outcome) {
        (ReportKind::Complete(_), AttemptOutcome::Completed) => ReportOutcome::AlreadyCompleted,
        (ReportKind::Fail { .. }, AttemptOutcome::Completed | AttemptOutcome::FailedFinal) => {
            ReportOutcome::AlreadyTerminal
        }
        (ReportKind::Fail { .. }, AttemptOutcome::FailedWillRetry) => {
            ReportOutcome::AlreadyReported { will_retry: true }
        }
        (
            ReportKind::Complete(_),
            AttemptOutcome::FailedWillRetry | AttemptOutcome::FailedFinal,
        ) => ReportOutcome::Contradicts,
        (_, AttemptOutcome::Cancelled) => ReportOutcome::Cancelled,
        // Reaped, or a Running record of an attempt that is not the current one.
        (_, AttemptOutcome::Reaped | AttemptOutcome::Running) => ReportOutcome::NotHolder,
    };
    Decision::Reply(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running<'a>(node: &'a str, attempt: u32, max: u32) -> TaskView<'a> {
        TaskView {
            status: TaskStatus::Running,
            attempt,
            max_attempts: max,
            assigned_to: Some(node),
        }
    }

    fn record(node: &str, attempt: u32, outcome: AttemptOutcome) -> AttemptRecord {
        AttemptRecord {
            attempt,
            node_id: node.into(),
            outcome,
        }
    }

    fn complete() -> ReportKind {
        ReportKind::Complete(TaskResult::default())
    }

    fn fail(retriable: bool) -> ReportKind {
        ReportKind::Fail {
            error: "boom".into(),
            retriable,
        }
    }

    #[test]
    fn holder_completes() {
        let d = decide_report(&running("a", 1, 3), "a", None, &complete(), None);
        assert_eq!(
            d,
            Decision::Apply {
                to: TaskStatus::Done,
                attempt_outcome: AttemptOutcome::Completed,
                reply: ReportOutcome::Completed
            }
        );
    }

    #[test]
    fn failure_retries_while_attempts_remain() {
        let d = decide_report(&running("a", 2, 3), "a", None, &fail(true), None);
        assert!(matches!(
            d,
            Decision::Apply {
                to: TaskStatus::New,
                ..
            }
        ));
        let d = decide_report(&running("a", 3, 3), "a", None, &fail(true), None);
        assert!(matches!(
            d,
            Decision::Apply {
                to: TaskStatus::Failed,
                ..
            }
        ));
        let d = decide_report(&running("a", 1, 3), "a", None, &fail(false), None);
        assert!(matches!(
            d,
            Decision::Apply {
                to: TaskStatus::Failed,
                reply: ReportOutcome::Failed { will_retry: false },
                ..
            }
        ));
    }

    #[test]
    fn another_node_is_fenced_off() {
        let d = decide_report(&running("b", 2, 3), "a", None, &complete(), None);
        assert_eq!(d, Decision::Reply(ReportOutcome::NotHolder));
        // Even with its own (reaped) attempt on record.
        let own = record("a", 1, AttemptOutcome::Reaped);
        let d = decide_report(&running("b", 2, 3), "a", Some(1), &complete(), Some(&own));
        assert_eq!(d, Decision::Reply(ReportOutcome::NotHolder));
    }

    #[test]
    fn a_stale_attempt_of_the_same_node_is_fenced_off() {
        // Node a held attempt 1, was reaped, and claimed the task again as attempt 2.
        let own = record("a", 1, AttemptOutcome::Reaped);
        let d = decide_report(&running("a", 2, 3), "a", Some(1), &complete(), Some(&own));
        assert_eq!(d, Decision::Reply(ReportOutcome::NotHolder));
    }

    #[test]
    fn repeated_reports_are_idempotent() {
        let done = TaskView {
            status: TaskStatus::Done,
            attempt: 1,
            max_attempts: 3,
            assigned_to: Some("a"),
        };
        let own = record("a", 1, AttemptOutcome::Completed);
        assert_eq!(
            decide_report(&done, "a", None, &complete(), Some(&own)),
            Decision::Reply(ReportOutcome::AlreadyCompleted)
        );
        assert_eq!(
            decide_report(&done, "a", None, &fail(true), Some(&own)),
            Decision::Reply(ReportOutcome::AlreadyTerminal)
        );
        // A retried failure repeated after the task went back to NEW.
        let new = TaskView {
            status: TaskStatus::New,
            attempt: 1,
            max_attempts: 3,
            assigned_to: None,
        };
        let own = record("a", 1, AttemptOutcome::FailedWillRetry);
        assert_eq!(
            decide_report(&new, "a", None, &fail(true), Some(&own)),
            Decision::Reply(ReportOutcome::AlreadyReported { will_retry: true })
        );
        assert_eq!(
            decide_report(&new, "a", None, &complete(), Some(&own)),
            Decision::Reply(ReportOutcome::Contradicts)
        );
    }

    #[test]
    fn reports_on_cancelled_work_are_refused() {
        let cancelled = TaskView {
            status: TaskStatus::Cancelled,
            attempt: 1,
            max_attempts: 3,
            assigned_to: Some("a"),
        };
        let own = record("a", 1, AttemptOutcome::Cancelled);
        assert_eq!(
            decide_report(&cancelled, "a", None, &complete(), Some(&own)),
            Decision::Reply(ReportOutcome::Cancelled)
        );
    }

    #[test]
    fn release_follows_the_retry_rule() {
        assert_eq!(status_after_release(1, 3), TaskStatus::New);
        assert_eq!(status_after_release(3, 3), TaskStatus::Failed);
        assert_eq!(status_after_release(1, 1), TaskStatus::Failed);
    }
}
