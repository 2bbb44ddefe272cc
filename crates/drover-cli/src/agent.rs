//! `drover agent`: flags and environment into a `drover_agent::AgentConfig`, logging, and the
//! two-stage stop on signals. Everything the agent does lives in the `drover-agent` crate.

use crate::process::{LogFormat, init_logging, until_second_signal};
use crate::span::Span;
use anyhow::{Context, bail};
use clap::Args;
use drover_agent::AgentConfig;
use serde_json::{Map, Value};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

pub const EXAMPLES: &str = "\
Examples:
  drover agent --server http://127.0.0.1:8080
  drover agent --server http://10.0.0.5:8080 --agent-key \"$AK\" --slots 8 --zone eu-1 --labels gpu=a100,pool=batch
  drover agent --server http://a:8080,http://b:8080   # fails over between replicas

What runs: each job carries a command (an argv array with {name} placeholders filled from the
task's parameters; no shell is involved). The task runs in its own directory under --work-dir,
with DROVER_TASK_ID, DROVER_JOB_ID, DROVER_ATTEMPT, DROVER_WORK_DIR and DROVER_SPOT_ID set. The
last line of stdout that is a JSON object is the result: fopt, iter and runtimeMs are lifted into
the result's fields. Exit code 0 is success; anything else, or running past the job's task
timeout, is a failure (retried unless the job says retryOnFailure = false).

Claiming: the agent keeps its slots busy plus up to --claim-ahead tasks waiting, reports
finished runs in batches with its next claim (POST /internal/v1/tasks/exchange; a report waits
at most --report-delay for company), and when there is no work it waits on the server
(--claim-wait) instead of polling.

Stopping: the first SIGTERM or Ctrl-C stops claiming, hands back the tasks claimed ahead but not
started (as retriable failures) and lets running tasks finish (up to --drain-grace) and be
reported; a second one kills them, reports them as retriable failures and exits.";

/// The options of `drover agent`; the command's help text is on the binary's `Command::Agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Server URL(s), comma-separated; several are replicas to fail over between.
    #[arg(
        long,
        env = "DROVER_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080",
        value_name = "URL[,URL...]"
    )]
    server: Vec<String>,

    /// The server's agent key, as `drover server --agent-key` was given it (sent as
    /// X-Agent-Key); `--key` is accepted too.
    #[arg(
        long = "agent-key",
        visible_alias = "key",
        env = "DROVER_AGENT_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    key: Option<String>,

    /// PEM file of certificates to trust for https servers, besides the system's (e.g. a
    /// private CA).
    #[arg(long, env = "DROVER_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// Tasks run at once [default: the machine's cores].
    #[arg(long, env = "DROVER_AGENT_SLOTS", value_name = "N")]
    slots: Option<usize>,

    /// Labels announced to the server, e.g. `gpu=a100,pool=batch`.
    #[arg(
        long,
        env = "DROVER_AGENT_LABELS",
        value_delimiter = ',',
        value_name = "K=V,..."
    )]
    labels: Vec<String>,

    /// Zone announced to the server.
    #[arg(long, env = "DROVER_AGENT_ZONE", value_name = "ZONE")]
    zone: Option<String>,

    /// Address announced to the server [default: the local address that routes to it].
    #[arg(long, env = "DROVER_AGENT_ADDRESS", value_name = "IP")]
    address: Option<String>,

    /// Directory for the tasks' working directories [default: drover-agent under the system's
    /// temporary directory].
    #[arg(long, env = "DROVER_AGENT_WORK_DIR", value_name = "DIR")]
    work_dir: Option<PathBuf>,

    /// Keep each task's working directory after it ends.
    #[arg(long, env = "DROVER_AGENT_KEEP_WORK_DIRS")]
    keep_work_dirs: bool,

    /// Heartbeat period [default: what the server suggests, usually 2s].
    #[arg(long, env = "DROVER_AGENT_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    heartbeat_interval: Option<Span>,

    /// Claimed tasks kept waiting in the agent beyond its busy slots, so a slot that frees
    /// starts the next task at once [default: one per slot, and for runs shorter than 20ms as
    /// many per slot as fit in 20ms, up to 8]. They are under lease from their claim and their
    /// wait counts against their timeout: use 0 for long tasks.
    #[arg(long, env = "DROVER_AGENT_CLAIM_AHEAD", value_name = "N")]
    claim_ahead: Option<usize>,

    /// Longest a finished run's report waits in the agent for others to travel with, once no
    /// exchange is in flight; 0 sends each at the first chance [default: 10ms].
    #[arg(long, env = "DROVER_AGENT_REPORT_DELAY", value_name = "DURATION")]
    report_delay: Option<Span>,

    /// How long a claim waits on the server for work when there is none (a long-poll; at most
    /// 30s). 0 polls every --poll-interval instead [default: 20s].
    #[arg(long, env = "DROVER_AGENT_CLAIM_WAIT", value_name = "DURATION")]
    claim_wait: Option<Span>,

    /// Wait between claims while there is no work, with --claim-wait 0 [default: 1s].
    #[arg(long, env = "DROVER_AGENT_POLL_INTERVAL", value_name = "DURATION")]
    poll_interval: Option<Span>,

    /// How long running tasks may go on after a stop signal [default: 60s].
    #[arg(long, env = "DROVER_AGENT_DRAIN_GRACE", value_name = "DURATION")]
    drain_grace: Option<Span>,

    /// Longest wait between retries while the server is unreachable [default: 10s].
    #[arg(long, env = "DROVER_AGENT_MAX_BACKOFF", value_name = "DURATION")]
    max_backoff: Option<Span>,

    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "DROVER_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
}

/// `k=v,...` into a label map; values stay strings.
fn labels(items: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for item in items.iter().filter(|i| !i.trim().is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--labels: {item:?} is not key=value");
        };
        let k = k.trim();
        if k.is_empty() {
            bail!("--labels: {item:?} has an empty key");
        }
        map.insert(k.to_string(), Value::String(v.trim().to_string()));
    }
    Ok(map)
}

impl AgentArgs {
    pub fn config(self) -> anyhow::Result<AgentConfig> {
        let servers = drover_client::ServerList::parse(&self.server)
            .map_err(|e| anyhow::anyhow!("--server: {e}"))?
            .urls()
            .to_vec();
        let work_dir = self
            .work_dir
            .unwrap_or_else(|| std::env::temp_dir().join("drover-agent"));
        let mut config = AgentConfig::new(servers, work_dir);
        config.agent_key = self.key.filter(|k| !k.is_empty());
        if let Some(path) = &self.ca_cert {
            config.ca_cert_pem = Some(
                std::fs::read(path)
                    .with_context(|| format!("--ca-cert: reading {}", path.display()))?,
            );
        }
        if let Some(slots) = self.slots {
            if slots == 0 {
                bail!("--slots must be at least 1");
            }
            config.slots = slots;
        }
        config.labels = labels(&self.labels)?;
        config.zone = self.zone;
        config.address = self.address;
        config.keep_work_dirs = self.keep_work_dirs;
        config.heartbeat_interval = self.heartbeat_interval.map(|s| s.0);
        config.claim_ahead = self.claim_ahead;
        if let Some(Span(d)) = self.report_delay {
            config.report_delay = d;
        }
        if let Some(Span(d)) = self.claim_wait {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            if drover_core::rules::check_wait_ms(ms).is_err() {
                bail!(
                    "--claim-wait must be at most {} ms, the server's limit (got {ms} ms)",
                    drover_core::rules::MAX_WAIT_MS
                );
            }
            config.claim_wait = d;
        }
        if let Some(Span(d)) = self.poll_interval {
            config.poll_interval = d;
        }
        if let Some(Span(d)) = self.drain_grace {
            config.drain_grace = d;
        }
        if let Some(Span(d)) = self.max_backoff {
            config.max_backoff = d;
        }
        if config.heartbeat_interval.is_some_and(|d| d.is_zero()) {
            bail!("--heartbeat-interval must be greater than zero");
        }
        Ok(config)
    }
}

/// The agent's runtime: one thread. What the agent does per task is small (start a process,
/// read its output, a share of an exchange), and on one thread a child's exit, its output and
/// an exchange's answer are handled where they are noticed, instead of a worker thread waking
/// another to run them (a futex wake and a context switch each, on a machine whose cores the
/// tasks need). The tasks' death signal is tied to this thread, which lives as long as the
/// agent. Blocking work (removing a large working directory, name resolution) still goes to
/// tokio's blocking pool. The limit this sets: one agent spends about 0.1 ms of its thread per
/// run (start, output, its share of an exchange), so it starts at most about 10,000 runs a
/// second; a machine that needs more runs more agents.
fn agent_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let log_format = args.log_format;
    let config = args.config()?;
    init_logging(log_format);
    let runtime = agent_runtime().context("starting the async runtime")?;
    let aborted = runtime.block_on(async move {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        {
            let (stop, abort) = (stop.clone(), abort.clone());
            tokio::spawn(async move {
                // The agent logs its own drain message when it sees `stop`.
                until_second_signal(
                    stop,
                    None,
                    "second signal: stopping running tasks and exiting",
                )
                .await;
                abort.cancel();
            });
        }
        tracing::info!(
            servers = %config.servers.join(","),
            slots = config.slots,
            work_dir = %config.work_dir.display(),
            "drover agent starting"
        );
        drover_agent::run(config, stop, abort.clone()).await?;
        anyhow::Ok(abort.is_cancelled())
    })?;
    if aborted {
        std::process::exit(130);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_key_has_the_servers_name_and_the_old_one_still_works() {
        use clap::{Args, FromArgMatches};
        let command = AgentArgs::augment_args(clap::Command::new("agent"));
        for flag in ["--agent-key", "--key"] {
            let matches = command
                .clone()
                .try_get_matches_from(["agent", flag, "s3cret"])
                .unwrap();
            let args = AgentArgs::from_arg_matches(&matches).unwrap();
            assert_eq!(args.key.as_deref(), Some("s3cret"), "{flag}");
        }
    }

    #[test]
    fn labels_are_key_value_pairs() {
        let l = labels(&["gpu=a100".into(), " pool = batch ".into(), "".into()]).unwrap();
        assert_eq!(
            Value::Object(l),
            serde_json::json!({"gpu": "a100", "pool": "batch"})
        );
        assert!(labels(&["novalue".into()]).is_err());
        assert!(labels(&["=x".into()]).is_err());
    }
}
