//! Identifiers for jobs, tasks, nodes, sessions and server instances.
//!
//! Ids are a kind prefix and a UUIDv7 in simple form, so they sort by creation time, which keeps
//! the stores' unique indexes append-mostly. A task of a sweep is named by its job and its index
//! ([`sweep_task_id`]), so a store can name, fetch and list a task before it writes a row for it.

use uuid::Uuid;

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

pub fn job_id() -> String {
    new_id("job")
}

/// The id of task `index` (0-based) of job `job_id`: `task-<the job id's hex>-<index>`.
pub fn sweep_task_id(job_id: &str, index: u64) -> String {
    let hex = job_id.strip_prefix("job-").unwrap_or(job_id);
    format!("task-{hex}-{index}")
}

/// The job id and index a [`sweep_task_id`] names, or `None` if `id` is not one (an id of a row
/// written before sweep task ids existed, or anything else). Only the canonical form parses, so
/// each task has exactly one id.
pub fn parse_sweep_task_id(id: &str) -> Option<(String, u64)> {
    let (hex, index) = sweep_task_id_parts(id)?;
    Some((format!("job-{hex}"), index))
}

/// [`parse_sweep_task_id`] without building the job id: the hex of the job id (what follows
/// `job-`), borrowed from `id`, and the index.
pub fn sweep_task_id_parts(id: &str) -> Option<(&str, u64)> {
    let rest = id.strip_prefix("task-")?;
    let (hex, index) = rest.split_once('-')?;
    let is_hex = hex.len() == 32
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let canonical = !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && (index == "0" || !index.starts_with('0'));
    if !is_hex || !canonical {
        return None;
    }
    Some((hex, index.parse().ok()?))
}

pub fn node_id() -> String {
    new_id("spot")
}

/// A server instance (one data directory), named in the labels of the sandboxes it starts.
pub fn instance_id() -> String {
    new_id("drover")
}

/// A replica's name when it is not given one: the host and process that run it (what an
/// operator looks for in `ps`), then eight random hex digits, so two servers in one process
/// (tests) or a pid reused after a reboot never share a name.
pub fn replica_id(host: &str, pid: u32) -> String {
    let random = Uuid::new_v4().simple().to_string();
    format!("{host}-{pid}-{}", &random[..8])
}

/// A session id for a client that did not bring one: a UUID v4, as the session-runners
/// contract generates.
pub fn session_id() -> String {
    Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_task_id_names_its_job_and_index() {
        let job = job_id();
        let id = sweep_task_id(&job, 17);
        assert_eq!(id, format!("task-{}-17", &job[4..]));
        assert_eq!(parse_sweep_task_id(&id), Some((job.clone(), 17)));
        assert_eq!(sweep_task_id_parts(&id), Some((&job[4..], 17)));
        assert_eq!(
            parse_sweep_task_id(&sweep_task_id(&job, u64::MAX)),
            Some((job, u64::MAX))
        );
    }

    #[test]
    fn only_canonical_sweep_task_ids_parse() {
        let hex = "0193aaaabbbbccccddddeeeeffff0000";
        for id in [
            format!("task-{hex}"),
            format!("task-{hex}-"),
            format!("task-{hex}-01"),
            format!("task-{hex}-+1"),
            format!("task-{hex}-1-2"),
            format!("task-{}-1", hex.to_uppercase()),
            format!("task-{}-1", &hex[1..]),
            format!("job-{hex}-1"),
            format!("task-{hex}-99999999999999999999"),
            // A task id of a row written before sweep task ids (a UUIDv7 of its own).
            format!("task-{hex}"),
        ] {
            assert_eq!(parse_sweep_task_id(&id), None, "{id}");
            assert_eq!(sweep_task_id_parts(&id), None, "{id}");
        }
        assert_eq!(
            parse_sweep_task_id(&format!("task-{hex}-0")),
            Some((format!("job-{hex}"), 0))
        );
    }
}
