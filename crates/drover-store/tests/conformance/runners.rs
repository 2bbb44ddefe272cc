//! The runner registry: reservations under the limit, starts, heartbeats, removal.

use crate::*;
use drover_core::RunnerStatus;
use drover_store::{NewRunner, Reservation, StoreError};

fn runner(session: &str, singleton: bool) -> NewRunner {
    NewRunner {
        session_id: session.into(),
        driver: "docker".into(),
        singleton,
        token_hash: None,
    }
}

pub async fn runners_are_reserved_started_touched_and_removed(store: &Stores) {
    let Reservation::Reserved(r) = store
        .runners
        .reserve_runner(runner("s1", false), Some(10), t0())
        .await
        .unwrap()
    else {
        panic!("expected a reservation")
    };
    assert_eq!(r.status, RunnerStatus::Starting);
    assert_eq!((r.instance, r.endpoint), (None, None));
    assert!(matches!(
        store.runners.reserve_runner(runner("s1", false), Some(10), t0()).await.unwrap(),
        Reservation::Exists(e) if e.session_id == "s1"
    ));

    let started = store
        .runners
        .runner_started("s1", "c0ffee", "http://localhost:32768", t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(started.status, RunnerStatus::Running);
    assert_eq!(started.instance.as_deref(), Some("c0ffee"));
    assert_eq!(started.endpoint.as_deref(), Some("http://localhost:32768"));
    assert_eq!(
        store.runners.get_runner("s1").await.unwrap(),
        Some(started.clone())
    );
    assert!(matches!(
        store.runners.runner_started("nope", "x", "y", t0()).await,
        Err(StoreError::NotFound { .. })
    ));

    store
        .runners
        .reserve_runner(runner("s2", false), Some(10), t0() + secs(2))
        .await
        .unwrap();
    let touched = store
        .runners
        .touch_runner("s1", t0() + secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(touched.last_heartbeat, t0() + secs(30));
    assert_eq!(
        store.runners.touch_runner("nope", t0()).await.unwrap(),
        None
    );
    let idle: Vec<_> = store
        .runners
        .inactive_runners(t0() + secs(10))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.session_id)
        .collect();
    assert_eq!(idle, ["s2"]);
    assert_eq!(store.runners.list_runners().await.unwrap().len(), 2);

    assert_eq!(
        store
            .runners
            .remove_runner("s1")
            .await
            .unwrap()
            .map(|r| r.session_id),
        Some("s1".to_string())
    );
    assert_eq!(store.runners.remove_runner("s1").await.unwrap(), None);
    assert_eq!(store.runners.get_runner("s1").await.unwrap(), None);
}

pub async fn runners_respect_the_limit_and_the_one_singleton(store: &Stores) {
    for s in ["a", "b"] {
        assert!(matches!(
            store
                .runners
                .reserve_runner(runner(s, false), Some(2), t0())
                .await
                .unwrap(),
            Reservation::Reserved(_)
        ));
    }
    assert_eq!(
        store
            .runners
            .reserve_runner(runner("c", false), Some(2), t0())
            .await
            .unwrap(),
        Reservation::LimitReached { active: 2 }
    );
    assert_eq!(
        store.runners.get_runner("c").await.unwrap(),
        None,
        "nothing written"
    );
    assert!(matches!(
        store
            .runners
            .reserve_runner(runner("c", false), None, t0())
            .await
            .unwrap(),
        Reservation::Reserved(_)
    ));

    let Reservation::Reserved(one) = store
        .runners
        .reserve_runner(runner("shared-1", true), None, t0())
        .await
        .unwrap()
    else {
        panic!("expected the singleton's reservation")
    };
    assert!(one.singleton);
    assert!(matches!(
        store.runners.reserve_runner(runner("shared-2", true), None, t0()).await.unwrap(),
        Reservation::Exists(e) if e.session_id == "shared-1"
    ));
}

/// Concurrent provisions can never pass the limit together.
pub async fn concurrent_reservations_stop_at_the_limit(store: Stores) {
    let attempts = (0..12).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .runners
                .reserve_runner(runner(&format!("c{i}"), false), Some(3), t0())
                .await
                .unwrap()
        })
    });
    let mut reserved = 0;
    for a in attempts {
        if let Reservation::Reserved(_) = a.await.unwrap() {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 3);
    assert_eq!(store.runners.list_runners().await.unwrap().len(), 3);
}

/// The runner list comes in pages, oldest first, and a page boundary survives removals: a
/// runner removed or added between two pages neither repeats nor hides the others.
pub async fn runners_are_listed_in_pages_oldest_first(store: &Stores) {
    for (i, s) in ["r1", "r2", "r3", "r4", "r5"].into_iter().enumerate() {
        store
            .runners
            .reserve_runner(runner(s, false), None, t0() + secs(i as i64))
            .await
            .unwrap();
    }
    let sessions = |page: &drover_store::Paged<drover_core::Runner>| {
        page.items
            .iter()
            .map(|r| r.session_id.clone())
            .collect::<Vec<_>>()
    };
    let first = store
        .runners
        .list_runners_page(Page::first(2))
        .await
        .unwrap();
    assert_eq!(sessions(&first), ["r1", "r2"]);
    let cursor = first.next_cursor.expect("more runners follow");

    // The newest runner goes and a new one comes between the two pages.
    store.runners.remove_runner("r5").await.unwrap();
    store
        .runners
        .reserve_runner(runner("r6", false), None, t0() + secs(9))
        .await
        .unwrap();
    let rest = store
        .runners
        .list_runners_page(Page {
            cursor: Some(cursor),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(sessions(&rest), ["r3", "r4", "r6"]);
    assert_eq!(rest.next_cursor, None);
    let all = store.runners.list_runners().await.unwrap();
    assert_eq!(all.len(), 5);
}

macro_rules! runners_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                runners_are_reserved_started_touched_and_removed,
                runners_respect_the_limit_and_the_one_singleton,
                runners_are_listed_in_pages_oldest_first,
            ];
            shared: [concurrent_reservations_stop_at_the_limit]);
    };
}

runners_suite!(sqlite, crate::sqlite_fixture());
runners_suite!(sqlite_delayed, crate::delayed_fixture());
runners_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
