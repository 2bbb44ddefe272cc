//! The dispatch outbox: jobs whose tasks go out through a message broker. A task is due for
//! publication while it is NEW and was never published, or was published for fewer attempts
//! than it has now; never while it runs or once it finished. Confirmations only ever raise
//! what a task was published for, and a job and its outbox rows are made together or not at
//! all.

use crate::*;
use drover_core::{NodeStats, TaskStatus};
use drover_store::{
    OutboxMessage, Publication, Published, QueuedMessage, Route, StoreError, TaskClaim,
};
use serde_json::json;

fn route(queue: &str, priority: u8) -> Route {
    Route {
        queue: queue.into(),
        priority,
    }
}

/// A job with an id of the caller's choosing.
fn named_job(id: &str) -> NewJob {
    NewJob {
        id: Some(id.into()),
        ..new_job(3, 60, 0)
    }
}

/// What is due now: each task and its attempts, in the order given.
async fn due(store: &Stores) -> Vec<(String, u32)> {
    store
        .dispatch
        .due_publications(100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.task.id, p.task.attempt))
        .collect()
}

/// The broker's confirmation of a publication read as `p`.
fn confirmed(p: &Publication) -> Published {
    Published {
        task_id: p.task.id.clone(),
        attempts: p.task.attempt,
    }
}

async fn mark(store: &Stores, task: &str, attempts: u32, now: Timestamp) {
    store
        .dispatch
        .mark_published(
            vec![Published {
                task_id: task.into(),
                attempts,
            }],
            now,
        )
        .await
        .unwrap();
}

async fn claim_named(store: &Stores, task: &str, node: &str, now: Timestamp) -> u32 {
    match store.jobs.claim_task(task, node, None, now).await.unwrap() {
        TaskClaim::Claimed(c) => c.attempt,
        other => panic!("{task} for {node}: {other:?}"),
    }
}

/// A dispatched task is due once, as it stands and with its route, until its publication is
/// confirmed; never while it runs; due again when it is back to NEW with more attempts (taken
/// back from a silent worker, or failed and retried); a late confirmation of an older
/// publication does not hide it; and once it finished it is never due again.
pub async fn a_dispatched_task_is_due_until_published_and_again_when_retried(store: &Stores) {
    let job = store
        .dispatch
        .create_dispatched_job(new_job(3, 60, 0), listed(1), route("jobs.high", 7), t0())
        .await
        .unwrap();
    assert_eq!((job.counts.total, job.counts.new), (1, 1));
    let task = drover_core::ids::sweep_task_id(&job.id, 0);
    let found = store.dispatch.due_publications(10).await.unwrap();
    assert_eq!(
        found,
        vec![Publication {
            task: store.jobs.get_task(&task).await.unwrap(),
            route: route("jobs.high", 7),
            job_created_at: t0(),
        }]
    );
    assert_eq!(found[0].task.payload["seed"], json!(0));
    // Reading changes nothing: a publisher that died before the confirmation finds it again.
    assert_eq!(store.dispatch.due_publications(10).await.unwrap(), found);
    store
        .dispatch
        .mark_published(vec![confirmed(&found[0])], t0())
        .await
        .unwrap();
    assert_eq!(due(store).await, []);

    // Claimed by the worker the broker gave it to: not due while it runs.
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    assert_eq!(claim_named(store, &task, &a, t0()).await, 1);
    assert_eq!(due(store).await, []);
    // Its worker goes silent: NEW again with one attempt made, so due again.
    store
        .nodes
        .heartbeat(&b, NodeStats::default(), t0() + secs(20))
        .await
        .unwrap();
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(10), t0() + secs(20))
        .await
        .unwrap();
    assert_eq!(down.nodes, [a.as_str()]);
    assert_eq!(due(store).await, [(task.clone(), 1)]);
    // A late confirmation of the first publication does not hide the second.
    mark(store, &task, 0, t0() + secs(21)).await;
    assert_eq!(due(store).await, [(task.clone(), 1)]);
    mark(store, &task, 1, t0() + secs(21)).await;
    assert_eq!(due(store).await, []);
    mark(store, &task, 0, t0() + secs(22)).await;
    assert_eq!(due(store).await, [], "a confirmation never lowers the mark");

    // Failed and retried: due again for its third attempt.
    assert_eq!(claim_named(store, &task, &b, t0() + secs(22)).await, 2);
    assert_eq!(due(store).await, []);
    assert_eq!(
        report_one(store, fail(&task, &b, true), t0() + secs(23)).await,
        ReportOutcome::Failed { will_retry: true }
    );
    assert_eq!(due(store).await, [(task.clone(), 2)]);
    mark(store, &task, 2, t0() + secs(24)).await;
    assert_eq!(claim_named(store, &task, &b, t0() + secs(24)).await, 3);
    assert_eq!(
        report_one(store, complete(&task, &b, 1.0), t0() + secs(25)).await,
        ReportOutcome::Completed
    );
    mark(store, &task, 0, t0() + secs(26)).await;
    assert_eq!(due(store).await, []);
    assert_eq!(store.dispatch.unpublished_counts().await.unwrap(), []);
    assert_counts_consistent(store).await;
}

/// Fresh publications come first, in the order their tasks were made, then the retried ones,
/// in the same order; the limit is kept. Tasks of plain jobs are never due.
pub async fn fresh_publications_come_first_in_creation_order(store: &Stores) {
    let plain = store
        .jobs
        .create_job(new_job(3, 60, 0), listed(2), t0())
        .await
        .unwrap();
    let first = store
        .dispatch
        .create_dispatched_job(new_job(3, 60, 0), listed(3), route("q", 1), t0())
        .await
        .unwrap();
    // A sweep of parameters is dispatched too, task by task.
    let second = store
        .dispatch
        .create_dispatched_job(new_job(3, 60, 9), sweep(2), route("q", 9), t0() + secs(1))
        .await
        .unwrap();
    let task = |job: &str, i: u64| drover_core::ids::sweep_task_id(job, i);
    let all: Vec<_> = [
        task(&first.id, 0),
        task(&first.id, 1),
        task(&first.id, 2),
        task(&second.id, 0),
        task(&second.id, 1),
    ]
    .into_iter()
    .map(|t| (t, 0))
    .collect();
    assert_eq!(due(store).await, all);
    let some = store.dispatch.due_publications(2).await.unwrap();
    assert_eq!(some.len(), 2);
    assert_eq!(some[0].task.id, all[0].0);
    let sweep_task = &store.dispatch.due_publications(100).await.unwrap()[3];
    assert_eq!(sweep_task.task.payload["x"], json!(1));
    assert_eq!(sweep_task.route, route("q", 9));
    assert_eq!(sweep_task.job_created_at, t0() + secs(1));

    // Publish them all; take two back from a worker that goes silent.
    let published: Vec<_> = store
        .dispatch
        .due_publications(100)
        .await
        .unwrap()
        .iter()
        .map(confirmed)
        .collect();
    store
        .dispatch
        .mark_published(published, t0() + secs(2))
        .await
        .unwrap();
    assert_eq!(due(store).await, []);
    let a = node(store, t0() + secs(2)).await;
    for t in [&all[3].0, &all[1].0] {
        claim_named(store, t, &a, t0() + secs(2)).await;
    }
    store
        .nodes
        .mark_silent_nodes_down(t0() + secs(20), t0() + secs(30))
        .await
        .unwrap();
    // And one more job, never published.
    let third = store
        .dispatch
        .create_dispatched_job(new_job(3, 60, 0), listed(1), route("q", 1), t0() + secs(30))
        .await
        .unwrap();
    assert_eq!(
        due(store).await,
        [
            (task(&third.id, 0), 0),
            (all[1].0.clone(), 1),
            (all[3].0.clone(), 1)
        ]
    );
    let two: Vec<_> = store
        .dispatch
        .due_publications(2)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.task.id)
        .collect();
    assert_eq!(two, [task(&third.id, 0), all[1].0.clone()]);
    // The plain job's tasks were never due; they are claimed as ever.
    let b = node(store, t0() + secs(30)).await;
    let pulled = store.jobs.claim(&b, 10, t0() + secs(30)).await.unwrap();
    assert!(pulled.iter().any(|t| t.id == task(&plain.id, 0)));
    assert_eq!(due(store).await, []);
    assert_counts_consistent(store).await;
}

/// Tasks that finished (completed, failed for good, cancelled with their job) are never due,
/// whether or not they were published, and a confirmation that arrives after the end changes
/// nothing.
pub async fn finished_tasks_are_never_due(store: &Stores) {
    let job = new_job(1, 60, 0);
    let done = store
        .dispatch
        .create_dispatched_job(job.clone(), listed(3), route("q", 0), t0())
        .await
        .unwrap();
    let cancelled = store
        .dispatch
        .create_dispatched_job(job, listed(2), route("r", 0), t0())
        .await
        .unwrap();
    let task = |job: &str, i: u64| drover_core::ids::sweep_task_id(job, i);
    assert_eq!(due(store).await.len(), 5);
    let a = node(store, t0()).await;
    // One published then completed, one failed for good without being published, one taken
    // by a plain claim and completed.
    mark(store, &task(&done.id, 0), 0, t0()).await;
    claim_named(store, &task(&done.id, 0), &a, t0()).await;
    claim_named(store, &task(&done.id, 1), &a, t0()).await;
    assert_eq!(
        report_one(store, complete(&task(&done.id, 0), &a, 1.0), t0()).await,
        ReportOutcome::Completed
    );
    assert_eq!(
        report_one(store, fail(&task(&done.id, 1), &a, true), t0()).await,
        ReportOutcome::Failed { will_retry: false }
    );
    let pulled = store.jobs.claim(&a, 1, t0()).await.unwrap();
    assert_eq!(pulled[0].id, task(&done.id, 2));
    assert_eq!(due(store).await.len(), 2, "{:?}", due(store).await);
    report_one(store, complete(&task(&done.id, 2), &a, 1.0), t0()).await;
    // A published task and a fresh one, cancelled with their job.
    mark(store, &task(&cancelled.id, 0), 0, t0()).await;
    store
        .jobs
        .cancel_job(&cancelled.id, t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(due(store).await, []);
    assert_eq!(store.dispatch.unpublished_counts().await.unwrap(), []);
    // Confirmations after the end (of every task) change nothing, and close the rows.
    let late: Vec<_> = (0..3)
        .map(|i| Published {
            task_id: task(&done.id, i),
            attempts: 1,
        })
        .chain([Published {
            task_id: task(&cancelled.id, 1),
            attempts: 0,
        }])
        .collect();
    store
        .dispatch
        .mark_published(late, t0() + secs(2))
        .await
        .unwrap();
    assert_eq!(due(store).await, []);
    for (job, status) in [
        (&done.id, drover_core::JobStatus::Failed),
        (&cancelled.id, drover_core::JobStatus::Cancelled),
    ] {
        assert_eq!(store.jobs.get_job(job).await.unwrap().status, status);
    }
    let statuses: Vec<_> = store
        .jobs
        .list_tasks(&done.id, None, Page::first(10))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.status)
        .collect();
    assert_eq!(
        statuses,
        [TaskStatus::Done, TaskStatus::Failed, TaskStatus::Done]
    );
    // A confirmation for a task that is not dispatched, or not there at all, is passed over.
    mark(store, "task-nope", 1, t0() + secs(3)).await;
    assert_counts_consistent(store).await;
}

/// A dispatched job is made with its outbox rows or not at all: a creation refused (its id
/// taken) leaves neither a job nor a row behind.
pub async fn creating_a_dispatched_job_is_atomic(store: &Stores) {
    let id = drover_core::ids::job_id();
    let made = store
        .dispatch
        .create_dispatched_job(named_job(&id), listed(2), route("q", 1), t0())
        .await
        .unwrap();
    assert_eq!(made.id, id);
    let refused = store
        .dispatch
        .create_dispatched_job(named_job(&id), listed(5), route("other", 2), t0())
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let plain = drover_core::ids::job_id();
    store
        .jobs
        .create_job(named_job(&plain), listed(1), t0())
        .await
        .unwrap();
    let refused = store
        .dispatch
        .create_dispatched_job(named_job(&plain), listed(3), route("other", 2), t0())
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(!matches!(refused, Err(StoreError::NotFound { .. })));
    let found = store.dispatch.due_publications(100).await.unwrap();
    let routes: Vec<_> = found
        .iter()
        .map(|p| (p.task.job_id.as_str(), p.route.queue.as_str()))
        .collect();
    assert_eq!(routes, [(id.as_str(), "q"), (id.as_str(), "q")]);
    assert_eq!(
        store.dispatch.unpublished_counts().await.unwrap(),
        [("q".to_string(), 2)]
    );
    assert_eq!(store.jobs.get_job(&id).await.unwrap().counts.total, 2);
    assert_eq!(store.jobs.get_job(&plain).await.unwrap().counts.total, 1);
    assert_counts_consistent(store).await;
}

/// The count of what is due, queue by queue: fresh and retried publications alike, nothing
/// published and not retried, and no queue with nothing due.
pub async fn unpublished_counts_count_what_is_due_by_queue(store: &Stores) {
    assert_eq!(store.dispatch.unpublished_counts().await.unwrap(), []);
    let high = store
        .dispatch
        .create_dispatched_job(new_job(3, 60, 0), listed(3), route("high", 9), t0())
        .await
        .unwrap();
    store
        .dispatch
        .create_dispatched_job(new_job(3, 60, 0), listed(2), route("low", 1), t0())
        .await
        .unwrap();
    assert_eq!(
        store.dispatch.unpublished_counts().await.unwrap(),
        [("high".to_string(), 3), ("low".to_string(), 2)]
    );
    let published: Vec<_> = store
        .dispatch
        .due_publications(100)
        .await
        .unwrap()
        .iter()
        .filter(|p| p.route.queue == "low")
        .map(confirmed)
        .collect();
    store
        .dispatch
        .mark_published(published, t0())
        .await
        .unwrap();
    assert_eq!(
        store.dispatch.unpublished_counts().await.unwrap(),
        [("high".to_string(), 3)]
    );
    let a = node(store, t0()).await;
    let first = drover_core::ids::sweep_task_id(&high.id, 0);
    claim_named(store, &first, &a, t0()).await;
    assert_eq!(
        store.dispatch.unpublished_counts().await.unwrap(),
        [("high".to_string(), 2)]
    );
    let left = store.dispatch.due_publications(100).await.unwrap();
    assert!(left.iter().all(|p| p.route.queue == "high"), "{left:?}");
    // One of the published low tasks, taken and failed with a retry, is due again.
    let b = node(store, t0()).await;
    let pulled = store.jobs.claim(&b, 10, t0()).await.unwrap();
    let low_task = pulled
        .iter()
        .find(|t| t.job_id != high.id)
        .unwrap()
        .id
        .clone();
    assert_eq!(
        report_one(store, fail(&low_task, &b, true), t0()).await,
        ReportOutcome::Failed { will_retry: true }
    );
    assert_eq!(
        store.dispatch.unpublished_counts().await.unwrap(),
        [("low".to_string(), 1)],
        "the high tasks were all claimed by the pull"
    );
    assert_counts_consistent(store).await;
}

/// A raised job's tasks go to the queue of their new route: due afresh while NEW (the copy on
/// the old queue stays), not while running, and once confirmed no more.
pub async fn a_raised_job_is_routed_again_and_due_afresh(store: &Stores) {
    let low = route("job.low", 1);
    let medium = route("job.medium", 5);
    let job = || async move {
        store
            .dispatch
            .create_dispatched_job(
                NewJob {
                    priority: 1,
                    ..new_job(3, 60, 0)
                },
                listed(1),
                route("job.low", 1),
                t0(),
            )
            .await
            .unwrap()
    };
    let waiting = job().await;
    let running = job().await;
    let found = store.dispatch.due_publications(10).await.unwrap();
    assert!(found.iter().all(|p| p.route == low));
    let confirmations = found.iter().map(confirmed).collect();
    store
        .dispatch
        .mark_published(confirmations, t0())
        .await
        .unwrap();
    assert_eq!(due(store).await, []);
    let a = node(store, t0()).await;
    let running_task = drover_core::ids::sweep_task_id(&running.id, 0);
    assert_eq!(claim_named(store, &running_task, &a, t0()).await, 1);

    let mut raised = store
        .jobs
        .raise_priority(
            vec![waiting.id.clone(), running.id.clone()],
            5,
            Some(medium.clone()),
            t0() + secs(1),
        )
        .await
        .unwrap();
    raised.sort();
    let mut both = vec![waiting.id.clone(), running.id.clone()];
    both.sort();
    assert_eq!(raised, both);
    let again = store.dispatch.due_publications(10).await.unwrap();
    let waiting_task = drover_core::ids::sweep_task_id(&waiting.id, 0);
    assert_eq!(
        again
            .iter()
            .map(|p| (p.task.id.clone(), p.route.clone()))
            .collect::<Vec<_>>(),
        [(waiting_task.clone(), medium.clone())],
        "only the NEW task is due, on its new route"
    );
    mark(store, &waiting_task, 0, t0() + secs(2)).await;
    assert_eq!(due(store).await, []);
    // The running one reaches its new queue if it is taken back.
    assert_eq!(
        report_one(store, fail(&running_task, &a, true), t0() + secs(3)).await,
        ReportOutcome::Failed { will_retry: true }
    );
    let retried = store.dispatch.due_publications(10).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].task.id.as_str(), &retried[0].route),
        (running_task.as_str(), &medium)
    );
    assert_counts_consistent(store).await;
}

/// Messages that are not tasks wait in the order recorded, from any number of calls, until
/// the broker confirms them; reading them changes nothing, and they count as unpublished under
/// their exchange.
pub async fn messages_wait_in_order_until_confirmed(store: &Stores) {
    let message = |n: u32| OutboxMessage {
        exchange: "status.exchange".into(),
        routing_key: "status.update".into(),
        body: format!("{{\"n\":{n}}}"),
    };
    let bodies = |queued: &[QueuedMessage]| -> Vec<String> {
        queued.iter().map(|q| q.message.body.clone()).collect()
    };
    store
        .dispatch
        .enqueue_messages(vec![message(1), message(2)], t0())
        .await
        .unwrap();
    store
        .dispatch
        .enqueue_messages(vec![message(3)], t0() + secs(1))
        .await
        .unwrap();
    let due = store.dispatch.due_messages(10).await.unwrap();
    assert_eq!(bodies(&due), [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    assert_eq!(due[0].message, message(1));
    assert_eq!(store.dispatch.due_messages(10).await.unwrap(), due);
    assert_eq!(
        bodies(&store.dispatch.due_messages(2).await.unwrap()).len(),
        2
    );
    assert_eq!(
        store.dispatch.unpublished_counts().await.unwrap(),
        [("status.exchange".to_string(), 3)]
    );
    store
        .dispatch
        .forget_messages(vec![due[0].seq, due[1].seq, -7])
        .await
        .unwrap();
    assert_eq!(
        bodies(&store.dispatch.due_messages(10).await.unwrap()),
        [r#"{"n":3}"#]
    );
    store
        .dispatch
        .forget_messages(vec![due[2].seq])
        .await
        .unwrap();
    assert!(store.dispatch.due_messages(10).await.unwrap().is_empty());
    assert!(
        store
            .dispatch
            .unpublished_counts()
            .await
            .unwrap()
            .is_empty()
    );
}

macro_rules! dispatch_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                a_dispatched_task_is_due_until_published_and_again_when_retried,
                fresh_publications_come_first_in_creation_order,
                finished_tasks_are_never_due,
                creating_a_dispatched_job_is_atomic,
                unpublished_counts_count_what_is_due_by_queue,
                a_raised_job_is_routed_again_and_due_afresh,
                messages_wait_in_order_until_confirmed,
            ];
            shared: []);
    };
}

dispatch_suite!(sqlite, crate::sqlite_fixture());
dispatch_suite!(sqlite_delayed, crate::delayed_fixture());
dispatch_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
