//! The test harness: `spawn_app()` starts a real server on a loopback port with a fresh SQLite
//! file, and hands back a typed client plus the handles a test needs to drive time and the
//! reapers. Tests read as specifications on top of it.

use chrono::{TimeZone, Utc};
use drover_api::{CreateJobRequest, CreateJobResponse, HeartbeatRequest, HelloRequest};
use drover_client::Client;
use drover_core::TaskStatus;
use drover_server::{
    AppConfig, AppState, Application, Clock, DriverConfig, ManualClock, ServerConfig, Surface,
    SystemClock,
};
use drover_store::Stores;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    /// The main listener's base URL.
    pub base: String,
    /// Every listener's base URL and the surfaces it serves, the main one first.
    pub addrs: Vec<(String, Vec<Surface>)>,
    /// The gRPC listener's URL, when the configuration has one.
    pub grpc: Option<String>,
    /// A client with whatever keys the server was configured with.
    pub client: Client,
    pub state: AppState,
    /// Set when the app runs on a manual clock (the default).
    pub clock: Option<Arc<ManualClock>>,
    pub db_path: PathBuf,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A server on a manual clock, with background reapers parked (tests call the reapers' `reap()` steps).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The configuration every test server starts from: one loopback listener on a free port
/// serving every surface, a fresh SQLite file in `dir`, background workers parked (tests run
/// their steps).
pub fn test_config(dir: &std::path::Path) -> AppConfig {
    let mut config = AppConfig::new(
        dir.join("drover.db").display().to_string(),
        "127.0.0.1:0".parse().unwrap(),
    );
    config.server.task_reaper_interval = Duration::from_secs(3600);
    config.server.spot_reaper_interval = Duration::from_secs(3600);
    config.server.repair_interval = Duration::from_secs(3600);
    config.server.runners.cleanup_interval = Duration::from_secs(3600);
    config
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
    spawn(|c| configure(&mut c.server), true).await
}

/// [`spawn_app_with`] with a runner driver; the runner worker is parked (tests call its steps).
pub async fn spawn_app_with_runners(
    driver: DriverConfig,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestApp {
    spawn(
        |c| {
            c.runner_driver = Some(driver);
            configure(&mut c.server)
        },
        true,
    )
    .await
}

/// A server on the wall clock, for tests of the background workers themselves.
pub async fn spawn_app_real_time(configure: impl FnOnce(&mut ServerConfig)) -> TestApp {
    spawn(
        |c| {
            c.server = ServerConfig::default();
            configure(&mut c.server)
        },
        false,
    )
    .await
}

/// Builds the application exactly as `drover server` does, from [`test_config`] changed by
/// `configure`, on a manual clock or the wall clock, and serves it until the test ends.
pub async fn spawn(configure: impl FnOnce(&mut AppConfig), manual_clock: bool) -> TestApp {
    spawn_wrapped(configure, manual_clock, |store| store).await
}

/// A server whose store is `wrap`ped before use (e.g. in `drover_store::faults`), on a manual
/// clock, configured by `configure`.
pub async fn spawn_with_store(
    configure: impl FnOnce(&mut ServerConfig),
    wrap: impl FnOnce(Stores) -> Stores,
) -> TestApp {
    spawn_wrapped(|c| configure(&mut c.server), true, wrap).await
}

/// A server with a gRPC listener on a free port whose store is `wrap`ped before use.
pub async fn spawn_wrapped_for_grpc(wrap: impl FnOnce(Stores) -> Stores) -> TestApp {
    spawn_wrapped(
        |c| c.grpc = Some("127.0.0.1:0".parse().unwrap()),
        true,
        wrap,
    )
    .await
}

async fn spawn_wrapped(
    configure: impl FnOnce(&mut AppConfig),
    manual_clock: bool,
    wrap: impl FnOnce(Stores) -> Stores,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    configure(&mut config);
    let manual = manual_clock.then(|| {
        Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 1, 28, 12, 0, 0).unwrap(),
        ))
    });
    let clock: Arc<dyn Clock> = match &manual {
        Some(m) => m.clone(),
        None => Arc::new(SystemClock),
    };
    let db_path = PathBuf::from(&config.store_url);
    let (agent_key, api_key) = (
        config.server.agent_key.clone(),
        config.server.api_key.clone(),
    );
    let app = Application::build_with_store(config, clock, wrap)
        .await
        .unwrap();
    let addrs = app.local_addrs();
    let grpc = app.grpc_addr().map(|a| format!("http://{a}"));
    let base = format!("http://{}", addrs[0].0);
    let mut client = Client::new(&base);
    if let Some(k) = &agent_key {
        client = client.with_agent_key(k);
    }
    if let Some(k) = &api_key {
        client = client.with_api_key(k);
    }
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until(shutdown.clone()));
    let server = tokio::spawn(async move {
        server.await.unwrap().unwrap();
    });
    TestApp {
        base,
        addrs: addrs
            .into_iter()
            .map(|(a, s)| (format!("http://{a}"), s))
            .collect(),
        grpc,
        client,
        state,
        clock: manual,
        db_path,
        http: reqwest::Client::new(),
        shutdown,
        server,
        _dir: dir,
    }
}

impl TestApp {
    pub fn store(&self) -> &Stores {
        &self.state.store
    }

    pub fn advance(&self, by: Duration) {
        self.clock
            .as_ref()
            .expect("this app runs on the wall clock")
            .advance(by);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs raw JSON and returns status and parsed body (without any keys).
    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, body).await
    }

    /// PUTs raw JSON and returns status and parsed body (without any keys).
    pub async fn put_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PUT, path, body).await
    }

    async fn send_json(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let resp = (self
            .http
            .request(method, self.url(path))
            .json(&body)
            .send()
            .await)
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a raw body with the given content type.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates a job of `n` tasks (`x` = 1..=n) with the given extra request fields.
    pub async fn create_job(&self, n: i64, extra: Value) -> CreateJobResponse {
        let mut req = json!({"parameters": {"x": {"min": 1, "max": n, "step": 1}}});
        if let (Value::Object(r), Value::Object(e)) = (&mut req, extra) {
            r.extend(e);
        }
        let req: CreateJobRequest = serde_json::from_value(req).unwrap();
        self.client.create_job(&req).await.unwrap()
    }

    /// Registers a spot and returns its id.
    pub async fn hello(&self) -> String {
        self.client
            .hello(&HelloRequest {
                ip_address: "127.0.0.1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .spot_id
    }

    /// Sends a bare heartbeat for `spot`, which must be answered.
    pub async fn heartbeat(&self, spot: &str) {
        self.client
            .heartbeat(&HeartbeatRequest {
                spot_id: spot.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// Sends a bare heartbeat for `spot`, which must be refused; returns the refusal.
    pub async fn heartbeat_refused(&self, spot: &str) -> drover_client::ClientError {
        self.client
            .heartbeat(&HeartbeatRequest {
                spot_id: spot.to_string(),
                ..Default::default()
            })
            .await
            .unwrap_err()
    }

    /// The `/metrics` page, as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Registers a spot that asks for a secret, as drover's agent does; returns its id and
    /// secret.
    pub async fn hello_with_secret(&self) -> (String, String) {
        let answer = self
            .client
            .hello(&HelloRequest {
                ip_address: "127.0.0.1".into(),
                issue_secret: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        (
            answer.spot_id,
            answer.spot_secret.expect("a secret was asked for"),
        )
    }

    /// No job was written (after a refused request, say).
    pub async fn assert_no_jobs(&self) {
        let jobs = self.client.jobs(&Default::default()).await.unwrap().jobs;
        assert!(jobs.is_empty(), "{jobs:?}");
    }

    /// Invariant 4, seen through the API and through the store's own audit: every job's counts
    /// equal the number of its tasks in each status.
    pub async fn assert_job_counts_consistent(&self) {
        let mismatches = self.store().ops.audit_job_counts().await.unwrap();
        assert!(
            mismatches.is_empty(),
            "stored counts differ: {mismatches:?}"
        );
        let jobs = self.client.jobs(&Default::default()).await.unwrap().jobs;
        for job in jobs {
            let tasks = self.client.all_tasks(&job.id, None).await.unwrap();
            let count =
                |s: TaskStatus| tasks.iter().filter(|t| t.status == s.as_str()).count() as u64;
            assert_eq!(job.total_tasks, tasks.len() as u64, "total of {}", job.id);
            let by_status = [
                (TaskStatus::New, job.pending_tasks),
                (TaskStatus::Running, job.running_tasks),
                (TaskStatus::Done, job.completed_tasks),
                (TaskStatus::Failed, job.failed_tasks),
                (TaskStatus::Cancelled, job.cancelled_tasks),
            ];
            for (status, shown) in by_status {
                assert_eq!(shown, count(status), "{status} count of {}", job.id);
            }
        }
    }

    /// Fires the shutdown signal, as SIGTERM does, without waiting for the server to stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the server to stop after `begin_shutdown`; hands back the temporary directory
    /// so the test can reopen the database file.
    pub async fn stopped(self) -> tempfile::TempDir {
        self.server.await.unwrap();
        self._dir
    }

    /// Ends a test: checks the invariants that must hold after any sequence of API calls, then
    /// shuts the server down the way SIGTERM would.
    pub async fn finish(self) {
        self.assert_job_counts_consistent().await;
        self.shutdown.cancel();
        self.server.await.unwrap();
    }
}

/// Polls `check` until it returns `Some`, for up to `within`; panics with `what` otherwise.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Python of the test virtualenv that `scripts/test` makes (grpcio, grpcio-tools, pika), or
/// the one `DROVER_TEST_VENV` names.
pub fn venv_python() -> PathBuf {
    let venv = match std::env::var_os("DROVER_TEST_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/drover/venv"),
    };
    venv.join("bin/python")
}
