//! The journal on SQLite: the `journal` table, appended by the write path inside each write's
//! savepoint, and the reads of [`JournalStore`].
//!
//! Sequence numbers are one more than the last entry's (or than the snapshot's, when compaction
//! dropped every entry), and the single writer appends in commit order, so they have no gaps;
//! a write that rolls back takes its rows with it, and the next write reuses the numbers.
//!
//! This module owns reading a subject's image in the writing transaction and the live-state
//! read; what is journaled is `drover_core::journal::subject`'s decision.

use super::write::Tx;
use super::{SqliteStore, map_err, rows};
use crate::{BlobRecord, JournalStore, LiveState, NewBlob, Result, StoreError};
use async_trait::async_trait;
use drover_core::journal::{
    self, Change, Entry, JobImage, NodeImage, ObjectImage, RunnerImage, State, StatsImage, Subject,
    TaskImage,
};
use drover_core::time::format as ts;
use drover_core::{Event, JobCounts, ReplicaState, TaskStatus, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// Appends the entries of one write's `events`, read as they stand in its transaction.
pub(super) fn append(
    conn: &Connection,
    events: &[Event],
    known: Vec<(usize, Change)>,
    at: &Timestamp,
) -> Result<()> {
    let mut changes = Vec::with_capacity(events.len());
    let mut known = known.into_iter().peekable();
    for (i, event) in events.iter().enumerate() {
        let change = match known.next_if(|(at, _)| *at == i) {
            Some((_, change)) => Some(change),
            None => change_of(conn, event)?,
        };
        if let Some(change) = change {
            changes.push((event.kind(), change));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    // After the last entry, or after the snapshot when compaction dropped every entry.
    let first: i64 = conn
        .prepare_cached(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM journal), 0),
                        COALESCE((SELECT MAX(seq) FROM journal_snapshots), 0)) + 1",
        )
        .map_err(map_err)?
        .query_row([], |r| r.get(0))
        .map_err(map_err)?;
    let at_text = ts(at);
    let mut insert = conn
        .prepare_cached("INSERT INTO journal (seq, at, kind, data) VALUES (?1, ?2, ?3, ?4)")
        .map_err(map_err)?;
    for entry in journal::entries(changes, first as u64, *at) {
        let data = serde_json::to_string(&entry.changes)
            .map_err(|e| StoreError::Internal(format!("journal entry not encoded: {e}")))?;
        insert
            .execute(params![entry.seq as i64, at_text, entry.kind, data])
            .map_err(map_err)?;
    }
    Ok(())
}

/// The change `event` records, read from the tables where the event names its subject only.
fn change_of(conn: &Connection, event: &Event) -> Result<Option<Change>> {
    Ok(Some(match journal::subject(event) {
        Subject::Nothing => return Ok(None),
        Subject::Change(change) => change,
        Subject::Node(id) => match node(conn, id)? {
            Some(image) => Change::Node(image),
            None => Change::NodeGone { id: id.to_string() },
        },
        Subject::NodeStats(id) => match one(conn, STATS_BY_ID, id, stats)? {
            Some((id, stats)) => Change::NodeStats { id, stats },
            None => return Ok(None),
        },
        Subject::Job(id) => match one(conn, JOB_BY_ID, id, job)? {
            Some((image, _)) => Change::Job(image),
            None => return Err(StoreError::Internal(format!("journal: job {id} not found"))),
        },
        Subject::Runner(id) => match one(conn, RUNNER_BY_ID, id, rows::runner)? {
            Some(runner) => Change::Runner(RunnerImage::of(&runner)),
            None => Change::RunnerGone {
                session: id.to_string(),
            },
        },
        Subject::Object(hash) => match one(conn, OBJECT_BY_HASH, hash, object)? {
            Some(image) => Change::Object(image),
            None => return Ok(None),
        },
        Subject::Scheduler => match weights(conn)? {
            Some(weights) => Change::Scheduler { weights },
            None => return Ok(None),
        },
    }))
}

/// The last entry's number, counting those compacted behind the snapshot.
const HEAD: &str = "SELECT MAX(COALESCE((SELECT MAX(seq) FROM journal), 0),
     COALESCE((SELECT MAX(seq) FROM journal_snapshots), 0))";

const JOB_IMAGE: &str = crate::journal::job_image_sql!();
const JOB_BY_ID: &str = concat!(crate::journal::job_image_sql!(), " WHERE id = ?1");
const STATS: &str = crate::journal::stats_sql!();
const STATS_BY_ID: &str = concat!(crate::journal::stats_sql!(), " AND id = ?1");
const RUNNER_BY_ID: &str = concat!(
    "SELECT session_id, driver, instance, endpoint, status, singleton, created_at,
         last_heartbeat, token_hash FROM runners",
    " WHERE session_id = ?1"
);
const OBJECT_BY_HASH: &str = "SELECT hash, size, rf FROM objects WHERE hash = ?1";

fn one<T>(
    conn: &Connection,
    sql: &str,
    key: &str,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.prepare_cached(sql)
        .map_err(map_err)?
        .query_row([key], read)
        .optional()
        .map_err(map_err)
}

/// Every row `sql` answers, each read by `read`.
fn all<T>(
    conn: &Connection,
    sql: &str,
    read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    conn.prepare(sql)
        .map_err(map_err)?
        .query_map([], read)
        .map_err(map_err)?
        .collect::<rusqlite::Result<Vec<T>>>()
        .map_err(map_err)
}

fn node(conn: &Connection, id: &str) -> Result<Option<NodeImage>> {
    match rows::node_by_id(conn, id) {
        Ok(node) => Ok(Some(NodeImage::of(&node))),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn job(r: &Row<'_>) -> rusqlite::Result<(JobImage, JobCounts)> {
    let total = r.get::<_, i64>(5)?.max(0) as u64;
    let count = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
    Ok((
        JobImage {
            id: r.get(0)?,
            name: r.get(1)?,
            origin: r.get(2)?,
            priority: r.get(3)?,
            max_attempts: r.get(4)?,
            timeout_ms: r.get::<_, i64>(12)?.max(0) as u64,
            total,
            cancelled: r.get(6)?,
            spec: r.get(13)?,
            run: r.get(14)?,
        },
        JobCounts {
            total,
            new: count(7)?,
            running: count(8)?,
            done: count(9)?,
            failed: count(10)?,
            cancelled: count(11)?,
        },
    ))
}

fn stats(r: &Row<'_>) -> rusqlite::Result<(String, StatsImage)> {
    Ok((
        r.get(0)?,
        StatsImage([r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]),
    ))
}

fn object(r: &Row<'_>) -> rusqlite::Result<ObjectImage> {
    Ok(ObjectImage {
        hash: r.get(0)?,
        size: r.get::<_, i64>(1)?.max(0) as u64,
        rf: r.get(2)?,
    })
}

fn weights(conn: &Connection) -> Result<Option<StatsImage>> {
    conn.prepare_cached(
        "SELECT w_cpu, w_ram, w_gpu, w_latency, w_io FROM scheduler_config WHERE id = 1",
    )
    .map_err(map_err)?
    .query_row([], |r| {
        Ok(StatsImage([
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ]))
    })
    .optional()
    .map_err(map_err)
}

fn entry(r: &Row<'_>) -> rusqlite::Result<(i64, String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// An entry as stored, decoded; a row that does not decode is reported, never skipped.
fn decode((seq, at, kind, data): (i64, String, String, String)) -> Result<Entry> {
    let bad = |why: String| StoreError::Internal(format!("journal entry {seq}: {why}"));
    Ok(Entry {
        seq: seq as u64,
        at: drover_core::time::parse(&at).ok_or_else(|| bad(format!("bad time {at:?}")))?,
        kind,
        changes: serde_json::from_str(&data).map_err(|e| bad(e.to_string()))?,
    })
}

/// The live tables as the journaled state, in one read transaction.
fn live(conn: &mut Connection) -> Result<LiveState> {
    let tx = conn.transaction().map_err(map_err)?;
    let mut live = LiveState {
        head: tx
            .query_row(HEAD, [], |r| r.get::<_, i64>(0))
            .map_err(map_err)? as u64,
        ..LiveState::default()
    };
    let state = &mut live.state;
    for node in all(
        &tx,
        &format!("SELECT {} FROM nodes", rows::NODE_COLUMNS),
        rows::node,
    )? {
        state.nodes.insert(node.id.clone(), NodeImage::of(&node));
    }
    state.stats.extend(all(&tx, STATS, stats)?);
    for (image, counts) in all(&tx, JOB_IMAGE, job)? {
        live.counts.insert(image.id.clone(), counts);
        state.jobs.insert(image.id.clone(), image);
    }
    let tasks = all(
        &tx,
        "SELECT id, job_id, status, attempt, assigned_to FROM tasks
         WHERE attempt > 0 OR status NOT IN ('NEW', 'CANCELLED')",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                TaskImage {
                    job: r.get(1)?,
                    status: rows::status::<TaskStatus>(r, 2)?,
                    attempt: r.get(3)?,
                    node: r.get(4)?,
                },
            ))
        },
    )?;
    for (id, task) in tasks {
        state.insert_task(id, task);
    }
    for runner in all(
        &tx,
        &format!("SELECT {} FROM runners", rows::RUNNER_COLUMNS),
        rows::runner,
    )? {
        state
            .runners
            .insert(runner.session_id.clone(), RunnerImage::of(&runner));
    }
    for object in all(&tx, "SELECT hash, size, rf FROM objects", object)? {
        state.objects.insert(object.hash.clone(), object);
    }
    for (hash, node, replica) in all(&tx, "SELECT hash, node_id, state FROM replicas", |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            rows::status::<ReplicaState>(r, 2)?,
        ))
    })? {
        state
            .replicas
            .entry(hash)
            .or_default()
            .insert(node, replica);
    }
    state.scheduler = weights(&tx)?;
    Ok(live)
}

#[async_trait]
impl JournalStore for SqliteStore {
    async fn journal(&self, after: u64, limit: u32) -> Result<Vec<Entry>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT seq, at, kind, data FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(map_err)?
            .query_map(params![after, limit], entry)
            .map_err(map_err)?
            .map(|row| decode(row.map_err(map_err)?))
            .collect()
        })
        .await
    }

    async fn journal_head(&self) -> Result<u64> {
        self.read(|conn| {
            conn.prepare_cached(HEAD)
                .map_err(map_err)?
                .query_row([], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(map_err)
        })
        .await
    }

    async fn live_state(&self) -> Result<LiveState> {
        self.read(live).await
    }

    async fn record_blob(&self, blob: NewBlob) -> Result<BlobRecord> {
        self.write(move |tx| {
            let published = published(tx)?;
            if blob.first != published + 1 || blob.last < blob.first {
                return Err(StoreError::OutOfOrder {
                    published,
                    first: blob.first,
                });
            }
            tx.prepare_cached(
                "INSERT INTO journal_blobs (first_seq, last_seq, sink, height, commitment, size,
                     posted_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(map_err)?
            .execute(params![
                blob.first as i64,
                blob.last as i64,
                blob.sink.as_str(),
                blob.height as i64,
                blob.commitment,
                blob.size as i64,
                ts(&blob.posted_at)
            ])
            .map_err(map_err)?;
            Ok(BlobRecord {
                id: tx.last_insert_rowid(),
                blob,
                reconciled: None,
                retry_count: 0,
                last_error: None,
            })
        })
        .await
    }

    async fn published_upto(&self) -> Result<u64> {
        self.read(|conn| published(conn)).await
    }

    async fn pending_blobs(&self, limit: u32) -> Result<Vec<BlobRecord>> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {BLOB_COLUMNS} FROM journal_blobs
                 WHERE sink <> 'primary' AND reconciled_at IS NULL ORDER BY first_seq LIMIT ?1"
            ))
            .map_err(map_err)?
            .query_map([limit], blob)
            .map_err(map_err)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(map_err)
        })
        .await
    }

    async fn blob_reconciled(&self, id: i64, height: u64, at: Timestamp) -> Result<()> {
        self.write(move |tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE journal_blobs SET reconciled_at = ?2, primary_height = ?3,
                         last_error = NULL WHERE id = ?1",
                )
                .map_err(map_err)?
                .execute(params![id, ts(&at), height as i64])
                .map_err(map_err)?;
            match changed {
                0 => Err(StoreError::not_found("journal blob", &id.to_string())),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn restore(&self, entries: Vec<Entry>, now: Timestamp) -> Result<u64> {
        let state = crate::journal::state_to_restore(&entries)?;
        self.write(move |tx| restore_in(tx, &state, &entries, &now))
            .await
    }

    async fn primary_holds_upto(&self) -> Result<u64> {
        self.read(|conn| primary_holds(conn)).await
    }

    async fn snapshot(&self) -> Result<Option<State>> {
        self.read(|conn| {
            let data: Option<String> = conn
                .prepare_cached("SELECT data FROM journal_snapshots ORDER BY seq DESC LIMIT 1")
                .map_err(map_err)?
                .query_row([], |r| r.get(0))
                .optional()
                .map_err(map_err)?;
            data.map(|d| crate::journal::decode_snapshot(&d))
                .transpose()
        })
        .await
    }

    async fn compact(&self, state: State, at: Timestamp) -> Result<u64> {
        let data = crate::journal::encode_snapshot(&state)?;
        self.write(move |tx| {
            let upto = state.applied;
            let held = primary_holds(tx)?;
            if upto > held {
                return Err(StoreError::NotPublished { upto, held });
            }
            tx.execute(
                "INSERT OR REPLACE INTO journal_snapshots (seq, at, data) VALUES (?1, ?2, ?3)",
                params![upto as i64, ts(&at), data],
            )
            .map_err(map_err)?;
            tx.execute(
                "DELETE FROM journal_snapshots WHERE seq < ?1",
                [upto as i64],
            )
            .map_err(map_err)?;
            let dropped = tx
                .execute("DELETE FROM journal WHERE seq <= ?1", [upto as i64])
                .map_err(map_err)?;
            Ok(dropped as u64)
        })
        .await
    }

    async fn blob_reconcile_failed(&self, id: i64, error: String) -> Result<()> {
        self.write(move |tx| {
            tx.prepare_cached(
                "UPDATE journal_blobs SET retry_count = retry_count + 1, last_error = ?2
                 WHERE id = ?1",
            )
            .map_err(map_err)?
            .execute(params![id, error])
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }
}

/// Writes the rebuilt state `state` and its journal `entries` into an empty store (see
/// [`JournalStore::restore`]).
fn restore_in(tx: &Tx<'_>, state: &State, entries: &[Entry], now: &Timestamp) -> Result<u64> {
    for table in ["journal", "jobs", "nodes", "runners", "objects"] {
        let held: i64 = tx
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(map_err)?;
        if held > 0 {
            return Err(StoreError::Unsupported(format!(
                "a rebuild needs an empty store; this one holds {held} row(s) in {table}"
            )));
        }
    }
    let now_text = ts(now);
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Internal(format!("rebuilding {what}: {e}"))
    };
    for n in state.nodes.values() {
        tx.execute(
            "INSERT INTO nodes (id, address, hostname, zone, labels, total_cores, memory_bytes,
                 gpus, disk_bytes, status, registered_at, last_heartbeat)
             VALUES (?1, '', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
            params![
                n.id,
                n.hostname,
                n.zone,
                serde_json::Value::Object(n.labels.clone()).to_string(),
                n.cores,
                n.memory_bytes,
                n.gpus,
                n.disk_bytes,
                n.status.as_str(),
                now_text
            ],
        )
        .map_err(map_err)?;
    }
    for (id, StatsImage([cpu, ram, gpu, latency, io])) in &state.stats {
        tx.execute(
            "UPDATE nodes SET cpu_free = ?2, ram_free_mb = ?3, gpu_free = ?4, latency_ms = ?5,
                 io_pressure = ?6 WHERE id = ?1",
            params![id, cpu, ram, gpu, latency, io],
        )
        .map_err(map_err)?;
    }
    for job in state.jobs.values() {
        let (new, sweep) = crate::journal::job_to_create(job)?;
        let creation = super::jobs::Creation::new(job.id.clone(), new, sweep, true)?;
        super::jobs::create_job_in(tx, &creation, *now)?;
    }
    for (id, task) in &state.tasks {
        let (started, lease, finished) = crate::journal::task_times(task, *now);
        tx.execute(
            "UPDATE tasks SET status = ?2, attempt = ?3, assigned_to = ?4, started_at = ?5,
                 lease_expires_at = ?6, finished_at = ?7, rev = rev + 1
             WHERE id = ?1",
            params![
                id,
                task.status.as_str(),
                task.attempt,
                task.node,
                started.as_ref().map(ts),
                lease.as_ref().map(ts),
                finished.as_ref().map(ts)
            ],
        )
        .map_err(map_err)?;
    }
    for job in state.jobs.values().filter(|j| j.cancelled) {
        tx.execute(
            "UPDATE tasks SET status = 'CANCELLED', finished_at = ?2, rev = rev + 1
             WHERE job_id = ?1 AND status = 'NEW'",
            params![job.id, now_text],
        )
        .map_err(map_err)?;
    }
    // The counters as the replay derives them (the store keeps them itself; its triggers are
    // for edits made outside it).
    for (id, c, status, started) in crate::journal::job_rows(state) {
        let cancelled = state.jobs.get(&id).is_some_and(|j| j.cancelled);
        tx.execute(
            "UPDATE jobs SET new_tasks = ?2, running_tasks = ?3, completed_tasks = ?4,
                 failed_tasks = ?5, cancelled_tasks = ?6, status = ?7, cancelled = ?8,
                 started_at = ?9,
                 finished_at = CASE WHEN ?10 THEN ?11 END
             WHERE id = ?1",
            params![
                id,
                c.new as i64,
                c.running as i64,
                c.done as i64,
                c.failed as i64,
                c.cancelled as i64,
                status.as_str(),
                cancelled,
                started.then_some(&now_text),
                status.is_finished(),
                now_text
            ],
        )
        .map_err(map_err)?;
    }
    for r in state.runners.values() {
        tx.execute(
            "INSERT INTO runners (session_id, driver, instance, endpoint, status, singleton,
                 created_at, last_heartbeat) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                r.session,
                r.driver,
                r.instance,
                r.endpoint,
                r.status.as_str(),
                r.singleton,
                now_text
            ],
        )
        .map_err(map_err)?;
    }
    for o in state.objects.values() {
        tx.execute(
            "INSERT INTO objects (hash, size, rf, registered_at) VALUES (?1, ?2, ?3, ?4)",
            params![o.hash, o.size as i64, o.rf, now_text],
        )
        .map_err(map_err)?;
    }
    for (hash, nodes) in &state.replicas {
        for (node, replica) in nodes {
            tx.execute(
                "INSERT INTO replicas (hash, node_id, state, updated_at) VALUES (?1, ?2, ?3, ?4)",
                params![hash, node, replica.as_str(), now_text],
            )
            .map_err(map_err)?;
        }
    }
    if let Some(StatsImage([cpu, ram, gpu, latency, io])) = state.scheduler {
        tx.execute(
            "INSERT INTO scheduler_config (id, w_cpu, w_ram, w_gpu, w_latency, w_io, updated_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
            params![cpu, ram, gpu, latency, io, now_text],
        )
        .map_err(map_err)?;
    }
    let mut insert = tx
        .prepare_cached("INSERT INTO journal (seq, at, kind, data) VALUES (?1, ?2, ?3, ?4)")
        .map_err(map_err)?;
    for entry in entries {
        let data =
            serde_json::to_string(&entry.changes).map_err(|e| internal("the journal", &e))?;
        insert
            .execute(params![entry.seq as i64, ts(&entry.at), entry.kind, data])
            .map_err(map_err)?;
    }
    let last = state.applied;
    if last > 0 {
        // Published already: the entries came from a sink, which keeps them.
        tx.execute(
            "INSERT INTO journal_blobs (first_seq, last_seq, sink, height, commitment, size,
                 posted_at, reconciled_at, primary_height)
             VALUES (1, ?1, 'primary', 0, 'rebuilt', 0, ?2, NULL, NULL)",
            params![last as i64, now_text],
        )
        .map_err(map_err)?;
    }
    // The writes above are the rebuild, not new changes: the journal holds the original ones.
    tx.forget_events();
    Ok(last)
}

/// The last entry the primary holds with every one before it (see
/// [`JournalStore::primary_holds_upto`]).
fn primary_holds(conn: &Connection) -> Result<u64> {
    conn.prepare_cached(
        "SELECT MIN(COALESCE((SELECT MAX(last_seq) FROM journal_blobs), 0),
                    COALESCE((SELECT MIN(first_seq) - 1 FROM journal_blobs
                              WHERE sink <> 'primary' AND reconciled_at IS NULL), 1 << 62))",
    )
    .map_err(map_err)?
    .query_row([], |r| r.get::<_, i64>(0))
    .map(|n| n.max(0) as u64)
    .map_err(map_err)
}

/// The last entry in a recorded blob.
fn published(conn: &Connection) -> Result<u64> {
    conn.prepare_cached("SELECT COALESCE(MAX(last_seq), 0) FROM journal_blobs")
        .map_err(map_err)?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
        .map_err(map_err)
}

const BLOB_COLUMNS: &str = "id, first_seq, last_seq, sink, height, commitment, size, posted_at, \
    reconciled_at, primary_height, retry_count, last_error";

fn blob(r: &Row<'_>) -> rusqlite::Result<BlobRecord> {
    let reconciled = match (rows::opt_time(r, 8)?, r.get::<_, Option<i64>>(9)?) {
        (Some(at), Some(height)) => Some((at, height as u64)),
        _ => None,
    };
    Ok(BlobRecord {
        id: r.get(0)?,
        blob: NewBlob {
            first: r.get::<_, i64>(1)? as u64,
            last: r.get::<_, i64>(2)? as u64,
            sink: rows::status(r, 3)?,
            height: r.get::<_, i64>(4)? as u64,
            commitment: r.get(5)?,
            size: r.get::<_, i64>(6)? as u64,
            posted_at: rows::time(r, 7)?,
        },
        reconciled,
        retry_count: r.get(10)?,
        last_error: r.get(11)?,
    })
}
