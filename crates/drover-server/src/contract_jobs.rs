//! Jobs that a contract's client names by its own id (the node-registry contract's
//! `SubmitJob`, the priority contract's `/api/jobs/register`): each is a drover job of one task
//! carrying the contract's job as its payload, under a drover id derived from the contract's id
//! alone, so that every replica finds the same job for a repeat or a status query without any
//! table of its own.
//!
//! This module owns that mapping and the submit-once rule: the same id with the same payload is
//! the job already made; with another payload it is a conflict. It decides nothing about the
//! task's lifecycle, which the store runs as for every job.

use crate::AppState;
use drover_core::Task;
use drover_core::sweep::{SizeLimits, Sweep, SweepSpec};
use drover_store::{NewJob, Route, StoreError};
use serde_json::{Map, Value};

/// The drover job that stands for the contract job `id` of `namespace` (one per contract, so
/// two contracts' jobs of one name stay apart).
pub fn drover_job_id(namespace: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{namespace} job {id}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("job-{hex}")
}

/// The identity of the drover job that stands for the contract job `id` of `namespace`: the
/// derived id, the contract's id as its name, the namespace as its origin. The caller sets the
/// rest (`NewJob { priority, ..identity(namespace, id) }`).
pub fn identity(namespace: &str, id: &str) -> NewJob {
    NewJob {
        id: Some(drover_job_id(namespace, id)),
        name: Some(id.to_string()),
        origin: Some(namespace.to_string()),
        priority: 0,
        max_attempts: 1,
        task_timeout: std::time::Duration::ZERO,
        run: None,
    }
}

/// The one task of the drover job `job_id`, or `None` when there is no such job.
pub async fn task_of(app: &AppState, job_id: &str) -> Result<Option<Task>, StoreError> {
    let task_id = drover_core::ids::sweep_task_id(job_id, 0);
    match app.store.jobs.get_task(&task_id).await {
        Ok(t) => Ok(Some(t)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What [`submit`] did.
#[derive(Debug)]
pub enum Submitted {
    /// The job was made now.
    Created,
    /// The same job was made before: its task as it stands.
    Existing(Box<Task>),
}

/// Why [`submit`] refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("a different job was already submitted with this id")]
    Conflict,
    /// The payload breaks a limit (its size); the message says which.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes `job` (whose `id` is set) with one task carrying `payload`, published to `route`
/// when it is given, unless a job of that id exists: then it is the same job if its task
/// carries the same payload, and a conflict otherwise. A payload too large is refused before
/// anything is written.
pub async fn submit(
    app: &AppState,
    job: NewJob,
    payload: Map<String, Value>,
    route: Option<Route>,
) -> Result<Submitted, SubmitError> {
    let id = job.id.clone().unwrap_or_default();
    let spec = SweepSpec {
        tasks: Some(vec![payload.clone()]),
        ..Default::default()
    };
    let sweep = Sweep::new(spec, 1).map_err(|e| SubmitError::Invalid(e.to_string()))?;
    sweep
        .check_size(SizeLimits {
            task_payload_bytes: app.config.max_task_payload_bytes,
            job_bytes: app.config.max_job_bytes,
        })
        .map_err(|e| SubmitError::Invalid(e.to_string()))?;
    let now = app.clock.now();
    let made = match route {
        None => app.store.jobs.create_job(job, sweep, now).await,
        Some(route) => {
            (app.store.dispatch)
                .create_dispatched_job(job, sweep, route, now)
                .await
        }
    };
    match made {
        Ok(_) => Ok(Submitted::Created),
        // The job is made first and looked at only when that fails (a job of this id exists:
        // a repeat, another replica's, or a conflict), so a new job costs one write and no
        // read.
        Err(e) => match same_job(app, &id, &payload).await? {
            Some(existing) => Ok(existing),
            None => Err(e.into()),
        },
    }
}

async fn same_job(
    app: &AppState,
    id: &str,
    payload: &Map<String, Value>,
) -> Result<Option<Submitted>, SubmitError> {
    match task_of(app, id).await? {
        None => Ok(None),
        Some(task) if &task.payload == payload => Ok(Some(Submitted::Existing(Box::new(task)))),
        Some(_) => Err(SubmitError::Conflict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_from_the_namespace_and_the_id_alone() {
        let a = drover_job_id("orchion.v1", "j1");
        assert_eq!(a, drover_job_id("orchion.v1", "j1"));
        assert_ne!(a, drover_job_id("orchion.v1", "j2"));
        assert_ne!(a, drover_job_id("distriqueue", "j1"));
        assert!(a.starts_with("job-") && a.len() == 4 + 32);
    }
}
