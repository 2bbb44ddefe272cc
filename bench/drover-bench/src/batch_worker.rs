//! The batched worker process (hidden `batch-worker` subcommand) of the burn-down scenario: it
//! registers a spot, heartbeats every 2 s, and loops: hand in every result of the last batch
//! and take up to `--max-tasks` new tasks, waiting up to `--wait-ms` for work. The "work" is
//! reading the payload. It never runs a process per task: it measures coordination alone.
//!
//! How results go in and tasks come out is one function, [`Route::step`]: `report` sends
//! `POST /internal/v1/tasks/report` (all results in one request) then `POST
//! /internal/v1/tasks/claim`; `exchange` does both in one `POST /internal/v1/tasks/exchange`.
//! It speaks the wire format with plain JSON so that it does not depend on which fields this
//! build's `drover-api` has (`waitMs`, the exchange types).

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use drover_api::{BatchReport, ClaimedTask, HeartbeatRequest, HelloRequest, ReportVerb};
use drover_client::Client;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Route {
    /// `POST /internal/v1/tasks/report`, then `POST /internal/v1/tasks/claim`.
    Report,
    /// One `POST /internal/v1/tasks/exchange`.
    Exchange,
}

#[derive(Debug, Args)]
pub struct BatchWorkerArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub index: u32,
    #[arg(long, default_value_t = 1000)]
    pub max_tasks: u32,
    /// How long a claim may wait for work on the server (`waitMs`).
    #[arg(long, default_value_t = 1000)]
    pub wait_ms: u64,
    #[arg(long, value_enum, default_value_t = Route::Exchange)]
    pub route: Route,
    /// Exit after this many seconds whatever happens.
    #[arg(long)]
    pub max_lifetime: u64,
}

/// One spot's connection to the server on the agent routes.
pub struct Spot {
    pub http: reqwest::Client,
    pub url: String,
    pub id: String,
}

impl Spot {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("POST {path}"))?;
        if !status.is_success() {
            bail!("POST {path} answered {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {path} answered {text}"))
    }

    /// `POST /internal/v1/tasks/claim` with `waitMs` (a server without long-poll ignores it).
    pub async fn claim(&self, max: u32, wait_ms: u64) -> anyhow::Result<Vec<ClaimedTask>> {
        let body = json!({"spotId": self.id, "maxTasks": max, "waitMs": wait_ms});
        let v = self.post("/internal/v1/tasks/claim", &body).await?;
        tasks_of(v)
    }

    /// `POST /internal/v1/tasks/report`; the number of reports not answered 200.
    pub async fn report(&self, reports: &[BatchReport]) -> anyhow::Result<u64> {
        let body = json!({"spotId": self.id, "reports": reports});
        let v = self.post("/internal/v1/tasks/report", &body).await?;
        refused(&v)
    }

    /// `POST /internal/v1/tasks/exchange`: the reports, and up to `max` new tasks.
    pub async fn exchange(
        &self,
        reports: &[BatchReport],
        max: u32,
        wait_ms: u64,
    ) -> anyhow::Result<(u64, Vec<ClaimedTask>)> {
        let body =
            json!({"spotId": self.id, "reports": reports, "maxTasks": max, "waitMs": wait_ms});
        let v = self.post("/internal/v1/tasks/exchange", &body).await?;
        Ok((refused(&v)?, tasks_of(v)?))
    }
}

fn tasks_of(mut v: Value) -> anyhow::Result<Vec<ClaimedTask>> {
    serde_json::from_value(v.get_mut("tasks").map(Value::take).unwrap_or_default())
        .context("reading the claimed tasks")
}

/// Reports of a batch answer that were not 200.
fn refused(v: &Value) -> anyhow::Result<u64> {
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .context("the answer has no results")?;
    Ok(results
        .iter()
        .filter(|r| r.get("status").and_then(Value::as_u64) != Some(200))
        .count() as u64)
}

impl Route {
    /// Hands in `done` and takes up to `max` tasks: the one place the route matters. Returns
    /// the reports the server refused and the new tasks.
    pub async fn step(
        self,
        spot: &Spot,
        done: &[BatchReport],
        max: u32,
        wait_ms: u64,
    ) -> anyhow::Result<(u64, Vec<ClaimedTask>)> {
        match self {
            Route::Report => {
                let refused = if done.is_empty() {
                    0
                } else {
                    spot.report(done).await?
                };
                Ok((refused, spot.claim(max, wait_ms).await?))
            }
            Route::Exchange => spot.exchange(done, max, wait_ms).await,
        }
    }
}

/// The completion of a task, as a batch report.
pub fn completion(task: &ClaimedTask) -> BatchReport {
    BatchReport {
        attempt: Some(task.attempt),
        runtime_ms: Some(0),
        ..BatchReport::new(task.id.clone(), ReportVerb::Complete)
    }
}

/// Registers a spot and keeps it alive with a heartbeat every 2 s until `stop`; counts the
/// heartbeats that failed.
pub async fn register(
    url: &str,
    name: String,
    stop: Arc<AtomicBool>,
    heartbeat_errors: Arc<AtomicU64>,
) -> anyhow::Result<Spot> {
    let client = Client::new(url);
    let id = client
        .hello(&HelloRequest {
            ip_address: "127.0.0.1".into(),
            hostname: Some(name),
            total_cores: Some(1),
            ..Default::default()
        })
        .await
        .context("registering the spot")?
        .spot_id;
    spawn_heartbeats(client, id.clone(), stop, heartbeat_errors);
    Ok(Spot {
        http: reqwest::Client::new(),
        url: url.to_string(),
        id,
    })
}

/// Heartbeats `spot_id` every 2 s until `stop` is set, counting the heartbeats that failed.
pub fn spawn_heartbeats(
    client: Client,
    spot_id: String,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tick.tick().await;
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let req = HeartbeatRequest {
                spot_id: spot_id.clone(),
                ip_address: Some("127.0.0.1".into()),
                running_tasks: Some(0),
                total_cores: Some(1),
                ..Default::default()
            };
            if client.heartbeat(&req).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

pub async fn run(args: BatchWorkerArgs) -> anyhow::Result<()> {
    let stop = crate::stop_flag()?;
    let deadline = Instant::now() + Duration::from_secs(args.max_lifetime);
    let heartbeat_errors = Arc::new(AtomicU64::new(0));
    let spot = register(
        &args.url,
        format!("drover-bench-batch-worker-{}", args.index),
        stop.clone(),
        heartbeat_errors.clone(),
    )
    .await?;

    let (mut claims, mut empty_claims, mut claimed, mut completed, mut errors) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut done: Vec<BatchReport> = Vec::new();
    let wait = Duration::from_millis(args.wait_ms);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let asked = Instant::now();
        match args
            .route
            .step(&spot, &done, args.max_tasks, args.wait_ms)
            .await
        {
            Ok((refused, tasks)) => {
                completed += done.len() as u64 - refused;
                if refused > 0 {
                    errors += refused;
                    first_error.get_or_insert_with(|| format!("{refused} reports refused"));
                }
                done.clear();
                claims += 1;
                if tasks.is_empty() {
                    empty_claims += 1;
                    // A server that does not long-poll answers at once: back off a little
                    // rather than spin.
                    if asked.elapsed() < wait / 2 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                claimed += tasks.len() as u64;
                for task in &tasks {
                    let _payload: Value = serde_json::from_str(&task.payload).unwrap_or_default();
                    done.push(completion(task));
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
                // The batch is lost with the failed request only if it never arrived; the
                // server fences a repeat, so sending it again is safe.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // What is still in hand goes in before the counts are printed.
    if !done.is_empty() && spot.report(&done).await.is_ok() {
        completed += done.len() as u64;
    }
    println!(
        "{}",
        json!({
            "index": args.index,
            "spot": spot.id,
            "claims": claims,
            "emptyClaims": empty_claims,
            "claimed": claimed,
            "completed": completed,
            "errors": errors,
            "heartbeatErrors": heartbeat_errors.load(Ordering::Relaxed),
            "firstError": first_error,
        })
    );
    Ok(())
}
