//! Failover (PostgreSQL, two or more replicas): how long background work stops when the leader
//! dies. Each round starts the replicas on a fresh database, finds the leader, kills it with
//! SIGKILL (no goodbye: its lease must run out), and polls the survivors' `GET
//! /api/v1/workers` every 10 ms until one of them shows a reaper step; the figure is that
//! step's own start time (`lastRunAt`) less the moment of the kill, both wall clock on this
//! machine. Run at the default lease TTL (10 s) and at 2 s.

use crate::suite::{Ctx, Goal, Row, Rows, Verdict};
use anyhow::{Context, bail, ensure};
use drover_client::Client;
use std::time::{Duration, Instant, SystemTime};

const SCENARIO: &str = "failover";
const TARGET: &str = "reported (bound: about one lease TTL)";
/// The lease TTLs measured: the default, and a short one.
const TTLS: [u64; 2] = [10, 2];

pub async fn failover(ctx: &Ctx, command: String, rounds: u32) -> Vec<Row> {
    let mut rows = Rows::new(SCENARIO, command);
    for ttl in TTLS {
        let mut took = Vec::new();
        let mut failed = None;
        for round in 1..=rounds {
            match one_round(ctx, ttl).await {
                Ok(t) => {
                    ctx.say(SCENARIO, format!("TTL {ttl} s, round {round}: {t:.2} s"));
                    took.push(t);
                }
                Err(e) => {
                    failed = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            rows.missing(
                format!("lease TTL {ttl} s failed: {e}"),
                TARGET,
                Verdict::Failed,
            );
            continue;
        }
        took.sort_by(f64::total_cmp);
        let median = took[took.len() / 2];
        let max = took[took.len() - 1];
        rows.add(
            format!(
                "kill -9 of the leader → first reaper step on the new leader: median {median:.2} s, \
                 max {max:.2} s over {} rounds (lease TTL {ttl} s{})",
                took.len(),
                ctx.store_note()
            ),
            median,
            TARGET,
            Goal::None,
        );
    }
    rows.rows
}

/// One kill; the seconds from it to the first reaper step on another replica.
async fn one_round(ctx: &Ctx, ttl: u64) -> anyhow::Result<f64> {
    let ttl_arg = format!("{ttl}s");
    let mut servers = ctx.start_servers(false, &["--lease-ttl", &ttl_arg]).await?;
    ensure!(servers.len() >= 2, "failover needs --replicas 2 or more");
    let clients: Vec<Client> = servers
        .iter()
        .map(|s| Client::new(&s.url).with_timeout(Duration::from_secs(5)))
        .collect();
    // The first replica to ask takes the lease at once; wait until every replica names it.
    let started = Instant::now();
    let index = loop {
        ensure!(
            started.elapsed() < Duration::from_secs(ttl * 3 + 10),
            "no leader named by every replica"
        );
        let mut views = Vec::new();
        for c in &clients {
            views.push(c.cluster().await.ok());
        }
        let leader = views.first().cloned().flatten().and_then(|v| v.leader);
        if let Some(leader) = leader
            && views.iter().all(|v| {
                v.as_ref()
                    .is_some_and(|v| v.leader.as_ref() == Some(&leader))
            })
        {
            break views
                .iter()
                .position(|v| v.as_ref().is_some_and(|v| v.replica_id == leader))
                .context("the leader is none of the replicas started")?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let killed_at = SystemTime::now();
    servers.remove(index).kill9().await;
    let rest: Vec<&Client> = (0..clients.len())
        .filter(|i| *i != index)
        .map(|i| &clients[i])
        .collect();
    let deadline = Duration::from_secs(ttl * 3 + 20);
    let took = 'poll: loop {
        if killed_at.elapsed().unwrap_or_default() > deadline {
            bail!("no reaper step on another replica within {deadline:?} of the kill");
        }
        for c in &rest {
            let Ok(workers) = c.workers().await else {
                continue;
            };
            let first_step = workers
                .iter()
                .filter(|w| w.name.contains("reaper") && w.runs > 0)
                .filter_map(|w| drover_core::time::parse(w.last_run_at.as_deref()?))
                .map(SystemTime::from)
                .filter(|at| *at > killed_at)
                .min();
            if let Some(at) = first_step {
                break 'poll at.duration_since(killed_at).unwrap_or_default();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for s in servers {
        s.stop().await;
    }
    Ok(took.as_secs_f64())
}
