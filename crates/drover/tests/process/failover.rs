//! Several server URLs: the agent and the CLI spread over them and go on to another when one
//! cannot be used. Two `drover server` processes cannot share one SQLite file, so the replicas
//! here are relays: TCP forwarders on ports of their own in front of one server, each of which
//! can be stopped (its port closed, its connections cut) as a replica dies.

use crate::helpers::*;
use drover_api::CreateJobRequest;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

const JOB_DEADLINE: Duration = Duration::from_secs(120);

/// A relay on a loopback port to `backend`, counting the connections it carried.
struct Relay {
    url: String,
    connections: Arc<AtomicUsize>,
    /// Its accept loop and every connection it carries, to cut them all at once.
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start(backend: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let connections = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (count, held) = (connections.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let carry = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", backend)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(carry.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Relay {
            url,
            connections,
            tasks,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The replica dies: its port refuses connections and every open one is cut.
    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

fn sleepy(n: i64, secs: f64) -> CreateJobRequest {
    let mut job: CreateJobRequest = serde_json::from_value(json!({
        "parameters": {"x": {"min": 1, "max": n}},
        "command": ["sh", "-c", "sleep \"$1\"; echo '{{\"fopt\": 1}}'", "sh", secs.to_string()],
        "maxAttempts": 5
    }))
    .unwrap();
    // A claim whose answer is lost with a replica comes back when its lease ends.
    job.task_timeout_seconds = Some(5);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_goes_on_past_an_unreachable_server_and_names_every_url_when_none_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let both = format!("{dead},{}", server.base_url());

    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "name = \"n\"\ncommand = [\"true\"]\n[parameters]\nx = [1, 2]\n",
    )
    .unwrap();
    // A submission that could not connect created nothing, so it goes on to the next server.
    let mut submit = drover_command(dir.path());
    submit.arg("submit").arg(&job).env("DROVER_SERVER", &both);
    let run = run_to_exit(submit, dir.path(), "submit", EXIT_DEADLINE);
    assert!(run.status.success(), "{run}");
    let mut list = drover_command(dir.path());
    list.args(["job", "list", "--server", &both]);
    let run = run_to_exit(list, dir.path(), "list", EXIT_DEADLINE);
    assert!(run.status.success(), "{run}");
    assert_eq!(
        server
            .client()
            .jobs(&Default::default())
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );

    let other = format!("http://127.0.0.1:{}", free_port());
    let mut none = drover_command(dir.path());
    none.args(["job", "list", "--server", &format!("{dead},{other}")]);
    let run = run_to_exit(none, dir.path(), "none", EXIT_DEADLINE);
    assert_eq!(run.status.code(), Some(3), "{run}");
    assert!(
        run.stderr
            .contains("no server could carry out the request (tried 2"),
        "{run}"
    );
    for url in [&dead, &other] {
        assert!(
            run.stderr
                .contains(&format!("{url}: cannot reach the server")),
            "{run}"
        );
    }
}

/// One replica dies mid-sweep, connections and all: the agent's calls go on to the other
/// replica and the sweep completes, each task once; the CLI, given both, still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_finishes_its_sweep_through_the_remaining_replica_when_one_dies() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new().args(FAST_REAPERS)).await;
    let replicas = [
        Relay::start(server.port()).await,
        Relay::start(server.port()).await,
    ];
    let urls = format!("{},{}", replicas[0].url, replicas[1].url);
    let client = server.client();
    let created = client.create_job(&sleepy(16, 0.3)).await.unwrap();
    let agent = AgentProcess::start(dir.path(), &urls, &["--slots", "2", "--claim-wait", "1s"]);
    eventually("some tasks to finish", EVENT_DEADLINE, || async {
        let j = client.job(&created.job_id).await.ok()?;
        (j.completed_tasks >= 3).then_some(())
    })
    .await;

    // The agent stays with the replica it started at; that one dies.
    let (used, spare) = match replicas[0].connections() {
        0 => (&replicas[1], &replicas[0]),
        _ => (&replicas[0], &replicas[1]),
    };
    assert_eq!(
        spare.connections(),
        0,
        "the agent spread its calls over both"
    );
    used.stop();

    job_reaches(&client, &created.job_id, "COMPLETED", JOB_DEADLINE).await;
    assert!(spare.connections() > 0);
    let log = agent.wait_for_log("failed over to another server").await;
    assert!(log.contains(&spare.url), "{log}");
    assert_counts_match_tasks(&client, &created.job_id).await;
    let tasks = client.all_tasks(&created.job_id, None).await.unwrap();
    assert!(tasks.iter().all(|t| t.status == "DONE"), "{tasks:?}");

    let mut status = drover_command(dir.path());
    status.args(["job", "status", &created.job_id, "--server", &urls]);
    let run = run_to_exit(status, dir.path(), "status", EXIT_DEADLINE);
    assert!(run.status.success(), "{run}");
    assert!(run.stdout.contains("COMPLETED"), "{run}");
}
