//! The node-registry contract over gRPC (`orchion.v1.Orchestrator`), with a tonic client:
//! registration, updates, heartbeats and listing in drover's one registry, the contract's
//! status codes, the heartbeat timeout, the bearer token, health and reflection.

use crate::helpers::*;
use drover_proto::orchion::v1 as pb;
use drover_proto::orchion::v1::orchestrator_client::OrchestratorClient;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

async fn spawn_grpc(configure: impl FnOnce(&mut drover_server::ServerConfig)) -> TestApp {
    spawn(
        |c| {
            c.grpc = Some("127.0.0.1:0".parse().unwrap());
            configure(&mut c.server)
        },
        true,
    )
    .await
}

async fn channel(app: &TestApp) -> Channel {
    Channel::from_shared(app.grpc.clone().expect("a gRPC listener"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn client(app: &TestApp) -> OrchestratorClient<Channel> {
    OrchestratorClient::connect(app.grpc.clone().expect("a gRPC listener"))
        .await
        .unwrap()
}

fn node(id: &str) -> pb::Node {
    pb::Node {
        id: id.into(),
        hostname: format!("{id}.lan"),
        capabilities: Some(pb::Capabilities {
            cpu: "8".into(),
            memory: "16GB".into(),
            os: "linux".into(),
            gpu_type: "A100".into(),
            ..Default::default()
        }),
        last_seen_unix: 0,
        agent_address: "10.0.0.5:9000".into(),
    }
}

fn register(n: pb::Node) -> pb::RegisterNodeRequest {
    pb::RegisterNodeRequest { node: Some(n) }
}

/// The code and message of a call that must fail.
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let e = r.unwrap_err();
    (e.code(), e.message().to_string())
}

/// What `ListNodes` answers.
async fn list_of(c: &mut OrchestratorClient<Channel>) -> pb::ListNodesResponse {
    c.list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn beat(id: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest { node_id: id.into() }
}

#[tokio::test]
async fn agents_register_update_heartbeat_and_list_in_the_one_registry() {
    let app = spawn_grpc(|_| {}).await;
    let mut c = client(&app).await;
    c.register_node(register(node("gpu-1"))).await.unwrap();
    c.heartbeat(beat("gpu-1")).await.unwrap();
    let listed = list_of(&mut c).await;
    assert_eq!(listed.nodes.len(), 1);
    let got = &listed.nodes[0];
    assert_eq!(
        pb::Node {
            last_seen_unix: 0,
            ..got.clone()
        },
        node("gpu-1"),
        "what the agent sent comes back"
    );
    let now = app.state.clock.now().timestamp();
    assert_eq!(got.last_seen_unix, now);

    // UpdateNode replaces the capabilities.
    let newer = pb::Capabilities {
        cpu: "16".into(),
        gpu_vram_available: "40GB".into(),
        ..Default::default()
    };
    c.update_node(pb::UpdateNodeRequest {
        node_id: "gpu-1".into(),
        capabilities: Some(newer.clone()),
    })
    .await
    .unwrap();
    let listed = list_of(&mut c).await;
    assert_eq!(listed.nodes[0].capabilities, Some(newer));

    // One registry: the native API and the placement surface see it, with its capacity.
    let spots = app.client.spots().await.unwrap();
    let spot = spots
        .iter()
        .find(|s| s.id == "gpu-1")
        .expect("listed as a spot");
    assert_eq!(spot.hostname.as_deref(), Some("gpu-1.lan"));
    assert_eq!(spot.total_cores, Some(16));
    let (_, nodes) = app.get_json("/nodes").await;
    assert_eq!(nodes[0]["id"], "gpu-1");
    // Registering the same id replaces it: still one node.
    c.register_node(register(node("gpu-1"))).await.unwrap();
    let listed = list_of(&mut c).await;
    assert_eq!(listed.nodes.len(), 1);
    assert_eq!(listed.nodes[0].capabilities, node("gpu-1").capabilities);
    app.finish().await;
}

#[tokio::test]
async fn bad_input_and_unknown_nodes_get_the_contracts_status_codes() {
    let app = spawn_grpc(|_| {}).await;
    let mut c = client(&app).await;
    let required = |what: &str| (Code::InvalidArgument, format!("{what} is required"));
    let no_node = pb::RegisterNodeRequest { node: None };
    assert_eq!(refused(c.register_node(no_node).await), required("node"));
    assert_eq!(
        refused(c.register_node(register(node(""))).await),
        required("node.id")
    );
    assert_eq!(refused(c.heartbeat(beat("")).await), required("node_id"));
    let update = |id: &str| pb::UpdateNodeRequest {
        node_id: id.into(),
        capabilities: None,
    };
    assert_eq!(
        refused(c.update_node(update(" ")).await),
        required("node_id")
    );
    // An unknown node: NOT_FOUND, and the contract's agent registers again.
    let not_found = (Code::NotFound, "node not found".to_string());
    assert_eq!(refused(c.heartbeat(beat("ghost")).await), not_found);
    assert_eq!(refused(c.update_node(update("ghost")).await), not_found);
    c.register_node(register(node("ghost"))).await.unwrap();
    c.heartbeat(beat("ghost")).await.unwrap();
    // An oversize message is refused before it is decoded.
    let mut big = node("big");
    big.hostname = "h".repeat(2 * 1024 * 1024);
    let e = c.register_node(register(big)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    app.finish().await;
}

#[tokio::test]
async fn a_silent_node_goes_down_and_its_next_heartbeat_brings_it_back() {
    let app = spawn_grpc(|_| {}).await;
    let mut c = client(&app).await;
    c.register_node(register(node("n1"))).await.unwrap();
    c.register_node(register(node("n2"))).await.unwrap();
    app.advance(Duration::from_secs(8));
    c.heartbeat(beat("n2")).await.unwrap();
    app.advance(Duration::from_secs(5));
    let counts = app.state.step(&app.state.spot_reaper()).await.unwrap();
    assert!(counts.contains(&("spots_down", 1)), "{counts:?}");
    let ids = |r: pb::ListNodesResponse| r.nodes.into_iter().map(|n| n.id).collect::<Vec<_>>();
    let listed = list_of(&mut c).await;
    assert_eq!(
        ids(listed),
        ["n2"],
        "a DOWN node is left out, as the contract forgets it"
    );
    // drover keeps it DOWN (for --spot-retention); a heartbeat brings it back.
    let (_, spots) = app.get_json("/api/v1/spots").await;
    assert!(spots["spots"].to_string().contains("\"DOWN\""), "{spots}");
    c.heartbeat(beat("n1")).await.unwrap();
    let listed = list_of(&mut c).await;
    assert_eq!(ids(listed), ["n1", "n2"]);
    app.finish().await;
}

#[tokio::test]
async fn with_an_agent_key_calls_need_it_as_a_bearer_token() {
    let app = spawn_grpc(|c| c.agent_key = Some("agent-k".into())).await;
    let channel = channel(&app).await;
    let call = |token: Option<&'static str>| {
        let mut c = OrchestratorClient::with_interceptor(
            channel.clone(),
            move |mut r: tonic::Request<()>| {
                if let Some(t) = token {
                    r.metadata_mut().insert("authorization", t.parse().unwrap());
                }
                Ok(r)
            },
        );
        async move { c.list_nodes(pb::ListNodesRequest {}).await.map(|_| ()) }
    };
    assert_eq!(call(None).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(
        call(Some("Bearer nope")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    call(Some("Bearer agent-k")).await.unwrap();
    // Health stays open for probes.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    app.finish().await;
}

#[tokio::test]
async fn health_is_not_serving_while_the_store_cannot_write() {
    use drover_store::faults::{self, FaultPlan, Faults};
    let faults = Faults::new(FaultPlan::none(0));
    let injected = faults.clone();
    let app = spawn_wrapped_for_grpc(move |s| faults::wrap(s, injected)).await;
    let channel = channel(&app).await;
    let health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |service: &str| {
        let mut h = health.clone();
        let service = service.to_string();
        async move {
            h.check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(
        status("orchion.v1.Orchestrator").await,
        ServingStatus::Serving
    );
    faults.set_writes_down(true);
    eventually(Duration::from_secs(10), "NOT_SERVING", || async {
        (status("").await == ServingStatus::NotServing).then_some(())
    })
    .await;
    faults.set_writes_down(false);
    eventually(Duration::from_secs(10), "SERVING again", || async {
        (status("orchion.v1.Orchestrator").await == ServingStatus::Serving).then_some(())
    })
    .await;
    app.finish().await;
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let app = spawn_grpc(|_| {}).await;
    let channel = channel(&app).await;
    let mut r = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = r
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["orchion.v1.Orchestrator", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} not in {names:?}"
        );
    }
    app.finish().await;
}

fn submit(job_id: &str, payload: &[u8]) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        job_id: job_id.into(),
        job_type: pb::JobType::ChatCompletion.into(),
        payload: payload.to_vec(),
    }
}

async fn status_of(c: &mut OrchestratorClient<Channel>, job_id: &str) -> pb::GetJobStatusResponse {
    c.get_job_status(pb::GetJobStatusRequest {
        job_id: job_id.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn a_submitted_job_is_a_drover_job_that_any_agent_runs() {
    let app = spawn_grpc(|_| {}).await;
    let mut c = client(&app).await;
    let answer = c
        .submit_job(submit("chat-1", b"{\"prompt\":\"hi\"}"))
        .await
        .unwrap();
    let answer = answer.into_inner();
    assert_eq!(
        (answer.job_id.as_str(), answer.status()),
        ("chat-1", pb::JobStatus::Pending)
    );
    // The same submit again is the same job; another with that id is refused.
    let again = c
        .submit_job(submit("chat-1", b"{\"prompt\":\"hi\"}"))
        .await
        .unwrap();
    assert_eq!(again.into_inner().status(), pb::JobStatus::Pending);
    assert_eq!(
        refused(c.submit_job(submit("chat-1", b"other")).await).0,
        Code::AlreadyExists
    );
    let (_, jobs) = app.get_json("/api/v1/jobs").await;
    let jobs = jobs["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["name"], "chat-1");
    assert_eq!(
        status_of(&mut c, "chat-1").await.status(),
        pb::JobStatus::Pending
    );

    // An agent of the native API claims it and sees the payload.
    let spot = app.hello().await;
    let tasks = app.client.claim(&spot, 1).await.unwrap();
    assert_eq!(tasks.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&tasks[0].payload.to_string()).unwrap();
    assert_eq!(payload["job_id"], "chat-1");
    assert_eq!(payload["job_type"], "JOB_TYPE_CHAT_COMPLETION");
    assert_eq!(payload["payload_base64"], "eyJwcm9tcHQiOiJoaSJ9");
    let running = status_of(&mut c, "chat-1").await;
    assert_eq!(
        (running.status(), running.assigned_node.as_str()),
        (pb::JobStatus::Running, spot.as_str())
    );
    let done = drover_api::CompleteRequest {
        spot_id: spot.clone(),
        result_json: Some(serde_json::json!("{\"answer\":42}")),
        ..Default::default()
    };
    app.client.complete(&tasks[0].id, &done).await.unwrap();
    let finished = status_of(&mut c, "chat-1").await;
    assert_eq!(finished.status(), pb::JobStatus::Completed);
    assert_eq!(finished.result, b"{\"answer\":42}");

    // A job that fails says why.
    c.submit_job(submit("chat-2", b"x")).await.unwrap();
    let tasks = app.client.claim(&spot, 1).await.unwrap();
    let failed = drover_api::FailRequest {
        spot_id: spot.clone(),
        error: Some("model not loaded".into()),
        retriable: Some(false),
        ..Default::default()
    };
    app.client.fail(&tasks[0].id, &failed).await.unwrap();
    let got = status_of(&mut c, "chat-2").await;
    assert_eq!(
        (got.status(), got.error_message.as_str()),
        (pb::JobStatus::Failed, "model not loaded")
    );

    let unknown = c
        .get_job_status(pb::GetJobStatusRequest {
            job_id: "nope".into(),
        })
        .await;
    assert_eq!(refused(unknown), (Code::NotFound, "job not found".into()));
    assert_eq!(
        refused(c.submit_job(submit("", b"")).await).0,
        Code::InvalidArgument
    );
    app.finish().await;
}

#[tokio::test]
async fn the_dashboard_route_lists_nodes_as_the_contract_does() {
    let app = spawn_grpc(|_| {}).await;
    let (status, empty) = app.get_json("/api/nodes").await;
    assert_eq!((status, empty), (200, serde_json::json!([])));
    let mut c = client(&app).await;
    let mut n = node("gpu-1");
    n.hostname = String::new();
    c.register_node(register(n)).await.unwrap();
    let answer = app.http.get(app.url("/api/nodes")).send().await.unwrap();
    assert_eq!(answer.headers()["access-control-allow-origin"], "*");
    let body: serde_json::Value = answer.json().await.unwrap();
    let now = app.state.clock.now().timestamp();
    assert_eq!(
        body,
        serde_json::json!([{
            "id": "gpu-1",
            "capabilities": {"cpu": "8", "memory": "16GB", "os": "linux", "gpu_type": "A100"},
            "last_seen_unix": now,
            "agent_address": "10.0.0.5:9000"
        }]),
        "empty fields are left out"
    );
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/nodes"))
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    app.finish().await;
}

/// The independent client: Python's grpcio with stubs generated here from the checked-in
/// `.proto` by grpcio-tools, in the virtualenv `scripts/test` makes.
const PYTHON_CLIENT: &str = r#"
import sys
import grpc
sys.path.insert(0, sys.argv[1])
from orchion.v1 import orchestrator_pb2 as pb
from orchion.v1 import orchestrator_pb2_grpc as rpc

stub = rpc.OrchestratorStub(grpc.insecure_channel(sys.argv[2]))
caps = pb.Capabilities(cpu="4", memory="8GB", os="linux")
stub.RegisterNode(pb.RegisterNodeRequest(node=pb.Node(
    id="py-1", hostname="py.lan", capabilities=caps, agent_address="127.0.0.1:9")))
stub.UpdateNode(pb.UpdateNodeRequest(node_id="py-1", capabilities=pb.Capabilities(cpu="6")))
stub.Heartbeat(pb.HeartbeatRequest(node_id="py-1"))
try:
    stub.Heartbeat(pb.HeartbeatRequest(node_id="ghost"))
    sys.exit("a heartbeat of an unknown node passed")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
    assert e.details() == "node not found", e.details()
nodes = stub.ListNodes(pb.ListNodesRequest()).nodes
assert [n.id for n in nodes] == ["py-1"], nodes
assert nodes[0].capabilities.cpu == "6" and nodes[0].hostname == "py.lan", nodes[0]
job = stub.SubmitJob(pb.SubmitJobRequest(
    job_id="py-job", job_type=pb.JOB_TYPE_EMBEDDINGS, payload=b"abc"))
assert job.job_id == "py-job" and job.status == pb.JOB_STATUS_PENDING, job
status = stub.GetJobStatus(pb.GetJobStatusRequest(job_id="py-job"))
assert status.status == pb.JOB_STATUS_PENDING, status
print("python client ok")
"#;

#[cfg_attr(
    missing_grpcio,
    ignore = "Python's grpcio and grpcio-tools are not in the test virtualenv (scripts/test makes it)"
)]
#[tokio::test]
async fn pythons_grpcio_client_works_with_stubs_generated_from_the_proto() {
    let python = crate::helpers::venv_python();
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out = tempfile::tempdir().unwrap();
    let generated = tokio::process::Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .arg("orchion/v1/orchestrator.proto")
        .output()
        .await
        .expect("running grpcio-tools");
    assert!(generated.status.success(), "{generated:?}");

    let app = spawn_grpc(|_| {}).await;
    let addr = app.grpc.clone().unwrap().replace("http://", "");
    let run = tokio::process::Command::new(&python)
        .args(["-c", PYTHON_CLIENT])
        .arg(out.path())
        .arg(&addr)
        .output()
        .await
        .expect("running the Python client");
    let said =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{said}");
    assert!(said.contains("python client ok"), "{said}");
    // What it wrote is drover's: a spot, and a job.
    let spots = app.client.spots().await.unwrap();
    assert!(spots.iter().any(|s| s.id == "py-1"));
    app.finish().await;
}

#[tokio::test]
async fn watch_nodes_streams_registrations_and_status_changes() {
    use drover_proto::drover::v1 as dpb;
    use drover_proto::drover::v1::nodes_client::NodesClient;
    let app = spawn_grpc(|_| {}).await;
    let mut watcher = NodesClient::connect(app.grpc.clone().unwrap())
        .await
        .unwrap();
    let mut changes = watcher
        .watch_nodes(dpb::WatchNodesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut c = client(&app).await;
    c.register_node(register(node("w1"))).await.unwrap();
    // Heartbeats of an UP node are not changes.
    c.heartbeat(beat("w1")).await.unwrap();
    app.advance(Duration::from_secs(60));
    app.state.step(&app.state.spot_reaper()).await.unwrap();
    c.heartbeat(beat("w1")).await.unwrap();
    // An operator's drain and undrain; heartbeats between them are not changes either.
    app.client.drain_spot("w1").await.unwrap();
    c.heartbeat(beat("w1")).await.unwrap();
    app.client.undrain_spot("w1").await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let change = tokio::time::timeout(Duration::from_secs(5), changes.message())
            .await
            .expect("a change within 5 s")
            .unwrap()
            .unwrap();
        seen.push((change.kind, change.node_id, change.status));
    }
    let want = |k: &str, s: &str| (k.to_string(), "w1".to_string(), s.to_string());
    assert_eq!(
        seen,
        [
            want("registered", "UP"),
            want("down", "DOWN"),
            want("revived", "UP"),
            want("draining", "DRAINING"),
            want("undrained", "UP"),
        ]
    );
    app.finish().await;
}

#[tokio::test]
async fn grpc_requests_are_counted_by_method_and_code_in_metrics() {
    let app = spawn_grpc(|_| {}).await;
    let mut c = client(&app).await;
    c.register_node(register(node("m1"))).await.unwrap();
    c.heartbeat(beat("m1")).await.unwrap();
    c.heartbeat(beat("m1")).await.unwrap();
    assert!(c.heartbeat(beat("ghost")).await.is_err());
    let text = app.metrics_text().await;
    for line in [
        r#"drover_grpc_requests_total{method="/orchion.v1.Orchestrator/Heartbeat",code="OK"} 2"#,
        r#"drover_grpc_requests_total{method="/orchion.v1.Orchestrator/Heartbeat",code="NOT_FOUND"} 1"#,
        r#"drover_grpc_requests_total{method="/orchion.v1.Orchestrator/RegisterNode",code="OK"} 1"#,
        r#"drover_grpc_request_duration_seconds_count{method="/orchion.v1.Orchestrator/Heartbeat"} 3"#,
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
    app.finish().await;
}

#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL's server binaries are not installed"
)]
#[tokio::test]
async fn two_replicas_on_one_database_serve_any_call() {
    let url = drover_pgtest::fresh_database()
        .unwrap_or_else(|why| panic!("no PostgreSQL to run against: {why}"));
    let on = |url: String| {
        spawn(
            move |c| {
                c.store_url = url;
                c.grpc = Some("127.0.0.1:0".parse().unwrap());
            },
            false,
        )
    };
    let a = on(url.clone()).await;
    let b = on(url).await;
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    ca.register_node(register(node("r1"))).await.unwrap();
    // The other replica knows it at once: its heartbeat, its listing, its job.
    cb.heartbeat(beat("r1")).await.unwrap();
    let listed = list_of(&mut cb).await;
    assert_eq!(listed.nodes.len(), 1);
    cb.submit_job(submit("shared", b"x")).await.unwrap();
    let again = ca.submit_job(submit("shared", b"x")).await.unwrap();
    assert_eq!(again.into_inner().status(), pb::JobStatus::Pending);
    assert_eq!(
        status_of(&mut ca, "shared").await.status(),
        pb::JobStatus::Pending
    );
    a.finish().await;
    b.finish().await;
}
