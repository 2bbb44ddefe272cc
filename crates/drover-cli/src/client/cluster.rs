//! `drover cluster`: the answering replica's role, the leader and its epoch, and the replicas
//! seen recently, as a record and a table, or JSON.
//!
//! One read of `GET /api/v1/cluster`, printed; who leads is the server's word.

use super::output::{self, Format};
use super::{Connection, Failure, Outcome};
use clap::Args;
use drover_api::{ClusterInfo, ClusterMember};

/// The options of `drover cluster`; its help text is on `ClientCommand::Cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    /// Output format: table or json.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: ClusterArgs) -> Result<Outcome, Failure> {
    let format = args
        .output
        .require("drover cluster", &[Format::Table, Format::Json])?;
    let client = args.connection.client()?;
    let cluster = client
        .cluster()
        .await
        .map_err(|e| Failure::server(&client, e))?;
    match format {
        Format::Json => output::json(&cluster)?,
        _ => {
            output::record(summary(&cluster))?;
            output::line("")?;
            output::table(
                &["REPLICA", "ADDRESS", "ROLE", "SEEN SINCE", "LAST SEEN"].map(String::from),
                cluster.members.iter().map(row).collect(),
            )?;
        }
    }
    Ok(Outcome::Done)
}

fn summary(c: &ClusterInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Replica", c.replica_id.clone()),
        ("Role", c.role.clone()),
        (
            "Leader",
            c.leader
                .clone()
                .unwrap_or_else(|| "none (the lease is free)".into()),
        ),
        ("Epoch", c.epoch.to_string()),
        (
            "Lease expires",
            c.lease_expires_at.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Lease TTL", format!("{}s", c.lease_ttl_seconds)),
    ]
}

fn row(m: &ClusterMember) -> Vec<String> {
    vec![
        m.replica_id.clone(),
        m.address.clone(),
        if m.leader { "leader" } else { "follower" }.into(),
        output::age(&m.first_seen),
        output::age(&m.last_seen),
    ]
}
