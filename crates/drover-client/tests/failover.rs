//! A client of several replicas against small HTTP servers on loopback ports that answer as
//! told (or never, or not at all): which requests go on to the next replica after which
//! failure, where the next request starts, and what a failure on every replica says.

use drover_api::{ExchangeRequest, HeartbeatRequest};
use drover_client::{Client, ClientError, ServerList};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How a fake replica treats each request.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers this status with this JSON body.
    Answer(u16, &'static str),
    /// Reads the request and never answers.
    Hang,
}

/// A replica on a loopback port, counting the requests it read, until the test ends.
struct Replica {
    url: String,
    requests: Arc<AtomicUsize>,
}

impl Replica {
    async fn start(behaviour: Behaviour) -> Replica {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    // One request a connection: its head, then as much body as it announced.
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while seen.len() < head_end + length {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Behaviour::Answer(status, body) => {
                            let answer = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = socket.write_all(answer.as_bytes()).await;
                        }
                        Behaviour::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                    }
                });
            }
        });
        Replica { url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A URL nobody listens on: connections to it are refused.
fn refused() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

const HEALTH: &str =
    r#"{"status":"UP","database":"UP","activeSpots":0,"pendingTasks":0,"runningTasks":0}"#;
const UNAVAILABLE: &str =
    r#"{"success":false,"error":"the store is unavailable","code":"STORE_UNAVAILABLE"}"#;
const NOT_FOUND: &str = r#"{"success":false,"error":"no such job","code":"JOB_NOT_FOUND"}"#;
const CLAIMED: &str = r#"{"tasks":[]}"#;
const EXCHANGED: &str = r#"{"results":[],"tasks":[]}"#;

/// A client of `urls` in this order, starting at the first, giving up on a request after
/// 300 ms.
fn client(urls: &[&str]) -> Client {
    Client::with_servers(ServerList::parse(urls).unwrap())
        .starting_at(0)
        .with_timeout(Duration::from_millis(300))
}

fn heartbeat() -> HeartbeatRequest {
    HeartbeatRequest {
        spot_id: "spot-1".into(),
        ip_address: None,
        cpu_load: None,
        running_tasks: None,
        total_cores: None,
        free_memory_bytes: None,
    }
}

fn exchange(max_tasks: u32) -> ExchangeRequest {
    ExchangeRequest {
        spot_id: "spot-1".into(),
        reports: Vec::new(),
        max_tasks,
        wait_ms: None,
        running_tasks: None,
    }
}

#[tokio::test]
async fn a_read_goes_on_past_a_refused_connection_and_a_503_and_the_next_starts_where_it_was_answered()
 {
    let busy = Replica::start(Behaviour::Answer(503, UNAVAILABLE)).await;
    let live = Replica::start(Behaviour::Answer(200, HEALTH)).await;
    let dead = refused();
    let c = client(&[&dead, &busy.url, &live.url]);
    assert_eq!(c.health().await.unwrap().status, "UP");
    assert_eq!((busy.requests(), live.requests()), (1, 1));
    assert_eq!(
        c.base_url(),
        live.url,
        "stays with the replica that answered"
    );
    c.health().await.unwrap();
    assert_eq!((busy.requests(), live.requests()), (1, 2));
}

#[tokio::test]
async fn a_failure_on_every_replica_names_each_url_with_its_error() {
    let busy = Replica::start(Behaviour::Answer(503, UNAVAILABLE)).await;
    let dead = refused();
    let error = client(&[&dead, &busy.url]).health().await.unwrap_err();
    let ClientError::Failover { tried, not_sent } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(tried.len(), 2);
    assert!(not_sent.is_empty());
    let message = error.to_string();
    assert!(
        message.contains(&format!("{dead}: cannot reach the server")),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}: 503 STORE_UNAVAILABLE", busy.url)),
        "{message}"
    );
}

#[tokio::test]
async fn an_answer_that_is_not_a_failure_of_the_replica_is_final() {
    let refusing = Replica::start(Behaviour::Answer(404, NOT_FOUND)).await;
    let live = Replica::start(Behaviour::Answer(200, HEALTH)).await;
    let error = client(&[&refusing.url, &live.url])
        .task("task-1")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("JOB_NOT_FOUND"), "{error:?}");
    assert_eq!(live.requests(), 0);
}

#[tokio::test]
async fn a_claim_goes_on_when_it_was_never_sent_or_the_server_said_503() {
    let busy = Replica::start(Behaviour::Answer(503, UNAVAILABLE)).await;
    let live = Replica::start(Behaviour::Answer(200, CLAIMED)).await;
    let dead = refused();
    let c = client(&[&dead, &busy.url, &live.url]);
    assert!(c.claim("spot-1", 4).await.unwrap().is_empty());
    assert_eq!((busy.requests(), live.requests()), (1, 1));
}

/// A claim that timed out may have been carried out: sent again, it would claim other tasks
/// while the first ones stay leased to the spot. It comes back as an error naming the replica
/// it was not sent to, and the next request starts there.
#[tokio::test]
async fn a_claim_that_may_have_reached_a_replica_is_not_sent_to_another() {
    let silent = Replica::start(Behaviour::Hang).await;
    let live = Replica::start(Behaviour::Answer(200, CLAIMED)).await;
    let c = client(&[&silent.url, &live.url]);
    let error = c.claim("spot-1", 4).await.unwrap_err();
    let ClientError::Failover { tried, not_sent } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(tried[0].0, silent.url);
    assert_eq!(not_sent, std::slice::from_ref(&live.url));
    assert!(
        error.to_string().contains("repeating it is not safe"),
        "{error}"
    );
    assert_eq!((silent.requests(), live.requests()), (1, 0));
    assert_eq!(
        c.base_url(),
        live.url,
        "the next request starts past the silent one"
    );

    let claiming = client(&[&silent.url, &live.url]);
    assert!(claiming.exchange(&exchange(2)).await.is_err());
    assert_eq!(live.requests(), 0, "an exchange that claims is a claim");
}

#[tokio::test]
async fn heartbeats_and_reports_go_on_after_a_timeout() {
    let silent = Replica::start(Behaviour::Hang).await;
    let live = Replica::start(Behaviour::Answer(200, r#"{"success":true}"#)).await;
    client(&[&silent.url, &live.url])
        .heartbeat(&heartbeat())
        .await
        .unwrap();
    assert_eq!(live.requests(), 1);

    let exchanged = Replica::start(Behaviour::Answer(200, EXCHANGED)).await;
    client(&[&silent.url, &exchanged.url])
        .exchange(&exchange(0))
        .await
        .unwrap();
    assert_eq!(
        exchanged.requests(),
        1,
        "an exchange that only reports is repeated"
    );
}

#[tokio::test]
async fn one_server_is_sent_each_request_once_and_its_error_comes_back_as_it_was() {
    let busy = Replica::start(Behaviour::Answer(503, UNAVAILABLE)).await;
    let c = Client::new(format!("{}/", busy.url));
    assert_eq!(c.base_url(), busy.url);
    let error = c.health().await.unwrap_err();
    assert_eq!(error.status(), Some(503), "{error:?}");
    assert_eq!(busy.requests(), 1);
    let dead = refused();
    let error = Client::new(dead).health().await.unwrap_err();
    assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
    // A list of one is the same client.
    let error = Client::with_servers(ServerList::parse([busy.url.as_str()]).unwrap())
        .health()
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(503), "{error:?}");
}
