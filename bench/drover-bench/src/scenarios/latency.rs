//! Add-to-start latency: one worker waits for work with a long-polling claim (`waitMs`), the
//! bench submits one-task jobs one at a time, and each latency runs from just before the submit
//! request to the moment the worker has the task in hand. The next job is submitted only once
//! the worker is waiting again. A server that ignores `waitMs` answers an empty claim at once;
//! the worker then polls every [`POLL_FALLBACK`], and the row says so.

use crate::batch_worker::{self, Spot};
use crate::server::{Server, ServerOpts};
use crate::stats::{fmt_ms, ms, percentile};
use crate::suite::{Ctx, Goal, Row, Rows, Verdict};
use anyhow::{Context, bail};
use drover_api::CreateJobRequest;
use drover_client::Client;
use serde_json::{Map, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const SCENARIO: &str = "add-to-start";
const WAIT_MS: u64 = 30_000;
const POLL_FALLBACK: Duration = Duration::from_millis(10);
/// Longest wait for one job to reach the worker.
const PER_JOB: Duration = Duration::from_secs(10);
const WARMUP: u32 = 10;

enum Seen {
    /// The worker is about to ask for work.
    Claiming,
    /// The worker has this job's task.
    Got(String, Instant),
}

pub async fn add_to_start(ctx: &Ctx, command: String, jobs: u32) -> Vec<Row> {
    let mut rows = Rows::new(SCENARIO, command);
    match run(ctx, jobs).await {
        Ok((samples, long_polled)) => {
            let how = if long_polled {
                "the server long-polled"
            } else {
                "the server answered empty claims at once (no long-poll): the worker polled \
                 every 10 ms"
            };
            let p50 = percentile(&samples, 0.5).map_or(f64::NAN, ms);
            let p99 = percentile(&samples, 0.99).map_or(f64::NAN, ms);
            rows.add(
                format!("p50 {} ({} jobs; {how})", fmt_ms(p50), samples.len()),
                p50,
                "p50 ≤ 2 ms",
                Goal::AtMost(2.0),
            );
            rows.add(
                format!("p99 {}", fmt_ms(p99)),
                p99,
                "p99 ≤ 10 ms",
                Goal::AtMost(10.0),
            );
        }
        Err(e) => rows.missing(
            format!("failed: {e:#}"),
            "p50 ≤ 2 ms, p99 ≤ 10 ms",
            Verdict::Failed,
        ),
    }
    rows.rows
}

async fn run(ctx: &Ctx, jobs: u32) -> anyhow::Result<(Vec<Duration>, bool)> {
    let server = Server::start(&ServerOpts {
        drover: &ctx.drover,
        strace: false,
        extra: &[],
        db_dir: ctx.db_dir(),
        db_url: None,
    })
    .await?;
    let result = measure(&server, jobs).await;
    server.stop().await;
    result
}

async fn measure(server: &Server, jobs: u32) -> anyhow::Result<(Vec<Duration>, bool)> {
    let stop = Arc::new(AtomicBool::new(false));
    let spot = batch_worker::register(
        &server.url,
        "drover-bench-waiting-worker".into(),
        stop.clone(),
        Arc::new(AtomicU64::new(0)),
    )
    .await?;
    let spot = Spot {
        http: reqwest::Client::builder()
            .timeout(Duration::from_millis(WAIT_MS + 10_000))
            .build()?,
        ..spot
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let not_waited = Arc::new(AtomicU64::new(0));
    let worker = tokio::spawn(wait_for_work(spot, tx, stop.clone(), not_waited.clone()));
    let client = Client::new(&server.url).with_timeout(Duration::from_secs(30));
    let result = async {
        let mut samples = Vec::with_capacity(jobs as usize);
        for i in 0..WARMUP + jobs {
            // The worker is waiting (its claim sent, or for a polling worker, between polls).
            loop {
                match tokio::time::timeout(PER_JOB, rx.recv()).await {
                    Ok(Some(Seen::Claiming)) => break,
                    Ok(Some(Seen::Got(..))) => continue,
                    Ok(None) => bail!("the worker stopped"),
                    Err(_) => bail!("the worker did not ask for work within {PER_JOB:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            let t0 = Instant::now();
            let job = client
                .create_job(&one_task_job(i))
                .await
                .context("submitting a job")?
                .job_id;
            let got = loop {
                match tokio::time::timeout(PER_JOB, rx.recv()).await {
                    Ok(Some(Seen::Got(id, at))) if id == job => break at,
                    Ok(Some(_)) => continue,
                    Ok(None) => bail!("the worker stopped"),
                    Err(_) => bail!(
                        "job {} was not received within {PER_JOB:?} of its submission",
                        i + 1
                    ),
                }
            };
            if i >= WARMUP {
                samples.push(got.saturating_duration_since(t0));
            }
        }
        Ok(samples)
    }
    .await;
    stop.store(true, Ordering::SeqCst);
    worker.abort();
    Ok((result?, not_waited.load(Ordering::Relaxed) == 0))
}

fn one_task_job(i: u32) -> CreateJobRequest {
    CreateJobRequest {
        name: Some("add-to-start".into()),
        parameters: Some(Map::from_iter([("i".to_string(), json!([i]))])),
        ..Default::default()
    }
}

/// The waiting worker: claim one task with `waitMs`, say when it has one, report it done.
async fn wait_for_work(
    spot: Spot,
    seen: mpsc::UnboundedSender<Seen>,
    stop: Arc<AtomicBool>,
    not_waited: Arc<AtomicU64>,
) {
    let wait = Duration::from_millis(WAIT_MS);
    while !stop.load(Ordering::SeqCst) {
        if seen.send(Seen::Claiming).is_err() {
            return;
        }
        let asked = Instant::now();
        match spot.claim(1, WAIT_MS).await {
            Ok(tasks) if tasks.is_empty() => {
                if asked.elapsed() < wait / 2 {
                    not_waited.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(POLL_FALLBACK).await;
                }
            }
            Ok(tasks) => {
                let at = Instant::now();
                for t in &tasks {
                    let _ = seen.send(Seen::Got(t.job_id.clone(), at));
                }
                let done: Vec<_> = tasks.iter().map(batch_worker::completion).collect();
                let _ = spot.report(&done).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
