//! Operations: the instance id, the counts by status.

use crate::*;
use drover_core::{NodeStatus, RunnerStatus};
use drover_store::{NewRunner, StatusCounts};

pub async fn the_instance_id_is_made_once_and_kept(store: &Stores) {
    let id = store.ops.instance_id().await.unwrap();
    assert!(!id.is_empty());
    assert_eq!(store.ops.instance_id().await.unwrap(), id);
}

pub async fn status_counts_list_every_status_and_follow_the_writes(store: &Stores) {
    let zero = StatusCounts {
        nodes: NodeStatus::ALL.iter().map(|s| (*s, 0)).collect(),
        runners: RunnerStatus::ALL.iter().map(|s| (*s, 0)).collect(),
        tasks_waiting: 0,
        tasks_running: 0,
    };
    assert_eq!(store.ops.status_counts().await.unwrap(), zero);

    store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(5), t0())
        .await
        .unwrap();
    let up = node(store, t0()).await;
    let silent = node(store, t0()).await;
    store.jobs.claim(&up, 2, t0()).await.unwrap();
    // Only the node that stays silent past the cutoff goes DOWN.
    store
        .nodes
        .heartbeat(&up, Default::default(), t0() + secs(30))
        .await
        .unwrap();
    store.nodes.flush_heartbeats().await.unwrap();
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(10), t0() + secs(40))
        .await
        .unwrap();
    assert_eq!(down.nodes, vec![silent]);
    for (session, started) in [("s1", true), ("s2", false)] {
        let new = NewRunner {
            session_id: session.into(),
            driver: "process".into(),
            singleton: false,
            token_hash: None,
        };
        store.runners.reserve_runner(new, None, t0()).await.unwrap();
        if started {
            store
                .runners
                .runner_started(session, "pid-1", "http://127.0.0.1:1", t0())
                .await
                .unwrap();
        }
    }

    let counts = store.ops.status_counts().await.unwrap();
    assert_eq!(
        counts,
        StatusCounts {
            nodes: vec![
                (NodeStatus::Up, 1),
                (NodeStatus::Draining, 0),
                (NodeStatus::Down, 1)
            ],
            runners: vec![(RunnerStatus::Starting, 1), (RunnerStatus::Running, 1)],
            tasks_waiting: 3,
            tasks_running: 2,
        }
    );
}

macro_rules! ops_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                the_instance_id_is_made_once_and_kept,
                status_counts_list_every_status_and_follow_the_writes
            ];
            shared: []);
    };
}

ops_suite!(sqlite, crate::sqlite_fixture());
ops_suite!(sqlite_delayed, crate::delayed_fixture());
ops_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
