//! The client commands (`status`, `submit`, `job ...`, `task`, `nodes`, `runners`, `cluster`,
//! `journal ...`): their arguments and help texts, the
//! connection to the server, and the translation of every outcome into a message and an exit
//! status.
//!
//! Each command reads its input, makes its calls through `drover_client::Client` and prints.
//! Nothing here decides what the server decides (a job's status, whether a request is valid):
//! the server's answer is final and is printed as it came. Only `run` ends the process; every
//! command returns an [`Outcome`] or a [`Failure`] to it.

mod cluster;
mod jobfile;
mod jobs;
mod journal;
mod nodes;
mod output;
mod runners;
mod status;
mod task;
mod watch;

use clap::{Args, Subcommand};
use drover_client::{Client, ClientError, ServerList};
use std::io::Write;

/// Where the client commands look for a server when neither --server nor DROVER_SERVER says.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the watched job ended FAILED or CANCELLED (or the output could not be written)
  2  bad usage or a bad job file
  3  the server refused the request or could not be reached";

const SUBMIT_EXAMPLES: &str = "\
Job file (TOML; a .json file, or one starting with '{', is read as JSON):
  name = \"rastrigin sweep\"
  command = [\"python3\", \"./optimize.py\", \"--algorithm\", \"{algorithm}\", \"--seed\", \"{seed}\"]
  priority = 0                 # higher runs first
  max_attempts = 3             # runs per task
  task_timeout = \"2m\"          # or task_timeout_seconds = 120
  retry_on_failure = true
  [env]                        # values may use placeholders too
  PYTHONUNBUFFERED = \"1\"
  [parameters]                 # swept in this order: the first varies slowest
  algorithm = [\"random\", \"pso\", \"de\"]
  seed = { min = 1, max = 5, step = 1 }
  [shared]                     # copied into every task's payload
  function = \"rastrigin\"

  Instead of [parameters], a job may list its tasks as [[tasks]] tables. The API's own
  field names (jarPath, mainClass, maxAttempts, taskTimeoutSeconds, ...) are accepted too, so
  a JSON body for POST /api/v1/jobs works unchanged. Unknown keys are errors.

Paths in `command`:
  An element that starts with ./ or ../ is a path relative to the job file's directory and
  is made absolute when the job is submitted, so the job works whatever directory you submit
  it from. Agents must see the same path (a shared or identical file system). No other
  element is changed: {placeholders} are filled in by the agent for each task.

Examples:
  drover submit sweep.toml                       # prints the job id and its task count
  drover submit sweep.toml --watch               # then follows it until it ends
  drover submit job.json --output json | jq -r .jobId
  DROVER_SERVER=http://coordinator:8080 DROVER_API_KEY=\"$KEY\" drover submit sweep.toml";

const JOB_EXAMPLES: &str = "\
Examples:
  drover job list --status RUNNING
  drover job status job-0192...
  drover job watch job-0192...                   # exit 0 once COMPLETED, 1 if FAILED or CANCELLED
  drover job tasks job-0192... --status FAILED   # which tasks failed, and their last error
  drover job results job-0192... --output csv > results.csv
  drover job cancel job-0192...";

const NODES_EXAMPLES: &str = "\
Examples:
  drover nodes
  drover nodes --output json | jq '.spots[] | select(.status == \"DOWN\") | .id'
  drover nodes --server http://coordinator:8080 --output csv
  drover nodes drain spot-0192...                # finish what it holds, claim nothing new
  drover nodes undrain spot-0192...";

const RUNNERS_EXAMPLES: &str = "\
Examples:
  drover runners
  drover runners --output json | jq '.runners[] | select(.idleSeconds > 30) | .sessionId'";

const JOURNAL_EXAMPLES: &str = "\
Examples:
  drover journal tail                            # the last 20 entries
  drover journal tail --follow                   # then every new one as it is written
  drover journal tail --after 0 --json > journal.jsonl   # the whole journal, one entry a line
  drover journal tail --follow --json | jq -c 'select(.kind == \"task_failed\")'
  drover journal verify                          # exit 1 and the differences if any
  drover journal verify --json | jq .details";

const JOURNAL_EXIT_STATUS: &str = "\
Exit status:
  0  success (verify: the journal and the tables agree)
  1  verify found inconsistencies (or the output could not be written)
  2  bad usage
  3  the server refused the request or could not be reached";

const CLUSTER_EXAMPLES: &str = "\
Examples:
  drover cluster
  drover cluster --server http://replica-2:8080   # any replica answers; each says its own role
  drover cluster --output json | jq -r .leader";

const STATUS_EXAMPLES: &str = "\
Examples:
  drover status
  drover status --server http://coordinator:8080
  drover status --output json | jq '.nodes.UP // 0'";

const TASK_EXAMPLES: &str = "\
Examples:
  drover task task-0192...-7
  drover job tasks job-0192... --status FAILED   # find the failed tasks' ids first
  drover task task-0192...-7 --output json | jq -r .lastError";

/// The client commands, flattened into drover's top-level commands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Show the overview of a server: version, health, leader, nodes, jobs and tasks.
    ///
    /// One screen to start from: the server's version and health, the answering replica and
    /// the leader, the worker machines (spots) by status, the jobs by status, and how many
    /// tasks wait to be claimed and run now. Jobs are counted up to 10000 per status (shown as
    /// 10000+ beyond). An unhealthy server is shown with the reason, exit 0.
    #[command(after_long_help = format!("{STATUS_EXAMPLES}\n\n{EXIT_STATUS}"))]
    Status(status::StatusArgs),

    /// Submit a job file: one task per point of its parameter sweep.
    ///
    /// Reads a job file (TOML, or JSON), checks it, and creates the job on the server, which
    /// expands it into tasks (the cartesian product of its parameters, first varying slowest)
    /// for agents to claim. Prints the job's id and how many tasks it has. With --watch it then
    /// follows the job as `drover job watch` does, and exits as that does.
    #[command(after_long_help = format!("{SUBMIT_EXAMPLES}\n\n{EXIT_STATUS}"))]
    Submit(jobs::SubmitArgs),

    /// List, inspect, follow and cancel jobs, and fetch their results.
    ///
    /// Every job command talks to the server (--server, DROVER_SERVER; several URLs are
    /// replicas of one coordinator) and prints a table, or JSON of the API's own types with
    /// --output json, or CSV with --output csv where the answer is a list.
    #[command(after_long_help = format!("{JOB_EXAMPLES}\n\n{EXIT_STATUS}"))]
    Job(jobs::JobArgs),

    /// Show one task in full: status, attempts, node, timings, error, output and result.
    ///
    /// Unlike `drover job tasks`, which cuts each error to a table cell, this prints the task's
    /// whole last error, the output its run printed and its result document, as the server
    /// keeps them. An id the server does not know exits 3.
    #[command(after_long_help = format!("{TASK_EXAMPLES}\n\n{EXIT_STATUS}"))]
    Task(task::TaskArgs),

    /// List the worker machines (spots) the server knows; drain and undrain them.
    ///
    /// A spot is UP while it sends heartbeats; one that is silent for the server's spot timeout
    /// is marked DOWN and its tasks go back to the queue. A DRAINING spot (`drover nodes drain
    /// ID`) finishes what it holds and claims nothing new until `drover nodes undrain ID`.
    #[command(after_long_help = format!("{NODES_EXAMPLES}\n\n{EXIT_STATUS}"))]
    Nodes(nodes::NodesArgs),

    /// List the session runners: their session, driver, endpoint, age and last heartbeat.
    ///
    /// Runners are sandboxes (containers or processes) the server provisions per user session
    /// through /api/runner/provision; one without a heartbeat for the inactivity timeout is
    /// removed.
    #[command(after_long_help = format!("{RUNNERS_EXAMPLES}\n\n{EXIT_STATUS}"))]
    Runners(runners::RunnersArgs),

    /// Show the server replicas: which one leads, under which epoch, and who was seen lately.
    ///
    /// Replicas of one database elect one leader through a lease in the database; the leader
    /// runs the background work (reapers, runner clean-up), the others serve requests only.
    /// Prints the answering replica's id and role, the leader, the lease's epoch (one more at
    /// each change of leader) and expiry, and every replica heard from within one lease TTL,
    /// with when it joined. A server on SQLite is alone and always leads.
    #[command(after_long_help = format!("{CLUSTER_EXAMPLES}\n\n{EXIT_STATUS}"))]
    Cluster(cluster::ClusterArgs),

    /// Read, follow and check the server's event journal.
    ///
    /// Every change the server acknowledges (a spot registered or gone DOWN, a job created or
    /// cancelled, a task claimed, completed, failed or taken back, a runner started, an object
    /// or replica recorded) is also written, in the same transaction, as an entry of the
    /// event journal. Entries are numbered 1, 2, 3, ... without gaps; each has a time, a kind
    /// (`job_created`, `task_claimed`, ...) and the changes it made. Replaying the entries from
    /// the first rebuilds the state the server's tables hold (liveness such as heartbeats and
    /// load is left out), which is what `verify` checks and what the journal's sinks keep.
    /// `tail` reads the entries; both need the API key when the server has one, even with
    /// --public-reads (the journal names runner sessions).
    #[command(after_long_help = format!("{JOURNAL_EXAMPLES}\n\n{JOURNAL_EXIT_STATUS}"))]
    Journal(journal::JournalArgs),
}

/// Which server to talk to, and the key to show it. Global, so that they may also follow a
/// `job` subcommand (`drover job list --server URL`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct Connection {
    /// URL of the drover server; several, comma-separated, are replicas of one coordinator:
    /// each command starts at a random one and goes on to the next when one cannot be used
    /// (a job is submitted again elsewhere only when it certainly was not created).
    #[arg(
        long,
        global = true,
        env = "DROVER_SERVER",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        default_value = DEFAULT_SERVER
    )]
    server: Vec<String>,

    /// API key, sent as `Authorization: Bearer KEY`; needed when the server was started with
    /// --api-key (with --public-reads too, only for changes such as submit, cancel and drain,
    /// and for the journal).
    #[arg(
        long,
        global = true,
        env = "DROVER_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,

    /// PEM file of certificates to trust for an https server, besides the system's (e.g. a
    /// private CA).
    #[arg(long, global = true, env = "DROVER_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
}

impl Connection {
    /// The API key given, if any.
    fn api_key(&self) -> Option<String> {
        self.api_key.clone().filter(|k| !k.is_empty())
    }

    /// A client of the chosen server or servers; refuses a URL that this client cannot use.
    fn client(&self) -> Result<Client, Failure> {
        let mut client = Client::with_servers(servers(&self.server)?);
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                Failure::Usage(format!("--ca-cert: cannot read {}: {e}", path.display()))
            })?;
            client = client
                .with_root_certificate(&pem)
                .map_err(|e| Failure::Usage(format!("--ca-cert {}: {e}", path.display())))?;
        }
        Ok(match self.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => client.with_api_key(key),
            None => client,
        })
    }
}

/// The servers of `--server` / `DROVER_SERVER`. An empty DROVER_SERVER (`DROVER_SERVER= drover
/// ...`) means "not set", as for keys.
fn servers(given: &[String]) -> Result<ServerList, Failure> {
    if given.iter().all(|s| s.trim().is_empty()) {
        return ServerList::parse([DEFAULT_SERVER]).map_err(|e| Failure::Usage(e.to_string()));
    }
    ServerList::parse(given).map_err(|e| Failure::Usage(format!("--server: {e}")))
}

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A watched job ended FAILED or CANCELLED.
    JobUnsuccessful,
    /// `drover journal verify` found the journal and the tables apart.
    Inconsistent,
}

/// Why a command failed; each kind has its own exit status.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or a bad job file (exit 2), caught before anything was sent.
    Usage(String),
    /// The server refused the request or could not be reached (exit 3).
    Server {
        url: String,
        error: ClientError,
        /// What was being done, e.g. "while watching job-…, after retrying for 1m".
        context: Option<String>,
    },
    /// The output could not be written (exit 1, or quietly 0 when the reader went away).
    Output(std::io::Error),
    /// The process could not set itself up (exit 1).
    Runtime(std::io::Error),
    /// A local part the command works on (a sink, a store) refused or could not be reached
    /// (exit 3, as a server that does).
    Local(String),
    /// The server refused, worded by the command because it knows what to try instead (an
    /// unknown task: where its id can be found) (exit 3).
    Refused(String),
}

impl Failure {
    pub fn server(client: &Client, error: ClientError) -> Failure {
        Failure::Server {
            url: client.base_url().to_string(),
            error,
            context: None,
        }
    }

    fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Server { .. } | Failure::Local(_) | Failure::Refused(_) => 3,
            // `drover job list | head -1` closing the pipe early is not a failure.
            Failure::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Failure::Output(_) | Failure::Runtime(_) => 1,
        }
    }

    /// The message for stderr: `error: ...`, then hints when there is something to try.
    fn message(&self) -> Option<String> {
        match self {
            Failure::Usage(m) | Failure::Local(m) | Failure::Refused(m) => {
                Some(format!("error: {m}"))
            }
            Failure::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => None,
            Failure::Output(e) => Some(format!("error: cannot write the output: {e}")),
            Failure::Runtime(e) => Some(format!("error: cannot start the async runtime: {e}")),
            Failure::Server {
                url,
                error,
                context,
            } => {
                let context = context
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                Some(match error {
                    ClientError::Api {
                        status,
                        code,
                        message,
                    } => {
                        let mut m = format!(
                            "error: the server answered {status} {code}: {message}{context}"
                        );
                        if *status == 401 {
                            m.push_str(
                                "\nhint: this server needs its API key: pass --api-key KEY or set \
                                 DROVER_API_KEY",
                            );
                        }
                        m
                    }
                    ClientError::Transport(e) => format!(
                        "error: cannot reach the drover server at {url}: {}{context}\n\
                         hint: is `drover server` running there? Choose the server with --server \
                         URL or DROVER_SERVER",
                        drover_core::text::error_chain(e)
                    ),
                    ClientError::Decode(m) => format!(
                        "error: unexpected answer from {url}: {m}{context}\n\
                         hint: is {url} a drover server of a matching version?"
                    ),
                    ClientError::Failover { .. } => format!(
                        "error: {}{context}\n\
                         hint: is `drover server` running there? Choose the servers with \
                         --server URL[,URL...] or DROVER_SERVER",
                        drover_core::text::error_chain(error)
                    ),
                })
            }
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Output(e)
    }
}

/// Runs a client command and ends the process with its exit status.
pub fn run(command: ClientCommand) -> anyhow::Result<()> {
    // One thread is plenty for a handful of sequential requests.
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(dispatch(command)),
        Err(e) => Err(Failure::Runtime(e)),
    };
    let code = match result {
        Ok(Outcome::Done) => 0,
        Ok(Outcome::JobUnsuccessful | Outcome::Inconsistent) => 1,
        Err(failure) => {
            if let Some(message) = failure.message() {
                let _ = writeln!(std::io::stderr(), "{message}");
            }
            failure.exit_code()
        }
    };
    // `process::exit` skips destructors, so nothing buffered may be left behind.
    let _ = std::io::stdout().flush();
    if code == 0 {
        return Ok(());
    }
    std::process::exit(code)
}

async fn dispatch(command: ClientCommand) -> Result<Outcome, Failure> {
    match command {
        ClientCommand::Status(args) => status::run(args).await,
        ClientCommand::Task(args) => task::run(args).await,
        ClientCommand::Submit(args) => jobs::submit(args).await,
        ClientCommand::Job(args) => jobs::job(args).await,
        ClientCommand::Nodes(args) => nodes::run(args).await,
        ClientCommand::Runners(args) => runners::run(args).await,
        ClientCommand::Cluster(args) => cluster::run(args).await,
        ClientCommand::Journal(args) => journal::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(given: &[&str]) -> Result<Vec<String>, String> {
        let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
        match servers(&given) {
            Ok(list) => Ok(list.urls().to_vec()),
            Err(Failure::Usage(m)) => Err(m),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_urls_are_a_list_and_blank_means_the_default() {
        assert_eq!(urls(&[""]).unwrap(), [DEFAULT_SERVER]);
        assert_eq!(urls(&["  "]).unwrap(), [DEFAULT_SERVER]);
        assert_eq!(
            urls(&["http://a:8080", "https://b:8443/"]).unwrap(),
            ["http://a:8080", "https://b:8443"]
        );
        let e = urls(&["http://a:8080", "b:8080"]).unwrap_err();
        assert!(
            e.starts_with("--server: \"b:8080\" is not an http://"),
            "{e}"
        );
    }
}
