//! The entities of the domain: nodes, jobs, tasks, runners, and their statuses.
//!
//! These are domain types, not wire types: field names follow DESIGN.md, not any contract. The
//! API surfaces translate them into each contract's JSON.

use crate::time::Timestamp;
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Implements `as_str`, `Display` and `FromStr` for a status enum with upper-case names.
macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.to_ascii_uppercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownStatus {
                        given: s.to_string(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

/// A status string that names no known status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {given:?}; expected one of {}", expected.join(", "))]
pub struct UnknownStatus {
    pub given: String,
    pub expected: &'static [&'static str],
}

status_enum!(
    /// Where a task is in its lifecycle (DESIGN.md section 1).
    TaskStatus {
        New => "NEW",
        Running => "RUNNING",
        Done => "DONE",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
    }
);

impl TaskStatus {
    /// Terminal tasks never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

status_enum!(
    /// A job's status, derived from its task counts by [`JobCounts::status`].
    JobStatus {
        Pending => "PENDING",
        Running => "RUNNING",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
    }
);

impl JobStatus {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

status_enum!(
    /// A node's health as the registry sees it.
    NodeStatus {
        Up => "UP",
        Draining => "DRAINING",
        Down => "DOWN",
    }
);

/// How many of a job's tasks are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub total: u64,
    pub new: u64,
    pub running: u64,
    pub done: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl JobCounts {
    /// The job's status: cancelled jobs are CANCELLED; a job whose tasks are all DONE is
    /// COMPLETED; a job whose tasks are all terminal with at least one FAILED is FAILED; a job
    /// that has started (ever claimed, or with tasks running or finished) is RUNNING, also while
    /// a failed task waits for its retry; otherwise it is PENDING.
    pub fn status(&self, cancelled: bool, started: bool) -> JobStatus {
        if cancelled {
            JobStatus::Cancelled
        } else if self.total > 0 && self.done == self.total {
            JobStatus::Completed
        } else if self.new + self.running == 0 && self.failed > 0 {
            JobStatus::Failed
        } else if started || self.running + self.done + self.failed + self.cancelled > 0 {
            JobStatus::Running
        } else {
            JobStatus::Pending
        }
    }

    pub fn get(&self, status: TaskStatus) -> u64 {
        match status {
            TaskStatus::New => self.new,
            TaskStatus::Running => self.running,
            TaskStatus::Done => self.done,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }

    /// Whether the per-status counts add up to the total.
    pub fn is_consistent(&self) -> bool {
        self.new + self.running + self.done + self.failed + self.cancelled == self.total
    }
}

/// A job as stored: its configuration and its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    /// Position in creation order; stores use it as the paging cursor.
    pub seq: i64,
    pub name: Option<String>,
    /// Which contract's clients made the job under their own id (`distriqueue` for the
    /// priority-queue contract, `orchion.v1` for the node registry's `SubmitJob`); `None` for
    /// drover's own API.
    pub origin: Option<String>,
    pub priority: i64,
    pub max_attempts: u32,
    pub task_timeout: Duration,
    /// The request that created the job, normalised; kept for display and re-submission.
    pub spec: Value,
    /// What agents run for each task; `None` for jobs served by the user's own workers.
    pub run: Option<crate::run::RunSpec>,
    /// Names of the swept parameters in expansion order (used for result tables).
    pub parameter_names: Vec<String>,
    pub status: JobStatus,
    pub cancelled: bool,
    pub counts: JobCounts,
    pub created_at: Timestamp,
    /// When a task of the job was first claimed.
    pub started_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// What a worker reported about a successful run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskResult {
    pub runtime_ms: Option<i64>,
    pub iter: Option<i64>,
    pub fopt: Option<f64>,
    pub result_json: Option<String>,
    /// The tail of what the run printed (stdout and stderr), for people reading the result.
    pub output: Option<String>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    pub job_id: String,
    /// The task's index in its job (0-based, the sweep's expansion order); stores use it as the
    /// paging cursor.
    pub seq: i64,
    pub payload: Map<String, Value>,
    pub status: TaskStatus,
    pub attempt: u32,
    pub max_attempts: u32,
    pub assigned_to: Option<String>,
    pub started_at: Option<Timestamp>,
    pub lease_expires_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub result: TaskResult,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
}

/// A task handed to a node by a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTask {
    pub id: String,
    pub job_id: String,
    pub attempt: u32,
    /// The payload as JSON text, exactly as stored.
    pub payload: String,
    pub lease_expires_at: Timestamp,
}

status_enum!(
    /// A runner is STARTING from the moment its slot is reserved until its sandbox answers to
    /// its driver, then RUNNING until it is removed.
    RunnerStatus {
        Starting => "STARTING",
        Running => "RUNNING",
    }
);

status_enum!(
    /// The state of one replica record of an object (`replicas.rs` says which count).
    ReplicaState {
        /// The node holds a good copy.
        Healthy => "HEALTHY",
        /// The node reported its copy lost (`/replica/mark_missing`).
        Missing => "MISSING",
        /// A replacement assigned by placement or repair, not yet marked healed.
        Pending => "PENDING",
    }
);

/// A sandbox provisioned for one user session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub session_id: String,
    /// `docker` or `process`.
    pub driver: String,
    /// The driver's handle (container id, process id); `None` while STARTING.
    pub instance: Option<String>,
    /// Where clients reach it; `None` while STARTING.
    pub endpoint: Option<String>,
    pub status: RunnerStatus,
    /// The one shared runner of reuse mode.
    pub singleton: bool,
    pub created_at: Timestamp,
    pub last_heartbeat: Timestamp,
    /// The hash of the session token its provisioning client was given
    /// (`credential::hash`); `None` for a runner recorded before tokens existed.
    pub token_hash: Option<String>,
}

impl Runner {
    /// Whether the runner has had no heartbeat (nor start) since `cutoff`.
    pub fn inactive_since(&self, cutoff: Timestamp) -> bool {
        self.last_heartbeat < cutoff
    }
}

/// The endpoint of a runner published on `port` of `host`, as clients are told it: the
/// session-runners contract builds `${RUNNERS_HOST}:${port}`, so its users may give the host
/// with its scheme (`https://r.example.com`), which is kept; a bare host name or address gets
/// `http://` (an IPv6 address in brackets). A host that [`runners_host_base`] refuses is never
/// configured (the server refuses it at start-up).
pub fn runner_endpoint(host: &str, port: u16) -> String {
    let base = runners_host_base(host).unwrap_or_else(|_| format!("http://{host}"));
    format!("{base}:{port}")
}

/// What a runners host (`RUNNERS_HOST`) gives a runner's endpoint before its port: the scheme
/// and host, `http://` when none is given; or why the setting is not a host, in words that say
/// what to write instead.
pub fn runners_host_base(host: &str) -> Result<String, String> {
    let hint = "give a host name or address (r.example.com, 10.0.0.5, ::1), optionally with \
                http:// or https://, without a port or a path: drover adds each runner's port";
    let (scheme, rest) = match host.split_once("://") {
        Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
        Some((other, _)) => {
            return Err(format!(
                "runners host {host:?}: the scheme {other:?} is not http or https; {hint}"
            ));
        }
        None => ("http", host),
    };
    let bad = |why: &str| Err(format!("runners host {host:?}: {why}; {hint}"));
    if rest.is_empty() {
        return bad("no host is given");
    }
    if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
        return bad("it has more than a host");
    }
    let bracketed = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    let name = match bracketed {
        Some(v6) => {
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return bad("the address in brackets is not an IPv6 address");
            }
            rest.to_string()
        }
        None if rest.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{rest}]"),
        None if rest.contains(':') => return bad("it has a port"),
        None => rest.to_string(),
    };
    Ok(format!("{scheme}://{name}"))
}

/// Static facts a node declares when it registers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    pub address: String,
    pub hostname: Option<String>,
    pub zone: Option<String>,
    pub labels: Map<String, Value>,
    pub capacity: Capacity,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capacity {
    pub cores: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub gpus: Option<i64>,
    pub disk_bytes: Option<i64>,
}

/// Live figures a node sends with each heartbeat. `None` leaves the stored value as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    pub address: Option<String>,
    pub cpu_load: Option<f64>,
    pub running_tasks: Option<i64>,
    pub total_cores: Option<i64>,
    pub free_memory_bytes: Option<i64>,
}

/// A node in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub info: NodeInfo,
    pub cpu_load: Option<f64>,
    pub running_tasks: i64,
    pub free_memory_bytes: Option<i64>,
    pub status: NodeStatus,
    pub registered_at: Timestamp,
    pub last_heartbeat: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(new: u64, running: u64, done: u64, failed: u64, cancelled: u64) -> JobCounts {
        JobCounts {
            total: new + running + done + failed + cancelled,
            new,
            running,
            done,
            failed,
            cancelled,
        }
    }

    #[test]
    fn runner_endpoints_bracket_ipv6_hosts() {
        assert_eq!(runner_endpoint("localhost", 3000), "http://localhost:3000");
        assert_eq!(runner_endpoint("::1", 3000), "http://[::1]:3000");
        assert_eq!(runner_endpoint("[::1]", 3000), "http://[::1]:3000");
        // The contract's users write the scheme into RUNNERS_HOST: it is kept.
        assert_eq!(
            runner_endpoint("https://r.example.com", 40545),
            "https://r.example.com:40545"
        );
        assert_eq!(
            runner_endpoint("http://10.0.0.5", 3000),
            "http://10.0.0.5:3000"
        );
        assert_eq!(runner_endpoint("https://[::1]", 3000), "https://[::1]:3000");
        for refused in [
            "",
            "https://",
            "ftp://r.example.com",
            "r.example.com:8080",
            "https://r.example.com/runners",
            "r.example.com x",
            "[not-v6]",
        ] {
            let why = runners_host_base(refused).unwrap_err();
            assert!(
                why.contains("without a port or a path"),
                "{refused:?}: {why}"
            );
        }
    }

    #[test]
    fn job_status_follows_counts() {
        assert_eq!(
            counts(3, 0, 0, 0, 0).status(false, false),
            JobStatus::Pending
        );
        assert_eq!(
            counts(2, 1, 0, 0, 0).status(false, true),
            JobStatus::Running
        );
        assert_eq!(
            counts(2, 0, 1, 0, 0).status(false, true),
            JobStatus::Running
        );
        assert_eq!(
            counts(0, 1, 1, 1, 0).status(false, true),
            JobStatus::Running
        );
        assert_eq!(
            counts(0, 0, 3, 0, 0).status(false, true),
            JobStatus::Completed
        );
        assert_eq!(counts(0, 0, 2, 1, 0).status(false, true), JobStatus::Failed);
        assert_eq!(
            counts(1, 0, 2, 0, 0).status(true, true),
            JobStatus::Cancelled
        );
        // A job whose only started task failed and waits for its retry is still running.
        assert_eq!(
            counts(3, 0, 0, 0, 0).status(false, true),
            JobStatus::Running
        );
    }

    #[test]
    fn statuses_parse_case_insensitively_and_explain_mistakes() {
        assert_eq!("done".parse::<TaskStatus>(), Ok(TaskStatus::Done));
        let err = "FINISHED".parse::<JobStatus>().unwrap_err();
        assert!(err.to_string().contains("PENDING, RUNNING, COMPLETED"));
    }
}
