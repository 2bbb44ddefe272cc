//! The gRPC listener of a real `drover server` process: what its node agents registered and the
//! jobs they submitted survive `kill -9`.

use crate::helpers::{Launch, ServerProcess, free_port};
use drover_proto::orchion::v1 as pb;
use drover_proto::orchion::v1::orchestrator_client::OrchestratorClient;

async fn connect(port: u16) -> OrchestratorClient<tonic::transport::Channel> {
    OrchestratorClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connecting to the gRPC listener")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_jobs_of_the_grpc_api_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = free_port();
    let launch = || Launch::new().args(["--grpc-port".to_string(), grpc.to_string()]);
    let mut first = ServerProcess::start(dir.path(), launch()).await;
    first
        .wait_for_log(&format!(
            "gRPC (orchion.v1.Orchestrator, health, reflection) on 127.0.0.1:{grpc}"
        ))
        .await;
    let mut c = connect(grpc).await;
    let node = pb::Node {
        id: "agent-7".into(),
        hostname: "box7".into(),
        capabilities: Some(pb::Capabilities {
            cpu: "4".into(),
            ..Default::default()
        }),
        last_seen_unix: 0,
        agent_address: "127.0.0.1:7777".into(),
    };
    c.register_node(pb::RegisterNodeRequest { node: Some(node) })
        .await
        .unwrap();
    c.submit_job(pb::SubmitJobRequest {
        job_id: "job-7".into(),
        job_type: pb::JobType::Embeddings.into(),
        payload: b"text".to_vec(),
    })
    .await
    .unwrap();
    first.kill9();

    let second = ServerProcess::start_on(dir.path(), launch(), first.port()).await;
    let mut c = connect(grpc).await;
    let nodes = c
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["agent-7"], "{}", second.log());
    assert_eq!(nodes[0].capabilities.as_ref().unwrap().cpu, "4");
    let status = c
        .get_job_status(pb::GetJobStatusRequest {
            job_id: "job-7".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), pb::JobStatus::Pending);
}
