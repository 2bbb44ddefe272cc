//! Translation between wire types (`drover_api`) and domain types (`drover_core`).
//!
//! This is where a contract's field names meet drover's: `spot` is a node, `completedTasks` is
//! the DONE count, the four named sweep dimensions become parameters. It checks the shape of
//! requests; the rules (sweep validity, lifecycle) stay in the core.

use super::error::ApiError;
use crate::config::ServerConfig;
use drover_api as api;
use drover_core::run::{self, RunSpec};
use drover_core::sweep::{Dimension, SweepSpec, Values};
use drover_core::time::format;
use drover_core::{Job, Node, Task};
use drover_core::{credential, rules};
use drover_store::NewJob;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest task timeout a job may ask for (a rule of the core, re-exported for the settings).
pub use drover_core::rules::MAX_TASK_TIMEOUT_SECS;

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("INVALID_FIELD", format!("{field}: {message}"))
}

/// A dimension given as a list of values, `{min, max, step}`, or one bare value.
fn values(field: &str, v: Value) -> Result<Values, ApiError> {
    match v {
        Value::Array(items) => Ok(Values::List(items)),
        Value::Object(mut o) => {
            let mut number =
                |key: &str, default: Option<i64>| -> Result<serde_json::Number, ApiError> {
                    match o.remove(key) {
                        Some(Value::Number(n)) => Ok(n),
                        None => default
                            .map(Into::into)
                            .ok_or_else(|| invalid(field, format!("a range needs \"{key}\""))),
                        Some(other) => Err(invalid(
                            &format!("{field}.{key}"),
                            format!("expected a number, got {other}"),
                        )),
                    }
                };
            let min = number("min", None)?;
            let max = number("max", None)?;
            let step = number("step", Some(1))?;
            if let Some(extra) = o.keys().next() {
                return Err(invalid(
                    field,
                    format!("unknown range field \"{extra}\"; a range has min, max and step"),
                ));
            }
            Ok(Values::Range { min, max, step })
        }
        Value::Null => Err(invalid(
            field,
            "expected a list of values or {min, max, step}, got null",
        )),
        scalar => Ok(Values::List(vec![scalar])),
    }
}

/// Splits a job request into the job's settings and the sweep to expand.
pub fn job_request(
    req: api::CreateJobRequest,
    config: &ServerConfig,
) -> Result<(NewJob, SweepSpec), ApiError> {
    if let Some(name) = &req.name {
        rules::check_job_name(name)?;
    }
    let max_attempts = req.max_attempts.unwrap_or(config.default_max_attempts);
    rules::check_max_attempts(max_attempts)?;
    let task_timeout = match req.task_timeout_seconds {
        Some(s) => {
            rules::check_task_timeout_secs(s)?;
            Duration::from_secs(s)
        }
        None => config.default_task_timeout,
    };

    let mut shared = Map::new();
    if let Some(jar) = req.jar_path {
        shared.insert("jarPath".into(), Value::String(jar));
    }
    if let Some(main) = req.main_class {
        shared.insert("mainClass".into(), Value::String(main));
    }
    for (k, v) in req.shared.unwrap_or_default() {
        if shared.contains_key(&k) {
            return Err(invalid(
                &format!("shared.{k}"),
                "is already given as a top-level field",
            ));
        }
        shared.insert(k, v);
    }

    let mut dimensions = Vec::new();
    let named = [req.algorithms, req.iterations, req.agents, req.dimension];
    for ((field, name), value) in run::NAMED_DIMENSIONS.into_iter().zip(named) {
        if let Some(v) = value {
            dimensions.push(Dimension {
                name: name.into(),
                field: field.into(),
                values: values(field, v)?,
            });
        }
    }
    for (name, v) in req.parameters.unwrap_or_default() {
        if name.is_empty() {
            return Err(invalid("parameters", "a parameter name must not be empty"));
        }
        let field = format!("parameters.{name}");
        dimensions.push(Dimension {
            values: values(&field, v)?,
            name,
            field,
        });
    }
    let run = run_spec(
        req.command,
        req.env,
        req.retry_on_failure,
        &shared,
        &dimensions,
        req.tasks.as_deref(),
    )?;
    let job = NewJob {
        origin: None,
        id: None,
        name: req.name,
        priority: req.priority.unwrap_or(0),
        max_attempts,
        task_timeout,
        run,
    };
    Ok((
        job,
        SweepSpec {
            shared,
            dimensions,
            tasks: req.tasks,
        },
    ))
}

/// The job's run settings: its own command, or the default for a `jarPath`/`mainClass` job.
/// Every placeholder must name a field that every task's payload will have.
fn run_spec(
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    retry_on_failure: Option<bool>,
    shared: &Map<String, Value>,
    dimensions: &[Dimension],
    tasks: Option<&[Map<String, Value>]>,
) -> Result<Option<RunSpec>, ApiError> {
    let command = match command {
        Some(c) => c,
        None if shared.contains_key("jarPath") && shared.contains_key("mainClass") => {
            let names: Vec<String> = dimensions.iter().map(|d| d.name.clone()).collect();
            run::java_default(&names)
        }
        None if env.is_some() || retry_on_failure.is_some() => {
            let field = if env.is_some() {
                "env"
            } else {
                "retryOnFailure"
            };
            return Err(invalid(field, "only applies to a job with a command"));
        }
        None => return Ok(None),
    };
    let spec = RunSpec {
        command,
        env: env.unwrap_or_default(),
        retry_on_failure: retry_on_failure.unwrap_or(true),
    };
    let template_error = |e: run::TemplateError| invalid(&e.field, e.message);
    let compiled = spec.compile().map_err(template_error)?;
    let shared: Vec<&str> = shared.keys().map(String::as_str).collect();
    let dimensions: Vec<&str> = dimensions.iter().map(|d| d.name.as_str()).collect();
    let fields = run::PayloadFields {
        shared: &shared,
        dimensions: &dimensions,
        tasks,
    };
    compiled
        .check_names(|name| fields.every_task_has(name))
        .map_err(template_error)?;
    Ok(Some(spec))
}

/// A job as clients see it: `env` values redacted (`drover_core::credential::env_for_reader`).
pub fn job(j: &Job) -> api::Job {
    job_for(j, false)
}

/// A job as `agent` or not sees it: only agents, which run its tasks, see `env` values.
pub fn job_for(j: &Job, agent: bool) -> api::Job {
    api::Job {
        id: j.id.clone(),
        name: j.name.clone(),
        origin: j.origin.clone(),
        status: j.status.to_string(),
        total_tasks: j.counts.total,
        completed_tasks: j.counts.done,
        failed_tasks: j.counts.failed,
        pending_tasks: j.counts.new,
        running_tasks: j.counts.running,
        cancelled_tasks: j.counts.cancelled,
        priority: j.priority,
        max_attempts: j.max_attempts,
        task_timeout_seconds: j.task_timeout.as_secs_f64(),
        parameters: j.parameter_names.clone(),
        created_at: format(&j.created_at),
        updated_at: format(&j.updated_at),
        started_at: j.started_at.as_ref().map(format),
        finished_at: j.finished_at.as_ref().map(format),
        command: j.run.as_ref().map(|r| r.command.clone()),
        env: j
            .run
            .as_ref()
            .map(|r| credential::env_for_reader(&r.env, agent)),
        retry_on_failure: j.run.as_ref().map(|r| r.retry_on_failure),
    }
}

pub fn task(t: &Task) -> api::Task {
    api::Task {
        id: t.id.clone(),
        job_id: t.job_id.clone(),
        status: t.status.to_string(),
        attempt: t.attempt,
        max_attempts: t.max_attempts,
        payload: t.payload.clone(),
        assigned_to: t.assigned_to.clone(),
        started_at: t.started_at.as_ref().map(format),
        lease_expires_at: t.lease_expires_at.as_ref().map(format),
        finished_at: t.finished_at.as_ref().map(format),
        runtime_ms: t.result.runtime_ms,
        iter: t.result.iter,
        fopt: t.result.fopt,
        result_json: t.result.result_json.clone(),
        last_error: t.last_error.clone(),
        output: t.result.output.clone(),
        created_at: format(&t.created_at),
    }
}

pub fn result(t: &Task) -> api::TaskResult {
    api::TaskResult {
        task_id: t.id.clone(),
        algorithm: t.payload.get("algorithm").cloned(),
        iterations: t.payload.get("iterations").cloned(),
        fopt: t.result.fopt,
        runtime_ms: t.result.runtime_ms,
        finished_at: t.finished_at.as_ref().map(format),
        iter: t.result.iter,
        result_json: t.result.result_json.clone(),
        spot_id: t.assigned_to.clone(),
        attempt: t.attempt,
        payload: t.payload.clone(),
    }
}

pub fn spot(n: &Node) -> api::Spot {
    api::Spot {
        id: n.id.clone(),
        ip_address: n.info.address.clone(),
        status: n.status.to_string(),
        cpu_load: n.cpu_load,
        running_tasks: n.running_tasks,
        total_cores: n.info.capacity.cores,
        last_heartbeat: format(&n.last_heartbeat),
        hostname: n.info.hostname.clone(),
        zone: n.info.zone.clone(),
        labels: n.info.labels.clone(),
        memory_bytes: n.info.capacity.memory_bytes,
        free_memory_bytes: n.free_memory_bytes,
        gpus: n.info.capacity.gpus,
        registered_at: format(&n.registered_at),
    }
}

/// A runner as listed; `shown` says whether the reader may see its session id and endpoint
/// (what lets one stop or use it), else both are redacted.
pub fn runner(
    r: &drover_core::Runner,
    now: drover_core::Timestamp,
    shown: bool,
) -> api::RunnerInfo {
    let seconds = |t: &drover_core::Timestamp| (now - *t).num_milliseconds().max(0) as f64 / 1000.0;
    api::RunnerInfo {
        session_id: if shown {
            r.session_id.clone()
        } else {
            credential::REDACTED.to_string()
        },
        driver: r.driver.clone(),
        status: r.status.to_string(),
        instance: r.instance.clone(),
        endpoint: r.endpoint.clone().filter(|_| shown),
        singleton: r.singleton,
        created_at: format(&r.created_at),
        age_seconds: seconds(&r.created_at),
        last_heartbeat: format(&r.last_heartbeat),
        idle_seconds: seconds(&r.last_heartbeat),
    }
}

pub fn worker(w: &crate::workers::WorkerState) -> api::WorkerInfo {
    let names = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<_, _>>()
    };
    api::WorkerInfo {
        name: w.name.to_string(),
        interval_seconds: w.interval.map(|d| d.as_secs_f64()),
        runs: w.runs,
        failures: w.failures,
        last_run_at: w.last_run_at.as_ref().map(format),
        last_duration_ms: w.last_duration.map(|d| d.as_secs_f64() * 1000.0),
        last_error: w.last_error.clone(),
        last_counts: names(&w.last_counts),
        totals: names(&w.totals),
    }
}

/// This replica's role (its own view) beside the lease and members as the store holds them.
pub fn cluster(
    cluster: &crate::cluster::Cluster,
    view: &drover_store::cluster::ClusterView,
    now: drover_core::Timestamp,
) -> api::ClusterInfo {
    let role = cluster.role();
    let leader = view.lease.leader_at(now);
    api::ClusterInfo {
        replica_id: cluster.replica_id().to_string(),
        role: role.name().to_string(),
        leader: leader.map(str::to_string),
        epoch: view.lease.epoch,
        lease_expires_at: leader.map(|_| format(&view.lease.expires_at)),
        lease_ttl_seconds: cluster.timing().ttl.as_secs_f64(),
        leading_since: cluster.leading_since().as_ref().map(format),
        members: view
            .members
            .iter()
            .map(|m| api::ClusterMember {
                replica_id: m.replica_id.clone(),
                address: m.address.clone(),
                leader: leader == Some(m.replica_id.as_str()),
                first_seen: format(&m.first_seen),
                last_seen: format(&m.last_seen),
            })
            .collect(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    }
}
