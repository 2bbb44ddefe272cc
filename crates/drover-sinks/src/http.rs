//! The HTTP sink: another drover server's data-availability routes, `POST /da/post`,
//! `GET /da/blob/{height}` and `GET /da/head`. It owns the client side of those routes and
//! what their answers mean to a caller ([`SinkError`]), and it checks each commitment the
//! server answers against the blob's own. It must not retry (the caller decides, from the
//! error) nor keep any blob itself: the other server is the sink.

use crate::{Posted, Sink, SinkError, commitment};
use drover_api::placement::{DaPost, DaPosted};
use reqwest::{RequestBuilder, Response, StatusCode};
use std::time::Duration;

/// A sink on another drover server (one started with `--da-dir`), named by its base URL
/// (`http://host:port`, or `https://`).
///
/// Every call is one request bounded by the timeout, connecting included. A server that cannot
/// be reached, does not answer in time, answers 5xx, 408 or 429 is unavailable; any other 4xx
/// is a refusal carrying the server's own message; an answer that is not the route's is
/// corrupt; a post answered with another blob's commitment is a [`SinkError::Mismatch`].
#[derive(Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    /// The base URL without its trailing slash.
    base: String,
    timeout: Duration,
    api_key: Option<String>,
}

/// The answer of `GET /da/head`.
#[derive(serde::Deserialize)]
struct Head {
    height: u64,
}

/// Longest piece of a refusal's body quoted in an error.
const QUOTED: usize = 300;

impl HttpSink {
    /// The placement contract's default for its `DA_TIMEOUT_MS`: 30 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(30_000);

    /// A sink on the drover server at `base` (`http://host:port`), with the default timeout
    /// and no key. Refuses a URL that is not http(s).
    pub fn new(base: &str) -> Result<HttpSink, SinkError> {
        let base = base.trim().trim_end_matches('/').to_string();
        let refused = |why: String| SinkError::Refused {
            sink: base.clone(),
            why,
        };
        let url = reqwest::Url::parse(&base).map_err(|e| refused(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(refused(
                "expected the server's base URL, http://host:port or https://host:port".into(),
            ));
        }
        let client = reqwest::Client::builder()
            // A redirected POST would come back a GET without its body: a sink URL that moved
            // is a setting to fix, answered as a refusal.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| refused(format!("the HTTP client could not be built: {}", chain(&e))))?;
        Ok(HttpSink {
            client,
            base,
            timeout: HttpSink::DEFAULT_TIMEOUT,
            api_key: None,
        })
    }

    /// The limit of each call, from sending to the answer's last byte (the contract's
    /// `DA_TIMEOUT_MS`).
    pub fn with_timeout(mut self, timeout: Duration) -> HttpSink {
        self.timeout = timeout;
        self
    }

    /// Sends `Authorization: Bearer <key>`, for a server whose `/da/*` routes need its API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> HttpSink {
        self.api_key = Some(key.into());
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unavailable(&self, why: String) -> SinkError {
        SinkError::Unavailable {
            sink: self.base.clone(),
            why,
        }
    }

    fn corrupt(&self, what: String) -> SinkError {
        SinkError::Corrupt {
            sink: self.base.clone(),
            what,
        }
    }

    /// Sends `request` with the timeout and the key; answers the status and the whole body.
    async fn send(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<(StatusCode, Vec<u8>), SinkError> {
        let mut request = request.timeout(self.timeout);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let failed = |e: reqwest::Error| {
            if e.is_builder() {
                SinkError::Refused {
                    sink: self.base.clone(),
                    why: format!("{what} could not be sent: {}", chain(&e)),
                }
            } else if e.is_timeout() {
                self.unavailable(format!("{what}: no answer within {:?}", self.timeout))
            } else {
                // Refused or reset connections, a name that does not resolve, a connection
                // lost before the whole answer came: the server may answer another time.
                self.unavailable(format!("{what}: {}", chain(&e)))
            }
        };
        let response: Response = request.send().await.map_err(failed)?;
        let status = response.status();
        let body = response.bytes().await.map_err(failed)?;
        Ok((status, body.to_vec()))
    }

    /// The error of an answer that is not a success: unavailable for 5xx, 408 and 429 (the
    /// server may take the same request later), refused for the rest, with the server's own
    /// words.
    fn not_ok(&self, what: &str, status: StatusCode, body: &[u8]) -> SinkError {
        let why = format!("{what}: {status}: {}", message(status, body));
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            self.unavailable(why)
        } else {
            SinkError::Refused {
                sink: self.base.clone(),
                why,
            }
        }
    }
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    async fn post(&self, data: &[u8]) -> Result<Posted, SinkError> {
        const WHAT: &str = "POST /da/post";
        let body = DaPost {
            data_hex: hex::encode(data),
        };
        let request = self
            .client
            .post(format!("{}/da/post", self.base))
            .json(&body);
        let (status, body) = self.send(request, WHAT).await?;
        if !status.is_success() {
            return Err(self.not_ok(WHAT, status, &body));
        }
        let answer: DaPosted = serde_json::from_slice(&body).map_err(|e| {
            self.corrupt(format!(
                "{WHAT} answered {status} with a body that is not the route's: {e}: {}",
                quote(&body)
            ))
        })?;
        let (true, Some(answered), Some(height)) =
            (answer.success, answer.commitment, answer.height)
        else {
            return Err(self.corrupt(format!(
                "{WHAT} answered {status} without success, commitment and height: {}",
                quote(&body)
            )));
        };
        if height == 0 {
            return Err(self.corrupt(format!("{WHAT} answered height 0")));
        }
        let expected = commitment(data);
        if !answered.eq_ignore_ascii_case(&expected) {
            return Err(SinkError::Mismatch {
                sink: self.base.clone(),
                height,
                expected,
                answered,
            });
        }
        Ok(Posted {
            commitment: expected,
            height,
        })
    }

    async fn get(&self, height: u64) -> Result<Option<Vec<u8>>, SinkError> {
        let what = format!("GET /da/blob/{height}");
        let request = self.client.get(format!("{}/da/blob/{height}", self.base));
        let (status, body) = self.send(request, &what).await?;
        if status.is_success() {
            return Ok(Some(body));
        }
        if status == StatusCode::NOT_FOUND {
            // The route says a blob is absent with its own code; a bare 404 is a server
            // without the route (an older drover, or not drover), whose "absent" means nothing.
            if code(&body).as_deref() == Some("BLOB_NOT_FOUND") {
                return Ok(None);
            }
            return Err(SinkError::Refused {
                sink: self.base.clone(),
                why: format!(
                    "{what}: 404 without BLOB_NOT_FOUND: the server has no /da/blob route: {}",
                    message(status, &body)
                ),
            });
        }
        Err(self.not_ok(&what, status, &body))
    }

    async fn head(&self) -> Result<u64, SinkError> {
        const WHAT: &str = "GET /da/head";
        let request = self.client.get(format!("{}/da/head", self.base));
        let (status, body) = self.send(request, WHAT).await?;
        if !status.is_success() {
            return Err(self.not_ok(WHAT, status, &body));
        }
        let head: Head = serde_json::from_slice(&body).map_err(|e| {
            self.corrupt(format!(
                "{WHAT} answered a body that is not {{\"height\": n}}: {e}: {}",
                quote(&body)
            ))
        })?;
        Ok(head.height)
    }

    /// The server is up, answers in time and keeps blobs (`GET /da/head` answers): a server
    /// started without `--da-dir` answers 503 `DA_DISABLED`, unavailable.
    async fn check(&self) -> Result<(), SinkError> {
        self.head().await.map(|_| ())
    }

    fn kind(&self) -> &'static str {
        "http"
    }
}

/// The `code` of a drover error body, if the body is one.
fn code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("code")?.as_str().map(str::to_string)
}

/// What the server said: a drover error body's `error` (and `code`), else the body's text, else
/// the status's name.
fn message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(error) = value.get("error").and_then(|e| e.as_str())
    {
        return match value.get("code").and_then(|c| c.as_str()) {
            Some(code) => format!("{error} ({code})"),
            None => error.to_string(),
        };
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return status
            .canonical_reason()
            .unwrap_or("no reason given")
            .into();
    }
    quote(body)
}

/// The start of `body` as text, for a message.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(QUOTED) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// An error and its causes, which reqwest's `Display` leaves out (the refused connection is in
/// the source, not in "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_http_base_url_is_taken() {
        for bad in ["", "localhost:8080", "ftp://host", "http://"] {
            let err = HttpSink::new(bad).err();
            assert!(
                matches!(err, Some(SinkError::Refused { .. })),
                "{bad:?}: {err:?}"
            );
        }
        let sink = HttpSink::new(" http://127.0.0.1:9/ ").unwrap();
        assert_eq!(sink.base(), "http://127.0.0.1:9");
        assert_eq!(sink.kind(), "http");
    }

    #[test]
    fn a_refusal_quotes_the_server() {
        let body = br#"{"success":false,"error":"invalid hex data","code":"INVALID_HEX"}"#;
        assert_eq!(
            message(StatusCode::BAD_REQUEST, body),
            "invalid hex data (INVALID_HEX)"
        );
        assert_eq!(
            message(StatusCode::BAD_GATEWAY, b"upstream down\n"),
            "upstream down"
        );
        assert_eq!(message(StatusCode::NOT_FOUND, b""), "Not Found");
        assert_eq!(
            quote("é".repeat(400).as_bytes()).chars().count(),
            QUOTED + 3
        );
    }

    /// A server on a free loopback port that answers every request with `answer` (a whole
    /// HTTP/1.1 response), or holds every connection without a word when `None`. Its thread
    /// lives as long as the test process.
    fn fake_server(answer: Option<&'static str>) -> HttpSink {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                // The whole request, so that closing after the answer never resets a
                // connection whose request is still coming (which could lose the answer).
                read_request(&mut stream);
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(answer.as_bytes());
                    }
                    None => held.push(stream),
                }
            }
        });
        HttpSink::new(&base)
            .unwrap()
            .with_timeout(Duration::from_millis(500))
    }

    /// Reads a request's head and its `content-length` bytes of body.
    fn read_request(stream: &mut std::net::TcpStream) {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while seen.len() < end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn response(status: &str, body: &str) -> &'static str {
        let text = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        Box::leak(text.into_boxed_str())
    }

    #[tokio::test]
    async fn a_commitment_that_is_not_the_blobs_is_a_mismatch() {
        let sink = fake_server(Some(response(
            "200 OK",
            &format!(
                r#"{{"success":true,"commitment":"{}","height":7}}"#,
                commitment(b"something else")
            ),
        )));
        let err = sink.post(b"mine").await.unwrap_err();
        let SinkError::Mismatch {
            height,
            expected,
            answered,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(*height, 7);
        assert_eq!(*expected, commitment(b"mine"));
        assert_eq!(*answered, commitment(b"something else"));
        assert!(!err.is_unavailable());
    }

    #[tokio::test]
    async fn the_same_commitment_in_capitals_is_the_blobs() {
        let sink = fake_server(Some(response(
            "200 OK",
            &format!(
                r#"{{"success":true,"commitment":"{}","height":2}}"#,
                commitment(b"mine").to_uppercase()
            ),
        )));
        assert_eq!(
            sink.post(b"mine").await.unwrap(),
            Posted {
                commitment: commitment(b"mine"),
                height: 2
            }
        );
    }

    #[tokio::test]
    async fn a_4xx_is_refused_with_the_servers_words_and_a_5xx_is_unavailable() {
        let sink = fake_server(Some(response(
            "400 Bad Request",
            r#"{"success":false,"error":"invalid hex data: odd length","code":"INVALID_HEX"}"#,
        )));
        let err = sink.post(b"x").await.unwrap_err();
        assert!(matches!(err, SinkError::Refused { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("invalid hex data: odd length (INVALID_HEX)"),
            "{err}"
        );

        let sink = fake_server(Some(response("502 Bad Gateway", "")));
        let err = sink.post(b"x").await.unwrap_err();
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
        let err = sink.check().await.unwrap_err();
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");

        let sink = fake_server(Some(response("429 Too Many Requests", "")));
        let err = sink.post(b"x").await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_the_routes_is_corrupt() {
        let sink = fake_server(Some(response("200 OK", "<html>welcome</html>")));
        let err = sink.post(b"x").await.unwrap_err();
        assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("<html>welcome</html>"), "{err}");
        let err = sink.head().await.unwrap_err();
        assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");

        let sink = fake_server(Some(response("200 OK", r#"{"success":false}"#)));
        let err = sink.post(b"x").await.unwrap_err();
        assert!(matches!(err, SinkError::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_bare_404_is_a_server_without_the_route_not_an_absent_blob() {
        let sink = fake_server(Some(response("404 Not Found", "")));
        let err = sink.get(1).await.unwrap_err();
        assert!(matches!(err, SinkError::Refused { .. }), "{err}");
        let sink = fake_server(Some(response(
            "404 Not Found",
            r#"{"success":false,"error":"no blob at height 1","code":"BLOB_NOT_FOUND"}"#,
        )));
        assert_eq!(sink.get(1).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_unavailable_after_the_timeout() {
        let sink = fake_server(None);
        let started = std::time::Instant::now();
        let err = sink.post(b"x").await.unwrap_err();
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
        assert!(err.to_string().contains("no answer within"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let err = sink.check().await.unwrap_err();
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_server_nobody_runs_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = HttpSink::new(&format!("http://127.0.0.1:{port}"))
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        let err = sink.post(b"x").await.unwrap_err();
        assert!(matches!(err, SinkError::Unavailable { .. }), "{err}");
        let err = sink.check().await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
    }
}
