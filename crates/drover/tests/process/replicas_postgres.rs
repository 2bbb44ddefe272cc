//! Several `drover server` replicas on one real PostgreSQL database, under failure: the leader
//! killed with `kill -9` while agents work a sweep, the database itself restarted mid-sweep, and
//! claimers on every replica racing for the same tasks. Whatever happens, every task is done
//! exactly once, no acknowledged change is lost, and the replicas recover by themselves.
//!
//! Each test starts its own throwaway PostgreSQL (`drover_pgtest::TempPostgres`); where
//! PostgreSQL's server binaries are not installed the tests are ignored (and fail under CI).
//! The partition test runs its replicas in network namespaces of its own (`crate::netns`),
//! where it can cut one off from the database without stopping anything.

use crate::helpers::*;
use drover_api::{BatchReportRequest, CreateJobRequest};
use drover_client::Client;
use drover_pgtest::TempPostgres;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(2);
const JOB_DEADLINE: Duration = Duration::from_secs(180);

fn postgres() -> TempPostgres {
    TempPostgres::start().unwrap_or_else(|why| missing_part("PostgreSQL", &why))
}

/// A replica named `name` on the database at `url`, with a short lease and fast reapers.
async fn replica(dir: &Path, url: &str, name: &str) -> ServerProcess {
    replica_with(dir, url, name, Launch::new()).await
}

async fn replica_with(dir: &Path, url: &str, name: &str, launch: Launch) -> ServerProcess {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let launch = launch
        // `--db` takes the URL as it takes a path.
        .db(PathBuf::from(url))
        .args(["--replica-id", name, "--lease-ttl", "2s"])
        .args(FAST_REAPERS);
    ServerProcess::start(&dir, launch).await
}

async fn replicas(dir: &Path, url: &str, n: usize) -> Vec<ServerProcess> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(replica(dir, url, &format!("r{i}")).await);
    }
    all
}

fn urls(servers: &[&ServerProcess]) -> String {
    servers
        .iter()
        .map(|s| s.base_url())
        .collect::<Vec<_>>()
        .join(",")
}

/// `n` short tasks, each reporting an objective value, retried up to 5 times, with a lease
/// short enough that the tasks of a dead agent come back within seconds.
fn short_tasks(n: i64, secs: f64) -> CreateJobRequest {
    let mut job: CreateJobRequest = serde_json::from_value(json!({
        "name": "replicas",
        "parameters": {"x": {"min": 1, "max": n}},
        "command": ["sh", "-c", "sleep \"$1\"; echo '{{\"fopt\": 1}}'", "sh", secs.to_string()],
        "maxAttempts": 5
    }))
    .unwrap();
    job.task_timeout_seconds = Some(5);
    job
}

/// The replica every replica that answers names as leader, with its epoch.
async fn leader(clients: &[Client]) -> (String, u64) {
    eventually(
        "one leader named by every replica",
        EVENT_DEADLINE,
        || async {
            let mut seen = HashSet::new();
            for c in clients {
                let view = c.cluster().await.ok()?;
                seen.insert((view.leader?, view.epoch));
            }
            (seen.len() == 1).then(|| seen.into_iter().next().unwrap())
        },
    )
    .await
}

/// Reads the database: no task was completed twice or held by two attempts at once
/// (invariant 1), and every task of `job` has a row, DONE.
fn assert_each_task_done_once(pg: &TempPostgres, job: &str, total: u64) {
    let twice = pg
        .psql(
            "postgres",
            "SELECT count(*) FROM (SELECT task_seq FROM task_attempts GROUP BY task_seq
             HAVING sum((outcome = 'COMPLETED')::int) > 1
                 OR sum((outcome = 'RUNNING')::int) > 1) t",
        )
        .unwrap();
    assert_eq!(twice, "0", "tasks completed or held twice");
    let done = pg
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM tasks WHERE job_id = '{job}' AND status = 'DONE'"),
        )
        .unwrap();
    assert_eq!(done, total.to_string(), "DONE rows of {job}");
    let completed = pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM task_attempts a JOIN tasks t ON t.seq = a.task_seq
                 WHERE t.job_id = '{job}' AND a.outcome = 'COMPLETED'"
            ),
        )
        .unwrap();
    assert_eq!(completed, total.to_string(), "completed attempts of {job}");
}

/// Three replicas, two agents spread over them; the leader dies with `kill -9`, and one agent
/// with it (so that its tasks must be reaped). Another replica leads within the lease's bound,
/// under the next epoch, its reapers take the dead agent's tasks back, and the sweep
/// completes through the survivors with each task done once.
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_finish_a_sweep_after_the_leader_is_killed() {
    let pg = postgres();
    let dir = tempfile::tempdir().unwrap();
    // Every replica is told to publish the journal to one PostgreSQL sink; only the leader of
    // the moment does.
    let sink_url = pg.create_database("journal_sink").unwrap();
    let mut servers = Vec::new();
    for i in 0..3 {
        let publish = Launch::new().args([
            "--journal-sink",
            &sink_url,
            "--journal-publish-every",
            "100ms",
            "--journal-check-interval",
            "500ms",
        ]);
        servers.push(replica_with(dir.path(), &pg.url(), &format!("r{i}"), publish).await);
    }
    let clients: Vec<Client> = servers.iter().map(|s| s.client()).collect();
    let all = urls(&servers.iter().collect::<Vec<_>>());
    let (first, epoch) = leader(&clients).await;

    const N: u64 = 120;
    let job = clients[0]
        .create_job(&short_tasks(N as i64, 0.05))
        .await
        .unwrap()
        .job_id;
    let mut doomed = AgentProcess::start(dir.path(), &all, &["--slots", "2"]);
    let _survivor = AgentProcess::start(dir.path(), &all, &["--slots", "2"]);
    eventually("a fifth of the sweep done", JOB_DEADLINE, || async {
        let j = clients[0].job(&job).await.ok()?;
        (j.completed_tasks >= N / 5).then_some(())
    })
    .await;

    // Replica `r{i}` is `servers[i]`.
    let index: usize = first.trim_start_matches('r').parse().unwrap();
    servers[index].kill9();
    doomed.kill9();
    let killed = Instant::now();
    let rest: Vec<Client> = (0..3)
        .filter(|i| *i != index)
        .map(|i| clients[i].clone())
        .collect();

    let (next, next_epoch) = eventually("another leader", EVENT_DEADLINE, || async {
        let view = rest[0].cluster().await.ok()?;
        let holder = view.leader?;
        (holder != first && view.epoch > epoch).then_some((holder, view.epoch))
    })
    .await;
    let took = killed.elapsed();
    eprintln!("{next} took over under epoch {next_epoch} {took:?} after the kill");
    // The lease runs out within one TTL of the last renewal and the next ask comes within a
    // third of one; the rest is room for a loaded machine.
    assert!(
        took < TTL * 3 + Duration::from_secs(4),
        "took over after {took:?}"
    );
    assert_eq!(next_epoch, epoch + 1);

    let done = job_reaches(&rest[0], &job, "COMPLETED", JOB_DEADLINE).await;
    assert_eq!(done.completed_tasks, N);
    assert_counts_match_tasks(&rest[1], &job).await;
    assert_each_task_done_once(&pg, &job, N);

    // Reaping resumed on the new leader: the dead agent's spot goes DOWN there (after the
    // grace a leader change gives every node, which may end after the sweep did), and its
    // steps are recorded under the new epoch.
    eventually("the dead agent's spot DOWN", EVENT_DEADLINE, || async {
        let spots = rest[0].spots().await.ok()?;
        spots.iter().any(|s| s.status == "DOWN").then_some(())
    })
    .await;
    let actions = pg
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM cluster_actions WHERE epoch = {next_epoch} AND replica_id = '{next}'"),
        )
        .unwrap();
    assert_ne!(
        actions, "0",
        "no background step recorded under the new epoch"
    );
    let old_after = pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM cluster_actions a WHERE a.epoch = {epoch}
                 AND a.at > (SELECT min(at) FROM cluster_actions WHERE epoch = {next_epoch})"
            ),
        )
        .unwrap();
    assert_eq!(
        old_after, "0",
        "the old epoch acted after the new one began"
    );
    // Three replicas wrote the journal, across a leader's death: its numbers have no gap.
    let numbered = pg
        .psql(
            "postgres",
            "SELECT count(*) || ' ' || max(seq) || ' ' || (SELECT seq FROM journal_head)
             FROM journal",
        )
        .unwrap();
    let [count, max, head]: [u64; 3] = numbered
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    assert!(count > N, "{numbered}");
    assert_eq!((count, max), (head, head), "entries 1..=head, each once");

    // The sink holds the whole journal, each entry once and the same as the store's, though
    // its publisher died half way: the new leader went on from what was recorded.
    let sink = drover_server::journal::open_sink(
        &drover_server::journal::SinkSpec::Postgres(sink_url.clone()),
        Duration::from_secs(5),
        None,
    )
    .await
    .unwrap();
    let published = eventually("the journal published to the sink", EVENT_DEADLINE, || {
        let sink = sink.clone();
        async move {
            let entries = drover_server::journal::read_back(&[("sink".into(), sink)], |_, _, _| {})
                .await
                .ok()?;
            (entries.last().map(|e| e.seq) >= Some(head)).then_some(entries)
        }
    })
    .await;
    let stored = rest[0]
        .journal(0, 1000, Duration::ZERO)
        .await
        .unwrap()
        .entries;
    let n = published.len().min(stored.len());
    assert!(n > 0);
    assert_eq!(
        published[..n],
        stored[..n],
        "the sink holds the store's entries"
    );
}

/// The database stops at once (as a crash would) while two replicas and an agent work a sweep,
/// and comes back on the same port. The replicas answer 503 on health while it is away and
/// recover without being restarted; the sweep completes with each task done once.
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_by_themselves_when_the_database_restarts_mid_sweep() {
    let pg = postgres();
    let dir = tempfile::tempdir().unwrap();
    let servers = replicas(dir.path(), &pg.url(), 2).await;
    let clients: Vec<Client> = servers.iter().map(|s| s.client()).collect();
    let all = urls(&servers.iter().collect::<Vec<_>>());

    const N: u64 = 80;
    let job = clients[0]
        .create_job(&short_tasks(N as i64, 0.05))
        .await
        .unwrap()
        .job_id;
    let _agent = AgentProcess::start(dir.path(), &all, &["--slots", "2"]);
    eventually("some of the sweep done", JOB_DEADLINE, || async {
        let j = clients[0].job(&job).await.ok()?;
        (j.completed_tasks >= N / 5).then_some(())
    })
    .await;

    pg.crash().unwrap();
    for c in &clients {
        eventually(
            "health to say the database is away",
            EVENT_DEADLINE,
            || async { c.health().await.is_err().then_some(()) },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.start_again().unwrap();
    for c in &clients {
        eventually("health to recover", EVENT_DEADLINE, || async {
            c.health().await.ok().filter(|h| h.status == "healthy")
        })
        .await;
    }

    let done = job_reaches(&clients[1], &job, "COMPLETED", JOB_DEADLINE).await;
    assert_eq!(done.completed_tasks, N);
    assert_counts_match_tasks(&clients[0], &job).await;
    assert_each_task_done_once(&pg, &job, N);
}

/// Eight claimers, each on one of three replicas, drain 20,000 tasks through the batched claim
/// and report routes: every attempt is handed to one claimer only, and every task is completed
/// exactly once, by what the claimers saw and by what the database holds.
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_claimers_on_three_replicas_take_each_of_20000_tasks_once() {
    const N: u64 = 20_000;
    const CLAIMERS: usize = 8;
    let pg = postgres();
    let dir = tempfile::tempdir().unwrap();
    let servers = replicas(dir.path(), &pg.url(), 3).await;
    let clients: Vec<Client> = servers.iter().map(|s| s.client()).collect();
    let mut job = short_tasks(N as i64, 0.0);
    job.task_timeout_seconds = Some(600);
    let job = clients[0].create_job(&job).await.unwrap().job_id;

    let claimed: Arc<Mutex<HashMap<(String, u32), usize>>> = Arc::default();
    let completed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut claimers = Vec::new();
    for i in 0..CLAIMERS {
        let client = clients[i % clients.len()].clone();
        let (claimed, completed) = (claimed.clone(), completed.clone());
        claimers.push(tokio::spawn(async move {
            let spot = hello(&client).await;
            // A live agent's heartbeats; the replicas' reapers are fast.
            let _beats = Heartbeats::start(client.clone(), &spot, Duration::from_millis(500));
            let mut empty = 0;
            while empty < 3 {
                let tasks = client.claim(&spot, 50).await.expect("claim");
                if tasks.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                empty = 0;
                {
                    let mut seen = claimed.lock().unwrap();
                    for t in &tasks {
                        if let Some(other) = seen.insert((t.id.clone(), t.attempt), i) {
                            panic!(
                                "attempt {} of {} went to claimers {other} and {i}",
                                t.attempt, t.id
                            );
                        }
                    }
                }
                let reports = tasks
                    .iter()
                    .map(|t| {
                        json!({"taskId": t.id, "outcome": "complete", "attempt": t.attempt,
                               "fopt": 1.0, "runtimeMs": 1})
                    })
                    .collect::<Vec<_>>();
                let request: BatchReportRequest =
                    serde_json::from_value(json!({"spotId": spot, "reports": reports})).unwrap();
                let answer = client.report_batch(&request).await.expect("report batch");
                let mut done = completed.lock().unwrap();
                for r in answer.results {
                    assert!(r.success, "a report of claimer {i} was refused: {r:?}");
                    done.push(r.task_id);
                }
            }
        }));
    }
    for c in claimers {
        c.await.unwrap();
    }

    let completed = completed.lock().unwrap().clone();
    let unique: HashSet<&String> = completed.iter().collect();
    assert_eq!(unique.len(), completed.len(), "a task was completed twice");
    assert_eq!(completed.len() as u64, N, "tasks completed");
    assert_eq!(claimed.lock().unwrap().len() as u64, N, "attempts claimed");
    let j = clients[2].job(&job).await.unwrap();
    assert_eq!((j.status.as_str(), j.completed_tasks), ("COMPLETED", N));
    assert_each_task_done_once(&pg, &job, N);
}

/// `drover_cluster_leader` from a replica's `/metrics` (answered from memory, so a replica cut
/// off from the database still says whether it acts); `None` when it does not answer.
async fn leads(http: &reqwest::Client, server: &ServerProcess) -> Option<bool> {
    let text = http
        .get(format!("{}/metrics", server.base_url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("drover_cluster_leader "))?;
    Some(line.ends_with(" 1"))
}

/// A network partition, not a crash: the leader keeps running but stops hearing the database
/// (its packets dropped, nothing reset). It stops acting before the lease it last renewed can
/// run out; the other replica takes over under the next epoch only after that, so the two
/// never act at once; reaping goes on under the new leader; and once the link heals, the old
/// leader answers again, as a follower naming the new one.
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[cfg_attr(
    missing_netns,
    ignore = "network namespaces need root, `ip` (iproute2) and `iptables`"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_stops_before_its_lease_runs_out() {
    let net =
        crate::netns::Net::create(2).unwrap_or_else(|why| missing_part("network namespaces", &why));
    let pg = TempPostgres::start_listening_also(&[net.host(0).gateway, net.host(1).gateway])
        .unwrap_or_else(|why| missing_part("PostgreSQL", &why));
    let dir = tempfile::tempdir().unwrap();
    // Each replica dials the database through its own link; a short connect timeout also
    // bounds how long a dropped connection's packets may go unanswered.
    let in_ns = |i: usize| {
        let h = net.host(i);
        (
            format!("postgres://postgres@{}:{}/postgres", h.gateway, pg.port()),
            Launch::new()
                .in_namespace(h)
                .args(["--db-connect-timeout", "2s"]),
        )
    };
    let (url_a, launch_a) = in_ns(0);
    let a = replica_with(dir.path(), &url_a, "a", launch_a).await;
    let (ca, http) = (
        a.client(),
        reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let epoch = eventually("a to lead", EVENT_DEADLINE, || async {
        let view = ca.cluster().await.ok()?;
        (view.role == "leader").then_some(view.epoch)
    })
    .await;
    let (url_b, launch_b) = in_ns(1);
    let b = replica_with(dir.path(), &url_b, "b", launch_b).await;
    let cb = b.client();
    assert_eq!(
        leader(&[ca.clone(), cb.clone()]).await,
        ("a".to_string(), epoch)
    );

    // A step of a's term: a spot that never heartbeats is declared DOWN.
    hello(&ca).await;
    eventually(
        "a's reaper to declare the silent spot DOWN",
        EVENT_DEADLINE,
        || async {
            let spots = cb.spots().await.ok()?;
            spots.iter().any(|s| s.status == "DOWN").then_some(())
        },
    )
    .await;
    // The step's record is written once the step has committed: the cut comes after it.
    eventually("a's step to be recorded", EVENT_DEADLINE, || async {
        let recorded = pg
            .psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM cluster_actions WHERE epoch = {epoch} \
                     AND replica_id = 'a'"
                ),
            )
            .ok()?;
        (recorded != "0").then_some(())
    })
    .await;

    net.cut_port(0, pg.port()).unwrap();
    let cut = Instant::now();
    // Requests sent at the cut, on connections the pool already holds, must not hang on them.
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/api/v1/spots", a.base_url());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                http.get(url).send().await.map(|r| r.status())
            })
        })
        .collect();
    let mut a_stopped = None;
    let took_over = loop {
        assert!(cut.elapsed() < EVENT_DEADLINE, "b did not take over");
        let a_leads = leads(&http, &a).await;
        let b_leads = leads(&http, &b).await;
        assert!(
            !(a_leads == Some(true) && b_leads == Some(true)),
            "a and b both lead {:?} after the cut",
            cut.elapsed()
        );
        if a_leads == Some(false) && a_stopped.is_none() {
            a_stopped = Some(cut.elapsed());
        }
        if b_leads == Some(true) {
            break cut.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a_stopped = a_stopped.expect("a stopped leading before b led");
    eprintln!("a stopped acting {a_stopped:?} after the cut; b led {took_over:?} after it");
    // Its last renewal was sent before the cut, so its lease runs out within one TTL of it.
    assert!(a_stopped < TTL, "a acted until {a_stopped:?} after the cut");
    assert!(
        took_over < TTL * 3 + Duration::from_secs(4),
        "took over after {took_over:?}"
    );
    let view = cb.cluster().await.unwrap();
    assert_eq!((view.leader.as_deref(), view.epoch), (Some("b"), epoch + 1));
    for request in in_flight {
        let answer = request.await.unwrap();
        assert!(
            answer
                .as_ref()
                .is_ok_and(|s| s.is_success() || s.as_u16() == 503),
            "a request to a at the cut: {answer:?}"
        );
    }
    // Cut off, a cannot vouch for the database: its health answers 503 within the timeouts
    // (a dropped connection's packets go unanswered, which must not hold the request).
    let slow = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let asked = Instant::now();
    let health = slow
        .get(format!("{}/api/v1/health", a.base_url()))
        .send()
        .await
        .expect("a's health to answer while cut off");
    let status = health.status();
    let body = health.text().await.unwrap_or_default();
    eprintln!(
        "a's health while cut off: {status} after {:?}: {body}",
        asked.elapsed()
    );
    assert_eq!(status, 503, "{body}");

    // Reaping goes on under b: a spot registered there and silent goes DOWN.
    let silent = hello(&cb).await;
    eventually(
        "b's reaper to declare its silent spot DOWN",
        EVENT_DEADLINE,
        || async {
            let spots = cb.spots().await.ok()?;
            spots
                .iter()
                .any(|s| s.id == silent && s.status == "DOWN")
                .then_some(())
        },
    )
    .await;

    net.heal(0).unwrap();
    eventually("a to follow b once healed", EVENT_DEADLINE, || async {
        let view = ca.cluster().await.ok()?;
        (view.role == "follower" && view.leader.as_deref() == Some("b") && view.epoch == epoch + 1)
            .then_some(())
    })
    .await;
    eventually("a's health to recover", EVENT_DEADLINE, || async {
        ca.health().await.ok().filter(|h| h.status == "healthy")
    })
    .await;
    assert_eq!(leads(&http, &a).await, Some(false));
    assert_eq!(leads(&http, &b).await, Some(true));

    // What the database recorded: steps of both terms, none of the old after the new began.
    let count = |sql: String| pg.psql("postgres", &sql).unwrap();
    assert_ne!(
        count(format!(
            "SELECT count(*) FROM cluster_actions WHERE epoch = {epoch} AND replica_id = 'a'"
        )),
        "0"
    );
    assert_ne!(
        count(format!(
            "SELECT count(*) FROM cluster_actions WHERE epoch = {} AND replica_id = 'b'",
            epoch + 1
        )),
        "0"
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM cluster_actions WHERE epoch <> {} AND at > \
             (SELECT min(at) FROM cluster_actions WHERE epoch = {})",
            epoch + 1,
            epoch + 1
        )),
        "0",
        "a step of another term after the new one began"
    );
}
