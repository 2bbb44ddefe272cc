//! Wire types of the placement-coordinator contract (`/register`, `/nodes`, `/node/{id}`,
//! `/placement/{hash}`, `/schedule`, `/scheduler/config`, `/object/*`, `/replica/*`,
//! `/health`, `/system/info`): its field names (snake_case), its defaults, and its error
//! shape `{"error": ..., ...}`. drover's additions are extra fields the contract's clients
//! ignore.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

// The `#[schema(...)]` bounds below document the core's rules (`drover_core::rules`) for the
// OpenAPI document; the server checks requests by those rules, never by these.

/// `POST /register`. The contract requires `id`, `zone` and `addr`; `capacity_gb` defaults to
/// 100. `meta` is drover's addition (the original always stores `{}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::RegisterNode)]
pub struct RegisterNode {
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub id: String,
    #[schema(max_length = 253)]
    pub zone: String,
    #[schema(max_length = 253)]
    pub addr: String,
    #[serde(default)]
    #[schema(maximum = 65536)]
    pub capacity_gb: Option<u64>,
    #[serde(default)]
    pub meta: Option<Map<String, Value>>,
}

/// A node as `GET /nodes` and `GET /node/{id}` show it. `status` and `last_seen` are drover's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::NodeInfo)]
pub struct NodeInfo {
    pub id: String,
    pub zone: String,
    pub addr: String,
    pub capacity_gb: u64,
    pub meta: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

/// A node's live stats: `POST /node/{id}/stats` (`cpu_free` and `ram_free_mb` required;
/// `gpu_free` defaults to 0, `latency_ms` to 10, `io_pressure` to 0), and inside
/// `GET /node/{id}/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::NodeStats)]
pub struct NodeStats {
    pub cpu_free: f64,
    pub ram_free_mb: f64,
    #[serde(default)]
    pub gpu_free: f64,
    #[serde(default = "default_latency_ms")]
    pub latency_ms: f64,
    #[serde(default)]
    pub io_pressure: f64,
}

fn default_latency_ms() -> f64 {
    10.0
}

/// `GET /node/{id}/stats`: `found` says whether the node has reported stats; `stats` is left
/// out when it has not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::NodeStatsAnswer)]
pub struct NodeStatsAnswer {
    pub node_id: String,
    pub found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<NodeStats>,
}

/// `POST /schedule`: every requirement optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::Workload)]
pub struct Workload {
    #[serde(default)]
    pub cpu_req: Option<f64>,
    #[serde(default)]
    pub ram_req_mb: Option<f64>,
    #[serde(default)]
    pub gpu_req: Option<f64>,
    #[serde(default)]
    pub max_latency_ms: Option<f64>,
    #[serde(default)]
    pub io_tolerance: Option<f64>,
}

/// `POST /schedule`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::Scheduled)]
pub struct Scheduled {
    pub node_id: String,
}

/// `POST /scheduler/config`: a weight left out takes the original system's fill (1, 1, 0.5,
/// 0.8, 0.6), not the defaults; the surface fills it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::SchedulerConfig)]
pub struct SchedulerConfig {
    #[serde(default)]
    pub w_cpu: Option<f64>,
    #[serde(default)]
    pub w_ram: Option<f64>,
    #[serde(default)]
    pub w_gpu: Option<f64>,
    #[serde(default)]
    pub w_latency: Option<f64>,
    #[serde(default)]
    pub w_io: Option<f64>,
}

/// The weights in force, as `POST` and `GET /scheduler/config` show them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::Weights)]
pub struct Weights {
    pub w_cpu: f64,
    pub w_ram: f64,
    pub w_gpu: f64,
    pub w_latency: f64,
    pub w_io: f64,
}

/// `POST /scheduler/config`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::ConfigUpdated)]
pub struct ConfigUpdated {
    pub ok: bool,
    pub message: String,
    pub config: Weights,
}

/// `POST /object/register`. `rf` (default 3) is drover's addition: how many replicas the object
/// should have, which placement targets and repair keep up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::RegisterObject)]
pub struct RegisterObject {
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub hash: String,
    pub size: u64,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 16)]
    pub rf: Option<u32>,
}

/// `GET /object/{hash}`: `replicas` are the nodes holding a good copy (the contract's list);
/// the rest is drover's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::ObjectInfo)]
pub struct ObjectInfo {
    pub hash: String,
    pub size: u64,
    pub replicas: Vec<String>,
    pub rf: u32,
    /// Nodes assigned a copy (by placement at registration, or by repair) not yet marked healed.
    pub pending: Vec<String>,
    /// Nodes that reported their copy lost.
    pub missing: Vec<String>,
}

/// `POST /replica/mark_missing` and `/replica/mark_healed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::ReplicaChange)]
pub struct ReplicaChange {
    pub hash: String,
    pub node_id: String,
}

/// `{"ok": true}`, with the node's id where the contract adds it (`POST /node/{id}/stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::Ok)]
pub struct Ok {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// `GET /health`. The contract's `da_*` fields speak of its data-availability layer: drover
/// has no external journal configured, and says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::Health)]
pub struct Health {
    pub status: String,
    pub da_available: bool,
    pub da_health: String,
}

/// `GET /system/info`. `repair` is drover's: objects under their replication factor and
/// replacement copies awaited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::SystemInfo)]
pub struct SystemInfo {
    pub version: String,
    pub node_count: usize,
    pub da_status: String,
    pub routing_state: String,
    pub fallback_active: bool,
    pub repair: RepairSummary,
}

/// How replica repair stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::RepairSummary)]
pub struct RepairSummary {
    pub under_replicated: usize,
    pub pending_repairs: usize,
}

/// `GET /repair`: each object with fewer healthy replicas than its factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::RepairReport)]
pub struct RepairReport {
    pub under_replicated: Vec<UnderReplicated>,
    pub pending_repairs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::UnderReplicated)]
pub struct UnderReplicated {
    pub hash: String,
    pub rf: u32,
    pub healthy: usize,
    pub pending: Vec<String>,
}

/// The contract's error body: `{"error": message}`, plus the fields some routes add (the node's
/// id) and drover's machine-readable `code` and, for a schedule that fits nowhere,
/// `ruled_out` (how many nodes each requirement excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::ErrorBody)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruled_out: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
}

/// `POST /da/post`: a blob for the data-availability sink, as hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::DaPost)]
pub struct DaPost {
    pub data_hex: String,
}

/// `POST /da/post`'s answer: `{"success": true, "commitment", "height"}`, or
/// `{"success": false, "error"}` (the contract's shape for the `/da/*` routes), with drover's
/// machine-readable `code` beside the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::DaPosted)]
pub struct DaPosted {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `GET /da/routing`. `current_state` is the sink blobs go to: `primary`, `secondary` or
/// `emergency` (the original's words), or drover's `unavailable` when none will take one (the
/// original has no word for that and keeps posting to the primary). The `*_healthy` flags are
/// each sink's last check or post (false for a sink not configured); `pending_reconcile` counts
/// the blobs on a fallback sink not yet copied to the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::DaRouting)]
pub struct DaRouting {
    pub current_state: String,
    pub primary_healthy: bool,
    pub secondary_healthy: bool,
    pub emergency_healthy: bool,
    pub fallback_active: bool,
    pub pending_reconcile: u64,
}

/// `GET /fallback/status`. `current_status` is one of `primary_healthy`, `primary_degraded`,
/// `fallback_secondary`, `fallback_emergency`, `unavailable`. `fallback_reason` and
/// `last_fallback_at` (Unix ms of the start of the last fallback period, kept after recovery)
/// are written as `null` when absent, as the contract shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::FallbackStatus)]
pub struct FallbackStatus {
    pub current_status: String,
    pub fallback_active: bool,
    pub fallback_reason: Option<String>,
    pub pending_reconcile_count: u64,
    pub last_fallback_at: Option<i64>,
}

/// One entry of `GET /fallback/pending`: a blob on a fallback sink waiting to be copied to the
/// primary. `source_da` and `target_da` are sink names (`secondary`, `emergency`, `primary`);
/// `stored_at` is Unix ms; `last_error` is `null` until an attempt fails. No blob data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::PendingBlob)]
pub struct PendingBlob {
    pub blob_id: String,
    pub source_da: String,
    pub target_da: String,
    pub stored_at: i64,
    pub retry_count: u32,
    pub last_error: Option<String>,
}

/// `POST /fallback/reconcile`'s answer: one pass over the pending blobs. `success` is true when
/// no blob failed; `errors` says which did and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::ReconcileReport)]
pub struct ReconcileReport {
    pub success: bool,
    pub blobs_processed: u64,
    pub blobs_reconciled: u64,
    pub blobs_failed: u64,
    pub duration_ms: u64,
    pub errors: Vec<String>,
}

/// `POST /fallback/reconcile` when the pass could not run at all (the original answers 500
/// with this when nothing was processed and there is an error, e.g. the primary is down):
/// `error` is `reconciliation_failed`, `message` the first error. `code` is drover's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::ReconcileFailed)]
pub struct ReconcileFailed {
    pub error: String,
    pub message: String,
    pub report: ReconcileReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `GET /fallback/consistency`: the journal replayed (from its snapshot, if compacted) and
/// compared with the live tables; `items_verified` counts the items compared. `details` are
/// sentences, one per inconsistency, naming the item and both values; `verified_at` is Unix ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::ConsistencyReport)]
pub struct ConsistencyReport {
    pub is_consistent: bool,
    pub items_verified: u64,
    pub inconsistencies_found: u64,
    pub details: Vec<String>,
    pub verified_at: i64,
}

/// `GET /da/metrics`: counters of the sink in use. `available` is false (and every counter 0)
/// when that sink keeps none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = placement::DaMetrics)]
pub struct DaMetrics {
    pub available: bool,
    pub post_count: u64,
    pub get_count: u64,
    pub error_count: u64,
    pub health_check_count: u64,
    pub retry_count: u64,
    pub avg_post_latency_us: u64,
    pub avg_get_latency_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fallback_status_writes_absent_values_as_null() {
        let status = FallbackStatus {
            current_status: "primary_healthy".into(),
            fallback_active: false,
            fallback_reason: None,
            pending_reconcile_count: 0,
            last_fallback_at: None,
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(
            value,
            json!({
                "current_status": "primary_healthy",
                "fallback_active": false,
                "fallback_reason": null,
                "pending_reconcile_count": 0,
                "last_fallback_at": null
            })
        );
        assert_eq!(
            serde_json::from_value::<FallbackStatus>(value).unwrap(),
            status
        );
    }

    #[test]
    fn contract_examples_read_back() {
        let pending: Vec<PendingBlob> = serde_json::from_value(json!([{
            "blob_id": "abc123", "source_da": "secondary", "target_da": "primary",
            "stored_at": 1704067200000i64, "retry_count": 0, "last_error": null
        }]))
        .unwrap();
        assert_eq!(pending[0].stored_at, 1_704_067_200_000);
        assert_eq!(
            serde_json::to_value(&pending[0]).unwrap()["last_error"],
            Value::Null
        );
        let routing: DaRouting = serde_json::from_value(json!({
            "current_state": "primary", "primary_healthy": true, "secondary_healthy": false,
            "emergency_healthy": false, "fallback_active": false, "pending_reconcile": 0
        }))
        .unwrap();
        assert_eq!(routing.current_state, "primary");
        let consistency: ConsistencyReport = serde_json::from_value(json!({
            "is_consistent": true, "items_verified": 100, "inconsistencies_found": 0,
            "details": [], "verified_at": 1704067200000i64
        }))
        .unwrap();
        assert!(consistency.is_consistent && consistency.details.is_empty());
    }
}
