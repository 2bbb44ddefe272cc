//! The task lifecycle as pure decisions.
//!
//! ```text
//! NEW --claim--> RUNNING --complete--> DONE
//! RUNNING --fail(retriable, attempts left)--> NEW
//! RUNNING --fail(no retry or attempts spent)--> FAILED
//! lease expiry or node DOWN: a retriable failure; cancel: NEW/RUNNING --> CANCELLED
//! ```
//!
//! A store reads the facts inside its transaction (the task and the reporter's own attempt
//! record, the claiming node's status, the job's cancel flag), asks this module what to do
//! ([`decide_report`], [`claim_access`], [`claim_grant`], [`decide_cancel`],
//! [`status_after_release`], [`after_move`]), and writes exactly that. Because every store goes
//! through the same functions, fencing, retries and idempotency cannot drift between backends
//! or surfaces. Nothing here reads the clock or touches storage: `now` is passed in.

use crate::model::{JobStatus, NodeStatus, TaskResult, TaskStatus};
use crate::time::Timestamp;
use std::time::Duration;

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

/// The status of a task never claimed (it has no row yet): NEW, or CANCELLED once its job is.
pub fn status_of_unclaimed(job_cancelled: bool) -> TaskStatus {
    if job_cancelled {
        TaskStatus::Cancelled
    } else {
        TaskStatus::New
    }
}

/// Where a RUNNING task goes when the server takes it back from its node.
pub fn status_after_release(attempts_made: u32, max_attempts: u32) -> TaskStatus {
    if retry_allowed(attempts_made, max_attempts, true) {
        TaskStatus::New
    } else {
        TaskStatus::Failed
    }
}

/// Whether a node may claim, by its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAccess {
    /// An UP node gets work.
    Claim,
    /// A DRAINING node finishes what it has and gets nothing new (an empty list, not an error).
    Nothing,
    /// A DOWN node must heartbeat (or register again) first: refused.
    NodeDown,
}

/// Who may claim: UP claims, DRAINING gets nothing, DOWN is refused.
pub fn claim_access(node: NodeStatus) -> ClaimAccess {
    match node {
        NodeStatus::Up => ClaimAccess::Claim,
        NodeStatus::Draining => ClaimAccess::Nothing,
        NodeStatus::Down => ClaimAccess::NodeDown,
    }
}

/// A claimable task's place in claim order: highest priority first, then the oldest job (its
/// creation order), then the task's index within its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimKey {
    pub priority: i64,
    pub job_order: i64,
    pub index: u64,
}

impl Ord for ClaimKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.job_order.cmp(&other.job_order))
            .then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for ClaimKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A job's tasks that have never been claimed: indexes `first.index..end`, all NEW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remainder {
    pub first: ClaimKey,
    pub end: u64,
}

/// One task a claim takes: a stored NEW task (by its place in the `rows` given), or task `index`
/// of a remainder (by its place in the `remainders` given), which has no stored row yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPick {
    Row(usize),
    Fresh { remainder: usize, index: u64 },
}

/// The best `max` claimable tasks, in claim order, out of stored NEW tasks (`rows`) and jobs'
/// never-claimed remainders. Both lists must be in claim order, and each remainder's job must
/// differ from the others'; a store passes the first `max` of each, which is enough.
pub fn merge_claims(rows: &[ClaimKey], remainders: &[Remainder], max: usize) -> Vec<ClaimPick> {
    debug_assert!(rows.windows(2).all(|w| w[0] <= w[1]));
    debug_assert!(remainders.windows(2).all(|w| w[0].first <= w[1].first));
    let mut picks = Vec::with_capacity(max.min(rows.len() + remainders.len() * max));
    let (mut row, mut rem) = (0, 0);
    let mut next = remainders.first().map(|r| r.first);
    while picks.len() < max {
        let take_row = match (rows.get(row), next) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(r), Some(f)) => *r <= f,
        };
        if take_row {
            picks.push(ClaimPick::Row(row));
            row += 1;
            continue;
        }
        let Some(mut key) = next else { break };
        picks.push(ClaimPick::Fresh {
            remainder: rem,
            index: key.index,
        });
        key.index += 1;
        next = if key.index < remainders[rem].end {
            Some(key)
        } else {
            rem += 1;
            remainders.get(rem).map(|r| r.first)
        };
    }
    picks
}

/// What a claim of one NEW task starts: its attempt number and when its lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimGrant {
    pub attempt: u32,
    pub lease_expires_at: Timestamp,
}

/// The attempt a claim starts (one more than those made so far) and its lease, `timeout` from
/// `now`. The lease saturates at the latest representable instant rather than failing: a
/// timeout no caller should have let through must not make a claim panic.
pub fn claim_grant(attempts_made: u32, timeout: Duration, now: Timestamp) -> ClaimGrant {
    let lease_expires_at = chrono::Duration::from_std(timeout)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    ClaimGrant {
        attempt: attempts_made.saturating_add(1),
        lease_expires_at,
    }
}

/// What claiming one named task does (a worker that a message broker handed the task to says
/// it runs it now; see [`decide_task_claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskClaimDecision {
    /// NEW, and the node may take it: a new attempt ([`claim_grant`]).
    Claim,
    /// The node holds it already: a repeat, nothing changes.
    AlreadyHeld,
    /// Another node holds it, or it finished: nothing changes.
    Unavailable,
    /// The node holds as many RUNNING tasks as its cap: nothing changes.
    AtCapacity,
    /// The node is DRAINING and takes no new work.
    Draining,
    /// The node is DOWN: it must heartbeat first.
    NodeDown,
}

/// Whether `node` (of status `node_status`, holding `running` RUNNING tasks, at most
/// `max_running` if it has a cap) may take the task whose status is `task` and whose holder is
/// `holder`. A repeat by the holder is answered before anything else, so a worker that says
/// "running" twice is never refused for the work it already has.
pub fn decide_task_claim(
    task: TaskStatus,
    holder: Option<&str>,
    node: &str,
    node_status: NodeStatus,
    running: u32,
    max_running: Option<u32>,
) -> TaskClaimDecision {
    if task == TaskStatus::Running && holder == Some(node) {
        return TaskClaimDecision::AlreadyHeld;
    }
    if task != TaskStatus::New {
        return TaskClaimDecision::Unavailable;
    }
    match claim_access(node_status) {
        ClaimAccess::NodeDown => TaskClaimDecision::NodeDown,
        ClaimAccess::Nothing => TaskClaimDecision::Draining,
        ClaimAccess::Claim if max_running.is_some_and(|cap| running >= cap) => {
            TaskClaimDecision::AtCapacity
        }
        ClaimAccess::Claim => TaskClaimDecision::Claim,
    }
}

/// What a cancel request does to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelDecision {
    /// Already cancelled: answer the job as it is, change nothing.
    Unchanged,
    /// The job finished before the request: refuse, change nothing.
    Finished(JobStatus),
    /// Cancel the job: its NEW and RUNNING tasks become CANCELLED.
    Cancel,
}

/// Cancelling is idempotent, and a finished job cannot be cancelled.
pub fn decide_cancel(cancelled: bool, status: JobStatus) -> CancelDecision {
    if cancelled {
        CancelDecision::Unchanged
    } else if status.is_finished() {
        CancelDecision::Finished(status)
    } else {
        CancelDecision::Cancel
    }
}

/// What a task's holder, start and finish become when it moves to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterMove {
    /// Keep `assigned_to` (the history of who ran it); `false` clears it.
    pub keep_holder: bool,
    /// Keep `started_at`; `false` clears it.
    pub keep_started_at: bool,
    /// The new `finished_at`: `now` for a terminal status, none otherwise.
    pub finished_at: Option<Timestamp>,
}

/// The "back to NEW" rule: a task that goes back to NEW is nobody's and has neither started nor
/// finished, so the next claim starts it afresh; a task that ends keeps who ran it and when it
/// started, and finishes `now`.
pub fn after_move(to: TaskStatus, now: Timestamp) -> AfterMove {
    let back_to_new = to == TaskStatus::New;
    AfterMove {
        keep_holder: !back_to_new,
        keep_started_at: !back_to_new,
        finished_at: to.is_terminal().then_some(now),
    }
}

/// Whether `node` holds `task`'s current attempt (the one it names, if it names one): the case
/// in which [`decide_report`] applies the report without looking at `own_attempt`, so a store
/// need not read that record.
pub fn holds_current(task: &TaskView<'_>, node: &str, claimed_attempt: Option<u32>) -> bool {
    task.status == TaskStatus::Running
        && task.assigned_to == Some(node)
        && claimed_attempt.is_none_or(|a| a == task.attempt)
}

/// What a complete gets from the holder of the task's current attempt ([`holds_current`]):
/// the same whatever else the task's row says. A store may therefore apply it on that
/// condition alone, checked as it writes, without reading the task first (compare and set);
/// a complete that fails the condition is decided again from the row by [`decide_report`].
pub fn complete_by_holder() -> Decision {
    Decision::Apply {
        to: TaskStatus::Done,
        attempt_outcome: AttemptOutcome::Completed,
        reply: ReportOutcome::Completed,
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
    if holds_current(task, node, claimed_attempt) {
        return match kind {
            ReportKind::Complete(_) => complete_by_holder(),
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
    #[test]
    fn a_named_task_is_claimed_only_when_new_by_a_node_with_room() {
        use TaskClaimDecision as D;
        let up = NodeStatus::Up;
        let decide = |task, holder, status, running, cap| {
            decide_task_claim(task, holder, "w1", status, running, cap)
        };
        assert_eq!(decide(TaskStatus::New, None, up, 0, None), D::Claim);
        assert_eq!(decide(TaskStatus::New, None, up, 9, Some(10)), D::Claim);
        assert_eq!(
            decide(TaskStatus::New, None, up, 10, Some(10)),
            D::AtCapacity
        );
        assert_eq!(
            decide(TaskStatus::Running, Some("w1"), up, 10, Some(10)),
            D::AlreadyHeld,
            "a repeat is never refused for the work the node has"
        );
        assert_eq!(
            decide(TaskStatus::Running, Some("w2"), up, 0, None),
            D::Unavailable
        );
        for finished in [TaskStatus::Done, TaskStatus::Failed, TaskStatus::Cancelled] {
            assert_eq!(decide(finished, Some("w1"), up, 0, None), D::Unavailable);
        }
        assert_eq!(
            decide(TaskStatus::New, None, NodeStatus::Draining, 0, None),
            D::Draining
        );
        assert_eq!(
            decide(TaskStatus::New, None, NodeStatus::Down, 0, None),
            D::NodeDown
        );
    }

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

    mod properties {
        use super::super::*;
        use crate::test_support::{any_instant, any_job_status, any_node_status, any_task_status};
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn only_an_up_node_gets_work(status in any_node_status()) {
                let access = claim_access(status);
                prop_assert_eq!(access == ClaimAccess::Claim, status == NodeStatus::Up);
                prop_assert_eq!(access == ClaimAccess::NodeDown, status == NodeStatus::Down);
            }

            #[test]
            fn claims_merge_rows_and_remainders_in_claim_order(
                rows in proptest::collection::vec((0i64..3, 0i64..6, 0u64..20), 0..12),
                jobs in proptest::collection::btree_map(0i64..6, (0i64..3, 0u64..20, 0u64..6), 0..5),
                max in 0usize..40,
            ) {
                let mut rows: Vec<ClaimKey> = rows
                    .into_iter()
                    .map(|(priority, job_order, index)| ClaimKey { priority, job_order, index })
                    .collect();
                rows.sort();
                rows.dedup();
                let mut remainders: Vec<Remainder> = jobs
                    .into_iter()
                    .map(|(job_order, (priority, first, n))| Remainder {
                        first: ClaimKey { priority, job_order, index: first + 20 },
                        end: first + 20 + n,
                    })
                    .filter(|r| r.first.index < r.end)
                    .collect();
                remainders.sort_by_key(|r| r.first);
                let picks = merge_claims(&rows, &remainders, max);
                let key = |p: &ClaimPick| match *p {
                    ClaimPick::Row(i) => rows[i],
                    ClaimPick::Fresh { remainder, index } => ClaimKey { index, ..remainders[remainder].first },
                };
                let mut every: Vec<ClaimKey> = rows.clone();
                for r in &remainders {
                    every.extend((r.first.index..r.end).map(|index| ClaimKey { index, ..r.first }));
                }
                every.sort();
                every.truncate(max);
                prop_assert_eq!(picks.iter().map(key).collect::<Vec<_>>(), every);
            }

            #[test]
            fn a_claim_starts_the_next_attempt_with_a_lease_not_before_now(
                made in 0u32..u32::MAX,
                timeout_ms in any::<u64>(),
                now in any_instant(),
            ) {
                let grant = claim_grant(made, Duration::from_millis(timeout_ms), now);
                prop_assert_eq!(grant.attempt, made + 1);
                prop_assert!(grant.lease_expires_at >= now);
                if let Some(end) = chrono::Duration::from_std(Duration::from_millis(timeout_ms))
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                {
                    prop_assert_eq!(grant.lease_expires_at, end);
                }
            }

            #[test]
            fn cancel_never_changes_a_finished_or_cancelled_job(
                cancelled in any::<bool>(),
                status in any_job_status(),
            ) {
                let decision = decide_cancel(cancelled, status);
                if cancelled {
                    prop_assert_eq!(decision, CancelDecision::Unchanged);
                } else if status.is_finished() {
                    prop_assert_eq!(decision, CancelDecision::Finished(status));
                } else {
                    prop_assert_eq!(decision, CancelDecision::Cancel);
                }
            }

            #[test]
            fn release_obeys_the_retry_rule(made in any::<u32>(), max in any::<u32>()) {
                let to = status_after_release(made, max);
                prop_assert_eq!(to == TaskStatus::New, made < max);
                prop_assert!(matches!(to, TaskStatus::New | TaskStatus::Failed));
                prop_assert_eq!(to == TaskStatus::New, retry_allowed(made, max, true));
            }

            #[test]
            fn back_to_new_clears_the_holder_iff_new(to in any_task_status(), now in any_instant()) {
                let after = after_move(to, now);
                prop_assert_eq!(after.keep_holder, to != TaskStatus::New);
                prop_assert_eq!(after.keep_started_at, to != TaskStatus::New);
                prop_assert_eq!(after.finished_at.is_some(), to.is_terminal());
                prop_assert!(after.finished_at.is_none_or(|t| t == now));
            }

            #[test]
            fn a_report_never_moves_a_task_it_does_not_hold_and_retries_by_the_rule(
                status in any_task_status(),
                attempt in 0u32..10,
                max in 1u32..10,
                holder in prop::option::of(0u8..3),
                reporter in 0u8..3,
                retriable in any::<bool>(),
            ) {
                let holder = holder.map(|h| h.to_string());
                let reporter = reporter.to_string();
                let task = TaskView {
                    status,
                    attempt,
                    max_attempts: max,
                    assigned_to: holder.as_deref(),
                };
                let kind = ReportKind::Fail { error: "e".into(), retriable };
                match decide_report(&task, &reporter, None, &kind, None) {
                    Decision::Apply { to, .. } => {
                        prop_assert_eq!(status, TaskStatus::Running);
                        prop_assert_eq!(holder.as_deref(), Some(reporter.as_str()));
                        prop_assert_eq!(
                            to == TaskStatus::New,
                            retry_allowed(attempt, max, retriable)
                        );
                    }
                    Decision::Reply(_) => {}
                }
            }
        }
    }
}
