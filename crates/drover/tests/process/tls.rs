//! Agents and the CLI over https: the server behind a TLS-terminating proxy (as README advises),
//! with a certificate from a private CA that the clients are told to trust with `--ca-cert`.
//! Without it the certificate is refused, and the error says so.

use crate::helpers::*;
use rcgen::{CertifiedKey, generate_simple_self_signed};
use std::path::Path;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS proxy on a loopback port in front of `backend`, until the test ends. Returns its port
/// and writes the certificate clients must trust to `ca_file`.
async fn tls_proxy(backend: u16, ca_file: &Path) -> u16 {
    let CertifiedKey { cert, signing_key } =
        generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
    std::fs::write(ca_file, cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                if let Ok(mut plain) = TcpStream::connect(("127.0.0.1", backend)).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_the_cli_work_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), Launch::new()).await;
    let ca = dir.path().join("ca.pem");
    let port = tls_proxy(server.port(), &ca).await;
    let https = format!("https://localhost:{port}");
    let ca_arg = ca.to_str().unwrap();

    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "name = \"over tls\"\ncommand = [\"true\"]\n[parameters]\nx = [1, 2, 3]\n",
    )
    .unwrap();

    // Without the CA the server's certificate is not trusted: exit 3, and the reason shows.
    let mut untrusted = drover_command(dir.path());
    untrusted.args(["job", "list", "--server", &https]);
    let run = run_to_exit(untrusted, dir.path(), "untrusted", EXIT_DEADLINE);
    assert_eq!(run.status.code(), Some(3), "{run}");
    assert!(run.stderr.to_lowercase().contains("certificate"), "{run}");

    let _agent = AgentProcess::start(
        dir.path(),
        &format!("https://127.0.0.1:{port}"),
        &["--ca-cert", ca_arg],
    );
    let mut submit = drover_command(dir.path());
    submit
        .arg("submit")
        .arg(&job)
        .args(["--server", &https, "--ca-cert", ca_arg, "--watch"]);
    let run = run_to_exit(submit, dir.path(), "submit over https", EXIT_DEADLINE);
    assert!(run.status.success(), "{run}");
    assert!(run.stdout.contains("COMPLETED"), "{run}");
}
