//! The runner registry's decision: whether a provision reuses a runner, is refused at the
//! limit, or reserves a new slot.
//!
//! This module owns the rule (one runner per session, one singleton, at most `max` runners); a
//! store reads the facts inside the transaction that will write the reservation, so two
//! provisions cannot pass the limit together. It must not do IO.

use crate::model::Runner;

/// The facts a reservation is decided from, read in the reserving transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationView {
    /// The reservation asks for the one shared runner of reuse mode.
    pub singleton: bool,
    /// The requesting session's runner, if it has one.
    pub session_runner: Option<Runner>,
    /// The singleton, if one exists.
    pub singleton_runner: Option<Runner>,
    /// How many runners exist (starting or running).
    pub active: u64,
    /// The most runners allowed; `None` for no limit.
    pub max: Option<u64>,
}

/// What a provision does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationDecision {
    /// The session (or, for the singleton, the singleton) already has this runner: reuse it.
    Exists(Runner),
    /// `active` runners exist, which is the limit: write nothing.
    LimitReached { active: u64 },
    /// Record a new STARTING runner.
    Reserve,
}

/// An existing runner wins (the singleton for a singleton request, else the session's own, so
/// a session never gets a second one); then the limit; then a new slot.
pub fn decide_reservation(view: ReservationView) -> ReservationDecision {
    let existing = if view.singleton {
        view.singleton_runner.or(view.session_runner)
    } else {
        view.session_runner
    };
    if let Some(runner) = existing {
        return ReservationDecision::Exists(runner);
    }
    match view.max {
        Some(max) if view.active >= max => ReservationDecision::LimitReached {
            active: view.active,
        },
        _ => ReservationDecision::Reserve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunnerStatus;
    use crate::test_support::any_instant;
    use proptest::prelude::*;

    fn runner(session: &str, singleton: bool, at: crate::Timestamp) -> Runner {
        Runner {
            session_id: session.into(),
            driver: "process".into(),
            instance: None,
            endpoint: None,
            status: RunnerStatus::Starting,
            singleton,
            created_at: at,
            last_heartbeat: at,
            token_hash: None,
        }
    }

    proptest! {
        #[test]
        fn a_reservation_never_passes_the_limit_nor_makes_a_second_runner(
            singleton in any::<bool>(),
            has_session_runner in any::<bool>(),
            has_singleton in any::<bool>(),
            active in 0u64..20,
            max in prop::option::of(0u64..20),
            at in any_instant(),
        ) {
            let session_runner = has_session_runner.then(|| runner("s", false, at));
            let singleton_runner = has_singleton.then(|| runner("one", true, at));
            let view = ReservationView {
                singleton,
                session_runner: session_runner.clone(),
                singleton_runner: singleton_runner.clone(),
                active,
                max,
            };
            match decide_reservation(view) {
                ReservationDecision::Reserve => {
                    prop_assert!(max.is_none_or(|m| active < m));
                    prop_assert!(session_runner.is_none());
                    prop_assert!(!(singleton && has_singleton));
                }
                ReservationDecision::LimitReached { active: a } => {
                    prop_assert_eq!(a, active);
                    prop_assert!(max.is_some_and(|m| active >= m));
                }
                ReservationDecision::Exists(r) => {
                    if singleton && has_singleton {
                        prop_assert_eq!(Some(r), singleton_runner);
                    } else {
                        prop_assert_eq!(Some(r), session_runner);
                    }
                }
            }
        }
    }
}
