//! The floor of the contract-exact scenario on PostgreSQL: the fewest statements that serve
//! its calls durably, behind the same HTTP stack as drover's. One table of tasks, one index of
//! the claimable ones; a claim is one `UPDATE … FOR UPDATE SKIP LOCKED` and a complete one
//! conditional `UPDATE`, each in its own transaction (autocommit, `synchronous_commit` on, as
//! drover's), sent as calls come over a pool as large as drover's default. PostgreSQL groups
//! the concurrent commits' WAL flushes by itself.
//!
//! It keeps nothing a coordinator must: no attempts history, no job counters, no leases
//! enforced, no events, no fencing, no retries. Its figure is what the contract's call pattern
//! costs on this machine with PostgreSQL holding every change, so the scenario can say how much
//! of drover's figure is drover's own work and how much the pattern's. It is mounted by
//! `floor.rs` when the floor is given a `postgres://` database.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use drover_api::{
    ClaimRequest, ClaimResponse, ClaimedTask, CompleteRequest, CreateJobRequest, CreateJobResponse,
    Job, ReportResponse,
};
use std::sync::Arc;

/// As drover's own default pool (`drover_store::postgres`).
const POOL_SIZE: usize = 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS floor_tasks (
    id bigint PRIMARY KEY,
    payload text NOT NULL,
    state smallint NOT NULL DEFAULT 0,
    holder text,
    attempt integer NOT NULL DEFAULT 0,
    lease_expires timestamptz
);
CREATE INDEX IF NOT EXISTS floor_tasks_new ON floor_tasks (id) WHERE state = 0;
";

const CLAIM: &str = "
UPDATE floor_tasks SET state = 1, holder = $1, attempt = attempt + 1,
       lease_expires = now() + interval '5 minutes'
 WHERE id IN (SELECT id FROM floor_tasks WHERE state = 0 ORDER BY id LIMIT $2
              FOR UPDATE SKIP LOCKED)
RETURNING id, payload, attempt, to_char(lease_expires AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

const COMPLETE: &str =
    "UPDATE floor_tasks SET state = 2 WHERE id = $1 AND holder = $2 AND attempt = $3 AND state = 1";

struct Floor {
    pool: Pool,
}

type Shared = Arc<Floor>;
type Answer<T> = Result<Json<T>, (StatusCode, String)>;

fn failed(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The routes the contract-exact scenario calls, on the database at `url`.
pub async fn routes(url: &str) -> anyhow::Result<Router> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(POOL_SIZE).build()?;
    pool.get().await?.batch_execute(SCHEMA).await?;
    let shared = Arc::new(Floor { pool });
    Ok(Router::new()
        .route("/api/v1/jobs", post(create_job))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/internal/v1/tasks/claim", post(claim))
        .route("/internal/v1/tasks/{id}/complete", post(complete))
        .with_state(shared))
}

/// A sweep of `i` from 1 to `max` (the only shape the scenario makes), one row per task.
async fn create_job(
    State(f): State<Shared>,
    Json(req): Json<CreateJobRequest>,
) -> Answer<CreateJobResponse> {
    let max = req
        .parameters
        .as_ref()
        .and_then(|p| p.get("i"))
        .and_then(|i| i.get("max"))
        .and_then(|m| m.as_i64())
        .ok_or((
            StatusCode::BAD_REQUEST,
            "the floor makes sweeps of i only".into(),
        ))?;
    let db = f.pool.get().await.map_err(failed)?;
    let made = db
        .execute(
            "INSERT INTO floor_tasks (id, payload)
             SELECT g, '{\"i\":' || g || '}' FROM generate_series(1, $1::bigint) g",
            &[&max],
        )
        .await
        .map_err(failed)?;
    db.batch_execute("ANALYZE floor_tasks")
        .await
        .map_err(failed)?;
    Ok(Json(CreateJobResponse {
        success: true,
        job_id: "floor".into(),
        total_tasks: made,
    }))
}

async fn job(State(f): State<Shared>, Path(id): Path<String>) -> Answer<Job> {
    let db = f.pool.get().await.map_err(failed)?;
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE state = 0), count(*) FILTER (WHERE state = 1),
                    count(*) FILTER (WHERE state = 2), count(*) FROM floor_tasks",
            &[],
        )
        .await
        .map_err(failed)?;
    let n = |i: usize| row.get::<_, i64>(i) as u64;
    let now = chrono::Utc::now().to_rfc3339();
    Ok(Json(Job {
        id,
        name: None,
        origin: None,
        status: if n(0) + n(1) == 0 {
            "COMPLETED"
        } else {
            "RUNNING"
        }
        .into(),
        total_tasks: n(3),
        completed_tasks: n(2),
        failed_tasks: 0,
        pending_tasks: n(0),
        running_tasks: n(1),
        cancelled_tasks: 0,
        priority: 0,
        max_attempts: 1,
        task_timeout_seconds: 300.0,
        parameters: vec!["i".into()],
        created_at: now.clone(),
        updated_at: now,
        started_at: None,
        finished_at: None,
        command: None,
        env: None,
        retry_on_failure: None,
    }))
}

async fn claim(State(f): State<Shared>, Json(req): Json<ClaimRequest>) -> Answer<ClaimResponse> {
    let db = f.pool.get().await.map_err(failed)?;
    let stmt = db.prepare_cached(CLAIM).await.map_err(failed)?;
    let rows = db
        .query(&stmt, &[&req.spot_id, &i64::from(req.max_tasks)])
        .await
        .map_err(failed)?;
    let tasks = rows
        .iter()
        .map(|r| ClaimedTask {
            id: r.get::<_, i64>(0).to_string(),
            payload: r.get(1),
            job_id: "floor".into(),
            attempt: r.get::<_, i32>(2) as u32,
            lease_expires_at: r.get(3),
        })
        .collect();
    Ok(Json(ClaimResponse { tasks }))
}

async fn complete(
    State(f): State<Shared>,
    Path(id): Path<String>,
    Json(req): Json<CompleteRequest>,
) -> Answer<ReportResponse> {
    let id: i64 = id
        .parse()
        .map_err(|_| (StatusCode::NOT_FOUND, "no such task".to_string()))?;
    let attempt = req.attempt.unwrap_or(1) as i32;
    let db = f.pool.get().await.map_err(failed)?;
    let stmt = db.prepare_cached(COMPLETE).await.map_err(failed)?;
    let changed = db
        .execute(&stmt, &[&id, &req.spot_id, &attempt])
        .await
        .map_err(failed)?;
    if changed == 0 {
        return Err((StatusCode::CONFLICT, "not held by this spot".into()));
    }
    Ok(Json(ReportResponse {
        success: true,
        message: None,
        will_retry: None,
    }))
}
