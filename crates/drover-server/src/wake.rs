//! Waking claims that wait for work (`waitMs`): a version counter bumped by every committed write
//! that may have made a task claimable, and the one wait loop built on it. Readers of the
//! journal that wait for its next entry (`GET /api/v1/journal?waitMs=`) have a second counter,
//! bumped by every committed write, and [`Wake::until_written`].
//!
//! This module owns when a waiting claim looks again; it must not decide what is claimable (the
//! store's claim does, and `Event::may_free_work` names the events that may change it). There
//! is no lost wake-up: a waiter reads the version *before* it tries to claim, so a change that
//! commits between its empty claim and its wait is seen as a newer version at once. A wake-up
//! is only a hint to claim again: several waiters may race for one task, and a loser waits
//! again until its deadline.
//!
//! Who looks first: every waiter is woken at once, but each then holds back for its own
//! `stagger` before it looks again (the claim route gives a stagger that grows with the node's
//! load, see `surfaces::native::internal`), so the least loaded waiter claims first and a busy
//! one only finds what is left. A first look is never held back: a claim that finds work at
//! once takes it at once, whatever its load.
//!
//! Closing (at server shutdown) ends every wait at once, so a long-poll never holds up a
//! graceful stop; the claim then answers with what it has (nothing).

use drover_core::Event;
use drover_core::journal;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a waiting claim of a node with no room left (load 1) holds back after a wake-up
/// before it looks again; a node of load `l` holds back `l` times this ([`stagger_for`]).
///
/// Long enough that an idle waiter's claim, one store transaction of a few milliseconds, has
/// committed before a busy one looks; short enough to be invisible next to the run time of a
/// task (seconds and more). A busy node only loses the race for new work when an idler one
/// waits too: alone, it gets the work at most this much later.
pub const MAX_LOAD_STAGGER: Duration = Duration::from_millis(50);

/// The stagger of a waiter of `load`, from 0 (idle: looks at once) to 1 (full: holds back
/// [`MAX_LOAD_STAGGER`]); see `drover_core::rules::claim_load`.
pub fn stagger_for(load: f64) -> Duration {
    // `claim_load` is always within 0..=1; anything else is clamped (NaN counts as idle)
    // rather than let `mul_f64` panic.
    if load.is_nan() {
        return Duration::ZERO;
    }
    MAX_LOAD_STAGGER.mul_f64(load.clamp(0.0, 1.0))
}

/// Whether `event` is written to the journal (a heartbeat is not: waking the journal's readers
/// for it would only make them read nothing).
fn journaled(event: &Event) -> bool {
    !matches!(journal::subject(event), journal::Subject::Nothing)
}

/// The wake-up signal of one server.
#[derive(Clone)]
pub struct Wake {
    version: watch::Sender<u64>,
    /// Bumped by every committed write this server saw, and by every poke.
    written: watch::Sender<u64>,
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
            written: watch::Sender::new(0),
            closed: CancellationToken::new(),
        }
    }

    /// What the store's observer calls with each committed write's events.
    pub fn observe(&self, events: &[Event]) {
        if events.iter().any(Event::may_free_work) {
            self.poke();
        } else if events.iter().any(journaled) {
            self.written.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Wakes every waiter to look again: work may have appeared through another replica of
    /// the same database (the store heard of it, without this server's events).
    pub fn poke(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        self.written.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Ends every wait, now and from now on (the server is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves once the wake is closed: long-lived streams (the dashboard's live updates)
    /// end with it, so they never hold up a graceful stop.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// A receiver that sees a change after every committed, journaled write this server saw
    /// (and every poke): a hint to read again, never a count.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Runs `attempt` until it finds something, `wait` has passed, or the wake is closed:
    /// the first attempt at once, each further one `stagger` after a change that may have freed
    /// work (a waiter with a smaller stagger looks first). Answers the last attempt's result
    /// (empty when the time ran out, even in the middle of a stagger).
    pub async fn until_found<T, E, F, Fut>(
        &self,
        wait: Duration,
        stagger: Duration,
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
            if !stagger.is_zero() {
                // Held back so that less loaded waiters, woken by the same change, claim first.
                // Changes committed meanwhile are not lost: the next attempt marks them seen
                // and looks after them.
                let look_at = tokio::time::Instant::now() + stagger;
                tokio::select! {
                    _ = tokio::time::sleep_until(look_at.min(deadline)) => {
                        if look_at >= deadline {
                            return Ok(found);
                        }
                    }
                    _ = self.closed.cancelled() => return Ok(found),
                }
            }
        }
    }

    /// Runs `attempt` until it finds something, `wait` has passed, or the wake is closed: the
    /// first attempt at once, each further one after any committed write this server saw, and
    /// at least every `recheck` (writes by another replica of a shared database reach this one
    /// only as an occasional poke). Answers the last attempt's result, empty when the time ran
    /// out. As in [`Wake::until_found`], a write that commits during an attempt is not lost.
    pub async fn until_written<T, E, F, Fut>(
        &self,
        wait: Duration,
        recheck: Duration,
        mut attempt: F,
    ) -> Result<Vec<T>, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>>,
    {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = self.written.subscribe();
        loop {
            seen.borrow_and_update();
            let found = attempt().await?;
            if !found.is_empty() || wait.is_zero() {
                return Ok(found);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(found);
            }
            let look_at = (now + recheck).min(deadline);
            tokio::select! {
                changed = seen.changed() => {
                    if changed.is_err() {
                        return Ok(found);
                    }
                }
                _ = tokio::time::sleep_until(look_at) => {}
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
            .until_found(Duration::from_secs(5), Duration::ZERO, || async {
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
                    .until_found(Duration::from_secs(30), Duration::ZERO, || {
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
            .until_found(Duration::from_secs(30), Duration::ZERO, || {
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

    /// Takes one item from `pool` if it holds any, as a claim of one task would.
    fn take_one(pool: &AtomicUsize) -> Vec<usize> {
        pool.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map(|n| vec![n])
            .unwrap_or_default()
    }

    /// Waits up to `wait` with `stagger` from another task, taking one item of `pool`; hands
    /// back what it took and how long it waited.
    fn wait_staggered(
        wake: &Wake,
        pool: &Arc<AtomicUsize>,
        wait: Duration,
        stagger: Duration,
    ) -> tokio::task::JoinHandle<(Vec<usize>, Duration)> {
        let (wake, pool) = (wake.clone(), pool.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let found: Result<Vec<usize>, ()> = wake
                .until_found(wait, stagger, || {
                    let took = take_one(&pool);
                    async move { Ok(took) }
                })
                .await;
            (found.unwrap_or_default(), start.elapsed())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn of_two_waiters_woken_together_the_unstaggered_one_takes_the_only_item() {
        let wake = Wake::new();
        let pool = Arc::new(AtomicUsize::new(0));
        // The busy one starts waiting first, so being first in line does not help it.
        let busy = wait_staggered(&wake, &pool, Duration::from_secs(5), ms(40));
        let idle = wait_staggered(&wake, &pool, Duration::from_secs(5), Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(1)).await;
        pool.store(1, Ordering::SeqCst);
        wake.observe(&[created()]);

        let (took, waited) = idle.await.unwrap();
        assert_eq!(took, vec![1]);
        assert_eq!(waited, Duration::from_secs(1), "looked at once when woken");
        let (took, waited) = busy.await.unwrap();
        assert!(took.is_empty(), "nothing left when it looked: {took:?}");
        assert_eq!(
            waited,
            Duration::from_secs(5),
            "then waited on to its deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_staggered_waiter_alone_takes_the_work_its_stagger_after_the_change() {
        let wake = Wake::new();
        let pool = Arc::new(AtomicUsize::new(0));
        let busy = wait_staggered(&wake, &pool, Duration::from_secs(5), ms(40));
        tokio::time::sleep(Duration::from_secs(1)).await;
        pool.store(1, Ordering::SeqCst);
        wake.observe(&[created()]);
        let (took, waited) = busy.await.unwrap();
        assert_eq!(took, vec![1]);
        assert_eq!(waited, Duration::from_secs(1) + ms(40));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stagger_never_outlasts_the_deadline_nor_a_close() {
        let wake = Wake::new();
        let pool = Arc::new(AtomicUsize::new(0));
        // Woken 10 ms before its deadline: its 40 ms stagger is cut at the deadline, and the
        // work that came is left for the next claim.
        let late = wait_staggered(&wake, &pool, Duration::from_secs(1), ms(40));
        tokio::time::sleep(ms(990)).await;
        pool.store(1, Ordering::SeqCst);
        wake.observe(&[created()]);
        let (took, waited) = late.await.unwrap();
        assert!(took.is_empty(), "{took:?}");
        assert_eq!(waited, Duration::from_secs(1));

        // Closed in the middle of its stagger: it ends then.
        pool.store(0, Ordering::SeqCst);
        let closing = wait_staggered(&wake, &pool, Duration::from_secs(30), ms(40));
        tokio::time::sleep(Duration::from_secs(1)).await;
        wake.poke();
        tokio::time::sleep(ms(10)).await;
        wake.close();
        let (took, waited) = closing.await.unwrap();
        assert!(took.is_empty(), "{took:?}");
        assert_eq!(waited, Duration::from_secs(1) + ms(10));
    }

    fn beat() -> Event {
        Event::NodeUpdated {
            node_id: "spot-1".into(),
            status: drover_core::NodeStatus::Up,
        }
    }

    /// Waits up to `wait` from another task for `log` to hold more than `seen` items, as a
    /// journal read after `seen` would; hands back what it read and how long it waited.
    fn wait_for_entries(
        wake: &Wake,
        log: &Arc<AtomicUsize>,
        seen: usize,
        wait: Duration,
    ) -> tokio::task::JoinHandle<(Vec<usize>, Duration)> {
        let (wake, log) = (wake.clone(), log.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let found: Result<Vec<usize>, ()> = wake
                .until_written(wait, Duration::from_secs(1), || {
                    let n = log.load(Ordering::SeqCst);
                    async move { Ok((seen..n).collect()) }
                })
                .await;
            (found.unwrap_or_default(), start.elapsed())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_journaled_write_wakes_a_journal_reader_and_a_heartbeat_does_not() {
        let wake = Wake::new();
        let log = Arc::new(AtomicUsize::new(3));
        let reader = wait_for_entries(&wake, &log, 3, Duration::from_secs(30));
        tokio::time::sleep(ms(300)).await;
        wake.observe(&[beat()]);
        tokio::time::sleep(ms(300)).await;
        log.store(4, Ordering::SeqCst);
        // Not a change that frees work, but one the journal records.
        wake.observe(&[Event::JobCancelled {
            job_id: "job-1".into(),
        }]);
        let (found, waited) = reader.await.unwrap();
        assert_eq!(found, vec![3]);
        assert_eq!(waited, ms(600), "woken by the write, not by the recheck");
    }

    #[tokio::test(start_paused = true)]
    async fn a_journal_reader_rechecks_for_writes_it_heard_nothing_of_and_ends_at_its_deadline() {
        let wake = Wake::new();
        let log = Arc::new(AtomicUsize::new(0));
        let reader = wait_for_entries(&wake, &log, 0, Duration::from_secs(30));
        tokio::time::sleep(ms(2500)).await;
        // Another replica's write: no event here.
        log.store(1, Ordering::SeqCst);
        let (found, waited) = reader.await.unwrap();
        assert_eq!(found, vec![0]);
        assert_eq!(waited, Duration::from_secs(3), "found at the next recheck");

        let idle = wait_for_entries(&wake, &log, 1, ms(2500));
        let (found, waited) = idle.await.unwrap();
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(waited, ms(2500));

        let closing = wait_for_entries(&wake, &log, 1, Duration::from_secs(30));
        tokio::time::sleep(ms(10)).await;
        wake.close();
        let (found, waited) = closing.await.unwrap();
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(waited, ms(10));
    }

    #[test]
    fn the_stagger_grows_with_the_load_up_to_its_maximum() {
        assert_eq!(stagger_for(0.0), Duration::ZERO);
        assert_eq!(stagger_for(0.5), ms(25));
        assert_eq!(stagger_for(1.0), MAX_LOAD_STAGGER);
        for odd in [f64::NAN, -1.0, 7.0, f64::INFINITY] {
            assert!(stagger_for(odd) <= MAX_LOAD_STAGGER, "{odd}");
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn closing_ends_every_wait_at_once() {
        let wake = Wake::new();
        let waiter = {
            let wake = wake.clone();
            tokio::spawn(async move {
                let found: Result<Vec<u8>, ()> = wake
                    .until_found(Duration::from_secs(30), Duration::ZERO, || async {
                        Ok(vec![])
                    })
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
