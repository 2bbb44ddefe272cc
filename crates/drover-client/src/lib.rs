//! A typed client of drover's native HTTP API (`/api/v1`, `/internal/v1`).
//!
//! It sends and receives the wire types of `drover_api` and turns error answers into
//! [`ClientError::Api`] with the server's status, code and message. It decides nothing: retries,
//! backoff and failover belong to its callers (the agent, the CLI).

use drover_api::*;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    base: String,
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
    pub fn new(base: impl Into<String>) -> Self {
        let mut client = Client {
            http: reqwest::Client::new(),
            base: base.into().trim_end_matches('/').to_string(),
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

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
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

    async fn send<T: DeserializeOwned>(req: RequestBuilder) -> Result<T> {
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| {
                ClientError::Decode(format!("{e}: {}", String::from_utf8_lossy(&bytes)))
            })
        } else {
            Err(api_error(status, &bytes))
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::send(self.request(Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        Self::send(self.request(Method::POST, path).json(body)).await
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
        Self::send(self.request(Method::GET, "/api/v1/runners").query(opts)).await
    }

    /// The answering replica's role, the leader and its epoch, and the replicas seen recently.
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        self.get("/api/v1/cluster").await
    }

    /// The background workers and how each is doing, by name.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.get::<WorkerList>("/api/v1/workers")
            .await
            .map(|l| l.workers)
    }

    /// One page of spots.
    pub async fn spots_page(&self, opts: &ListOptions) -> Result<SpotsResponse> {
        Self::send(self.request(Method::GET, "/api/v1/spots").query(opts)).await
    }

    /// Every spot, page by page.
    pub async fn spots(&self) -> Result<Vec<Spot>> {
        every_page(ListOptions::default(), |opts| async move {
            let page = self.spots_page(&opts).await?;
            Ok((page.spots, page.next_cursor))
        })
        .await
    }

    pub async fn create_job(&self, req: &CreateJobRequest) -> Result<CreateJobResponse> {
        self.post("/api/v1/jobs", req).await
    }

    /// A job. An agent's client (with the agent key or a spot secret) reads it as an agent,
    /// which is what shows its `env` values; anyone else sees them redacted.
    pub async fn job(&self, id: &str) -> Result<Job> {
        let mut req = self.request(Method::GET, &format!("/api/v1/jobs/{id}"));
        if let Some(k) = &self.agent_key {
            req = req.header("X-Agent-Key", k);
        }
        if let Some((spot, secret)) = &self.spot {
            req = req
                .header("X-Spot-Id", spot)
                .header("X-Spot-Secret", secret);
        }
        Self::send(req).await
    }

    pub async fn jobs(&self, opts: &ListOptions) -> Result<JobList> {
        Self::send(self.request(Method::GET, "/api/v1/jobs").query(opts)).await
    }

    pub async fn cancel_job(&self, id: &str) -> Result<Job> {
        Self::send(self.request(Method::POST, &format!("/api/v1/jobs/{id}/cancel"))).await
    }

    pub async fn tasks(&self, job_id: &str, opts: &ListOptions) -> Result<TaskList> {
        Self::send(
            self.request(Method::GET, &format!("/api/v1/jobs/{job_id}/tasks"))
                .query(opts),
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
        self.get(&format!("/api/v1/tasks/{id}")).await
    }

    pub async fn results(&self, job_id: &str, opts: &ListOptions) -> Result<ResultsResponse> {
        Self::send(
            self.request(Method::GET, &format!("/api/v1/jobs/{job_id}/results"))
                .query(opts),
        )
        .await
    }

    /// The job's results as CSV text.
    pub async fn results_csv(&self, job_id: &str) -> Result<String> {
        let resp = self
            .request(Method::GET, &format!("/api/v1/jobs/{job_id}/results"))
            .query(&[("format", "csv")])
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn hello(&self, req: &HelloRequest) -> Result<HelloResponse> {
        self.post("/internal/v1/hello", req).await
    }

    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<SuccessBody> {
        self.post("/internal/v1/heartbeat", req).await
    }

    pub async fn claim(&self, spot_id: &str, max_tasks: u32) -> Result<Vec<ClaimedTask>> {
        self.claim_waiting(spot_id, max_tasks, std::time::Duration::ZERO)
            .await
    }

    /// A claim that, when nothing is claimable, waits on the server up to `wait` (at most 30 s)
    /// for work to appear. The request's own timeout, if the client has one, is stretched by
    /// `wait`.
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
        };
        let post = self
            .request(Method::POST, "/internal/v1/tasks/claim")
            .json(&req);
        Ok(Self::send::<ClaimResponse>(self.waiting(post, wait))
            .await?
            .tasks)
    }

    /// Reports and claims in one request: `req.reports` are applied first (as
    /// [`Client::report_batch`] applies them), then up to `req.maxTasks` are claimed, waiting
    /// up to `req.waitMs` for work. The request's own timeout is stretched by the wait.
    pub async fn exchange(&self, req: &ExchangeRequest) -> Result<ExchangeResponse> {
        let wait = std::time::Duration::from_millis(req.wait_ms.unwrap_or(0));
        let post = self
            .request(Method::POST, "/internal/v1/tasks/exchange")
            .json(req);
        Self::send(self.waiting(post, wait)).await
    }

    /// A request that may wait on the server for `wait`: the client's timeout is for the
    /// round trip, on top of the wait.
    fn waiting(&self, req: RequestBuilder, wait: std::time::Duration) -> RequestBuilder {
        match self.timeout {
            Some(t) if !wait.is_zero() => req.timeout(t + wait),
            _ => req,
        }
    }

    pub async fn complete(&self, task_id: &str, req: &CompleteRequest) -> Result<ReportResponse> {
        self.post(&format!("/internal/v1/tasks/{task_id}/complete"), req)
            .await
    }

    pub async fn fail(&self, task_id: &str, req: &FailRequest) -> Result<ReportResponse> {
        self.post(&format!("/internal/v1/tasks/{task_id}/fail"), req)
            .await
    }

    /// Many completes and fails of one spot in one request; each gets its own result.
    pub async fn report_batch(&self, req: &BatchReportRequest) -> Result<BatchReportResponse> {
        self.post("/internal/v1/tasks/report", req).await
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
