//! Wire types of drover's native HTTP API: `/api/v1/*` for clients and `/internal/v1/*` for
//! agents, a superset of the batch-coordinator contract.
//!
//! These structs are the JSON on the wire and nothing else: camelCase names, contract field
//! names, optional extensions. They carry no behaviour; the server translates them into domain
//! calls and the client crate sends and receives them. Request types of the contract's agent
//! endpoints ignore unknown fields (agents in the field may send more); the job request refuses
//! them, since a misspelt dimension would otherwise silently shrink a sweep.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

// The `#[schema(...)]` bounds below document the core's rules (`drover_core::rules`) for the
// OpenAPI document; the server checks requests by those rules, never by these.

/// Every error answer: the contract's `success`/`error` plus a stable machine-readable `code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub success: bool,
    pub error: String,
    pub code: String,
}

/// A plain success, e.g. the heartbeat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SuccessBody {
    pub success: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// `connected` or `disconnected`.
    pub database: String,
    pub active_spots: u64,
    pub pending_tasks: u64,
    pub running_tasks: u64,
    /// Why the server is unhealthy (drover's extension; absent when healthy): `STORE_UNAVAILABLE`
    /// (the store cannot take a write) or `LOW_DISK_SPACE` (free space under `--min-free-disk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What went wrong, in words (absent when healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Spot {
    pub id: String,
    pub ip_address: String,
    /// UP, DRAINING or DOWN.
    pub status: String,
    pub cpu_load: Option<f64>,
    pub running_tasks: i64,
    pub total_cores: Option<i64>,
    pub last_heartbeat: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i64>,
    pub registered_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpotsResponse {
    pub spots: Vec<Spot>,
    /// Present when more spots follow: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/jobs`. The four named dimensions of the contract, the general `parameters`
/// form, or an explicit `tasks` list. Each dimension is a list of values or `{min, max, step}`
/// (inclusive; `step` defaults to 1); the translation into the domain checks them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJobRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jar_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<Value>,
    /// Further swept parameters by name, in order (first varies slowest after the named four).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Explicit task payloads, instead of swept parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<Map<String, Value>>>,
    /// Further fields copied into every task's payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31536000)]
    pub task_timeout_seconds: Option<u64>,
    /// What `drover agent` runs per task: an argv array with `{name}` placeholders filled from
    /// the task's payload (and `taskId`, `jobId`, `attempt`, `workDir`). No shell is involved.
    /// Jobs with `jarPath` and `mainClass` get `java -cp {jarPath} {mainClass} --<p> {<p>}...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables for the command; values are templates like the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Whether a failed run (non-zero exit, timeout, crash) is retried; defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on_failure: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateJobResponse {
    pub success: bool,
    pub job_id: String,
    pub total_tasks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Which contract's clients made it under their own id (`distriqueue`, `orchion.v1`);
    /// absent for jobs of this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub status: String,
    pub total_tasks: u64,
    pub completed_tasks: u64,
    pub failed_tasks: u64,
    pub pending_tasks: u64,
    pub running_tasks: u64,
    pub cancelled_tasks: u64,
    pub priority: i64,
    pub max_attempts: u32,
    pub task_timeout_seconds: f64,
    pub parameters: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    /// When a task of the job was first claimed.
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// What agents run per task; absent for jobs served by the user's own workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on_failure: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    pub job_id: String,
    pub status: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub payload: Map<String, Value>,
    #[serde(default)]
    pub assigned_to: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub lease_expires_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub runtime_ms: Option<i64>,
    #[serde(default)]
    pub iter: Option<i64>,
    #[serde(default)]
    pub fopt: Option<f64>,
    #[serde(default)]
    pub result_json: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The tail of what a successful run printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskList {
    pub job_id: String,
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// One row of `GET /api/v1/jobs/{id}/results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    pub task_id: String,
    #[serde(default)]
    pub algorithm: Option<Value>,
    #[serde(default)]
    pub iterations: Option<Value>,
    #[serde(default)]
    pub fopt: Option<f64>,
    #[serde(default)]
    pub runtime_ms: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub iter: Option<i64>,
    #[serde(default)]
    pub result_json: Option<String>,
    #[serde(default)]
    pub spot_id: Option<String>,
    pub attempt: u32,
    /// The task's payload: its parameter values and the job's shared fields.
    pub payload: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultsResponse {
    pub job_id: String,
    /// DONE tasks of the whole job (not just this page).
    pub total_completed: u64,
    pub results: Vec<TaskResult>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelloRequest {
    /// An IP address or a host name (dot-separated labels of letters, digits, `-` and `_`).
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^([A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$"
    )]
    pub ip_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 253)]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 253)]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub total_cores: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub memory_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub gpus: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub disk_bytes: Option<i64>,
    /// Asks for a spot secret (`spotSecret` in the answer), which every later call for the
    /// spot must then carry in `X-Spot-Secret`. drover's agent always asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_secret: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelloResponse {
    pub spot_id: String,
    /// How often the server expects heartbeats.
    #[serde(default)]
    pub heartbeat_interval_seconds: Option<f64>,
    /// The spot's own secret, given once: send it in `X-Spot-Secret` on every call for this
    /// spot. Present when asked for (`issueSecret`) or required by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_secret: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    pub spot_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// An IP address or a host name (dot-separated labels of letters, digits, `-` and `_`).
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^([A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$"
    )]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub cpu_load: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub running_tasks: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub total_cores: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub free_memory_bytes: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    pub spot_id: String,
    #[schema(minimum = 1, maximum = 1000)]
    pub max_tasks: u32,
    /// drover's extension: when nothing is claimable, wait up to this many milliseconds
    /// (at most 30000) for work to appear before answering. Absent or 0: answer at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// drover's extension: how many tasks the node runs now, so that among waiting claims the
    /// least loaded looks first when work appears. Absent: counted as none running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_tasks: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedTask {
    pub id: String,
    /// The payload as a JSON string, as the contract shows it.
    pub payload: String,
    pub job_id: String,
    /// Send it back with the report to be fenced by attempt, not only by spot.
    pub attempt: u32,
    pub lease_expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    pub tasks: Vec<ClaimedTask>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    pub spot_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub runtime_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub iter: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fopt: Option<f64>,
    /// A JSON document as a string (the contract's form); an object is accepted too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_json: Option<Value>,
    /// The tail of what the run printed, kept with the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailRequest {
    pub spot_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Defaults to true: a failure is retried unless the worker says it is permanent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// The answer to complete and fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will_retry: Option<bool>,
}

/// `POST /internal/v1/tasks/report`: many completes and fails of one spot in one request and one
/// transaction. Each report is decided on its own, exactly as its per-task route would decide it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchReportRequest {
    pub spot_id: String,
    #[schema(min_items = 1, max_items = 1000)]
    pub reports: Vec<BatchReport>,
}

/// What a report says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportVerb {
    Complete,
    Fail,
}

/// One report of a batch: the per-task routes' fields, with the task and the verb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    pub task_id: String,
    pub outcome: ReportVerb,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub runtime_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub iter: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fopt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retriable: Option<bool>,
}

impl BatchReport {
    /// A report of `outcome` for `task_id` with every optional field left out.
    pub fn new(task_id: impl Into<String>, outcome: ReportVerb) -> BatchReport {
        BatchReport {
            task_id: task_id.into(),
            outcome,
            attempt: None,
            runtime_ms: None,
            iter: None,
            fopt: None,
            result_json: None,
            output: None,
            error: None,
            retriable: None,
        }
    }
}

/// The answer to a batch: one result per report, in the order sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchReportResponse {
    pub results: Vec<BatchReportResult>,
}

/// One report's answer: the status its per-task route would have answered, with that route's
/// body (`success`, `message`, `willRetry` on success; `success: false`, `error`, `code` when
/// refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchReportResult {
    pub task_id: String,
    pub status: u16,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will_retry: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `POST /internal/v1/tasks/exchange`: a spot's reports and its next claim in one request. The
/// reports are applied first, exactly as `POST /internal/v1/tasks/report` applies them, and are
/// durable before the claim (and any wait for work); then tasks are claimed exactly as
/// `POST /internal/v1/tasks/claim` claims them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeRequest {
    pub spot_id: String,
    /// 0 to 1000 reports.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub reports: Vec<BatchReport>,
    /// 0 to 1000 tasks to claim (0: only report).
    #[schema(maximum = 1000)]
    pub max_tasks: u32,
    /// As on the claim route: wait up to this many milliseconds for work when none is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// As on the claim route: how many tasks the node runs now, so that among waiting claims
    /// the least loaded looks first. Absent: counted as none running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_tasks: Option<u32>,
}

/// The answer to an exchange: one result per report, in the order sent (as the batch report
/// route answers them), and the tasks claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExchangeResponse {
    pub results: Vec<BatchReportResult>,
    pub tasks: Vec<ClaimedTask>,
}

/// One runner in `GET /api/v1/runners`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerInfo {
    pub session_id: String,
    /// `docker` or `process`.
    pub driver: String,
    /// STARTING or RUNNING.
    pub status: String,
    /// Container id or process id.
    #[serde(default)]
    pub instance: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The shared runner of reuse mode.
    pub singleton: bool,
    pub created_at: String,
    pub age_seconds: f64,
    pub last_heartbeat: String,
    pub idle_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerList {
    pub runners: Vec<RunnerInfo>,
    /// Present when more runners follow: pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub mod placement;
pub mod priority;
pub mod registry;
pub mod session_runners;

/// How one background worker is doing (`GET /api/v1/workers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    pub name: String,
    /// How often it runs; absent when it is not scheduled.
    pub interval_seconds: Option<f64>,
    pub runs: u64,
    pub failures: u64,
    /// When the last step started.
    pub last_run_at: Option<String>,
    pub last_duration_ms: Option<f64>,
    /// The last step's error, absent when it succeeded.
    pub last_error: Option<String>,
    /// What the last successful step did (`tasks_retried`, `spots_down`, ...).
    pub last_counts: BTreeMap<String, u64>,
    /// What every step so far did, summed.
    pub totals: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// This replica and the cluster it belongs to (`GET /api/v1/cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// The replica that answered.
    pub replica_id: String,
    /// `leader` (it runs the background workers) or `follower`.
    pub role: String,
    /// The replica that holds the lease, absent while nobody does.
    pub leader: Option<String>,
    /// The lease's epoch: grows by one each time the lease changes hands.
    pub epoch: u64,
    /// When the lease runs out unless its holder renews it; absent while nobody holds it.
    pub lease_expires_at: Option<String>,
    /// How long a lease lasts without renewal.
    pub lease_ttl_seconds: f64,
    /// When the answering replica started leading, if it leads.
    pub leading_since: Option<String>,
    /// Replicas heard from within the last lease TTL, by id.
    pub members: Vec<ClusterMember>,
    /// The answering replica's drover version (drover's extension; absent from servers older
    /// than the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A replica seen recently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub replica_id: String,
    /// Where it serves, as it announced.
    pub address: String,
    /// Whether it holds the lease.
    pub leader: bool,
    /// When it first said it was there.
    pub first_seen: String,
    pub last_seen: String,
}

/// A page of the event journal (`GET /api/v1/journal`): the entries after the one asked for,
/// oldest first, and the journal's head (the last entry's number, 0 while it is empty). An entry
/// is `drover_core::journal::Entry` in its own stable encoding (`seq`, `at`, `kind`,
/// `changes`), which this crate does not interpret: `E` is that type for a reader that decodes
/// it, a JSON value otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct JournalPage<E = Value> {
    /// Each entry an object: `seq`, `at`, `kind`, `changes`.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<E>,
    pub head: u64,
}

/// The journal's consistency check (`GET /api/v1/journal/verify`): the journal replayed from its
/// first entry to `head` and compared with the live tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalVerification {
    /// No inconsistency was found.
    pub consistent: bool,
    /// The items compared (nodes, jobs, tasks that left their job's initial state, runners,
    /// objects, replicas, ...).
    pub items_verified: u64,
    /// How many inconsistencies were found: the length of `details`.
    pub inconsistencies: u64,
    /// One sentence per inconsistency, naming the entry or the item and both values.
    pub details: Vec<String>,
    /// The entry the check replayed up to, read together with the live tables.
    pub head: u64,
    pub verified_at: String,
}
