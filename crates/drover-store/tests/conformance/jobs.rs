//! Jobs and the task lifecycle: creation, claims (of the best tasks, and of one named task),
//! reports, releases, cancels.

use crate::*;
use drover_core::run::RunSpec;
use drover_core::{ClaimedTask, JobStatus, TaskStatus};
use drover_store::{StoreError, TaskClaim};
use serde_json::json;
use std::collections::HashSet;

pub async fn create_job_expands_every_task(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(6), t0())
        .await
        .unwrap();
    assert_eq!(job.counts.total, 6);
    assert_eq!(job.counts.new, 6);
    assert_eq!(job.status, JobStatus::Pending);
    assert_eq!(job.parameter_names, vec!["x".to_string()]);

    let first = store
        .jobs
        .list_tasks(&job.id, None, Page::first(4))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 4);
    let second = store
        .jobs
        .list_tasks(
            &job.id,
            None,
            Page {
                cursor: first.next_cursor,
                limit: 4,
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items.len(), 2);
    assert_eq!(second.next_cursor, None);
    let xs: Vec<_> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|t| t.payload["x"].clone())
        .collect();
    assert_eq!(xs, (1..=6).map(|i| json!(i)).collect::<Vec<_>>());

    assert!(matches!(
        store.jobs.get_job("job-nope").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .jobs
            .list_tasks("job-nope", None, Page::first(10))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert_counts_consistent(store).await;
}

pub async fn a_job_keeps_its_run_spec(store: &Stores) {
    let run = RunSpec {
        command: vec!["opt".into(), "--x={x}".into()],
        env: [("SEED".to_string(), "{taskId}".to_string())].into(),
        retry_on_failure: false,
    };
    let job = NewJob {
        id: None,
        run: Some(run.clone()),
        ..new_job(1, 60, 0)
    };
    let created = store.jobs.create_job(job, sweep(1), t0()).await.unwrap();
    assert_eq!(created.run.as_ref(), Some(&run));
    assert_eq!(
        store.jobs.get_job(&created.id).await.unwrap().run,
        Some(run)
    );
    let plain = store
        .jobs
        .create_job(new_job(1, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    assert_eq!(store.jobs.get_job(&plain.id).await.unwrap().run, None);
}

pub async fn claims_take_highest_priority_then_oldest(store: &Stores) {
    let low = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(2), t0())
        .await
        .unwrap();
    let high = store
        .jobs
        .create_job(new_job(3, 60, 5), sweep(2), t0())
        .await
        .unwrap();
    let n = node(store, t0()).await;
    let claimed = store.jobs.claim(&n, 3, t0()).await.unwrap();
    let jobs: Vec<_> = claimed.iter().map(|c| c.job_id.as_str()).collect();
    assert_eq!(
        jobs,
        vec![high.id.as_str(), high.id.as_str(), low.id.as_str()]
    );
    assert!(claimed.iter().all(|c| c.attempt == 1));
    assert_eq!(claimed[0].lease_expires_at, t0() + secs(60));
    let payload: serde_json::Value = serde_json::from_str(&claimed[0].payload).unwrap();
    assert_eq!(payload, json!({"x": 1}));

    let task = store.jobs.get_task(&claimed[0].id).await.unwrap();
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.assigned_to.as_deref(), Some(n.as_str()));
    assert_eq!(
        store.jobs.get_job(&high.id).await.unwrap().status,
        JobStatus::Running
    );
    assert_eq!(store.jobs.claim(&n, 10, t0()).await.unwrap().len(), 1);
    assert!(store.jobs.claim(&n, 10, t0()).await.unwrap().is_empty());
    assert_counts_consistent(store).await;
}

pub async fn complete_is_idempotent_and_fenced(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    let task = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);

    assert_eq!(
        report_one(store, complete(&task.id, &b, 9.0), t0()).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(store, complete(&task.id, &a, 1.5), t0()).await,
        ReportOutcome::Completed
    );
    assert_eq!(
        report_one(store, complete(&task.id, &a, 7.0), t0()).await,
        ReportOutcome::AlreadyCompleted
    );
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::AlreadyTerminal
    );
    assert_eq!(
        report_one(store, complete(&task.id, &b, 9.0), t0()).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(store, complete("task-nope", &a, 1.0), t0()).await,
        ReportOutcome::TaskNotFound
    );

    let stored = store.jobs.get_task(&task.id).await.unwrap();
    assert_eq!(stored.status, TaskStatus::Done);
    assert_eq!(
        stored.result.fopt,
        Some(1.5),
        "a repeated report must not overwrite the result"
    );
    assert_eq!(stored.result.output.as_deref(), Some("fopt = 1.5\n"));
    let job = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed);
    assert!(job.finished_at.is_some());
    assert_counts_consistent(store).await;
}

pub async fn failures_retry_until_attempts_are_spent(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(2, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let task = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::Failed { will_retry: true }
    );
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::AlreadyReported { will_retry: true }
    );
    assert_eq!(
        store.jobs.get_task(&task.id).await.unwrap().status,
        TaskStatus::New
    );
    let waiting = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!(
        waiting.status,
        JobStatus::Running,
        "a job waiting for a retry has started"
    );
    assert_eq!(waiting.started_at, Some(t0()));

    let again = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    assert_eq!(again.id, task.id);
    assert_eq!(again.attempt, 2);
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::Failed { will_retry: false }
    );
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0()).await,
        ReportOutcome::AlreadyTerminal
    );
    let stored = store.jobs.get_task(&task.id).await.unwrap();
    assert_eq!(stored.status, TaskStatus::Failed);
    assert_eq!(stored.last_error.as_deref(), Some("boom"));
    assert_eq!(
        store.jobs.get_job(&job.id).await.unwrap().status,
        JobStatus::Failed
    );
    assert_counts_consistent(store).await;
}

pub async fn a_permanent_failure_is_not_retried(store: &Stores) {
    store
        .jobs
        .create_job(new_job(5, 60, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let task = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    assert_eq!(
        report_one(store, fail(&task.id, &a, false), t0()).await,
        ReportOutcome::Failed { will_retry: false }
    );
    assert_eq!(
        store.jobs.get_task(&task.id).await.unwrap().status,
        TaskStatus::Failed
    );
    assert_counts_consistent(store).await;
}

pub async fn a_late_report_after_reaping_is_fenced_off(store: &Stores) {
    store
        .jobs
        .create_job(new_job(3, 10, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    let task = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);

    assert!(
        store
            .jobs
            .release_expired_tasks(t0() + secs(5))
            .await
            .unwrap()
            .is_empty()
    );
    let released = store
        .jobs
        .release_expired_tasks(t0() + secs(11))
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].to, TaskStatus::New);
    assert_eq!(released[0].node_id.as_deref(), Some(a.as_str()));

    let retaken = store
        .jobs
        .claim(&b, 1, t0() + secs(12))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (retaken.id.as_str(), retaken.attempt),
        (task.id.as_str(), 2)
    );
    assert_eq!(
        report_one(store, complete(&task.id, &a, 111.0), t0() + secs(13)).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(store, fail(&task.id, &a, true), t0() + secs(13)).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(store, complete(&task.id, &b, 2.0), t0() + secs(14)).await,
        ReportOutcome::Completed
    );
    assert_eq!(
        report_one(store, complete(&task.id, &a, 111.0), t0() + secs(15)).await,
        ReportOutcome::NotHolder
    );

    let stored = store.jobs.get_task(&task.id).await.unwrap();
    assert_eq!(stored.assigned_to.as_deref(), Some(b.as_str()));
    assert_eq!(stored.result.fopt, Some(2.0));
    assert_counts_consistent(store).await;
}

pub async fn a_stale_attempt_of_the_same_node_is_fenced_off(store: &Stores) {
    store
        .jobs
        .create_job(new_job(3, 10, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let first = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    store
        .jobs
        .release_expired_tasks(t0() + secs(11))
        .await
        .unwrap();
    let second = store
        .jobs
        .claim(&a, 1, t0() + secs(12))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.attempt, 2);
    let stale = Report {
        attempt: Some(first.attempt),
        ..complete(&first.id, &a, 5.0)
    };
    assert_eq!(
        report_one(store, stale, t0() + secs(13)).await,
        ReportOutcome::NotHolder
    );
    let current = Report {
        attempt: Some(2),
        ..complete(&first.id, &a, 6.0)
    };
    assert_eq!(
        report_one(store, current, t0() + secs(13)).await,
        ReportOutcome::Completed
    );
    assert_counts_consistent(store).await;
}

pub async fn expired_tasks_fail_after_their_last_attempt(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(2, 10, 0), sweep(1), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    store.jobs.claim(&a, 1, t0()).await.unwrap();
    assert_eq!(
        store
            .jobs
            .release_expired_tasks(t0() + secs(11))
            .await
            .unwrap()[0]
            .to,
        TaskStatus::New
    );
    store.jobs.claim(&a, 1, t0() + secs(20)).await.unwrap();
    let released = store
        .jobs
        .release_expired_tasks(t0() + secs(31))
        .await
        .unwrap();
    assert_eq!(released[0].to, TaskStatus::Failed);
    assert_eq!(released[0].attempt, 2);
    let job = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let task = store
        .jobs
        .list_tasks(&job.id, None, Page::first(1))
        .await
        .unwrap()
        .items
        .remove(0);
    assert!(task.last_error.unwrap().contains("lease expired"));
    assert_counts_consistent(store).await;
}

pub async fn cancel_stops_new_and_running_tasks(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let running = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    let done = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    assert_eq!(
        report_one(store, complete(&done.id, &a, 1.0), t0()).await,
        ReportOutcome::Completed
    );

    let cancelled = store
        .jobs
        .cancel_job(&job.id, t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!((cancelled.counts.cancelled, cancelled.counts.done), (2, 1));
    assert_eq!(
        report_one(store, complete(&running.id, &a, 3.0), t0() + secs(2)).await,
        ReportOutcome::Cancelled
    );
    assert!(
        store
            .jobs
            .claim(&a, 10, t0() + secs(2))
            .await
            .unwrap()
            .is_empty()
    );
    // Cancelling again is harmless.
    assert_eq!(
        store
            .jobs
            .cancel_job(&job.id, t0() + secs(3))
            .await
            .unwrap()
            .status,
        JobStatus::Cancelled
    );

    let finished = store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(1), t0())
        .await
        .unwrap();
    let t = store.jobs.claim(&a, 1, t0()).await.unwrap().remove(0);
    report_one(store, complete(&t.id, &a, 1.0), t0()).await;
    assert!(matches!(
        store.jobs.cancel_job(&finished.id, t0()).await,
        Err(StoreError::JobFinished {
            status: JobStatus::Completed,
            ..
        })
    ));
    assert!(matches!(
        store.jobs.cancel_job("job-nope", t0()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_counts_consistent(store).await;
}

pub async fn a_batch_of_reports_is_decided_report_by_report(store: &Stores) {
    store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let tasks = store.jobs.claim(&a, 3, t0()).await.unwrap();
    let outcomes = store
        .jobs
        .report(
            vec![
                complete(&tasks[0].id, &a, 1.0),
                complete("task-nope", &a, 1.0),
                fail(&tasks[1].id, &a, true),
                complete(&tasks[0].id, &a, 1.0),
            ],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            ReportOutcome::Completed,
            ReportOutcome::TaskNotFound,
            ReportOutcome::Failed { will_retry: true },
            ReportOutcome::AlreadyCompleted
        ]
    );
    assert_counts_consistent(store).await;
}

pub async fn concurrent_claims_never_share_a_task(store: Stores) {
    store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(200), t0())
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let n = node(&store, t0()).await;
            let mut mine = Vec::new();
            loop {
                let got = store.jobs.claim(&n, 7, t0()).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for h in handles {
        for id in h.await.unwrap() {
            assert!(seen.insert(id.clone()), "task {id} was handed out twice");
        }
    }
    assert_eq!(seen.len(), 200);
    assert_counts_consistent(&store).await;
}

/// The ids of a job's tasks, from its listing.
async fn task_ids(store: &Stores, job: &str, status: Option<TaskStatus>) -> Vec<String> {
    store
        .jobs
        .list_tasks(job, status, Page::first(1000))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.id)
        .collect()
}

pub async fn a_task_of_a_sweep_has_an_id_from_its_job_and_index(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(3), t0())
        .await
        .unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| drover_core::ids::sweep_task_id(&job.id, i))
        .collect();
    assert_eq!(task_ids(store, &job.id, None).await, ids);
    let a = node(store, t0()).await;
    let claimed = store.jobs.claim(&a, 3, t0()).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        ids,
        "a task keeps its id when it is claimed"
    );
    assert_eq!(
        drover_core::ids::parse_sweep_task_id(&claimed[2].id),
        Some((job.id.clone(), 2))
    );
    assert_counts_consistent(store).await;
}

pub async fn tasks_never_claimed_read_as_new_with_their_payload(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(5), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let claimed = store.jobs.claim(&a, 2, t0() + secs(1)).await.unwrap();
    report_one(store, complete(&claimed[0].id, &a, 1.0), t0() + secs(2)).await;

    let unclaimed = store
        .jobs
        .get_task(&drover_core::ids::sweep_task_id(&job.id, 3))
        .await
        .unwrap();
    assert_eq!(unclaimed.status, TaskStatus::New);
    assert_eq!(unclaimed.payload["x"], json!(4));
    assert_eq!((unclaimed.attempt, unclaimed.max_attempts), (0, 3));
    assert_eq!(unclaimed.assigned_to, None);
    assert_eq!(unclaimed.job_id, job.id);
    assert_eq!(unclaimed.created_at, t0());
    for missing in [
        drover_core::ids::sweep_task_id(&job.id, 5),
        drover_core::ids::sweep_task_id("job-0193aaaabbbbccccddddeeeeffff0000", 0),
        "task-nope".to_string(),
    ] {
        assert!(
            matches!(
                store.jobs.get_task(&missing).await,
                Err(StoreError::NotFound { .. })
            ),
            "{missing}"
        );
    }

    // Pages run across the tasks that have rows and those that do not, in index order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .jobs
            .list_tasks(&job.id, None, Page { cursor, limit: 2 })
            .await
            .unwrap();
        seen.extend(
            page.items
                .iter()
                .map(|t| (t.payload["x"].clone(), t.status)),
        );
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    use TaskStatus::*;
    assert_eq!(
        seen,
        [(1, Done), (2, Running), (3, New), (4, New), (5, New)]
            .map(|(x, s)| (json!(x), s))
            .to_vec()
    );
    let new = store
        .jobs
        .list_tasks(&job.id, Some(New), Page::first(2))
        .await
        .unwrap();
    assert_eq!(new.items.iter().map(|t| t.seq).collect::<Vec<_>>(), [2, 3]);
    let rest = store
        .jobs
        .list_tasks(
            &job.id,
            Some(New),
            Page {
                cursor: new.next_cursor,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|t| t.seq).collect::<Vec<_>>(), [4]);
    assert_eq!(rest.next_cursor, None);
    assert_eq!(
        task_ids(store, &job.id, Some(Done)).await,
        [claimed[0].id.clone()]
    );
    assert!(task_ids(store, &job.id, Some(Cancelled)).await.is_empty());

    // Nobody holds a task that was never claimed, so a report about it is refused.
    let never = drover_core::ids::sweep_task_id(&job.id, 4);
    assert_eq!(
        report_one(store, complete(&never, &a, 1.0), t0()).await,
        ReportOutcome::NotHolder
    );
    assert_eq!(
        report_one(
            store,
            complete(&drover_core::ids::sweep_task_id(&job.id, 9), &a, 1.0),
            t0()
        )
        .await,
        ReportOutcome::TaskNotFound
    );
    assert_eq!(store.jobs.get_task(&never).await.unwrap().status, New);
    assert_counts_consistent(store).await;
}

/// Waiting jobs of one origin and priority are read oldest first, from stored NEW tasks (a
/// retry) and from tasks never claimed alike, and never another origin's; raising some puts
/// them, and the tasks they make later, in claim order among the jobs of their new priority by
/// age, and passes over the rest.
pub async fn waiting_jobs_are_read_oldest_first_and_raised_into_claim_order(store: &Stores) {
    let a = node(store, t0()).await;
    let job = |priority| async move {
        let ours = NewJob {
            origin: Some("ours".into()),
            ..new_job(3, 60, priority)
        };
        store.jobs.create_job(ours, sweep(1), t0()).await.unwrap()
    };
    // A low job tried once and back to NEW: its task is stored.
    let retried = job(1).await;
    // Drover's own low job, as old: never read as the origin's.
    let native = store
        .jobs
        .create_job(new_job(3, 60, 1), sweep(1), t0())
        .await
        .unwrap();
    let claimed = store.jobs.claim(&a, 1, t0()).await.unwrap();
    assert_eq!(claimed[0].job_id, retried.id);
    assert_eq!(
        report_one(store, fail(&claimed[0].id, &a, true), t0()).await,
        ReportOutcome::Failed { will_retry: true }
    );
    let low = job(1).await;
    let medium = job(5).await;
    let later = job(1).await;
    let done = job(1).await;
    store.jobs.cancel_job(&done.id, t0()).await.unwrap();

    let waiting = |priority, after, limit| async move {
        let jobs = store
            .jobs
            .waiting_jobs("ours", priority, after, limit)
            .await
            .unwrap();
        jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
    };
    assert!(
        (store
            .jobs
            .waiting_jobs("theirs", 1, None, 10)
            .await
            .unwrap())
        .is_empty(),
        "another origin has none"
    );
    assert_eq!(
        waiting(1, None, 10).await,
        [retried.id.clone(), low.id.clone(), later.id.clone()]
    );
    assert_eq!(
        waiting(1, Some(retried.seq), 1).await,
        std::slice::from_ref(&low.id)
    );
    assert_eq!(waiting(1, Some(later.seq), 10).await, Vec::<String>::new());
    assert_eq!(waiting(5, None, 10).await, std::slice::from_ref(&medium.id));

    let mut raised = store
        .jobs
        .raise_priority(
            vec![
                later.id.clone(),
                retried.id.clone(),
                medium.id.clone(),
                done.id.clone(),
                "no-such-job".into(),
            ],
            5,
            None,
            t0() + secs(1),
        )
        .await
        .unwrap();
    raised.sort();
    let mut expected = vec![later.id.clone(), retried.id.clone()];
    expected.sort();
    assert_eq!(
        raised, expected,
        "a job at the priority, finished or unknown is passed over"
    );
    assert_eq!(store.jobs.get_job(&later.id).await.unwrap().priority, 5);
    assert_eq!(store.jobs.get_job(&done.id).await.unwrap().priority, 1);
    assert_eq!(waiting(1, None, 10).await, std::slice::from_ref(&low.id));
    assert_eq!(
        waiting(5, None, 10).await,
        [retried.id.clone(), medium.id.clone(), later.id.clone()]
    );
    // Raising again changes nothing.
    let again = store
        .jobs
        .raise_priority(vec![later.id.clone()], 5, None, t0() + secs(2))
        .await
        .unwrap();
    assert!(again.is_empty());

    // Claims take the raised jobs among the medium ones by age, then the low one.
    let order: Vec<_> = store
        .jobs
        .claim(&a, 10, t0() + secs(3))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.job_id)
        .collect();
    assert_eq!(
        order,
        [
            retried.id.clone(),
            medium.id.clone(),
            later.id.clone(),
            native.id.clone(),
            low.id.clone()
        ]
    );
    assert_counts_consistent(store).await;
}

/// Tasks read together are the tasks read one by one, stored or never claimed, in the order
/// asked, unknown ids passed over.
pub async fn tasks_read_together_are_the_tasks_read_alone(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    assert_eq!(store.jobs.claim(&a, 1, t0()).await.unwrap().len(), 1);
    let id = |i| drover_core::ids::sweep_task_id(&job.id, i);
    let asked = vec![id(2), "task-nowhere-0".to_string(), id(0), id(1)];
    let together = store.jobs.get_tasks(asked).await.unwrap();
    let mut alone = Vec::new();
    for i in [2, 0, 1] {
        alone.push(store.jobs.get_task(&id(i)).await.unwrap());
    }
    assert_eq!(together, alone);
    assert!(store.jobs.get_tasks(Vec::new()).await.unwrap().is_empty());
}

/// What a creation answers is the job as it reads back: same spec, counts, times (at the
/// store's precision) and timeout; for a sweep, a listed job and a dispatched one alike.
pub async fn a_created_job_is_answered_as_it_reads_back(store: &Stores) {
    let odd = t0() + chrono::Duration::nanoseconds(123_456_789);
    let listed = listed(2);
    let timed = NewJob {
        task_timeout: Duration::from_micros(61_500_250),
        ..new_job(2, 60, 7)
    };
    let made = [
        store
            .jobs
            .create_job(new_job(3, 60, 0), sweep(6), odd)
            .await
            .unwrap(),
        store
            .jobs
            .create_job(timed, listed.clone(), odd)
            .await
            .unwrap(),
        store
            .dispatch
            .create_dispatched_job(
                new_job(3, 60, 5),
                listed,
                drover_store::Route {
                    queue: "q".into(),
                    priority: 5,
                },
                odd,
            )
            .await
            .unwrap(),
    ];
    for job in made {
        assert_eq!(store.jobs.get_job(&job.id).await.unwrap(), job);
    }
}

/// A contract's jobs are listed newest first and counted by priority and status without
/// drover's own; finished ones are counted from the time asked.
pub async fn an_origins_jobs_are_listed_and_counted_apart(store: &Stores) {
    let ours = |priority| NewJob {
        origin: Some("ours".into()),
        ..new_job(1, 60, priority)
    };
    let first = store
        .jobs
        .create_job(ours(10), listed(1), t0())
        .await
        .unwrap();
    store
        .jobs
        .create_job(new_job(1, 60, 10), listed(1), t0())
        .await
        .unwrap();
    let second = store
        .jobs
        .create_job(ours(1), listed(2), t0())
        .await
        .unwrap();
    assert_eq!(first.origin.as_deref(), Some("ours"));
    let page = store
        .jobs
        .list_jobs_of("ours", Page::first(1))
        .await
        .unwrap();
    assert_eq!(
        page.items.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&second.id]
    );
    let rest = store
        .jobs
        .list_jobs_of(
            "ours",
            Page {
                cursor: page.next_cursor,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&first.id]
    );
    assert_eq!(rest.next_cursor, None);

    let a = node(store, t0()).await;
    // The high ones first: ours, then drover's own; then one of our low job's two tasks.
    let claimed = store.jobs.claim(&a, 3, t0()).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let done = claimed.iter().find(|c| c.job_id == first.id).unwrap();
    report_one(store, complete(&done.id, &a, 1.0), t0() + secs(30)).await;
    let low = claimed.iter().find(|c| c.job_id == second.id).unwrap();
    report_one(store, fail(&low.id, &a, false), t0() + secs(90)).await;

    let mut counts = store
        .jobs
        .origin_counts("ours", t0() + secs(60))
        .await
        .unwrap();
    counts.tasks.sort_by_key(|(p, s, _)| (*p, s.as_str()));
    assert_eq!(
        counts.tasks,
        [
            (1, TaskStatus::Failed, 1),
            (1, TaskStatus::New, 1),
            (10, TaskStatus::Done, 1),
        ]
    );
    assert_eq!(
        counts.finished_since, 1,
        "only the failure is after the time asked"
    );
    assert_eq!(
        store.jobs.origin_counts("theirs", t0()).await.unwrap(),
        Default::default()
    );
}

pub async fn claims_order_retries_and_unclaimed_tasks_by_priority_then_age(store: &Stores) {
    let older = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(3), t0())
        .await
        .unwrap();
    let newer = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(3), t0())
        .await
        .unwrap();
    let urgent = store
        .jobs
        .create_job(new_job(3, 60, 5), sweep(2), t0())
        .await
        .unwrap();
    let id = |job: &drover_core::Job, i| drover_core::ids::sweep_task_id(&job.id, i);
    let a = node(store, t0()).await;
    let first = store.jobs.claim(&a, 4, t0()).await.unwrap();
    let first: Vec<_> = first.into_iter().map(|c| c.id).collect();
    assert_eq!(
        first,
        [id(&urgent, 0), id(&urgent, 1), id(&older, 0), id(&older, 1)]
    );
    // Back to NEW: the urgent job's first task and the older job's second.
    for t in [&first[0], &first[3]] {
        assert_eq!(
            report_one(store, fail(t, &a, true), t0()).await,
            ReportOutcome::Failed { will_retry: true }
        );
    }
    let second: Vec<_> = store
        .jobs
        .claim(&a, 4, t0())
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.attempt))
        .collect();
    assert_eq!(
        second,
        [
            (id(&urgent, 0), 2),
            (id(&older, 1), 2),
            (id(&older, 2), 1),
            (id(&newer, 0), 1)
        ]
    );
    // A retry of the older job comes before the newer job's unclaimed tasks.
    assert_eq!(
        report_one(store, fail(&id(&older, 2), &a, true), t0()).await,
        ReportOutcome::Failed { will_retry: true }
    );
    let third: Vec<_> = store
        .jobs
        .claim(&a, 10, t0())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(third, [id(&older, 2), id(&newer, 1), id(&newer, 2)]);
    assert!(store.jobs.claim(&a, 10, t0()).await.unwrap().is_empty());
    for job in [&older, &newer, &urgent] {
        let job = store.jobs.get_job(&job.id).await.unwrap();
        assert_eq!(job.counts.running, job.counts.total, "{job:?}");
        assert_eq!(job.started_at, Some(t0()));
    }
    assert_counts_consistent(store).await;
}

pub async fn cancel_counts_the_tasks_never_claimed(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 600, 0), sweep(6), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let claimed = store.jobs.claim(&a, 3, t0()).await.unwrap();
    report_one(store, complete(&claimed[0].id, &a, 1.0), t0()).await;
    report_one(store, fail(&claimed[1].id, &a, true), t0()).await;

    let cancelled = store
        .jobs
        .cancel_job(&job.id, t0() + secs(5))
        .await
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(
        (
            cancelled.counts.done,
            cancelled.counts.cancelled,
            cancelled.counts.new
        ),
        (1, 5, 0)
    );
    assert_eq!(
        store
            .jobs
            .list_tasks(&job.id, Some(TaskStatus::Cancelled), Page::first(100))
            .await
            .unwrap()
            .items
            .iter()
            .map(|t| t.seq)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(
        task_ids(store, &job.id, Some(TaskStatus::New))
            .await
            .is_empty()
    );
    let never = store
        .jobs
        .get_task(&drover_core::ids::sweep_task_id(&job.id, 4))
        .await
        .unwrap();
    assert_eq!(never.status, TaskStatus::Cancelled);
    assert_eq!(never.finished_at, Some(t0() + secs(5)));
    assert!(store.jobs.claim(&a, 10, t0()).await.unwrap().is_empty());
    assert_eq!(
        report_one(store, complete(&never.id, &a, 1.0), t0()).await,
        ReportOutcome::NotHolder
    );
    let overview = store.ops.overview().await.unwrap();
    assert_eq!((overview.pending_tasks, overview.running_tasks), (0, 0));
    assert_counts_consistent(store).await;
}

pub async fn a_large_sweep_is_made_at_once_and_claimed_from_its_start(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(1_000_000), t0())
        .await
        .unwrap();
    assert_eq!((job.counts.total, job.counts.new), (1_000_000, 1_000_000));
    let a = node(store, t0()).await;
    let claimed = store.jobs.claim(&a, 1000, t0()).await.unwrap();
    assert_eq!(claimed.len(), 1000);
    let payload: serde_json::Value = serde_json::from_str(&claimed[999].payload).unwrap();
    assert_eq!(payload, json!({"x": 1000}));
    let last = store
        .jobs
        .get_task(&drover_core::ids::sweep_task_id(&job.id, 999_999))
        .await
        .unwrap();
    assert_eq!(last.payload["x"], json!(1_000_000));
    let tail = store
        .jobs
        .list_tasks(
            &job.id,
            None,
            Page {
                cursor: Some(999_997),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(tail.items.len(), 2);
    assert_eq!(tail.next_cursor, None);
    for cursor in [i64::MAX, i64::MIN] {
        let page = store
            .jobs
            .list_tasks(
                &job.id,
                None,
                Page {
                    cursor: Some(cursor),
                    limit: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), (cursor < 0) as usize, "cursor {cursor}");
    }
    let overview = store.ops.overview().await.unwrap();
    assert_eq!(
        (overview.pending_tasks, overview.running_tasks),
        (999_000, 1000)
    );
    assert_counts_consistent(store).await;
}

/// Task `i` of `job`.
fn task_of(job: &str, i: u64) -> String {
    drover_core::ids::sweep_task_id(job, i)
}

/// `claim_task` of `task` by `node` with `cap`, which must claim it.
async fn claim_named(
    store: &Stores,
    task: &str,
    node: &str,
    cap: Option<u32>,
    now: Timestamp,
) -> ClaimedTask {
    match store.jobs.claim_task(task, node, cap, now).await.unwrap() {
        TaskClaim::Claimed(claimed) => claimed,
        other => panic!("{task} for {node}: {other:?}"),
    }
}

/// A named NEW task is claimed once: a new attempt under a lease, as `claim` hands one out
/// (a task of a sweep never claimed included, with the tasks before it left NEW). A repeat by
/// its holder changes nothing, another node is refused and shown the task, and `claim` no
/// longer hands it out. Unknown tasks and nodes are not found.
pub async fn claim_task_claims_a_new_task_once(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(4), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    let id = task_of(&job.id, 2);
    let claimed = claim_named(store, &id, &a, None, t0()).await;
    assert_eq!(
        (&claimed.id, &claimed.job_id, claimed.attempt),
        (&id, &job.id, 1)
    );
    assert_eq!(claimed.lease_expires_at, t0() + secs(60));
    let payload: serde_json::Value = serde_json::from_str(&claimed.payload).unwrap();
    assert_eq!(payload, json!({"x": 3}));
    let held = store.jobs.get_task(&id).await.unwrap();
    assert_eq!(held.status, TaskStatus::Running);
    assert_eq!(held.assigned_to.as_deref(), Some(a.as_str()));
    assert_eq!(
        (held.attempt, held.started_at, held.lease_expires_at),
        (1, Some(t0()), Some(t0() + secs(60)))
    );
    let started = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!(
        (started.status, started.started_at, started.counts.running),
        (JobStatus::Running, Some(t0()), 1)
    );

    // A repeat by the holder is answered with its attempt, even at its cap, and changes
    // nothing.
    for cap in [None, Some(1), Some(0)] {
        assert_eq!(
            store
                .jobs
                .claim_task(&id, &a, cap, t0() + secs(5))
                .await
                .unwrap(),
            TaskClaim::AlreadyHeld { attempt: 1 }
        );
    }
    assert_eq!(store.jobs.get_task(&id).await.unwrap(), held);
    // Another node is refused and sees the task as it stands.
    assert_eq!(
        store
            .jobs
            .claim_task(&id, &b, None, t0() + secs(5))
            .await
            .unwrap(),
        TaskClaim::Unavailable(Box::new(held.clone()))
    );
    assert_eq!(store.jobs.get_task(&id).await.unwrap(), held);

    // The tasks around it are NEW as they were; `claim` hands out those, not it.
    let listed = store
        .jobs
        .list_tasks(&job.id, None, Page::first(10))
        .await
        .unwrap()
        .items;
    let statuses: Vec<_> = listed
        .iter()
        .map(|t| (t.seq, t.status, t.attempt))
        .collect();
    assert_eq!(
        statuses,
        [
            (0, TaskStatus::New, 0),
            (1, TaskStatus::New, 0),
            (2, TaskStatus::Running, 1),
            (3, TaskStatus::New, 0)
        ]
    );
    assert_eq!(listed[1].payload["x"], json!(2));
    let pulled: Vec<_> = store
        .jobs
        .claim(&b, 10, t0())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(
        pulled,
        [
            task_of(&job.id, 0),
            task_of(&job.id, 1),
            task_of(&job.id, 3)
        ]
    );

    // Unknown names.
    for unknown in ["task-nope".to_string(), task_of(&job.id, 4)] {
        let refused = store.jobs.claim_task(&unknown, &a, None, t0()).await;
        assert!(
            matches!(&refused, Err(StoreError::NotFound { kind: "task", .. })),
            "{unknown}: {refused:?}"
        );
    }
    let refused = store.jobs.claim_task(&id, "spot-nope", None, t0()).await;
    assert!(
        matches!(&refused, Err(StoreError::NotFound { kind: "spot", .. })),
        "{refused:?}"
    );
    assert_eq!(store.jobs.get_task(&id).await.unwrap(), held);
    assert_counts_consistent(store).await;
}

/// A node at its cap of RUNNING tasks gets no more named tasks; only its own RUNNING tasks
/// count (not another node's, not its finished ones). A DOWN node is refused as `claim`
/// refuses it.
pub async fn claim_task_respects_the_nodes_cap_and_status(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(6), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    let cap = Some(2);
    claim_named(store, &task_of(&job.id, 0), &a, cap, t0()).await;
    // Another node's RUNNING task does not count against this one's cap.
    claim_named(store, &task_of(&job.id, 5), &b, Some(1), t0()).await;
    claim_named(store, &task_of(&job.id, 1), &a, cap, t0()).await;
    assert_eq!(
        store
            .jobs
            .claim_task(&task_of(&job.id, 2), &a, cap, t0())
            .await
            .unwrap(),
        TaskClaim::AtCapacity { running: 2 }
    );
    let refused = store.jobs.get_task(&task_of(&job.id, 2)).await.unwrap();
    assert_eq!((refused.status, refused.attempt), (TaskStatus::New, 0));
    // Without a cap there is no limit.
    claim_named(store, &task_of(&job.id, 2), &a, None, t0()).await;
    assert_eq!(
        store
            .jobs
            .claim_task(&task_of(&job.id, 3), &a, Some(3), t0())
            .await
            .unwrap(),
        TaskClaim::AtCapacity { running: 3 }
    );
    // A task that finished no longer counts.
    assert_eq!(
        report_one(store, complete(&task_of(&job.id, 0), &a, 1.0), t0()).await,
        ReportOutcome::Completed
    );
    claim_named(store, &task_of(&job.id, 3), &a, Some(3), t0()).await;

    // A DOWN node is refused, and the task stays NEW.
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(1), t0() + secs(1))
        .await
        .unwrap();
    assert!(down.nodes.contains(&a), "{down:?}");
    let refused = store
        .jobs
        .claim_task(&task_of(&job.id, 4), &a, None, t0() + secs(1))
        .await;
    assert!(
        matches!(&refused, Err(StoreError::NodeDown(n)) if *n == a),
        "{refused:?}"
    );
    let task = store.jobs.get_task(&task_of(&job.id, 4)).await.unwrap();
    assert_eq!((task.status, task.attempt), (TaskStatus::New, 0));
    assert_counts_consistent(store).await;
}

/// A task claimed by name is then a task like any other: its holder completes it by the
/// normal report without naming the attempt, a lease that runs out is taken back by the task
/// reaper, and a holder that goes silent loses it to the node reaper; each released task is
/// NEW again and claimed by name with its next attempt.
pub async fn a_task_claimed_by_name_is_reported_and_released_as_any(store: &Stores) {
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(3), t0())
        .await
        .unwrap();
    let a = node(store, t0()).await;
    let b = node(store, t0()).await;
    let (first, second, third) = (
        task_of(&job.id, 0),
        task_of(&job.id, 1),
        task_of(&job.id, 2),
    );

    claim_named(store, &first, &a, None, t0()).await;
    assert_eq!(
        report_one(store, complete(&first, &a, 1.5), t0() + secs(1)).await,
        ReportOutcome::Completed
    );
    let done = store.jobs.get_task(&first).await.unwrap();
    assert_eq!(
        (done.status, done.result.fopt),
        (TaskStatus::Done, Some(1.5))
    );
    // A finished task is not claimed again, not even by its holder.
    assert_eq!(
        store
            .jobs
            .claim_task(&first, &a, None, t0() + secs(2))
            .await
            .unwrap(),
        TaskClaim::Unavailable(Box::new(done))
    );

    // The lease runs out: the task reaper takes it back, NEW for its next attempt.
    claim_named(store, &second, &a, None, t0()).await;
    assert!(
        store
            .jobs
            .release_expired_tasks(t0() + secs(59))
            .await
            .unwrap()
            .is_empty()
    );
    let released = store
        .jobs
        .release_expired_tasks(t0() + secs(61))
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0].task_id.as_str(), released[0].to),
        (second.as_str(), TaskStatus::New)
    );
    assert_eq!(
        report_one(store, complete(&second, &a, 2.0), t0() + secs(62)).await,
        ReportOutcome::NotHolder,
        "the reaped attempt's report is fenced off"
    );
    let again = claim_named(store, &second, &b, None, t0() + secs(62)).await;
    assert_eq!(again.attempt, 2);
    assert_eq!(
        report_one(store, complete(&second, &b, 2.5), t0() + secs(63)).await,
        ReportOutcome::Completed
    );

    // The holder goes silent: the node reaper takes the task back with the node.
    claim_named(store, &third, &a, None, t0() + secs(62)).await;
    store
        .nodes
        .heartbeat(&b, drover_core::NodeStats::default(), t0() + secs(100))
        .await
        .unwrap();
    let down = store
        .nodes
        .mark_silent_nodes_down(t0() + secs(90), t0() + secs(100))
        .await
        .unwrap();
    assert_eq!(down.nodes, [a.as_str()]);
    let released: Vec<_> = down
        .released
        .iter()
        .map(|r| (r.task_id.as_str(), r.attempt, r.to))
        .collect();
    assert_eq!(released, [(third.as_str(), 1, TaskStatus::New)]);
    let back = store.jobs.get_task(&third).await.unwrap();
    assert_eq!(
        (back.status, back.attempt, back.assigned_to),
        (TaskStatus::New, 1, None)
    );
    let last = claim_named(store, &third, &b, Some(1), t0() + secs(100)).await;
    assert_eq!(last.attempt, 2);
    assert_eq!(
        report_one(store, complete(&third, &b, 3.0), t0() + secs(101)).await,
        ReportOutcome::Completed
    );
    let finished = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!(finished.status, JobStatus::Completed);
    assert_counts_consistent(store).await;
}

/// Claims of named tasks racing each other and `claim`: each task is held once, no node holds
/// more than its cap though several of its workers ask at once, and each attempt is handed
/// out once.
pub async fn concurrent_claims_of_named_tasks_never_share_a_task_nor_pass_a_cap(store: Stores) {
    const TASKS: u64 = 48;
    const CAP: usize = 3;
    const CALLERS: u64 = 4;
    let job = store
        .jobs
        .create_job(new_job(3, 60, 0), sweep(TASKS as i64), t0())
        .await
        .unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&store, t0()).await);
    }
    let mut handles = Vec::new();
    for (k, n) in nodes.iter().enumerate() {
        // Several callers for each node at once (a worker's consumers, each handed a message),
        // every one asking for every task, each from its own starting point.
        for c in 0..CALLERS {
            let (store, n, job) = (store.clone(), n.clone(), job.id.clone());
            let start = (k as u64 * CALLERS + c) * (TASKS / 12);
            handles.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for step in 0..TASKS {
                    let task = task_of(&job, (start + step) % TASKS);
                    if let TaskClaim::Claimed(c) = store
                        .jobs
                        .claim_task(&task, &n, Some(CAP as u32), t0())
                        .await
                        .unwrap()
                    {
                        got.push(c.id);
                    }
                }
                (n, got)
            }));
        }
    }
    let puller = {
        let (store, n) = (store.clone(), node(&store, t0()).await);
        tokio::spawn(async move { store.jobs.claim(&n, 5, t0()).await.unwrap().len() })
    };
    let mut held = HashSet::new();
    let mut per_node: std::collections::HashMap<String, usize> = Default::default();
    for h in handles {
        let (n, got) = h.await.unwrap();
        *per_node.entry(n).or_default() += got.len();
        for id in got {
            assert!(held.insert(id.clone()), "{id} claimed twice");
        }
    }
    // There are tasks enough for every node to reach its cap, and none passes it.
    for n in &nodes {
        assert_eq!(per_node[n], CAP, "{n}: {per_node:?}");
    }
    let pulled = puller.await.unwrap();
    let job = store.jobs.get_job(&job.id).await.unwrap();
    assert_eq!(job.counts.running as usize, held.len() + pulled);
    let running = store
        .jobs
        .list_tasks(&job.id, Some(TaskStatus::Running), Page::first(100))
        .await
        .unwrap()
        .items;
    for n in &nodes {
        let holds = running
            .iter()
            .filter(|t| t.assigned_to.as_deref() == Some(n.as_str()))
            .count();
        assert_eq!(holds, CAP, "{n}");
    }
    assert_counts_consistent(&store).await;
}

macro_rules! jobs_suite {
    ($(#[$meta:meta])* $backend:ident, $fixture:expr) => {
        suite!($(#[$meta])* $backend, $fixture;
            plain: [
                create_job_expands_every_task,
                a_job_keeps_its_run_spec,
                claims_take_highest_priority_then_oldest,
                complete_is_idempotent_and_fenced,
                failures_retry_until_attempts_are_spent,
                a_permanent_failure_is_not_retried,
                a_late_report_after_reaping_is_fenced_off,
                a_stale_attempt_of_the_same_node_is_fenced_off,
                expired_tasks_fail_after_their_last_attempt,
                cancel_stops_new_and_running_tasks,
                a_batch_of_reports_is_decided_report_by_report,
                a_task_of_a_sweep_has_an_id_from_its_job_and_index,
                tasks_never_claimed_read_as_new_with_their_payload,
                claims_order_retries_and_unclaimed_tasks_by_priority_then_age,
                cancel_counts_the_tasks_never_claimed,
                a_large_sweep_is_made_at_once_and_claimed_from_its_start,
                claim_task_claims_a_new_task_once,
                claim_task_respects_the_nodes_cap_and_status,
                a_task_claimed_by_name_is_reported_and_released_as_any,
                waiting_jobs_are_read_oldest_first_and_raised_into_claim_order,
                tasks_read_together_are_the_tasks_read_alone,
                a_created_job_is_answered_as_it_reads_back,
                an_origins_jobs_are_listed_and_counted_apart,
            ];
            shared: [
                concurrent_claims_never_share_a_task,
                concurrent_claims_of_named_tasks_never_share_a_task_nor_pass_a_cap,
            ]);
    };
}

jobs_suite!(sqlite, crate::sqlite_fixture());
jobs_suite!(sqlite_delayed, crate::delayed_fixture());
jobs_suite!(
    #[cfg_attr(
        missing_postgres,
        ignore = "PostgreSQL's server binaries are not installed"
    )]
    postgres,
    crate::postgres_fixture()
);
