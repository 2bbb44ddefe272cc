//! A typed client of drover's native HTTP API (`/api/v1`, `/internal/v1`).
//!
//! It sends and receives the wire types of `drover_api` and turns error answers into
//! [`ClientError::Api`] with the server's status, code and message. Given several server URLs
//! (replicas of one coordinator) it sends each request to one of them and moves on to the next
//! when that one cannot be used and repeating the request is safe ([`servers`] has the rule).
//! Everything else is its callers' (the agent, the CLI): waiting and trying again later,
//! backoff, what an answer means.

pub mod servers;

use bytes::Bytes;
use drover_api::*;
use drover_core::text::path_segment;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use servers::{BadServerUrl, Retry, ServerList};
use servers::{Failure, Next, Rotation};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error; `code` is its stable machine-readable code.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached or the connection broke: try again or another server.
    #[error("cannot reach the server: {}", drover_core::text::error_chain(.0))]
    Transport(#[from] reqwest::Error),
    /// The answer was not what this client expects (a different server, or a version mismatch).
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// With several servers: none could carry the request out. `tried` has each URL tried with
    /// its failure (unreachable, timed out, 503...), in order; `not_sent` the URLs the request
    /// was not sent to because the last one may have carried it out (see [`Retry`]).
    #[error("{}", failover_message(.tried, .not_sent))]
    Failover {
        tried: Vec<(String, ClientError)>,
        not_sent: Vec<String>,
    },
}

fn failover_message(tried: &[(String, ClientError)], not_sent: &[String]) -> String {
    let each: Vec<String> = tried.iter().map(|(url, e)| format!("{url}: {e}")).collect();
    let mut m = format!(
        "no server could carry out the request (tried {}: {})",
        tried.len(),
        each.join("; ")
    );
    if let (Some((last, _)), false) = (tried.last(), not_sent.is_empty()) {
        m.push_str(&format!(
            "; not sent to {} since {last} may have carried it out and repeating it is not safe",
            not_sent.join(", ")
        ));
    }
    m
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The machine-readable code of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Paging and filtering for list calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Follows `nextCursor` from the first page to the last, 1000 items a page, and gathers the
/// items.
async fn every_page<T, F, Fut>(mut opts: ListOptions, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(ListOptions) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    opts.limit = Some(1000);
    let mut all = Vec::new();
    loop {
        let (items, next) = page(opts.clone()).await?;
        all.extend(items);
        match next {
            Some(c) => opts.cursor = Some(c),
            None => return Ok(all),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The replicas; one for a client of a single server.
    servers: Arc<ServerList>,
    /// Where the next request starts, shared with this client's clones.
    rotation: Arc<Rotation>,
    agent_key: Option<String>,
    api_key: Option<String>,
    /// The spot this client acts for and its secret (from hello's `spotSecret`).
    spot: Option<(String, String)>,
    /// What the HTTP client is built from, so each `with_*` can rebuild it with the others.
    timeout: Option<std::time::Duration>,
    roots: Vec<reqwest::Certificate>,
}

/// A certificate file could not be used as a trusted root.
#[derive(Debug, thiserror::Error)]
#[error("not a PEM certificate: {0}")]
pub struct BadCertificate(String);

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:8080`, or `https://...`: TLS with
    /// the system's trusted roots, plus any given with [`Client::with_root_certificate`]).
    /// Each request goes there once; a failure is the caller's to handle.
    pub fn new(base: impl Into<String>) -> Self {
        Self::build(ServerList::one(base.into()), Rotation::starting_at(1, 0))
    }

    /// A client of several replicas of one coordinator. Each process starts at a random one
    /// (so that many clients spread over them) and stays with the one that answers; a request
    /// that finds it unusable goes on to the next, each replica once, as far as [`Retry`]
    /// allows. With one URL this is [`Client::new`].
    pub fn with_servers(servers: ServerList) -> Self {
        let rotation = Rotation::random(servers.len());
        Self::build(servers, rotation)
    }

    /// Starts at the replica at `index` of the list instead of a random one (tests, and
    /// callers that spread clients by a rule of their own).
    pub fn starting_at(self, index: usize) -> Self {
        self.rotation.answered(index);
        self
    }

    fn build(servers: ServerList, rotation: Rotation) -> Self {
        let mut client = Client {
            http: reqwest::Client::new(),
            servers: Arc::new(servers),
            rotation: Arc::new(rotation),
            agent_key: None,
            api_key: None,
            spot: None,
            timeout: None,
            roots: Vec::new(),
        };
        client.rebuild();
        client
    }

    fn rebuild(&mut self) {
        let mut builder = reqwest::Client::builder();
        if let Some(t) = self.timeout {
            builder = builder.timeout(t).connect_timeout(t);
        }
        for root in &self.roots {
            builder = builder.add_root_certificate(root.clone());
        }
        // Building fails only when the TLS backend cannot start (no crypto provider, unreadable
        // system roots); the plain client is then kept, and https calls report the problem.
        if let Ok(http) = builder.build() {
            self.http = http;
        }
    }

    /// Also trusts the certificate(s) in `pem` (e.g. a private CA's) for https servers.
    pub fn with_root_certificate(mut self, pem: &[u8]) -> Result<Self, BadCertificate> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| BadCertificate(drover_core::text::error_chain(&e)))?;
        if certs.is_empty() {
            return Err(BadCertificate("the file holds no certificate".into()));
        }
        self.roots.extend(certs);
        self.rebuild();
        Ok(self)
    }

    /// Sends the agent key on `/internal/v1` calls.
    pub fn with_agent_key(mut self, key: impl Into<String>) -> Self {
        self.agent_key = Some(key.into());
        self
    }

    /// Sends the API key on `/api/v1` calls.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Acts for `spot` with its `secret`: sends `X-Spot-Secret` on `/internal/v1` calls, and
    /// `X-Spot-Id` with it (and the agent key) on the job read, which is how an agent learns a
    /// job's command and its `env` values.
    pub fn with_spot_secret(mut self, spot: impl Into<String>, secret: impl Into<String>) -> Self {
        self.spot = Some((spot.into(), secret.into()));
        self
    }

    /// Gives up on a request (connect, send, answer) after `timeout`, as a transport error.
    /// Without it a request waits as long as the server does, which suits the CLI but not an
    /// agent that must notice a hung server and fail over.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self.rebuild();
        self
    }

    /// The URL the next request goes to first (the only one, for a single server).
    pub fn base_url(&self) -> &str {
        &self.servers.urls()[self.rotation.current()]
    }

    /// Every server URL, in the order given.
    pub fn servers(&self) -> &[String] {
        self.servers.urls()
    }

    /// A request of `method` to `path` on the server at `base`, with this client's keys.
    fn request(&self, base: &str, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if path.starts_with("/internal/") {
            if let Some(k) = &self.agent_key {
                req = req.header("X-Agent-Key", k);
            }
            if let Some((_, secret)) = &self.spot {
                req = req.header("X-Spot-Secret", secret);
            }
        } else if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        req
    }

    /// One request, built by `build` for a server's base URL, sent to one server after
    /// another as [`Rotation`] and `retry` say, until one answers; the body of a 2xx answer.
    async fn fetch(&self, retry: Retry, build: impl Fn(&str) -> RequestBuilder) -> Result<Bytes> {
        let urls = self.servers.urls();
        if urls.len() == 1 {
            return once(build(&urls[0])).await;
        }
        let order: Vec<usize> = self.rotation.order().collect();
        let mut tried = Vec::new();
        for (n, &index) in order.iter().enumerate() {
            let url = &urls[index];
            let error = match once(build(url)).await {
                Ok(body) => {
                    self.rotation.answered(index);
                    return Ok(body);
                }
                Err(e) => e,
            };
            match retry.after(failure(&error)) {
                Next::Answer => {
                    self.rotation.answered(index);
                    return Err(error);
                }
                Next::Move => {
                    self.rotation.failed(index);
                    tried.push((url.clone(), error));
                }
                Next::Stop => {
                    self.rotation.failed(index);
                    tried.push((url.clone(), error));
                    let not_sent = order[n + 1..].iter().map(|&i| urls[i].clone()).collect();
                    return Err(ClientError::Failover { tried, not_sent });
                }
            }
        }
        Err(ClientError::Failover {
            tried,
            not_sent: Vec::new(),
        })
    }

    /// [`Client::fetch`], with the answer read as JSON.
    async fn send<T: DeserializeOwned>(
        &self,
        retry: Retry,
        build: impl Fn(&str) -> RequestBuilder,
    ) -> Result<T> {
        let bytes = self.fetch(retry, build).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode(format!("{e}: {}", String::from_utf8_lossy(&bytes))))
    }

    /// A read: safe to repeat anywhere.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(Retry::Idempotent, |base| {
            self.request(base, Method::GET, path)
        })
        .await
    }

    /// A read of a list page.
    async fn get_page<T: DeserializeOwned>(&self, path: &str, opts: &ListOptions) -> Result<T> {
        self.send(Retry::Idempotent, |base| {
            self.request(base, Method::GET, path).query(opts)
        })
        .await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        retry: Retry,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(retry, |base| {
            self.request(base, Method::POST, path).json(body)
        })
        .await
    }

    pub async fn health(&self) -> Result<HealthResponse> {
        self.get("/api/v1/health").await
    }

    /// The session runners, oldest first.
    pub async fn runners(&self) -> Result<Vec<RunnerInfo>> {
        every_page(ListOptions::default(), |opts| async move {
            let page = self.runners_page(&opts).await?;
            Ok((page.runners, page.next_cursor))
        })
        .await
    }

    /// One page of the session runners, oldest first.
    pub async fn runners_page(&self, opts: &ListOptions) -> Result<RunnerList> {
        self.get_page("/api/v1/runners", opts).await
    }

    /// The answering replica's role, the leader and its epoch, and the replicas seen recently.
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        self.get("/api/v1/cluster").await
    }

    /// Entries of the event journal after entry `after` (0: from the first), at most `limit`
    /// (1 to 1000), oldest first, with the journal's head. With a `wait`, when there are none
    /// yet, the server waits up to that long (at most 30 s) for the next one to be written, and
    /// answers none when the time passes; the client's own timeout is stretched by `wait`.
    pub async fn journal(
        &self,
        after: u64,
        limit: u32,
        wait: std::time::Duration,
    ) -> Result<JournalPage<drover_core::journal::Entry>> {
        let mut query = vec![("after", after.to_string()), ("limit", limit.to_string())];
        if let Some(ms) = wait_ms(wait) {
            query.push(("waitMs", ms.to_string()));
        }
        self.send(Retry::Idempotent, |base| {
            let get = self
                .request(base, Method::GET, "/api/v1/journal")
                .query(&query);
            self.waiting(get, wait)
        })
        .await
    }

    /// Replays the event journal on the server and compares it with the live tables: the
    /// inconsistencies found, each named.
    pub async fn verify_journal(&self) -> Result<JournalVerification> {
        self.get("/api/v1/journal/verify").await
    }

    /// The background workers and how each is doing, by name.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.get::<WorkerList>("/api/v1/workers")
            .await
            .map(|l| l.workers)
    }

    /// One page of spots.
    pub async fn spots_page(&self, opts: &ListOptions) -> Result<SpotsResponse> {
        self.get_page("/api/v1/spots", opts).await
    }

    /// Every spot, page by page.
    pub async fn spots(&self) -> Result<Vec<Spot>> {
        every_page(ListOptions::default(), |opts| async move {
            let page = self.spots_page(&opts).await?;
            Ok((page.spots, page.next_cursor))
        })
        .await
    }

    /// Drains a spot: it finishes the tasks it holds and claims nothing new until undrained.
    /// Idempotent: draining a DRAINING spot changes nothing.
    pub async fn drain_spot(&self, id: &str) -> Result<Spot> {
        let path = format!("/api/v1/spots/{}/drain", path_segment(id));
        self.send(Retry::Idempotent, |base| {
            self.request(base, Method::POST, &path)
        })
        .await
    }

    /// Puts a drained spot back to work (UP). Idempotent, as [`Client::drain_spot`].
    pub async fn undrain_spot(&self, id: &str) -> Result<Spot> {
        let path = format!("/api/v1/spots/{}/undrain", path_segment(id));
        self.send(Retry::Idempotent, |base| {
            self.request(base, Method::POST, &path)
        })
        .await
    }

    /// Creates a job. Sent to another replica only when it certainly created nothing: a
    /// second copy would be a second job.
    pub async fn create_job(&self, req: &CreateJobRequest) -> Result<CreateJobResponse> {
        self.post(Retry::UnlessSent, "/api/v1/jobs", req).await
    }

    /// A job. An agent's client (with the agent key or a spot secret) reads it as an agent,
    /// which is what shows its `env` values; anyone else sees them redacted.
    pub async fn job(&self, id: &str) -> Result<Job> {
        let path = format!("/api/v1/jobs/{}", path_segment(id));
        self.send(Retry::Idempotent, |base| {
            let mut req = self.request(base, Method::GET, &path);
            if let Some(k) = &self.agent_key {
                req = req.header("X-Agent-Key", k);
            }
            if let Some((spot, secret)) = &self.spot {
                req = req
                    .header("X-Spot-Id", spot)
                    .header("X-Spot-Secret", secret);
            }
            req
        })
        .await
    }

    pub async fn jobs(&self, opts: &ListOptions) -> Result<JobList> {
        self.get_page("/api/v1/jobs", opts).await
    }

    /// Cancels a job; idempotent (a cancelled job is left as it is), so repeated anywhere.
    pub async fn cancel_job(&self, id: &str) -> Result<Job> {
        let path = format!("/api/v1/jobs/{}/cancel", path_segment(id));
        self.send(Retry::Idempotent, |base| {
            self.request(base, Method::POST, &path)
        })
        .await
    }

    pub async fn tasks(&self, job_id: &str, opts: &ListOptions) -> Result<TaskList> {
        self.get_page(
            &format!("/api/v1/jobs/{}/tasks", path_segment(job_id)),
            opts,
        )
        .await
    }

    /// Every task of a job (optionally of one status), following the pages.
    pub async fn all_tasks(&self, job_id: &str, status: Option<&str>) -> Result<Vec<Task>> {
        let opts = ListOptions {
            status: status.map(String::from),
            ..Default::default()
        };
        every_page(opts, |opts| async move {
            let page = self.tasks(job_id, &opts).await?;
            Ok((page.tasks, page.next_cursor))
        })
        .await
    }

    pub async fn task(&self, id: &str) -> Result<Task> {
        self.get(&format!("/api/v1/tasks/{}", path_segment(id)))
            .await
    }

    pub async fn results(&self, job_id: &str, opts: &ListOptions) -> Result<ResultsResponse> {
        self.get_page(
            &format!("/api/v1/jobs/{}/results", path_segment(job_id)),
            opts,
        )
        .await
    }

    /// The job's results as CSV text.
    pub async fn results_csv(&self, job_id: &str) -> Result<String> {
        let path = format!("/api/v1/jobs/{}/results", path_segment(job_id));
        let bytes = self
            .fetch(Retry::Idempotent, |base| {
                self.request(base, Method::GET, &path)
                    .query(&[("format", "csv")])
            })
            .await?;
        String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Registers a spot. Sent to another replica only when it certainly registered nothing: a
    /// second copy would register a second spot (the first would go DOWN unused).
    pub async fn hello(&self, req: &HelloRequest) -> Result<HelloResponse> {
        self.post(Retry::UnlessSent, "/internal/v1/hello", req)
            .await
    }

    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<SuccessBody> {
        self.post(Retry::Idempotent, "/internal/v1/heartbeat", req)
            .await
    }

    pub async fn claim(&self, spot_id: &str, max_tasks: u32) -> Result<Vec<ClaimedTask>> {
        self.claim_waiting(spot_id, max_tasks, std::time::Duration::ZERO)
            .await
    }

    /// A claim that, when nothing is claimable, waits on the server up to `wait` (at most 30 s)
    /// for work to appear. The request's own timeout, if the client has one, is stretched by
    /// `wait`. Sent to another replica only when it certainly claimed nothing (see [`Retry`]).
    pub async fn claim_waiting(
        &self,
        spot_id: &str,
        max_tasks: u32,
        wait: std::time::Duration,
    ) -> Result<Vec<ClaimedTask>> {
        let req = ClaimRequest {
            spot_id: spot_id.into(),
            max_tasks,
            wait_ms: wait_ms(wait),
            running_tasks: None,
        };
        let answer: ClaimResponse = self
            .send(Retry::UnlessSent, |base| {
                let post = self
                    .request(base, Method::POST, "/internal/v1/tasks/claim")
                    .json(&req);
                self.waiting(post, wait)
            })
            .await?;
        Ok(answer.tasks)
    }

    /// Reports and claims in one request: `req.reports` are applied first (as
    /// [`Client::report_batch`] applies them), then up to `req.maxTasks` are claimed, waiting
    /// up to `req.waitMs` for work. The request's own timeout is stretched by the wait. One
    /// that claims nothing (`maxTasks` 0) only reports, and is repeated anywhere; one that
    /// claims is sent to another replica only when it certainly claimed nothing.
    pub async fn exchange(&self, req: &ExchangeRequest) -> Result<ExchangeResponse> {
        let wait = std::time::Duration::from_millis(req.wait_ms.unwrap_or(0));
        let retry = if req.max_tasks == 0 {
            Retry::Idempotent
        } else {
            Retry::UnlessSent
        };
        self.send(retry, |base| {
            let post = self
                .request(base, Method::POST, "/internal/v1/tasks/exchange")
                .json(req);
            self.waiting(post, wait)
        })
        .await
    }

    /// A request that may wait on the server for `wait`: the client's timeout is for the
    /// round trip, on top of the wait.
    fn waiting(&self, req: RequestBuilder, wait: std::time::Duration) -> RequestBuilder {
        match self.timeout {
            Some(t) if !wait.is_zero() => req.timeout(t + wait),
            _ => req,
        }
    }

    /// Reports a task done; idempotent by the contract (a repeat is answered as the first).
    pub async fn complete(&self, task_id: &str, req: &CompleteRequest) -> Result<ReportResponse> {
        let path = format!("/internal/v1/tasks/{}/complete", path_segment(task_id));
        self.post(Retry::Idempotent, &path, req).await
    }

    /// Reports a task failed; idempotent by the contract.
    pub async fn fail(&self, task_id: &str, req: &FailRequest) -> Result<ReportResponse> {
        let path = format!("/internal/v1/tasks/{}/fail", path_segment(task_id));
        self.post(Retry::Idempotent, &path, req).await
    }

    /// Many completes and fails of one spot in one request; each gets its own result.
    pub async fn report_batch(&self, req: &BatchReportRequest) -> Result<BatchReportResponse> {
        self.post(Retry::Idempotent, "/internal/v1/tasks/report", req)
            .await
    }
}

/// One request to one server: the body of a 2xx answer, else the error.
async fn once(req: RequestBuilder) -> Result<Bytes> {
    let resp = req.send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if status.is_success() {
        Ok(bytes)
    } else {
        Err(api_error(status, &bytes))
    }
}

/// How one server's request failed, as the failover rule needs to know it.
fn failure(e: &ClientError) -> Failure {
    match e {
        // A connect error (refused, unreachable, a TLS handshake refused) or a URL that could
        // not be used: the request never left this process.
        ClientError::Transport(t) if t.is_connect() || t.is_builder() => Failure::NotConnected,
        ClientError::Transport(_) => Failure::Lost,
        ClientError::Api { status, .. } => Failure::Status(*status),
        ClientError::Decode(_) | ClientError::Failover { .. } => Failure::Unreadable,
    }
}

/// `waitMs` as sent: absent when there is no wait, so a plain claim is the contract's body.
fn wait_ms(wait: std::time::Duration) -> Option<u64> {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    (ms > 0).then_some(ms)
}

fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            code: body.code,
            message: body.error,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or("HTTP_ERROR")
                .to_ascii_uppercase()
                .replace(' ', "_"),
            message: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}
