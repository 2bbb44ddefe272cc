//! `drover server --tls-cert --tls-key`: the server speaks https itself, with a certificate of
//! a private CA made by the test, and the agent and the CLI trust it with `--ca-cert`. Without
//! the CA both refuse the certificate and say so; a server given half a certificate, or a file
//! it cannot use, refuses to start and names the file.

use crate::helpers::*;

fn job_file(dir: &std::path::Path) -> std::path::PathBuf {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        "name = \"over tls\"\ncommand = [\"true\"]\n[parameters]\nx = [1, 2, 3]\n",
    )
    .unwrap();
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_and_the_cli_complete_a_job_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = PrivateCa::create(dir.path());
    let server = ServerProcess::start(dir.path(), Launch::new().https(&ca)).await;
    let https = server.base_url();
    assert!(https.starts_with("https://"), "{https}");
    let ca_arg = ca.ca_pem.to_str().unwrap();
    server.wait_for_log("drover listening on https://").await;

    let _agent = AgentProcess::start(
        dir.path(),
        &format!("https://127.0.0.1:{}", server.port()),
        &["--ca-cert", ca_arg],
    );
    let mut submit = drover_command(dir.path());
    submit
        .arg("submit")
        .arg(job_file(dir.path()))
        .args(["--server", &https, "--watch"])
        .env("DROVER_CA_CERT", ca_arg);
    let run = run_to_exit(submit, dir.path(), "submit over https", EXIT_DEADLINE);
    assert!(run.status.success(), "{run}");
    assert!(run.stdout.contains("COMPLETED"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_agent_and_the_cli_refuse_the_certificate_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let ca = PrivateCa::create(dir.path());
    let server = ServerProcess::start(dir.path(), Launch::new().https(&ca)).await;
    let https = server.base_url();

    let mut untrusted = drover_command(dir.path());
    untrusted.args(["job", "list", "--server", &https]);
    let run = run_to_exit(untrusted, dir.path(), "untrusted", EXIT_DEADLINE);
    assert_eq!(run.status.code(), Some(3), "{run}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the drover server at {https}")),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("invalid peer certificate: UnknownIssuer"),
        "{run}"
    );

    // The agent keeps trying (the CA may be fixed on the server's side), saying why each time
    // it loses the server, and registers nowhere.
    let mut agent = AgentProcess::start(dir.path(), &https, &[]);
    let log = agent.wait_for_log("invalid peer certificate").await;
    assert!(log.contains("UnknownIssuer"), "{log}");
    assert!(server.client().spots().await.unwrap().is_empty());
    agent.kill9();

    // Plain http to an https listener gets no answer either.
    let plain = drover_client::Client::new(format!("http://127.0.0.1:{}", server.port()));
    assert!(plain.health().await.is_err());
    assert_eq!(server.client().health().await.unwrap().status, "healthy");
}

#[test]
fn a_server_given_half_a_certificate_or_an_unusable_file_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = PrivateCa::create(dir.path());
    let db = dir.path().join("drover.db");
    let mut half = drover_command(dir.path());
    half.args(["server", "--port", "0", "--tls-cert"])
        .arg(&ca.cert)
        .arg("--db")
        .arg(&db);
    let run = run_to_exit(half, dir.path(), "half", EXIT_DEADLINE);
    assert!(!run.status.success(), "{run}");
    assert!(run.stderr.contains("--tls-cert needs --tls-key"), "{run}");

    let missing = dir.path().join("no-such-key.pem");
    let mut unusable = drover_command(dir.path());
    unusable
        .args(["server", "--port", "0", "--db"])
        .arg(&db)
        .env("DROVER_TLS_CERT", &ca.cert)
        .env("DROVER_TLS_KEY", &missing);
    let run = run_to_exit(unusable, dir.path(), "unusable", EXIT_DEADLINE);
    assert!(!run.status.success(), "{run}");
    assert!(
        run.stderr
            .contains(&format!("TLS key {}: cannot read it", missing.display())),
        "{run}"
    );
    assert!(
        !db.exists(),
        "nothing is created before the certificate is read"
    );
}
