//! The PostgreSQL schema, as ordered migrations applied when a store first uses its database,
//! their version kept in `drover_schema`.
//!
//! Table and column names are the SQLite store's (the batch contract's where it names them:
//! `jobs`, `tasks`, `assigned_to`, `total_tasks`, ...), so an operator's SQL reads the same on
//! either; `spots` is a view over `nodes`. Instants are `timestamptz`, JSON is kept as the text
//! drover wrote (a payload's key order is the job's). As on SQLite, a sweep's task gets its row
//! the first time it is claimed (`jobs.materialised` counts the rows, always the job's first
//! tasks by index). Ids of tasks are unique and indexed, so the contract's SQL by id is a
//! lookup. Triggers keep the job counters and status right when tasks are changed by hand
//! (migration 2). Migrations run inside one transaction under an advisory lock: replicas that start
//! together apply each migration once, and one that finds the schema newer than it knows
//! refuses to run against it.

use super::write::R;
use crate::StoreError;

/// The advisory lock that serialises migrations (an arbitrary constant: "drover" in ASCII).
const MIGRATION_LOCK: i64 = 0x6472_6f76_6572;

const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE nodes (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                TEXT PRIMARY KEY,
    address           TEXT NOT NULL,
    hostname          TEXT,
    zone              TEXT,
    labels            TEXT NOT NULL DEFAULT '{}',
    total_cores       BIGINT,
    memory_bytes      BIGINT,
    gpus              BIGINT,
    disk_bytes        BIGINT,
    cpu_load          DOUBLE PRECISION,
    free_memory_bytes BIGINT,
    running_tasks     BIGINT NOT NULL DEFAULT 0,
    status            TEXT NOT NULL CHECK (status IN ('UP', 'DRAINING', 'DOWN')),
    registered_at     TIMESTAMPTZ NOT NULL,
    last_heartbeat    TIMESTAMPTZ NOT NULL,
    secret_hash       TEXT
);
CREATE INDEX nodes_heartbeat ON nodes (last_heartbeat) WHERE status <> 'DOWN';

CREATE VIEW spots AS
    SELECT id, address AS ip_address, status, cpu_load, running_tasks, total_cores,
           zone, last_heartbeat
    FROM nodes;

CREATE TABLE jobs (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    name            TEXT,
    priority        BIGINT NOT NULL,
    max_attempts    BIGINT NOT NULL,
    task_timeout_ms BIGINT NOT NULL,
    spec            TEXT NOT NULL,
    parameters      TEXT NOT NULL,
    status          TEXT NOT NULL,
    cancelled       BOOLEAN NOT NULL DEFAULT false,
    started_at      TIMESTAMPTZ,
    total_tasks     BIGINT NOT NULL,
    new_tasks       BIGINT NOT NULL,
    running_tasks   BIGINT NOT NULL DEFAULT 0,
    completed_tasks BIGINT NOT NULL DEFAULT 0,
    failed_tasks    BIGINT NOT NULL DEFAULT 0,
    cancelled_tasks BIGINT NOT NULL DEFAULT 0,
    materialised    BIGINT NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    run             TEXT
);
CREATE INDEX jobs_status ON jobs (status, seq);
-- The jobs whose never-claimed tasks a claim may take, in claim order.
CREATE INDEX jobs_unclaimed ON jobs (priority DESC, seq)
    WHERE materialised < total_tasks AND NOT cancelled;

CREATE TABLE tasks (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    job_id           TEXT NOT NULL,
    job_seq          BIGINT NOT NULL REFERENCES jobs (seq),
    idx              BIGINT NOT NULL,
    priority         BIGINT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL
                     CHECK (status IN ('NEW', 'RUNNING', 'DONE', 'FAILED', 'CANCELLED')),
    attempt          BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    timeout_ms       BIGINT NOT NULL,
    assigned_to      TEXT,
    started_at       TIMESTAMPTZ,
    lease_expires_at TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    runtime_ms       BIGINT,
    iter             BIGINT,
    fopt             DOUBLE PRECISION,
    result_json      TEXT,
    last_error       TEXT,
    output           TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (job_seq, idx)
);
-- Claims take the best stored NEW task: highest priority, then oldest job, then index.
CREATE INDEX tasks_claim ON tasks (priority DESC, job_seq, idx) WHERE status = 'NEW';
CREATE INDEX tasks_job_status ON tasks (job_seq, status, idx);
-- The running tasks, by holder (a spot's tasks) and by lease (the task reaper).
CREATE INDEX tasks_running ON tasks (assigned_to) WHERE status = 'RUNNING';
CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE status = 'RUNNING';

-- One row per claim: who held which attempt and how it ended. Fencing and idempotent
-- reports are decided from it.
CREATE TABLE task_attempts (
    task_seq   BIGINT NOT NULL REFERENCES tasks (seq),
    attempt    BIGINT NOT NULL,
    task_id    TEXT NOT NULL,
    node_id    TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    ended_at   TIMESTAMPTZ,
    outcome    TEXT NOT NULL,
    error      TEXT,
    PRIMARY KEY (task_seq, attempt)
);

CREATE TABLE runners (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    session_id     TEXT PRIMARY KEY,
    driver         TEXT NOT NULL,
    instance       TEXT,
    endpoint       TEXT,
    status         TEXT NOT NULL CHECK (status IN ('STARTING', 'RUNNING')),
    singleton      BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL,
    last_heartbeat TIMESTAMPTZ NOT NULL,
    token_hash     TEXT
);
CREATE UNIQUE INDEX runners_one_singleton ON runners (singleton) WHERE singleton;
CREATE INDEX runners_heartbeat ON runners (last_heartbeat);
"#;

/// Job bookkeeping that stays right under hand edits (the contract's force reset, an
/// operator's UPDATE from psql): a trigger moves a job's counters on every change of a task's
/// status, and another recomputes `jobs.status` when the counters move. drover counts every
/// change it makes itself, once per job per call, so both skip its own sessions, which carry
/// `drover.writer = on` (set for every connection the store opens). `drover_job_status`
/// restates `JobCounts::status` in SQL; the test `the_status_function_agrees_with_the_core_rule`
/// compares the two over every small combination of counts.
const V2: &str = r#"
CREATE FUNCTION drover_job_status(total BIGINT, new BIGINT, running BIGINT, done BIGINT,
                                  failed BIGINT, cancelled_tasks BIGINT, cancelled BOOLEAN,
                                  started BOOLEAN)
RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN cancelled THEN 'CANCELLED'
        WHEN total > 0 AND done = total THEN 'COMPLETED'
        WHEN new + running = 0 AND failed > 0 THEN 'FAILED'
        WHEN started OR running + done + failed + cancelled_tasks > 0 THEN 'RUNNING'
        ELSE 'PENDING'
    END
$$;

CREATE FUNCTION drover_count_task_edit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs SET
        new_tasks       = new_tasks       + (NEW.status = 'NEW')::INT       - (OLD.status = 'NEW')::INT,
        running_tasks   = running_tasks   + (NEW.status = 'RUNNING')::INT   - (OLD.status = 'RUNNING')::INT,
        completed_tasks = completed_tasks + (NEW.status = 'DONE')::INT      - (OLD.status = 'DONE')::INT,
        failed_tasks    = failed_tasks    + (NEW.status = 'FAILED')::INT    - (OLD.status = 'FAILED')::INT,
        cancelled_tasks = cancelled_tasks + (NEW.status = 'CANCELLED')::INT - (OLD.status = 'CANCELLED')::INT
    WHERE seq = NEW.job_seq;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_keep_job_counts AFTER UPDATE OF status ON tasks
FOR EACH ROW
WHEN (OLD.status <> NEW.status
      AND current_setting('drover.writer', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION drover_count_task_edit();

CREATE FUNCTION drover_keep_job_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.status := drover_job_status(NEW.total_tasks, NEW.new_tasks, NEW.running_tasks,
        NEW.completed_tasks, NEW.failed_tasks, NEW.cancelled_tasks, NEW.cancelled,
        NEW.started_at IS NOT NULL);
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_keep_status
BEFORE UPDATE OF new_tasks, running_tasks, completed_tasks, failed_tasks, cancelled_tasks,
    cancelled, started_at
ON jobs
FOR EACH ROW
WHEN (current_setting('drover.writer', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION drover_keep_job_status();
"#;

/// The cluster's records (`cluster.rs`): the lease that elects the replica running background
/// work, the replicas seen, and the background actions with the epoch each ran under.
const V3: &str = r#"
CREATE TABLE cluster_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    acquired_at TIMESTAMPTZ,
    renewed_at  TIMESTAMPTZ
);
INSERT INTO cluster_lease (name, holder, epoch, expires_at)
VALUES ('background', '', 0, '1970-01-01T00:00:00Z');
CREATE TABLE cluster_members (
    replica_id TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL
);
CREATE TABLE cluster_actions (
    seq        BIGSERIAL PRIMARY KEY,
    epoch      BIGINT NOT NULL,
    replica_id TEXT NOT NULL,
    worker     TEXT NOT NULL,
    at         TIMESTAMPTZ NOT NULL
);
"#;

/// Room in each page of `task_attempts` for the new version of a row when its attempt ends:
/// none of the changed columns is indexed, so the update can then stay on the page (HOT) and
/// add no index entry. Applies to pages written from now on.
const V4: &str = r#"
ALTER TABLE task_attempts SET (fillfactor = 70);
"#;

/// The placement contract's records (`placement.rs`), as in the SQLite store's migration 12.
const V5: &str = r#"
ALTER TABLE nodes ADD COLUMN capacity_gb BIGINT;
ALTER TABLE nodes ADD COLUMN by_stats BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE nodes ADD COLUMN cpu_free DOUBLE PRECISION;
ALTER TABLE nodes ADD COLUMN ram_free_mb DOUBLE PRECISION;
ALTER TABLE nodes ADD COLUMN gpu_free DOUBLE PRECISION;
ALTER TABLE nodes ADD COLUMN latency_ms DOUBLE PRECISION;
ALTER TABLE nodes ADD COLUMN io_pressure DOUBLE PRECISION;
CREATE TABLE scheduler_config (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    w_cpu      DOUBLE PRECISION NOT NULL,
    w_ram      DOUBLE PRECISION NOT NULL,
    w_gpu      DOUBLE PRECISION NOT NULL,
    w_latency  DOUBLE PRECISION NOT NULL,
    w_io       DOUBLE PRECISION NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE objects (
    hash          TEXT PRIMARY KEY,
    size          BIGINT NOT NULL,
    rf            BIGINT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE replicas (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY,
    hash       TEXT NOT NULL REFERENCES objects (hash),
    node_id    TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('HEALTHY', 'MISSING', 'PENDING')),
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (hash, node_id)
);
"#;

/// A node's own silence timeout and the dispatch outbox, as in the SQLite store's migration 13
/// (which says what each is for). `nodes.silence_ms` is NULL for the spot timeout. The
/// outbox's reads use only its two partial indexes of open rows, so the publisher never reads
/// the rows of finished work: `dispatches_fresh`, the rows never published in creation order
/// (a task's `seq`), and `dispatches_published`, the open rows published before, due again
/// when their task is NEW with more attempts.
const V6: &str = r#"
ALTER TABLE nodes ADD COLUMN silence_ms BIGINT;
CREATE TABLE dispatches (
    task_seq           BIGINT PRIMARY KEY REFERENCES tasks (seq),
    job_seq            BIGINT NOT NULL REFERENCES jobs (seq),
    queue              TEXT NOT NULL,
    priority           SMALLINT NOT NULL,
    published_attempts BIGINT,
    published_at       TIMESTAMPTZ,
    open               BOOLEAN NOT NULL DEFAULT true
);
CREATE INDEX dispatches_fresh ON dispatches (task_seq)
    WHERE open AND published_attempts IS NULL;
CREATE INDEX dispatches_published ON dispatches (task_seq)
    WHERE open AND published_attempts IS NOT NULL;
"#;

/// Version 7: messages for the broker that are not tasks (the priority contract's status
/// changes), kept until the broker confirms them, in the order they were recorded.
const V7: &str = r#"
CREATE TABLE outbox_messages (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exchange    TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
"#;

/// Version 8: which contract's clients made a job (`jobs.origin`), so that a contract's jobs
/// are listed, counted and aged without reading drover's own.
const V8: &str = r#"
ALTER TABLE jobs ADD COLUMN origin TEXT;
CREATE INDEX jobs_origin ON jobs (origin, seq) WHERE origin IS NOT NULL;
"#;

/// Version 9: the event journal (`journal.rs`): one row per entry, its changes as JSON, the
/// one row that numbers entries without gaps across replicas, and the blobs that published
/// it, each the entries `first..=last` posted to one sink, with its reconciliation to the
/// primary when that sink was a fallback (`reconciled_at` NULL: pending); and the snapshot behind which entries
/// were compacted (the journaled state as of entry `seq`, as JSON).
const V9: &str = r#"
CREATE TABLE journal (
    seq  BIGINT PRIMARY KEY,
    at   TIMESTAMPTZ NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE journal_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO journal_head (id, seq) VALUES (1, 0);
CREATE TABLE journal_blobs (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_seq      BIGINT NOT NULL UNIQUE,
    last_seq       BIGINT NOT NULL,
    sink           TEXT NOT NULL CHECK (sink IN ('primary', 'secondary', 'emergency')),
    height         BIGINT NOT NULL,
    commitment     TEXT NOT NULL,
    size           BIGINT NOT NULL,
    posted_at      TIMESTAMPTZ NOT NULL,
    reconciled_at  TIMESTAMPTZ,
    primary_height BIGINT,
    retry_count    BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT
);
CREATE INDEX journal_blobs_pending ON journal_blobs (first_seq)
    WHERE sink <> 'primary' AND reconciled_at IS NULL;
CREATE TABLE journal_snapshots (
    seq  BIGINT PRIMARY KEY,
    at   TIMESTAMPTZ NOT NULL,
    data TEXT NOT NULL
);
"#;

/// The migrations in order; the schema's version is how many have been applied.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9];

/// Brings the database's schema to the newest version this build knows, inside one
/// transaction that holds [`MIGRATION_LOCK`]: a second replica starting at the same time
/// waits, then finds nothing left to do.
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> R<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS drover_schema (
             version    BIGINT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let version: i64 = tx
        .query_one("SELECT COALESCE(max(version), 0) FROM drover_schema", &[])
        .await?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Unsupported(format!(
            "the database's schema is at version {version}, newer than this build of drover \
             knows ({known}): run a newer drover"
        ))
        .into());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO drover_schema (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
