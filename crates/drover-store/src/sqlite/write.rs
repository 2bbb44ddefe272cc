//! The one write path of the SQLite store: group commit on the writer connection.
//!
//! Every write is queued, and the first write to find no drainer at work starts one on the
//! blocking pool; the drainer holds the writer and takes everything queued as one group: one
//! `BEGIN IMMEDIATE` transaction, each write inside its own `SAVEPOINT`, one `COMMIT` (one
//! fsync for the group). A write that fails (or panics) is rolled back to its savepoint alone
//! and keeps its own error; its events are dropped. A few hot writes whose failures come before
//! their first change run without a savepoint ([`SqliteStore::write_unguarded`]): one of them
//! that fails having changed nothing costs its neighbours nothing either; one that fails after
//! a change rolls the group back. After the commit the events of the writes that succeeded
//! reach the observers, write by write in the order they ran, and then each caller gets its own
//! answer. If the commit fails, every write of the group that had succeeded is answered with
//! that error, so an `Ok` always means durable. Nobody waits for a later write: a group is
//! whatever queued while the previous one ran, and the drainer steps down when the queue is
//! empty. A group made only of liveness writes (heartbeats, [`SqliteStore::write_liveness`])
//! commits without the fsync; any other write in the group makes it synced.
//!
//! Between groups the writer keeps the WAL small: when the `-wal` file has grown past
//! [`WAL_LIMIT`] (a huge transaction, or readers that kept SQLite from restarting the log), it
//! runs a `TRUNCATE` checkpoint, which does not wait for readers; if one is in the way it is
//! tried again after more commits.
//!
//! When the server has been idle for a while after commits, [`SqliteStore::checkpoint_idle`]
//! folds the WAL into the database and truncates it, so that a burst followed by quiet does not
//! leave the log on disk (the rule above only runs after commits).
//!
//! Health never queues behind a busy writer: while a drainer is at work and a group has
//! committed durably within [`HEALTH_EVIDENCE`], with no commit failing since, that commit is the
//! proof a probe would give; only otherwise (the writer idle, or the last attempt failed) does
//! the health check run its own write probe, which fails rather than wait when the writer stays
//! busy without committing (stuck on another process's lock or on the disk).
//!
//! This module owns the transaction wrapper ([`Tx`]) on which write code records its events,
//! the queue, the order commit, then notify, then answer, the commit counters, the checkpoint
//! rules, the health evidence and the health probe's write. It must not decide anything about jobs, nodes or
//! runners, and nothing else may open a write transaction.

use super::{BUSY_TIMEOUT, HEALTH_BUSY_TIMEOUT, Shared, SqliteStore, map_err};
use crate::{EventObservers, Result, StoreError, WriteStats};
use drover_core::Event;
use drover_core::journal::Change;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The most writes one group takes, so a flood of writes still commits (and answers) in steps.
const MAX_GROUP: usize = 512;

/// The size past which the writer truncates the WAL between groups; also the
/// `journal_size_limit`, to which SQLite trims the log itself whenever it restarts it.
pub(super) const WAL_LIMIT: u64 = 32 * 1024 * 1024;

/// After a checkpoint that readers kept from finishing, how many commits pass before the next
/// try: each try may copy pages and sync the database, which must not happen on every group.
const CHECKPOINT_RETRY_AFTER: u64 = 64;

/// How recent a durable commit must be to stand in for a health probe while the writer is busy.
/// A full disk or a read-only file fails the next commit, which withdraws the evidence at once.
pub(super) const HEALTH_EVIDENCE: Duration = Duration::from_secs(1);

/// How long the writer must have been without a commit before the idle checkpoint runs.
pub(super) const IDLE_BEFORE_CHECKPOINT: Duration = Duration::from_secs(1);

/// An open write transaction and the events one write has caused so far. Derefs to the
/// transaction, so SQL helpers take `&Transaction` (or `&Connection`) as before; the
/// transaction is the group's, and the write runs inside its own savepoint of it.
pub(super) struct Tx<'c> {
    tx: &'c Transaction<'c>,
    // A RefCell so that helpers holding `&Tx` can both run SQL and record what it did.
    events: RefCell<Vec<Event>>,
    /// The journal's change for some of `events` (by index), given by the write itself so
    /// that the journal need not read it back (`journal::append`).
    changes: RefCell<Vec<(usize, Change)>>,
}

impl<'c> Deref for Tx<'c> {
    type Target = Transaction<'c>;

    fn deref(&self) -> &Transaction<'c> {
        self.tx
    }
}

impl<'c> Tx<'c> {
    /// Records an event of this write; it is published only if the write commits.
    pub(super) fn emit(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }

    /// [`Tx::emit`] with the change the journal records for it, for an event whose change the
    /// journal would otherwise read back from the tables (a job just made).
    pub(super) fn emit_with_change(&self, event: Event, change: Change) {
        let mut events = self.events.borrow_mut();
        self.changes.borrow_mut().push((events.len(), change));
        events.push(event);
    }

    fn new(tx: &'c Transaction<'c>) -> Tx<'c> {
        Tx {
            tx,
            events: RefCell::default(),
            changes: RefCell::default(),
        }
    }

    /// Drops the events recorded so far: they are neither journaled nor published (a rebuild
    /// writes the journal it restores itself).
    pub(super) fn forget_events(&self) {
        self.events.borrow_mut().clear();
        self.changes.borrow_mut().clear();
    }
}

/// The state of the write path shared by a store's clones: the queue, the counters and the
/// checkpoint rule.
pub(super) struct WritePath {
    queue: Mutex<VecDeque<Box<dyn Queued>>>,
    /// Synced commits, and the writes they held.
    commits: AtomicU64,
    writes: AtomicU64,
    /// Commits of liveness writes alone, which were not synced (`write_liveness`).
    light_commits: AtomicU64,
    wal: PathBuf,
    wal_limit: u64,
    /// The commit count before which no checkpoint is tried again (see [`CHECKPOINT_RETRY_AFTER`]).
    checkpoint_after: AtomicU64,
    /// Whether a drainer is on its way or at work: a write starts one only when none is, so
    /// writes that queue behind a busy writer cost no thread wake-ups of their own.
    draining: AtomicBool,
    /// What the write path has lately proved: when the last durable commit and the last failed
    /// one (or failed probe) happened, as nanoseconds after `epoch` plus one (0: never).
    epoch: Instant,
    last_commit: AtomicU64,
    last_failure: AtomicU64,
    /// The commit count at the last idle checkpoint: one idle checkpoint per quiet spell.
    idle_checkpointed: AtomicU64,
    /// [`IDLE_BEFORE_CHECKPOINT`], except in tests.
    idle_after: Duration,
}

impl WritePath {
    pub(super) fn new(db: &std::path::Path, wal_limit: u64) -> WritePath {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WritePath {
            queue: Mutex::default(),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            light_commits: AtomicU64::new(0),
            wal: PathBuf::from(wal),
            wal_limit,
            checkpoint_after: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            epoch: Instant::now(),
            last_commit: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
            idle_checkpointed: AtomicU64::new(0),
            idle_after: IDLE_BEFORE_CHECKPOINT,
        }
    }

    /// Every commit, synced or not: each one appended to the WAL.
    fn all_commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst) + self.light_commits.load(Ordering::SeqCst)
    }

    fn stamp(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).saturating_add(1)
    }

    fn committed(&self) {
        self.last_commit.store(self.stamp(), Ordering::SeqCst);
    }

    fn failed(&self) {
        self.last_failure.store(self.stamp(), Ordering::SeqCst);
    }

    /// How long ago the last durable commit was, if there was one.
    fn since_commit(&self) -> Option<Duration> {
        let at = self.last_commit.load(Ordering::SeqCst);
        (at != 0).then(|| Duration::from_nanos(self.stamp().saturating_sub(at)))
    }

    /// Whether a busy writer has just proved that the store takes durable writes (see the
    /// module docs): a drainer is at work, a group committed within [`HEALTH_EVIDENCE`], and
    /// nothing has failed since.
    fn proves_health(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
            && self.last_commit.load(Ordering::SeqCst) > self.last_failure.load(Ordering::SeqCst)
            && self.since_commit().is_some_and(|d| d <= HEALTH_EVIDENCE)
    }

    pub(super) fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    fn push(&self, job: Box<dyn Queued>) {
        // A poisoned lock only means a thread panicked while pushing or popping; the queue is
        // intact.
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(job);
    }

    fn is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The next group: up to [`MAX_GROUP`] writes, oldest first.
    fn take(&self) -> Vec<Box<dyn Queued>> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let n = queue.len().min(MAX_GROUP);
        queue.drain(..n).collect()
    }
}

/// One queued write with its output type erased, so that writes of any type share a group.
trait Queued: Send {
    /// Runs the write in its savepoint and keeps its result for the answer; on failure,
    /// returns (a copy of) its error.
    fn run(&mut self, tx: &Tx<'_>) -> Result<()>;

    /// Sends the caller its answer: its own result, or `group_failed` when its change did not
    /// commit.
    fn answer(self: Box<Self>, group_failed: Option<&StoreError>);

    /// Whether the write records liveness only (see [`SqliteStore::write_liveness`]).
    fn liveness(&self) -> bool;

    /// Whether the write runs in a savepoint of its own (all but
    /// [`SqliteStore::write_unguarded`]'s).
    fn guarded(&self) -> bool;
}

struct Pending<T, F> {
    f: Option<F>,
    out: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
    kind: Kind,
}

/// What the group commit must know of a write before running it.
#[derive(Clone, Copy)]
struct Kind {
    liveness: bool,
    guarded: bool,
}

impl Kind {
    const GUARDED: Kind = Kind {
        liveness: false,
        guarded: true,
    };
    const UNGUARDED: Kind = Kind {
        liveness: false,
        guarded: false,
    };
    const LIVENESS: Kind = Kind {
        liveness: true,
        guarded: true,
    };
}

impl<T, F> Queued for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
{
    fn run(&mut self, tx: &Tx<'_>) -> Result<()> {
        let f = self
            .f
            .take()
            .ok_or_else(|| StoreError::Internal("a write ran twice".into()))?;
        let out = f(tx);
        let result = out.as_ref().map(|_| ()).map_err(StoreError::clone);
        self.out = Some(out);
        result
    }

    fn answer(self: Box<Self>, group_failed: Option<&StoreError>) {
        let out = match (self.out, group_failed) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(_)), Some(e)) => Err(e.clone()),
            (Some(Ok(v)), None) => Ok(v),
            // It never ran (the group failed first) or it panicked.
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(StoreError::Internal("the write panicked".into())),
        };
        // The caller may have gone away; its change stands (or not) all the same.
        let _ = self.reply.send(out);
    }

    fn liveness(&self) -> bool {
        self.kind.liveness
    }

    fn guarded(&self) -> bool {
        self.kind.guarded
    }
}

impl SqliteStore {
    /// Runs `f` as part of the next group commit, and answers once the group is durable (or
    /// failed). `f` runs in its own savepoint: if it fails, only its own changes roll back and no
    /// event of it is published; the events of a write that commits reach the observers after
    /// the commit, before its caller is answered.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.enqueue(f, Kind::GUARDED).await
    }

    /// [`SqliteStore::write`] without a savepoint of its own, for a hot write whose failures
    /// come before its first change (a registration whose id is taken fails on its first
    /// `INSERT`). A savepoint is not free: the first change to each page inside one copies
    /// the page to the statement journal, a dozen pages for a registration. A write of this
    /// kind that fails having changed no row (SQLite's change counter unmoved) is answered
    /// with its own error and costs its neighbours nothing, as with a savepoint. One that fails
    /// after changing rows (an I/O error, a bug) cannot be undone alone: the group's whole
    /// transaction is rolled back and the writes that ran in it are answered as unavailable,
    /// which callers may retry; the writes not yet run go on in a fresh transaction.
    pub(super) async fn write_unguarded<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.enqueue(f, Kind::UNGUARDED).await
    }

    /// [`SqliteStore::write`] for a change that records liveness only (a node's heartbeat: when
    /// it was last heard from, and its figures). A group made of such writes alone commits
    /// without waiting for the fsync (`synchronous = NORMAL`): the commit is in the operating
    /// system's hands before the answer, so it survives `kill -9` of the server (invariant 3),
    /// and the next durable commit's fsync covers it, since the WAL is written in order. Only
    /// a power cut or a kernel crash can lose such a commit, which then reads as heartbeats
    /// that arrived late. That changes nothing a node is judged by: after such a crash every
    /// node's last heartbeat is older than the downtime anyway, and a restarted server gives
    /// every node a heartbeat period before its first silence check. A group with any other
    /// write in it is synced as always, liveness writes included.
    pub(super) async fn write_liveness<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.enqueue(f, Kind::LIVENESS).await
    }

    async fn enqueue<T, F>(&self, f: F, kind: Kind) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        // A background step's write first checks that its term's lease still stands, in the
        // same savepoint: a write of a replaced leader changes nothing (`fence.rs`).
        let fence = crate::fence::current();
        let f = move |tx: &Tx<'_>| {
            if let Some(fence) = &fence {
                still_held(tx, fence)?;
            }
            f(tx)
        };
        let (reply, answer) = oneshot::channel();
        self.writes.push(Box::new(Pending {
            f: Some(f),
            out: None,
            reply,
            kind,
        }));
        // A drainer at work takes this write in its next group; otherwise this one starts one.
        // Either way the write runs as soon as the writer is free, never after a later write.
        if !self.writes.draining.swap(true, Ordering::SeqCst) {
            let (writer, path, observers) = (
                self.writer.clone(),
                self.writes.clone(),
                self.observers.clone(),
            );
            // Detached: its work is answered through each write's channel.
            drop(tokio::task::spawn_blocking(move || {
                drain(&writer, &path, &observers)
            }));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Internal(
                "the write was dropped unanswered".into(),
            ))
        })
    }

    /// The counts of durable commits and of the writes they held, since the store opened.
    pub(super) fn write_counts(&self) -> WriteStats {
        self.writes.stats()
    }
}

/// The drainer: takes the writer and runs queued groups until the queue is empty, then steps
/// down (and takes over again if a write queued just as it did).
fn drain(writer: &Shared, path: &WritePath, observers: &EventObservers) {
    // If the drainer dies of a bug outside any write, the writes queued so far are answered
    // and the next write starts a new drainer.
    struct StepDown<'a>(&'a WritePath);
    impl Drop for StepDown<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                refuse_all(self.0, &StoreError::Internal("the writer failed".into()));
                self.0.draining.store(false, Ordering::SeqCst);
            }
        }
    }
    let _on_panic = StepDown(path);
    loop {
        drain_queue(writer, path, observers);
        path.draining.store(false, Ordering::SeqCst);
        // A write that queued after the last take but saw the flag still set started no
        // drainer: this one goes on for it, unless another has started meanwhile.
        if path.is_empty() || path.draining.swap(true, Ordering::SeqCst) {
            return;
        }
    }
}

/// Runs queued groups on the writer until the queue is empty.
fn drain_queue(writer: &Shared, path: &WritePath, observers: &EventObservers) {
    let mut guard = match writer.lock() {
        Ok(guard) => guard,
        Err(_) => {
            return refuse_all(
                path,
                &StoreError::Internal("connection lock poisoned".into()),
            );
        }
    };
    loop {
        let Some(conn) = guard.as_mut() else {
            return refuse_all(path, &StoreError::Unavailable("the store is closed".into()));
        };
        let group = path.take();
        if group.is_empty() {
            return;
        }
        // Liveness alone need not wait for the disk (`SqliteStore::write_liveness`); if the
        // switch fails, the group is simply synced.
        let light = group.iter().all(|job| job.liveness())
            && run_cached(conn, "PRAGMA synchronous = NORMAL").is_ok();
        run_group(conn, group, path, observers, light);
        if light && let Err(e) = run_cached(conn, "PRAGMA synchronous = FULL") {
            // A write that is not durable must never be acknowledged: close the writer, so
            // later writes fail as unavailable instead.
            tracing::error!(error = %e, "the writer could not be made durable again; the store is closed");
            *guard = None;
            continue;
        }
        keep_wal_small(conn, path);
    }
}

/// Answers every queued write with `e`.
fn refuse_all(path: &WritePath, e: &StoreError) {
    loop {
        let group = path.take();
        if group.is_empty() {
            return;
        }
        for job in group {
            job.answer(Some(e));
        }
    }
}

/// A write that ran in this pass, with its events if it succeeded.
type Ran = (Box<dyn Queued>, Option<Vec<Event>>);

/// Runs one group of writes in one transaction, then publishes and answers.
fn run_group(
    conn: &mut Connection,
    group: Vec<Box<dyn Queued>>,
    path: &WritePath,
    observers: &EventObservers,
    light: bool,
) {
    let mut pending: VecDeque<Box<dyn Queued>> = group.into();
    // Normally one pass. Only if SQLite rolls the whole transaction back under a write (a full
    // disk, an I/O error) do the writes not yet run start again in a fresh transaction.
    while !pending.is_empty() {
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                path.failed();
                let e = map_err(e);
                for job in pending {
                    job.answer(Some(&e));
                }
                return;
            }
        };
        // One time for the journal entries of the whole group: they commit together.
        let at = chrono::Utc::now();
        let mut ran: Vec<Ran> = Vec::with_capacity(pending.len());
        let mut aborted = None;
        // A write alone in its transaction needs no savepoint: if it fails, the whole
        // transaction rolls back, which is exactly its savepoint. Savepoints are not free: the
        // first change to each page inside one copies the page to the statement journal.
        let alone = pending.len() == 1;
        while let Some(mut job) = pending.pop_front() {
            if alone || !job.guarded() {
                let before = tx.total_changes();
                let write = Tx::new(&tx);
                let outcome = run_and_journal(&mut *job, &write, &at);
                let events = write.events.into_inner();
                // Without a savepoint, a failure is the write's alone only if it changed
                // nothing; and SQLite may have rolled the whole transaction back under it.
                let left_changes = outcome.is_err() && tx.total_changes() != before;
                let gone = tx.is_autocommit();
                let failed = outcome.err();
                ran.push((job, failed.is_none().then_some(events)));
                if !alone && (left_changes || gone) {
                    aborted = Some(failed.unwrap_or_else(|| {
                        StoreError::Unavailable("SQLite rolled the transaction back".into())
                    }));
                    break;
                }
                continue;
            }
            if let Err(e) = savepoint(&tx, "SAVEPOINT w") {
                // This write never ran; it shares the pass's fate (so each pass takes at least
                // one write off the queue).
                ran.push((job, None));
                aborted = Some(e);
                break;
            }
            let write = Tx::new(&tx);
            let outcome = run_and_journal(&mut *job, &write, &at);
            let events = write.events.into_inner();
            let closed = match &outcome {
                Ok(()) => savepoint(&tx, "RELEASE w"),
                Err(_) => {
                    savepoint(&tx, "ROLLBACK TO w").and_then(|()| savepoint(&tx, "RELEASE w"))
                }
            };
            let failed = outcome.err();
            ran.push((job, failed.is_none().then_some(events)));
            if let Err(e) = closed {
                aborted = Some(failed.unwrap_or(e));
                break;
            }
        }
        if let Some(e) = aborted {
            // The transaction is gone or unusable: nothing of this pass commits (dropping `tx`
            // rolls back whatever is left of it).
            drop(tx);
            path.failed();
            let e = StoreError::Unavailable(format!(
                "the transaction was rolled back under a neighbouring write: {e}"
            ));
            for (job, _) in ran {
                job.answer(Some(&e));
            }
            continue;
        }
        let committed = ran.iter().filter(|(_, events)| events.is_some()).count();
        if committed == 0 {
            // Every write failed: nothing to make durable (dropping `tx` rolls back).
            drop(tx);
            for (job, _) in ran {
                job.answer(None);
            }
            continue;
        }
        // A cached statement rather than `tx.commit()`, which parses `COMMIT` every time. If it
        // fails, dropping `tx` rolls back whatever is still open, as `commit` would.
        let commit = run_cached(&tx, "COMMIT");
        drop(tx);
        if let Err(e) = commit {
            // None of the group's changes were written.
            path.failed();
            for (job, _) in ran {
                job.answer(Some(&e));
            }
            continue;
        }
        if light {
            path.light_commits.fetch_add(1, Ordering::Relaxed);
        } else {
            path.commits.fetch_add(1, Ordering::Relaxed);
            path.writes.fetch_add(committed as u64, Ordering::Relaxed);
        }
        path.committed();
        for events in ran.iter().filter_map(|(_, events)| events.as_deref()) {
            // An observer that panics must not cost the writes their answers.
            if catch_unwind(AssertUnwindSafe(|| observers.notify(events))).is_err() {
                tracing::error!("an event observer panicked");
            }
        }
        for (job, _) in ran {
            job.answer(None);
        }
    }
}

/// Runs one write and appends its journal entries in the same savepoint (so a change and its
/// record commit together, and a write that fails leaves neither); a panic is the write's
/// error.
fn run_and_journal(
    job: &mut dyn Queued,
    write: &Tx<'_>,
    at: &drover_core::Timestamp,
) -> Result<()> {
    catch_unwind(AssertUnwindSafe(|| {
        job.run(write)?;
        let known = write.changes.take();
        super::journal::append(write, &write.events.borrow(), known, at)
    }))
    .unwrap_or_else(|_| Err(StoreError::Internal("the write panicked".into())))
}

/// Runs one statement without parameters from the connection's statement cache.
fn run_cached(conn: &Connection, sql: &str) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    stmt.execute([]).map(|_| ()).map_err(map_err)
}

/// Runs one savepoint statement; if it fails, SQLite has rolled the transaction back (or it is
/// no longer usable), and the whole pass must be abandoned.
fn savepoint(tx: &Transaction<'_>, sql: &str) -> Result<()> {
    let mut stmt = tx.prepare_cached(sql).map_err(map_err)?;
    stmt.execute([]).map_err(map_err)?;
    if tx.is_autocommit() {
        return Err(StoreError::Unavailable(
            "SQLite rolled the transaction back".into(),
        ));
    }
    Ok(())
}

/// Truncates the WAL if it has grown past the limit (see the module docs). Called on the writer
/// between groups, with no transaction open.
fn keep_wal_small(conn: &Connection, path: &WritePath) {
    let size = std::fs::metadata(&path.wal).map_or(0, |m| m.len());
    let commits = path.all_commits();
    if size <= path.wal_limit || commits < path.checkpoint_after.load(Ordering::Relaxed) {
        return;
    }
    // No waiting for readers: a reader in the way only postpones the truncation.
    let done = conn.busy_timeout(Duration::ZERO).and_then(|()| {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })
    });
    if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "could not restore the writer's busy timeout");
    }
    match done {
        Ok(0) => path.checkpoint_after.store(0, Ordering::Relaxed),
        Ok(_) => {
            tracing::debug!(
                wal_bytes = size,
                "readers kept the WAL from being truncated; later"
            );
            path.checkpoint_after
                .store(commits + CHECKPOINT_RETRY_AFTER, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, wal_bytes = size, "could not checkpoint the WAL; later");
            path.checkpoint_after
                .store(commits + CHECKPOINT_RETRY_AFTER, Ordering::Relaxed);
        }
    }
}

impl SqliteStore {
    /// Whether the store takes durable writes right now: from the evidence of a busy writer's
    /// recent commit when there is some, else by [`SqliteStore::probe_write`] (module docs).
    pub(super) async fn check_writes(&self) -> Result<()> {
        if self.writes.proves_health() {
            return Ok(());
        }
        let probed = self.probe_write().await;
        if probed.is_err() {
            self.writes.failed();
        }
        probed
    }

    /// Folds the WAL into the database and truncates it, if the writer has been idle for
    /// [`IDLE_BEFORE_CHECKPOINT`] since the last commit and that commit has not been folded in
    /// yet. Never waits: a writer at work, or a reader in the way, only postpones it. Answers
    /// the bytes of WAL released (0 when there was nothing to do).
    pub(super) async fn checkpoint_idle(&self) -> Result<u64> {
        let (writer, path) = (self.writer.clone(), self.writes.clone());
        tokio::task::spawn_blocking(move || {
            let commits = path.all_commits();
            let quiet = path.since_commit().is_some_and(|d| d >= path.idle_after);
            if !quiet
                || commits == path.idle_checkpointed.load(Ordering::SeqCst)
                || path.draining.load(Ordering::SeqCst)
            {
                return Ok(0);
            }
            let Ok(mut guard) = writer.try_lock() else {
                return Ok(0);
            };
            let conn = guard
                .as_mut()
                .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            let size = std::fs::metadata(&path.wal).map_or(0, |m| m.len());
            if size == 0 {
                path.idle_checkpointed.store(commits, Ordering::SeqCst);
                return Ok(0);
            }
            let done = conn.busy_timeout(Duration::ZERO).and_then(|()| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                })
            });
            conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
            match done.map_err(map_err)? {
                0 => {
                    path.idle_checkpointed.store(commits, Ordering::SeqCst);
                    path.checkpoint_after.store(0, Ordering::Relaxed);
                    Ok(size)
                }
                // A reader kept it from finishing: the next idle tick tries again.
                _ => Ok(0),
            }
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// Proves the store can take a write: bumps the `write_probe` row of `meta` in a
    /// `BEGIN IMMEDIATE` transaction and commits, waiting at most [`HEALTH_BUSY_TIMEOUT`] for
    /// another process's lock. The commit appends a real frame to the WAL (so a full disk or a
    /// read-only file fails it, where a rolled-back transaction would not), but runs with
    /// `synchronous = NORMAL`: the row carries nothing worth an fsync, and health is an open
    /// endpoint that must not turn each poll into a flush of the disk every write waits on.
    /// The next real commit's fsync covers the frame. If the writer cannot be put back to
    /// `synchronous = FULL`, it is closed: a write that is not durable must never be
    /// acknowledged, so later writes fail as unavailable instead. It takes the writer between
    /// groups, outside the queue, and is not counted as a commit. A writer held for longer
    /// than [`HEALTH_BUSY_TIMEOUT`] on top of the evidence window (it has committed nothing
    /// for that long: it waits on another process's lock, or the disk) fails the probe too:
    /// health answers within its own bound whatever the writer is stuck on.
    pub(super) async fn probe_write(&self) -> Result<()> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + HEALTH_BUSY_TIMEOUT;
            let mut guard = loop {
                match writer.try_lock() {
                    Ok(guard) => break guard,
                    Err(std::sync::TryLockError::Poisoned(_)) => {
                        return Err(StoreError::Internal("connection lock poisoned".into()));
                    }
                    Err(std::sync::TryLockError::WouldBlock) => {
                        if Instant::now() >= deadline {
                            return Err(StoreError::Unavailable(format!(
                                "the writer has committed nothing for over {:?} and is still \
                                 busy (another process may hold the database's write lock)",
                                HEALTH_EVIDENCE + HEALTH_BUSY_TIMEOUT
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            };
            let conn = guard
                .as_mut()
                .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
            conn.busy_timeout(HEALTH_BUSY_TIMEOUT).map_err(map_err)?;
            let probed = conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(map_err)
                .and_then(|()| bump_probe(conn));
            let restored = conn
                .pragma_update(None, "synchronous", "FULL")
                .and_then(|()| conn.busy_timeout(BUSY_TIMEOUT));
            if let Err(e) = restored {
                *guard = None;
                return Err(StoreError::Unavailable(format!(
                    "the writer could not be made durable again ({e}); the store is closed"
                )));
            }
            probed
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

fn bump_probe(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('write_probe', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )
    .map_err(map_err)?;
    tx.commit().map_err(map_err)
}

/// Fails with [`StoreError::Fenced`] unless the leader's lease still names `fence`'s holder and
/// epoch.
fn still_held(tx: &Tx<'_>, fence: &crate::fence::Fence) -> Result<()> {
    let held = tx
        .prepare_cached(
            "SELECT 1 FROM cluster_lease WHERE name = 'background' AND holder = ?1 AND epoch = ?2",
        )
        .map_err(map_err)?
        .exists(rusqlite::params![
            fence.replica_id,
            i64::try_from(fence.epoch).unwrap_or(i64::MAX)
        ])
        .map_err(map_err)?;
    if held { Ok(()) } else { Err(fence.refused()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("drover.db")).unwrap()
    }

    fn put(tx: &Tx<'_>, key: &str, value: &str) -> Result<()> {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)",
            [key, value],
        )
        .map(|_| ())
        .map_err(map_err)
    }

    async fn get(store: &SqliteStore, key: &'static str) -> Option<String> {
        use rusqlite::OptionalExtension;
        store
            .read(move |c| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(map_err)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_health_probe_leaves_the_writer_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.probe_write().await.unwrap();
        store.probe_write().await.unwrap();
        // 2 is FULL: every acknowledged write after a probe is still synced before its answer.
        assert_eq!(synchronous(&store).await, 2);
        assert_eq!(
            store.write_counts().commits,
            0,
            "a probe is not a durable commit"
        );
    }

    type TestWrite = Box<dyn FnOnce(&Tx<'_>) -> Result<()> + Send>;

    /// Runs `writes` (each: whether it is guarded, and the write) as one group, holding the
    /// writer until all are queued; their answers in order.
    // Holding the writer across awaits is the point: the writes must queue behind it.
    #[allow(clippy::await_holding_lock)]
    async fn one_group(store: &SqliteStore, writes: Vec<(bool, TestWrite)>) -> Vec<Result<()>> {
        let writer = store.writer.clone();
        let held = writer.lock().unwrap();
        let n = writes.len();
        let mut answers = Vec::new();
        for (guarded, f) in writes {
            let s = store.clone();
            answers.push(tokio::spawn(async move {
                if guarded {
                    s.write(f).await
                } else {
                    s.write_unguarded(f).await
                }
            }));
            // In this order in the queue.
            while store.writes.queue.lock().unwrap().len() < answers.len() {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(store.writes.queue.lock().unwrap().len(), n);
        drop(held);
        let mut out = Vec::new();
        for a in answers {
            out.push(a.await.unwrap());
        }
        out
    }

    /// Three writes of keys a, b and c, of which b (guarded or not) fails after its change.
    fn a_b_fails_after_its_change_c(b_guarded: bool) -> Vec<(bool, TestWrite)> {
        vec![
            (true, Box::new(|tx| put(tx, "a", "1"))),
            (
                b_guarded,
                Box::new(|tx| {
                    put(tx, "b", "1")?;
                    Err(StoreError::NodeDown("n".into()))
                }),
            ),
            (true, Box::new(|tx| put(tx, "c", "1"))),
        ]
    }

    #[tokio::test]
    async fn a_write_that_fails_rolls_back_alone_and_its_neighbours_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let out = one_group(&store, a_b_fails_after_its_change_c(true)).await;
        assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
        assert!(matches!(out[1], Err(StoreError::NodeDown(_))), "{out:?}");
        assert_eq!(get(&store, "a").await.as_deref(), Some("1"));
        assert_eq!(
            get(&store, "b").await,
            None,
            "the failed write left nothing behind"
        );
        assert_eq!(get(&store, "c").await.as_deref(), Some("1"));
        assert_eq!(
            store.write_counts(),
            WriteStats {
                commits: 1,
                writes: 2
            }
        );
    }

    #[tokio::test]
    async fn an_unguarded_write_that_fails_before_changing_anything_costs_its_neighbours_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.write(|tx| put(tx, "taken", "0")).await.unwrap();
        let out = one_group(
            &store,
            vec![
                (false, Box::new(|tx| put(tx, "a", "1"))),
                // Fails at its first statement, as a registration whose id is taken does.
                (false, Box::new(|tx| put(tx, "taken", "1"))),
                (true, Box::new(|tx| put(tx, "c", "1"))),
            ],
        )
        .await;
        assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
        assert!(matches!(out[1], Err(StoreError::Internal(_))), "{out:?}");
        assert_eq!(get(&store, "a").await.as_deref(), Some("1"));
        assert_eq!(get(&store, "taken").await.as_deref(), Some("0"));
        assert_eq!(get(&store, "c").await.as_deref(), Some("1"));
        assert_eq!(
            store.write_counts(),
            WriteStats {
                commits: 2,
                writes: 3
            },
            "the group committed once"
        );
    }

    #[tokio::test]
    async fn an_unguarded_write_failing_after_a_change_rolls_its_group_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let out = one_group(&store, a_b_fails_after_its_change_c(false)).await;
        // Its change cannot be undone alone: the write before it in the group is refused as
        // unavailable (retryable), the write after it commits in a fresh transaction.
        assert!(matches!(out[0], Err(StoreError::Unavailable(_))), "{out:?}");
        assert!(matches!(out[1], Err(StoreError::NodeDown(_))), "{out:?}");
        assert!(out[2].is_ok(), "{out:?}");
        assert_eq!(get(&store, "a").await, None);
        assert_eq!(get(&store, "b").await, None, "nothing of the failed write");
        assert_eq!(get(&store, "c").await.as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn a_write_that_panics_is_answered_and_rolled_back_and_the_store_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let out = store
            .write(|tx| -> Result<()> {
                put(tx, "p", "1")?;
                panic!("a bug in a write");
            })
            .await;
        assert!(matches!(out, Err(StoreError::Internal(_))), "{out:?}");
        assert_eq!(get(&store, "p").await, None);
        store.write(|tx| put(tx, "q", "1")).await.unwrap();
        assert_eq!(get(&store, "q").await.as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn a_closed_store_refuses_queued_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        crate::StoreOps::close(&store).await.unwrap();
        let out = store.write(|tx| put(tx, "x", "1")).await;
        assert!(matches!(out, Err(StoreError::Unavailable(_))), "{out:?}");
    }

    /// Waits until the writer is idle: a caller is answered before the writer looks at the WAL.
    async fn idle(store: &SqliteStore) {
        store.with_conn(|_| Ok(())).await.unwrap();
        // The drainer steps down just after it lets go of the writer.
        while store.writes.draining.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    }

    fn wal_len(store: &SqliteStore) -> u64 {
        std::fs::metadata(&store.writes.wal).map_or(0, |m| m.len())
    }

    #[tokio::test]
    async fn the_wal_is_truncated_after_a_burst_that_outgrew_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open_with_wal_limit(dir.path().join("drover.db"), 1 << 20).unwrap();
        // 8 MiB in one transaction: the WAL must hold all of it until the commit.
        let big = "x".repeat(64 * 1024);
        store
            .write(move |tx| {
                for i in 0..128 {
                    put(tx, &format!("big-{i}"), &big)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        idle(&store).await;
        assert!(
            wal_len(&store) <= 1 << 20,
            "wal is {} bytes",
            wal_len(&store)
        );
        assert_eq!(
            get(&store, "big-127").await.map(|v| v.len()),
            Some(64 * 1024)
        );
    }

    #[tokio::test]
    async fn a_reader_in_the_way_postpones_the_truncation_without_failing_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open_with_wal_limit(dir.path().join("drover.db"), 1 << 20).unwrap();
        let big = "x".repeat(64 * 1024);
        let write_big = |store: &SqliteStore, prefix: &'static str| {
            let big = big.clone();
            let store = store.clone();
            async move {
                store
                    .write(move |tx| {
                        for i in 0..32 {
                            put(tx, &format!("{prefix}-{i}"), &big)?;
                        }
                        Ok(())
                    })
                    .await
            }
        };
        // A reader holding a snapshot keeps the log from being reset.
        let reader = rusqlite::Connection::open(dir.path().join("drover.db")).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM meta", [], |r| r.get(0))
            .unwrap();
        write_big(&store, "a").await.unwrap();
        write_big(&store, "b").await.unwrap();
        assert!(wal_len(&store) > 1 << 20);
        reader.execute_batch("COMMIT").unwrap();
        // The next tries come after more commits.
        for i in 0..=CHECKPOINT_RETRY_AFTER {
            let key = format!("small-{i}");
            store.write(move |tx| put(tx, &key, "1")).await.unwrap();
        }
        idle(&store).await;
        assert!(
            wal_len(&store) <= 1 << 20,
            "wal is {} bytes",
            wal_len(&store)
        );
    }

    /// A store whose idle checkpoint does not wait for a quiet second.
    async fn eager_store(dir: &tempfile::TempDir) -> SqliteStore {
        let mut store = store(dir).await;
        Arc::get_mut(&mut store.writes)
            .expect("a fresh store has one handle on its write path")
            .idle_after = Duration::ZERO;
        store
    }

    async fn write_mib(store: &SqliteStore, prefix: &'static str, mib: usize) {
        let big = "x".repeat(64 * 1024);
        store
            .write(move |tx| {
                for i in 0..mib * 16 {
                    put(tx, &format!("{prefix}-{i}"), &big)?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_quiet_store_folds_its_wal_in_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = eager_store(&dir).await;
        assert_eq!(
            store.checkpoint_idle().await.unwrap(),
            0,
            "nothing written yet"
        );
        // Under the 32 MiB limit: the commit path leaves this WAL alone.
        write_mib(&store, "a", 4).await;
        idle(&store).await;
        let before = wal_len(&store);
        assert!(before > 4 << 20, "wal is {before} bytes");
        assert_eq!(store.checkpoint_idle().await.unwrap(), before);
        assert_eq!(wal_len(&store), 0);
        assert_eq!(
            store.checkpoint_idle().await.unwrap(),
            0,
            "no commit since: nothing to do"
        );
        assert_eq!(get(&store, "a-63").await.map(|v| v.len()), Some(64 * 1024));
    }

    #[tokio::test]
    // Holding the writer is the point: the checkpoint must not wait for it.
    #[allow(clippy::await_holding_lock)]
    async fn the_idle_checkpoint_never_waits_for_the_writer_nor_runs_right_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let eager = eager_store(&dir).await;
        write_mib(&eager, "a", 1).await;
        idle(&eager).await;
        let held = eager.writer.lock().unwrap();
        assert_eq!(
            eager.checkpoint_idle().await.unwrap(),
            0,
            "the writer is busy"
        );
        drop(held);
        assert!(eager.checkpoint_idle().await.unwrap() > 0);

        let other = tempfile::tempdir().unwrap();
        let patient = store(&other).await;
        write_mib(&patient, "b", 1).await;
        assert_eq!(
            patient.checkpoint_idle().await.unwrap(),
            0,
            "a commit within the last second: not quiet yet"
        );
        assert!(wal_len(&patient) > 0);
    }

    #[tokio::test]
    // Holding the writer is the point: health must answer without it.
    #[allow(clippy::await_holding_lock)]
    async fn health_does_not_wait_for_a_busy_writer_that_has_just_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.write(|tx| put(tx, "a", "1")).await.unwrap();
        // A drainer at work (it holds the writer) right after a durable commit.
        let held = store.writer.lock().unwrap();
        store.writes.draining.store(true, Ordering::SeqCst);
        let answered = tokio::time::timeout(Duration::from_secs(30), store.check_writes()).await;
        assert!(
            matches!(answered, Ok(Ok(()))),
            "health queued behind the writer: {answered:?}"
        );
        // A failure since the commit withdraws the evidence: health probes again (and so
        // waits for the writer).
        store.writes.failed();
        assert!(!store.writes.proves_health());
        store.writes.draining.store(false, Ordering::SeqCst);
        drop(held);
        store.check_writes().await.unwrap();
    }

    #[tokio::test]
    // Holding the writer is the point: a writer stuck without committing fails health.
    #[allow(clippy::await_holding_lock)]
    async fn health_fails_without_waiting_for_a_writer_stuck_since_its_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        // A drainer at work that has committed nothing (it waits on another process's lock,
        // for instance): no evidence, and the writer cannot be had for a probe.
        let held = store.writer.lock().unwrap();
        store.writes.draining.store(true, Ordering::SeqCst);
        let answered = tokio::time::timeout(Duration::from_secs(30), store.check_writes()).await;
        assert!(
            matches!(answered, Ok(Err(StoreError::Unavailable(_)))),
            "health waited for the stuck writer or passed: {answered:?}"
        );
        store.writes.draining.store(false, Ordering::SeqCst);
        drop(held);
        store.check_writes().await.unwrap();
    }

    #[test]
    fn an_idle_writer_proves_nothing_and_a_probe_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = WritePath::new(&dir.path().join("drover.db"), WAL_LIMIT);
        assert!(!path.proves_health(), "no commit yet");
        path.committed();
        assert!(!path.proves_health(), "idle: the next write may fail");
        path.draining.store(true, Ordering::SeqCst);
        assert!(path.proves_health());
        path.failed();
        assert!(!path.proves_health());
        path.committed();
        assert!(path.proves_health());
    }

    async fn synchronous(store: &SqliteStore) -> i64 {
        store
            .with_conn(|c| {
                c.query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(map_err)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_group_of_liveness_writes_alone_commits_unsynced_and_leaves_the_writer_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store
            .write_liveness(|tx| put(tx, "beat", "1"))
            .await
            .unwrap();
        assert_eq!(get(&store, "beat").await.as_deref(), Some("1"));
        assert_eq!(
            store.write_counts().commits,
            0,
            "no fsync for liveness alone"
        );
        assert_eq!(store.writes.light_commits.load(Ordering::SeqCst), 1);
        assert_eq!(
            synchronous(&store).await,
            2,
            "FULL again for the next group"
        );
        store.write(|tx| put(tx, "real", "1")).await.unwrap();
        assert_eq!(store.write_counts().commits, 1);
    }

    #[tokio::test]
    // Holding the writer across awaits is the point: the writes must queue behind it.
    #[allow(clippy::await_holding_lock)]
    async fn a_liveness_write_grouped_with_any_other_write_is_synced_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let held = store.writer.lock().unwrap();
        let beat = tokio::spawn({
            let s = store.clone();
            async move { s.write_liveness(|tx| put(tx, "beat", "1")).await }
        });
        let real = tokio::spawn({
            let s = store.clone();
            async move { s.write(|tx| put(tx, "real", "1")).await }
        });
        while store.writes.queue.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        drop(held);
        beat.await.unwrap().unwrap();
        real.await.unwrap().unwrap();
        assert_eq!(
            store.write_counts(),
            WriteStats {
                commits: 1,
                writes: 2
            }
        );
        assert_eq!(store.writes.light_commits.load(Ordering::SeqCst), 0);
    }
}
