//! `drover status`: the overview of one server: its version and health, the leader and the
//! answering replica, the nodes by status, the jobs by status, and the tasks waiting and
//! running.
//!
//! It reads only the existing routes (`/api/v1/cluster`, `/api/v1/health`, `/api/v1/spots`,
//! `/api/v1/jobs?status=`) and counts what they list; every status it shows is the server's
//! word. An unhealthy server is shown as such, not treated as a failure of the command: seeing
//! it is what the command is for.

use super::output::{self, Format};
use super::{Connection, Failure, Outcome};
use clap::Args;
use drover_api::{ClusterInfo, HealthResponse};
use drover_client::{Client, ClientError, ListOptions};
use serde::Serialize;
use std::collections::BTreeMap;

/// The job statuses counted, in the order a job passes through them.
const JOB_STATUSES: [&str; 5] = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
/// The most jobs of one status counted; beyond it the count is shown as "N+" (counting a
/// large history page by page would make the overview slow).
const COUNT_AT_MOST: u64 = 10_000;
/// The largest page the server serves.
const PAGE: u32 = 1000;

/// The options of `drover status`; its help text is on `ClientCommand::Status`.
#[derive(Args)]
pub struct StatusArgs {
    /// Output format: table or json.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(flatten)]
    connection: Connection,
}

/// What `drover status --output json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// The URL that answered.
    pub server: String,
    /// This client's version.
    pub client_version: String,
    /// The server's version; absent from servers older than the field.
    pub server_version: Option<String>,
    /// `healthy`, or `unhealthy` with `healthCode` and `healthError` saying why.
    pub health: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_error: Option<String>,
    pub replica_id: String,
    pub role: String,
    pub leader: Option<String>,
    pub epoch: u64,
    /// Other replicas heard from within one lease TTL, besides the answering one.
    pub replicas: Vec<String>,
    /// Spots by status (UP, DRAINING, DOWN), only the statuses some spot has.
    pub nodes: BTreeMap<String, u64>,
    /// Jobs by status, every status; `jobsCapped` names those with more than counted.
    pub jobs: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs_capped: Vec<String>,
    /// Tasks waiting to be claimed and running, as the server's health check counts them
    /// (absent while the server is unhealthy).
    pub tasks_waiting: Option<u64>,
    pub tasks_running: Option<u64>,
}

pub async fn run(args: StatusArgs) -> Result<Outcome, Failure> {
    let format = args
        .output
        .require("drover status", &[Format::Table, Format::Json])?;
    let client = args.connection.client()?;
    let overview = gather(&client).await?;
    match format {
        Format::Json => output::json(&overview)?,
        _ => output::line(&describe(&overview))?,
    }
    Ok(Outcome::Done)
}

async fn gather(client: &Client) -> Result<Overview, Failure> {
    let server = |e| Failure::server(client, e);
    // The cluster read first: a wrong --server or key fails here, before the slower counts.
    let cluster: ClusterInfo = client.cluster().await.map_err(server)?;
    let health = match client.health().await {
        Ok(h) => Ok(h),
        // 503: the server says it is unhealthy, and why; that is part of the overview.
        Err(ClientError::Api {
            status: 503,
            code,
            message,
        }) => Err((code, message)),
        Err(e) => return Err(server(e)),
    };
    let mut nodes = BTreeMap::new();
    for spot in client.spots().await.map_err(server)? {
        *nodes.entry(spot.status).or_insert(0) += 1;
    }
    let mut jobs = BTreeMap::new();
    let mut jobs_capped = Vec::new();
    for status in JOB_STATUSES {
        let (count, capped) = count_jobs(client, status).await.map_err(server)?;
        jobs.insert(status.to_string(), count);
        if capped {
            jobs_capped.push(status.to_string());
        }
    }
    let (health, health_code, health_error, waiting, running) = match health {
        Ok(HealthResponse {
            status,
            pending_tasks,
            running_tasks,
            ..
        }) => (status, None, None, Some(pending_tasks), Some(running_tasks)),
        Err((code, message)) => ("unhealthy".into(), Some(code), Some(message), None, None),
    };
    Ok(Overview {
        server: client.base_url().to_string(),
        client_version: env!("CARGO_PKG_VERSION").to_string(),
        server_version: cluster.version,
        health,
        health_code,
        health_error,
        replicas: cluster
            .members
            .iter()
            .map(|m| m.replica_id.clone())
            .filter(|id| *id != cluster.replica_id)
            .collect(),
        replica_id: cluster.replica_id,
        role: cluster.role,
        leader: cluster.leader,
        epoch: cluster.epoch,
        nodes,
        jobs,
        jobs_capped,
        tasks_waiting: waiting,
        tasks_running: running,
    })
}

/// How many jobs have `status`, counted page by page up to [`COUNT_AT_MOST`]; whether there
/// were more.
async fn count_jobs(client: &Client, status: &str) -> Result<(u64, bool), ClientError> {
    let mut options = ListOptions {
        status: Some(status.to_string()),
        cursor: None,
        limit: Some(PAGE),
    };
    let mut count = 0u64;
    loop {
        let page = client.jobs(&options).await?;
        count += page.jobs.len() as u64;
        match page.next_cursor {
            Some(_) if count >= COUNT_AT_MOST => return Ok((count, true)),
            Some(cursor) => options.cursor = Some(cursor),
            None => return Ok((count, false)),
        }
    }
}

/// The overview as text: a record, one line per subject.
pub fn describe(o: &Overview) -> String {
    let version = match &o.server_version {
        Some(v) if *v == o.client_version => v.clone(),
        Some(v) => format!("{v} (this client: {})", o.client_version),
        None => format!("unknown (older than {}, this client's)", o.client_version),
    };
    let health = match (&o.health_code, &o.health_error) {
        (Some(code), Some(error)) => format!("{} ({code}: {error})", o.health),
        _ => o.health.clone(),
    };
    let leader = match &o.leader {
        Some(id) if *id == o.replica_id => format!("{id} (this replica), epoch {}", o.epoch),
        Some(id) => format!("{id}, epoch {}", o.epoch),
        None => format!("none (the lease is free), epoch {}", o.epoch),
    };
    let replica = if o.replicas.is_empty() {
        format!("{} ({})", o.replica_id, o.role)
    } else {
        format!(
            "{} ({}); also seen: {}",
            o.replica_id,
            o.role,
            o.replicas.join(", ")
        )
    };
    let nodes = if o.nodes.is_empty() {
        "none registered".to_string()
    } else {
        // UP first: it is what work waits for.
        let mut parts: Vec<String> = o
            .nodes
            .get("UP")
            .map(|n| format!("{n} UP"))
            .into_iter()
            .collect();
        parts.extend(
            o.nodes
                .iter()
                .filter(|(status, _)| status.as_str() != "UP")
                .map(|(status, n)| format!("{n} {status}")),
        );
        parts.join(", ")
    };
    let jobs = JOB_STATUSES
        .iter()
        .map(|status| {
            let n = o.jobs.get(*status).copied().unwrap_or(0);
            let more = if o.jobs_capped.iter().any(|s| s == status) {
                "+"
            } else {
                ""
            };
            format!("{n}{more} {status}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let tasks = match (o.tasks_waiting, o.tasks_running) {
        (Some(w), Some(r)) => format!("{w} waiting, {r} running"),
        _ => "unknown while the server is unhealthy".to_string(),
    };
    output::record_text(vec![
        ("server", o.server.clone()),
        ("version", version),
        ("health", health),
        ("replica", replica),
        ("leader", leader),
        ("nodes", nodes),
        ("jobs", jobs),
        ("tasks", tasks),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overview() -> Overview {
        Overview {
            server: "http://127.0.0.1:8080".into(),
            client_version: "0.1.0".into(),
            server_version: Some("0.1.0".into()),
            health: "healthy".into(),
            health_code: None,
            health_error: None,
            replica_id: "replica-a".into(),
            role: "leader".into(),
            leader: Some("replica-a".into()),
            epoch: 3,
            replicas: vec![],
            nodes: BTreeMap::from([("DOWN".into(), 1), ("UP".into(), 2)]),
            jobs: BTreeMap::from([("RUNNING".into(), 1), ("COMPLETED".into(), 10_000)]),
            jobs_capped: vec!["COMPLETED".into()],
            tasks_waiting: Some(7),
            tasks_running: Some(2),
        }
    }

    #[test]
    fn the_overview_reads_as_one_line_per_subject() {
        let text = describe(&overview());
        for expected in [
            "version  0.1.0",
            "health   healthy",
            "replica-a (this replica), epoch 3",
            "nodes    2 UP, 1 DOWN",
            "0 PENDING, 1 RUNNING, 10000+ COMPLETED, 0 FAILED, 0 CANCELLED",
            "7 waiting, 2 running",
        ] {
            assert!(text.contains(expected), "no {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn an_unhealthy_or_older_server_says_so() {
        let mut o = overview();
        o.server_version = None;
        o.health = "unhealthy".into();
        o.health_code = Some("LOW_DISK_SPACE".into());
        o.health_error = Some("1 MB free".into());
        o.tasks_waiting = None;
        o.tasks_running = None;
        o.nodes.clear();
        let text = describe(&o);
        for expected in [
            "unknown (older than 0.1.0",
            "unhealthy (LOW_DISK_SPACE: 1 MB free)",
            "unknown while the server is unhealthy",
            "none registered",
        ] {
            assert!(text.contains(expected), "no {expected:?} in:\n{text}");
        }
    }
}
