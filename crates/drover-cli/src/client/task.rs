//! `drover task ID`: one task in full: its status, attempts, node, timings, and the whole of
//! its last error, its output and its result document, none of them cut to a table cell.
//!
//! One read of `GET /api/v1/tasks/{id}`, printed. The task's status is the server's word; this
//! module only lays it out, and turns "no such task" into a message that says where to look.

use super::output::{self, Format};
use super::{Connection, Failure, Outcome};
use clap::Args;
use drover_api::Task;
use drover_client::ClientError;
use serde_json::Value;

/// The options of `drover task`; its help text is on `ClientCommand::Task`.
#[derive(Args)]
pub struct TaskArgs {
    /// The task's id (task-...), as `drover job tasks JOB` lists them.
    id: String,

    /// Output format: table (the task, then its error, output and result in full) or json (the
    /// server's answer).
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,

    #[command(flatten)]
    connection: Connection,
}

pub async fn run(args: TaskArgs) -> Result<Outcome, Failure> {
    let format = args
        .output
        .require("drover task", &[Format::Table, Format::Json])?;
    let client = args.connection.client()?;
    let task = match client.task(&args.id).await {
        Ok(task) => task,
        Err(ClientError::Api {
            status: 404,
            message,
            ..
        }) => {
            return Err(Failure::Refused(format!(
                "no task {} on {}: {message}\nhint: `drover job tasks JOB` lists the tasks of \
                 a job and their ids",
                args.id,
                client.base_url()
            )));
        }
        Err(e) => return Err(Failure::server(&client, e)),
    };
    match format {
        Format::Json => output::json(&task)?,
        _ => output::line(&describe(&task))?,
    }
    Ok(Outcome::Done)
}

/// The task as text: a record of its fields, then each long text whole under its own heading.
pub fn describe(task: &Task) -> String {
    let mut pairs: Vec<(&str, String)> = vec![
        ("id", task.id.clone()),
        ("job", task.job_id.clone()),
        ("status", task.status.clone()),
        (
            "attempt",
            format!("{} of at most {}", task.attempt, task.max_attempts),
        ),
        ("node", output::or_dash(task.assigned_to.as_deref())),
        ("created", task.created_at.clone()),
        ("started", output::or_dash(task.started_at.as_deref())),
        ("finished", output::or_dash(task.finished_at.as_deref())),
    ];
    if task.finished_at.is_none()
        && let Some(lease) = &task.lease_expires_at
    {
        pairs.push(("lease expires", lease.clone()));
    }
    pairs.push(("runtime", output::millis(task.runtime_ms)));
    if let Some(fopt) = task.fopt {
        pairs.push(("fopt", fopt.to_string()));
    }
    if let Some(iter) = task.iter {
        pairs.push(("iter", iter.to_string()));
    }
    let mut text = output::record_text(pairs);
    text.push_str("\n\npayload:\n");
    text.push_str(&pretty(&Value::Object(task.payload.clone())));
    let sections = [
        ("error", task.last_error.clone()),
        ("output", task.output.clone()),
        ("result", task.result_json.as_deref().map(pretty_text)),
    ];
    for (heading, body) in sections {
        if let Some(body) = body.filter(|b| !b.is_empty()) {
            text.push_str(&format!("\n\n{heading}:\n{}", body.trim_end_matches('\n')));
        }
    }
    text
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A result document indented for reading; as it came when it is not JSON.
fn pretty_text(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .map(|v| pretty(&v))
        .unwrap_or_else(|_| json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task() -> Task {
        Task {
            id: "task-0192-3".into(),
            job_id: "job-0192".into(),
            status: "FAILED".into(),
            attempt: 2,
            max_attempts: 3,
            payload: json!({"seed": 3}).as_object().unwrap().clone(),
            assigned_to: Some("spot-a".into()),
            started_at: Some("2026-01-01T00:00:00.000Z".into()),
            lease_expires_at: None,
            finished_at: Some("2026-01-01T00:00:02.500Z".into()),
            runtime_ms: Some(2500),
            iter: None,
            fopt: None,
            result_json: None,
            last_error: None,
            output: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_long_error_and_output_are_shown_whole() {
        let long_line = "x".repeat(500);
        let mut t = task();
        t.last_error = Some(format!(
            "exit status 1\nTraceback (most recent call last):\n{long_line}\nValueError: bad"
        ));
        t.output = Some("line 1\nline 2\n".into());
        t.result_json = Some(r#"{"fopt":0.5,"deep":{"a":[1,2]}}"#.into());
        let text = describe(&t);
        assert!(text.contains(&long_line), "{text}");
        assert!(
            text.contains("\nerror:\nexit status 1\nTraceback"),
            "{text}"
        );
        assert!(text.contains("ValueError: bad"), "{text}");
        assert!(text.contains("\noutput:\nline 1\nline 2"), "{text}");
        assert!(text.contains("\"deep\": {"), "{text}");
        assert!(!text.contains('…'), "{text}");
    }

    #[test]
    fn the_record_names_status_attempts_node_and_timings() {
        let text = describe(&task());
        for expected in [
            "task-0192-3",
            "job-0192",
            "FAILED",
            "2 of at most 3",
            "spot-a",
            "2026-01-01T00:00:02.500Z",
            "2.5s",
            "\"seed\": 3",
        ] {
            assert!(text.contains(expected), "no {expected:?} in:\n{text}");
        }
        // No empty sections for what the task does not have.
        assert!(!text.contains("error:"), "{text}");
        assert!(!text.contains("result:"), "{text}");
    }
}
