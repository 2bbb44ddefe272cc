//! Real agents: 2 `drover agent` processes with 2 slots each run `true` once per task (the
//! classic `--workers-kind agent` run of this bench), and, in the same run, `xargs -P2 -n1 true`
//! runs `true` as many times with no drover at all: the process-per-task ceiling of the
//! machine, which the agents are measured against.

use crate::stats::thousands;
use crate::suite::{Ctx, Goal, Row, Rows, Verdict};
use crate::{BenchArgs, Enqueue, WorkersKind};
use anyhow::{Context, ensure};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCENARIO: &str = "agents";
const RATE_TARGET: &str = "≥ 1,500 tasks/s";
const RATIO_TARGET: &str = "≥ 70 % of `xargs -P2 true`";

pub async fn agents(ctx: &Ctx, command: String, n: u64) -> Vec<Row> {
    let mut rows = Rows::new(SCENARIO, command);
    let args = BenchArgs {
        drover: ctx.drover.clone(),
        n,
        workers: 2,
        workers_kind: WorkersKind::Agent,
        claim_batch: None,
        slots: Some(2),
        enqueue: Enqueue::Batch,
        warmup: (n / 10).clamp(20, 200),
        timeout: ctx.drain_timeout(n * 10),
        db_dir: ctx.db_dir.clone(),
        server_log: None,
    };
    ctx.say(
        SCENARIO,
        format!(
            "2 agents × 2 slots, {} tasks of `true`",
            thousands(n as f64)
        ),
    );
    let agents = crate::bench(args).await;
    ctx.say(SCENARIO, "xargs -P2 -n1 true, the same number of times");
    let xargs = tokio::task::spawn_blocking(move || xargs_true(n))
        .await
        .context("running xargs")
        .and_then(|r| r);
    match &agents {
        Ok(rate) => rows.add(
            format!(
                "{} tasks/s (2 agents × 2 slots, N = {})",
                thousands(*rate),
                thousands(n as f64)
            ),
            *rate,
            RATE_TARGET,
            Goal::AtLeast(1500.0),
        ),
        Err(e) => rows.missing(format!("failed: {e:#}"), RATE_TARGET, Verdict::Failed),
    }
    match (&agents, &xargs) {
        (Ok(a), Ok(x)) => rows.add(
            format!(
                "{:.0} % ({} / {} runs/s of `xargs -P2 -n1 true`)",
                a / x * 100.0,
                thousands(*a),
                thousands(*x)
            ),
            a / x,
            RATIO_TARGET,
            Goal::AtLeast(0.7),
        ),
        (_, Err(e)) => rows.missing(
            format!("xargs failed: {e:#}"),
            RATIO_TARGET,
            Verdict::Failed,
        ),
        (Err(_), Ok(x)) => rows.missing(
            format!("no agent figure; xargs did {} runs/s", thousands(*x)),
            RATIO_TARGET,
            Verdict::Failed,
        ),
    }
    rows.rows
}

/// Runs `true` `n` times, two at a time, with `xargs`; returns runs per second.
fn xargs_true(n: u64) -> anyhow::Result<f64> {
    let input: String = (1..=n).map(|i| format!("{i}\n")).collect();
    let t0 = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P2", "-n1", "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting xargs")?;
    child
        .stdin
        .take()
        .context("xargs has no stdin")?
        .write_all(input.as_bytes())?;
    let status = child.wait()?;
    let secs = t0.elapsed().max(Duration::from_micros(1)).as_secs_f64();
    ensure!(status.success(), "xargs exited {status}");
    Ok(n as f64 / secs)
}
