//! The runner service: one sandbox per user session, through a [`Driver`], recorded in the
//! store.
//!
//! This is where the runner rules live, once, for every surface that exposes runners (the
//! session-runners contract at `/api/runner/*`, the native `/api/v1/runners`): a session has at
//! most one runner; in reuse mode every session shares one singleton; at most `max_runners`
//! exist, and a provision beyond that starts nothing; a runner without a heartbeat for the
//! inactivity timeout is removed; at start-up the sandboxes this instance started are adopted
//! or, if the store does not know them, removed (another instance's are never touched).
//!
//! The store is the source of truth: a slot is reserved in the store before a sandbox is
//! started, so concurrent provisions cannot pass the limit or start two sandboxes for one
//! session, and a crash between the two leaves a STARTING row and an unknown sandbox, which the
//! next start-up cleans up.
//!
//! A record says RUNNING only while its sandbox runs. A start that fails (the driver waits until
//! the runner answers, see `drover_runners::ready`) leaves no record and frees its slot. A
//! sandbox that exits later is found by the next heartbeat for it (which asks the driver, and
//! answers 404) or by the reaper's step (which asks about every RUNNING record), and is then
//! cleaned up and forgotten. When the driver cannot answer, a heartbeat is still taken: the
//! engine's trouble is not the runner's, and the reaper asks again. Replicas sharing a store
//! ask nobody: each sees only its own machine's sandboxes, so the inactivity timeout judges.

use crate::clock::Clock;
use crate::metrics::RunnerCounters;
use drover_core::{Runner, RunnerStatus, runner_endpoint};
use drover_runners::{Driver, DriverError, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL};
use drover_store::{NewRunner, Reservation, StoreError, Stores};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Runner settings, already validated.
#[derive(Debug, Clone)]
pub struct RunnersConfig {
    /// Every session shares one runner (the contract's `REUSE_RUNNER_MODE`).
    pub reuse: bool,
    /// Host name clients reach runners at (`RUNNERS_HOST`).
    pub host: String,
    /// A runner without a heartbeat for this long is removed (`INACTIVITY_TIMEOUT_SECONDS`).
    pub inactivity_timeout: Duration,
    /// How often inactive runners are looked for.
    pub cleanup_interval: Duration,
    /// Most runners at once; `None` for no limit.
    pub max_runners: Option<u64>,
    /// The label that carries the session id (`taylored-runner-session-id`).
    pub session_label: String,
    /// Whether 500 answers carry the error's details (the contract shows them outside
    /// production).
    pub error_details: bool,
    /// drover's base URL as runners reach it, given to each runner as `DROVER_URL` so it can
    /// send its heartbeats; `None`: runners are not told.
    pub drover_url: Option<String>,
}

impl Default for RunnersConfig {
    /// The session-runners contract's defaults, plus a limit it does not have.
    fn default() -> Self {
        RunnersConfig {
            reuse: false,
            host: "localhost".into(),
            inactivity_timeout: Duration::from_secs(60),
            cleanup_interval: Duration::from_secs(30),
            max_runners: Some(50),
            session_label: "taylored-runner-session-id".into(),
            error_details: true,
            drover_url: None,
        }
    }
}

/// Why a runner call failed; each variant says what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The request named no session: send `X-Session-Id` or `sessionId`.
    #[error("no session id given")]
    SessionRequired,
    /// The session id cannot be used: it says why.
    #[error("invalid session id: {0}")]
    InvalidSession(String),
    /// No runner for the session (in reuse mode: the session is not the singleton's).
    #[error("no active runner for this session")]
    NotFound { singleton: bool },
    /// The image is not on the engine: build or load it.
    #[error("image {0} not found")]
    ImageNotFound(String),
    /// All runner slots are taken: deprovision one or raise the limit.
    #[error("all {0} runner slots are in use")]
    LimitReached(u64),
    /// The engine cannot be reached now: retry later.
    #[error("the runner engine is unavailable: {0}")]
    Unavailable(String),
    /// This server runs no runner driver.
    #[error("runners are not enabled on this server")]
    Disabled,
    /// The sandbox failed, or the store did.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DriverError> for RunnerError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::ImageNotFound(image) => RunnerError::ImageNotFound(image),
            DriverError::Unavailable(why) => RunnerError::Unavailable(why),
            DriverError::Failed(why) => RunnerError::Failed(why),
        }
    }
}

/// The session token a provision hands out: the secret, which the new runner and the caller
/// are given, and its hash, which the store keeps.
#[derive(Clone)]
pub struct SessionToken {
    pub secret: String,
    pub hash: String,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, in a log or a panic message.
        f.debug_struct("SessionToken")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// A provision's outcome: the runner, and whether this call started it.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub runner: Runner,
    pub created: bool,
}

/// What a start-up reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Running sandboxes the store knows: kept.
    pub adopted: Vec<String>,
    /// Sandboxes of this instance the store does not know (or that had exited): removed.
    pub removed: Vec<String>,
    /// Store records whose sandbox is gone: forgotten.
    pub forgotten: Vec<String>,
}

/// Longest a session id may be; it travels in labels and names.
const MAX_SESSION_LEN: usize = 128;

/// Checks a client-chosen session id: 1 to 128 letters, digits, `-`, `_`, `.` or `:`.
pub fn check_session(id: &str) -> Result<(), RunnerError> {
    if id.is_empty() || id.len() > MAX_SESSION_LEN {
        return Err(RunnerError::InvalidSession(format!(
            "must be 1 to {MAX_SESSION_LEN} characters"
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(RunnerError::InvalidSession(format!(
            "{c:?} is not allowed; use letters, digits, '-', '_', '.' and ':'"
        )));
    }
    Ok(())
}

pub struct RunnerService {
    store: Stores,
    driver: Option<Arc<dyn Driver>>,
    pub config: RunnersConfig,
    clock: Arc<dyn Clock>,
    counters: RunnerCounters,
    instance: OnceCell<String>,
    reconciled: AtomicBool,
    /// Provisions hold it shared from reservation to record; reconciliation holds it alone, so
    /// it never mistakes a sandbox being started for an orphan.
    starting: tokio::sync::RwLock<()>,
}

impl RunnerService {
    pub fn new(
        store: Stores,
        driver: Option<Arc<dyn Driver>>,
        config: RunnersConfig,
        clock: Arc<dyn Clock>,
        counters: RunnerCounters,
    ) -> Self {
        RunnerService {
            store,
            driver,
            config,
            clock,
            counters,
            instance: OnceCell::new(),
            reconciled: AtomicBool::new(false),
            starting: tokio::sync::RwLock::new(()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.driver.is_some()
    }

    /// Whether this server has matched its engine's sandboxes with the store yet (the leader
    /// does, at the start of its first term; a follower never does).
    pub fn has_reconciled(&self) -> bool {
        self.reconciled.load(Ordering::Relaxed)
    }

    fn driver(&self) -> Result<&Arc<dyn Driver>, RunnerError> {
        self.driver.as_ref().ok_or(RunnerError::Disabled)
    }

    /// This data directory's server id, as written in its sandboxes' labels.
    pub async fn instance_id(&self) -> Result<&str, RunnerError> {
        Ok(self
            .instance
            .get_or_try_init(|| self.store.ops.instance_id())
            .await?)
    }

    /// Provisions a runner for `session` (a new UUID v4 when `None`), or returns the one it has.
    /// A new runner keeps the hash of `token`, and its sandbox gets the token itself (with its
    /// session id and drover's URL) to send its heartbeats with.
    pub async fn provision(
        &self,
        session: Option<String>,
        token: Option<SessionToken>,
    ) -> Result<Provisioned, RunnerError> {
        let driver = self.driver()?.clone();
        let session = match session {
            Some(s) => {
                check_session(&s)?;
                s
            }
            None => drover_core::ids::session_id(),
        };
        let instance = self.instance_id().await?.to_string();
        let _starting = self.starting.read().await;
        let new = NewRunner {
            session_id: session.clone(),
            driver: driver.name().to_string(),
            singleton: self.config.reuse,
            token_hash: token.as_ref().map(|t| t.hash.clone()),
        };
        let reserved = match self
            .store
            .runners
            .reserve_runner(new, self.config.max_runners, self.clock.now())
            .await?
        {
            Reservation::Exists(runner) => {
                let runner = self.until_started(runner).await?;
                return Ok(Provisioned {
                    runner,
                    created: false,
                });
            }
            Reservation::LimitReached { active } => {
                tracing::warn!(%session, active, "runner limit reached; nothing started");
                return Err(RunnerError::LimitReached(active));
            }
            Reservation::Reserved(runner) => runner,
        };
        let labels = BTreeMap::from([
            (self.config.session_label.clone(), session.clone()),
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (INSTANCE_LABEL.to_string(), instance),
        ]);
        let mut env =
            BTreeMap::from([(drover_runners::env::SESSION_ID.to_string(), session.clone())]);
        if let Some(t) = &token {
            env.insert(drover_runners::env::TOKEN.to_string(), t.secret.clone());
        }
        if let Some(url) = &self.config.drover_url {
            env.insert(drover_runners::env::DROVER_URL.to_string(), url.clone());
        }
        let spec = drover_runners::StartSpec {
            session_id: session.clone(),
            labels,
            env,
        };
        let started = match driver.start(&spec).await {
            Ok(s) => s,
            Err(e) => {
                self.counters.failed.inc();
                tracing::warn!(%session, error = %e, "runner failed to start");
                // Give the slot back; the driver left nothing behind.
                self.store
                    .runners
                    .remove_runner(&reserved.session_id)
                    .await?;
                return Err(e.into());
            }
        };
        let endpoint = runner_endpoint(&self.config.host, started.host_port);
        match self
            .store
            .runners
            .runner_started(&session, &started.instance, &endpoint, self.clock.now())
            .await
        {
            Ok(runner) => {
                self.counters.provisioned.inc();
                tracing::info!(%session, instance = %started.instance, %endpoint, driver = driver.name(), "runner provisioned");
                Ok(Provisioned {
                    runner,
                    created: true,
                })
            }
            Err(e) => {
                // Deprovisioned while it was starting (or the store failed): nothing may run
                // that the store does not know.
                let _ = driver.stop(&started.instance).await;
                self.counters.failed.inc();
                Err(match e {
                    StoreError::NotFound { .. } => {
                        RunnerError::Failed("the runner was deprovisioned while starting".into())
                    }
                    other => other.into(),
                })
            }
        }
    }

    /// Waits for a runner another request is starting.
    async fn until_started(&self, mut runner: Runner) -> Result<Runner, RunnerError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while runner.status == RunnerStatus::Starting {
            if tokio::time::Instant::now() > deadline {
                return Err(RunnerError::Failed(
                    "the runner for this session is still starting".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            runner = self
                .store
                .runners
                .get_runner(&runner.session_id)
                .await?
                .ok_or(RunnerError::NotFound { singleton: false })?;
        }
        Ok(runner)
    }

    /// Records a heartbeat. In reuse mode only the singleton's session is known. A runner whose
    /// sandbox has exited is cleaned up and answered as not found.
    pub async fn heartbeat(&self, session: &str) -> Result<Runner, RunnerError> {
        self.driver()?;
        let singleton = self.config.reuse;
        let runner = match self.store.runners.get_runner(session).await? {
            Some(r) if r.singleton == singleton => r,
            _ => return Err(RunnerError::NotFound { singleton }),
        };
        if self.gone(&runner).await {
            self.forget_exited(&runner).await?;
            return Err(RunnerError::NotFound { singleton });
        }
        self.store
            .runners
            .touch_runner(session, self.clock.now())
            .await?
            .ok_or(RunnerError::NotFound { singleton })
    }

    /// Stops and removes the session's runner.
    pub async fn deprovision(&self, session: &str) -> Result<Runner, RunnerError> {
        self.driver()?;
        let runner =
            self.store
                .runners
                .get_runner(session)
                .await?
                .ok_or(RunnerError::NotFound {
                    singleton: self.config.reuse,
                })?;
        if self.remove(&runner).await? {
            self.counters.deprovisioned.inc();
        }
        tracing::info!(%session, "runner deprovisioned");
        Ok(runner)
    }

    /// Whether a RUNNING runner's sandbox is known to have exited. A driver that cannot say (an
    /// engine that is away) does not make a runner dead: that is only logged. Nor does a store
    /// shared with other replicas: a runner another replica started may run on that replica's
    /// machine, which this driver cannot see, so there only the inactivity timeout judges.
    async fn gone(&self, runner: &Runner) -> bool {
        if self.store.ops.is_shared() {
            return false;
        }
        let (RunnerStatus::Running, Some(instance), Some(driver)) =
            (runner.status, &runner.instance, &self.driver)
        else {
            return false;
        };
        match driver.running(instance).await {
            Ok(running) => !running,
            Err(e) => {
                tracing::warn!(session = %runner.session_id, error = %e, "could not ask whether a runner still runs");
                false
            }
        }
    }

    /// Cleans up a runner whose sandbox exited (an exited container is still removed) and
    /// forgets it; whether this call was the one that forgot it.
    async fn forget_exited(&self, runner: &Runner) -> Result<bool, RunnerError> {
        let forgotten = self.remove(runner).await?;
        if forgotten {
            self.counters.exited.inc();
            tracing::warn!(session = %runner.session_id, instance = ?runner.instance, "runner exited; cleaned up and forgotten");
        }
        Ok(forgotten)
    }

    /// Forgets the RUNNING runners whose sandbox has exited, after cleaning up what is left of
    /// it. Returns the sessions forgotten.
    pub async fn reap_exited(&self) -> Result<Vec<String>, RunnerError> {
        if self.driver.is_none() {
            return Ok(Vec::new());
        }
        // The records are read before the driver is asked, so a runner recorded after this
        // read is never judged by an answer from before it started.
        let mut forgotten = Vec::new();
        for runner in self.store.runners.list_runners().await? {
            if !self.gone(&runner).await {
                continue;
            }
            match self.forget_exited(&runner).await {
                Ok(true) => forgotten.push(runner.session_id),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(session = %runner.session_id, error = %e, "could not clean up an exited runner; will retry");
                }
            }
        }
        Ok(forgotten)
    }

    /// Stops the sandbox, then forgets the runner. If the stop fails the record stays, so the
    /// caller (or the reaper) can try again.
    /// Stops the runner's sandbox and forgets its record. Whether this call forgot it: a
    /// heartbeat and the worker's step may both find the same dead runner, and only the one
    /// that removed the record counts it.
    async fn remove(&self, runner: &Runner) -> Result<bool, RunnerError> {
        if let Some(instance) = &runner.instance
            && let Err(e) = self.driver()?.stop(instance).await
        {
            self.counters.failed.inc();
            return Err(e.into());
        }
        let removed = self.store.runners.remove_runner(&runner.session_id).await?;
        Ok(removed.is_some())
    }

    /// One page of the runners, oldest first.
    pub async fn list(
        &self,
        page: drover_store::Page,
    ) -> Result<drover_store::Paged<Runner>, RunnerError> {
        Ok(self.store.runners.list_runners_page(page).await?)
    }

    /// Removes runners without a heartbeat for the inactivity timeout. Runners still STARTING
    /// are left to their provision. Returns the sessions removed.
    pub async fn reap_inactive(&self) -> Result<Vec<String>, RunnerError> {
        if self.driver.is_none() {
            return Ok(Vec::new());
        }
        let cutoff = crate::clock::before(self.clock.now(), self.config.inactivity_timeout);
        let mut reaped = Vec::new();
        for runner in self.store.runners.inactive_runners(cutoff).await? {
            if runner.status == RunnerStatus::Starting {
                continue;
            }
            match self.remove(&runner).await {
                Ok(false) => {}
                Ok(true) => {
                    self.counters.reaped.inc();
                    tracing::info!(session = %runner.session_id, "runner reaped after {}s without a heartbeat", self.config.inactivity_timeout.as_secs());
                    reaped.push(runner.session_id);
                }
                Err(e) => {
                    tracing::warn!(session = %runner.session_id, error = %e, "could not reap runner; will retry");
                }
            }
        }
        Ok(reaped)
    }

    /// Matches this instance's sandboxes with the store: adopts the running ones it knows,
    /// removes the others, forgets records whose sandbox is gone. Runs on the leader only,
    /// once per process, at the start of its first term (retried until the engine answers).
    /// A record still STARTING is left alone while it is younger than the inactivity timeout:
    /// another replica may be starting its sandbox right now (the lock below is this process's
    /// only), and if not, the inactivity reaper removes it later.
    pub async fn reconcile(&self) -> Result<Reconciled, RunnerError> {
        let driver = self.driver()?.clone();
        let instance = self.instance_id().await?.to_string();
        let _alone = self.starting.write().await;
        let found = driver.list(INSTANCE_LABEL, &instance).await?;
        let known = self.store.runners.list_runners().await?;
        let mut done = Reconciled::default();
        let mut seen = HashSet::new();
        for sandbox in &found {
            let record = known
                .iter()
                .find(|r| r.instance.as_deref() == Some(sandbox.instance.as_str()));
            match record {
                Some(r) if sandbox.running => {
                    seen.insert(sandbox.instance.clone());
                    done.adopted.push(r.session_id.clone());
                }
                _ => {
                    driver.stop(&sandbox.instance).await?;
                    done.removed.push(sandbox.instance.clone());
                }
            }
        }
        let starting_since = self.clock.now()
            - chrono::Duration::from_std(self.config.inactivity_timeout).unwrap_or_default();
        for r in &known {
            let alive = r.instance.as_ref().is_some_and(|i| seen.contains(i));
            let starting_elsewhere = r.instance.is_none() && r.created_at >= starting_since;
            if !alive && !starting_elsewhere {
                self.store.runners.remove_runner(&r.session_id).await?;
                done.forgotten.push(r.session_id.clone());
            }
        }
        tracing::info!(
            adopted = done.adopted.len(),
            removed = done.removed.len(),
            forgotten = done.forgotten.len(),
            "runners reconciled with the {} driver",
            driver.name()
        );
        self.reconciled.store(true, Ordering::Relaxed);
        Ok(done)
    }

    /// One step of the runner worker: reconcile until it has succeeded once, then forget the
    /// runners whose sandbox exited, then reap the inactive ones.
    pub async fn run_once(&self) -> Result<crate::workers::Counts, RunnerError> {
        if self.driver.is_none() {
            return Ok(Vec::new());
        }
        let mut counts = Vec::new();
        if !self.reconciled.load(Ordering::Relaxed) {
            let done = self.reconcile().await?;
            counts.extend([
                ("runners_adopted", done.adopted.len() as u64),
                ("sandboxes_removed", done.removed.len() as u64),
                ("runners_forgotten", done.forgotten.len() as u64),
            ]);
        }
        let exited = self.reap_exited().await?;
        counts.push(("runners_exited", exited.len() as u64));
        let reaped = self.reap_inactive().await?;
        counts.push(("runners_reaped", reaped.len() as u64));
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_checked() {
        assert!(check_session("3f1c2d4e-0000-4000-8000-000000000000").is_ok());
        assert!(check_session("user:42.tab_1").is_ok());
        assert!(check_session("").is_err());
        assert!(check_session(&"x".repeat(129)).is_err());
        assert!(check_session("a b").is_err());
        assert!(check_session("a/b").is_err());
    }
}
