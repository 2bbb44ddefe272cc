//! The cluster's records: the lease for background work (taken, renewed, refused, expired,
//! released, contended), the members seen, and the recorded actions. SQLite-only at the end:
//! two stores on one file, each acting as a replica, never hold the lease together and never
//! record actions under overlapping epochs.

use crate::*;
use drover_core::cluster::Lease;
use drover_store::cluster::Action;

const TTL: Duration = Duration::from_secs(10);

async fn ask(store: &Stores, replica: &str, now: Timestamp) -> Lease {
    store
        .cluster
        .acquire_or_renew(replica, now, TTL)
        .await
        .unwrap()
}

pub async fn the_first_replica_to_ask_takes_the_lease_under_epoch_one(store: &Stores) {
    let before = store.cluster.view(t0()).await.unwrap();
    assert_eq!(before.lease.epoch, 0);
    assert_eq!(before.lease.leader_at(t0()), None);

    let lease = ask(store, "a", t0()).await;
    assert_eq!(
        lease,
        Lease {
            leader: "a".into(),
            epoch: 1,
            expires_at: t0() + secs(10),
        }
    );
    assert_eq!(store.cluster.view(t0()).await.unwrap().lease, lease);
}

pub async fn the_holder_renews_and_others_are_told_who_holds_it(store: &Stores) {
    ask(store, "a", t0()).await;
    let renewed = ask(store, "a", t0() + secs(3)).await;
    assert_eq!(
        (renewed.leader.as_str(), renewed.epoch),
        ("a", 1),
        "same epoch"
    );
    assert_eq!(renewed.expires_at, t0() + secs(13));

    let told = ask(store, "b", t0() + secs(12)).await;
    assert_eq!(told, renewed, "b changes nothing while a holds it");
}

pub async fn an_expired_lease_goes_to_the_next_asker_under_the_next_epoch(store: &Stores) {
    ask(store, "a", t0()).await;
    // At the expiry itself the lease is free.
    let taken = ask(store, "b", t0() + secs(10)).await;
    assert_eq!(
        taken,
        Lease {
            leader: "b".into(),
            epoch: 2,
            expires_at: t0() + secs(20),
        }
    );
    // The old holder, back, is told; it does not get its epoch back.
    assert_eq!(ask(store, "a", t0() + secs(11)).await, taken);
    // And when b's lapses, a takes it under epoch 3.
    assert_eq!(ask(store, "a", t0() + secs(20)).await.epoch, 3);
}

pub async fn a_holder_renews_a_lapsed_lease_nobody_took_under_its_epoch(store: &Stores) {
    ask(store, "a", t0()).await;
    let late = ask(store, "a", t0() + secs(30)).await;
    assert_eq!((late.leader.as_str(), late.epoch), ("a", 1));
    assert_eq!(late.expires_at, t0() + secs(40));
}

pub async fn a_released_lease_is_free_at_once_and_only_its_holder_releases_it(store: &Stores) {
    ask(store, "a", t0()).await;
    assert!(!store.cluster.release("b", t0() + secs(1)).await.unwrap());
    assert_eq!(
        store
            .cluster
            .view(t0())
            .await
            .unwrap()
            .lease
            .leader_at(t0() + secs(1)),
        Some("a")
    );
    assert!(store.cluster.release("a", t0() + secs(1)).await.unwrap());
    assert!(
        !store.cluster.release("a", t0() + secs(1)).await.unwrap(),
        "already released"
    );
    let taken = ask(store, "b", t0() + secs(1)).await;
    assert_eq!((taken.leader.as_str(), taken.epoch), ("b", 2));
}

pub async fn members_are_seen_since_they_first_spoke_and_forgotten_when_silent(store: &Stores) {
    let c = &store.cluster;
    c.heartbeat_member("a", "10.0.0.1:8080", t0())
        .await
        .unwrap();
    c.heartbeat_member("b", "10.0.0.2:8080", t0() + secs(1))
        .await
        .unwrap();
    c.heartbeat_member("a", "10.0.0.9:8080", t0() + secs(5))
        .await
        .unwrap();

    let all = c.view(t0()).await.unwrap().members;
    let seen: Vec<_> = all
        .iter()
        .map(|m| {
            (
                m.replica_id.as_str(),
                m.address.as_str(),
                m.first_seen,
                m.last_seen,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a", "10.0.0.9:8080", t0(), t0() + secs(5)),
            ("b", "10.0.0.2:8080", t0() + secs(1), t0() + secs(1)),
        ]
    );
    // Seen since a cutoff: b was last heard before it.
    let recent = c.view(t0() + secs(2)).await.unwrap().members;
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].replica_id, "a");

    assert_eq!(c.forget_members(t0() + secs(2)).await.unwrap(), 1);
    assert_eq!(c.view(t0()).await.unwrap().members.len(), 1);
}

pub async fn actions_are_kept_in_the_order_they_were_recorded(store: &Stores) {
    let action = |epoch, worker: &str, at| Action {
        epoch,
        replica_id: "a".into(),
        worker: worker.into(),
        at,
    };
    let sent = [
        action(1, "task-reaper", t0()),
        action(1, "spot-reaper", t0() + secs(1)),
        action(2, "task-reaper", t0() + secs(2)),
    ];
    for a in &sent {
        store.cluster.record_action(a.clone()).await.unwrap();
    }
    let recorded = store.cluster.actions().await.unwrap();
    let got: Vec<_> = recorded.iter().map(|r| r.action.clone()).collect();
    assert_eq!(got, sent);
    assert!(recorded.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// Twelve replicas ask for a free lease at the same instant: one holds it, and every one of
/// them is told the same holder and epoch.
pub async fn one_of_many_replicas_asking_at_once_gets_the_lease(store: Stores) {
    let asks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let me = format!("r{i}");
                let lease = store
                    .cluster
                    .acquire_or_renew(&me, t0(), TTL)
                    .await
                    .unwrap();
                (me, lease)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for ask in asks {
        answers.push(ask.await.unwrap());
    }
    let holders: Vec<_> = answers.iter().filter(|(me, l)| &l.leader == me).collect();
    assert_eq!(holders.len(), 1, "{answers:?}");
    let leader = &holders[0].1;
    assert_eq!(leader.epoch, 1);
    // Those who asked after the winner were told; those before it saw a free lease and lost
    // the race inside the store, never a lease of their own.
    for (_, lease) in &answers {
        assert_eq!(lease, leader);
    }
}

/// A background write of a leader's term commits while that term's lease stands, and is
/// refused, changing nothing, once another replica has taken the lease: the check runs inside
/// the write's own transaction, so a write sent before the takeover cannot land after it.
/// Writes outside a background step (requests) are not fenced.
pub async fn a_write_of_a_replaced_leaders_term_is_refused_and_changes_nothing(store: &Stores) {
    use drover_store::{Fence, StoreError, fenced};
    let term = |replica: &str, epoch| Fence {
        replica_id: replica.into(),
        epoch,
    };
    assert_eq!(ask(store, "a", t0()).await.epoch, 1);
    let job = fenced(
        term("a", 1),
        store.jobs.create_job(new_job(1, 60, 0), sweep(2), t0()),
    )
    .await
    .unwrap();

    let later = t0() + secs(11);
    assert_eq!(ask(store, "b", later).await.epoch, 2);
    let late = fenced(term("a", 1), store.jobs.cancel_job(&job.id, later)).await;
    assert!(
        matches!(late, Err(StoreError::Fenced { epoch: 1, ref replica_id }) if replica_id == "a"),
        "{late:?}"
    );
    let record = Action {
        epoch: 1,
        replica_id: "a".into(),
        worker: "task-reaper".into(),
        at: later,
    };
    let late_record = fenced(term("a", 1), store.cluster.record_action(record)).await;
    assert!(
        matches!(late_record, Err(StoreError::Fenced { .. })),
        "{late_record:?}"
    );
    // Nothing of the refused writes was made.
    let unchanged = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!(unchanged.status, drover_core::JobStatus::Pending);
    assert!(store.cluster.actions().await.unwrap().is_empty());
    // The same epoch with another holder is not the term either.
    let impostor = fenced(term("a", 2), store.jobs.cancel_job(&job.id, later)).await;
    assert!(
        matches!(impostor, Err(StoreError::Fenced { .. })),
        "{impostor:?}"
    );

    // The new term's writes, and requests, go through.
    let cancelled = fenced(term("b", 2), store.jobs.cancel_job(&job.id, later))
        .await
        .unwrap();
    assert!(cancelled.cancelled);
    store
        .jobs
        .create_job(new_job(1, 60, 0), sweep(1), later)
        .await
        .unwrap();
}

macro_rules! cluster_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                the_first_replica_to_ask_takes_the_lease_under_epoch_one,
                the_holder_renews_and_others_are_told_who_holds_it,
                an_expired_lease_goes_to_the_next_asker_under_the_next_epoch,
                a_holder_renews_a_lapsed_lease_nobody_took_under_its_epoch,
                a_released_lease_is_free_at_once_and_only_its_holder_releases_it,
                members_are_seen_since_they_first_spoke_and_forgotten_when_silent,
                a_write_of_a_replaced_leaders_term_is_refused_and_changes_nothing,
                actions_are_kept_in_the_order_they_were_recorded,
            ];
            shared: [one_of_many_replicas_asking_at_once_gets_the_lease]);
    };
}

cluster_suite!(sqlite, crate::sqlite_fixture());
cluster_suite!(sqlite_delayed, crate::delayed_fixture());
cluster_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);

/// Two servers on one SQLite file, each a replica that asks for the lease in every round (a
/// third of the TTL apart, both at once) and records an action whenever it may act. Every
/// twentieth round the leader stalls for longer than the TTL (a pause, a cut link), so the
/// lease changes hands many times. Time is one shared logical clock. No two answers ever gave
/// the lease to both for overlapping spans; the recorded actions, in the order they ran, never
/// go back in epoch; and each epoch's actions are one replica's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_servers_on_one_file_never_lead_together() {
    use drover_core::cluster::LeaseTiming;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    let ttl = Duration::from_millis(900);
    let timing = LeaseTiming::unchecked(ttl);
    let margin = Span::from_std(timing.safety_margin).unwrap();
    let round = Span::from_std(timing.renew_every).unwrap();
    let replicas = [("a", open_sqlite(&path)), ("b", open_sqlite(&path))];
    // Each replica's spans of holding: (from, until, epoch).
    let mut held: [Vec<(Timestamp, Timestamp, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut stalled_until = [0u32; 2];
    let mut leader = None;
    for n in 0..300u32 {
        let now = t0() + round * n as i32;
        if n % 20 == 19
            && let Some(l) = leader
        {
            // Longer than the TTL: its lease lapses meanwhile.
            stalled_until[l] = n + 5;
        }
        let asks: Vec<_> = replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| n >= stalled_until[*i])
            .map(|(i, (name, store))| {
                let (name, store) = (*name, store.clone());
                tokio::spawn(async move {
                    let lease = store
                        .cluster
                        .acquire_or_renew(name, now, ttl)
                        .await
                        .unwrap();
                    // Acts only before the safety margin, as the server does.
                    if lease.leader == name && now < lease.expires_at - margin {
                        store
                            .cluster
                            .record_action(Action {
                                epoch: lease.epoch,
                                replica_id: name.into(),
                                worker: "reaper".into(),
                                at: now,
                            })
                            .await
                            .unwrap();
                    }
                    (i, lease)
                })
            })
            .collect();
        for ask in asks {
            let (i, lease) = ask.await.unwrap();
            if lease.leader == replicas[i].0 {
                held[i].push((now, lease.expires_at, lease.epoch));
                leader = Some(i);
            }
        }
    }
    for (a_from, a_until, a_epoch) in &held[0] {
        for (b_from, b_until, b_epoch) in &held[1] {
            assert!(
                a_until <= b_from || b_until <= a_from,
                "a held [{a_from}, {a_until}) under epoch {a_epoch} and b [{b_from}, {b_until}) under epoch {b_epoch}"
            );
        }
    }

    let actions = replicas[0].1.cluster.actions().await.unwrap();
    // In the order they ran (a record may be written after a later one's: the writes race).
    let mut ran: Vec<_> = actions.iter().map(|r| &r.action).collect();
    ran.sort_by_key(|a| a.at);
    for w in ran.windows(2) {
        assert!(
            w[0].epoch <= w[1].epoch,
            "epoch went back: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let mut owner = std::collections::BTreeMap::new();
    for a in &ran {
        let first = owner.entry(a.epoch).or_insert(a.replica_id.clone());
        assert_eq!(
            first, &a.replica_id,
            "epoch {} acted by two replicas",
            a.epoch
        );
    }
    assert!(owner.len() > 10, "the lease changed hands: {owner:?}");
}
