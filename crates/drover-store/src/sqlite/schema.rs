//! The SQLite schema, as ordered migrations applied at start-up (tracked in `user_version`).
//!
//! Table and column names follow the batch contract where it names them (`jobs`, `tasks`,
//! `assigned_to`, `started_at`, `total_tasks`, ...) so its troubleshooting SQL runs unchanged;
//! `spots` is a view over drover's node registry. Job counters are kept by triggers, so they stay
//! equal to the task counts even when an operator changes a task by hand (the contract's
//! "force reset" UPDATE). Since migration 7 a task of a sweep gets its row the first time it is
//! claimed (`jobs.materialised` counts the rows a job has, always its first tasks by index); the
//! job's counters count the tasks without rows as NEW, or CANCELLED once the job is.

use rusqlite_migration::{M, Migrations};

const V1: &str = r#"
CREATE TABLE nodes (
    id                TEXT PRIMARY KEY,
    address           TEXT NOT NULL,
    hostname          TEXT,
    zone              TEXT,
    labels            TEXT NOT NULL DEFAULT '{}',
    total_cores       INTEGER,
    memory_bytes      INTEGER,
    gpus              INTEGER,
    disk_bytes        INTEGER,
    cpu_load          REAL,
    free_memory_bytes INTEGER,
    running_tasks     INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL CHECK (status IN ('UP', 'DRAINING', 'DOWN')),
    registered_at     TEXT NOT NULL,
    last_heartbeat    TEXT NOT NULL
);
CREATE INDEX nodes_heartbeat ON nodes (last_heartbeat) WHERE status <> 'DOWN';

CREATE VIEW spots AS
    SELECT id, address AS ip_address, status, cpu_load, running_tasks, total_cores,
           zone, last_heartbeat
    FROM nodes;

CREATE TABLE jobs (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    name            TEXT,
    priority        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    task_timeout_ms INTEGER NOT NULL,
    spec            TEXT NOT NULL,
    parameters      TEXT NOT NULL,
    status          TEXT NOT NULL,
    cancelled       INTEGER NOT NULL DEFAULT 0,
    started_at      TEXT,
    total_tasks     INTEGER NOT NULL,
    new_tasks       INTEGER NOT NULL,
    running_tasks   INTEGER NOT NULL DEFAULT 0,
    completed_tasks INTEGER NOT NULL DEFAULT 0,
    failed_tasks    INTEGER NOT NULL DEFAULT 0,
    cancelled_tasks INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX jobs_status ON jobs (status, seq);

CREATE TABLE tasks (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    job_id           TEXT NOT NULL REFERENCES jobs (id),
    priority         INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('NEW', 'RUNNING', 'DONE', 'FAILED', 'CANCELLED')),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    assigned_to      TEXT,
    started_at       TEXT,
    lease_expires_at TEXT,
    finished_at      TEXT,
    runtime_ms       INTEGER,
    iter             INTEGER,
    fopt             REAL,
    result_json      TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
-- Claims take the best NEW task: highest priority, then oldest.
CREATE INDEX tasks_claim ON tasks (priority DESC, seq) WHERE status = 'NEW';
CREATE INDEX tasks_job_status ON tasks (job_id, status, seq);
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'RUNNING';
CREATE INDEX tasks_holder ON tasks (assigned_to) WHERE status = 'RUNNING';

-- One row per claim: who held which attempt and how it ended. Fencing and idempotent
-- reports are decided from it.
CREATE TABLE task_attempts (
    task_id    TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    node_id    TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at   TEXT,
    outcome    TEXT NOT NULL,
    error      TEXT,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
CREATE INDEX task_attempts_node ON task_attempts (task_id, node_id, attempt);

CREATE TRIGGER tasks_keep_job_counts AFTER UPDATE OF status ON tasks
WHEN OLD.status <> NEW.status
BEGIN
    UPDATE jobs SET
        new_tasks       = new_tasks       + (NEW.status = 'NEW')       - (OLD.status = 'NEW'),
        running_tasks   = running_tasks   + (NEW.status = 'RUNNING')   - (OLD.status = 'RUNNING'),
        completed_tasks = completed_tasks + (NEW.status = 'DONE')      - (OLD.status = 'DONE'),
        failed_tasks    = failed_tasks    + (NEW.status = 'FAILED')    - (OLD.status = 'FAILED'),
        cancelled_tasks = cancelled_tasks + (NEW.status = 'CANCELLED') - (OLD.status = 'CANCELLED')
    WHERE id = NEW.job_id;
END;
"#;

/// Keeps `jobs.status` right when task counts change outside drover (an operator's hand edit),
/// so `GET /api/v1/jobs?status=` and the contract's SQL agree with the API. This restates
/// `JobCounts::status` in SQL; `the_status_trigger_agrees_with_the_core_rule` checks that the two
/// cannot drift apart.
const V2: &str = r#"
CREATE TRIGGER jobs_keep_status
AFTER UPDATE OF new_tasks, running_tasks, completed_tasks, failed_tasks, cancelled_tasks,
    cancelled, started_at
ON jobs
BEGIN
    UPDATE jobs SET status = CASE
        WHEN NEW.cancelled THEN 'CANCELLED'
        WHEN NEW.total_tasks > 0 AND NEW.completed_tasks = NEW.total_tasks THEN 'COMPLETED'
        WHEN NEW.new_tasks + NEW.running_tasks = 0 AND NEW.failed_tasks > 0 THEN 'FAILED'
        WHEN NEW.started_at IS NOT NULL
            OR NEW.running_tasks + NEW.completed_tasks + NEW.failed_tasks + NEW.cancelled_tasks > 0
            THEN 'RUNNING'
        ELSE 'PENDING'
    END
    WHERE id = NEW.id;
END;
"#;

/// `jobs.run`: what agents run for a job's tasks (`drover_core::run::RunSpec` as JSON); NULL for jobs served
/// by the user's own workers.
/// `tasks.output`: the tail of what a successful run printed, as the agent reported it.
const V3: &str = "ALTER TABLE jobs ADD COLUMN run TEXT;
ALTER TABLE tasks ADD COLUMN output TEXT;";

/// Runners (one per session) and the server's identity. `meta.instance_id` names this data
/// directory's server in the labels of the sandboxes it starts, so a restarted server tells its
/// own orphans from another instance's. At most one runner is the reuse mode's singleton.
const V4: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE runners (
    session_id     TEXT PRIMARY KEY,
    driver         TEXT NOT NULL,
    instance       TEXT,
    endpoint       TEXT,
    status         TEXT NOT NULL CHECK (status IN ('STARTING', 'RUNNING')),
    singleton      INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL,
    last_heartbeat TEXT NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX runners_one_singleton ON runners (singleton) WHERE singleton;
CREATE INDEX runners_heartbeat ON runners (last_heartbeat);
"#;

/// Credentials, stored as SHA-256 hashes only (`drover_core::credential`): a spot's secret,
/// NULL for a spot registered without one (a batch-contract client), and a runner's session
/// token, NULL for a runner recorded before tokens existed.
const V5: &str = "ALTER TABLE nodes ADD COLUMN secret_hash TEXT;
ALTER TABLE runners ADD COLUMN token_hash TEXT;";

/// A runner's place in creation order, for paging the runner list (`runners` has no rowid):
/// given from a counter in `meta`, so a number is never handed out twice, even after the
/// newest runner is removed. Runners recorded before are numbered in their creation order.
const V6: &str = "ALTER TABLE runners ADD COLUMN seq INTEGER;
UPDATE runners SET seq = (SELECT count(*) FROM runners AS older
                          WHERE (older.created_at, older.session_id)
                             <= (runners.created_at, runners.session_id));
INSERT INTO meta (key, value) SELECT 'runner_seq', CAST(count(*) AS TEXT) FROM runners;
CREATE UNIQUE INDEX runners_seq ON runners (seq);";

/// Lazy sweeps. A job's tasks get rows in index order, the first time each is claimed:
/// `jobs.materialised` is how many have rows (tasks `0..materialised`); the others are NEW
/// (CANCELLED once the job is) and are built from the job's spec when needed. Jobs made before
/// have every row. `tasks.idx` is a task's index in its job, `tasks.job_seq` its job's creation
/// order, so stored NEW tasks (retries, hand resets) and the never-claimed remainders compete in
/// one order: priority, then job, then index. Rows made before are numbered in their order.
///
/// `tasks.rev` is bumped by each change drover makes to a task on its hot paths (claims and
/// reports), which count those changes into the job per job and per call; the counting trigger
/// now counts only status changes that do not bump it, such as an operator's hand UPDATE.
const V7: &str = r#"
ALTER TABLE jobs ADD COLUMN materialised INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET materialised = total_tasks;
ALTER TABLE tasks ADD COLUMN job_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN idx INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET job_seq = n.job_seq, idx = n.idx
FROM (SELECT t.seq AS seq, j.seq AS job_seq,
             row_number() OVER (PARTITION BY t.job_id ORDER BY t.seq) - 1 AS idx
      FROM tasks AS t JOIN jobs AS j ON j.id = t.job_id) AS n
WHERE tasks.seq = n.seq;

DROP INDEX tasks_claim;
DROP INDEX tasks_job_status;
CREATE UNIQUE INDEX tasks_job_idx ON tasks (job_id, idx);
CREATE INDEX tasks_job_status ON tasks (job_id, status, idx);
CREATE INDEX tasks_claim ON tasks (priority DESC, job_seq, idx) WHERE status = 'NEW';
-- Jobs with tasks never claimed, in claim order.
CREATE INDEX jobs_unclaimed ON jobs (priority DESC, seq)
    WHERE materialised < total_tasks AND cancelled = 0;

DROP TRIGGER tasks_keep_job_counts;
CREATE TRIGGER tasks_keep_job_counts AFTER UPDATE OF status ON tasks
WHEN OLD.status <> NEW.status AND OLD.rev = NEW.rev
BEGIN
    UPDATE jobs SET
        new_tasks       = new_tasks       + (NEW.status = 'NEW')       - (OLD.status = 'NEW'),
        running_tasks   = running_tasks   + (NEW.status = 'RUNNING')   - (OLD.status = 'RUNNING'),
        completed_tasks = completed_tasks + (NEW.status = 'DONE')      - (OLD.status = 'DONE'),
        failed_tasks    = failed_tasks    + (NEW.status = 'FAILED')    - (OLD.status = 'FAILED'),
        cancelled_tasks = cancelled_tasks + (NEW.status = 'CANCELLED') - (OLD.status = 'CANCELLED')
    WHERE id = NEW.job_id;
END;
"#;

/// The hot path's statement costs. `tasks.status` keeps its CHECK, written as comparisons: SQLite
/// checks `status IN (five values)` by building a temporary table on every insert and every
/// status change (two per task in a burn-down, a fifth of a claim and report's instructions),
/// and checks up to two values or a chain of `=` without one. SQLite cannot change a CHECK in
/// place, so the table is rebuilt: same columns in the same order, same rows and `seq`s, same
/// indexes and trigger, but for two: `tasks_lease` and `tasks_holder`, each written on every
/// claim and report, become one index of running tasks by holder, which the task reaper (a
/// periodic pass) reads whole; and `task_attempts_node` goes, as the reporter's attempt is found
/// by the primary key (`task_id`, then a task's few attempts).
const V8: &str = r#"
CREATE TABLE tasks_v8 (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    job_id           TEXT NOT NULL REFERENCES jobs (id),
    priority         INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status = 'NEW' OR status = 'RUNNING' OR status = 'DONE'
                            OR status = 'FAILED' OR status = 'CANCELLED'),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    assigned_to      TEXT,
    started_at       TEXT,
    lease_expires_at TEXT,
    finished_at      TEXT,
    runtime_ms       INTEGER,
    iter             INTEGER,
    fopt             REAL,
    result_json      TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    output           TEXT,
    job_seq          INTEGER NOT NULL DEFAULT 0,
    idx              INTEGER NOT NULL DEFAULT 0,
    rev              INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tasks_v8 (seq, id, job_id, priority, payload, status, attempt, max_attempts,
    timeout_ms, assigned_to, started_at, lease_expires_at, finished_at, runtime_ms, iter, fopt,
    result_json, last_error, created_at, updated_at, output, job_seq, idx, rev)
SELECT seq, id, job_id, priority, payload, status, attempt, max_attempts,
    timeout_ms, assigned_to, started_at, lease_expires_at, finished_at, runtime_ms, iter, fopt,
    result_json, last_error, created_at, updated_at, output, job_seq, idx, rev
FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_v8 RENAME TO tasks;

CREATE UNIQUE INDEX tasks_job_idx ON tasks (job_id, idx);
CREATE INDEX tasks_job_status ON tasks (job_id, status, idx);
CREATE INDEX tasks_claim ON tasks (priority DESC, job_seq, idx) WHERE status = 'NEW';
-- The running tasks by holder (a spot's tasks); the task reaper, every half minute or so, reads
-- all of them for expired leases.
CREATE INDEX tasks_running ON tasks (assigned_to, lease_expires_at) WHERE status = 'RUNNING';

CREATE TRIGGER tasks_keep_job_counts AFTER UPDATE OF status ON tasks
WHEN OLD.status <> NEW.status AND OLD.rev = NEW.rev
BEGIN
    UPDATE jobs SET
        new_tasks       = new_tasks       + (NEW.status = 'NEW')       - (OLD.status = 'NEW'),
        running_tasks   = running_tasks   + (NEW.status = 'RUNNING')   - (OLD.status = 'RUNNING'),
        completed_tasks = completed_tasks + (NEW.status = 'DONE')      - (OLD.status = 'DONE'),
        failed_tasks    = failed_tasks    + (NEW.status = 'FAILED')    - (OLD.status = 'FAILED'),
        cancelled_tasks = cancelled_tasks + (NEW.status = 'CANCELLED') - (OLD.status = 'CANCELLED')
    WHERE id = NEW.job_id;
END;

DROP INDEX task_attempts_node;
"#;

/// Attempts keyed by the task's integer `seq`. Every claim inserts an attempt and every report
/// updates one; keyed by the text task id, each of those walked the primary key comparing ids
/// that share their first 38 characters (`task-<job hex>-`), a sixth of a burn-down's
/// instructions. `task_id` stays, as a plain column, so the contract's and an operator's SQL
/// by task id keeps working (by a scan; nothing in drover reads attempts by it). The table is
/// rebuilt, since a primary key cannot change in place: same rows, each given its task's `seq`
/// (an attempt's task is never deleted; were one missing, the migration would stop on the NULL
/// rather than drop the attempt).
const V9: &str = r#"
CREATE TABLE task_attempts_v9 (
    task_id    TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    node_id    TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at   TEXT,
    outcome    TEXT NOT NULL,
    error      TEXT,
    task_seq   INTEGER NOT NULL,
    PRIMARY KEY (task_seq, attempt)
) WITHOUT ROWID;
INSERT INTO task_attempts_v9 (task_id, attempt, node_id, started_at, ended_at, outcome, error,
    task_seq)
SELECT a.task_id, a.attempt, a.node_id, a.started_at, a.ended_at, a.outcome, a.error,
    (SELECT t.seq FROM tasks t WHERE t.id = a.task_id)
FROM task_attempts a;
DROP TABLE task_attempts;
ALTER TABLE task_attempts_v9 RENAME TO task_attempts;
"#;

/// Tasks found by integers. Every claim inserted a row into three indexes keyed by text (the
/// task id's, and the job's two by `job_id`), and every report found its task by the text id and
/// moved it in the by-status index: each walk compared ids that share their first 38 characters
/// (`task-<job hex>-`), or job ids with a long shared prefix, a sixth of a claim and report's
/// instructions. Now:
///
/// * A task's id is derived from its job and index (`ids::sweep_task_id`), so drover finds a task
///   by `(job_seq, idx)`, whose unique index makes the id unique too. Only the ids that are not
///   derived so (rows written before derived ids, with random ids) are kept by id, in
///   `task_names`, which maps each to its task's `seq`; drover makes no such rows any more, so a
///   claim's insert writes nothing there (a partial index of them on `tasks` cost every insert
///   the evaluation of its condition and a cursor, an eighth of the insert). An
///   operator's SQL by id (the contract's force reset) still works, by a scan of the table.
/// * The job's indexes (`tasks_job_idx`, `tasks_job_status`) key the job by its `seq`, and the
///   row's reference to its job is checked on `job_seq` (a rowid lookup) instead of `job_id`
///   (a text index); `job_id` stays, as a plain column, for the contract's and operators' SQL.
/// * Fewer index writes per task: `tasks_job_status` leaves out RUNNING and DONE, the statuses
///   of a claimed and of a completed task (a claim and its report wrote it three times: the
///   RUNNING entry in, out, the DONE entry in); and `tasks_running` keys a running task by its
///   holder alone, not by holder and lease (a lease is set by a claim and cleared by a report,
///   and the reaper that reads leases runs every half minute or so).
/// * The counting trigger finds the job by `seq`.
///
/// A column constraint cannot be dropped in place, so the table is rebuilt: same columns in the
/// same order, same rows and `seq`s.
const V10: &str = r#"
CREATE TABLE tasks_v10 (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL,
    job_id           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status = 'NEW' OR status = 'RUNNING' OR status = 'DONE'
                            OR status = 'FAILED' OR status = 'CANCELLED'),
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout_ms       INTEGER NOT NULL,
    assigned_to      TEXT,
    started_at       TEXT,
    lease_expires_at TEXT,
    finished_at      TEXT,
    runtime_ms       INTEGER,
    iter             INTEGER,
    fopt             REAL,
    result_json      TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    output           TEXT,
    job_seq          INTEGER NOT NULL DEFAULT 0 REFERENCES jobs (seq),
    idx              INTEGER NOT NULL DEFAULT 0,
    rev              INTEGER NOT NULL DEFAULT 0
);
INSERT INTO tasks_v10 (seq, id, job_id, priority, payload, status, attempt, max_attempts,
    timeout_ms, assigned_to, started_at, lease_expires_at, finished_at, runtime_ms, iter, fopt,
    result_json, last_error, created_at, updated_at, output, job_seq, idx, rev)
SELECT seq, id, job_id, priority, payload, status, attempt, max_attempts,
    timeout_ms, assigned_to, started_at, lease_expires_at, finished_at, runtime_ms, iter, fopt,
    result_json, last_error, created_at, updated_at, output, job_seq, idx, rev
FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_v10 RENAME TO tasks;

CREATE UNIQUE INDEX tasks_job_idx ON tasks (job_seq, idx);
-- The ids not derived from their task's job and index, each with its task.
CREATE TABLE task_names (
    id       TEXT PRIMARY KEY,
    task_seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO task_names (id, task_seq)
SELECT id, seq FROM tasks WHERE id <> 'task-' || substr(job_id, 5) || '-' || idx;
-- A job's tasks by status, but for RUNNING and DONE, the two every task passes through; the
-- statements that use it repeat this condition. The running tasks are found by `tasks_running`
-- (they are few), a job's DONE tasks by walking the job's rows (they are most of them).
CREATE INDEX tasks_job_status ON tasks (job_seq, status, idx)
    WHERE status <> 'RUNNING' AND status <> 'DONE';
CREATE INDEX tasks_claim ON tasks (priority DESC, job_seq, idx) WHERE status = 'NEW';
-- The running tasks by holder (a spot's tasks). The task reaper, a periodic pass, reads them
-- all and each one's lease from its row.
CREATE INDEX tasks_running ON tasks (assigned_to) WHERE status = 'RUNNING';

CREATE TRIGGER tasks_keep_job_counts AFTER UPDATE OF status ON tasks
WHEN OLD.status <> NEW.status AND OLD.rev = NEW.rev
BEGIN
    UPDATE jobs SET
        new_tasks       = new_tasks       + (NEW.status = 'NEW')       - (OLD.status = 'NEW'),
        running_tasks   = running_tasks   + (NEW.status = 'RUNNING')   - (OLD.status = 'RUNNING'),
        completed_tasks = completed_tasks + (NEW.status = 'DONE')      - (OLD.status = 'DONE'),
        failed_tasks    = failed_tasks    + (NEW.status = 'FAILED')    - (OLD.status = 'FAILED'),
        cancelled_tasks = cancelled_tasks + (NEW.status = 'CANCELLED') - (OLD.status = 'CANCELLED')
    WHERE seq = NEW.job_seq;
END;
"#;

/// The cluster's records (`cluster.rs`): the lease that elects the replica running background
/// work, the replicas seen, and the background actions with the epoch each ran under.
const V11: &str = r#"
CREATE TABLE cluster_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    expires_at  TEXT NOT NULL,
    acquired_at TEXT,
    renewed_at  TEXT
) WITHOUT ROWID;
INSERT INTO cluster_lease (name, holder, epoch, expires_at)
VALUES ('background', '', 0, '1970-01-01T00:00:00.000Z');
CREATE TABLE cluster_members (
    replica_id TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE cluster_actions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch      INTEGER NOT NULL,
    replica_id TEXT NOT NULL,
    worker     TEXT NOT NULL,
    at         TEXT NOT NULL
);
"#;

/// The placement contract's records (`placement.rs`): a node's capacity for the ring, whether
/// its signs of life are stats reports (`by_stats`: the heartbeat silence check passes it by),
/// its live stats (NULL until its first report), the scheduler's weights (no row: the
/// defaults), and objects with one replica record per node that holds or should hold a copy.
const V12: &str = r#"
ALTER TABLE nodes ADD COLUMN capacity_gb INTEGER;
ALTER TABLE nodes ADD COLUMN by_stats INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN cpu_free REAL;
ALTER TABLE nodes ADD COLUMN ram_free_mb REAL;
ALTER TABLE nodes ADD COLUMN gpu_free REAL;
ALTER TABLE nodes ADD COLUMN latency_ms REAL;
ALTER TABLE nodes ADD COLUMN io_pressure REAL;
CREATE TABLE scheduler_config (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    w_cpu      REAL NOT NULL,
    w_ram      REAL NOT NULL,
    w_gpu      REAL NOT NULL,
    w_latency  REAL NOT NULL,
    w_io       REAL NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE objects (
    hash          TEXT PRIMARY KEY,
    size          INTEGER NOT NULL,
    rf            INTEGER NOT NULL,
    registered_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE replicas (
    hash       TEXT NOT NULL REFERENCES objects (hash),
    node_id    TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('HEALTHY', 'MISSING', 'PENDING')),
    updated_at TEXT NOT NULL,
    UNIQUE (hash, node_id)
);
"#;

/// A node's own silence timeout and the dispatch outbox.
///
/// `nodes.silence_ms`: how long a node registered under its own name (`put_node`) may stay
/// silent before the heartbeat silence check marks it DOWN, when it heartbeats more slowly than
/// the spot timeout assumes; NULL for the spot timeout. The silence check still finds its
/// candidates through `nodes_heartbeat` by the spot timeout's cutoff (a longer timeout only
/// spares some of them).
///
/// `dispatches`: the transactional outbox of the jobs whose tasks go out through a message
/// broker (`DispatchStore`, `dispatch.rs`): one row per task of such a job, written in the
/// transaction that makes the job (whose tasks all get rows then), keyed by the task's `seq`,
/// so that rows are in creation order. `published_attempts` is NULL until the broker confirmed
/// a publication of the task, then the attempts the task had when it was read; `open` is
/// cleared once the task finished, after which the row is never read again. The publisher's
/// query reads only open rows, through two partial indexes, so it never scans every row ever
/// made: `dispatches_fresh` holds the rows never published, in creation order (what is due
/// first); `dispatches_published` the open rows published before, due again when their task
/// went back to NEW with more attempts (a reaper took it back, or it failed and is retried).
/// Their number is bounded by the dispatched work not finished: rows of finished tasks are
/// closed as the publisher records its confirmations.
const V13: &str = r#"
ALTER TABLE nodes ADD COLUMN silence_ms INTEGER;
CREATE TABLE dispatches (
    task_seq           INTEGER PRIMARY KEY,
    job_seq            INTEGER NOT NULL,
    queue              TEXT NOT NULL,
    priority           INTEGER NOT NULL,
    published_attempts INTEGER,
    published_at       TEXT,
    open               INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX dispatches_fresh ON dispatches (task_seq)
    WHERE open AND published_attempts IS NULL;
CREATE INDEX dispatches_published ON dispatches (task_seq)
    WHERE open AND published_attempts IS NOT NULL;
"#;

/// Version 14: messages for the broker that are not tasks (the priority contract's status
/// changes), kept until the broker confirms them, in the order they were recorded.
const V14: &str = r#"
CREATE TABLE outbox_messages (
    seq         INTEGER PRIMARY KEY,
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
"#;

/// Version 15: which contract's clients made a job (`jobs.origin`), so that a contract's jobs
/// are listed, counted and aged without reading drover's own.
const V15: &str = r#"
ALTER TABLE jobs ADD COLUMN origin TEXT;
CREATE INDEX jobs_origin ON jobs (origin, seq) WHERE origin IS NOT NULL;
"#;

/// Version 16: the event journal (`journal.rs`): one row per entry, numbered by its rowid
/// without gaps, its changes as JSON; and the blobs that published it, each the entries
/// `first..=last` posted to one sink, with its reconciliation to the primary when that sink
/// was a fallback (`reconciled_at` NULL: pending); and the snapshot behind which entries
/// were compacted (the journaled state as of entry `seq`, as JSON).
const V16: &str = r#"
CREATE TABLE journal (
    seq  INTEGER PRIMARY KEY,
    at   TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE journal_blobs (
    id             INTEGER PRIMARY KEY,
    first_seq      INTEGER NOT NULL UNIQUE,
    last_seq       INTEGER NOT NULL,
    sink           TEXT NOT NULL CHECK (sink IN ('primary', 'secondary', 'emergency')),
    height         INTEGER NOT NULL,
    commitment     TEXT NOT NULL,
    size           INTEGER NOT NULL,
    posted_at      TEXT NOT NULL,
    reconciled_at  TEXT,
    primary_height INTEGER,
    retry_count    INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT
);
CREATE INDEX journal_blobs_pending ON journal_blobs (first_seq)
    WHERE sink <> 'primary' AND reconciled_at IS NULL;
CREATE TABLE journal_snapshots (
    seq  INTEGER PRIMARY KEY,
    at   TEXT NOT NULL,
    data TEXT NOT NULL
);
"#;

pub(super) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up(V2),
        M::up(V3),
        M::up(V4),
        M::up(V5),
        M::up(V6),
        M::up(V7),
        M::up(V8),
        M::up(V9),
        M::up(V10),
        M::up(V11),
        M::up(V12),
        M::up(V13),
        M::up(V14),
        M::up(V15),
        M::up(V16),
    ])
}

#[cfg(test)]
mod tests {
    use drover_core::JobCounts;
    use rusqlite::{Connection, params};

    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }

    #[test]
    fn runners_recorded_before_paging_are_numbered_in_creation_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::migrations().to_version(&mut conn, 5).unwrap();
        for (session, created) in [
            ("b", "2026-01-02"),
            ("a", "2026-01-02"),
            ("c", "2026-01-01"),
        ] {
            conn.execute(
                "INSERT INTO runners (session_id, driver, status, created_at, last_heartbeat)
                 VALUES (?1, 'process', 'RUNNING', ?2, ?2)",
                params![session, created],
            )
            .unwrap();
        }
        super::migrations().to_latest(&mut conn).unwrap();
        let order: Vec<(String, i64)> = conn
            .prepare("SELECT session_id, seq FROM runners ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            order,
            [
                ("c".to_string(), 1),
                ("a".to_string(), 2),
                ("b".to_string(), 3)
            ]
        );
        let counter: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'runner_seq'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(counter, "3", "the next runner is number 4");
    }

    #[test]
    fn jobs_and_tasks_made_before_lazy_sweeps_keep_every_row_and_their_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::migrations().to_version(&mut conn, 6).unwrap();
        for (job, tasks) in [("job-a", 2), ("job-b", 3)] {
            conn.execute(
                "INSERT INTO jobs (id, priority, max_attempts, task_timeout_ms, spec, parameters,
                     status, total_tasks, new_tasks, created_at, updated_at)
                 VALUES (?1, 0, 3, 1000, '{}', '[]', 'PENDING', ?2, ?2, 't', 't')",
                params![job, tasks],
            )
            .unwrap();
        }
        // Interleaved, as rows of two jobs made one after the other never are, to show that the
        // index follows each job's own order.
        for (id, job) in [
            ("t1", "job-b"),
            ("t2", "job-a"),
            ("t3", "job-b"),
            ("t4", "job-a"),
            ("t5", "job-b"),
        ] {
            conn.execute(
                "INSERT INTO tasks (id, job_id, priority, payload, status, max_attempts,
                     timeout_ms, created_at, updated_at)
                 VALUES (?1, ?2, 0, '{}', 'NEW', 3, 1000, 't', 't')",
                params![id, job],
            )
            .unwrap();
        }
        conn.execute("UPDATE tasks SET status = 'RUNNING' WHERE id = 't3'", [])
            .unwrap();
        super::migrations().to_latest(&mut conn).unwrap();

        let tasks: Vec<(String, i64, i64)> = conn
            .prepare(
                "SELECT t.id, t.idx, t.job_seq = j.seq FROM tasks t JOIN jobs j ON j.id = t.job_id
                 ORDER BY t.seq",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expect = [("t1", 0), ("t2", 0), ("t3", 1), ("t4", 1), ("t5", 2)];
        assert_eq!(
            tasks,
            expect.map(|(id, idx)| (id.to_string(), idx, 1)).to_vec()
        );
        let materialised: Vec<(i64, i64)> = conn
            .prepare("SELECT materialised, total_tasks FROM jobs ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(materialised, [(2, 2), (3, 3)], "every old task has its row");

        // The contract's force reset, by hand, is still counted.
        conn.execute(
            "UPDATE tasks SET status = 'NEW', assigned_to = NULL, started_at = NULL
             WHERE id = 't3'",
            [],
        )
        .unwrap();
        let counts: (i64, i64) = conn
            .query_row(
                "SELECT new_tasks, running_tasks FROM jobs WHERE id = 'job-b'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(counts, (3, 0));
    }

    /// A store opened on data of an older drover: its tasks keep their ids, their order and their
    /// lifecycle, beside the new lazily made sweeps.
    #[tokio::test]
    async fn tasks_with_ids_from_before_sweep_ids_keep_working() {
        use crate::{JobStore, NodeStore, Page, Report, StoreOps};
        use drover_core::{NodeInfo, ReportKind, ReportOutcome, TaskResult, TaskStatus};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.db");
        let old: Vec<String> = (0..3).map(|_| drover_core::ids::instance_id()).collect();
        let old: Vec<String> = old.iter().map(|i| i.replace("drover-", "task-")).collect();
        {
            let mut conn = Connection::open(&path).unwrap();
            super::migrations().to_version(&mut conn, 6).unwrap();
            conn.execute(
                "INSERT INTO jobs (id, priority, max_attempts, task_timeout_ms, spec, parameters,
                     status, total_tasks, new_tasks, created_at, updated_at)
                 VALUES ('job-old', 0, 3, 60000, '{}', '[\"x\"]', 'PENDING', 3, 3,
                     '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
                [],
            )
            .unwrap();
            for (i, id) in old.iter().enumerate() {
                conn.execute(
                    "INSERT INTO tasks (id, job_id, priority, payload, status, max_attempts,
                         timeout_ms, created_at, updated_at)
                     VALUES (?1, 'job-old', 0, ?2, 'NEW', 3, 60000,
                         '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z')",
                    params![id, format!("{{\"x\": {i}}}")],
                )
                .unwrap();
            }
        }
        let store = super::super::SqliteStore::open(&path).unwrap();
        let now = drover_core::time::parse("2026-01-02T00:00:00.000000Z").unwrap();
        let task = store.get_task(&old[1]).await.unwrap();
        assert_eq!((task.seq, task.status), (1, TaskStatus::New));
        let listed: Vec<String> = store
            .list_tasks("job-old", None, Page::first(10))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(listed, old);

        let node = store
            .register_node(NodeInfo::default().into(), None, now)
            .await
            .unwrap()
            .id;
        let claimed: Vec<String> = store
            .claim(&node, 2, now)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(claimed, old[..2]);
        let done = store
            .report(
                vec![Report {
                    task_id: old[0].clone(),
                    node_id: node.clone(),
                    attempt: None,
                    kind: ReportKind::Complete(TaskResult::default()),
                }],
                now,
            )
            .await
            .unwrap();
        assert_eq!(done, [ReportOutcome::Completed]);
        let job = store.get_job("job-old").await.unwrap();
        assert_eq!(
            (job.counts.done, job.counts.running, job.counts.new),
            (1, 1, 1)
        );
        assert_eq!(store.audit_job_counts().await.unwrap(), []);
    }

    /// Tasks and attempts written under migration 7 come through the table's rebuild whole: the
    /// same rows and `seq`s, the same indexes and counting trigger, the status still checked,
    /// and a status change no longer builds a temporary table for the check.
    #[test]
    fn tasks_made_under_migration_7_survive_the_rebuild() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        super::migrations().to_version(&mut conn, 7).unwrap();
        conn.execute(
            "INSERT INTO jobs (id, priority, max_attempts, task_timeout_ms, spec, parameters,
                 status, total_tasks, new_tasks, running_tasks, completed_tasks, materialised,
                 created_at, updated_at)
             VALUES ('job-a', 0, 3, 1000, '{}', '[]', 'RUNNING', 5, 3, 1, 1, 3, 't', 't')",
            [],
        )
        .unwrap();
        for (seq, id, idx, status, holder) in [
            (7, "old-random", 0, "DONE", Some("n1")),
            (9, "task-a-1", 1, "RUNNING", Some("n1")),
            (12, "task-a-2", 2, "NEW", None),
        ] {
            conn.execute(
                "INSERT INTO tasks (seq, id, job_id, job_seq, idx, priority, payload, status,
                     attempt, max_attempts, timeout_ms, assigned_to, lease_expires_at,
                     created_at, updated_at, output, rev)
                 VALUES (?1, ?2, 'job-a', 1, ?3, 0, '{\"x\": 1}', ?4, 1, 3, 1000, ?5, 'l',
                     't', 'u', 'out', 2)",
                params![seq, id, idx, status, holder],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO task_attempts (task_id, attempt, node_id, started_at, outcome)
             VALUES ('task-a-1', 1, 'n1', 't', 'RUNNING')",
            [],
        )
        .unwrap();
        let all_rows = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT json_array(*) FROM (SELECT * FROM tasks ORDER BY seq)")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let before = all_rows(&conn);
        super::migrations().to_latest(&mut conn).unwrap();
        assert_eq!(
            all_rows(&conn),
            before,
            "every column of every row, in order"
        );
        // (`task_attempts` keeps its rows in its primary key, which has no separate index.)

        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'index'
                     AND tbl_name IN ('tasks', 'task_attempts') ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "tasks_claim",
                "tasks_job_idx",
                "tasks_job_status",
                "tasks_running",
            ]
        );
        let attempt: String = conn
            .query_row(
                "SELECT node_id FROM task_attempts WHERE task_id = 'task-a-1' AND attempt = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(attempt, "n1");

        // The status is still checked, and by comparisons rather than a temporary table.
        assert!(
            conn.execute("UPDATE tasks SET status = 'BOGUS' WHERE seq = 12", [])
                .is_err()
        );
        let program: Vec<String> = conn
            .prepare("EXPLAIN UPDATE tasks SET status = 'DONE' WHERE seq = 9")
            .unwrap()
            .query_map([], |r| r.get(1))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!program.iter().any(|op| op == "OpenEphemeral"));
        // A fresh row for an existing id is refused, and one for a missing job too.
        assert!(
            conn.execute(
                "INSERT INTO tasks (id, job_id, priority, payload, status, max_attempts,
                     timeout_ms, created_at, updated_at)
                 VALUES ('task-a-1', 'job-a', 0, '{}', 'NEW', 3, 1, 't', 't')",
                [],
            )
            .is_err()
        );
        assert!(
            conn.execute(
                "INSERT INTO tasks (id, job_id, priority, payload, status, max_attempts,
                     timeout_ms, created_at, updated_at)
                 VALUES ('task-z-0', 'job-z', 0, '{}', 'NEW', 3, 1, 't', 't')",
                [],
            )
            .is_err()
        );

        // The contract's force reset, by hand, is still counted by the trigger.
        conn.execute(
            "UPDATE tasks SET status = 'NEW', assigned_to = NULL WHERE id = 'task-a-1'",
            [],
        )
        .unwrap();
        let counts: (i64, i64) = conn
            .query_row(
                "SELECT new_tasks, running_tasks FROM jobs WHERE id = 'job-a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(counts, (4, 0));
    }

    /// Attempts written under migration 8 come through their table's rebuild whole, each now
    /// keyed by its task's `seq`; the tasks are untouched, and the contract's troubleshooting
    /// query and hand force-reset still work and are counted.
    #[test]
    fn attempts_made_under_migration_8_are_keyed_by_their_task_seq() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        super::migrations().to_version(&mut conn, 8).unwrap();
        conn.execute(
            "INSERT INTO jobs (id, priority, max_attempts, task_timeout_ms, spec, parameters,
                 status, total_tasks, new_tasks, running_tasks, completed_tasks, materialised,
                 created_at, updated_at)
             VALUES ('job-a', 0, 3, 1000, '{}', '[]', 'RUNNING', 4, 2, 1, 1, 3, 't', 't')",
            [],
        )
        .unwrap();
        for (seq, id, idx, status, attempt, holder) in [
            (7, "old-random", 0, "DONE", 2, Some("n2")),
            (9, "task-a-1", 1, "RUNNING", 1, Some("n1")),
            (12, "task-a-2", 2, "NEW", 0, None),
        ] {
            conn.execute(
                "INSERT INTO tasks (seq, id, job_id, job_seq, idx, priority, payload, status,
                     attempt, max_attempts, timeout_ms, assigned_to, started_at,
                     lease_expires_at, created_at, updated_at, rev)
                 VALUES (?1, ?2, 'job-a', 1, ?3, 0, '{}', ?4, ?5, 3, 1000, ?6, 's', 'l', 't',
                     'u', 2)",
                params![seq, id, idx, status, attempt, holder],
            )
            .unwrap();
        }
        for (task, attempt, node, ended, outcome, error) in [
            (
                "old-random",
                1,
                "n1",
                Some("e1"),
                "REAPED",
                Some("lease expired"),
            ),
            ("old-random", 2, "n2", Some("e2"), "COMPLETED", None),
            ("task-a-1", 1, "n1", None, "RUNNING", None),
        ] {
            conn.execute(
                "INSERT INTO task_attempts (task_id, attempt, node_id, started_at, ended_at,
                     outcome, error)
                 VALUES (?1, ?2, ?3, 's', ?4, ?5, ?6)",
                params![task, attempt, node, ended, outcome, error],
            )
            .unwrap();
        }
        let rows = |conn: &Connection, sql: &str| -> Vec<String> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let attempts = "SELECT json_array(task_id, attempt, node_id, started_at, ended_at,
                            outcome, error)
                        FROM task_attempts ORDER BY task_id, attempt";
        let tasks = "SELECT json_array(*) FROM (SELECT * FROM tasks ORDER BY seq)";
        let (attempts_before, tasks_before) = (rows(&conn, attempts), rows(&conn, tasks));
        super::migrations().to_latest(&mut conn).unwrap();
        assert_eq!(
            rows(&conn, attempts),
            attempts_before,
            "every attempt, whole"
        );
        assert_eq!(rows(&conn, tasks), tasks_before, "every task, whole");
        let keyed = rows(
            &conn,
            "SELECT json_array(a.task_seq, a.attempt) FROM task_attempts a
                 JOIN tasks t ON t.seq = a.task_seq AND t.id = a.task_id
             ORDER BY a.task_seq, a.attempt",
        );
        assert_eq!(keyed, ["[7,1]", "[7,2]", "[9,1]"]);

        // The attempt of a task is found by integers, through the primary key alone.
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT outcome FROM task_attempts
                 WHERE task_seq = 9 AND attempt = 1",
            )
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("PRIMARY KEY (task_seq=? AND attempt=?)")),
            "{plan:?}"
        );
        let indexes = rows(
            &conn,
            "SELECT name FROM sqlite_schema WHERE type = 'index'
                 AND tbl_name IN ('tasks', 'task_attempts') ORDER BY name",
        );
        assert_eq!(
            indexes,
            [
                "tasks_claim",
                "tasks_job_idx",
                "tasks_job_status",
                "tasks_running",
            ]
        );

        // The contract's troubleshooting query, then its force reset by hand, counted.
        let running = rows(
            &conn,
            "SELECT json_array(id, status, assigned_to, started_at) FROM tasks
             WHERE status='RUNNING'",
        );
        assert_eq!(running, [r#"["task-a-1","RUNNING","n1","s"]"#]);
        conn.execute(
            "UPDATE tasks SET status='NEW', assigned_to=NULL, started_at=NULL
             WHERE id='task-a-1'",
            [],
        )
        .unwrap();
        let counts: (i64, i64) = conn
            .query_row(
                "SELECT new_tasks, running_tasks FROM jobs WHERE id = 'job-a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(counts, (3, 0));
        // An attempt by task id, as an operator would look one up, still answers.
        let outcome: String = conn
            .query_row(
                "SELECT outcome FROM task_attempts WHERE task_id = 'old-random' AND attempt = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(outcome, "COMPLETED");
    }

    /// Tasks written under migration 9 come through the rebuild of migration 10 whole; a task
    /// is then found by its job's `seq` and its index through integers alone, an id not derived
    /// from them by the partial index of such ids, and ids stay unique either way. The
    /// contract's troubleshooting query and force reset by id still work, and are counted.
    #[test]
    fn tasks_made_under_migration_9_are_found_by_job_and_index() {
        use rusqlite::OptionalExtension;
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        super::migrations().to_version(&mut conn, 9).unwrap();
        let hex = "0190aa00bb11cc22dd33ee44ff556677";
        let job = format!("job-{hex}");
        conn.execute(
            "INSERT INTO jobs (id, priority, max_attempts, task_timeout_ms, spec, parameters,
                 status, total_tasks, new_tasks, running_tasks, completed_tasks, materialised,
                 created_at, updated_at)
             VALUES (?1, 0, 3, 1000, '{}', '[]', 'RUNNING', 5, 2, 1, 2, 4, 't', 't')",
            [&job],
        )
        .unwrap();
        let derived = |i: u64| drover_core::ids::sweep_task_id(&job, i);
        for (seq, id, idx, status, holder) in [
            (
                7,
                "task-0190aa00bb11cc22dd33ee44ff55aaaa".to_string(),
                0,
                "DONE",
                Some("n1"),
            ),
            (9, derived(1), 1, "RUNNING", Some("n1")),
            (12, derived(2), 2, "DONE", Some("n2")),
            (13, derived(3), 3, "NEW", None),
        ] {
            conn.execute(
                "INSERT INTO tasks (seq, id, job_id, job_seq, idx, priority, payload, status,
                     attempt, max_attempts, timeout_ms, assigned_to, started_at,
                     lease_expires_at, created_at, updated_at, output, rev)
                 VALUES (?1, ?2, ?3, 1, ?4, 0, '{\"x\": 1}', ?5, 1, 3, 1000, ?6, 's', 'l',
                     't', 'u', 'out', 2)",
                params![seq, id, job, idx, status, holder],
            )
            .unwrap();
        }
        let rows = |conn: &Connection, sql: &str| -> Vec<String> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let tasks = "SELECT json_array(*) FROM (SELECT * FROM tasks ORDER BY seq)";
        let before = rows(&conn, tasks);
        super::migrations().to_latest(&mut conn).unwrap();
        assert_eq!(
            rows(&conn, tasks),
            before,
            "every column of every row, in order"
        );
        assert_eq!(
            rows(
                &conn,
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'tasks'
                 ORDER BY name"
            ),
            [
                "tasks_claim",
                "tasks_job_idx",
                "tasks_job_status",
                "tasks_running"
            ]
        );

        // Drover's two lookups by id, and the index each walks.
        let plan = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> String {
            conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(p, |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap()
                .join(" | ")
        };
        let (by_job, by_name) = super::super::rows::TASK_BY_ID_SQL;
        let by_job_plan = plan(by_job, params![1, 1, derived(1)]);
        assert!(
            by_job_plan.contains("tasks USING INDEX tasks_job_idx (job_seq=? AND idx=?)"),
            "{by_job_plan}"
        );
        let by_name_plan = plan(by_name, params!["x"]);
        assert!(
            by_name_plan.contains("tasks USING INTEGER PRIMARY KEY (rowid=?)")
                && by_name_plan.contains("task_names USING PRIMARY KEY (id=?)"),
            "{by_name_plan}"
        );
        let found = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Option<String> {
            conn.query_row(sql, p, |r| r.get(1)).optional().unwrap()
        };
        assert_eq!(found(by_job, params![1, 1, derived(1)]), Some(derived(1)));
        assert_eq!(
            found(by_job, params![1, 0, derived(0)]),
            None,
            "task 0 is named"
        );
        let old = "task-0190aa00bb11cc22dd33ee44ff55aaaa";
        assert_eq!(found(by_name, params![old]), Some(old.to_string()));
        assert_eq!(found(by_name, params![derived(1)]), None);
        // Only the ids not derived from their job and index are kept by name.
        assert_eq!(
            rows(&conn, "SELECT json_array(id, task_seq) FROM task_names"),
            [r#"["task-0190aa00bb11cc22dd33ee44ff55aaaa",7]"#]
        );

        // Ids stay unique: a second row for a job's index, or a second task of a name, is
        // refused; so is a row for a job that does not exist.
        let insert = |id: &str, job_seq: i64, idx: i64| {
            conn.execute(
                "INSERT INTO tasks (id, job_id, job_seq, idx, priority, payload, status,
                     max_attempts, timeout_ms, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 0, '{}', 'NEW', 3, 1, 't', 't')",
                params![id, job, job_seq, idx],
            )
        };
        assert!(insert(&derived(2), 1, 2).is_err());
        assert!(
            conn.execute(
                "INSERT INTO task_names (id, task_seq)
                 VALUES ('task-0190aa00bb11cc22dd33ee44ff55aaaa', 9)",
                [],
            )
            .is_err()
        );
        assert!(insert(&derived(4), 2, 4).is_err(), "no job 2");
        insert(&derived(4), 1, 4).unwrap();

        // The contract's troubleshooting query, then its force reset by hand, counted by the
        // trigger.
        let running = rows(
            &conn,
            "SELECT json_array(id, status, assigned_to, started_at) FROM tasks
             WHERE status='RUNNING'",
        );
        assert_eq!(
            running,
            [format!(r#"["{}","RUNNING","n1","s"]"#, derived(1))]
        );
        conn.execute(
            "UPDATE tasks SET status='NEW', assigned_to=NULL, started_at=NULL WHERE id=?1",
            [derived(1)],
        )
        .unwrap();
        let counts: (i64, i64) = conn
            .query_row(
                "SELECT new_tasks, running_tasks FROM jobs WHERE seq = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(counts, (3, 0));
    }

    /// Nodes registered before migration 13 have no silence timeout of their own (the spot
    /// timeout judges them), and the outbox starts empty, its two indexes holding only the
    /// open rows of each kind.
    #[test]
    fn nodes_made_before_migration_13_keep_the_spot_timeout() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::migrations().to_version(&mut conn, 12).unwrap();
        conn.execute(
            "INSERT INTO nodes (id, address, status, registered_at, last_heartbeat)
             VALUES ('spot-a', '10.0.0.1', 'UP', 't', 't')",
            [],
        )
        .unwrap();
        super::migrations().to_latest(&mut conn).unwrap();
        let silence: Option<i64> = conn
            .query_row(
                "SELECT silence_ms FROM nodes WHERE id = 'spot-a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(silence, None);
        conn.execute_batch(
            "INSERT INTO dispatches (task_seq, job_seq, queue, priority, published_attempts, open)
             VALUES (1, 1, 'q', 0, NULL, 1), (2, 1, 'q', 0, 0, 1), (3, 1, 'q', 0, NULL, 0),
                    (4, 1, 'q', 0, 2, 0)",
        )
        .unwrap();
        let held = |index: &str, condition: &str| -> Vec<i64> {
            conn.prepare(&format!(
                "SELECT task_seq FROM dispatches INDEXED BY {index} WHERE {condition}
                 ORDER BY task_seq"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        assert_eq!(
            held("dispatches_fresh", "open AND published_attempts IS NULL"),
            [1]
        );
        assert_eq!(
            held(
                "dispatches_published",
                "open AND published_attempts IS NOT NULL"
            ),
            [2]
        );
    }

    #[test]
    fn the_status_trigger_agrees_with_the_core_rule() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::migrations().to_latest(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO jobs (id, priority, max_attempts, task_timeout_ms, spec, parameters,
                 status, total_tasks, new_tasks, created_at, updated_at)
             VALUES ('j', 0, 1, 1, '{}', '[]', 'PENDING', 0, 0, 't', 't')",
            [],
        )
        .unwrap();
        let range = 0..3u64;
        for new in range.clone() {
            for running in range.clone() {
                for done in range.clone() {
                    for failed in range.clone() {
                        for cancelled_tasks in range.clone() {
                            for (cancelled, started) in
                                [(false, false), (false, true), (true, false), (true, true)]
                            {
                                let counts = JobCounts {
                                    total: new + running + done + failed + cancelled_tasks,
                                    new,
                                    running,
                                    done,
                                    failed,
                                    cancelled: cancelled_tasks,
                                };
                                conn.execute(
                                    "UPDATE jobs SET total_tasks = ?1, new_tasks = ?2,
                                         running_tasks = ?3, completed_tasks = ?4,
                                         failed_tasks = ?5, cancelled_tasks = ?6, cancelled = ?7,
                                         started_at = CASE WHEN ?8 THEN 't' END
                                     WHERE id = 'j'",
                                    params![
                                        counts.total,
                                        new,
                                        running,
                                        done,
                                        failed,
                                        cancelled_tasks,
                                        cancelled,
                                        started
                                    ],
                                )
                                .unwrap();
                                let stored: String = conn
                                    .query_row("SELECT status FROM jobs", [], |r| r.get(0))
                                    .unwrap();
                                assert_eq!(
                                    stored,
                                    counts.status(cancelled, started).as_str(),
                                    "{counts:?} cancelled={cancelled} started={started}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
