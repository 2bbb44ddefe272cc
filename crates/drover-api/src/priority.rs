//! Wire types of the priority-queue contract (`/api/jobs/*`, `/api/workers/heartbeat`,
//! `/api/health`, `/api/raft/status`, `/api/cluster/status`, `/api/metrics`) and of the
//! messages it puts on the broker: snake_case bodies (`workerId`, `jobId`, `errorMessage` and
//! `currentLoad` also read, as its workers send them), times in milliseconds since the epoch.
//!
//! Request fields whose type the contract leaves loose (`type`, `priority`, `payload`, ...) are
//! read as JSON values, so that the surface can say exactly what is wrong with one instead of
//! a parser's generic message.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

// The `#[schema(...)]` types and bounds below document what the priority router accepts (it
// reads loose JSON values to say exactly what is wrong with one); the router checks requests,
// never these.

/// `POST /api/jobs/register`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[schema(as = priority::RegisterJob)]
pub struct RegisterJob {
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 200)]
    pub id: Option<Value>,
    #[serde(default, rename = "type")]
    #[schema(value_type = String, required = true, min_length = 1)]
    pub job_type: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub priority: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, maximum = 99)]
    pub max_retries: Option<Value>,
    /// Seconds a worker may run the job before it is taken back.
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 31536000)]
    pub execution_timeout: Option<Value>,
}

/// `PUT /api/jobs/{id}/status` and `POST /api/jobs/status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[schema(as = priority::StatusUpdate)]
pub struct StatusUpdate {
    /// The job, when the path does not name it.
    #[serde(default, alias = "jobId")]
    pub id: Option<String>,
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub status: Option<String>,
    #[serde(default, rename = "workerId", alias = "worker_id")]
    #[schema(value_type = String, required = true, min_length = 1)]
    pub worker_id: Option<String>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default, rename = "errorMessage", alias = "error_message")]
    pub error_message: Option<String>,
    #[serde(default)]
    pub progress: Option<Value>,
    #[serde(default)]
    pub timestamp: Option<Value>,
}

/// `POST /api/workers/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[schema(as = priority::WorkerHeartbeat)]
pub struct WorkerHeartbeat {
    #[serde(default, alias = "workerId")]
    #[schema(value_type = String, required = true, min_length = 1)]
    pub worker_id: Option<String>,
    #[serde(default, alias = "workerType")]
    pub worker_type: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    pub capacity: Option<Value>,
    #[serde(default, alias = "currentLoad")]
    #[schema(value_type = Option<u32>, maximum = 1000000)]
    pub current_load: Option<Value>,
}

/// The answers that are one word: `{"status": "accepted", "job_id": ...}` and the like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::StatusAnswer)]
pub struct StatusAnswer {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// An error: the contract's `{"error": code}`, with a message saying what to fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::ErrorBody)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One job of `GET /api/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::JobView)]
pub struct JobView {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub status: String,
    pub priority: i64,
    /// `"none"` until a worker took it.
    pub worker_id: String,
    pub result: Value,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// drover's additions: the class, the attempts made and the last error.
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub retry_count: u32,
    #[serde(default)]
    pub error_message: Option<String>,
}

/// `GET /api/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::JobList)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub count: usize,
    /// Where the next page starts (`?cursor=`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::Health)]
pub struct Health {
    pub status: String,
    pub timestamp: i64,
    pub node: String,
}

/// `GET /api/raft/status`: drover's replica election in the contract's words (the lease's
/// epoch is the term).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::RaftStatus)]
pub struct RaftStatus {
    pub role: String,
    pub term: u64,
    pub leader: Option<String>,
}

/// One replica in `GET /api/cluster/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::Member)]
pub struct Member {
    pub node: String,
    pub address: String,
    pub role: String,
    /// When it last renewed its membership, in milliseconds.
    pub last_contact: i64,
}

/// `GET /api/cluster/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::ClusterStatus)]
pub struct ClusterStatus {
    pub node: String,
    pub cluster: Vec<Member>,
    pub raft: RaftStatus,
    pub timestamp: i64,
}

/// `GET /api/metrics`: jobs by status and by class, queue depth by class (jobs waiting for a
/// worker), jobs finished in the last minute, workers by status, and what is not yet on the
/// broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::Metrics)]
pub struct Metrics {
    pub jobs: BTreeMap<String, u64>,
    /// Jobs by class (`high`, `medium`, `low`), whatever their status.
    pub classes: BTreeMap<String, u64>,
    pub queues: BTreeMap<String, u64>,
    /// Jobs finished (completed or failed for good) in the last minute.
    pub finished_last_minute: u64,
    pub workers: BTreeMap<String, u64>,
    /// Jobs of each queue committed but not yet confirmed by the broker (RabbitMQ mode).
    pub unpublished: BTreeMap<String, u64>,
    pub dispatch: String,
    pub timestamp: i64,
}

/// A job as it is published to its queue: the contract's job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::JobMessage)]
pub struct JobMessage {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub priority: i64,
    pub status: String,
    pub worker_id: String,
    pub payload: Value,
    pub result: Value,
    pub error_message: Option<String>,
    pub retry_count: u32,
    pub max_retries: u32,
    pub execution_timeout: u64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub metadata: Map<String, Value>,
}

/// A status change as it is published to `status.exchange` (routing key `status.update`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = priority::StatusEvent)]
pub struct StatusEvent {
    #[serde(rename = "jobId")]
    pub job_id: String,
    /// Upper case: `RUNNING`, `COMPLETED`, ...
    #[serde(rename = "jobStatus")]
    pub job_status: String,
    #[serde(rename = "workerId")]
    pub worker_id: String,
    pub result: Value,
}
