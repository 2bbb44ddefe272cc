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
//! maximum, so a claim refused for its spot (unknown, DOWN) fails alone. A database error fails the group's calls together, as it would
//! have failed each. The transaction runs on a task of its own, so a caller that goes away
//! (its client disconnected) cannot cut the commit of the others short.
//!
//! Only small calls group (`jobs.rs`, `GROUPED_UP_TO`): a claim of hundreds of tasks or a
//! batch of hundreds of reports already shares its commit among them, and runs beside the
//! groups in a transaction of its own.
//!
//! It owns only the grouping; what a claim or a report does is `jobs.rs`.

use super::PgStore;
use crate::{Report, Result, StoreError};
use drover_core::{ClaimedTask, ReportOutcome, Timestamp};
use tokio::sync::oneshot;

/// One call waiting for a group.
pub(super) enum Op {
    Claim { node_id: String, max: u32 },
    Report(Vec<Report>),
}

pub(super) enum Answer {
    Claimed(Result<Vec<ClaimedTask>>),
    Reported(Result<Vec<ReportOutcome>>),
}

struct Entry {
    op: Op,
    now: Timestamp,
    reply: oneshot::Sender<Answer>,
}

/// The queue of calls waiting for the next group, and the turn to commit one.
#[derive(Default)]
pub(super) struct Group {
    queue: std::sync::Mutex<Vec<Entry>>,
    turn: tokio::sync::Mutex<()>,
}

impl PgStore {
    /// Runs `op` in the next group and returns its own answer.
    pub(super) async fn grouped(&self, op: Op, now: Timestamp) -> Answer {
        let (reply, mut answer) = oneshot::channel();
        self.group
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Entry { op, now, reply });
        // Either a group already under way takes this call (its answer comes), or this call
        // gets the turn and commits whatever is queued, itself included. A call whose answer
        // came must not then wait for a turn of its own: that would queue every caller behind
        // every commit and leave one call per group.
        let turn = tokio::select! {
            biased;
            done = &mut answer => return done.unwrap_or_else(|_| lost()),
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
        answer.await.unwrap_or_else(|_| lost())
    }

    async fn commit_group(&self, batch: Vec<Entry>) {
        // The group's instant: the latest of its calls' (each was "now" when it arrived).
        let now = batch.iter().map(|e| e.now).max().unwrap_or_default();
        let mut reports = Vec::new();
        for e in &batch {
            if let Op::Report(r) = &e.op {
                reports.extend(r.iter().cloned());
            }
        }
        let claims: Vec<(&str, u32)> = batch
            .iter()
            .filter_map(|e| match &e.op {
                Op::Claim { node_id, max } => Some((node_id.as_str(), *max)),
                Op::Report(_) => None,
            })
            .collect();
        let result = write_tx!(self, |tx| async {
            // Statements are prepared once per connection and cached; PostgreSQL switches such
            // a statement to a generic plan after five runs, chosen while the tables were small
            // (a fresh database, a sweep just created) and kept as they grow: a sequential scan
            // of `tasks` per small report once it holds thousands of rows. A group's short
            // statements are planned for their parameters instead, which costs them little
            // (large batches, whose arrays make planning dear, keep the cached plans).
            super::write::exec(&*tx, "SET LOCAL plan_cache_mode = force_custom_plan", &[]).await?;
            let outcomes = if reports.is_empty() {
                Vec::new()
            } else {
                super::jobs::report_in(&tx, &reports, now).await?
            };
            let claimed = if claims.is_empty() {
                Vec::new()
            } else {
                super::jobs::claims_in(&tx, &self.sweeps, &claims, now).await?
            };
            Ok((outcomes, claimed))
        }
        .await);
        let (mut outcomes, mut claimed) = match result {
            Ok((outcomes, claimed)) => {
                // The commit counted one write; the group held one per call.
                self.writes
                    .fetch_add(batch.len() as u64 - 1, std::sync::atomic::Ordering::Relaxed);
                (outcomes.into_iter(), claimed.into_iter())
            }
            Err(e) => {
                for entry in batch {
                    let _ = entry.reply.send(match entry.op {
                        Op::Claim { .. } => Answer::Claimed(Err(e.clone())),
                        Op::Report(_) => Answer::Reported(Err(e.clone())),
                    });
                }
                return;
            }
        };
        for entry in batch {
            let answer = match &entry.op {
                Op::Report(r) => Answer::Reported(Ok(outcomes.by_ref().take(r.len()).collect())),
                Op::Claim { .. } => Answer::Claimed(claimed.next().unwrap_or_else(|| {
                    Err(StoreError::Internal("a grouped claim got no answer".into()))
                })),
            };
            let _ = entry.reply.send(answer);
        }
    }
}

/// The answer of a call whose group stopped before answering (its task panicked).
fn lost() -> Answer {
    Answer::Reported(Err(StoreError::OutcomeUnknown(
        "the group commit carrying this call stopped before answering".into(),
    )))
}
