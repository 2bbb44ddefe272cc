//! TLS on the listeners (`AppConfig::tls`): every listener speaks https with the configured
//! certificate, a client must trust its CA, and the connection limits hold over TLS: the
//! handshake is bounded by the header timeout and takes a connection slot, and the idle and
//! body timeouts apply to the decrypted stream.

use crate::helpers::{TestApp, spawn};
use drover_client::Client;
use drover_server::{ListenerConfig, Surface, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// A private CA and a certificate it signed for `localhost` and 127.0.0.1, written to `dir`.
pub struct PrivateCa {
    pub ca_pem: PathBuf,
    pub files: TlsFiles,
}

pub fn private_ca(dir: &Path) -> PrivateCa {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "drover test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    PrivateCa {
        ca_pem: write("ca.pem", ca.pem()),
        files: TlsFiles {
            cert: write("server.pem", cert.pem()),
            key: write("server-key.pem", key.serialize_pem()),
        },
    }
}

/// A server whose listeners speak TLS with a certificate of a fresh private CA, configured
/// further by `configure`; with the CA's PEM file and its directory.
async fn spawn_tls(
    configure: impl FnOnce(&mut drover_server::AppConfig),
) -> (TestApp, PrivateCa, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = private_ca(dir.path());
    let files = ca.files.clone();
    let app = spawn(
        move |c| {
            c.tls = Some(files);
            configure(c)
        },
        true,
    )
    .await;
    (app, ca, dir)
}

/// `https://localhost:PORT` for a listener's `http://127.0.0.1:PORT`.
fn https(base: &str) -> String {
    let port = base.rsplit(':').next().unwrap();
    format!("https://localhost:{port}")
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// A TLS client connection to `base` that trusts `ca_pem`.
async fn tls_connect(base: &str, ca_pem: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr(base)).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the server closes the connection; fails the test if it is still open after
/// `within`. Returns what was read.
async fn closed_within(conn: &mut (impl AsyncRead + Unpin), within: Duration) -> String {
    let mut all = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&all).into_owned()
}

/// Ends a test: the store's audit of job counts, then shutdown as SIGTERM does (the harness's
/// own checks speak plain http).
async fn stop(app: TestApp) {
    let mismatches = app.store().ops.audit_job_counts().await.unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
    app.begin_shutdown();
    app.stopped().await;
}

#[tokio::test]
async fn every_listener_speaks_https_with_the_configured_certificate() {
    let (app, ca, _dir) = spawn_tls(|c| {
        c.listeners.push(ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            surfaces: vec![Surface::Native],
        })
    })
    .await;
    let pem = std::fs::read(&ca.ca_pem).unwrap();
    for (base, _) in &app.addrs {
        let client = Client::new(https(base))
            .with_root_certificate(&pem)
            .unwrap();
        assert_eq!(client.health().await.unwrap().status, "healthy", "{base}");
        // Plain http gets no answer from a TLS listener.
        assert!(
            app.http
                .get(format!("{base}/api/v1/health"))
                .send()
                .await
                .is_err()
        );
    }
    // A client that does not trust the CA refuses the certificate, and says so.
    let error = Client::new(https(&app.base)).health().await.unwrap_err();
    let message = drover_core::text::error_chain(&error).to_lowercase();
    assert!(message.contains("certificate"), "{message}");
    stop(app).await;
}

/// A client that connects and never sends its hello, or sends it in part, holds its slot no
/// longer than one that sends its headers slowly.
#[tokio::test]
async fn a_handshake_must_end_within_the_header_timeout() {
    let (app, _ca, _dir) = spawn_tls(|c| {
        c.server.http.header_timeout = Duration::from_millis(300);
        c.server.http.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut silent = TcpStream::connect(addr(&app.base)).await.unwrap();
    let started = tokio::time::Instant::now();
    closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    // The first bytes of a TLS record header, then nothing.
    let mut partial = TcpStream::connect(addr(&app.base)).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    closed_within(&mut partial, Duration::from_secs(5)).await;
    stop(app).await;
}

/// Handshakes in progress hold connection slots (so a flood of them is capped) and do not
/// hold up the accept loop: with every slot taken by clients that never finish their
/// handshake, the reserve still answers health over TLS.
#[tokio::test]
async fn handshakes_take_connection_slots_and_the_reserve_still_answers_health() {
    let (app, ca, _dir) = spawn_tls(|c| {
        c.server.http.max_connections = 2;
        c.server.http.connection_reserve = 1;
        c.server.http.header_timeout = Duration::from_secs(30);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr(&app.base)).await.unwrap());
    }
    // Let the server accept both before the next connection arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pem = std::fs::read(&ca.ca_pem).unwrap();
    let client = Client::new(https(&app.base))
        .with_root_certificate(&pem)
        .unwrap();
    assert_eq!(client.health().await.unwrap().status, "healthy");
    let refused = client.jobs(&Default::default()).await.unwrap_err();
    assert_eq!(refused.code(), Some("TOO_MANY_CONNECTIONS"), "{refused:?}");
    drop(held);
    crate::helpers::eventually(Duration::from_secs(5), "a freed slot", || async {
        client.jobs(&Default::default()).await.ok()
    })
    .await;
    stop(app).await;
}

#[tokio::test]
async fn the_idle_and_body_timeouts_hold_over_tls() {
    let (app, ca, _dir) = spawn_tls(|c| {
        c.server.http.idle_timeout = Duration::from_millis(300);
        c.server.http.body_timeout = Duration::from_millis(300);
    })
    .await;
    let mut used = tls_connect(&app.base, &ca.ca_pem).await;
    used.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: d\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut used, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut slow = tls_connect(&app.base, &ca.ca_pem).await;
    slow.write_all(
        b"POST /api/v1/jobs HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let pem = std::fs::read(&ca.ca_pem).unwrap();
    let client = Client::new(https(&app.base))
        .with_root_certificate(&pem)
        .unwrap();
    let jobs = client.jobs(&Default::default()).await.unwrap().jobs;
    assert!(jobs.is_empty(), "{jobs:?}");
    stop(app).await;
}

#[tokio::test]
async fn the_grpc_listener_speaks_tls_with_the_same_certificate() {
    use drover_proto::orchion::v1 as pb;
    use drover_proto::orchion::v1::orchestrator_client::OrchestratorClient;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let (app, ca, _dir) = spawn_tls(|c| c.grpc = Some("127.0.0.1:0".parse().unwrap())).await;
    let url = https(app.grpc.as_deref().unwrap());
    let trusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca.ca_pem).unwrap()))
        .domain_name("localhost");
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(trusted)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let nodes = OrchestratorClient::new(channel)
        .list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap();
    assert!(nodes.into_inner().nodes.is_empty());
    // Trusting another CA, the certificate is refused.
    let other_dir = tempfile::tempdir().unwrap();
    let other = private_ca(other_dir.path());
    let untrusted = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&other.ca_pem).unwrap()))
        .domain_name("localhost");
    let refused = Channel::from_shared(url)
        .unwrap()
        .tls_config(untrusted)
        .unwrap()
        .connect()
        .await;
    assert!(
        refused.is_err(),
        "a certificate of an unknown CA was accepted"
    );
    app.begin_shutdown();
    app.stopped().await;
}

#[tokio::test]
async fn the_dashboards_session_cookie_is_sent_over_https_only() {
    let (app, ca, _dir) = spawn_tls(|c| c.server.api_key = Some("dashboard-key".into())).await;
    let mut conn = tls_connect(&app.base, &ca.ca_pem).await;
    let body = "key=dashboard-key&next=%2Fui";
    let request = format!(
        "POST /ui/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let answer = closed_within(&mut conn, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no session cookie: {answer}"));
    for flag in ["; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("dashboard-key"));
    stop(app).await;
}
