//! What every backend shares and no rule lives in: how one call's changes to a job's counts are
//! collected and settled (through the core's `JobCounts::status`), the cache of parsed sweeps,
//! the facts of a job's never-claimed tasks and how such a task reads, and paging.
//!
//! It holds no SQL and decides nothing about the lifecycle: a backend reads its rows into these
//! types and writes back what they answer.

use crate::{Paged, Result, StoreError};
use drover_core::lifecycle::{ClaimKey, Remainder};
use drover_core::sweep::Sweep;
use drover_core::{JobCounts, JobStatus, Task, TaskResult, TaskStatus, Timestamp};
use hashlink::LruCache;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};

/// How one call changed a job: tasks moved between statuses (every change drover makes; the
/// counting trigger is for changes made outside it), rows made, whether a task was claimed.
#[derive(Debug, Default)]
pub(crate) struct JobDelta {
    pub new: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub materialised: u64,
    pub claimed: bool,
}

impl JobDelta {
    fn count(&mut self, status: TaskStatus) -> &mut i64 {
        match status {
            TaskStatus::New => &mut self.new,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Done => &mut self.done,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
        }
    }

    pub fn moved(&mut self, from: TaskStatus, to: TaskStatus) {
        *self.count(from) -= 1;
        *self.count(to) += 1;
    }

    /// `counts` after this change, or `None` if a count would fall below zero.
    pub fn apply(&self, counts: JobCounts) -> Option<JobCounts> {
        let add = |n: u64, d: i64| n.checked_add_signed(d);
        Some(JobCounts {
            total: counts.total,
            new: add(counts.new, self.new)?,
            running: add(counts.running, self.running)?,
            done: add(counts.done, self.done)?,
            failed: add(counts.failed, self.failed)?,
            cancelled: add(counts.cancelled, self.cancelled)?,
        })
    }
}

/// The jobs one call touched and how. A call touches few jobs (usually one), so a list beats a
/// map, and a job's id is copied once per call, not once per task.
#[derive(Debug, Default)]
pub(crate) struct Deltas(pub Vec<(String, JobDelta)>);

impl Deltas {
    pub fn of(&mut self, job_id: &str) -> &mut JobDelta {
        let i = match self.0.iter().rposition(|(id, _)| id == job_id) {
            Some(i) => i,
            None => {
                self.0.push((job_id.to_string(), JobDelta::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

/// A job's row as settling needs it: its counts, whether it is cancelled, whether it has
/// started, and the status stored with them.
pub(crate) struct StoredJob {
    pub counts: JobCounts,
    pub cancelled: bool,
    pub started: bool,
    pub status: String,
}

/// What a job becomes after one call's changes.
pub(crate) struct Settled {
    pub counts: JobCounts,
    /// Whether the job has started (a claim starts it).
    pub started: bool,
    /// The core's `JobCounts::status` of the counts after the call.
    pub status: JobStatus,
    /// Whether the status and the start are as stored (only the counts moved).
    pub counts_only: bool,
}

/// Applies `delta` to job `id`'s stored row.
pub(crate) fn settle(id: &str, stored: &StoredJob, delta: &JobDelta) -> Result<Settled> {
    let counts = delta
        .apply(stored.counts)
        .ok_or_else(|| StoreError::Internal(format!("job {id}: a count would fall below zero")))?;
    let started = stored.started || delta.claimed;
    let status = counts.status(stored.cancelled, started);
    Ok(Settled {
        counts,
        started,
        status,
        counts_only: status.as_str() == stored.status && started == stored.started,
    })
}

/// Most jobs whose parsed sweeps are kept.
const SWEEP_CACHE_JOBS: usize = 64;
/// Most bytes of spec text whose parsed sweeps are kept: an explicit task list is held in full,
/// so the cache is bounded by what it holds as well as by how many jobs.
const SWEEP_CACHE_BYTES: usize = 16 << 20;

/// The parsed sweeps of recently used jobs, by job id. Every claim of a never-claimed task
/// builds its payload from the job's sweep; parsing the spec for each would cost a claim as
/// much as its SQL (all of it, for an explicit task list). A job's spec never changes after
/// creation and job ids are never reused (not even those of a creation rolled back), so an
/// entry is never stale: entries leave only to bound memory, least recently used first.
pub(crate) struct SweepCache {
    kept: Mutex<Kept>,
    max_jobs: usize,
    max_bytes: usize,
}

pub(crate) struct Kept {
    /// Each sweep with the length of its spec text, which is what counts against the budget.
    pub sweeps: LruCache<String, (Arc<Sweep>, usize)>,
    pub bytes: usize,
}

impl Default for SweepCache {
    fn default() -> Self {
        SweepCache::with_bounds(SWEEP_CACHE_JOBS, SWEEP_CACHE_BYTES)
    }
}

impl SweepCache {
    pub fn with_bounds(max_jobs: usize, max_bytes: usize) -> Self {
        SweepCache {
            // Unbounded as a map: both bounds are kept by `sweep_of`, so every eviction is
            // counted.
            kept: Mutex::new(Kept {
                sweeps: LruCache::new_unbounded(),
                bytes: 0,
            }),
            max_jobs,
            max_bytes,
        }
    }

    /// The kept entries; a panic while they were held leaves them consistent (each change is
    /// a single map operation and its byte count), so a poisoned lock is used as is.
    pub fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept sweep of `job_id`, if it is kept (and marks it recently used).
    pub fn cached(&self, job_id: &str) -> Option<Arc<Sweep>> {
        self.kept()
            .sweeps
            .get(job_id)
            .map(|(sweep, _)| sweep.clone())
    }

    /// Parses `job_id`'s kept `spec` and keeps the sweep if it fits the bounds.
    pub fn keep(&self, job_id: &str, spec: &str) -> Result<Arc<Sweep>> {
        let sweep = Arc::new(Sweep::from_spec_json(spec).map_err(|e| {
            StoreError::Internal(format!(
                "job {job_id} keeps a spec that does not parse: {e}"
            ))
        })?);
        let bytes = spec.len();
        if bytes <= self.max_bytes {
            let mut kept = self.kept();
            let Kept {
                sweeps,
                bytes: held,
            } = &mut *kept;
            *held += bytes;
            // An entry parsed twice (a reader and the writer both missed) replaces the first.
            if let Some((_, old)) = sweeps.insert(job_id.to_string(), (sweep.clone(), bytes)) {
                *held -= old;
            }
            while *held > self.max_bytes || sweeps.len() > self.max_jobs {
                match sweeps.remove_lru() {
                    Some((_, (_, b))) => *held -= b,
                    None => break,
                }
            }
        }
        Ok(sweep)
    }

    /// The sweep `job_id`'s kept spec describes, reading the spec with `load` only when it is
    /// not kept. (Parsed outside the lock: a reader and the writer may both miss, and both
    /// parse.)
    pub fn sweep_of(
        &self,
        job_id: &str,
        load: impl FnOnce() -> Result<String>,
    ) -> Result<Arc<Sweep>> {
        match self.cached(job_id) {
            Some(sweep) => Ok(sweep),
            None => self.keep(job_id, &load()?),
        }
    }
}

/// A job's tasks that have no rows yet (`materialised..total`), and what building them needs.
pub(crate) struct Unclaimed {
    pub seq: i64,
    pub job_id: String,
    pub priority: i64,
    pub materialised: u64,
    pub total: u64,
    pub cancelled: bool,
    pub max_attempts: u32,
    pub timeout_ms: i64,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

impl Unclaimed {
    /// The status of every task without a row: NEW, or CANCELLED once the job is.
    pub fn status(&self) -> TaskStatus {
        drover_core::lifecycle::status_of_unclaimed(self.cancelled)
    }

    pub fn remainder(&self) -> Remainder {
        Remainder {
            first: ClaimKey {
                priority: self.priority,
                job_order: self.seq,
                index: self.materialised,
            },
            end: self.total,
        }
    }
}

/// Task `index` of a job, which has no row: as the job's spec builds it, untouched since the
/// job was made (or cancelled with it).
/// The job a creation has just written, as reading it back would show it, without the read:
/// `created_at` is the time as the store keeps it (`stored_now`), the task timeout in whole
/// milliseconds as kept.
pub(crate) fn created_job(
    seq: i64,
    id: &str,
    job: &crate::NewJob,
    sweep: &Sweep,
    stored_now: Timestamp,
) -> Result<drover_core::Job> {
    let internal = |e: serde_json::Error| StoreError::Internal(e.to_string());
    let counts = JobCounts {
        total: sweep.len(),
        new: sweep.len(),
        ..Default::default()
    };
    Ok(drover_core::Job {
        id: id.to_string(),
        seq,
        name: job.name.clone(),
        origin: job.origin.clone(),
        priority: job.priority,
        max_attempts: job.max_attempts,
        task_timeout: std::time::Duration::from_millis(job.task_timeout.as_millis() as u64),
        spec: sweep.spec_value().map_err(internal)?,
        run: job.run.clone(),
        parameter_names: sweep.parameter_names(),
        status: counts.status(false, false),
        cancelled: false,
        counts,
        created_at: stored_now,
        started_at: None,
        updated_at: stored_now,
        finished_at: None,
    })
}

pub(crate) fn unclaimed_task(job: &Unclaimed, payload: Map<String, Value>, index: u64) -> Task {
    let status = job.status();
    Task {
        id: drover_core::ids::sweep_task_id(&job.job_id, index),
        job_id: job.job_id.clone(),
        seq: index as i64,
        payload,
        status,
        attempt: 0,
        max_attempts: job.max_attempts,
        assigned_to: None,
        started_at: None,
        lease_expires_at: None,
        finished_at: match status {
            TaskStatus::Cancelled => job.finished_at,
            _ => None,
        },
        result: TaskResult::default(),
        last_error: None,
        created_at: job.created_at,
    }
}

/// Cuts a `limit + 1` query result into a page and the next cursor.
pub(crate) fn paged<T>(mut items: Vec<T>, limit: u32, seq: impl Fn(&T) -> i64) -> Paged<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(seq) } else { None };
    Paged { items, next_cursor }
}

/// Why a task was taken back from a node found silent: the error its attempt records.
pub(crate) fn silence_error(
    holder: Option<&str>,
    attempt: u32,
    liveness: crate::Liveness,
) -> String {
    let sends = match liveness {
        crate::Liveness::Heartbeats => "heartbeats",
        crate::Liveness::Stats => "stats",
    };
    format!(
        "spot {} stopped sending {sends} during attempt {attempt}",
        holder.unwrap_or("?")
    )
}

/// Which nodes a backend's silence and retention checks read: those the silence reaper may
/// mark DOWN (by their heartbeats, or, for nodes of the placement surface, by their stats
/// reports), or those retention may forget. The SQL only narrows the rows read (the live ones
/// through the index of their heartbeats, so the reaper does not read every node every few
/// seconds); whether a node is silent, and what happens to it, is still `drover_core::node`'s
/// answer.
#[derive(Clone, Copy)]
pub(crate) enum Candidates {
    NotDown,
    /// Nodes of the placement surface, judged by their stats reports.
    StatsNotDown,
    Down,
}

impl Candidates {
    /// What the nodes among them send to show they are alive.
    pub(crate) fn liveness(self) -> crate::Liveness {
        match self {
            Candidates::StatsNotDown => crate::Liveness::Stats,
            Candidates::NotDown | Candidates::Down => crate::Liveness::Heartbeats,
        }
    }

    /// The cutoff a candidate is judged by: the heartbeat silence check gives a node with a
    /// longer silence timeout of its own (`NamedNode::silence_timeout`) that timeout; the stats
    /// check and retention judge every node by theirs.
    pub(crate) fn cutoff_for(
        self,
        cutoff: Timestamp,
        now: Timestamp,
        own: Option<std::time::Duration>,
    ) -> Timestamp {
        match self {
            Candidates::NotDown => silence_cutoff(cutoff, now, own),
            Candidates::StatsNotDown | Candidates::Down => cutoff,
        }
    }
}

/// What silence and retention judge a node by, as a backend reads it.
pub(crate) struct Facts {
    pub(crate) id: String,
    pub(crate) view: drover_core::node::RetentionView,
    /// Its own silence timeout, if it has one.
    pub(crate) silence: Option<std::time::Duration>,
}

/// The instant before which a node's last heartbeat must lie for the heartbeat silence check
/// to judge it silent: `cutoff` (the spot timeout before `now`), or, for a node that may stay
/// silent longer (its own `silence_timeout`), its own timeout before `now`. A timeout of its
/// own only ever lengthens the spot timeout, so the check's candidates (found by `cutoff`)
/// hold every node it may mark DOWN. Whether the node is silent is still
/// `drover_core::node::goes_down`'s answer, given this instant.
pub(crate) fn silence_cutoff(
    cutoff: Timestamp,
    now: Timestamp,
    own: Option<std::time::Duration>,
) -> Timestamp {
    match own {
        None => cutoff,
        // A timeout too long to subtract means the node is never silent.
        Some(own) => chrono::Duration::from_std(own)
            .ok()
            .and_then(|own| now.checked_sub_signed(own))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
            .min(cutoff),
    }
}

/// A node's own silence timeout as stored (milliseconds), or `None` for the spot timeout.
pub(crate) fn silence_ms(own: Option<std::time::Duration>) -> Option<i64> {
    own.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stored silence timeout (milliseconds) as a duration; a negative one (a hand edit) counts
/// as none.
pub(crate) fn silence_of(ms: Option<i64>) -> Option<std::time::Duration> {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(std::time::Duration::from_millis)
}

/// How many of the outbox's published rows one read or one confirmation looks at, from where
/// the last one stopped ([`OutboxWindows`]): whatever the backlog of published jobs not yet
/// consumed, the publisher's statements read at most this many of its rows, and a released task
/// among them is found again within (published rows / this) steps.
pub(crate) const OUTBOX_WINDOW: i64 = 1000;

/// Where the next look at the outbox's published rows starts, for finding tasks released since
/// (`retried`) and for closing the rows of finished tasks (`closing`): the last row looked at,
/// or 0 to start over. A position, not a record: losing it (a restart) only means starting over.
#[derive(Debug, Default)]
pub(crate) struct OutboxWindows {
    pub(crate) retried: std::sync::atomic::AtomicI64,
    pub(crate) closing: std::sync::atomic::AtomicI64,
}

impl OutboxWindows {
    /// Where a look through `at` starts.
    pub(crate) fn start(at: &std::sync::atomic::AtomicI64) -> i64 {
        at.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records how a look that started at `from` went: it saw `seen` rows, the last `last`. A
    /// look that saw fewer than a window reached the end: the next starts over.
    pub(crate) fn advance(at: &std::sync::atomic::AtomicI64, seen: i64, last: Option<i64>) {
        let next = match last {
            Some(last) if seen >= OUTBOX_WINDOW => last,
            _ => 0,
        };
        at.store(next, std::sync::atomic::Ordering::Relaxed);
    }
}
