//! `drover journal tail`, `drover journal verify` and `drover journal rebuild`: read the
//! server's event journal, follow it, ask the server to check it against its tables, and
//! rebuild a store from the blobs a journal was published as.
//!
//! `tail` and `verify` are calls of `drover_client::Client` and a printout. `rebuild` works on
//! local parts, without a server: it reads the blobs back from sinks
//! (`drover_server::journal::read_back`), writes them into an empty store
//! (`JournalStore::restore`), and checks that store (`drover_server::consistency::check`).
//! Nothing here replays or judges an entry itself.

use super::output;
use super::{Connection, Failure, Outcome, watch};
use clap::{Args, Subcommand};
use drover_api::JournalVerification;
use drover_client::Client;
use drover_core::journal::{Change, Entry, TaskMove};
use std::time::{Duration, Instant};

/// Entries per request while catching up with the head.
const PAGE: u32 = 1000;
/// How long one long-poll of `--follow` waits on the server for the next entry (its maximum).
const FOLLOW_WAIT: Duration = Duration::from_secs(30);
/// How long one request may take on top of its wait: a hung server then counts as a failing
/// one, which `--follow` rides out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `--follow` rides out an unreachable or failing server before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// The pause between two tries while the server fails.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Changes summarised on an entry's line; the rest are counted.
const SHOWN_CHANGES: usize = 3;

/// `drover journal`: the journal subcommands share the connection options.
#[derive(Args)]
pub struct JournalArgs {
    #[command(subcommand)]
    command: JournalCommand,

    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Print journal entries, oldest first; with --follow, keep printing new ones as they come.
    ///
    /// Without --after, starts with the last 20 entries (--last N for another number), as
    /// `tail` does; `--after 0` starts from the first entry. Prints every entry up to the
    /// journal's current head, one per line: its number, time, kind, how many changes it
    /// holds and the first few of them (`node spot-… UP`, `tasks DONE: task-…-0, task-…-4`).
    /// With --json, each entry is one JSON object per line, in the journal's own encoding
    /// (seq, at, kind, changes), for `jq` or a program that replays it. With --follow it then
    /// waits on the server for each next entry (a long-poll, no busy polling) and prints it as
    /// soon as it is written, until Ctrl-C; a server that fails for a while is retried for up
    /// to a minute.
    Tail {
        /// Start after this entry (0: from the first).
        #[arg(long, value_name = "N", conflicts_with = "last")]
        after: Option<u64>,

        /// Start with the last N entries, when --after does not say where to start.
        #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
        last: u64,

        /// Keep waiting for new entries and print them as they are written, until Ctrl-C.
        #[arg(long, short)]
        follow: bool,

        /// One JSON object per entry and line, in the journal's own encoding.
        #[arg(long)]
        json: bool,
    },

    /// Check the journal: replay it on the server and compare with the live tables.
    ///
    /// The server reads its tables and the journal's head in one snapshot, replays the entries
    /// from 1 to that head, and compares the state they rebuild with the tables: every node,
    /// job, task that left its job's initial state, runner, object, replica and the
    /// scheduler's weights, field by field, and each job's counters with its tasks. Writes
    /// made while it runs come after the head and are left for the next check. Any difference,
    /// and any missing entry, is an inconsistency; each is printed on a line of its own,
    /// naming the item (or entry) and both values. Exits 0 when there is none and 1 when there
    /// are some, so a script or a cron job can alert on it.
    Verify {
        /// Print the server's report as JSON (the exit status is the same).
        #[arg(long)]
        json: bool,
    },

    /// Rebuild a store from the blobs a journal was published as (no server needed).
    ///
    /// Reads every blob back from the sinks given with --from (the primary, and any fallback
    /// whose blobs were not reconciled yet: together they must hold every entry from the
    /// first), replays them and writes the state into the store --db names, which must be
    /// empty (a new SQLite file, or an empty PostgreSQL database); the entries become its own
    /// journal, counted as published. Then checks the new store: its journal replayed equals
    /// its tables. Start `drover server --db` on it afterwards. What the journal does not keep
    /// starts afresh: nodes have no address until they heartbeat, running tasks get a new
    /// lease, results of finished tasks are empty.
    ///
    ///   drover journal rebuild --from file:./data/journal-sink --db ./rebuilt/drover.db
    ///   drover journal rebuild --from postgres://u@db/journal --from http://10.0.0.9:8080 \
    ///       --db postgres://u@db/drover_rebuilt
    Rebuild {
        /// A sink to read blobs from: file:DIR (or a plain path), postgres://..., or
        /// http(s)://host:port (another drover server's /da/blob); repeat for several.
        #[arg(long = "from", value_name = "SINK", required = true)]
        from: Vec<String>,

        /// The store to rebuild into: a SQLite file (created) or postgres://...; it must hold
        /// nothing yet.
        #[arg(long, value_name = "PATH|URL")]
        db: String,

        /// How long one read of a sink may take.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        timeout: u64,
    },
}

pub async fn run(args: JournalArgs) -> Result<Outcome, Failure> {
    let client = args.connection.client()?;
    match args.command {
        JournalCommand::Tail {
            after,
            last,
            follow,
            json,
        } => tail(&client, after, last, follow, json).await,
        JournalCommand::Verify { json } => verify(&client, json).await,
        JournalCommand::Rebuild { from, db, timeout } => {
            rebuild(
                &from,
                &db,
                Duration::from_secs(timeout),
                args.connection.api_key(),
            )
            .await
        }
    }
}

async fn rebuild(
    from: &[String],
    db: &str,
    timeout: Duration,
    api_key: Option<String>,
) -> Result<Outcome, Failure> {
    use drover_server::journal::{SinkSpec, open_sink, read_back};
    let mut sinks = Vec::with_capacity(from.len());
    for text in from {
        let spec: SinkSpec = text
            .parse()
            .map_err(|e| Failure::Usage(format!("--from {text:?}: {e}")))?;
        let sink = open_sink(&spec, timeout, api_key.as_deref())
            .await
            .map_err(|e| Failure::Local(format!("opening the sink {spec}: {e}")))?;
        sinks.push((spec.to_string(), sink));
    }
    drover_store::check_url(db).map_err(|e| Failure::Usage(format!("--db {db:?}: {e}")))?;
    // The job watcher's bar: blobs read of the sink's head, and which sink.
    let bar = watch::new_bar(0);
    let entries = read_back(&sinks, |sink, height, head| {
        bar.set_length(head);
        bar.set_position(height);
        bar.set_message(sink.to_string());
    })
    .await
    .map_err(|e| Failure::Local(format!("reading the journal back: {e}")))?;
    bar.finish_and_clear();
    eprintln!(
        "read {} entries from {} sink(s)",
        entries.len(),
        sinks.len()
    );
    let store = drover_store::open(db)
        .map_err(|e| Failure::Local(format!("opening the store {db}: {e}")))?;
    let now = chrono::Utc::now();
    let last = store
        .journal
        .restore(entries, now)
        .await
        .map_err(|e| Failure::Local(format!("rebuilding into {db}: {e}")))?;
    let report = drover_server::consistency::check(store.journal.as_ref(), now)
        .await
        .map_err(|e| Failure::Local(format!("checking {db}: {e}")))?;
    let _ = store.ops.close().await;
    output::line(&format!(
        "rebuilt {db} from entries 1 to {last}; checked {} items: {}",
        report.items_verified,
        if report.is_consistent() {
            "consistent".to_string()
        } else {
            format!("{} inconsistencies", report.inconsistencies())
        }
    ))?;
    for detail in &report.details {
        output::line(&format!("- {detail}"))?;
    }
    Ok(if report.is_consistent() {
        Outcome::Done
    } else {
        Outcome::Inconsistent
    })
}

async fn verify(client: &Client, json: bool) -> Result<Outcome, Failure> {
    let report = client
        .verify_journal()
        .await
        .map_err(|e| Failure::server(client, e))?;
    if json {
        output::json(&report)?;
    } else {
        print_report(&report)?;
    }
    Ok(if report.consistent {
        Outcome::Done
    } else {
        Outcome::Inconsistent
    })
}

fn print_report(r: &JournalVerification) -> Result<(), Failure> {
    let verdict = if r.consistent {
        "yes: the journal and the tables agree".to_string()
    } else {
        let n = r.inconsistencies;
        format!("NO: {n} inconsistenc{}", if n == 1 { "y" } else { "ies" })
    };
    output::record(vec![
        ("Consistent", verdict),
        ("Items verified", r.items_verified.to_string()),
        ("Entries replayed", format!("1 to {}", r.head)),
        ("Verified at", r.verified_at.clone()),
    ])?;
    if !r.details.is_empty() {
        output::line("")?;
        for detail in &r.details {
            output::line(&format!("- {detail}"))?;
        }
    }
    Ok(())
}

async fn tail(
    client: &Client,
    after: Option<u64>,
    last: u64,
    follow: bool,
    json: bool,
) -> Result<Outcome, Failure> {
    let client = client.clone().with_timeout(REQUEST_TIMEOUT);
    let mut after = match after {
        Some(n) => n,
        None => {
            let first = client
                .journal(0, 1, Duration::ZERO)
                .await
                .map_err(|e| Failure::server(&client, e))?;
            first.head.saturating_sub(last)
        }
    };
    // Up to the head as it stands now.
    loop {
        let page = client
            .journal(after, PAGE, Duration::ZERO)
            .await
            .map_err(|e| Failure::server(&client, e))?;
        let Some(seq) = print_entries(&page.entries, json)? else {
            break;
        };
        after = seq;
        if seq >= page.head {
            break;
        }
    }
    if !follow {
        return Ok(Outcome::Done);
    }
    tokio::select! {
        followed = follow_from(&client, after, json) => followed,
        _ = tokio::signal::ctrl_c() => Ok(Outcome::Done),
    }
}

/// Long-polls for the entries after `after` and prints them, until an error that does not
/// pass within [`RETRY_FOR`].
async fn follow_from(client: &Client, mut after: u64, json: bool) -> Result<Outcome, Failure> {
    let mut failing_since: Option<Instant> = None;
    loop {
        match client.journal(after, PAGE, FOLLOW_WAIT).await {
            Ok(page) => {
                if failing_since.take().is_some() {
                    output::note("the server answers again");
                }
                if let Some(seq) = print_entries(&page.entries, json)? {
                    after = seq;
                }
            }
            Err(error) if watch::passing(&error) => {
                let since = *failing_since.get_or_insert_with(|| {
                    output::note(&format!(
                        "cannot read the journal: {}; retrying for up to {}",
                        drover_core::text::error_chain(&error),
                        output::short_duration(RETRY_FOR)
                    ));
                    Instant::now()
                });
                if since.elapsed() >= RETRY_FOR {
                    return Err(Failure::Server {
                        url: client.base_url().to_string(),
                        error,
                        context: Some(format!(
                            "while following the journal after entry {after}; gave up after \
                             retrying for {}",
                            output::short_duration(RETRY_FOR)
                        )),
                    });
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(error) => return Err(Failure::server(client, error)),
        }
    }
}

/// Prints `entries`, one per line; answers the last one's number, if any.
fn print_entries(entries: &[Entry], json: bool) -> Result<Option<u64>, Failure> {
    for entry in entries {
        if json {
            let text = serde_json::to_string(entry).map_err(std::io::Error::from)?;
            output::line(&text)?;
        } else {
            output::line(&entry_line(entry))?;
        }
    }
    Ok(entries.last().map(|e| e.seq))
}

/// `seq  at  kind  N changes  first, second, third, +M more`.
fn entry_line(e: &Entry) -> String {
    let n = e.changes.len();
    let count = if n == 1 {
        "1 change".to_string()
    } else {
        format!("{n} changes")
    };
    format!(
        "{:>6}  {}  {:<20}  {:<10}  {}",
        e.seq,
        drover_core::time::format(&e.at),
        e.kind,
        count,
        summary(&e.changes)
    )
}

/// The first few changes in a few words each; moves of several tasks to one place (a batch of
/// claims, of completions) as that place and the first few task ids.
fn summary(changes: &[Change]) -> String {
    let first_few = |words: Vec<String>| {
        let mut shown: Vec<String> = words.into_iter().take(SHOWN_CHANGES).collect();
        if changes.len() > SHOWN_CHANGES {
            shown.push(format!("+{} more", changes.len() - SHOWN_CHANGES));
        }
        shown.join(", ")
    };
    let moves: Option<Vec<&TaskMove>> = changes
        .iter()
        .map(|c| match c {
            Change::Task(m) => Some(m),
            _ => None,
        })
        .collect();
    if let Some(moves) = moves.filter(|m| m.len() > 1)
        && moves
            .iter()
            .all(|m| (m.to, &m.node) == (moves[0].to, &moves[0].node))
    {
        let to = match &moves[0].node {
            Some(node) => format!("{} on {node}", moves[0].to),
            None => moves[0].to.to_string(),
        };
        let ids = first_few(moves.iter().map(|m| m.task.clone()).collect());
        return format!("tasks {to}: {ids}");
    }
    first_few(changes.iter().map(change).collect())
}

/// One change in a few words: what it is about, and where that now stands.
fn change(c: &Change) -> String {
    match c {
        Change::Node(n) => format!("node {} {}", n.id, n.status),
        Change::NodeGone { id } => format!("node {id} forgotten"),
        Change::NodeStats { id, .. } => format!("stats of node {id}"),
        Change::Job(j) => format!("job {} ({} tasks)", j.id, j.total),
        Change::JobCancelled { job } => format!("job {job} cancelled"),
        Change::JobPriority { job, priority } => format!("job {job} priority {priority}"),
        Change::Task(m) => match &m.node {
            Some(node) => format!("task {} {} on {node}", m.task, m.to),
            None => format!("task {} {}", m.task, m.to),
        },
        Change::Tasks {
            job,
            to,
            node,
            moves,
        } => {
            let place = match node {
                Some(node) => format!("{to} on {node}"),
                None => to.to_string(),
            };
            let ids: Vec<String> = (moves.iter())
                .map(|(index, _)| drover_core::ids::sweep_task_id(job, *index))
                .collect();
            match &ids[..] {
                [one] => format!("task {one} {place}"),
                _ => {
                    let more = ids.len().saturating_sub(SHOWN_CHANGES);
                    let mut shown: Vec<String> = ids.into_iter().take(SHOWN_CHANGES).collect();
                    if more > 0 {
                        shown.push(format!("+{more} more"));
                    }
                    format!("tasks {place}: {}", shown.join(", "))
                }
            }
        }
        Change::Runner(r) => format!("runner {} {}", r.session, r.status),
        Change::RunnerGone { session } => format!("runner {session} removed"),
        Change::Object(o) => format!("object {} ({} bytes, rf {})", o.hash, o.size, o.rf),
        Change::Replica { hash, node, state } => format!("replica of {hash} on {node} {state}"),
        Change::Scheduler { .. } => "scheduler weights".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::TaskStatus;

    #[test]
    fn an_entry_line_names_its_first_changes_and_counts_the_rest() {
        let moved = |i: u32| {
            Change::Task(TaskMove {
                task: format!("t{i}"),
                job: "job-1".into(),
                to: TaskStatus::Running,
                attempt: 1,
                node: Some("spot-1".into()),
            })
        };
        let entry = Entry {
            seq: 7,
            at: drover_core::time::parse("2026-01-28T12:00:00.000Z").unwrap(),
            kind: "task_claimed".into(),
            changes: (0..5).map(moved).collect(),
        };
        let line = entry_line(&entry);
        assert!(
            line.starts_with("     7  2026-01-28T12:00:00.000Z  task_claimed"),
            "{line}"
        );
        assert!(line.contains("5 changes"), "{line}");
        assert!(
            line.ends_with("tasks RUNNING on spot-1: t0, t1, t2, +2 more"),
            "{line}"
        );

        // Changes of different kinds or places, each in its own words.
        let mut mixed = entry.clone();
        mixed.changes.truncate(2);
        if let Change::Task(m) = &mut mixed.changes[1] {
            m.to = TaskStatus::Done;
            m.node = None;
        }
        mixed.changes.push(Change::NodeGone {
            id: "spot-2".into(),
        });
        let line = entry_line(&mixed);
        assert!(
            line.ends_with("task t0 RUNNING on spot-1, task t1 DONE, node spot-2 forgotten"),
            "{line}"
        );
    }
}
