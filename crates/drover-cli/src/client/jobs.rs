//! `drover submit` and `drover job ...`: submit a job file, list jobs, show one job, its tasks
//! and its results, cancel it, follow it.
//!
//! Each command is one or a few calls of `drover_client::Client` and a printout. Nothing here
//! interprets a job beyond display: statuses and counts are the server's.

use super::output::{self, Format};
use super::{Connection, Failure, Outcome, jobfile, watch};
use clap::{Args, Subcommand, ValueEnum};
use drover_api::{Job, JobList, ResultsResponse, Task, TaskList};
use drover_client::{Client, ListOptions};
use drover_core::text::value_text;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The options of `drover submit`; its help text is on `ClientCommand::Submit`.
#[derive(Args)]
pub struct SubmitArgs {
    /// The job file: TOML, or JSON (a .json file, or one starting with '{').
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Follow the job after submitting it, as `drover job watch` does, and exit as it does.
    #[arg(long)]
    watch: bool,

    /// How often to ask the server for progress with --watch (e.g. 500ms, 2s).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = watch::parse_interval, requires = "watch")]
    interval: Duration,

    /// Output format: table (the job id and task count) or json (the server's answer).
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(flatten)]
    connection: Connection,
}

/// `drover job`: the job subcommands share the connection options.
#[derive(Args)]
pub struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,

    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand)]
enum JobCommand {
    /// List jobs, newest first.
    ///
    /// Shows each job's status and task counts. The list follows the server's pages until
    /// --limit jobs are shown.
    List {
        /// Only jobs with this status.
        #[arg(long, value_enum, ignore_case = true)]
        status: Option<JobStatus>,

        /// Show at most this many jobs.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,

        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        output: Format,
    },

    /// Show one job: status, task counts, settings and command.
    Status {
        /// The job's id (job-...).
        id: String,

        /// Output format: table or json.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        output: Format,
    },

    /// List a job's tasks in creation order, with their parameters, holder and last error.
    ///
    /// Fetches every page. With --status FAILED it shows which tasks failed and why (the
    /// error each one's last attempt reported); --output json shows every field.
    Tasks {
        /// The job's id (job-...).
        id: String,

        /// Only tasks with this status (PENDING is the same as NEW).
        #[arg(long, value_enum, ignore_case = true)]
        status: Option<TaskStatus>,

        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        output: Format,
    },

    /// Show the results of a job's finished (DONE) tasks.
    ///
    /// One row per DONE task: its parameters and what it reported (fopt, iter, run time).
    /// --output csv prints the server's CSV export (taskId, each swept parameter, fopt, iter,
    /// runtimeMs, finishedAt, spotId, attempt, resultJson); --output json every field,
    /// including each task's whole payload and result document.
    Results {
        /// The job's id (job-...).
        id: String,

        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        output: Format,
    },

    /// Cancel a job: its waiting and running tasks become CANCELLED.
    ///
    /// Agents stop running tasks of a cancelled job; finished tasks keep their results.
    /// Cancelling again is harmless; a job that already ended COMPLETED or FAILED is refused
    /// (JOB_FINISHED).
    Cancel {
        /// The job's id (job-...).
        id: String,

        /// Output format: table or json (the job after cancelling).
        #[arg(long, short, value_enum, default_value_t = Format::Table)]
        output: Format,
    },

    /// Follow a job until it ends, with live progress on stderr.
    ///
    /// Shows finished tasks (done, failed or cancelled) over the total, the counts of done,
    /// failed, running and pending tasks, the recent rate and an estimate of the time left. On
    /// a terminal this is a progress bar; otherwise (CI logs, files) a plain line every few
    /// seconds. Exits 0 when the job ends COMPLETED and 1 when it ends FAILED or CANCELLED.
    /// While watching, an unreachable or failing server is retried for up to a minute.
    Watch {
        /// The job's id (job-...).
        id: String,

        /// How often to ask the server for progress (e.g. 500ms, 2s).
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = watch::parse_interval)]
        interval: Duration,
    },
}

/// A job's status, as the server names it.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
enum JobStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// A task's status, as the server names it.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
enum TaskStatus {
    /// Waiting to be claimed.
    #[value(alias = "PENDING")]
    New,
    Running,
    Done,
    Failed,
    Cancelled,
}

fn wire_name(value: impl ValueEnum) -> Option<String> {
    value.to_possible_value().map(|v| v.get_name().to_string())
}

pub async fn submit(args: SubmitArgs) -> Result<Outcome, Failure> {
    let format = args
        .output
        .require("drover submit", &[Format::Table, Format::Json])?;
    let client = args.connection.client()?;
    let request = jobfile::load(&args.file).map_err(|e| Failure::Usage(e.to_string()))?;
    let created = client
        .create_job(&request)
        .await
        .map_err(|e| Failure::server(&client, e))?;
    match format {
        Format::Json => output::json(&created)?,
        _ => {
            let name = request
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let tasks = if created.total_tasks == 1 {
                "1 task".to_string()
            } else {
                format!("{} tasks", created.total_tasks)
            };
            output::line(&format!("submitted job {}{name}: {tasks}", created.job_id))?;
            if !args.watch {
                output::note(&format!(
                    "follow it with: drover job watch {}",
                    created.job_id
                ));
            }
        }
    }
    if !args.watch {
        return Ok(Outcome::Done);
    }
    watch::watch(
        &client,
        &created.job_id,
        watch::Options {
            interval: args.interval,
            // The server has just answered, so a failure now is worth riding out.
            patient_from_the_start: true,
            // Keep stdout one JSON document when JSON was asked for.
            summary_on_stdout: format == Format::Table,
        },
    )
    .await
}

pub async fn job(args: JobArgs) -> Result<Outcome, Failure> {
    // Formats are checked before anything is sent.
    match args.command {
        JobCommand::List {
            status,
            limit,
            output,
        } => {
            let client = args.connection.client()?;
            list(&client, status, limit, output).await?;
        }
        JobCommand::Status { id, output } => {
            let format = output.require("drover job status", &[Format::Table, Format::Json])?;
            let client = args.connection.client()?;
            let job = client
                .job(&id)
                .await
                .map_err(|e| Failure::server(&client, e))?;
            match format {
                Format::Json => output::json(&job)?,
                _ => print_job(&job)?,
            }
        }
        JobCommand::Tasks { id, status, output } => {
            let client = args.connection.client()?;
            tasks(&client, &id, status, output).await?;
        }
        JobCommand::Results { id, output } => {
            let client = args.connection.client()?;
            results(&client, &id, output).await?;
        }
        JobCommand::Cancel { id, output } => {
            let format = output.require("drover job cancel", &[Format::Table, Format::Json])?;
            let client = args.connection.client()?;
            let job = client
                .cancel_job(&id)
                .await
                .map_err(|e| Failure::server(&client, e))?;
            match format {
                Format::Json => output::json(&job)?,
                _ => output::line(&format!(
                    "job {} {}: {} tasks cancelled, {} done, {} failed, of {}",
                    job.id,
                    job.status,
                    job.cancelled_tasks,
                    job.completed_tasks,
                    job.failed_tasks,
                    job.total_tasks
                ))?,
            }
        }
        JobCommand::Watch { id, interval } => {
            let client = args.connection.client()?;
            return watch::watch(
                &client,
                &id,
                watch::Options {
                    interval,
                    // A first request that fails is more likely a wrong --server than a blip.
                    patient_from_the_start: false,
                    summary_on_stdout: true,
                },
            )
            .await;
        }
    }
    Ok(Outcome::Done)
}

async fn list(
    client: &Client,
    status: Option<JobStatus>,
    limit: u32,
    format: Format,
) -> Result<(), Failure> {
    // The server serves at most 1000 jobs a page; --limit may ask for more.
    const PAGE: u32 = 1000;
    let mut options = ListOptions {
        status: status.and_then(wire_name),
        cursor: None,
        limit: None,
    };
    let mut jobs: Vec<Job> = Vec::new();
    let next_cursor = loop {
        let wanted = limit.saturating_sub(u32::try_from(jobs.len()).unwrap_or(u32::MAX));
        options.limit = Some(wanted.min(PAGE));
        let page = client
            .jobs(&options)
            .await
            .map_err(|e| Failure::server(client, e))?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(cursor) if jobs.len() < limit as usize => options.cursor = Some(cursor),
            other => break other,
        }
    };
    match format {
        Format::Json => output::json(&JobList {
            jobs,
            next_cursor: next_cursor.clone(),
        })?,
        Format::Csv => output::csv(
            &strings(&[
                "id",
                "name",
                "status",
                "totalTasks",
                "completedTasks",
                "failedTasks",
                "runningTasks",
                "pendingTasks",
                "cancelledTasks",
                "priority",
                "createdAt",
                "finishedAt",
            ]),
            jobs.iter()
                .map(|j| {
                    vec![
                        j.id.clone(),
                        j.name.clone().unwrap_or_default(),
                        j.status.clone(),
                        j.total_tasks.to_string(),
                        j.completed_tasks.to_string(),
                        j.failed_tasks.to_string(),
                        j.running_tasks.to_string(),
                        j.pending_tasks.to_string(),
                        j.cancelled_tasks.to_string(),
                        j.priority.to_string(),
                        j.created_at.clone(),
                        j.finished_at.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        )?,
        Format::Table if jobs.is_empty() => output::line("no jobs")?,
        Format::Table => output::table(
            &strings(&[
                "ID", "NAME", "STATUS", "TASKS", "DONE", "FAILED", "RUNNING", "PENDING", "CREATED",
            ]),
            jobs.iter()
                .map(|j| {
                    vec![
                        j.id.clone(),
                        j.name
                            .as_deref()
                            .map_or("-".into(), |n| output::excerpt(n, 40)),
                        j.status.clone(),
                        j.total_tasks.to_string(),
                        j.completed_tasks.to_string(),
                        j.failed_tasks.to_string(),
                        j.running_tasks.to_string(),
                        j.pending_tasks.to_string(),
                        output::age(&j.created_at),
                    ]
                })
                .collect(),
        )?,
    }
    if format == Format::Table && next_cursor.is_some() {
        output::note(&format!(
            "(the newest {limit} jobs; pass --limit to see more)"
        ));
    }
    Ok(())
}

/// One job, as `key  value` lines.
fn print_job(job: &Job) -> Result<(), Failure> {
    let finished = job.completed_tasks + job.failed_tasks + job.cancelled_tasks;
    let mut pairs = vec![
        ("id", job.id.clone()),
        ("name", output::or_dash(job.name.as_deref())),
        ("status", job.status.clone()),
        (
            "tasks",
            format!(
                "{finished}/{} finished: {} done, {} failed, {} cancelled; {} running, {} pending",
                job.total_tasks,
                job.completed_tasks,
                job.failed_tasks,
                job.cancelled_tasks,
                job.running_tasks,
                job.pending_tasks
            ),
        ),
        ("priority", job.priority.to_string()),
        ("max attempts", job.max_attempts.to_string()),
        (
            "task timeout",
            Duration::try_from_secs_f64(job.task_timeout_seconds)
                .map(output::short_duration)
                .unwrap_or_else(|_| format!("{}s", job.task_timeout_seconds)),
        ),
        ("parameters", job.parameters.join(", ")),
    ];
    if let Some(command) = &job.command {
        pairs.push(("command", output::command_line(command)));
    }
    if let Some(env) = job.env.as_ref().filter(|e| !e.is_empty()) {
        let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.push(("env", vars.join(" ")));
    }
    if let Some(retry) = job.retry_on_failure {
        pairs.push(("retry on failure", retry.to_string()));
    }
    pairs.push(("created", job.created_at.clone()));
    pairs.push(("started", output::or_dash(job.started_at.as_deref())));
    pairs.push(("finished", output::or_dash(job.finished_at.as_deref())));
    if let Some(took) = job
        .finished_at
        .as_deref()
        .and_then(|f| output::between(job.started_at.as_deref().unwrap_or(&job.created_at), f))
    {
        pairs.push(("took", output::short_duration(took)));
    }
    output::record(pairs)
}

async fn tasks(
    client: &Client,
    id: &str,
    status: Option<TaskStatus>,
    format: Format,
) -> Result<(), Failure> {
    let server = |e| Failure::server(client, e);
    // The job names the swept parameters, which become the columns of the listing.
    let job = client.job(id).await.map_err(server)?;
    let status = status.and_then(wire_name);
    let tasks = client
        .all_tasks(id, status.as_deref())
        .await
        .map_err(server)?;
    let parameters = &job.parameters;
    match format {
        Format::Json => output::json(&TaskList {
            job_id: job.id.clone(),
            tasks,
            next_cursor: None,
        }),
        Format::Csv => {
            let mut header = strings(&["taskId", "status", "attempt", "maxAttempts"]);
            header.extend(parameters.iter().cloned());
            header.extend(strings(&[
                "assignedTo",
                "startedAt",
                "finishedAt",
                "runtimeMs",
                "fopt",
                "iter",
                "lastError",
                "payload",
            ]));
            let rows = tasks
                .iter()
                .map(|t| {
                    let mut row = vec![
                        t.id.clone(),
                        t.status.clone(),
                        t.attempt.to_string(),
                        t.max_attempts.to_string(),
                    ];
                    row.extend(parameters.iter().map(|p| value_of(&t.payload, p)));
                    row.extend([
                        t.assigned_to.clone().unwrap_or_default(),
                        t.started_at.clone().unwrap_or_default(),
                        t.finished_at.clone().unwrap_or_default(),
                        t.runtime_ms.map(|v| v.to_string()).unwrap_or_default(),
                        t.fopt.map(|v| v.to_string()).unwrap_or_default(),
                        t.iter.map(|v| v.to_string()).unwrap_or_default(),
                        t.last_error.clone().unwrap_or_default(),
                        Value::Object(t.payload.clone()).to_string(),
                    ]);
                    row
                })
                .collect();
            output::csv(&header, rows)
        }
        Format::Table if tasks.is_empty() => output::line(&match &status {
            Some(s) => format!("no {s} tasks in job {id}"),
            None => format!("no tasks in job {id}"),
        }),
        Format::Table => output::table(
            &strings(&[
                "ID",
                "STATUS",
                "ATTEMPT",
                "PARAMETERS",
                "SPOT",
                "RUNTIME",
                "LAST ERROR",
            ]),
            tasks
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.status.clone(),
                        format!("{}/{}", t.attempt, t.max_attempts),
                        parameters_of(t, parameters),
                        output::or_dash(t.assigned_to.as_deref()),
                        output::millis(t.runtime_ms),
                        t.last_error
                            .as_deref()
                            .map_or_else(|| "-".into(), |e| output::excerpt(e, 80)),
                    ]
                })
                .collect(),
        ),
    }
}

/// A task's swept values as `name=value`; its whole payload when the job has no sweep (a job
/// of explicit tasks).
fn parameters_of(task: &Task, parameters: &[String]) -> String {
    if parameters.is_empty() {
        return output::excerpt(&Value::Object(task.payload.clone()).to_string(), 80);
    }
    parameters
        .iter()
        .map(|p| format!("{p}={}", value_of(&task.payload, p)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn value_of(payload: &Map<String, Value>, key: &str) -> String {
    payload.get(key).map(value_text).unwrap_or_default()
}

async fn results(client: &Client, id: &str, format: Format) -> Result<(), Failure> {
    let server = |e| Failure::server(client, e);
    if format == Format::Csv {
        // The server's own export, streamed as it made it: one row per DONE task.
        let csv = client.results_csv(id).await.map_err(server)?;
        return output::raw(&csv);
    }
    let job = client.job(id).await.map_err(server)?;
    // Every page; the server serves at most 10000 results a page.
    let mut options = ListOptions {
        status: None,
        cursor: None,
        limit: Some(10_000),
    };
    let mut all = ResultsResponse {
        job_id: job.id.clone(),
        total_completed: 0,
        results: Vec::new(),
        next_cursor: None,
    };
    loop {
        let page = client.results(id, &options).await.map_err(server)?;
        all.total_completed = page.total_completed;
        all.results.extend(page.results);
        match page.next_cursor {
            Some(cursor) => options.cursor = Some(cursor),
            None => break,
        }
    }
    if format == Format::Json {
        return output::json(&all);
    }
    if all.results.is_empty() {
        return output::line(&format!(
            "no results yet: 0 of {} tasks of job {id} are done",
            job.total_tasks
        ));
    }
    let mut header = strings(&["TASK"]);
    header.extend(job.parameters.iter().map(|p| p.to_uppercase()));
    header.extend(strings(&["FOPT", "ITER", "RUNTIME", "SPOT", "ATTEMPT"]));
    let rows = all
        .results
        .iter()
        .map(|r| {
            let mut row = vec![r.task_id.clone()];
            row.extend(job.parameters.iter().map(|p| value_of(&r.payload, p)));
            row.extend([
                output::or_dash(r.fopt),
                output::or_dash(r.iter),
                output::millis(r.runtime_ms),
                output::or_dash(r.spot_id.as_deref()),
                r.attempt.to_string(),
            ]);
            row
        })
        .collect();
    output::table(&header, rows)?;
    if all.total_completed < job.total_tasks {
        output::note(&format!(
            "({} of {} tasks done so far)",
            all.total_completed, job.total_tasks
        ));
    }
    Ok(())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
