//! `drover runners`: the session runners the server keeps, as a table, JSON or CSV.
//!
//! One read of `GET /api/v1/runners`, printed; provisioning and removal are the server's (and
//! its clients') business through `/api/runner/*`.

use super::output::{self, Format};
use super::{Connection, Failure, Outcome};
use clap::Args;
use drover_api::{RunnerInfo, RunnerList};

/// The options of `drover runners`; its help text is on `ClientCommand::Runners`.
#[derive(Args)]
pub struct RunnersArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(flatten)]
    connection: Connection,
}

const COLUMNS: [&str; 8] = [
    "SESSION",
    "DRIVER",
    "STATUS",
    "ENDPOINT",
    "INSTANCE",
    "AGE",
    "LAST HEARTBEAT",
    "SINGLETON",
];

pub async fn run(args: RunnersArgs) -> Result<Outcome, Failure> {
    let client = args.connection.client()?;
    let runners = client
        .runners()
        .await
        .map_err(|e| Failure::server(&client, e))?;
    match args.output {
        Format::Json => output::json(&RunnerList {
            runners,
            next_cursor: None,
        })?,
        Format::Csv => output::csv(
            &[
                "sessionId",
                "driver",
                "status",
                "endpoint",
                "instance",
                "createdAt",
                "lastHeartbeat",
                "singleton",
            ]
            .map(String::from),
            runners
                .iter()
                .map(|r| {
                    vec![
                        r.session_id.clone(),
                        r.driver.clone(),
                        r.status.clone(),
                        r.endpoint.clone().unwrap_or_default(),
                        r.instance.clone().unwrap_or_default(),
                        r.created_at.clone(),
                        r.last_heartbeat.clone(),
                        r.singleton.to_string(),
                    ]
                })
                .collect(),
        )?,
        Format::Table if runners.is_empty() => {
            output::line("no runners; clients provision them with POST /api/runner/provision")?
        }
        Format::Table => output::table(
            &COLUMNS.map(String::from),
            runners.iter().map(row).collect(),
        )?,
    }
    Ok(Outcome::Done)
}

fn row(r: &RunnerInfo) -> Vec<String> {
    // A container id is long; its first 12 characters are what `docker ps` shows.
    let instance = r
        .instance
        .as_deref()
        .map(|i| i.chars().take(12).collect::<String>());
    vec![
        r.session_id.clone(),
        r.driver.clone(),
        r.status.clone(),
        output::or_dash(r.endpoint.as_deref()),
        output::or_dash(instance.as_deref()),
        output::age(&r.created_at),
        output::age(&r.last_heartbeat),
        if r.singleton { "yes" } else { "-" }.into(),
    ]
}
