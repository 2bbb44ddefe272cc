//! `drover nodes`: the spots (worker machines) the server knows, as a table, JSON or CSV; and
//! `drover nodes drain|undrain ID`.
//!
//! One read of `GET /api/v1/spots`, printed, or one call of `POST /api/v1/spots/{id}/drain`
//! (`/undrain`); whether a spot is UP, DRAINING or DOWN is the server's word.

use super::output::{self, Format};
use super::{Connection, Failure, Outcome};
use clap::{Args, Subcommand};
use drover_api::{Spot, SpotsResponse};
use drover_core::text::value_text;
use serde_json::{Map, Value};

/// The options of `drover nodes`; its help text is on `ClientCommand::Nodes`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodesArgs {
    #[command(subcommand)]
    action: Option<NodesAction>,

    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand)]
enum NodesAction {
    /// Drain a spot: it finishes the tasks it holds and claims nothing new.
    ///
    /// For maintenance: drain, wait until the spot's RUNNING count is 0 (`drover nodes`), then
    /// stop its agent. The spot stays DRAINING, heartbeats and all, until `drover nodes undrain`
    /// or until it goes DOWN (a spot that comes back after that is UP). Draining a DRAINING
    /// spot changes nothing; a DOWN one is refused (SPOT_DOWN).
    Drain {
        /// The spot's id (spot-...), as `drover nodes` lists it.
        id: String,

        /// Output format: table or json (the spot after the change).
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        output: Format,
    },

    /// Put a drained spot back to work: UP, claiming tasks again.
    ///
    /// Undraining an UP spot changes nothing; a DOWN one is refused (SPOT_DOWN): it comes back
    /// UP by itself when it speaks again.
    Undrain {
        /// The spot's id (spot-...).
        id: String,

        /// Output format: table or json (the spot after the change).
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

pub async fn run(args: NodesArgs) -> Result<Outcome, Failure> {
    let client = args.connection.client()?;
    let (spot, output) = match args.action {
        None => return list(&client, args.output).await,
        Some(NodesAction::Drain { id, output }) => {
            let output = output.require("drover nodes drain", &[Format::Table, Format::Json])?;
            (client.drain_spot(&id).await, output)
        }
        Some(NodesAction::Undrain { id, output }) => {
            let output = output.require("drover nodes undrain", &[Format::Table, Format::Json])?;
            (client.undrain_spot(&id).await, output)
        }
    };
    let spot = spot.map_err(|e| Failure::server(&client, e))?;
    match output {
        Format::Json => output::json(&spot)?,
        _ if spot.status == "DRAINING" => output::line(&format!(
            "spot {} is DRAINING: it finishes the tasks it holds and claims nothing new; \
             `drover nodes undrain {}` puts it back to work",
            spot.id, spot.id
        ))?,
        _ => output::line(&format!(
            "spot {} is {}: it claims tasks again",
            spot.id, spot.status
        ))?,
    }
    Ok(Outcome::Done)
}

/// `drover nodes`: every spot, in `format`.
async fn list(client: &drover_client::Client, format: Format) -> Result<Outcome, Failure> {
    let spots = client
        .spots()
        .await
        .map_err(|e| Failure::server(client, e))?;
    match format {
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
