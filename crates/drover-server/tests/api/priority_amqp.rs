//! The priority router in RabbitMQ mode, against a real private broker (`drover-amqptest`) and
//! an independent worker written with Python's pika (`priority_worker.py`), which knows the
//! contract and nothing of drover: each job reaches its class's queue with its priority and is
//! completed by that worker; a broker outage loses no registration; a silent worker's job is
//! requeued, republished and finished by another.

use crate::helpers::{TestApp, eventually, spawn, venv_python};
use drover_amqptest::Broker;
use drover_server::priority::Dispatch;
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

async fn broker() -> Arc<Broker> {
    let started = tokio::task::spawn_blocking(Broker::start).await.unwrap();
    Arc::new(started.unwrap_or_else(|why| panic!("no RabbitMQ broker to run against: {why:?}")))
}

async fn spawn_rabbit(broker: &Broker) -> TestApp {
    let url = broker.url();
    spawn(
        move |c| c.server.priority.dispatch = Dispatch::Rabbitmq { url },
        true,
    )
    .await
}

/// Stops the broker, as an outage would (its data stays).
async fn stop(broker: &Arc<Broker>) {
    let b = broker.clone();
    (tokio::task::spawn_blocking(move || b.stop()).await.unwrap()).unwrap();
}

/// Starts the stopped broker again on its data.
async fn start_again(broker: &Arc<Broker>) {
    let b = broker.clone();
    (tokio::task::spawn_blocking(move || b.start_again())
        .await
        .unwrap())
    .unwrap();
}

async fn depth(broker: &Arc<Broker>, queue: &'static str) -> u64 {
    let b = broker.clone();
    (tokio::task::spawn_blocking(move || b.queue_depth(queue))
        .await
        .unwrap())
    .unwrap()
}

async fn unpublished(app: &TestApp) -> u64 {
    let (status, metrics) = app.get_json("/api/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    metrics["unpublished"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

async fn all_published(app: &TestApp) {
    eventually(Duration::from_secs(90), "the outbox is empty", || async {
        (unpublished(app).await == 0).then_some(())
    })
    .await;
}

fn worker_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/priority_worker.py")
}

/// The pika worker, as the contract's workers run, against `app` and `broker`.
fn pika_worker(
    app: &TestApp,
    broker: &Broker,
    id: &str,
    out: &std::path::Path,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(venv_python());
    cmd.arg(worker_script())
        .args([
            "--amqp",
            &broker.url(),
            "--api",
            &app.base,
            "--worker-id",
            id,
        ])
        .args(["--worker-type", "calculate", "--heartbeat-every", "1"])
        .arg("--out")
        .arg(out)
        .kill_on_drop(true);
    cmd
}

async fn run_to_end(mut cmd: tokio::process::Command) {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the worker finished within two minutes")
        .expect("running the pika worker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lines(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[cfg_attr(
    missing_rabbitmq,
    ignore = "rabbitmq-server is not installed (scripts/test installs it)"
)]
#[cfg_attr(
    all(missing_pika, not(missing_rabbitmq)),
    ignore = "Python's pika is not in the test virtualenv (scripts/test makes it)"
)]
#[tokio::test]
async fn each_job_reaches_its_class_queue_and_a_pika_worker_completes_it() {
    let broker = broker().await;
    let app = spawn_rabbit(&broker).await;
    let jobs = [
        ("lo-1", 1),
        ("hi-1", 10),
        ("me-1", 5),
        ("lo-2", 0),
        ("hi-2", 15),
        ("me-2", 9),
        ("lo-3", 4),
        ("me-3", 7),
        ("hi-3", 10),
    ];
    for (id, p) in jobs {
        app.register(id, p).await;
    }
    all_published(&app).await;
    for queue in ["job.high", "job.medium", "job.low"] {
        assert_eq!(depth(&broker, queue).await, 3, "{queue}");
    }
    // A queue of our own on the status exchange, to see what drover says there.
    let events = status_queue(&broker).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken.jsonl");
    let mut worker = pika_worker(&app, &broker, "py-1", &out);
    worker.args(["--jobs", "9", "--idle-exit", "20"]);
    run_to_end(worker).await;

    let taken = lines(&out);
    assert_eq!(taken.len(), 9);
    let queues: Vec<&str> = taken.iter().map(|l| l["queue"].as_str().unwrap()).collect();
    assert_eq!(&queues[..3], ["job.high"; 3], "high first: {queues:?}");
    for line in &taken {
        let body = &line["body"];
        let p = body["priority"].as_i64().unwrap();
        let (queue, priority) = match p {
            10.. => ("job.high", 10),
            5..=9 => ("job.medium", 5),
            _ => ("job.low", 1),
        };
        assert_eq!(line["queue"], queue, "{line}");
        assert_eq!(line["priority"], priority, "{line}");
        assert_eq!(line["delivery_mode"], 2, "persistent: {line}");
        assert_eq!(line["status_codes"], json!([200, 200]), "{line}");
        assert_eq!(body["type"], "calculate");
        assert_eq!(body["status"], "pending");
        assert_eq!(body["worker_id"], "none");
        assert_eq!(body["payload"], json!({"n": body["id"]}));
        assert_eq!(
            (&body["retry_count"], &body["max_retries"]),
            (&json!(0), &json!(3))
        );
        assert_eq!(body["execution_timeout"], 300);
        assert!(body["created_at"].as_i64().unwrap() > 0);
    }
    for (id, _) in jobs {
        let job = app.contract_job(id).await;
        assert_eq!(
            (&job["status"], &job["worker_id"]),
            (&json!("completed"), &json!("py-1")),
            "{job}"
        );
    }
    // Each job's running and completed went out on status.exchange.
    let said = events.collect(18).await;
    let hi1: Vec<&Value> = said.iter().filter(|e| e["jobId"] == "hi-1").collect();
    assert_eq!(
        hi1.iter()
            .map(|e| e["jobStatus"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["RUNNING", "COMPLETED"]
    );
    assert_eq!(hi1[1]["workerId"], "py-1");
    assert_eq!(hi1[1]["result"]["processed_by"], "py-1", "{}", hi1[1]);
}

#[cfg_attr(
    missing_rabbitmq,
    ignore = "rabbitmq-server is not installed (scripts/test installs it)"
)]
#[cfg_attr(
    all(missing_pika, not(missing_rabbitmq)),
    ignore = "Python's pika is not in the test virtualenv (scripts/test makes it)"
)]
#[tokio::test]
async fn registrations_while_the_broker_is_down_are_all_published_when_it_returns() {
    let broker = broker().await;
    let app = spawn_rabbit(&broker).await;
    app.register("warm-up", 5).await;
    all_published(&app).await;
    stop(&broker).await;

    let ids: Vec<String> = (0..1000).map(|i| format!("o{i:04}")).collect();
    let registering = futures::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let app = &app;
            let priority = [1, 5, 10][i % 3];
            async move {
                let (status, body) = app
                    .post_json(
                        "/api/jobs/register",
                        json!({"id": id, "type": "calculate", "priority": priority}),
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
            }
        })
        .buffer_unordered(16);
    registering.collect::<Vec<()>>().await;
    assert_eq!(
        unpublished(&app).await,
        1000,
        "every one waits in the outbox"
    );

    start_again(&broker).await;
    all_published(&app).await;
    let mut queued = 0;
    for queue in ["job.high", "job.medium", "job.low"] {
        queued += depth(&broker, queue).await;
    }
    assert!(queued >= 1001, "published once or more: {queued} messages");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken.jsonl");
    let mut worker = pika_worker(&app, &broker, "py-drain", &out);
    worker.args(["--idle-exit", "3"]);
    run_to_end(worker).await;
    let taken: std::collections::BTreeSet<String> = lines(&out)
        .iter()
        .map(|l| l["body"]["id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        assert!(taken.contains(id), "{id} never reached a queue");
    }
    let (_, metrics) = app.get_json("/api/metrics").await;
    assert_eq!(metrics["jobs"], json!({"completed": 1001}), "{metrics}");
}

#[cfg_attr(
    missing_rabbitmq,
    ignore = "rabbitmq-server is not installed (scripts/test installs it)"
)]
#[cfg_attr(
    all(missing_pika, not(missing_rabbitmq)),
    ignore = "Python's pika is not in the test virtualenv (scripts/test makes it)"
)]
#[tokio::test]
async fn a_silent_workers_job_is_republished_and_finished_by_another_worker() {
    let broker = broker().await;
    let app = spawn_rabbit(&broker).await;
    app.register("lost", 10).await;
    all_published(&app).await;

    // The first worker takes the job, says it runs it, then goes silent holding the message.
    let dir = tempfile::tempdir().unwrap();
    let silent_out = dir.path().join("silent.jsonl");
    let mut silent = pika_worker(&app, &broker, "py-silent", &silent_out);
    silent.args(["--stop-heartbeat-after", "1"]);
    let mut silent = silent.spawn().unwrap();
    eventually(
        Duration::from_secs(30),
        "the first worker runs the job",
        || async { (app.contract_job("lost").await["worker_id"] == "py-silent").then_some(()) },
    )
    .await;
    silent.kill().await.unwrap();

    // Past the worker timeout the reaper takes the job back; it is published again.
    app.advance(Duration::from_secs(31));
    let down = app.state.spot_reaper().reap().await.unwrap();
    assert_eq!(down.nodes, ["py-silent"]);
    assert_eq!(app.contract_job("lost").await["status"], "pending");
    all_published(&app).await;

    let out = dir.path().join("rescue.jsonl");
    let mut rescuer = pika_worker(&app, &broker, "py-rescue", &out);
    rescuer.args(["--idle-exit", "3"]);
    run_to_end(rescuer).await;
    let taken = lines(&out);
    assert!(!taken.is_empty());
    assert!(taken.iter().all(|l| l["body"]["id"] == "lost"));
    let job = app.contract_job("lost").await;
    assert_eq!(
        (&job["status"], &job["worker_id"]),
        (&json!("completed"), &json!("py-rescue")),
        "{job}"
    );
    assert_eq!(job["retry_count"], 2, "two attempts: {job}");
}

/// A queue bound to `status.exchange` under `status.update`, read with basic.get. It is
/// durable, so it keeps what it holds across a restart of the broker.
#[derive(Clone)]
struct StatusQueue {
    channel: lapin::Channel,
    name: String,
}

impl StatusQueue {
    async fn drain(&self) -> Vec<Value> {
        let mut got = Vec::new();
        while let Ok(Some(m)) = (self.channel)
            .basic_get(
                self.name.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
        {
            got.push(serde_json::from_slice(&m.delivery.data).unwrap());
        }
        got
    }

    /// Everything that reaches the queue until it holds `n` messages (30 s at most).
    async fn collect(&self, n: usize) -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} status events within 30 s; got {got:?}"
            );
            got.extend(self.drain().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        got
    }
}

async fn status_queue(broker: &Broker) -> StatusQueue {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let connection = lapin::Connection::connect(&broker.url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let name = "test.status".to_string();
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            name.as_str().into(),
            "status.exchange".into(),
            "status.update".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The connection lives as long as the channel is used: leak it for the test's lifetime.
    std::mem::forget(connection);
    StatusQueue { channel, name }
}

#[cfg_attr(
    missing_rabbitmq,
    ignore = "rabbitmq-server is not installed (scripts/test installs it)"
)]
#[cfg_attr(
    all(missing_pika, not(missing_rabbitmq)),
    ignore = "Python's pika is not in the test virtualenv (scripts/test makes it)"
)]
#[tokio::test]
async fn an_aged_job_is_published_again_to_its_new_queue_and_runs_from_there() {
    let broker = broker().await;
    let url = broker.url();
    let app = spawn(
        move |c| {
            c.server.priority.dispatch = Dispatch::Rabbitmq { url };
            c.server.priority.aging = Some(Duration::from_secs(60));
        },
        true,
    )
    .await;
    app.register("patient", 1).await;
    all_published(&app).await;
    assert_eq!(depth(&broker, "job.low").await, 1);

    app.advance(Duration::from_secs(121));
    let ager = app.state.priority_ager().expect("aging is on");
    assert_eq!(ager.age().await.unwrap(), 1);
    all_published(&app).await;
    assert_eq!(depth(&broker, "job.high").await, 1, "published to high");
    assert_eq!(depth(&broker, "job.low").await, 1, "the old copy stays");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken.jsonl");
    let mut worker = pika_worker(&app, &broker, "py-aged", &out);
    worker.args(["--idle-exit", "3"]);
    run_to_end(worker).await;
    let taken = lines(&out);
    let seen: Vec<(&str, &Value)> = taken
        .iter()
        .map(|l| (l["queue"].as_str().unwrap(), &l["status_codes"]))
        .collect();
    assert_eq!(
        seen,
        [
            ("job.high", &json!([200, 200])),
            // The copy taken second finds the job done; its repeated completion changes nothing.
            ("job.low", &json!([409, 200])),
        ]
    );
    assert_eq!(taken[0]["priority"], 10);
    let job = app.contract_job("patient").await;
    assert_eq!(
        (&job["status"], &job["class"]),
        (&json!("completed"), &json!("high"))
    );
}

#[cfg_attr(
    missing_rabbitmq,
    ignore = "rabbitmq-server is not installed (scripts/test installs it)"
)]
#[tokio::test]
async fn status_changes_made_while_the_broker_is_down_are_published_when_it_returns() {
    let broker = broker().await;
    let app = spawn_rabbit(&broker).await;
    app.register("seen", 10).await;
    all_published(&app).await;
    status_queue(&broker).await;
    stop(&broker).await;

    assert_eq!(app.worker_says("seen", "running", "w1").await.0, 200);
    assert_eq!(app.worker_says("seen", "completed", "w1").await.0, 200);
    let (_, metrics) = app.get_json("/api/metrics").await;
    assert_eq!(
        metrics["unpublished"],
        json!({"status.exchange": 2}),
        "both changes wait in the store"
    );

    start_again(&broker).await;
    all_published(&app).await;
    let events = status_queue(&broker).await;
    let said = events.collect(2).await;
    let words: Vec<&str> = said
        .iter()
        .map(|e| e["jobStatus"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["RUNNING", "COMPLETED"]);
    assert_eq!(said[1]["jobId"], "seen");
    assert_eq!(said[1]["workerId"], "w1");
}
