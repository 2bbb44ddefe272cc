//! The rules of leadership among replicas that share one database: who holds the lease for
//! background work, how long a leader may act on what it last heard, and how long nodes are
//! spared after a leader change.
//!
//! A lease is one record (holder, epoch, expiry) kept by the store. A replica asks for it every
//! renewal interval; [`decide_lease`] says whether it renews (it holds it), takes it (it is free
//! or expired: a new epoch) or is told who holds it. A leader acts only until
//! [`LeaseTiming::acts_until`], measured on its own monotonic clock from the moment it sent its
//! last successful renewal, which is a safety margin before the expiry any other replica will
//! judge by. Epochs only grow, and an epoch belongs to one holder, so an action recorded with
//! its epoch tells which leader ran it.
//!
//! This module owns those rules. It must not read any clock, wall or monotonic: callers pass
//! `now` and the instants they measured.

use crate::time::Timestamp;
use std::ops::Add;
use std::time::Duration;

/// Shortest lease a server accepts: renewals every third of it must fit a database round trip.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(1);
/// Longest lease a server accepts: a dead leader's work waits this long for a successor.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);
/// The default lease: a successor takes over within about 10 s of a leader's death.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The lease for background work as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The replica that holds (or last held) it; empty when nobody ever did.
    pub leader: String,
    /// Increases by one each time the lease changes hands; 0 before the first holder.
    pub epoch: u64,
    /// The lease is held while `now < expires_at`.
    pub expires_at: Timestamp,
}

impl Lease {
    /// Whether someone holds the lease at `now`.
    pub fn is_held(&self, now: Timestamp) -> bool {
        !self.leader.is_empty() && now < self.expires_at
    }

    /// The leader at `now`, if the lease is held.
    pub fn leader_at(&self, now: Timestamp) -> Option<&str> {
        self.is_held(now).then_some(self.leader.as_str())
    }
}

/// What a replica's request for the lease does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// The replica holds the lease: it is extended, same epoch. This holds even when the
    /// replica's lease ran out meanwhile, as long as nobody else took it: an epoch is one
    /// holder's, and the holder stopped acting on its own clock when it could not renew.
    Renew { expires_at: Timestamp },
    /// The lease was free or expired: the replica takes it under the next epoch.
    Take { epoch: u64, expires_at: Timestamp },
    /// Another replica holds it; nothing changes.
    HeldByOther,
}

/// Decides a request for the lease by `replica` at `now`, for `ttl`. The store writes what this
/// answers in the same transaction (or as one conditional statement) that read `current`.
pub fn decide_lease(
    current: &Lease,
    replica: &str,
    now: Timestamp,
    ttl: Duration,
) -> LeaseDecision {
    let expires_at = after(now, ttl);
    if current.leader == replica && !replica.is_empty() {
        LeaseDecision::Renew { expires_at }
    } else if !current.is_held(now) {
        LeaseDecision::Take {
            epoch: current.epoch.saturating_add(1),
            expires_at,
        }
    } else {
        LeaseDecision::HeldByOther
    }
}

/// `span` after `at`, saturating at the latest representable instant.
fn after(at: Timestamp, span: Duration) -> Timestamp {
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// Why a lease setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseTimingError {
    #[error(
        "the lease TTL must be between {}s and {}s (got {got:?}): a shorter lease cannot be renewed in time, a longer one leaves background work stopped for that long after a leader dies",
        MIN_LEASE_TTL.as_secs(),
        MAX_LEASE_TTL.as_secs()
    )]
    OutOfRange { got: Duration },
}

/// The timing of one lease: how long it lasts, how often its holder renews it, and how long
/// before its expiry a leader that could not renew stops acting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
    /// A third of the TTL, so a leader has two more tries before it must stop.
    pub renew_every: Duration,
    /// A fifth of the TTL. It covers what the leader's monotonic clock cannot see: the skew
    /// between replicas' wall clocks (each judges expiry by its own) and a step that started
    /// just before the leader stopped.
    pub safety_margin: Duration,
}

impl LeaseTiming {
    /// The timing of a lease of `ttl`, refused outside [`MIN_LEASE_TTL`]..=[`MAX_LEASE_TTL`].
    pub fn new(ttl: Duration) -> Result<Self, LeaseTimingError> {
        if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) {
            return Err(LeaseTimingError::OutOfRange { got: ttl });
        }
        Ok(Self::unchecked(ttl))
    }

    /// The timing of any positive `ttl`, for tests that run a lease in milliseconds.
    pub fn unchecked(ttl: Duration) -> Self {
        LeaseTiming {
            ttl,
            renew_every: ttl / 3,
            safety_margin: ttl / 5,
        }
    }

    /// Until when a leader may act after a renewal it sent at `sent_at` (on its monotonic
    /// clock) succeeded: the lease was extended to the store's `now` plus the TTL, and that
    /// `now` was read no earlier than `sent_at`, so the expiry is never before
    /// `sent_at + ttl`; the leader stops a safety margin before that.
    pub fn acts_until<I>(&self, sent_at: I) -> I
    where
        I: Add<Duration, Output = I>,
    {
        sent_at + (self.ttl - self.safety_margin)
    }

    /// Whether a leader whose last successful renewal was sent at `sent_at` may still act at
    /// `now` (both on its monotonic clock).
    pub fn may_act<I>(&self, sent_at: I, now: I) -> bool
    where
        I: Add<Duration, Output = I> + Ord + Copy,
    {
        now < self.acts_until(sent_at)
    }

    /// How long a replica that was last heard from at `last_seen` still counts as a member at
    /// `now`: a live replica renews (and says it is there) every third of the TTL, so one
    /// silent for a whole TTL has missed three.
    pub fn is_member(&self, last_seen: Timestamp, now: Timestamp) -> bool {
        last_seen >= self.members_since(now)
    }

    /// The earliest last-seen instant of a member at `now` (see [`LeaseTiming::is_member`]).
    pub fn members_since(&self, now: Timestamp) -> Timestamp {
        chrono::Duration::from_std(self.ttl)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
    }
}

/// Whether a leader that took over at `leading_since` may declare silent nodes DOWN at `now`.
/// Not before `grace` has passed: until the takeover, nodes may have been sending their
/// heartbeats to a replica that died with the old leader, and need time to reach another.
pub fn may_declare_down(now: Timestamp, leading_since: Timestamp, grace: Duration) -> bool {
    now >= after(leading_since, grace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::any_instant;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t0() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn lease(leader: &str, epoch: u64, expires_at: Timestamp) -> Lease {
        Lease {
            leader: leader.into(),
            epoch,
            expires_at,
        }
    }

    #[test]
    fn nobody_holds_a_lease_never_taken() {
        let never = lease("", 0, t0() + secs(3600));
        assert!(!never.is_held(t0()));
        assert_eq!(
            decide_lease(&never, "a", t0(), secs(10)),
            LeaseDecision::Take {
                epoch: 1,
                expires_at: t0() + secs(10)
            }
        );
    }

    #[test]
    fn the_holder_renews_under_the_same_epoch() {
        let held = lease("a", 4, t0() + secs(5));
        assert_eq!(
            decide_lease(&held, "a", t0(), secs(10)),
            LeaseDecision::Renew {
                expires_at: t0() + secs(10)
            }
        );
    }

    #[test]
    fn the_holder_renews_even_after_expiry_when_nobody_took_it() {
        let lapsed = lease("a", 4, t0() - secs(1));
        assert_eq!(
            decide_lease(&lapsed, "a", t0(), secs(10)),
            LeaseDecision::Renew {
                expires_at: t0() + secs(10)
            }
        );
    }

    #[test]
    fn another_replica_is_told_who_holds_it_until_it_expires() {
        let held = lease("a", 4, t0() + secs(5));
        assert_eq!(
            decide_lease(&held, "b", t0(), secs(10)),
            LeaseDecision::HeldByOther
        );
        assert_eq!(
            decide_lease(&held, "b", t0() + secs(4), secs(10)),
            LeaseDecision::HeldByOther
        );
        assert_eq!(held.leader_at(t0() + secs(4)), Some("a"));
        // At the expiry itself the lease is free.
        assert_eq!(held.leader_at(t0() + secs(5)), None);
        assert_eq!(
            decide_lease(&held, "b", t0() + secs(5), secs(10)),
            LeaseDecision::Take {
                epoch: 5,
                expires_at: t0() + secs(15)
            }
        );
    }

    #[test]
    fn a_leader_stops_acting_a_safety_margin_before_the_expiry_it_caused() {
        let timing = LeaseTiming::new(secs(10)).unwrap();
        assert_eq!(timing.renew_every, secs(10) / 3);
        assert_eq!(timing.safety_margin, secs(2));
        // Monotonic instants as offsets from the process start.
        let sent = secs(100);
        assert_eq!(timing.acts_until(sent), secs(108));
        assert!(timing.may_act(sent, secs(107)));
        assert!(!timing.may_act(sent, secs(108)));
        // Two renewals may fail after a successful one and the leader still acts.
        assert!(timing.may_act(sent, sent + timing.renew_every * 2));
    }

    #[test]
    fn lease_ttls_outside_the_range_are_refused_with_the_range() {
        for bad in [Duration::ZERO, Duration::from_millis(999), secs(3601)] {
            let e = LeaseTiming::new(bad).unwrap_err();
            assert!(e.to_string().contains("between 1s and 3600s"), "{e}");
        }
        assert!(LeaseTiming::new(secs(1)).is_ok());
        assert!(LeaseTiming::new(secs(3600)).is_ok());
    }

    #[test]
    fn a_member_counts_while_heard_from_within_a_ttl() {
        let timing = LeaseTiming::new(secs(10)).unwrap();
        assert!(timing.is_member(t0(), t0() + secs(10)));
        assert!(!timing.is_member(t0(), t0() + secs(11)));
        assert_eq!(timing.members_since(t0() + secs(10)), t0());
    }

    #[test]
    fn nodes_are_spared_for_the_grace_after_a_takeover() {
        let since = t0();
        assert!(!may_declare_down(since, since, secs(10)));
        assert!(!may_declare_down(since + secs(9), since, secs(10)));
        assert!(may_declare_down(since + secs(10), since, secs(10)));
        // No grace: at once.
        assert!(may_declare_down(since, since, Duration::ZERO));
    }

    proptest! {
        /// Whatever the lease and whoever asks, the epoch never goes back, a renewal keeps it,
        /// and only a lease nobody holds changes hands.
        #[test]
        fn epochs_only_grow_and_change_with_the_holder(
            holder in prop::sample::select(vec!["", "a", "b"]),
            asker in prop::sample::select(vec!["a", "b", "c"]),
            epoch in 0u64..1000,
            expires in any_instant(),
            now in any_instant(),
            ttl_ms in 1u64..100_000,
        ) {
            let current = lease(holder, epoch, expires);
            match decide_lease(&current, asker, now, Duration::from_millis(ttl_ms)) {
                LeaseDecision::Renew { expires_at } => {
                    prop_assert_eq!(holder, asker);
                    prop_assert!(expires_at >= now);
                }
                LeaseDecision::Take { epoch: next, expires_at } => {
                    prop_assert_eq!(next, epoch + 1);
                    prop_assert!(!current.is_held(now));
                    prop_assert_ne!(holder, asker);
                    prop_assert!(expires_at >= now);
                }
                LeaseDecision::HeldByOther => {
                    prop_assert!(current.is_held(now));
                    prop_assert_ne!(holder, asker);
                }
            }
        }
    }
}
