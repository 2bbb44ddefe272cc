//! Leader election among the replicas that share one store, and the background work that runs
//! only on the leader.
//!
//! [`Election::run`] asks the store for the lease every third of its TTL
//! (`drover_core::cluster::LeaseTiming`), says in the cluster's member list that this replica is
//! there, and publishes this replica's [`Role`] on a watch ([`Cluster`]). While it leads, it
//! runs the background workers of its term, each step wrapped in [`Led`], which skips a step the
//! replica may no longer take and records every step that changed something with the term's
//! epoch. A leader whose renewals fail stops its workers at `acts_until`, a safety margin before
//! the lease it last renewed can expire, measured on its own monotonic clock (tokio's, so tests
//! run it on paused time); a request for the lease that hangs cannot delay that. On shutdown
//! the term's workers stop first, then the lease is released, so a successor takes over at once
//! and never while this replica still acts.
//!
//! This module owns when to ask, when to start and stop the term's workers, and the role this
//! replica shows. It must not decide who holds the lease (the store carries out
//! `drover_core::cluster::decide_lease`) or how long a lease lasts and a leader may act (the
//! core's `LeaseTiming`), and it spawns nothing but the term's workers, which obey the server's
//! shutdown token.

use crate::clock::Clock;
use crate::workers::{Counts, Worker};
use drover_core::Timestamp;
use drover_core::cluster::{Lease, LeaseTiming};
use drover_store::cluster::Action;
use drover_store::{ClusterStore, StoreError};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Members not heard from for this long are removed from the member list by the leader, so
/// the list does not grow with every restart of a replica under a new id.
const MEMBERS_FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long shutdown waits to give the lease up; a store that does not answer lets it expire.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// This replica's part in the cluster, as it last learnt it.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Not holding the lease: another replica leads, nobody does, or this one could not renew.
    Follower {
        /// The holder when this replica last asked, if the lease was held then.
        leader: Option<String>,
        epoch: u64,
    },
    /// Holding the lease: the background workers run under `epoch`.
    Leader {
        epoch: u64,
        /// When this replica started leading under this epoch, by its clock (the grace for
        /// nodes counts from here).
        since: Timestamp,
        /// The lease's expiry as the store holds it.
        expires_at: Timestamp,
        /// When this replica stops acting unless it renews first (monotonic).
        acts_until: Instant,
    },
}

impl Role {
    /// `leader` or `follower`, as every surface shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Leader { .. } => "leader",
            Role::Follower { .. } => "follower",
        }
    }

    /// The epoch this replica leads under, if it leads.
    pub fn leading_epoch(&self) -> Option<u64> {
        match self {
            Role::Leader { epoch, .. } => Some(*epoch),
            Role::Follower { .. } => None,
        }
    }
}

/// The cluster as this replica sees it: its id, its role (a watch), and the lease's timing.
/// Cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<ClusterParts>);

struct ClusterParts {
    replica_id: String,
    timing: LeaseTiming,
    takeover_grace: Duration,
    role: watch::Sender<Role>,
    /// Where this replica serves, as announced in the member list (set once bound).
    address: Mutex<String>,
}

impl Cluster {
    pub fn new(replica_id: String, timing: LeaseTiming, takeover_grace: Duration) -> Self {
        let (role, _) = watch::channel(Role::Follower {
            leader: None,
            epoch: 0,
        });
        Cluster(Arc::new(ClusterParts {
            replica_id,
            timing,
            takeover_grace,
            role,
            address: Mutex::new(String::new()),
        }))
    }

    pub fn replica_id(&self) -> &str {
        &self.0.replica_id
    }

    pub fn timing(&self) -> LeaseTiming {
        self.0.timing
    }

    /// How long after this replica starts leading the spot reaper declares no node DOWN.
    pub fn takeover_grace(&self) -> Duration {
        self.0.takeover_grace
    }

    pub fn role(&self) -> Role {
        self.0.role.borrow().clone()
    }

    /// A receiver that sees every change of role.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.0.role.subscribe()
    }

    /// Whether this replica may take a background step of `epoch`'s term now.
    pub fn may_act(&self, epoch: u64) -> bool {
        matches!(*self.0.role.borrow(), Role::Leader { epoch: e, acts_until, .. }
            if e == epoch && Instant::now() < acts_until)
    }

    /// When this replica started leading, if it leads.
    pub fn leading_since(&self) -> Option<Timestamp> {
        match *self.0.role.borrow() {
            Role::Leader { since, .. } => Some(since),
            Role::Follower { .. } => None,
        }
    }

    pub fn address(&self) -> String {
        self.0
            .address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_address(&self, address: String) {
        *self.0.address.lock().unwrap_or_else(|p| p.into_inner()) = address;
    }

    fn publish(&self, role: Role) {
        self.0.role.send_replace(role);
    }
}

/// The default replica id: the host's name, this process's id and a random part.
pub fn default_replica_id() -> String {
    drover_core::ids::replica_id(&host_name(), std::process::id())
}

/// This machine's name ("drover" when it has none).
fn host_name() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if host.is_empty() {
        "drover".into()
    } else {
        host
    }
}

/// The address a replica shows the others: the one it was told to advertise, else its main
/// listener's, where a wildcard bind (`0.0.0.0`, `::`), which names no machine, becomes the
/// host's name.
pub fn advertised_address(configured: Option<&str>, main: std::net::SocketAddr) -> String {
    match configured {
        Some(address) => address.to_string(),
        None if main.ip().is_unspecified() => format!("{}:{}", host_name(), main.port()),
        None => main.to_string(),
    }
}

/// Starts the background workers of one term: every worker wrapped in [`Led`] for `epoch`,
/// stopping when the token fires.
pub type TermWorkers =
    Box<dyn Fn(u64, &CancellationToken) -> Vec<JoinHandle<()>> + Send + Sync + 'static>;

/// One request for the lease and what came of it.
pub struct Attempt {
    /// When the request was sent, on the monotonic clock (before `now` was read).
    pub sent_at: Instant,
    /// The instant passed to the store.
    pub now: Timestamp,
    pub lease: Result<Lease, StoreError>,
}

type Pending = Pin<Box<dyn Future<Output = Attempt> + Send>>;

/// The election of one replica: asks for the lease, publishes the role, runs the term's workers.
pub struct Election {
    cluster: Cluster,
    store: Arc<dyn ClusterStore>,
    clock: Arc<dyn Clock>,
}

/// The running term: its epoch, the token that stops its workers, and their handles.
struct Term {
    epoch: u64,
    stop: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

/// What woke the election loop.
enum Wake {
    Shutdown,
    Deadline,
    Answer(Attempt),
    Ask,
}

impl Election {
    pub fn new(cluster: Cluster, store: Arc<dyn ClusterStore>, clock: Arc<dyn Clock>) -> Self {
        Election {
            cluster,
            store,
            clock,
        }
    }

    /// One request for the lease (renewing it when this replica holds it), then this replica's
    /// line in the member list. Neither waits longer than a renewal interval.
    pub fn attempt(&self) -> impl Future<Output = Attempt> + Send + 'static {
        let (store, clock) = (self.store.clone(), self.clock.clone());
        let (replica, address) = (
            self.cluster.replica_id().to_string(),
            self.cluster.address(),
        );
        let timing = self.cluster.timing();
        async move {
            let sent_at = Instant::now();
            let now = clock.now();
            let lease = tokio::time::timeout(
                timing.renew_every,
                store.acquire_or_renew(&replica, now, timing.ttl),
            )
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "the request for the lease took longer than {:?}",
                    timing.renew_every
                )))
            });
            let seen = tokio::time::timeout(
                timing.renew_every,
                store.heartbeat_member(&replica, &address, clock.now()),
            )
            .await;
            if !matches!(seen, Ok(Ok(()))) {
                tracing::debug!(replica = %replica, "could not update this replica's line in the member list");
            }
            Attempt {
                sent_at,
                now,
                lease,
            }
        }
    }

    /// Publishes the role an attempt's answer gives. A failed request changes nothing: a
    /// leader keeps acting until its `acts_until`, which only a successful renewal moves.
    pub fn apply(&self, attempt: Attempt) {
        let me = self.cluster.replica_id();
        let lease = match attempt.lease {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(error = %e, "could not renew or ask for the leader's lease; trying again");
                return;
            }
        };
        let before = self.cluster.role();
        if lease.leader != me {
            let leader = lease.leader_at(attempt.now).map(str::to_string);
            if before.leading_epoch().is_some()
                || !matches!(&before, Role::Follower { leader: l, .. } if *l == leader)
            {
                tracing::info!(leader = ?leader, epoch = lease.epoch, "following");
            }
            self.cluster.publish(Role::Follower {
                leader,
                epoch: lease.epoch,
            });
            return;
        }
        let timing = self.cluster.timing();
        let acts_until = timing.acts_until(attempt.sent_at);
        if Instant::now() >= acts_until {
            // The answer came too late to act on: the lease may expire before the next step.
            tracing::warn!(
                epoch = lease.epoch,
                "the lease was renewed too late to act on; not leading until the next renewal"
            );
            self.cluster.publish(Role::Follower {
                leader: Some(lease.leader),
                epoch: lease.epoch,
            });
            return;
        }
        let since = match before {
            Role::Leader { epoch, since, .. } if epoch == lease.epoch => since,
            _ => {
                tracing::info!(epoch = lease.epoch, expires_at = %drover_core::time::format(&lease.expires_at), "leading");
                attempt.now
            }
        };
        self.cluster.publish(Role::Leader {
            epoch: lease.epoch,
            since,
            expires_at: lease.expires_at,
            acts_until,
        });
    }

    /// Steps down when the time to act ran out without a renewal.
    fn deadline_passed(&self) {
        if let Role::Leader {
            epoch, acts_until, ..
        } = self.cluster.role()
            && Instant::now() >= acts_until
        {
            tracing::warn!(
                epoch,
                "could not renew the leader's lease in time; background work stops until this replica leads again"
            );
            self.cluster.publish(Role::Follower {
                leader: None,
                epoch,
            });
        }
    }

    /// Asks for the lease every renewal interval until `shutdown` fires, starting the term's
    /// workers (`term_workers`) while this replica leads and stopping them when it stops;
    /// then stops them, waits for them, and gives the lease up.
    pub async fn run(self, term_workers: TermWorkers, shutdown: CancellationToken) {
        let timing = self.cluster.timing();
        let mut next_ask = Instant::now();
        let mut pending: Option<Pending> = None;
        let mut term: Option<Term> = None;
        let mut retired: Vec<JoinHandle<()>> = Vec::new();
        loop {
            let deadline = match self.cluster.role() {
                Role::Leader { acts_until, .. } => Some(acts_until),
                Role::Follower { .. } => None,
            };
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Wake::Shutdown,
                _ = sleep_until_some(deadline) => Wake::Deadline,
                answer = poll_pending(&mut pending) => Wake::Answer(answer),
                _ = tokio::time::sleep_until(next_ask), if pending.is_none() => Wake::Ask,
            };
            match wake {
                Wake::Shutdown => break,
                Wake::Deadline => self.deadline_passed(),
                Wake::Answer(attempt) => {
                    pending = None;
                    self.apply(attempt);
                }
                Wake::Ask => {
                    pending = Some(Box::pin(self.attempt()));
                    next_ask = Instant::now() + timing.renew_every;
                }
            }
            self.reconcile(&mut term, &mut retired, &term_workers);
        }
        self.stop(term, retired).await;
    }

    /// Starts or stops the term's workers so that they run exactly while this replica leads,
    /// under the epoch it leads.
    fn reconcile(
        &self,
        term: &mut Option<Term>,
        retired: &mut Vec<JoinHandle<()>>,
        term_workers: &TermWorkers,
    ) {
        let leading = self.cluster.role().leading_epoch();
        if term.as_ref().map(|t| t.epoch) == leading {
            return;
        }
        if let Some(old) = term.take() {
            old.stop.cancel();
            retired.extend(old.workers);
        }
        retired.retain(|h| !h.is_finished());
        if let Some(epoch) = leading {
            let stop = CancellationToken::new();
            let workers = term_workers(epoch, &stop);
            *term = Some(Term {
                epoch,
                stop,
                workers,
            });
            self.forget_old_members();
        }
    }

    /// Removes long-silent replicas from the member list, once per term, without waiting.
    fn forget_old_members(&self) {
        let (store, now) = (self.store.clone(), self.clock.now());
        let cutoff = crate::clock::before(now, MEMBERS_FORGOTTEN_AFTER);
        // Short-lived: one store call.
        drop(tokio::spawn(async move {
            if let Err(e) = store.forget_members(cutoff).await {
                tracing::debug!(error = %e, "could not forget silent members");
            }
        }));
    }

    /// Stops the term's workers, waits for their steps in flight, then gives the lease up.
    async fn stop(&self, term: Option<Term>, retired: Vec<JoinHandle<()>>) {
        let role = self.cluster.role();
        self.cluster.publish(Role::Follower {
            leader: None,
            epoch: match role {
                Role::Leader { epoch, .. } | Role::Follower { epoch, .. } => epoch,
            },
        });
        let mut handles = retired;
        if let Some(t) = term {
            t.stop.cancel();
            handles.extend(t.workers);
        }
        for h in handles {
            let _ = h.await;
        }
        if role.leading_epoch().is_some() {
            let release = self
                .store
                .release(self.cluster.replica_id(), self.clock.now());
            match tokio::time::timeout(RELEASE_WAIT, release).await {
                Ok(Ok(_)) => tracing::info!("gave up the leader's lease"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not give up the leader's lease; it expires by itself")
                }
                Err(_) => tracing::warn!(
                    "giving up the leader's lease took too long; it expires by itself"
                ),
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn poll_pending(pending: &mut Option<Pending>) -> Attempt {
    match pending {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

/// A background worker that runs for one leader's term: a step is taken only while this
/// replica may act under `epoch`, and a step that changed something is recorded with it.
pub struct Led<W> {
    pub worker: W,
    pub epoch: u64,
    pub cluster: Cluster,
    pub store: Arc<dyn ClusterStore>,
    pub clock: Arc<dyn Clock>,
}

#[async_trait::async_trait]
impl<W: Worker> Worker for Led<W> {
    type Error = String;

    fn name(&self) -> &'static str {
        self.worker.name()
    }

    async fn run_once(&self) -> Result<Counts, String> {
        if !self.cluster.may_act(self.epoch) {
            // The term ended between the tick and the step; its workers are being stopped.
            return Ok(Vec::new());
        }
        // Every write of the step, and its record, commits only while the lease is still this
        // term's (`drover_store::fence`): the deadline above keeps a term from starting work
        // late, the fence keeps its writes from landing late.
        let fence = drover_store::Fence {
            replica_id: self.cluster.replica_id().to_string(),
            epoch: self.epoch,
        };
        drover_store::fenced(fence, async {
            let at = self.clock.now();
            let counts = self.worker.run_once().await.map_err(|e| e.to_string())?;
            if self.worker.records_actions() && counts.iter().any(|(_, n)| *n > 0) {
                let action = Action {
                    epoch: self.epoch,
                    replica_id: self.cluster.replica_id().to_string(),
                    worker: self.worker.name().to_string(),
                    at,
                };
                if let Err(e) = self.store.record_action(action).await {
                    tracing::warn!(worker = self.worker.name(), error = %e, "could not record a background action");
                }
            }
            Ok(counts)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The election on paused tokio time, against a real SQLite store (and the fault wrapper
    //! to cut a replica off from it). Wall-clock instants follow tokio's clock, so a lease's
    //! expiry and a replica's monotonic deadline are compared on one time line.

    use super::*;
    use crate::workers::{self, WorkerBoard};
    use chrono::TimeZone;
    use drover_store::Stores;
    use drover_store::faults::{self, FaultPlan, Faults};

    /// Replicas list each other by an address another machine can use: a wildcard bind names
    /// none, so the host's name stands in for it, and a configured address wins over both.
    #[test]
    fn a_replica_advertises_an_address_others_can_reach() {
        let at = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(
            advertised_address(None, at("10.0.0.5:8080")),
            "10.0.0.5:8080"
        );
        let wildcard = advertised_address(None, at("0.0.0.0:8080"));
        assert_eq!(wildcard, format!("{}:8080", host_name()));
        assert!(!wildcard.starts_with("0.0.0.0"), "{wildcard}");
        assert!(!advertised_address(None, at("[::]:9000")).starts_with("[::]"));
        assert_eq!(
            advertised_address(Some("drover-a.internal:8443"), at("0.0.0.0:8080")),
            "drover-a.internal:8443"
        );
    }

    /// Wall time that moves with tokio's (paused) clock.
    struct TokioClock {
        start: Timestamp,
        origin: Instant,
    }

    impl Clock for TokioClock {
        fn now(&self) -> Timestamp {
            self.start + chrono::Duration::from_std(self.origin.elapsed()).unwrap_or_default()
        }
    }

    fn clock() -> Arc<TokioClock> {
        Arc::new(TokioClock {
            start: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap(),
            origin: Instant::now(),
        })
    }

    const TTL: Duration = Duration::from_secs(3);

    /// A background worker that changes something at every step.
    struct Tick {
        steps: Arc<Mutex<Vec<(u64, Instant)>>>,
        epoch: u64,
    }

    #[async_trait::async_trait]
    impl Worker for Tick {
        type Error = String;
        fn name(&self) -> &'static str {
            "tick"
        }
        async fn run_once(&self) -> Result<Counts, String> {
            let mut steps = self.steps.lock().unwrap();
            steps.push((self.epoch, Instant::now()));
            Ok(vec![("ticks", 1)])
        }
    }

    /// One replica: its election running over `store`, its term's worker ticking every 100 ms.
    struct Replica {
        cluster: Cluster,
        store: Stores,
        clock: Arc<TokioClock>,
        steps: Arc<Mutex<Vec<(u64, Instant)>>>,
        /// Every role it published, with when.
        roles: Arc<Mutex<Vec<(Instant, Role)>>>,
        shutdown: CancellationToken,
        handle: JoinHandle<()>,
    }

    impl Replica {
        async fn start(name: &str, store: Stores, clock: Arc<TokioClock>) -> Replica {
            let cluster = Cluster::new(name.into(), LeaseTiming::unchecked(TTL), TTL);
            cluster.set_address(format!("{name}.example:8080"));
            let roles = Arc::new(Mutex::new(Vec::new()));
            let mut rx = cluster.subscribe();
            let seen = roles.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let role = rx.borrow_and_update().clone();
                    seen.lock().unwrap().push((Instant::now(), role));
                }
            });
            let steps = Arc::new(Mutex::new(Vec::new()));
            let board = WorkerBoard::new(crate::metrics::Metrics::new().workers);
            let (c, s, k, st) = (
                cluster.clone(),
                store.cluster.clone(),
                clock.clone(),
                steps.clone(),
            );
            let term: TermWorkers = Box::new(move |epoch, stop| {
                let worker = Led {
                    worker: Tick {
                        steps: st.clone(),
                        epoch,
                    },
                    epoch,
                    cluster: c.clone(),
                    store: s.clone(),
                    clock: k.clone(),
                };
                vec![workers::spawn(
                    worker,
                    Duration::from_millis(100),
                    board.clone(),
                    k.clone(),
                    stop.clone(),
                )]
            });
            let election = Election::new(cluster.clone(), store.cluster.clone(), clock.clone());
            let shutdown = CancellationToken::new();
            let handle = tokio::spawn(election.run(term, shutdown.clone()));
            Replica {
                cluster,
                store,
                clock,
                steps,
                roles,
                shutdown,
                handle,
            }
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.handle.await.unwrap();
        }

        fn steps(&self) -> Vec<(u64, Instant)> {
            self.steps.lock().unwrap().clone()
        }

        async fn lease(&self) -> Lease {
            self.store
                .cluster
                .view(self.clock.now())
                .await
                .unwrap()
                .lease
        }
    }

    fn sqlite(dir: &tempfile::TempDir) -> Stores {
        drover_store::open(&dir.path().join("drover.db").display().to_string()).unwrap()
    }

    fn faulty(dir: &tempfile::TempDir) -> (Stores, Arc<Faults>) {
        let faults = Faults::new(FaultPlan::none(1));
        (faults::wrap(sqlite(dir), faults.clone()), faults)
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_alone_leads_at_once_and_renews_under_one_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let a = Replica::start("a", sqlite(&dir), clock()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.cluster.role().leading_epoch(), Some(1));

        tokio::time::sleep(TTL * 10).await;
        assert_eq!(a.cluster.role().leading_epoch(), Some(1), "still epoch 1");
        let lease = a.lease().await;
        assert_eq!((lease.leader.as_str(), lease.epoch), ("a", 1));
        // Renewed every third of the TTL: the lease runs at most a TTL past now.
        let now = a.clock.now();
        assert!(lease.expires_at > now && lease.expires_at <= now + chrono::Duration::seconds(3));
        // One term, its worker stepping all along.
        assert!(a.steps().len() > 250, "{}", a.steps().len());
        assert!(a.steps().iter().all(|(e, _)| *e == 1));
        let members = a
            .store
            .cluster
            .view(now - chrono::Duration::seconds(3))
            .await
            .unwrap()
            .members;
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].address, "a.example:8080");
        a.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_stops_acting_before_its_lease_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = faulty(&dir);
        let a = Replica::start("a", store, clock()).await;
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(a.cluster.role().leading_epoch(), Some(1));

        // Cut off: every write fails from now on, renewals included.
        faults.set_writes_down(true);
        let last = a.lease().await;
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(a.cluster.role().leading_epoch(), None, "stepped down");

        let roles = a.roles.lock().unwrap().clone();
        let (stepped_down_at, _) = roles
            .iter()
            .rev()
            .find(|(_, r)| r.leading_epoch().is_none())
            .cloned()
            .unwrap();
        let wall =
            |at: Instant| a.clock.start + chrono::Duration::from_std(at - a.clock.origin).unwrap();
        let margin = chrono::Duration::from_std(LeaseTiming::unchecked(TTL).safety_margin).unwrap();
        assert!(
            wall(stepped_down_at) <= last.expires_at - margin,
            "stepped down at {} with the lease expiring at {}",
            wall(stepped_down_at),
            last.expires_at
        );
        // No step after it stepped down, and every step before the expiry less the margin.
        let steps = a.steps();
        assert!(steps.iter().all(|(_, at)| *at < stepped_down_at));
        assert!(
            steps
                .iter()
                .all(|(_, at)| wall(*at) < last.expires_at - margin)
        );
        a.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn another_replica_takes_over_after_expiry_under_the_next_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let (store_a, faults_a) = faulty(&dir);
        let a = Replica::start("a", store_a, clock.clone()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b = Replica::start("b", sqlite(&dir), clock.clone()).await;
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(a.cluster.role().leading_epoch(), Some(1));
        assert_eq!(
            b.cluster.role(),
            Role::Follower {
                leader: Some("a".into()),
                epoch: 1
            }
        );

        // a is cut off from the store; b takes over once a's lease has run out.
        faults_a.set_writes_down(true);
        let a_lease = a.lease().await;
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(a.cluster.role().leading_epoch(), None);
        assert_eq!(b.cluster.role().leading_epoch(), Some(2));
        let lease = b.lease().await;
        assert_eq!((lease.leader.as_str(), lease.epoch), ("b", 2));
        let b_since = b.cluster.leading_since().unwrap();
        assert!(
            b_since >= a_lease.expires_at,
            "{b_since} < {}",
            a_lease.expires_at
        );

        // a comes back as a follower of b.
        faults_a.set_writes_down(false);
        tokio::time::sleep(TTL).await;
        assert_eq!(
            a.cluster.role(),
            Role::Follower {
                leader: Some("b".into()),
                epoch: 2
            }
        );
        assert_eq!(b.cluster.role().leading_epoch(), Some(2));

        // No action ran under two leaders at once: in the order they ran, epochs never go
        // back, and each epoch's actions are one replica's.
        let mut ran: Vec<_> = b
            .store
            .cluster
            .actions()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.action)
            .collect();
        ran.sort_by_key(|a| a.at);
        assert!(ran.iter().any(|a| a.epoch == 1) && ran.iter().any(|a| a.epoch == 2));
        assert!(ran.windows(2).all(|w| w[0].epoch <= w[1].epoch), "{ran:?}");
        assert!(ran.iter().all(|a| (a.epoch == 1) == (a.replica_id == "a")));
        // And every step a took (recorded or not, the store was away) ended before b's first.
        let b_first = b.steps().first().map(|s| s.1).unwrap();
        assert!(a.steps().iter().all(|(_, at)| *at < b_first));
        a.stop().await;
        b.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_leader_stops_its_workers_then_gives_the_lease_up() {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let a = Replica::start("a", sqlite(&dir), clock.clone()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b = Replica::start("b", sqlite(&dir), clock.clone()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.cluster.role().leading_epoch(), Some(1));

        let a_steps = a.steps.clone();
        let stopped = Instant::now();
        a.stop().await;
        let a_last = a_steps.lock().unwrap().last().map(|s| s.1).unwrap();
        assert!(a_last <= stopped);
        // b takes over at its next renewal, long before a's lease would have expired.
        tokio::time::sleep(LeaseTiming::unchecked(TTL).renew_every + Duration::from_millis(50))
            .await;
        assert_eq!(b.cluster.role().leading_epoch(), Some(2));
        assert!(Instant::now() < stopped + TTL);
        b.stop().await;
    }
}
