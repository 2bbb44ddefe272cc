//! The priority router in RabbitMQ mode: a private broker (`drover-amqptest`), a `drover
//! server --dispatch rabbitmq`, and N jobs of mixed priority registered over HTTP
//! (`POST /api/jobs/register`) by [`IN_FLIGHT`] concurrent clients. Figures:
//! - register → published: from the first registration to the publisher's confirmed count
//!   (`jobs_published` of the `amqp-publisher` worker in `GET /api/v1/workers`) reaching N,
//!   in jobs/s; the registrations' own rate beside it;
//! - end to end: [`CONSUMERS`] Python workers written with pika (the tests' independent
//!   worker, `crates/drover-server/tests/api/priority_worker.py`), each pulling high first and
//!   reporting `running` and `completed` over HTTP, until every job is completed in drover;
//! - the floor: the same registrations against a bare server that publishes each at once and
//!   answers on its confirm, recording nothing (`amqp_floor.rs`).
//!
//! The clients are tokio tasks of this process sharing one HTTP client.

use crate::server::{Server, ServerOpts};
use crate::stats::{CpuMeter, thousands};
use crate::suite::{Ctx, Goal, Row, Rows, Verdict, floor_row};
use anyhow::{Context, bail, ensure};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SCENARIO: &str = "priority-router";
const IN_FLIGHT: usize = 64;
const CONSUMERS: usize = 2;
const TARGET: &str = "≥ 10,000 jobs/s";

struct Figures {
    register_per_s: f64,
    published_per_s: f64,
    /// From the first registration to the last confirm: the machine's CPU and the server's.
    cpu: String,
    end_to_end_per_s: Option<f64>,
    consumer_note: String,
}

pub async fn priority(ctx: &Ctx, command: String, n: u32) -> Vec<Row> {
    let mut rows = Rows::new(SCENARIO, command);
    // Without a broker the scenario cannot run; under CI that is a failure like any other.
    if let Some(why) = drover_amqptest::missing()
        && std::env::var_os("CI").is_none()
    {
        rows.missing(format!("not run: {why}"), TARGET, Verdict::Skipped);
        return rows.rows;
    }
    match run(ctx, &ctx.drover, n, true).await {
        Ok(f) => {
            rows.add(
                format!(
                    "{} jobs/s from registration to published with confirms ({} jobs of mixed priority, {IN_FLIGHT} HTTP clients; registrations alone {} /s{})",
                    thousands(f.published_per_s),
                    thousands(n as f64),
                    thousands(f.register_per_s),
                    f.cpu
                ),
                f.published_per_s,
                TARGET,
                Goal::AtLeast(10_000.0),
            );
            match f.end_to_end_per_s {
                Some(rate) => rows.add(
                    format!(
                        "{} jobs/s end to end with {CONSUMERS} Python pika workers (running and completed over HTTP per job)",
                        thousands(rate)
                    ),
                    rate,
                    "reported",
                    Goal::None,
                ),
                None => rows.missing(f.consumer_note, "reported", Verdict::Reported),
            }
        }
        Err(e) => rows.missing(format!("failed: {e:#}"), TARGET, Verdict::Failed),
    }
    floor(ctx, &mut rows, n).await;
    rows.rows
}

/// The same registrations against the floor (`amqp_floor.rs`): each published straight to the
/// broker and answered on its confirm, nothing recorded.
async fn floor(ctx: &Ctx, rows: &mut Rows<'_>, n: u32) {
    let what = (
        SCENARIO,
        "published at once",
        "none: HTTP in and confirmed publishing out, here",
    );
    floor_row(ctx, rows, what, |exe| async move {
        let f = run(ctx, &exe, n, false).await?;
        let figure = format!(
            "{} jobs/s from registration to published with confirms: a bare server publishing \
             each registration as it comes and answering on its confirm, recording nothing{}",
            thousands(f.published_per_s),
            f.cpu
        );
        Ok((f.published_per_s, figure))
    })
    .await;
}

fn venv_python() -> PathBuf {
    match std::env::var_os("DROVER_TEST_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/drover/venv")
        }
    }
    .join("bin/python")
}

fn worker_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/drover-server/tests/api/priority_worker.py")
}

/// The scenario against `program` started as `drover server`; the pika workers drain the
/// queues afterwards when `consumers` is set.
async fn run(ctx: &Ctx, program: &Path, n: u32, consumers: bool) -> anyhow::Result<Figures> {
    if let Some(why) = drover_amqptest::missing() {
        bail!("no RabbitMQ broker: {why}");
    }
    ctx.say(SCENARIO, "starting a private RabbitMQ broker");
    let broker = tokio::task::spawn_blocking(drover_amqptest::Broker::start)
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let url = broker.url();
    let server = Server::start(&ServerOpts {
        drover: program,
        strace: false,
        extra: &["--dispatch", "rabbitmq", "--amqp-url", &url],
        db_dir: ctx.db_dir(),
        db_url: None,
    })
    .await?;
    let result = measure(ctx, &server, &url, n, consumers).await;
    server.stop().await;
    drop(broker);
    result
}

/// The publisher's confirmed count, read from the worker board (`GET /api/v1/workers`), which
/// costs the server nothing to answer (a scrape of `/metrics` would also count the contract's
/// jobs every few seconds).
async fn published(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let board: drover_api::WorkerList = http
        .get(format!("{base}/api/v1/workers"))
        .send()
        .await?
        .json()
        .await?;
    Ok(board
        .workers
        .iter()
        .find(|w| w.name == "amqp-publisher")
        .and_then(|w| w.totals.get("jobs_published").copied())
        .unwrap_or(0))
}

async fn completed(http: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = http
        .get(format!("{base}/api/v1/health"))
        .send()
        .await?
        .json()
        .await?;
    let pending = v["pendingTasks"].as_u64().unwrap_or(0);
    let running = v["runningTasks"].as_u64().unwrap_or(0);
    Ok(pending + running)
}

async fn measure(
    ctx: &Ctx,
    server: &Server,
    amqp: &str,
    n: u32,
    consumers: bool,
) -> anyhow::Result<Figures> {
    let http = reqwest::Client::new();
    let base = server.url.clone();
    ctx.say(
        SCENARIO,
        format!("registering {} jobs", thousands(n as f64)),
    );
    // IN_FLIGHT clients, each registering the next job as soon as its last was answered.
    // Bodies are written as text: the load generator should spend its CPU on the requests,
    // not on building JSON trees (it shares the machine with the server and the broker).
    let url = format!("{base}/api/jobs/register");
    let next = Arc::new(AtomicU32::new(0));
    let meter = CpuMeter::start(server);
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (http, url, next) = (http.clone(), url.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let priority = [1, 5, 10][i as usize % 3];
                let body = format!(
                    r#"{{"id":"bench-{i}","type":"calculate","priority":{priority},"payload":{{"numbers":[{i},1,2]}}}}"#
                );
                let r = http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await?;
                ensure!(
                    r.status().as_u16() == 202,
                    "registration answered {}",
                    r.status()
                );
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let registered = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if published(&http, &base).await? >= u64::from(n) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not every job was published within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to_published = t.elapsed();
    let cpu = meter.note(server, u64::from(n), "job");
    ctx.say(
        SCENARIO,
        format!(
            "registered in {:.2} s, all published in {:.2} s",
            registered.as_secs_f64(),
            to_published.as_secs_f64()
        ),
    );

    let python = venv_python();
    let pika = std::process::Command::new(&python)
        .args(["-c", "import pika"])
        .status()
        .is_ok_and(|s| s.success());
    if !consumers || !pika {
        return Ok(Figures {
            register_per_s: f64::from(n) / registered.as_secs_f64(),
            published_per_s: f64::from(n) / to_published.as_secs_f64(),
            cpu,
            end_to_end_per_s: None,
            consumer_note: format!(
                "end to end not run: {} has no pika (scripts/test makes the virtualenv)",
                python.display()
            ),
        });
    }
    ctx.say(
        SCENARIO,
        format!("{CONSUMERS} pika workers draining the queues"),
    );
    let t = Instant::now();
    let mut workers = Vec::new();
    for w in 0..CONSUMERS {
        let child = tokio::process::Command::new(&python)
            .arg(worker_script())
            .args(["--amqp", amqp, "--api", &base])
            .args(["--worker-id", &format!("bench-py-{w}"), "--idle-exit", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a pika worker")?;
        workers.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if completed(&http, &base).await? == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the workers did not finish within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end_to_end = t.elapsed();
    for mut w in workers {
        let _ = w.kill().await;
    }
    Ok(Figures {
        register_per_s: f64::from(n) / registered.as_secs_f64(),
        published_per_s: f64::from(n) / to_published.as_secs_f64(),
        cpu,
        end_to_end_per_s: Some(f64::from(n) / end_to_end.as_secs_f64()),
        consumer_note: String::new(),
    })
}
