//! The node-registry contract's `orchion.v1.Orchestrator` over drover's node registry.
//!
//! It translates only: a contract node becomes a [`NamedNode`] that heartbeats (its id as the
//! client chose it, its capabilities kept as labels, the figures that parse as its capacity),
//! its calls become store calls, and store errors become the contract's status codes and words
//! ("node is required", "node.id is required", "node_id is required", "node not found").
//! Liveness is the registry's: a node silent past the spot timeout goes DOWN and is left out of
//! `ListNodes`, as the original forgets it; a heartbeat or a registration brings it back. A
//! submitted job is a drover job of one task (its payload in the task's), which any agent may
//! claim; its id is derived from the contract's `job_id`, so a second submit of the same job
//! finds it on any replica.

use crate::AppState;
use crate::contract_jobs::{self, SubmitError, Submitted};
use drover_core::{Capacity, NodeInfo, NodeStats, NodeStatus, Task, TaskStatus};
use drover_proto::orchion::v1 as pb;
use drover_store::{Liveness, NamedNode, NewJob, StoreError};
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

/// The label under which a node's contract capabilities are kept, as the strings it sent.
pub const CAPABILITIES_LABEL: &str = "capabilities";

pub struct Orchestrator {
    pub app: AppState,
}

/// A store error as a gRPC status: what the caller should do decides the code.
pub fn status_of(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { kind, .. } if kind == "spot" || kind == "node" => {
            Status::not_found("node not found")
        }
        StoreError::NotFound { kind, id } => Status::not_found(format!("{kind} {id} not found")),
        StoreError::LimitReached { limit, .. } => Status::resource_exhausted(format!(
            "the registry holds its limit of {limit} nodes; raise --max-spots or wait for DOWN \
             nodes to be forgotten"
        )),
        StoreError::Unavailable(m) => Status::unavailable(m),
        StoreError::OutcomeUnknown(m) => Status::unknown(format!(
            "the store's answer was lost; the change may or may not be written: {m}"
        )),
        e => Status::internal(e.to_string()),
    }
}

/// A contract `Capabilities` as labels: each field given, by its name.
fn capability_labels(c: &pb::Capabilities) -> Map<String, Value> {
    let fields = [
        ("cpu", &c.cpu),
        ("memory", &c.memory),
        ("os", &c.os),
        ("gpu_type", &c.gpu_type),
        ("gpu_vram_total", &c.gpu_vram_total),
        ("gpu_vram_available", &c.gpu_vram_available),
        ("power_usage", &c.power_usage),
        ("gpu_vram_used", &c.gpu_vram_used),
        ("gpu_temperature", &c.gpu_temperature),
        ("gpu_power_usage", &c.gpu_power_usage),
    ];
    let mut given = Map::new();
    for (name, value) in fields {
        if !value.is_empty() {
            given.insert(name.to_string(), Value::String(value.clone()));
        }
    }
    let mut labels = Map::new();
    labels.insert(CAPABILITIES_LABEL.into(), Value::Object(given));
    labels
}

/// The capabilities kept in `labels`, back as the contract's message.
fn capabilities_of(labels: &Map<String, Value>) -> pb::Capabilities {
    let given = labels.get(CAPABILITIES_LABEL).and_then(Value::as_object);
    let field = |name: &str| {
        given
            .and_then(|g| g.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    pb::Capabilities {
        cpu: field("cpu"),
        memory: field("memory"),
        os: field("os"),
        gpu_type: field("gpu_type"),
        gpu_vram_total: field("gpu_vram_total"),
        gpu_vram_available: field("gpu_vram_available"),
        power_usage: field("power_usage"),
        gpu_vram_used: field("gpu_vram_used"),
        gpu_temperature: field("gpu_temperature"),
        gpu_power_usage: field("gpu_power_usage"),
    }
}

/// The figures of the capabilities that read as a capacity: cores from `cpu` ("8", "8 cores"),
/// bytes from `memory` ("16GB", "16 GiB", "16384 MB", a bare number of bytes). A figure that
/// does not parse is kept as its label only.
fn capacity_of(c: &pb::Capabilities) -> Capacity {
    Capacity {
        cores: leading_number(&c.cpu).and_then(|(n, _)| (n >= 1.0).then_some(n as i64)),
        memory_bytes: bytes_of(&c.memory),
        ..Default::default()
    }
}

/// The number a text starts with, and what follows it (trimmed).
fn leading_number(text: &str) -> Option<(f64, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let n: f64 = text[..end].parse().ok()?;
    n.is_finite().then_some((n, text[end..].trim()))
}

fn bytes_of(text: &str) -> Option<i64> {
    let (n, unit) = leading_number(text)?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * scale;
    (bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// The nodes the contract lists (`ListNodes`, and `GET /api/nodes` for its dashboard): every
/// node of the registry that is not DOWN (the original forgets a silent node; drover keeps it
/// DOWN for `--spot-retention`), with the capabilities it declared.
pub async fn listed_nodes(app: &AppState) -> Result<Vec<pb::Node>, StoreError> {
    let nodes = app.store.nodes.list_nodes().await?;
    Ok((nodes.into_iter())
        .filter(|n| n.status != NodeStatus::Down)
        .map(|n| pb::Node {
            capabilities: Some(capabilities_of(&n.info.labels)),
            id: n.id,
            hostname: n.info.hostname.unwrap_or_default(),
            last_seen_unix: n.last_heartbeat.timestamp(),
            agent_address: n.info.address,
        })
        .collect())
}

/// The id a request names, refused with the contract's words when it is empty.
fn required_id<'a>(id: &'a str, what: &'static str) -> Result<&'a str, Status> {
    if id.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{what} is required")));
    }
    drover_core::rules::check_node_text(what, id)
        .map_err(|e| Status::invalid_argument(format!("{}: {}", e.field, e.message)))?;
    Ok(id)
}

#[tonic::async_trait]
impl pb::orchestrator_server::Orchestrator for Orchestrator {
    async fn register_node(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let node = (request.into_inner().node)
            .ok_or_else(|| Status::invalid_argument("node is required"))?;
        let id = required_id(&node.id, "node.id")?.to_string();
        let caps = node.capabilities.unwrap_or_default();
        let named = NamedNode {
            id,
            info: NodeInfo {
                address: node.agent_address,
                hostname: (!node.hostname.is_empty()).then_some(node.hostname),
                zone: None,
                labels: capability_labels(&caps),
                capacity: capacity_of(&caps),
            },
            capacity_gb: None,
            liveness: Liveness::Heartbeats,
            silence_timeout: None,
        };
        let (app, now) = (&self.app, self.app.clock.now());
        (app.store.nodes)
            .put_node(named, app.config.max_spots, now)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RegisterNodeResponse {}))
    }

    async fn update_node(
        &self,
        request: Request<pb::UpdateNodeRequest>,
    ) -> Result<Response<pb::UpdateNodeResponse>, Status> {
        let r = request.into_inner();
        let id = required_id(&r.node_id, "node_id")?;
        let caps = r.capabilities.unwrap_or_default();
        let app = &self.app;
        (app.store.nodes)
            .update_node(
                id,
                capability_labels(&caps),
                capacity_of(&caps),
                app.clock.now(),
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::UpdateNodeResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let id = required_id(&r.node_id, "node_id")?;
        let app = &self.app;
        (app.store.nodes)
            .heartbeat(id, NodeStats::default(), app.clock.now())
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    async fn list_nodes(
        &self,
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = listed_nodes(&self.app).await.map_err(status_of)?;
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let r = request.into_inner();
        let job_id = required_id(&r.job_id, "job_id")?.to_string();
        let payload = job_payload(&job_id, r.job_type(), &r.payload);
        let app = &self.app;
        let job = NewJob {
            max_attempts: app.config.default_max_attempts,
            task_timeout: app.config.default_task_timeout,
            ..contract_jobs::identity(NAMESPACE, &job_id)
        };
        let status = match contract_jobs::submit(app, job, payload, None).await {
            Ok(Submitted::Created) => pb::JobStatus::Pending,
            Ok(Submitted::Existing(task)) => job_status(&task).0,
            Err(SubmitError::Conflict) => {
                return Err(Status::already_exists(
                    "a different job was already submitted with this job_id",
                ));
            }
            Err(SubmitError::Invalid(m)) => return Err(Status::invalid_argument(m)),
            Err(SubmitError::Store(e)) => return Err(status_of(e)),
        };
        Ok(Response::new(pb::SubmitJobResponse {
            job_id,
            status: status.into(),
        }))
    }

    async fn get_job_status(
        &self,
        request: Request<pb::GetJobStatusRequest>,
    ) -> Result<Response<pb::GetJobStatusResponse>, Status> {
        let job_id = required_id(&request.get_ref().job_id, "job_id")?.to_string();
        let task = match self.task_of(&drover_job_id(&job_id)).await? {
            Some(t) => t,
            None => return Err(Status::not_found("job not found")),
        };
        let (status, error_message) = job_status(&task);
        Ok(Response::new(pb::GetJobStatusResponse {
            job_id,
            status: status.into(),
            assigned_node: task.assigned_to.clone().unwrap_or_default(),
            error_message,
            result: task.result.result_json.unwrap_or_default().into_bytes(),
        }))
    }
}

impl Orchestrator {
    /// The one task of the drover job `id`, or `None` when there is no such job.
    async fn task_of(&self, id: &str) -> Result<Option<Task>, Status> {
        contract_jobs::task_of(&self.app, id)
            .await
            .map_err(status_of)
    }
}

/// The drover job that stands for the contract's job `job_id` (`contract_jobs`).
/// The namespace of this contract's job ids, and their jobs' origin.
const NAMESPACE: &str = "orchion.v1";

fn drover_job_id(job_id: &str) -> String {
    contract_jobs::drover_job_id(NAMESPACE, job_id)
}

/// The payload of the task that carries a contract job: its id, its type's name and its
/// payload bytes in base64 (agents read task payloads as JSON).
fn job_payload(job_id: &str, job_type: pb::JobType, payload: &[u8]) -> Map<String, Value> {
    use base64::Engine;
    let mut p = Map::new();
    p.insert("job_id".into(), Value::String(job_id.into()));
    p.insert(
        "job_type".into(),
        Value::String(job_type.as_str_name().into()),
    );
    p.insert(
        "payload_base64".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(payload)),
    );
    p
}

/// The contract's status of a job from its task's: NEW is PENDING, RUNNING is RUNNING (drover
/// hands a task to a node and starts it in one step, so ASSIGNED is never seen), DONE is
/// COMPLETED, FAILED and CANCELLED are FAILED with why.
fn job_status(task: &Task) -> (pb::JobStatus, String) {
    match task.status {
        TaskStatus::New => (pb::JobStatus::Pending, String::new()),
        TaskStatus::Running => (pb::JobStatus::Running, String::new()),
        TaskStatus::Done => (pb::JobStatus::Completed, String::new()),
        TaskStatus::Failed => (
            pb::JobStatus::Failed,
            task.last_error.clone().unwrap_or_default(),
        ),
        TaskStatus::Cancelled => (pb::JobStatus::Failed, "cancelled".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_read_as_a_capacity_where_they_can() {
        let caps = |cpu: &str, memory: &str| pb::Capabilities {
            cpu: cpu.into(),
            memory: memory.into(),
            ..Default::default()
        };
        let c = capacity_of(&caps("8", "16GB"));
        assert_eq!((c.cores, c.memory_bytes), (Some(8), Some(16_000_000_000)));
        let c = capacity_of(&caps("12 cores", "16 GiB"));
        assert_eq!((c.cores, c.memory_bytes), (Some(12), Some(17_179_869_184)));
        let c = capacity_of(&caps("Intel Xeon", "lots"));
        assert_eq!((c.cores, c.memory_bytes), (None, None));
        let c = capacity_of(&caps("", "1024"));
        assert_eq!((c.cores, c.memory_bytes), (None, Some(1024)));
    }

    #[test]
    fn capabilities_come_back_as_they_were_sent() {
        let sent = pb::Capabilities {
            cpu: "8".into(),
            os: "linux".into(),
            gpu_temperature: "61C".into(),
            ..Default::default()
        };
        assert_eq!(capabilities_of(&capability_labels(&sent)), sent);
        assert_eq!(
            capabilities_of(&Map::new()),
            pb::Capabilities::default(),
            "a node of another surface has none"
        );
    }
}
