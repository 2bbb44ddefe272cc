//! Group commit of the hot calls on PostgreSQL: claims and reports that arrive while this
//! replica's previous group is committing share the next transaction, so that many clients
//! each claiming a few tasks or completing one pay for one commit (one WAL flush) together
//! instead of queueing one commit each behind the job row they all update.
//!
//! A call queues itself, then waits for its turn at the commit lock; whoever holds the lock
//! takes everything queued and commits it, so no call waits for a later one: the first call
//! commits alone at once, and those arriving meanwhile go together next. Each call keeps its
//! own answer: reports are decided together (each report on its own, as a batch would be),
//! and claims are picked together and handed out in the order they came, each up to its own
//! maximum, so a claim refused for its spot (unknown, DOWN) fails alone. A database error
//! fails the group's calls together, as it would have failed each. The transaction runs on a
//! task of its own, so a caller that goes away (its client disconnected) cannot cut the
//! commit of the others short.
//!
//! A group commits in up to two transactions: first the completes by the tasks' holders sent
//! one per call, by compare and set in one round trip (`jobs::complete_held_at_once`, the
//! common report); then the claims and whatever reports that left, read and decided under
//! their locks (`jobs::report_and_claim`). A call is in exactly one of them, so it stays
//! atomic, and a complete applied by the first is answered as soon as it commits, without
//! waiting for the second.
//!
//! Only small calls group ([`joins_group`]): a claim of hundreds of tasks or a batch of
//! hundreds of reports already shares its commit among them, and runs beside the groups in a
//! transaction of its own; so does a fenced call (a background step), which keeps its fence
//! check.
//!
//! It owns only the grouping; what a claim or a report does is `jobs.rs`.

use super::PgStore;
use crate::{Report, Result, StoreError};
use drover_core::{ClaimedTask, ReportOutcome, Timestamp};
use tokio::sync::oneshot;

/// The largest claim (tasks asked for) or report batch that waits to share a group commit.
/// Larger calls amortise their commit over their own tasks and gain more from running beside
/// the groups (PostgreSQL writes them in parallel) than from joining one.
const GROUPED_UP_TO: usize = 32;

/// Whether a call about `tasks` tasks waits for a group rather than committing alone.
pub(super) fn joins_group(tasks: usize) -> bool {
    tasks <= GROUPED_UP_TO && crate::fence::current().is_none()
}

/// One call waiting for a group, with where its answer goes.
enum Op {
    Claim {
        node_id: String,
        max: u32,
        reply: oneshot::Sender<Result<Vec<ClaimedTask>>>,
    },
    Report {
        reports: Vec<Report>,
        reply: oneshot::Sender<Result<Vec<ReportOutcome>>>,
    },
}

struct Entry {
    op: Op,
    now: Timestamp,
}

/// The queue of calls waiting for the next group, and the turn to commit one.
#[derive(Default)]
pub(super) struct Group {
    queue: std::sync::Mutex<Vec<Entry>>,
    turn: tokio::sync::Mutex<()>,
}

impl PgStore {
    /// A claim in the next group.
    pub(super) async fn claim_grouped(
        &self,
        node_id: &str,
        max: u32,
        now: Timestamp,
    ) -> Result<Vec<ClaimedTask>> {
        let (reply, answer) = oneshot::channel();
        let node_id = node_id.to_string();
        self.join(
            Op::Claim {
                node_id,
                max,
                reply,
            },
            now,
            answer,
        )
        .await
    }

    /// A report batch in the next group.
    pub(super) async fn report_grouped(
        &self,
        reports: Vec<Report>,
        now: Timestamp,
    ) -> Result<Vec<ReportOutcome>> {
        let (reply, answer) = oneshot::channel();
        self.join(Op::Report { reports, reply }, now, answer).await
    }

    /// Queues `op` and waits for its answer, committing a group when it gets the turn.
    async fn join<T>(
        &self,
        op: Op,
        now: Timestamp,
        mut answer: oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        self.group
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Entry { op, now });
        // Either a group already under way takes this call (its answer comes), or this call
        // gets the turn and commits whatever is queued, itself included. A call whose answer
        // came must not then wait for a turn of its own: that would queue every caller behind
        // every commit and leave one call per group.
        let turn = tokio::select! {
            biased;
            done = &mut answer => return done.unwrap_or_else(|_| Err(lost())),
            turn = self.group.turn.lock() => turn,
        };
        let batch =
            std::mem::take(&mut *self.group.queue.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            let store = self.clone();
            // Awaited here, so groups commit one after another; on its own task, so that
            // dropping this call does not drop the others' transaction half way.
            let _ = tokio::spawn(async move { store.commit_group(batch).await }).await;
        }
        drop(turn);
        answer.await.unwrap_or_else(|_| Err(lost()))
    }

    async fn commit_group(&self, batch: Vec<Entry>) {
        // The group's instant: the latest of its calls' (each was "now" when it arrived).
        let now = batch.iter().map(|e| e.now).max().unwrap_or_default();
        // Completes by the tasks' holders first, in one round trip, each answered as soon as
        // it is committed; what that leaves (other reports, completes whose task was not as
        // their reporter said) and the claims go together in the careful transaction. Only a
        // call of one report goes first: a call is atomic, and a batch split over two
        // transactions would not be.
        let (lone, mut rest): (Vec<Entry>, Vec<Entry>) = batch
            .into_iter()
            .partition(|e| matches!(&e.op, Op::Report { reports, .. } if reports.len() == 1));
        let first: Vec<&Report> = (lone.iter())
            .flat_map(|e| match &e.op {
                Op::Report { reports, .. } => reports.first(),
                Op::Claim { .. } => None,
            })
            .collect();
        let applied = super::jobs::complete_held_at_once(self, &first, now).await;
        for (entry, outcome) in lone.into_iter().zip(applied) {
            match (entry.op, outcome) {
                (Op::Report { reply, .. }, Some(outcome)) => {
                    // A call of its own, committed.
                    self.writes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = reply.send(Ok(vec![outcome]));
                }
                (op, _) => rest.push(Entry { op, now: entry.now }),
            }
        }
        if rest.is_empty() {
            return;
        }
        let mut reports: Vec<Report> = Vec::new();
        let mut claims: Vec<(&str, u32)> = Vec::new();
        for e in &rest {
            match &e.op {
                Op::Report { reports: r, .. } => reports.extend(r.iter().cloned()),
                Op::Claim { node_id, max, .. } => claims.push((node_id, *max)),
            }
        }
        let result = write_tx!(self, |tx| {
            super::jobs::report_and_claim(&tx, &self.sweeps, &reports, &claims, now).await
        });
        let (mut decided, mut claimed, failed) = match result {
            Ok((decided, claimed)) => {
                // The commit counted one write; it held one per call.
                self.writes.fetch_add(
                    (rest.len() as u64).saturating_sub(1),
                    std::sync::atomic::Ordering::Relaxed,
                );
                (decided.into_iter(), claimed.into_iter(), None)
            }
            Err(e) => (Vec::new().into_iter(), Vec::new().into_iter(), Some(e)),
        };
        let unanswered = |what: &str| match &failed {
            Some(e) => e.clone(),
            None => StoreError::Internal(format!("a grouped {what} got no answer")),
        };
        for entry in rest {
            match entry.op {
                Op::Report { reports, reply } => {
                    // Taken whole before it is judged, so the next call starts at its own.
                    let taken: Vec<ReportOutcome> = decided.by_ref().take(reports.len()).collect();
                    let whole = taken.len() == reports.len() && failed.is_none();
                    let _ = reply.send(if whole {
                        Ok(taken)
                    } else {
                        Err(unanswered("report"))
                    });
                }
                Op::Claim { reply, .. } => {
                    let _ = reply.send(claimed.next().unwrap_or_else(|| Err(unanswered("claim"))));
                }
            }
        }
    }
}

/// The error of a call whose group stopped before answering (its task panicked).
fn lost() -> StoreError {
    StoreError::OutcomeUnknown(
        "the group commit carrying this call stopped before answering".into(),
    )
}
