//! Two `drover server` processes on one SQLite file, as two replicas: one leads, the other
//! follows and serves; after a `kill -9` of the leader the other takes over within the lease's
//! bound, under the next epoch, and the background actions recorded in the file never ran
//! under two leaders at once. `drover cluster` prints what `GET /api/v1/cluster` says.

use crate::helpers::{
    EVENT_DEADLINE, EXIT_DEADLINE, Launch, ServerProcess, drover_command, eventually, hello,
    run_to_exit,
};
use drover_client::Client;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(2);

fn replica(name: &str) -> Launch {
    Launch::new().args([
        "--replica-id",
        name,
        "--lease-ttl",
        "2s",
        "--spot-reaper-interval",
        "200ms",
        "--spot-timeout",
        "1s",
    ])
}

/// Waits until `spot` is DOWN as `client`'s server lists it.
async fn until_down(client: &Client, spot: &str) {
    eventually(&format!("{spot} DOWN"), EVENT_DEADLINE, || async {
        let spots = client.spots().await.ok()?;
        spots
            .iter()
            .any(|s| s.id == spot && s.status == "DOWN")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_the_same_sqlite_file_follows_and_takes_over_after_kill_9() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = ServerProcess::start(dir_a.path(), replica("a")).await;
    let mut b = ServerProcess::start(dir_b.path(), replica("b").db(a.db_path())).await;
    let (ca, cb) = (a.client(), b.client());

    let seen = eventually("both replicas listed", EVENT_DEADLINE, || async {
        let c = cb.cluster().await.ok()?;
        (c.members.len() == 2).then_some(c)
    })
    .await;
    assert_eq!(seen.replica_id, "b");
    assert_eq!(seen.role, "follower");
    assert_eq!((seen.leader.as_deref(), seen.epoch), (Some("a"), 1));
    let a_view = ca.cluster().await.unwrap();
    assert_eq!((a_view.role.as_str(), a_view.epoch), ("leader", 1));

    // `drover cluster` against the follower says the same.
    let mut cmd = drover_command(dir_b.path());
    cmd.args(["cluster", "--server", &b.base_url()]);
    let printed = tokio::task::spawn_blocking({
        let dir = dir_b.path().to_path_buf();
        move || run_to_exit(cmd, &dir, "cluster", EXIT_DEADLINE)
    })
    .await
    .unwrap();
    assert!(printed.status.success(), "{printed}");
    for line in [
        "Role           follower",
        "Leader         a",
        "Epoch          1",
    ] {
        assert!(printed.stdout.contains(line), "no {line:?} in {printed}");
    }

    // The leader's spot reaper acts; b serves the spot's hello but reaps nothing.
    let first = hello(&cb).await;
    until_down(&cb, &first).await;

    let killed = Instant::now();
    a.kill9();
    let taken = eventually("b leads", EVENT_DEADLINE, || async {
        let c = cb.cluster().await.ok()?;
        (c.role == "leader").then_some(c)
    })
    .await;
    let took = killed.elapsed();
    assert_eq!((taken.leader.as_deref(), taken.epoch), (Some("b"), 2));
    // The lease a renewed last ran at most a TTL past the kill; b asks every third of a TTL.
    assert!(
        // Two seconds more for a loaded machine: polling, process scheduling.
        took < TTL + TTL / 3 + Duration::from_secs(2),
        "took {took:?}"
    );

    let second = hello(&cb).await;
    until_down(&cb, &second).await;
    b.terminate();

    let store = drover_store::open(&a.db_path().display().to_string()).unwrap();
    let mut ran: Vec<_> = store
        .cluster
        .actions()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    ran.sort_by_key(|a| a.at);
    assert!(
        ran.iter().any(|a| a.epoch == 1 && a.replica_id == "a"),
        "{ran:?}"
    );
    assert!(
        ran.iter().any(|a| a.epoch == 2 && a.replica_id == "b"),
        "{ran:?}"
    );
    assert!(ran.windows(2).all(|w| w[0].epoch <= w[1].epoch), "{ran:?}");
    assert!(
        ran.iter().all(|a| (a.epoch == 1) == (a.replica_id == "a")),
        "{ran:?}"
    );
}
