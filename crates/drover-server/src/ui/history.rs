//! The dashboard's last hour, minute by minute: tasks finished and claimed, counted from the
//! store's committed events (as `/metrics` counts them), and how long the store took to hand
//! out each claim that got work.
//!
//! Memory is bounded: at most [`MINUTES`] minutes are kept, a few integers each. Nothing here
//! is durable or shared between replicas: a restarted server starts a new hour, and each
//! replica shows what it saw. It records; it decides nothing.

use crate::Clock;
use drover_core::Event;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Minutes kept.
pub const MINUTES: usize = 60;

/// One minute's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Minute {
    /// Unix minute (seconds / 60) this bucket is for.
    pub at: i64,
    pub completed: u64,
    pub failed: u64,
    pub claimed: u64,
    /// Claims that got work, and their store time in total and at most.
    pub claims: u64,
    pub claim_micros: u64,
    pub claim_micros_max: u64,
}

impl Minute {
    /// Tasks finished (DONE or failed) per second over this minute.
    pub fn tasks_per_second(&self) -> f64 {
        (self.completed + self.failed) as f64 / 60.0
    }

    /// The mean store time of a claim that got work, in milliseconds.
    pub fn mean_claim_ms(&self) -> Option<f64> {
        (self.claims > 0).then(|| self.claim_micros as f64 / self.claims as f64 / 1000.0)
    }
}

/// The last hour, minute by minute.
pub struct History {
    clock: Arc<dyn Clock>,
    minutes: Mutex<VecDeque<Minute>>,
}

impl History {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        History {
            clock,
            minutes: Mutex::new(VecDeque::with_capacity(MINUTES + 1)),
        }
    }

    fn with_minute(&self, f: impl FnOnce(&mut Minute)) {
        let at = self.clock.now().timestamp().div_euclid(60);
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        if minutes.back().is_none_or(|m| m.at < at) {
            minutes.push_back(Minute {
                at,
                ..Minute::default()
            });
        }
        while minutes.front().is_some_and(|m| m.at <= at - MINUTES as i64) {
            minutes.pop_front();
        }
        // A clock that went back lands in the newest minute rather than rewrite history.
        if let Some(m) = minutes.back_mut() {
            f(m);
        }
    }

    /// What the store's observer calls with each committed write's events.
    pub fn observe(&self, events: &[Event]) {
        let (mut completed, mut failed, mut claimed) = (0, 0, 0);
        for e in events {
            match e {
                Event::TaskCompleted { .. } => completed += 1,
                Event::TaskFailed { .. } => failed += 1,
                Event::TaskClaimed { .. } => claimed += 1,
                _ => {}
            }
        }
        if completed + failed + claimed > 0 {
            self.with_minute(|m| {
                m.completed += completed;
                m.failed += failed;
                m.claimed += claimed;
            });
        }
    }

    /// A claim that got work took `took` in the store.
    pub fn record_claim(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.with_minute(|m| {
            m.claims += 1;
            m.claim_micros = m.claim_micros.saturating_add(micros);
            m.claim_micros_max = m.claim_micros_max.max(micros);
        });
    }

    /// The last [`MINUTES`] minutes up to now, oldest first, with empty minutes filled in.
    pub fn last_hour(&self) -> Vec<Minute> {
        let now = self.clock.now().timestamp().div_euclid(60);
        let minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        (now - MINUTES as i64 + 1..=now)
            .map(|at| {
                minutes
                    .iter()
                    .find(|m| m.at == at)
                    .copied()
                    .unwrap_or(Minute {
                        at,
                        ..Minute::default()
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use chrono::TimeZone;

    fn done() -> Event {
        Event::TaskCompleted {
            task_id: "t".into(),
            job_id: "j".into(),
            node_id: "n".into(),
            attempt: 1,
        }
    }

    #[test]
    fn minutes_count_their_own_events_and_the_hour_is_bounded() {
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.with_ymd_and_hms(2026, 1, 28, 12, 0, 0).unwrap(),
        ));
        let h = History::new(clock.clone());
        h.observe(&[done(), done()]);
        h.record_claim(Duration::from_millis(4));
        clock.advance(Duration::from_secs(60));
        h.observe(&[done()]);
        let hour = h.last_hour();
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(hour[MINUTES - 2].completed, 2);
        assert_eq!(hour[MINUTES - 2].mean_claim_ms(), Some(4.0));
        assert_eq!(hour[MINUTES - 1].completed, 1);
        for _ in 0..200 {
            clock.advance(Duration::from_secs(60));
            h.observe(&[done()]);
        }
        assert!(h.minutes.lock().unwrap().len() <= MINUTES);
        assert_eq!(h.last_hour().iter().map(|m| m.completed).sum::<u64>(), 60);
    }
}
