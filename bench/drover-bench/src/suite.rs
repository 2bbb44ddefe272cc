//! The `suite` subcommand: runs the scenarios of the throughput issue's targets table, one after
//! the other, each against its own real `drover server` (or, for the store ceiling, the store
//! alone), and writes one result row per figure as a JSON line (`--out`), with the figure's
//! target and whether it was met. Rows that compare with the peers are made by `table`, which
//! also knows the peers' figures. A scenario that fails gives a `failed` row with the reason
//! instead of stopping the others.
//!
//! It decides the sizes (full or `--smoke`), the verdicts and the command shown for each row;
//! the scenarios themselves live in `scenarios/`.

use crate::batch_worker::Route;
use crate::scenarios;
use crate::server::{Server, ServerOpts};
use crate::stats::thousands;
use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// N no-op tasks as one sweep, drained by batched workers (tasks/s, fsyncs per task).
    BurnDown,
    /// The same burn-down in-process against the store alone.
    StoreCeiling,
    /// One HTTP request per complete, 16 and 64 concurrent clients.
    ContractExact,
    /// 2 `drover agent` × 2 slots running `true`, and `xargs -P2 true`.
    Agents,
    /// From submitting a one-task job to a waiting worker receiving it.
    AddToStart,
    /// Creating a large sweep: time, RSS, disk, and health/heartbeat probes meanwhile.
    SweepCreation,
    /// Many simulated nodes registering, then heartbeating.
    Nodes,
    /// The placement contract over HTTP: schedule and placement latencies, stats updates/s.
    Placement,
    /// Many simulated node agents registering over gRPC, then heartbeating.
    GrpcNodes,
    /// PostgreSQL replicas only: the leader killed, until a reaper runs on the new one.
    Failover,
    /// The priority router in RabbitMQ mode: register → published with confirms, and end to
    /// end with Python pika workers.
    PriorityRouter,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::BurnDown => "burn-down",
            Scenario::StoreCeiling => "store-ceiling",
            Scenario::ContractExact => "contract-exact",
            Scenario::Agents => "agents",
            Scenario::AddToStart => "add-to-start",
            Scenario::SweepCreation => "sweep-creation",
            Scenario::Nodes => "nodes",
            Scenario::Placement => "placement",
            Scenario::GrpcNodes => "grpc-nodes",
            Scenario::Failover => "failover",
            Scenario::PriorityRouter => "priority-router",
        }
    }

    /// Every scenario on the embedded store (failover needs PostgreSQL replicas).
    pub const ALL: [Scenario; 10] = [
        Scenario::BurnDown,
        Scenario::StoreCeiling,
        Scenario::ContractExact,
        Scenario::Agents,
        Scenario::AddToStart,
        Scenario::SweepCreation,
        Scenario::Nodes,
        Scenario::Placement,
        Scenario::GrpcNodes,
        Scenario::PriorityRouter,
    ];
}

#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// The drover binary to start as the server (and as the agents).
    #[arg(long, value_name = "PATH", default_value = "target/release/drover")]
    pub drover: PathBuf,
    /// Small sizes, a few seconds in all (the test suite's run).
    #[arg(long)]
    pub smoke: bool,
    /// Tasks of the burn-down and the store ceiling [default: 1000000; 2000 with --smoke].
    #[arg(long)]
    pub n: Option<u64>,
    /// Run only these scenarios (repeat or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scenario>,
    /// Batched worker processes of the burn-down; tokio tasks of the store ceiling.
    #[arg(long, default_value_t = 2)]
    pub workers: u32,
    /// How the burn-down workers hand in results: `report` then `claim`, or one `exchange`.
    #[arg(long, value_enum, default_value_t = Route::Exchange)]
    pub route: Route,
    /// Longest wait of any one drain, e.g. 600s [default: 60 s + 1 ms per task].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Do not run the burn-down server under strace (no fsync count).
    #[arg(long)]
    pub no_strace: bool,
    /// Directory for the temporary databases [default: the system temp dir].
    #[arg(long, value_name = "DIR")]
    pub db_dir: Option<PathBuf>,
    /// Append the result rows here as JSON lines [default: stdout].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Run the burn-down and contract-exact servers on a throwaway PostgreSQL (started from
    /// the system's binaries, removed afterwards) instead of SQLite.
    #[arg(long)]
    pub postgres: bool,
    /// With --postgres: how many `drover server` replicas share the database; workers and
    /// clients are spread over them round-robin.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
}

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Met,
    Missed,
    /// A figure with no target of its own.
    Reported,
    /// The scenario did not produce the figure.
    Failed,
    /// Not run (e.g. no peers).
    Skipped,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::Reported => "reported",
            Verdict::Failed => "**failed**",
            Verdict::Skipped => "not run",
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub scenario: String,
    pub command: String,
    /// The figure as shown, with its unit and any detail.
    pub figure: String,
    /// The number the verdict is about.
    pub value: Option<f64>,
    pub target: String,
    pub verdict: Verdict,
}

/// A target: a bound on a figure, or none.
#[derive(Debug, Clone, Copy)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl Goal {
    pub fn verdict(self, value: f64) -> Verdict {
        match self {
            Goal::AtLeast(b) if value >= b => Verdict::Met,
            Goal::AtMost(b) if value <= b => Verdict::Met,
            Goal::None => Verdict::Reported,
            _ => Verdict::Missed,
        }
    }
}

/// The rows of one scenario, all sharing its command.
pub struct Rows<'a> {
    scenario: &'a str,
    command: String,
    pub rows: Vec<Row>,
}

impl<'a> Rows<'a> {
    pub fn new(scenario: &'a str, command: String) -> Self {
        Rows {
            scenario,
            command,
            rows: Vec::new(),
        }
    }

    /// A figure against its target.
    pub fn add(&mut self, figure: String, value: f64, target: &str, goal: Goal) {
        self.rows.push(Row {
            scenario: self.scenario.to_string(),
            command: self.command.clone(),
            figure,
            value: Some(value),
            target: target.to_string(),
            verdict: goal.verdict(value),
        });
    }

    /// A figure that could not be had, with why.
    pub fn missing(&mut self, why: String, target: &str, verdict: Verdict) {
        self.rows.push(Row {
            scenario: self.scenario.to_string(),
            command: self.command.clone(),
            figure: why,
            value: None,
            target: target.to_string(),
            verdict,
        });
    }
}

/// Everything a scenario needs besides its sizes.
pub struct Ctx {
    pub drover: PathBuf,
    pub strace: bool,
    pub db_dir: Option<PathBuf>,
    pub timeout: Option<Duration>,
    /// The PostgreSQL cluster the servers use instead of SQLite, and how many replicas.
    pub postgres: Option<drover_pgtest::TempPostgres>,
    pub replicas: u32,
    databases: std::sync::atomic::AtomicU32,
    start: Instant,
}

impl Ctx {
    /// Progress on stderr, with the time since the suite started.
    pub fn say(&self, scenario: &str, msg: impl std::fmt::Display) {
        eprintln!(
            "[{:>6.1}s] {scenario}: {msg}",
            self.start.elapsed().as_secs_f64()
        );
    }

    /// The longest wait for `n` tasks to drain.
    pub fn drain_timeout(&self, n: u64) -> Duration {
        self.timeout
            .unwrap_or(Duration::from_secs(60) + Duration::from_millis(n))
    }

    pub fn db_dir(&self) -> Option<&Path> {
        self.db_dir.as_deref()
    }

    /// The servers of one run: one on a fresh SQLite file, or `replicas` on a fresh PostgreSQL
    /// database. The first is the one the scenario creates jobs on and watches.
    pub async fn start_servers(&self, strace: bool, extra: &[&str]) -> anyhow::Result<Vec<Server>> {
        self.start_servers_of(&self.drover, strace, extra).await
    }

    /// As [`Ctx::start_servers`], with `program` started as `drover server` (drover, or the
    /// floor: this binary).
    pub async fn start_servers_of(
        &self,
        program: &Path,
        strace: bool,
        extra: &[&str],
    ) -> anyhow::Result<Vec<Server>> {
        let Some(pg) = &self.postgres else {
            let one = Server::start(&ServerOpts {
                drover: program,
                strace,
                extra,
                db_dir: self.db_dir(),
                db_url: None,
            })
            .await?;
            return Ok(vec![one]);
        };
        let n = self
            .databases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = pg
            .create_database(&format!("bench{n}"))
            .map_err(|e| anyhow::anyhow!(e))?;
        let mut servers = Vec::new();
        for _ in 0..self.replicas.max(1) {
            servers.push(
                Server::start(&ServerOpts {
                    drover: program,
                    // The database's fsyncs are PostgreSQL's, not the server's.
                    strace: false,
                    extra,
                    db_dir: self.db_dir(),
                    db_url: Some(&url),
                })
                .await?,
            );
        }
        Ok(servers)
    }

    /// What the figures ran on, for their notes.
    pub fn store_note(&self) -> String {
        match &self.postgres {
            Some(_) => format!(", PostgreSQL, {} replica(s)", self.replicas.max(1)),
            None => String::new(),
        }
    }
}

/// Runs a scenario's load against its floor (this binary's hidden `server`, `floor.rs`, started
/// as `drover server`) and adds the floor's row: `run(program)` gives the figure's value and
/// its text, which the row shows after "floor".
pub async fn floor_row<F, Fut>(
    ctx: &Ctx,
    rows: &mut Rows<'_>,
    (scenario, what, target): (&str, &str, &str),
    run: F,
) where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(f64, String)>>,
{
    ctx.say(
        scenario,
        format!("the same load against the floor ({what})"),
    );
    let result = match std::env::current_exe().context("finding this binary for the floor server") {
        Ok(exe) => run(exe).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((value, figure)) => rows.add(format!("floor {figure}"), value, target, Goal::None),
        Err(e) => rows.missing(format!("floor failed: {e:#}"), target, Verdict::Failed),
    }
}

/// The sizes of one suite run.
pub struct Sizes {
    pub burn_n: u64,
    pub warmup: u64,
    pub contract_n: u64,
    pub contract_clients: [u32; 2],
    pub contract_claim: u32,
    pub agents_n: u64,
    pub latency_jobs: u32,
    pub sweep_n: u64,
    pub nodes: u32,
    pub nodes_secs: u64,
    pub nodes_interval: Duration,
    pub placement: scenarios::placement::PlacementSizes,
    pub priority_jobs: u32,
}

impl Sizes {
    pub fn of(a: &SuiteArgs) -> Sizes {
        let full = Sizes {
            burn_n: 1_000_000,
            warmup: 1000,
            contract_n: 50_000,
            contract_clients: [16, 64],
            contract_claim: 4,
            agents_n: 5000,
            latency_jobs: 1000,
            sweep_n: 1_000_000,
            nodes: 10_000,
            nodes_secs: 60,
            nodes_interval: Duration::from_secs(5),
            placement: scenarios::placement::PlacementSizes {
                nodes: [1_000, 10_000],
                requests: 2_000,
                stats_secs: 5,
            },
            priority_jobs: 50_000,
        };
        let mut s = if a.smoke {
            Sizes {
                burn_n: 2000,
                warmup: 100,
                contract_n: 1000,
                agents_n: 100,
                latency_jobs: 20,
                sweep_n: 20_000,
                nodes: 200,
                nodes_secs: 5,
                placement: scenarios::placement::PlacementSizes {
                    nodes: [20, 50],
                    requests: 20,
                    stats_secs: 1,
                },
                priority_jobs: 300,
                ..full
            }
        } else {
            full
        };
        if let Some(n) = a.n {
            s.burn_n = n;
        }
        s
    }
}

pub async fn run(a: SuiteArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.workers >= 1, "--workers must be at least 1");
    let drover = a.drover.canonicalize().with_context(|| {
        format!(
            "the drover binary {} is missing; build it with `cargo build --release -p drover` \
             or pass --drover PATH",
            a.drover.display()
        )
    })?;
    let sizes = Sizes::of(&a);
    let strace = !a.no_strace && !a.postgres && crate::server::strace_works();
    anyhow::ensure!(a.replicas >= 1, "--replicas must be at least 1");
    anyhow::ensure!(
        a.postgres || a.replicas == 1,
        "--replicas needs --postgres: replicas share one PostgreSQL database"
    );
    let postgres = if a.postgres {
        Some(
            // Debian's default buffers, as the peers' PostgreSQL runs with.
            drover_pgtest::TempPostgres::start_with_conf("shared_buffers = 128MB")
                .map_err(|e| anyhow::anyhow!("starting a throwaway PostgreSQL: {e}"))?,
        )
    } else {
        None
    };
    let ctx = Ctx {
        drover,
        strace,
        db_dir: a.db_dir.clone(),
        timeout: a.timeout,
        postgres,
        replicas: a.replicas,
        databases: Default::default(),
        start: Instant::now(),
    };
    // The scenarios that run their servers on PostgreSQL when asked; the others measure the
    // embedded store (or no store at all) and refuse the option rather than ignore it.
    const ON_POSTGRES: [Scenario; 3] = [
        Scenario::BurnDown,
        Scenario::ContractExact,
        Scenario::Failover,
    ];
    let chosen: Vec<Scenario> = if a.only.is_empty() {
        if a.postgres {
            ON_POSTGRES
                .into_iter()
                .filter(|s| *s != Scenario::Failover || a.replicas >= 2)
                .collect()
        } else {
            Scenario::ALL.to_vec()
        }
    } else {
        let mut v = a.only.clone();
        v.sort();
        v.dedup();
        v
    };
    if a.postgres
        && let Some(s) = chosen.iter().find(|s| !ON_POSTGRES.contains(s))
    {
        anyhow::bail!(
            "--postgres applies to burn-down, contract-exact and failover only, not {}: \
             pass --only burn-down,contract-exact",
            s.name()
        );
    }
    anyhow::ensure!(
        !chosen.contains(&Scenario::Failover) || (a.postgres && a.replicas >= 2),
        "failover kills the leader of PostgreSQL replicas: pass --postgres --replicas 3"
    );
    let smoke = if a.smoke { " --smoke" } else { "" };
    let on_pg = if a.postgres {
        format!(" --postgres --replicas {}", a.replicas)
    } else {
        String::new()
    };
    let command = |s: Scenario, extra: String| {
        format!(
            "drover-bench suite{smoke} --only {}{extra}{on_pg}",
            s.name()
        )
    };
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    if !strace && !a.no_strace {
        ctx.say(
            "suite",
            "strace cannot run the server here: fsyncs are not counted",
        );
    }
    let mut burn_rate = None;
    let mut ceiling_rate = None;
    for s in chosen {
        ctx.say(s.name(), "starting");
        let t = Instant::now();
        let rows = match s {
            Scenario::BurnDown => {
                let extra = format!(
                    " --n {} --workers {} --route {}",
                    sizes.burn_n,
                    a.workers,
                    match a.route {
                        Route::Report => "report",
                        Route::Exchange => "exchange",
                    }
                );
                let (rows, rate) = scenarios::burn::burn_down(
                    &ctx,
                    command(s, extra),
                    sizes.burn_n,
                    sizes.warmup,
                    a.workers,
                    a.route,
                )
                .await;
                burn_rate = rate;
                rows
            }
            Scenario::StoreCeiling => {
                let extra = format!(" --n {} --workers {}", sizes.burn_n, a.workers);
                let (rows, rate) = scenarios::burn::store_ceiling(
                    &ctx,
                    command(s, extra),
                    sizes.burn_n,
                    a.workers,
                )
                .await;
                ceiling_rate = rate;
                rows
            }
            Scenario::ContractExact => {
                scenarios::contract::contract_exact(&ctx, command(s, String::new()), &sizes).await
            }
            Scenario::Agents => {
                scenarios::agents::agents(&ctx, command(s, String::new()), sizes.agents_n).await
            }
            Scenario::AddToStart => {
                scenarios::latency::add_to_start(
                    &ctx,
                    command(s, String::new()),
                    sizes.latency_jobs,
                )
                .await
            }
            Scenario::SweepCreation => {
                scenarios::sweep::sweep_creation(&ctx, command(s, String::new()), sizes.sweep_n)
                    .await
            }
            Scenario::Nodes => {
                scenarios::nodes::nodes(&ctx, command(s, String::new()), &sizes).await
            }
            Scenario::GrpcNodes => {
                scenarios::grpc_nodes::grpc_nodes(&ctx, command(s, String::new()), &sizes).await
            }
            Scenario::Placement => {
                scenarios::placement::placement(&ctx, command(s, String::new()), sizes.placement)
                    .await
            }
            Scenario::PriorityRouter => {
                scenarios::priority::priority(&ctx, command(s, String::new()), sizes.priority_jobs)
                    .await
            }
            Scenario::Failover => {
                let rounds = if a.smoke { 1 } else { 5 };
                scenarios::failover::failover(&ctx, command(s, String::new()), rounds).await
            }
        };
        let mut rows = rows;
        // The ratio goes under the store ceiling (run after the burn-down: `chosen` is sorted).
        if s == Scenario::StoreCeiling
            && let (Some(b), Some(c)) = (burn_rate, ceiling_rate)
        {
            let mut ratio = Rows::new(
                "burn-down vs store ceiling",
                format!(
                    "drover-bench suite{smoke} --only burn-down,store-ceiling --n {}",
                    sizes.burn_n
                ),
            );
            ratio.add(
                format!("{:.2} ({} / {} tasks/s)", b / c, thousands(b), thousands(c)),
                b / c,
                "≥ 0.5",
                Goal::AtLeast(0.5),
            );
            rows.extend(ratio.rows);
        }
        for r in &rows {
            ctx.say(
                s.name(),
                format!("{} (target {}: {:?})", r.figure, r.target, r.verdict),
            );
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        out.flush()?;
        ctx.say(
            s.name(),
            format!("done in {:.1} s", t.elapsed().as_secs_f64()),
        );
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        suite: SuiteArgs,
    }

    fn sizes(args: &[&str]) -> Sizes {
        Sizes::of(
            &Cli::try_parse_from([&["suite"], args].concat())
                .unwrap()
                .suite,
        )
    }

    #[test]
    fn a_bound_is_met_on_its_side_only() {
        assert_eq!(Goal::AtLeast(10.0).verdict(10.0), Verdict::Met);
        assert_eq!(Goal::AtLeast(10.0).verdict(9.9), Verdict::Missed);
        assert_eq!(Goal::AtMost(2.0).verdict(2.0), Verdict::Met);
        assert_eq!(Goal::AtMost(2.0).verdict(f64::NAN), Verdict::Missed);
        assert_eq!(Goal::None.verdict(1.0), Verdict::Reported);
    }

    #[test]
    fn the_issue_sizes_unless_smoke_and_n_sets_the_burn_down() {
        let full = sizes(&[]);
        assert_eq!(
            (full.burn_n, full.sweep_n, full.nodes),
            (1_000_000, 1_000_000, 10_000)
        );
        assert_eq!(full.contract_clients, [16, 64]);
        let smoke = sizes(&["--smoke"]);
        assert!(smoke.burn_n < 10_000 && smoke.nodes_secs <= 5);
        assert_eq!(sizes(&["--smoke", "--n", "500"]).burn_n, 500);
        assert_eq!(sizes(&["--n", "200000"]).sweep_n, 1_000_000);
    }

    #[test]
    fn only_takes_a_list_of_scenarios() {
        let cli = Cli::try_parse_from(["suite", "--only", "burn-down,nodes"]).unwrap();
        assert_eq!(cli.suite.only, [Scenario::BurnDown, Scenario::Nodes]);
        assert!(Cli::try_parse_from(["suite", "--only", "peers"]).is_err());
    }
}
