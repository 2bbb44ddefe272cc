//! Where the next journal blob goes: the placement contract's "DA fallback" routing between a
//! primary sink, an optional secondary and an optional emergency sink, as a pure state machine.
//!
//! This module owns the routing state (the contract's Healthy → Warning → Degraded → Emergency
//! → Recovering → Healthy diagram, plus Unavailable when no sink will take a blob), the
//! per-sink counters of consecutive failures and successes, and the words the `/da/routing` and
//! `/fallback/status` routes show. It must not do IO, read the clock, sleep or spawn, and it
//! does not hold the blobs waiting for reconciliation: the server runs the health checks and
//! the posts, feeds every outcome in through [`Router::observe`], asks [`Router::target`]
//! before each post, owns the pending queue, and reports each reconciliation pass through
//! [`Router::reconciled`]. The same calls in the same order always give the same state.
//!
//! The rules, with the original system's thresholds (3 failures, 2 successes):
//!
//! - A sink is *down* once its consecutive failures reach `failure_threshold`, and stays down
//!   until its consecutive successes reach `recovery_threshold`. Checks and posts count alike.
//!   The gap between the two thresholds keeps a flapping sink from bouncing the routing on
//!   every check.
//! - Primary not down: Healthy (no failure since the last success), Warning (failures below
//!   the threshold; blobs still go to the primary), or Recovering if blobs may have been posted
//!   to a fallback since the last Healthy (they must be reconciled first).
//! - Primary down: Degraded (posting to the secondary) if the secondary is configured and not
//!   down, else Emergency (posting to the emergency sink) if that one is, else Unavailable
//!   ([`Target::None`]: the blob must stay unpublished until a sink comes back).
//! - Recovering becomes Healthy (or Warning, if the primary has failed since) only when a
//!   reconciliation pass reports nothing left pending; a primary that goes down again while
//!   Recovering falls back by the rules above.

use crate::time::Timestamp;
use std::fmt;
use std::time::Duration;

/// Consecutive failures that make a sink down (the original's `failure_threshold`).
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

/// Consecutive successes that bring a down sink back (the original's `recovery_threshold`).
pub const DEFAULT_RECOVERY_THRESHOLD: u32 = 2;

/// How often the server should check every configured sink (the original's
/// `health_check_interval_ms`). The state machine never reads it; it is here so that one
/// config carries every setting of the routing.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(5_000);

/// One of the three sinks a blob can be posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SinkRole {
    Primary,
    Secondary,
    Emergency,
}

impl SinkRole {
    pub const ALL: [SinkRole; 3] = [SinkRole::Primary, SinkRole::Secondary, SinkRole::Emergency];

    /// The stable lowercase name (the contract's `source_da`/`target_da` words).
    pub const fn as_str(self) -> &'static str {
        match self {
            SinkRole::Primary => "primary",
            SinkRole::Secondary => "secondary",
            SinkRole::Emergency => "emergency",
        }
    }

    const fn index(self) -> usize {
        match self {
            SinkRole::Primary => 0,
            SinkRole::Secondary => 1,
            SinkRole::Emergency => 2,
        }
    }
}

impl std::str::FromStr for SinkRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SinkRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown sink role {s:?}; expected primary, secondary or emergency")
            })
    }
}

impl fmt::Display for SinkRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the next blob goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Sink(SinkRole),
    /// No sink will take it: the blob must be refused or kept unpublished, never dropped.
    None,
}

impl Target {
    pub const fn role(self) -> Option<SinkRole> {
        match self {
            Target::Sink(role) => Some(role),
            Target::None => None,
        }
    }

    /// Whether a blob posted there lands on a fallback sink, and so must be queued for
    /// reconciliation to the primary.
    pub const fn is_fallback(self) -> bool {
        matches!(
            self,
            Target::Sink(SinkRole::Secondary | SinkRole::Emergency)
        )
    }
}

/// The routing state of the contract's diagram, plus Unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoutingState {
    /// The primary answers; blobs go to it.
    Healthy,
    /// The primary has failed, fewer times in a row than the failure threshold; blobs still go
    /// to it.
    Warning,
    /// The primary is down; blobs go to the secondary.
    Degraded,
    /// The primary is down and the secondary is down or not configured; blobs go to the
    /// emergency sink.
    Emergency,
    /// The primary is back; blobs go to it while the blobs posted to a fallback are reconciled.
    Recovering,
    /// No configured sink is up: blobs cannot be published.
    Unavailable,
}

impl RoutingState {
    pub const ALL: [RoutingState; 6] = [
        RoutingState::Healthy,
        RoutingState::Warning,
        RoutingState::Degraded,
        RoutingState::Emergency,
        RoutingState::Recovering,
        RoutingState::Unavailable,
    ];

    /// A stable lowercase name for logs and events (the original `DAStatus`'s display words,
    /// plus `unavailable`).
    pub const fn as_str(self) -> &'static str {
        match self {
            RoutingState::Healthy => "healthy",
            RoutingState::Warning => "warning",
            RoutingState::Degraded => "degraded",
            RoutingState::Emergency => "emergency",
            RoutingState::Recovering => "recovering",
            RoutingState::Unavailable => "unavailable",
        }
    }

    /// The `current_status` word of `GET /fallback/status`. Recovering says `primary_healthy`
    /// because the primary takes the blobs again (the original reports it from the primary's
    /// health alone); Warning says `primary_degraded`, a word the original declares but never
    /// reaches.
    pub const fn current_status(self) -> &'static str {
        match self {
            RoutingState::Healthy | RoutingState::Recovering => "primary_healthy",
            RoutingState::Warning => "primary_degraded",
            RoutingState::Degraded => "fallback_secondary",
            RoutingState::Emergency => "fallback_emergency",
            RoutingState::Unavailable => "unavailable",
        }
    }

    /// The `current_state` word of `GET /da/routing` (and `routing_state` of `/system/info`):
    /// the sink the blobs go to. `unavailable` is drover's: the original has no word for it and
    /// keeps posting to the primary.
    pub const fn current_state(self) -> &'static str {
        match self.target() {
            Target::Sink(role) => role.as_str(),
            Target::None => "unavailable",
        }
    }

    /// The sink blobs go to in this state.
    pub const fn target(self) -> Target {
        match self {
            RoutingState::Healthy | RoutingState::Warning | RoutingState::Recovering => {
                Target::Sink(SinkRole::Primary)
            }
            RoutingState::Degraded => Target::Sink(SinkRole::Secondary),
            RoutingState::Emergency => Target::Sink(SinkRole::Emergency),
            RoutingState::Unavailable => Target::None,
        }
    }

    /// Whether blobs are going to a fallback sink (the contract's `fallback_active`).
    pub const fn fallback_active(self) -> bool {
        self.target().is_fallback()
    }
}

impl fmt::Display for RoutingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The settings of the routing. `Default` is the original's: no fallback sink (its
/// `ENABLE_FALLBACK` defaults to false), 3 failures, 2 successes, a check every 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Consecutive failures after which a sink is down. 0 is taken as 1.
    pub failure_threshold: u32,
    /// Consecutive successes after which a down sink is up again. 0 is taken as 1.
    pub recovery_threshold: u32,
    /// Whether a secondary sink is configured.
    pub secondary: bool,
    /// Whether an emergency sink is configured.
    pub emergency: bool,
    /// How often the server checks each configured sink.
    pub check_interval: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            recovery_threshold: DEFAULT_RECOVERY_THRESHOLD,
            secondary: false,
            emergency: false,
            check_interval: DEFAULT_CHECK_INTERVAL,
        }
    }
}

impl RoutingConfig {
    /// Whether the sink exists (the primary always does).
    pub const fn configured(&self, role: SinkRole) -> bool {
        match role {
            SinkRole::Primary => true,
            SinkRole::Secondary => self.secondary,
            SinkRole::Emergency => self.emergency,
        }
    }

    // A threshold of 0 would make a sink down before it ever failed, or up before it ever
    // answered; neither means anything, so both count as 1.
    fn failures_to_down(&self) -> u32 {
        self.failure_threshold.max(1)
    }

    fn successes_to_up(&self) -> u32 {
        self.recovery_threshold.max(1)
    }
}

/// The result of one health check or one post to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Failed, with why (kept for the fallback reason).
    Failed(String),
}

/// What the router knows of one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkHealth {
    pub configured: bool,
    /// The last outcome was a success (true before any, if configured; false if not
    /// configured). This is the `*_healthy` of `GET /da/routing`, as in the original.
    pub healthy: bool,
    /// Failures reached the threshold and successes have not yet reached theirs: the sink is
    /// not posted to.
    pub down: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// The most recent failure's reason, kept after the sink recovers.
    pub last_error: Option<String>,
}

impl SinkHealth {
    fn new(configured: bool) -> Self {
        SinkHealth {
            configured,
            healthy: configured,
            down: false,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_error: None,
        }
    }

    /// Whether blobs may be posted to it.
    pub fn usable(&self) -> bool {
        self.configured && !self.down
    }

    fn record(&mut self, outcome: Outcome, config: &RoutingConfig) {
        match outcome {
            Outcome::Ok => {
                self.healthy = true;
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                if self.consecutive_successes >= config.successes_to_up() {
                    self.down = false;
                }
            }
            Outcome::Failed(reason) => {
                self.healthy = false;
                self.consecutive_successes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_error = Some(reason);
                if self.consecutive_failures >= config.failures_to_down() {
                    self.down = true;
                }
            }
        }
    }
}

/// A change of routing state, for the server to log or journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: RoutingState,
    pub to: RoutingState,
}

/// Everything the `/da/routing`, `/fallback/status` and `/system/info` routes show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub state: RoutingState,
    pub target: Target,
    pub fallback_active: bool,
    pub fallback_reason: Option<String>,
    pub last_fallback_at: Option<Timestamp>,
    pub primary: SinkHealth,
    pub secondary: SinkHealth,
    pub emergency: SinkHealth,
    /// Blobs on a fallback sink not yet reconciled to the primary: the server's queue length,
    /// passed to [`Router::snapshot`].
    pub pending_reconcile: u64,
}

impl Snapshot {
    pub fn sink(&self, role: SinkRole) -> &SinkHealth {
        match role {
            SinkRole::Primary => &self.primary,
            SinkRole::Secondary => &self.secondary,
            SinkRole::Emergency => &self.emergency,
        }
    }

    /// `last_fallback_at` as the contract writes it: Unix milliseconds.
    pub fn last_fallback_at_ms(&self) -> Option<i64> {
        self.last_fallback_at.map(|t| t.timestamp_millis())
    }
}

/// The routing state machine. See the module documentation for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    config: RoutingConfig,
    state: RoutingState,
    sinks: [SinkHealth; 3],
    /// Blobs may have been posted to a fallback since the last Healthy: set on entering
    /// Degraded or Emergency, cleared by a reconciliation pass that leaves nothing pending.
    /// Without it, a primary-only router coming back from Unavailable would wait in Recovering
    /// for a reconciliation that has nothing to do.
    reconcile_due: bool,
    fallback_reason: Option<String>,
    last_fallback_at: Option<Timestamp>,
}

impl Router {
    /// A router in Healthy, every configured sink presumed up (as the original starts).
    pub fn new(config: RoutingConfig) -> Self {
        Router {
            config,
            state: RoutingState::Healthy,
            sinks: SinkRole::ALL.map(|role| SinkHealth::new(config.configured(role))),
            reconcile_due: false,
            fallback_reason: None,
            last_fallback_at: None,
        }
    }

    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    pub fn state(&self) -> RoutingState {
        self.state
    }

    /// Which sink the next blob goes to, or [`Target::None`].
    pub fn target(&self) -> Target {
        self.state.target()
    }

    /// Whether blobs are going to a fallback sink.
    pub fn fallback_active(&self) -> bool {
        self.state.fallback_active()
    }

    /// Why the routing left the primary (or why it has not settled back yet).
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// When blobs last started going to a fallback sink; kept after recovery.
    pub fn last_fallback_at(&self) -> Option<Timestamp> {
        self.last_fallback_at
    }

    pub fn sink(&self, role: SinkRole) -> &SinkHealth {
        &self.sinks[role.index()]
    }

    /// Records the outcome of a health check or a post to `role` at `now`, and moves the
    /// routing if it must. An outcome for a sink that is not configured is ignored: it can
    /// never be a target, and the routes report it unhealthy whatever it answers.
    pub fn observe(
        &mut self,
        role: SinkRole,
        outcome: Outcome,
        now: Timestamp,
    ) -> Option<Transition> {
        if !self.config.configured(role) {
            return None;
        }
        let config = self.config;
        self.sinks[role.index()].record(outcome, &config);
        let next = self.settled_state();
        if next == self.state {
            return None;
        }
        let from = self.state;
        self.enter(next, now);
        Some(Transition { from, to: next })
    }

    /// A reconciliation pass finished with `pending_left` blobs still on a fallback sink.
    /// Recovering ends only when nothing is left; with blobs left, the routing stays on the
    /// primary and the fallback reason says how many wait. Outside Recovering it changes
    /// nothing: the state follows the sinks' health there.
    pub fn reconciled(&mut self, pending_left: u64) -> Option<Transition> {
        if self.state != RoutingState::Recovering {
            return None;
        }
        if pending_left > 0 {
            // The original sets a reason when a recovery reconciliation fails, so that the
            // status route says why the coordinator is not back to normal.
            self.fallback_reason = Some(format!(
                "reconciliation incomplete: {pending_left} blob(s) still pending on a fallback sink"
            ));
            return None;
        }
        self.reconcile_due = false;
        self.fallback_reason = None;
        let from = self.state;
        // Healthy, or Warning if the primary has failed (below the threshold) meanwhile.
        self.state = self.settled_state();
        Some(Transition {
            from,
            to: self.state,
        })
    }

    /// Blobs wait on a fallback sink that this router did not send there (they were posted
    /// before a restart, in Degraded or Emergency): reconciliation is due, and the routing is
    /// Recovering as soon as the primary is up, as if this router had fallen back itself.
    pub fn pending_found(&mut self) -> Option<Transition> {
        if self.reconcile_due {
            return None;
        }
        self.reconcile_due = true;
        let next = self.settled_state();
        if next == self.state {
            return None;
        }
        let from = self.state;
        self.state = next;
        Some(Transition { from, to: next })
    }

    /// The routes' view, with the server's count of blobs waiting for reconciliation.
    pub fn snapshot(&self, pending_reconcile: u64) -> Snapshot {
        let [primary, secondary, emergency] = self.sinks.clone();
        Snapshot {
            state: self.state,
            target: self.target(),
            fallback_active: self.fallback_active(),
            fallback_reason: self.fallback_reason.clone(),
            last_fallback_at: self.last_fallback_at,
            primary,
            secondary,
            emergency,
            pending_reconcile,
        }
    }

    /// The state the sinks' health calls for now.
    fn settled_state(&self) -> RoutingState {
        let primary = self.sink(SinkRole::Primary);
        if !primary.down {
            if self.reconcile_due {
                RoutingState::Recovering
            } else if primary.consecutive_failures > 0 {
                RoutingState::Warning
            } else {
                RoutingState::Healthy
            }
        } else if self.sink(SinkRole::Secondary).usable() {
            RoutingState::Degraded
        } else if self.sink(SinkRole::Emergency).usable() {
            RoutingState::Emergency
        } else {
            RoutingState::Unavailable
        }
    }

    fn enter(&mut self, next: RoutingState, now: Timestamp) {
        match next {
            RoutingState::Degraded | RoutingState::Emergency => {
                self.reconcile_due = true;
                // The start of a fallback period, not a move between fallbacks (the original
                // stamps it when fallback becomes active).
                if !self.state.fallback_active() {
                    self.last_fallback_at = Some(now);
                }
                self.fallback_reason = Some(self.reason(next));
            }
            RoutingState::Unavailable => self.fallback_reason = Some(self.reason(next)),
            // The original clears the reason once the primary is back.
            RoutingState::Recovering | RoutingState::Healthy | RoutingState::Warning => {
                self.fallback_reason = None
            }
        }
        self.state = next;
    }

    fn reason(&self, state: RoutingState) -> String {
        let primary = format!("primary sink down ({})", self.describe(SinkRole::Primary));
        match state {
            RoutingState::Degraded => format!("{primary}, using secondary"),
            RoutingState::Emergency if self.config.secondary => format!(
                "{primary}, secondary sink down too ({}), using emergency",
                self.describe(SinkRole::Secondary)
            ),
            RoutingState::Emergency => {
                format!("{primary}, no secondary configured, using emergency")
            }
            _ if !self.config.secondary && !self.config.emergency => {
                format!("{primary}, no fallback sink configured: blobs are held unpublished")
            }
            _ => format!("{primary}, every fallback sink down too: blobs are held unpublished"),
        }
    }

    fn describe(&self, role: SinkRole) -> String {
        let sink = self.sink(role);
        let last = sink.last_error.as_deref().unwrap_or("no error recorded");
        if sink.consecutive_failures > 0 {
            format!(
                "{} consecutive failures, last: {last}",
                sink.consecutive_failures
            )
        } else {
            format!("not yet recovered, last error: {last}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    fn at(second: i64) -> Timestamp {
        Utc.timestamp_opt(1_767_225_600 + second, 0).unwrap()
    }

    fn full() -> RoutingConfig {
        RoutingConfig {
            secondary: true,
            emergency: true,
            ..RoutingConfig::default()
        }
    }

    fn fail(router: &mut Router, role: SinkRole, times: u32, now: Timestamp) {
        for _ in 0..times {
            router.observe(role, Outcome::Failed(format!("{role} timed out")), now);
        }
    }

    fn succeed(router: &mut Router, role: SinkRole, times: u32, now: Timestamp) {
        for _ in 0..times {
            router.observe(role, Outcome::Ok, now);
        }
    }

    #[test]
    fn defaults_are_the_originals() {
        let config = RoutingConfig::default();
        assert_eq!(config.failure_threshold, 3);
        assert_eq!(config.recovery_threshold, 2);
        assert_eq!(config.check_interval, Duration::from_secs(5));
        assert!(!config.secondary && !config.emergency);
    }

    #[test]
    fn contract_words() {
        use RoutingState::*;
        let status: Vec<_> = RoutingState::ALL
            .iter()
            .map(|s| s.current_status())
            .collect();
        assert_eq!(
            status,
            [
                "primary_healthy",
                "primary_degraded",
                "fallback_secondary",
                "fallback_emergency",
                "primary_healthy",
                "unavailable"
            ]
        );
        let state: Vec<_> = RoutingState::ALL
            .iter()
            .map(|s| s.current_state())
            .collect();
        assert_eq!(
            state,
            [
                "primary",
                "primary",
                "secondary",
                "emergency",
                "primary",
                "unavailable"
            ]
        );
        let roles: Vec<_> = SinkRole::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(roles, ["primary", "secondary", "emergency"]);
        assert!(Degraded.fallback_active() && Emergency.fallback_active());
        assert!(!Healthy.fallback_active() && !Warning.fallback_active());
        assert!(!Recovering.fallback_active() && !Unavailable.fallback_active());
    }

    #[test]
    fn walks_the_whole_diagram() {
        let mut router = Router::new(full());
        assert_eq!(router.state(), RoutingState::Healthy);
        assert_eq!(router.target(), Target::Sink(SinkRole::Primary));

        let t = router.observe(SinkRole::Primary, Outcome::Failed("timeout".into()), at(0));
        assert_eq!(
            t,
            Some(Transition {
                from: RoutingState::Healthy,
                to: RoutingState::Warning
            })
        );
        assert_eq!(router.target(), Target::Sink(SinkRole::Primary));
        assert!(!router.fallback_active());

        fail(&mut router, SinkRole::Primary, 2, at(10));
        assert_eq!(router.state(), RoutingState::Degraded);
        assert_eq!(router.target(), Target::Sink(SinkRole::Secondary));
        assert!(router.fallback_active());
        assert_eq!(router.last_fallback_at(), Some(at(10)));
        let reason = router.fallback_reason().unwrap_or_default().to_owned();
        assert!(reason.contains("3 consecutive failures"), "{reason}");
        assert!(reason.contains("using secondary"), "{reason}");

        fail(&mut router, SinkRole::Secondary, 3, at(20));
        assert_eq!(router.state(), RoutingState::Emergency);
        assert_eq!(router.target(), Target::Sink(SinkRole::Emergency));
        // Still the same fallback period.
        assert_eq!(router.last_fallback_at(), Some(at(10)));
        assert!(
            router
                .fallback_reason()
                .is_some_and(|r| r.contains("using emergency"))
        );

        succeed(&mut router, SinkRole::Primary, 1, at(30));
        assert_eq!(router.state(), RoutingState::Emergency);
        succeed(&mut router, SinkRole::Primary, 1, at(35));
        assert_eq!(router.state(), RoutingState::Recovering);
        assert_eq!(router.target(), Target::Sink(SinkRole::Primary));
        assert_eq!(router.fallback_reason(), None);
        assert_eq!(router.state().current_status(), "primary_healthy");

        let t = router.reconciled(0);
        assert_eq!(
            t,
            Some(Transition {
                from: RoutingState::Recovering,
                to: RoutingState::Healthy
            })
        );
        assert_eq!(router.target(), Target::Sink(SinkRole::Primary));
        assert_eq!(router.last_fallback_at(), Some(at(10)));
        let snapshot = router.snapshot(0);
        assert_eq!(
            snapshot.last_fallback_at_ms(),
            Some(at(10).timestamp_millis())
        );
        assert!(!snapshot.fallback_active);
    }

    #[test]
    fn failures_below_the_threshold_only_warn() {
        let mut router = Router::new(full());
        fail(&mut router, SinkRole::Primary, 2, at(0));
        assert_eq!(router.state(), RoutingState::Warning);
        assert_eq!(router.sink(SinkRole::Primary).consecutive_failures, 2);
        assert!(!router.sink(SinkRole::Primary).down);
        // A success in between resets the count: failures must be consecutive.
        succeed(&mut router, SinkRole::Primary, 1, at(1));
        assert_eq!(router.state(), RoutingState::Healthy);
        fail(&mut router, SinkRole::Primary, 2, at(2));
        assert_eq!(router.state(), RoutingState::Warning);
        fail(&mut router, SinkRole::Primary, 1, at(3));
        assert_eq!(router.state(), RoutingState::Degraded);
    }

    #[test]
    fn successes_below_the_recovery_threshold_keep_the_fallback() {
        let config = RoutingConfig {
            recovery_threshold: 3,
            ..full()
        };
        let mut router = Router::new(config);
        fail(&mut router, SinkRole::Primary, 3, at(0));
        assert_eq!(router.state(), RoutingState::Degraded);
        succeed(&mut router, SinkRole::Primary, 2, at(1));
        assert_eq!(router.state(), RoutingState::Degraded);
        assert!(router.sink(SinkRole::Primary).healthy);
        assert!(router.sink(SinkRole::Primary).down);
        // A failure resets the successes.
        fail(&mut router, SinkRole::Primary, 1, at(2));
        succeed(&mut router, SinkRole::Primary, 2, at(3));
        assert_eq!(router.state(), RoutingState::Degraded);
        succeed(&mut router, SinkRole::Primary, 1, at(4));
        assert_eq!(router.state(), RoutingState::Recovering);
    }

    #[test]
    fn a_threshold_of_one_skips_warning_and_zero_counts_as_one() {
        for threshold in [0, 1] {
            let config = RoutingConfig {
                failure_threshold: threshold,
                recovery_threshold: threshold,
                ..full()
            };
            let mut router = Router::new(config);
            fail(&mut router, SinkRole::Primary, 1, at(0));
            assert_eq!(
                router.state(),
                RoutingState::Degraded,
                "threshold {threshold}"
            );
            succeed(&mut router, SinkRole::Primary, 1, at(1));
            assert_eq!(
                router.state(),
                RoutingState::Recovering,
                "threshold {threshold}"
            );
        }
    }

    #[test]
    fn without_a_secondary_warning_goes_to_emergency() {
        let config = RoutingConfig {
            emergency: true,
            ..RoutingConfig::default()
        };
        let mut router = Router::new(config);
        fail(&mut router, SinkRole::Primary, 2, at(0));
        assert_eq!(router.state(), RoutingState::Warning);
        fail(&mut router, SinkRole::Primary, 1, at(1));
        assert_eq!(router.state(), RoutingState::Emergency);
        assert_eq!(router.target(), Target::Sink(SinkRole::Emergency));
        assert!(
            router
                .fallback_reason()
                .is_some_and(|r| r.contains("no secondary configured"))
        );
        // Checks of the missing secondary change nothing.
        assert_eq!(
            router.observe(SinkRole::Secondary, Outcome::Ok, at(2)),
            None
        );
        assert!(!router.sink(SinkRole::Secondary).healthy);
        fail(&mut router, SinkRole::Emergency, 3, at(3));
        assert_eq!(router.state(), RoutingState::Unavailable);
        assert_eq!(router.target(), Target::None);
    }

    #[test]
    fn without_any_fallback_blobs_are_held() {
        let mut router = Router::new(RoutingConfig::default());
        fail(&mut router, SinkRole::Primary, 2, at(0));
        assert_eq!(router.state(), RoutingState::Warning);
        fail(&mut router, SinkRole::Primary, 1, at(1));
        assert_eq!(router.state(), RoutingState::Unavailable);
        assert_eq!(router.target(), Target::None);
        assert_eq!(router.state().current_status(), "unavailable");
        assert_eq!(router.state().current_state(), "unavailable");
        assert!(!router.fallback_active());
        // Nothing went to a fallback: no fallback period, nothing to reconcile.
        assert_eq!(router.last_fallback_at(), None);
        assert!(
            router
                .fallback_reason()
                .is_some_and(|r| r.contains("no fallback sink configured"))
        );
        succeed(&mut router, SinkRole::Primary, 2, at(2));
        assert_eq!(router.state(), RoutingState::Healthy);
        assert_eq!(router.fallback_reason(), None);
    }

    #[test]
    fn emergency_failing_too_is_unavailable_and_a_fallback_coming_back_is_used() {
        let mut router = Router::new(full());
        fail(&mut router, SinkRole::Secondary, 3, at(0));
        fail(&mut router, SinkRole::Emergency, 3, at(0));
        assert_eq!(router.state(), RoutingState::Healthy);
        fail(&mut router, SinkRole::Primary, 3, at(1));
        assert_eq!(router.state(), RoutingState::Unavailable);
        assert!(
            router
                .fallback_reason()
                .is_some_and(|r| r.contains("every fallback sink down"))
        );
        succeed(&mut router, SinkRole::Emergency, 2, at(2));
        assert_eq!(router.state(), RoutingState::Emergency);
        assert_eq!(router.last_fallback_at(), Some(at(2)));
        succeed(&mut router, SinkRole::Secondary, 2, at(3));
        assert_eq!(router.state(), RoutingState::Degraded);
        assert_eq!(router.last_fallback_at(), Some(at(2)));
    }

    #[test]
    fn a_primary_failure_while_recovering_falls_back_again() {
        let mut router = Router::new(full());
        fail(&mut router, SinkRole::Primary, 3, at(0));
        succeed(&mut router, SinkRole::Primary, 2, at(1));
        assert_eq!(router.state(), RoutingState::Recovering);
        // Below the threshold it keeps recovering on the primary.
        fail(&mut router, SinkRole::Primary, 2, at(2));
        assert_eq!(router.state(), RoutingState::Recovering);
        assert_eq!(router.target(), Target::Sink(SinkRole::Primary));
        fail(&mut router, SinkRole::Primary, 1, at(3));
        assert_eq!(router.state(), RoutingState::Degraded);
        assert_eq!(router.last_fallback_at(), Some(at(3)));

        // And to Emergency when the secondary is down.
        succeed(&mut router, SinkRole::Primary, 2, at(4));
        assert_eq!(router.state(), RoutingState::Recovering);
        fail(&mut router, SinkRole::Secondary, 3, at(5));
        fail(&mut router, SinkRole::Primary, 3, at(6));
        assert_eq!(router.state(), RoutingState::Emergency);
    }

    #[test]
    fn reconciliation_with_blobs_left_keeps_recovering() {
        let mut router = Router::new(full());
        fail(&mut router, SinkRole::Primary, 3, at(0));
        succeed(&mut router, SinkRole::Primary, 2, at(1));
        assert_eq!(router.reconciled(4), None);
        assert_eq!(router.state(), RoutingState::Recovering);
        assert!(
            router
                .fallback_reason()
                .is_some_and(|r| r.contains("4 blob(s) still pending"))
        );
        assert_eq!(router.snapshot(4).pending_reconcile, 4);
        // A primary failure meanwhile: the pass ends in Warning, not Healthy.
        fail(&mut router, SinkRole::Primary, 1, at(2));
        assert_eq!(
            router.reconciled(0).map(|t| t.to),
            Some(RoutingState::Warning)
        );
        assert_eq!(router.fallback_reason(), None);
        succeed(&mut router, SinkRole::Primary, 1, at(3));
        assert_eq!(router.state(), RoutingState::Healthy);
    }

    #[test]
    fn blobs_found_pending_after_a_restart_make_a_healthy_router_recover_them() {
        let mut router = Router::new(RoutingConfig {
            secondary: true,
            ..RoutingConfig::default()
        });
        assert_eq!(
            router.pending_found(),
            Some(Transition {
                from: RoutingState::Healthy,
                to: RoutingState::Recovering
            })
        );
        assert_eq!(router.target(), Target::Sink(SinkRole::Primary));
        assert_eq!(router.pending_found(), None);
        assert_eq!(router.reconciled(2), None);
        assert_eq!(router.state(), RoutingState::Recovering);
        router.reconciled(0);
        assert_eq!(router.state(), RoutingState::Healthy);
    }

    #[test]
    fn reconciliation_outside_recovering_changes_nothing() {
        let mut router = Router::new(full());
        assert_eq!(router.reconciled(0), None);
        fail(&mut router, SinkRole::Primary, 3, at(0));
        let before = router.clone();
        assert_eq!(router.reconciled(0), None);
        assert_eq!(router, before);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Observe(SinkRole, bool),
        Reconciled(u64),
    }

    fn any_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (prop::sample::select(SinkRole::ALL.to_vec()), any::<bool>())
                .prop_map(|(role, ok)| Step::Observe(role, ok)),
            1 => (0u64..3).prop_map(Step::Reconciled),
        ]
    }

    fn any_config() -> impl Strategy<Value = RoutingConfig> {
        (0u32..5, 0u32..5, any::<bool>(), any::<bool>()).prop_map(
            |(failure_threshold, recovery_threshold, secondary, emergency)| RoutingConfig {
                failure_threshold,
                recovery_threshold,
                secondary,
                emergency,
                check_interval: DEFAULT_CHECK_INTERVAL,
            },
        )
    }

    fn run(config: RoutingConfig, steps: &[Step]) -> Vec<Snapshot> {
        let mut router = Router::new(config);
        let mut seen = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Observe(role, true) => {
                    router.observe(*role, Outcome::Ok, at(i as i64));
                }
                Step::Observe(role, false) => {
                    router.observe(*role, Outcome::Failed(format!("e{i}")), at(i as i64));
                }
                Step::Reconciled(left) => {
                    router.reconciled(*left);
                }
            }
            seen.push(router.snapshot(0));
        }
        seen
    }

    proptest! {
        #[test]
        fn never_targets_a_sink_seen_failing_past_the_threshold(
            config in any_config(),
            steps in proptest::collection::vec(any_step(), 0..80),
        ) {
            let threshold = config.failure_threshold.max(1);
            for snapshot in run(config, &steps) {
                prop_assert_eq!(snapshot.target, snapshot.state.target());
                prop_assert_eq!(snapshot.fallback_active, snapshot.target.is_fallback());
                if let Some(role) = snapshot.target.role() {
                    let sink = snapshot.sink(role);
                    prop_assert!(sink.configured, "{:?} targets an unconfigured sink", snapshot);
                    prop_assert!(!sink.down, "{:?} targets a down sink", snapshot);
                    prop_assert!(sink.consecutive_failures < threshold, "{:?}", snapshot);
                } else {
                    // Nothing is targeted only when nothing configured is up.
                    for role in SinkRole::ALL {
                        prop_assert!(!snapshot.sink(role).usable(), "{:?}", snapshot);
                    }
                }
                // The primary is used whenever it is up.
                if snapshot.primary.usable() {
                    prop_assert_eq!(snapshot.target, Target::Sink(SinkRole::Primary));
                }
                if snapshot.fallback_active {
                    prop_assert!(snapshot.last_fallback_at.is_some());
                    prop_assert!(snapshot.fallback_reason.is_some());
                }
            }
        }

        #[test]
        fn the_same_steps_give_the_same_snapshots(
            config in any_config(),
            steps in proptest::collection::vec(any_step(), 0..80),
        ) {
            prop_assert_eq!(run(config, &steps), run(config, &steps));
        }
    }
}
