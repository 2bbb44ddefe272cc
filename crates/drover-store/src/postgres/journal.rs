//! The journal on PostgreSQL: the `journal` table, appended by the write path just before each
//! write commits, and the reads of [`JournalStore`].
//!
//! Sequence numbers come from the one row of `journal_head`, which every journaling write
//! updates as its last statement before `COMMIT`: the row lock orders the replicas' commits,
//! so numbers are gap-free across every replica and every leader change, and a write that
//! rolls back releases its numbers with the lock. The lock is held only from that statement
//! to the commit, which travel together.
//!
//! This module owns reading a subject's image in the writing transaction and the live-state
//! read; what is journaled is `drover_core::journal::subject`'s decision. The report fast path
//! (`jobs.rs`, `complete_held_at_once`) writes its entry in its own statement, in the encoding
//! of `drover_core::journal::TaskMove`.

use super::PgStore;
use super::rows;
use super::write::{PgErr, R, Tx, exec, row, row_opt, rows as all};
use crate::{BlobRecord, JournalStore, LiveState, NewBlob, Result, StoreError};
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use drover_core::journal::{
    self, Change, Entry, JobImage, NodeImage, ObjectImage, RunnerImage, State, StatsImage, Subject,
    TaskImage,
};
use drover_core::{Event, JobCounts, ReplicaState, TaskStatus, Timestamp};
use tokio_postgres::Row;

/// The statement that numbers and appends a write's entries: `$1` entries, at `$2`, kinds
/// `$3`, data `$4`.
pub(super) const APPEND: &str = "WITH head AS (
         UPDATE journal_head SET seq = seq + $1 WHERE id = 1 RETURNING seq)
     INSERT INTO journal (seq, at, kind, data)
     SELECT head.seq - $1 + e.ord, $2, e.kind, e.data
     FROM head, unnest($3::TEXT[], $4::TEXT[]) WITH ORDINALITY AS e (kind, data, ord)";

/// The kinds and encoded changes of the entries `events` make, read as they stand in `tx`;
/// `None` when they journal nothing.
pub(super) async fn entries_of(
    tx: &Tx<'_>,
    events: &[Event],
    at: Timestamp,
) -> R<Option<(i64, Vec<String>, Vec<String>)>> {
    let mut changes = Vec::with_capacity(events.len());
    for event in events {
        if let Some(change) = change_of(tx, event).await? {
            changes.push((event.kind(), change));
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let entries = journal::entries(changes, 1, at);
    let mut kinds = Vec::with_capacity(entries.len());
    let mut data = Vec::with_capacity(entries.len());
    for entry in entries {
        data.push(
            serde_json::to_string(&entry.changes)
                .map_err(|e| StoreError::Internal(format!("journal entry not encoded: {e}")))?,
        );
        kinds.push(entry.kind);
    }
    Ok(Some((kinds.len() as i64, kinds, data)))
}

/// The change `event` records, read from the tables where the event names its subject only.
async fn change_of(tx: &Tx<'_>, event: &Event) -> R<Option<Change>> {
    let c = &**tx;
    Ok(Some(match journal::subject(event) {
        Subject::Nothing => return Ok(None),
        Subject::Change(change) => change,
        Subject::Node(id) => {
            let sql = format!("SELECT {} FROM nodes WHERE id = $1", rows::NODE_COLUMNS);
            match row_opt(c, &sql, &[&id]).await? {
                Some(r) => Change::Node(NodeImage::of(&rows::node(&r)?)),
                None => Change::NodeGone { id: id.to_string() },
            }
        }
        Subject::NodeStats(id) => match row_opt(c, STATS_BY_ID, &[&id]).await? {
            Some(r) => {
                let (id, stats) = stats(&r)?;
                Change::NodeStats { id, stats }
            }
            None => return Ok(None),
        },
        Subject::Job(id) => match row_opt(c, JOB_BY_ID, &[&id]).await? {
            Some(r) => Change::Job(job(&r)?.0),
            None => return Err(StoreError::Internal(format!("journal: job {id} not found")).into()),
        },
        Subject::Runner(id) => {
            let sql = format!(
                "SELECT {} FROM runners WHERE session_id = $1",
                rows::RUNNER_COLUMNS
            );
            match row_opt(c, &sql, &[&id]).await? {
                Some(r) => Change::Runner(RunnerImage::of(&rows::runner(&r)?)),
                None => Change::RunnerGone {
                    session: id.to_string(),
                },
            }
        }
        Subject::Object(hash) => match row_opt(c, OBJECT_BY_HASH, &[&hash]).await? {
            Some(r) => Change::Object(object(&r)?),
            None => return Ok(None),
        },
        Subject::Scheduler => match row_opt(c, WEIGHTS, &[]).await? {
            Some(r) => Change::Scheduler {
                weights: figures(&r, 0)?,
            },
            None => return Ok(None),
        },
    }))
}

const JOB_IMAGE: &str = crate::journal::job_image_sql!();
const JOB_BY_ID: &str = concat!(crate::journal::job_image_sql!(), " WHERE id = $1");
const STATS: &str = crate::journal::stats_sql!();
const STATS_BY_ID: &str = concat!(crate::journal::stats_sql!(), " AND id = $1");
const OBJECT_BY_HASH: &str = "SELECT hash, size, rf FROM objects WHERE hash = $1";
const WEIGHTS: &str =
    "SELECT w_cpu, w_ram, w_gpu, w_latency, w_io FROM scheduler_config WHERE id = 1";

fn job(r: &Row) -> R<(JobImage, JobCounts)> {
    let total = rows::count(r, 5)?;
    Ok((
        JobImage {
            id: rows::get(r, 0)?,
            name: rows::get(r, 1)?,
            origin: rows::get(r, 2)?,
            priority: rows::get(r, 3)?,
            max_attempts: rows::small(r, 4)?,
            timeout_ms: rows::count(r, 12)?,
            total,
            cancelled: rows::get(r, 6)?,
            spec: rows::get(r, 13)?,
            run: rows::get(r, 14)?,
        },
        JobCounts {
            total,
            new: rows::count(r, 7)?,
            running: rows::count(r, 8)?,
            done: rows::count(r, 9)?,
            failed: rows::count(r, 10)?,
            cancelled: rows::count(r, 11)?,
        },
    ))
}

/// Five figures from columns `from..from + 5`.
fn figures(r: &Row, from: usize) -> R<StatsImage> {
    let mut out = [0.0; 5];
    for (i, figure) in out.iter_mut().enumerate() {
        *figure = rows::get(r, from + i)?;
    }
    Ok(StatsImage(out))
}

fn stats(r: &Row) -> R<(String, StatsImage)> {
    Ok((rows::get(r, 0)?, figures(r, 1)?))
}

fn object(r: &Row) -> R<ObjectImage> {
    Ok(ObjectImage {
        hash: rows::get(r, 0)?,
        size: rows::count(r, 1)?,
        rf: rows::small(r, 2)?,
    })
}

/// An entry as stored, decoded; a row that does not decode is reported, never skipped.
fn entry(r: &Row) -> R<Entry> {
    let seq: i64 = rows::get(r, 0)?;
    let data: String = rows::get(r, 3)?;
    Ok(Entry {
        seq: seq as u64,
        at: rows::get(r, 1)?,
        kind: rows::get(r, 2)?,
        changes: serde_json::from_str(&data)
            .map_err(|e| StoreError::Internal(format!("journal entry {seq}: {e}")))?,
    })
}

/// The live tables as the journaled state; `c` holds one snapshot.
async fn live<C: GenericClient>(c: &C) -> R<LiveState> {
    let head: i64 = rows::get(&c.query_one("SELECT seq FROM journal_head", &[]).await?, 0)?;
    let mut live = LiveState {
        head: head as u64,
        ..LiveState::default()
    };
    let state = &mut live.state;
    let sql = format!("SELECT {} FROM nodes", rows::NODE_COLUMNS);
    for r in all(c, &sql, &[]).await? {
        let node = rows::node(&r)?;
        state.nodes.insert(node.id.clone(), NodeImage::of(&node));
    }
    for r in all(c, STATS, &[]).await? {
        let (id, figures) = stats(&r)?;
        state.stats.insert(id, figures);
    }
    for r in all(c, JOB_IMAGE, &[]).await? {
        let (image, counts) = job(&r)?;
        live.counts.insert(image.id.clone(), counts);
        state.jobs.insert(image.id.clone(), image);
    }
    let tasks = all(
        c,
        "SELECT id, job_id, status, attempt, assigned_to FROM tasks
         WHERE attempt > 0 OR status NOT IN ('NEW', 'CANCELLED')",
        &[],
    )
    .await?;
    for r in tasks {
        let task = TaskImage {
            job: rows::get(&r, 1)?,
            status: rows::status::<TaskStatus>(&r, 2)?,
            attempt: rows::small(&r, 3)?,
            node: rows::get(&r, 4)?,
        };
        state.insert_task(rows::get(&r, 0)?, task);
    }
    let sql = format!("SELECT {} FROM runners", rows::RUNNER_COLUMNS);
    for r in all(c, &sql, &[]).await? {
        let runner = rows::runner(&r)?;
        state
            .runners
            .insert(runner.session_id.clone(), RunnerImage::of(&runner));
    }
    for r in all(c, "SELECT hash, size, rf FROM objects", &[]).await? {
        let object = object(&r)?;
        state.objects.insert(object.hash.clone(), object);
    }
    for r in all(c, "SELECT hash, node_id, state FROM replicas", &[]).await? {
        state
            .replicas
            .entry(rows::get(&r, 0)?)
            .or_default()
            .insert(rows::get(&r, 1)?, rows::status::<ReplicaState>(&r, 2)?);
    }
    state.scheduler = match row_opt(c, WEIGHTS, &[]).await? {
        Some(r) => Some(figures(&r, 0)?),
        None => None,
    };
    Ok(live)
}

#[async_trait]
impl JournalStore for PgStore {
    async fn journal(&self, after: u64, limit: u32) -> Result<Vec<Entry>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        read!(self, |conn| {
            let found = all(
                &conn,
                "SELECT seq, at, kind, data FROM journal WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await?;
            found.iter().map(entry).collect::<R<Vec<Entry>>>()
        })
    }

    async fn journal_head(&self) -> Result<u64> {
        read!(self, |conn| {
            let r = conn.query_one("SELECT seq FROM journal_head", &[]).await?;
            Ok(rows::get::<i64>(&r, 0)? as u64)
        })
    }

    async fn live_state(&self) -> Result<LiveState> {
        snapshot!(self, |conn| live(&conn).await)
    }

    async fn record_blob(&self, blob: NewBlob) -> Result<BlobRecord> {
        let blob = &blob;
        write_tx!(self, |tx| async {
            // Locked, so that two publishers cannot both read the same cursor.
            exec(&*tx, "LOCK TABLE journal_blobs IN EXCLUSIVE MODE", &[]).await?;
            let published = published(&*tx).await?;
            if blob.first != published + 1 || blob.last < blob.first {
                return Err(StoreError::OutOfOrder {
                    published,
                    first: blob.first,
                }
                .into());
            }
            let r = row(
                &*tx,
                "INSERT INTO journal_blobs (first_seq, last_seq, sink, height, commitment, size,
                     posted_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &(blob.first as i64),
                    &(blob.last as i64),
                    &blob.sink.as_str(),
                    &(blob.height as i64),
                    &blob.commitment,
                    &(blob.size as i64),
                    &rows::at(blob.posted_at),
                ],
            )
            .await?;
            Ok(BlobRecord {
                id: rows::get(&r, 0)?,
                blob: blob.clone(),
                reconciled: None,
                retry_count: 0,
                last_error: None,
            })
        }
        .await)
    }

    async fn published_upto(&self) -> Result<u64> {
        read!(self, |conn| published(&conn).await)
    }

    async fn pending_blobs(&self, limit: u32) -> Result<Vec<BlobRecord>> {
        read!(self, |conn| {
            let found = all(
                &conn,
                &format!(
                    "SELECT {BLOB_COLUMNS} FROM journal_blobs
                     WHERE sink <> 'primary' AND reconciled_at IS NULL ORDER BY first_seq
                     LIMIT $1"
                ),
                &[&i64::from(limit)],
            )
            .await?;
            found.iter().map(blob).collect::<R<Vec<_>>>()
        })
    }

    async fn blob_reconciled(&self, id: i64, height: u64, at: Timestamp) -> Result<()> {
        write_tx!(self, |tx| async {
            let changed = exec(
                &*tx,
                "UPDATE journal_blobs SET reconciled_at = $2, primary_height = $3,
                     last_error = NULL WHERE id = $1",
                &[&id, &rows::at(at), &(height as i64)],
            )
            .await?;
            match changed {
                0 => Err(StoreError::NotFound {
                    kind: "journal blob",
                    id: id.to_string(),
                }
                .into()),
                _ => Ok(()),
            }
        }
        .await)
    }

    async fn restore(&self, entries: Vec<Entry>, now: Timestamp) -> Result<u64> {
        let state = crate::journal::state_to_restore(&entries)?;
        let (state, entries) = (&state, &entries);
        write_tx!(self, |tx| restore_in(&tx, state, entries, now).await)
    }

    async fn primary_holds_upto(&self) -> Result<u64> {
        read!(self, |conn| primary_holds(&conn).await)
    }

    async fn snapshot(&self) -> Result<Option<State>> {
        read!(self, |conn| {
            let found = row_opt(
                &conn,
                "SELECT data FROM journal_snapshots ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await?;
            match found {
                Some(r) => Ok(Some(crate::journal::decode_snapshot(
                    &rows::get::<String>(&r, 0)?,
                )?)),
                None => Ok(None),
            }
        })
    }

    async fn compact(&self, state: State, at: Timestamp) -> Result<u64> {
        let data = crate::journal::encode_snapshot(&state)?;
        let (upto, data) = (state.applied, &data);
        write_tx!(self, |tx| async {
            // Locked, so that a blob recorded meanwhile cannot change what the primary holds.
            exec(&*tx, "LOCK TABLE journal_blobs IN SHARE MODE", &[]).await?;
            let held = primary_holds(&*tx).await?;
            if upto > held {
                return Err(StoreError::NotPublished { upto, held }.into());
            }
            exec(
                &*tx,
                "INSERT INTO journal_snapshots (seq, at, data) VALUES ($1, $2, $3)
                 ON CONFLICT (seq) DO UPDATE SET at = $2, data = $3",
                &[&(upto as i64), &rows::at(at), data],
            )
            .await?;
            exec(
                &*tx,
                "DELETE FROM journal_snapshots WHERE seq < $1",
                &[&(upto as i64)],
            )
            .await?;
            let dropped = exec(
                &*tx,
                "DELETE FROM journal WHERE seq <= $1",
                &[&(upto as i64)],
            )
            .await?;
            Ok(dropped)
        }
        .await)
    }

    async fn blob_reconcile_failed(&self, id: i64, error: String) -> Result<()> {
        let error = &error;
        write_tx!(self, |tx| async {
            exec(
                &*tx,
                "UPDATE journal_blobs SET retry_count = retry_count + 1, last_error = $2
                 WHERE id = $1",
                &[&id, error],
            )
            .await?;
            Ok(())
        }
        .await)
    }
}

/// Writes the rebuilt state `state` and its journal `entries` into an empty store (see
/// [`JournalStore::restore`]).
async fn restore_in(tx: &Tx<'_>, state: &State, entries: &[Entry], now: Timestamp) -> R<u64> {
    let c = &**tx;
    for table in ["journal", "jobs", "nodes", "runners", "objects"] {
        let r = row(c, &format!("SELECT count(*) FROM {table}"), &[]).await?;
        let held: i64 = rows::get(&r, 0)?;
        if held > 0 {
            return Err(StoreError::Unsupported(format!(
                "a rebuild needs an empty store; this one holds {held} row(s) in {table}"
            ))
            .into());
        }
    }
    let now = rows::at(now);
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        PgErr::from(StoreError::Internal(format!("rebuilding {what}: {e}")))
    };
    for n in state.nodes.values() {
        let labels = serde_json::Value::Object(n.labels.clone()).to_string();
        exec(
            c,
            "INSERT INTO nodes (id, address, hostname, zone, labels, total_cores, memory_bytes,
                 gpus, disk_bytes, status, registered_at, last_heartbeat)
             VALUES ($1, '', $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
            &[
                &n.id,
                &n.hostname,
                &n.zone,
                &labels,
                &n.cores,
                &n.memory_bytes,
                &n.gpus,
                &n.disk_bytes,
                &n.status.as_str(),
                &now,
            ],
        )
        .await?;
    }
    for (id, StatsImage([cpu, ram, gpu, latency, io])) in &state.stats {
        exec(
            c,
            "UPDATE nodes SET cpu_free = $2, ram_free_mb = $3, gpu_free = $4, latency_ms = $5,
                 io_pressure = $6 WHERE id = $1",
            &[id, cpu, ram, gpu, latency, io],
        )
        .await?;
    }
    for job in state.jobs.values() {
        let (new, sweep) = crate::journal::job_to_create(job)?;
        super::jobs::create_job(tx, &job.id, &new, &sweep, now, true).await?;
    }
    for (id, task) in &state.tasks {
        let (started, lease, finished) = crate::journal::task_times(task, now);
        exec(
            c,
            "UPDATE tasks SET status = $2, attempt = $3, assigned_to = $4, started_at = $5,
                 lease_expires_at = $6, finished_at = $7
             WHERE id = $1",
            &[
                id,
                &task.status.as_str(),
                &i64::from(task.attempt),
                &task.node,
                &started,
                &lease,
                &finished,
            ],
        )
        .await?;
    }
    for job in state.jobs.values().filter(|j| j.cancelled) {
        exec(
            c,
            "UPDATE tasks SET status = 'CANCELLED', finished_at = $2
             WHERE job_id = $1 AND status = 'NEW'",
            &[&job.id, &now],
        )
        .await?;
    }
    // The counters as the replay derives them (the store keeps them itself; its triggers are
    // for edits made outside it).
    for (id, c_, status, started) in crate::journal::job_rows(state) {
        let cancelled = state.jobs.get(&id).is_some_and(|j| j.cancelled);
        let finished = status.is_finished().then_some(now);
        exec(
            c,
            "UPDATE jobs SET new_tasks = $2, running_tasks = $3, completed_tasks = $4,
                 failed_tasks = $5, cancelled_tasks = $6, status = $7, cancelled = $8,
                 started_at = $9, finished_at = $10
             WHERE id = $1",
            &[
                &id,
                &(c_.new as i64),
                &(c_.running as i64),
                &(c_.done as i64),
                &(c_.failed as i64),
                &(c_.cancelled as i64),
                &status.as_str(),
                &cancelled,
                &started.then_some(now),
                &finished,
            ],
        )
        .await?;
    }
    for r in state.runners.values() {
        exec(
            c,
            "INSERT INTO runners (session_id, driver, instance, endpoint, status, singleton,
                 created_at, last_heartbeat) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            &[
                &r.session,
                &r.driver,
                &r.instance,
                &r.endpoint,
                &r.status.as_str(),
                &r.singleton,
                &now,
            ],
        )
        .await?;
    }
    for o in state.objects.values() {
        exec(
            c,
            "INSERT INTO objects (hash, size, rf, registered_at) VALUES ($1, $2, $3, $4)",
            &[&o.hash, &(o.size as i64), &i64::from(o.rf), &now],
        )
        .await?;
    }
    for (hash, nodes) in &state.replicas {
        for (node, replica) in nodes {
            exec(
                c,
                "INSERT INTO replicas (hash, node_id, state, updated_at) VALUES ($1, $2, $3, $4)",
                &[hash, node, &replica.as_str(), &now],
            )
            .await?;
        }
    }
    if let Some(StatsImage([cpu, ram, gpu, latency, io])) = state.scheduler {
        exec(
            c,
            "INSERT INTO scheduler_config (id, w_cpu, w_ram, w_gpu, w_latency, w_io, updated_at)
             VALUES (1, $1, $2, $3, $4, $5, $6)",
            &[&cpu, &ram, &gpu, &latency, &io, &now],
        )
        .await?;
    }
    for entry in entries {
        let data =
            serde_json::to_string(&entry.changes).map_err(|e| internal("the journal", &e))?;
        exec(
            c,
            "INSERT INTO journal (seq, at, kind, data) VALUES ($1, $2, $3, $4)",
            &[&(entry.seq as i64), &rows::at(entry.at), &entry.kind, &data],
        )
        .await?;
    }
    let last = state.applied;
    exec(
        c,
        "UPDATE journal_head SET seq = $1 WHERE id = 1",
        &[&(last as i64)],
    )
    .await?;
    if last > 0 {
        // Published already: the entries came from a sink, which keeps them.
        exec(
            c,
            "INSERT INTO journal_blobs (first_seq, last_seq, sink, height, commitment, size,
                 posted_at) VALUES (1, $1, 'primary', 0, 'rebuilt', 0, $2)",
            &[&(last as i64), &now],
        )
        .await?;
    }
    // The writes above are the rebuild, not new changes: the journal holds the original ones.
    tx.take_events();
    Ok(last)
}

/// The last entry the primary holds with every one before it (see
/// [`JournalStore::primary_holds_upto`]).
async fn primary_holds<C: GenericClient>(c: &C) -> R<u64> {
    let r = row(
        c,
        "SELECT LEAST(COALESCE((SELECT MAX(last_seq) FROM journal_blobs), 0),
                      COALESCE((SELECT MIN(first_seq) - 1 FROM journal_blobs
                                WHERE sink <> 'primary' AND reconciled_at IS NULL),
                               4611686018427387904))",
        &[],
    )
    .await?;
    Ok(rows::get::<i64>(&r, 0)?.max(0) as u64)
}

/// The last entry in a recorded blob.
async fn published<C: GenericClient>(c: &C) -> R<u64> {
    let r = row(
        c,
        "SELECT COALESCE(MAX(last_seq), 0) FROM journal_blobs",
        &[],
    )
    .await?;
    Ok(rows::get::<i64>(&r, 0)? as u64)
}

const BLOB_COLUMNS: &str = "id, first_seq, last_seq, sink, height, commitment, size, posted_at, \
    reconciled_at, primary_height, retry_count, last_error";

fn blob(r: &Row) -> R<BlobRecord> {
    let reconciled = match (
        rows::get::<Option<Timestamp>>(r, 8)?,
        rows::get::<Option<i64>>(r, 9)?,
    ) {
        (Some(at), Some(height)) => Some((at, height as u64)),
        _ => None,
    };
    Ok(BlobRecord {
        id: rows::get(r, 0)?,
        blob: NewBlob {
            first: rows::count(r, 1)?,
            last: rows::count(r, 2)?,
            sink: rows::status(r, 3)?,
            height: rows::count(r, 4)?,
            commitment: rows::get(r, 5)?,
            size: rows::count(r, 6)?,
            posted_at: rows::get(r, 7)?,
        },
        reconciled,
        retry_count: rows::small(r, 10)?,
        last_error: rows::get(r, 11)?,
    })
}
