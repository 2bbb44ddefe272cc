//! Waking claims that wait for work (`waitMs`): a version counter bumped by every committed write
//! that may have made a task claimable, and the one wait loop built on it.
//!
//! This module owns when a waiting claim looks again; it must not decide what is claimable (the
//! store's claim does, and `Event::may_free_work` names the events that may change it). There
//! is no lost wake-up: a waiter reads the version *before* it tries to claim, so a change that
//! commits between its empty claim and its wait is seen as a newer version at once. A wake-up
//! is only a hint to claim again: several waiters may race for one task, and a loser waits
//! again until its deadline.
//!
//! Closing (at server shutdown) ends every wait at once, so a long-poll never holds up a
//! graceful stop; the claim then answers with what it has (nothing).

use drover_core::Event;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The wake-up signal of one server.
#[derive(Clone)]
pub struct Wake {
    version: watch::Sender<u64>,
    closed: CancellationToken,
}

impl Default for Wake {
    fn default() -> Self {
        Self::new()
    }
}

impl Wake {
    pub fn new() -> Self {
        Wake {
            version: watch::Sender::new(0),
            closed: CancellationToken::new(),
        }
    }

    /// What the store's observer calls with each committed write's events.
    pub fn observe(&self, events: &[Event]) {
        if events.iter().any(Event::may_free_work) {
            self.poke();
        }
    }

    /// Wakes every waiter to look again: work may have appeared through another replica of
    /// the same database (the store heard of it, without this server's events).
    pub fn poke(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Ends every wait, now and from now on (the server is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Runs `attempt` until it finds something, `wait` has passed, or the wake is closed:
    /// the first attempt at once, each further one after a change that may have freed work.
    /// Answers the last attempt's result (empty when the time ran out).
    pub async fn until_found<T, E, F, Fut>(
        &self,
        wait: Duration,
        mut attempt: F,
    ) -> Result<Vec<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>>,
    {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = self.version.subscribe();
        loop {
            // Mark the current version seen before looking, so that a change committed after
            // this look wakes the wait below.
            seen.borrow_and_update();
            let found = attempt().await?;
            if !found.is_empty() || wait.is_zero() {
                return Ok(found);
            }
            tokio::select! {
                changed = seen.changed() => {
                    // The sender lives as long as `self`; an error cannot happen, but if it did,
                    // waiting on is the wrong answer.
                    if changed.is_err() {
                        return Ok(found);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(found),
                _ = self.closed.cancelled() => return Ok(found),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn created() -> Event {
        Event::JobCreated {
            job_id: "job-1".into(),
            total_tasks: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_with_nothing_to_come_ends_at_its_deadline_empty() {
        let wake = Wake::new();
        let tries = AtomicUsize::new(0);
        let start = tokio::time::Instant::now();
        let found: Result<Vec<u8>, ()> = wake
            .until_found(Duration::from_secs(5), || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Ok(vec![])
            })
            .await;
        assert_eq!(found, Ok(vec![]));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(tries.load(Ordering::SeqCst), 1, "no polling while waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_frees_work_wakes_the_wait_and_it_looks_again() {
        let wake = Wake::new();
        let work = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (wake, work) = (wake.clone(), work.clone());
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let found: Result<Vec<usize>, ()> = wake
                    .until_found(Duration::from_secs(30), || {
                        let n = work.load(Ordering::SeqCst);
                        async move { Ok((0..n).collect()) }
                    })
                    .await;
                (found, start.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Events that free nothing do not wake it.
        wake.observe(&[Event::JobCancelled {
            job_id: "job-1".into(),
        }]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        work.store(2, Ordering::SeqCst);
        wake.observe(&[created()]);
        let (found, waited) = waiter.await.unwrap();
        assert_eq!(found, Ok(vec![0, 1]));
        assert_eq!(waited, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_between_the_look_and_the_wait_is_not_lost() {
        let wake = Wake::new();
        let looks = AtomicUsize::new(0);
        let found: Result<Vec<u8>, ()> = wake
            .until_found(Duration::from_secs(30), || {
                // The change commits while the first look is under way.
                let first = looks.fetch_add(1, Ordering::SeqCst) == 0;
                if first {
                    wake.observe(&[created()]);
                }
                async move { Ok(if first { vec![] } else { vec![7] }) }
            })
            .await;
        assert_eq!(found, Ok(vec![7]));
        assert_eq!(looks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_every_wait_at_once() {
        let wake = Wake::new();
        let waiter = {
            let wake = wake.clone();
            tokio::spawn(async move {
                let found: Result<Vec<u8>, ()> = wake
                    .until_found(Duration::from_secs(30), || async { Ok(vec![]) })
                    .await;
                found
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let start = tokio::time::Instant::now();
        wake.close();
        assert_eq!(waiter.await.unwrap(), Ok(vec![]));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
