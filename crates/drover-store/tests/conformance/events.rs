//! Domain events: each acknowledged write yields exactly the events it caused, once, after it
//! commits; a refused or failed write yields none.

use crate::*;
use drover_core::node::Drain;
use drover_core::{Event, NodeStats, NodeStatus, TaskStatus};
use drover_store::{NewRunner, Reservation};
use std::sync::{Arc, Mutex};

/// Records each committed write's events, one entry per write.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Vec<Event>>>>);

impl Seen {
    fn on(store: &Stores) -> Seen {
        let seen = Seen::default();
        let sink = seen.clone();
        store.observe(move |events| sink.0.lock().unwrap().push(events.to_vec()));
        seen
    }

    /// The writes seen since the last call.
    fn take(&self) -> Vec<Vec<Event>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

pub async fn job_and_task_writes_yield_their_events(store: &Stores) {
    let seen = Seen::on(store);
    let job = store
        .jobs
        .create_job(new_job(2, 60, 0), sweep(3), t0())
        .await
        .unwrap();
    assert_eq!(
        seen.take(),
        vec![vec![Event::JobCreated {
            job_id: job.id.clone(),
            total_tasks: 3
        }]]
    );

    let a = node(store, t0()).await;
    assert_eq!(
        seen.take(),
        vec![vec![Event::NodeRegistered { node_id: a.clone() }]]
    );

    let claimed = store.jobs.claim(&a, 2, t0()).await.unwrap();
    let claims: Vec<Event> = claimed
        .iter()
        .map(|t| Event::TaskClaimed {
            task_id: t.id.clone(),
            job_id: job.id.clone(),
            node_id: a.clone(),
            attempt: 1,
        })
        .collect();
    assert_eq!(seen.take(), vec![claims]);

    // One report batch is one write: a completion and a retried failure.
    let outcomes = store
        .jobs
        .report(
            vec![
                complete(&claimed[0].id, &a, 1.0),
                fail(&claimed[1].id, &a, true),
            ],
            t0(),
        )
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.is_success()));
    assert_eq!(
        seen.take(),
        vec![vec![
            Event::TaskCompleted {
                task_id: claimed[0].id.clone(),
                job_id: job.id.clone(),
                node_id: a.clone(),
                attempt: 1
            },
            Event::TaskFailed {
                task_id: claimed[1].id.clone(),
                job_id: job.id.clone(),
                node_id: a.clone(),
                attempt: 1,
                will_retry: true
            },
        ]]
    );

    // Repeated and fenced-off reports change nothing and yield nothing.
    store
        .jobs
        .report(
            vec![
                complete(&claimed[0].id, &a, 1.0),
                complete(&claimed[1].id, "spot_other", 1.0),
            ],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(seen.take(), Vec::<Vec<Event>>::new());

    // A lease that runs out: the task goes back to NEW (attempt 1 of 2).
    let again = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    seen.take();
    let released = store
        .jobs
        .release_expired_tasks(t0() + secs(3600))
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(
        seen.take(),
        vec![vec![Event::TaskReleased {
            task_id: again.id.clone(),
            job_id: job.id.clone(),
            node_id: Some(a.clone()),
            attempt: again.attempt,
            to: released[0].to,
        }]]
    );
    // Nothing expired: no write worth telling.
    store
        .jobs
        .release_expired_tasks(t0() + secs(3600))
        .await
        .unwrap();
    assert_eq!(seen.take(), Vec::<Vec<Event>>::new());

    store.jobs.cancel_job(&job.id, t0()).await.unwrap();
    assert_eq!(
        seen.take(),
        vec![vec![Event::JobCancelled {
            job_id: job.id.clone()
        }]]
    );
    // Cancelling again changes nothing.
    store.jobs.cancel_job(&job.id, t0()).await.unwrap();
    assert_eq!(seen.take(), Vec::<Vec<Event>>::new());
    assert_counts_consistent(store).await;
}

pub async fn refused_writes_yield_no_events(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(1, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let t = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    report_one(store, complete(&t.id, &a, 1.0), t0()).await;
    let seen = Seen::on(store);

    // A finished job cannot be cancelled.
    assert!(store.jobs.cancel_job(&job.id, t0()).await.is_err());
    // Unknown things.
    assert!(store.jobs.cancel_job("job_missing", t0()).await.is_err());
    assert!(store.jobs.claim("spot_missing", 1, t0()).await.is_err());
    assert!(
        store
            .nodes
            .heartbeat("spot_missing", NodeStats::default(), t0())
            .await
            .is_err()
    );
    assert!(
        store
            .runners
            .runner_started("nobody", "i", "http://x", t0())
            .await
            .is_err()
    );
    assert_eq!(
        store.runners.touch_runner("nobody", t0()).await.unwrap(),
        None
    );
    assert_eq!(store.runners.remove_runner("nobody").await.unwrap(), None);
    // A DOWN node's claim is refused.
    store
        .nodes
        .mark_silent_nodes_down(t0() + secs(100), t0() + secs(100))
        .await
        .unwrap();
    seen.take();
    assert!(store.jobs.claim(&a, 1, t0() + secs(100)).await.is_err());
    // And so is its drain.
    assert!(store.nodes.drain_node(&a, Drain::Start).await.is_err());
    // Reading never yields anything.
    store.jobs.get_job(&job.id).await.unwrap();
    store.nodes.list_nodes().await.unwrap();
    store.ops.overview().await.unwrap();
    assert_eq!(seen.take(), Vec::<Vec<Event>>::new());
}

pub async fn node_writes_yield_their_events(store: &Stores) {
    let a = node(store, t0()).await;
    let job = store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(1), t0())
        .await
        .unwrap();
    let t = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    let seen = Seen::on(store);

    // Heartbeats of an UP node may be answered before they are written; each yields its
    // `NodeUpdated` when written, and not before.
    for at in [10, 11] {
        store
            .nodes
            .heartbeat(&a, NodeStats::default(), t0() + secs(at))
            .await
            .unwrap();
    }
    store.nodes.flush_heartbeats().await.unwrap();
    let updated = Event::NodeUpdated {
        node_id: a.clone(),
        status: NodeStatus::Up,
    };
    assert_eq!(seen.take().concat(), vec![updated.clone(), updated.clone()]);
    store.nodes.flush_heartbeats().await.unwrap();
    assert_eq!(seen.take().concat(), vec![]);

    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(100), t0() + secs(100))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec![a.clone()]);
    assert_eq!(
        seen.take(),
        vec![vec![
            Event::NodeDown { node_id: a.clone() },
            Event::TaskReleased {
                task_id: t.id.clone(),
                job_id: job.id.clone(),
                node_id: Some(a.clone()),
                attempt: 1,
                to: TaskStatus::New,
            },
        ]]
    );

    store
        .nodes
        .heartbeat(&a, NodeStats::default(), t0() + secs(200))
        .await
        .unwrap();
    assert_eq!(
        seen.take(),
        vec![vec![
            Event::NodeRevived { node_id: a.clone() },
            Event::NodeUpdated {
                node_id: a.clone(),
                status: NodeStatus::Up
            },
        ]]
    );

    store
        .nodes
        .mark_silent_nodes_down(t0() + secs(300), t0() + secs(300))
        .await
        .unwrap();
    seen.take();
    let forgotten = store
        .nodes
        .forget_down_nodes(t0() + secs(1000))
        .await
        .unwrap();
    assert_eq!(forgotten, vec![a.clone()]);
    assert_eq!(
        seen.take(),
        vec![vec![Event::NodeForgotten { node_id: a.clone() }]]
    );
    // Nothing left to forget.
    store
        .nodes
        .forget_down_nodes(t0() + secs(1000))
        .await
        .unwrap();
    assert_eq!(seen.take(), Vec::<Vec<Event>>::new());
}

pub async fn runner_writes_yield_their_events(store: &Stores) {
    let seen = Seen::on(store);
    let new = |s: &str| NewRunner {
        session_id: s.into(),
        driver: "process".into(),
        singleton: false,
        token_hash: None,
    };
    let r = store
        .runners
        .reserve_runner(new("s1"), Some(1), t0())
        .await
        .unwrap();
    assert!(matches!(r, Reservation::Reserved(_)));
    assert_eq!(
        seen.take(),
        vec![vec![Event::RunnerReserved {
            session_id: "s1".into(),
            singleton: false
        }]]
    );
    // An existing runner and a full registry write nothing.
    assert!(matches!(
        store
            .runners
            .reserve_runner(new("s1"), Some(1), t0())
            .await
            .unwrap(),
        Reservation::Exists(_)
    ));
    assert!(matches!(
        store
            .runners
            .reserve_runner(new("s2"), Some(1), t0())
            .await
            .unwrap(),
        Reservation::LimitReached { active: 1 }
    ));
    assert_eq!(seen.take(), Vec::<Vec<Event>>::new());

    store
        .runners
        .runner_started("s1", "inst", "http://127.0.0.1:1", t0())
        .await
        .unwrap();
    store
        .runners
        .touch_runner("s1", t0() + secs(5))
        .await
        .unwrap();
    store.runners.remove_runner("s1").await.unwrap();
    let session_id = || "s1".to_string();
    assert_eq!(
        seen.take(),
        vec![
            vec![Event::RunnerStarted {
                session_id: session_id()
            }],
            vec![Event::RunnerTouched {
                session_id: session_id()
            }],
            vec![Event::RunnerRemoved {
                session_id: session_id()
            }],
        ]
    );
}

/// A claim of a named task yields the event a claim does; a repeat, a refusal and the
/// outbox's own records yield none, and a dispatched job's creation yields the job's.
pub async fn claims_of_named_tasks_and_the_outbox_yield_their_events(store: &Stores) {
    let seen = Seen::on(store);
    let job = store
        .dispatch
        .create_dispatched_job(
            new_job(2, 60, 0),
            sweep(2),
            drover_store::Route {
                queue: "q".into(),
                priority: 0,
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        seen.take(),
        vec![vec![Event::JobCreated {
            job_id: job.id.clone(),
            total_tasks: 2
        }]]
    );
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    seen.take();
    let task = drover_core::ids::sweep_task_id(&job.id, 1);
    let claimed = store.jobs.claim_task(&task, &a, None, t0()).await.unwrap();
    assert!(
        matches!(claimed, drover_store::TaskClaim::Claimed(_)),
        "{claimed:?}"
    );
    assert_eq!(
        seen.take(),
        vec![vec![Event::TaskClaimed {
            task_id: task.clone(),
            job_id: job.id.clone(),
            node_id: a.clone(),
            attempt: 1,
        }]]
    );
    store.jobs.claim_task(&task, &a, None, t0()).await.unwrap();
    store.jobs.claim_task(&task, &b, None, t0()).await.unwrap();
    let other = drover_core::ids::sweep_task_id(&job.id, 0);
    store
        .jobs
        .claim_task(&other, &a, Some(1), t0())
        .await
        .unwrap();
    let published = store.dispatch.due_publications(10).await.unwrap();
    let done = published
        .iter()
        .map(|p| drover_store::Published {
            task_id: p.task.id.clone(),
            attempts: p.task.attempt,
        })
        .collect();
    store.dispatch.mark_published(done, t0()).await.unwrap();
    assert_eq!(seen.take(), Vec::<Vec<Event>>::new());
}

/// A drain and an undrain each yield their event once; asking for the status a node has
/// already yields none (a DOWN node's refused drain: `refused_writes_yield_no_events`).
pub async fn drains_yield_their_events_once(store: &Stores) {
    let a = node(store, t0()).await;
    let seen = Seen::on(store);
    store.nodes.drain_node(&a, Drain::Start).await.unwrap();
    store.nodes.drain_node(&a, Drain::Start).await.unwrap();
    assert_eq!(
        seen.take().concat(),
        vec![Event::NodeDraining { node_id: a.clone() }]
    );
    store.nodes.drain_node(&a, Drain::Stop).await.unwrap();
    store.nodes.drain_node(&a, Drain::Stop).await.unwrap();
    assert_eq!(
        seen.take().concat(),
        vec![Event::NodeUndrained { node_id: a.clone() }]
    );
}

macro_rules! events_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                job_and_task_writes_yield_their_events,
                refused_writes_yield_no_events,
                node_writes_yield_their_events,
                runner_writes_yield_their_events,
                claims_of_named_tasks_and_the_outbox_yield_their_events,
                drains_yield_their_events_once,
            ];
            shared: []);
    };
}

events_suite!(sqlite, crate::sqlite_fixture());
events_suite!(sqlite_delayed, crate::delayed_fixture());
events_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
