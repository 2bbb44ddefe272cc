//! `drover nodes`: the spots (worker machines) the server knows, as a table, JSON or CSV.
//!
//! One read of `GET /api/v1/spots`, printed; whether a spot is UP or DOWN is the server's word.

use super::output::{self, Format};
use super::{Connection, Failure, Outcome};
use clap::Args;
use drover_api::{Spot, SpotsResponse};
use drover_core::text::value_text;
use serde_json::{Map, Value};

/// The options of `drover nodes`; its help text is on `ClientCommand::Nodes`.
#[derive(Args)]
pub struct NodesArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: NodesArgs) -> Result<Outcome, Failure> {
    let client = args.connection.client()?;
    let spots = client
        .spots()
        .await
        .map_err(|e| Failure::server(&client, e))?;
    match args.output {
        Format::Json => output::json(&SpotsResponse {
            spots,
            next_cursor: None,
        })?,
        Format::Csv => output::csv(
            &[
                "id",
                "ipAddress",
                "status",
                "cpuLoad",
                "runningTasks",
                "totalCores",
                "lastHeartbeat",
                "zone",
                "labels",
                "hostname",
            ]
            .map(String::from),
            spots
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.ip_address.clone(),
                        s.status.clone(),
                        s.cpu_load.map(|l| l.to_string()).unwrap_or_default(),
                        s.running_tasks.to_string(),
                        s.total_cores.map(|c| c.to_string()).unwrap_or_default(),
                        s.last_heartbeat.clone(),
                        s.zone.clone().unwrap_or_default(),
                        // JSON keeps the labels' types and cannot be confused with a column.
                        Value::Object(s.labels.clone()).to_string(),
                        s.hostname.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        )?,
        Format::Table if spots.is_empty() => output::line(
            "no spots have registered yet; start one with `drover agent --server URL`",
        )?,
        Format::Table => output::table(
            &[
                "ID",
                "ADDRESS",
                "STATUS",
                "CPU LOAD",
                "RUNNING",
                "CORES",
                "LAST HEARTBEAT",
                "ZONE",
                "LABELS",
            ]
            .map(String::from),
            spots.iter().map(row).collect(),
        )?,
    }
    Ok(Outcome::Done)
}

fn row(spot: &Spot) -> Vec<String> {
    vec![
        spot.id.clone(),
        spot.ip_address.clone(),
        spot.status.clone(),
        spot.cpu_load
            .map_or_else(|| "-".into(), |l| format!("{l:.2}")),
        spot.running_tasks.to_string(),
        output::or_dash(spot.total_cores),
        output::age(&spot.last_heartbeat),
        output::or_dash(spot.zone.as_deref()),
        labels(&spot.labels),
    ]
}

/// Labels as `key=value,key=value`, or `-`.
fn labels(labels: &Map<String, Value>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join(",")
}
