//! Limits that are rules of the domain: how long a job name may be, how many attempts and how
//! long a timeout a job may ask for, how many tasks one claim may take, what a node may
//! announce (its address, its figures, the size of its labels) and how many nodes the registry
//! holds, how long a claim may wait for work, and how many replicas a placement may ask for;
//! and how loaded a claiming node is, which orders the claims that wait for work.
//!
//! This module owns the values and the checks, with the messages users see. It must not know
//! about any wire format: a check names the field it refuses by the contract's name, and a
//! surface turns a [`RuleError`] into its own error body.

use std::ops::RangeInclusive;

/// Longest job name accepted, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// Attempts a job may ask for.
pub const MAX_ATTEMPTS_RANGE: RangeInclusive<u32> = 1..=MAX_ATTEMPTS_LIMIT;
/// Most attempts a job may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest task timeout a job may ask for: one year.
pub const MAX_TASK_TIMEOUT_SECS: u64 = 365 * 24 * 3600;
/// Task timeouts a job may ask for, in seconds.
pub const TASK_TIMEOUT_RANGE_SECS: RangeInclusive<u64> = 1..=MAX_TASK_TIMEOUT_SECS;
/// Most tasks one claim may ask for.
pub const MAX_CLAIM: u32 = 1000;
/// Longest a claim may wait for work (`waitMs`), in milliseconds: well under the usual 60 s
/// proxy and load-balancer idle timeouts, so a long-poll is not cut in the middle.
pub const MAX_WAIT_MS: u64 = 30_000;

/// Default cap on the bytes of one node's labels, as JSON.
pub const DEFAULT_MAX_LABEL_BYTES: u64 = 64 * 1024;
/// Default cap on the nodes the registry holds.
pub const DEFAULT_MAX_SPOTS: u64 = 10_000;
/// Longest host name (RFC 1035) a node may announce as its address.
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest free-text node field (hostname, zone).
pub const MAX_NODE_TEXT_LEN: usize = 253;

/// A value outside what the rules allow; `field` is the request field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: String) -> Result<(), RuleError> {
    Err(RuleError { field, message })
}

/// A job name is at most [`MAX_NAME_LEN`] characters.
pub fn check_job_name(name: &str) -> Result<(), RuleError> {
    if name.chars().count() > MAX_NAME_LEN {
        return refuse("name", format!("at most {MAX_NAME_LEN} characters"));
    }
    Ok(())
}

/// A job makes between 1 and [`MAX_ATTEMPTS_LIMIT`] attempts per task.
pub fn check_max_attempts(max_attempts: u32) -> Result<(), RuleError> {
    if !MAX_ATTEMPTS_RANGE.contains(&max_attempts) {
        return refuse(
            "maxAttempts",
            format!("must be between 1 and {MAX_ATTEMPTS_LIMIT} (got {max_attempts})"),
        );
    }
    Ok(())
}

/// A task timeout is between one second and one year.
pub fn check_task_timeout_secs(secs: u64) -> Result<(), RuleError> {
    if !TASK_TIMEOUT_RANGE_SECS.contains(&secs) {
        return refuse(
            "taskTimeoutSeconds",
            format!("must be between 1 and {MAX_TASK_TIMEOUT_SECS} (one year); got {secs}"),
        );
    }
    Ok(())
}

/// A placement asks for between 1 and [`crate::placement::MAX_RF`] replicas.
pub fn check_rf(rf: usize) -> Result<(), RuleError> {
    let max = crate::placement::MAX_RF;
    if !(1..=max).contains(&rf) {
        return refuse("rf", format!("must be between 1 and {max} (got {rf})"));
    }
    Ok(())
}

/// A name the placement contract's clients choose (a node's id, an object's hash): not blank,
/// at most [`MAX_NODE_TEXT_LEN`] characters, no control characters (it is a path segment of
/// `/node/{id}` and `/object/{hash}`).
pub fn check_placement_name(field: &'static str, name: &str) -> Result<(), RuleError> {
    if name.trim().is_empty() {
        return refuse(field, "must not be empty".into());
    }
    if name.chars().any(char::is_control) {
        return refuse(field, "must not contain control characters".into());
    }
    check_node_text(field, name)
}

/// A node's capacity for placement is at most [`crate::placement::MAX_CAPACITY_GB`]: the ring
/// holds 64 points per GB, so one oversized node would cost the server memory of its own.
pub fn check_capacity_gb(capacity_gb: u64) -> Result<(), RuleError> {
    let max = crate::placement::MAX_CAPACITY_GB;
    if capacity_gb > max {
        return refuse(
            "capacity_gb",
            format!("must be at most {max} (got {capacity_gb}); capacity is in GB"),
        );
    }
    Ok(())
}

/// A claim asks for between 1 and [`MAX_CLAIM`] tasks.
pub fn check_claim_size(max_tasks: u32) -> Result<(), RuleError> {
    if !(1..=MAX_CLAIM).contains(&max_tasks) {
        return refuse(
            "maxTasks",
            format!("must be between 1 and {MAX_CLAIM} (got {max_tasks})"),
        );
    }
    Ok(())
}

/// How loaded a node that claims is, from 0 (runs nothing) to 1 (runs tasks and has no room
/// left): the share of its slots that are taken, `running / (running + max_tasks)`, since
/// `max_tasks` is what it has free. Among claims that wait for work the least loaded looks
/// first. A node that runs nothing and asks for nothing counts as idle: such a claim never
/// waits anyway.
pub fn claim_load(running_tasks: u32, max_tasks: u32) -> f64 {
    // In u64: two u32 never overflow it, and f64 holds every such sum exactly.
    let slots = u64::from(running_tasks) + u64::from(max_tasks);
    if slots == 0 {
        return 0.0;
    }
    running_tasks as f64 / slots as f64
}

/// A batch of reports holds between 1 and [`MAX_CLAIM`] of them: as many as one claim can hand
/// out, so an agent can report everything it claimed in one request.
pub fn check_batch_size(field: &'static str, len: usize) -> Result<(), RuleError> {
    if !(1..=MAX_CLAIM as usize).contains(&len) {
        return refuse(
            field,
            format!("must hold between 1 and {MAX_CLAIM} reports (got {len})"),
        );
    }
    Ok(())
}

/// An exchange reports between 0 and [`MAX_CLAIM`] results (none: it only claims).
pub fn check_exchange_reports(len: usize) -> Result<(), RuleError> {
    if len > MAX_CLAIM as usize {
        return refuse(
            "reports",
            format!(
                "must hold at most {MAX_CLAIM} reports (got {len}); send the rest in the next request"
            ),
        );
    }
    Ok(())
}

/// An exchange claims between 0 and [`MAX_CLAIM`] tasks (0: it only reports).
pub fn check_exchange_claim(max_tasks: u32) -> Result<(), RuleError> {
    if max_tasks > MAX_CLAIM {
        return refuse(
            "maxTasks",
            format!("must be between 0 and {MAX_CLAIM} (got {max_tasks})"),
        );
    }
    Ok(())
}

/// A claim waits for work at most [`MAX_WAIT_MS`] milliseconds (0: it does not wait).
pub fn check_wait_ms(wait_ms: u64) -> Result<(), RuleError> {
    if wait_ms > MAX_WAIT_MS {
        return refuse(
            "waitMs",
            format!(
                "must be between 0 and {MAX_WAIT_MS} milliseconds (got {wait_ms}); claim again \
                 to wait longer"
            ),
        );
    }
    Ok(())
}

/// A node's address is an IP address or a host name: 1 to [`MAX_HOSTNAME_LEN`] characters,
/// dot-separated labels of 1 to 63 letters, digits, `-` and `_`.
pub fn check_address(field: &'static str, address: &str) -> Result<(), RuleError> {
    if address.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let what = "must be an IP address or a host name";
    if address.is_empty() {
        return refuse(field, format!("{what}; it is empty"));
    }
    if address.len() > MAX_HOSTNAME_LEN {
        return refuse(
            field,
            format!(
                "{what} of at most {MAX_HOSTNAME_LEN} characters (got {})",
                address.len()
            ),
        );
    }
    let host = address.strip_suffix('.').unwrap_or(address);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !host.split('.').all(label_ok) {
        return refuse(
            field,
            format!(
                "{what}: {address:?} is neither (a name is letters, digits, '-', '_' and dots)"
            ),
        );
    }
    Ok(())
}

/// A free-text node field (hostname, zone) is at most [`MAX_NODE_TEXT_LEN`] characters.
pub fn check_node_text(field: &'static str, text: &str) -> Result<(), RuleError> {
    if text.chars().count() > MAX_NODE_TEXT_LEN {
        return refuse(field, format!("at most {MAX_NODE_TEXT_LEN} characters"));
    }
    Ok(())
}

/// A count or size a node or a report gives (cores, memory, GPUs, running tasks, runtime) is
/// not negative.
pub fn check_count(field: &'static str, value: i64) -> Result<(), RuleError> {
    if value < 0 {
        return refuse(field, format!("must not be negative (got {value})"));
    }
    Ok(())
}

/// A load figure (`cpuLoad`) is a finite number, not negative. There is no upper bound: agents
/// send a percentage, other clients a load average, which may pass 100 on a busy machine.
pub fn check_load(field: &'static str, value: f64) -> Result<(), RuleError> {
    if !value.is_finite() || value < 0.0 {
        return refuse(
            field,
            format!("must be a finite number, 0 or more (got {value})"),
        );
    }
    Ok(())
}

/// A node's labels take at most `max` bytes as JSON.
pub fn check_label_bytes(bytes: u64, max: u64) -> Result<(), RuleError> {
    if bytes > max {
        return refuse(
            "labels",
            format!("{bytes} bytes of JSON, above the limit of {max} bytes (--max-label-bytes)"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_name_the_field_and_the_limit() {
        assert_eq!(
            check_max_attempts(0).unwrap_err().to_string(),
            "maxAttempts: must be between 1 and 100 (got 0)"
        );
        assert_eq!(
            check_task_timeout_secs(0).unwrap_err().to_string(),
            "taskTimeoutSeconds: must be between 1 and 31536000 (one year); got 0"
        );
        assert_eq!(
            check_claim_size(1001).unwrap_err().to_string(),
            "maxTasks: must be between 1 and 1000 (got 1001)"
        );
        assert_eq!(
            check_rf(0).unwrap_err().to_string(),
            "rf: must be between 1 and 16 (got 0)"
        );
        assert!(check_rf(17).is_err());
        assert!(check_rf(1).is_ok() && check_rf(16).is_ok());
        assert_eq!(
            check_job_name(&"x".repeat(201)).unwrap_err().to_string(),
            "name: at most 200 characters"
        );
        assert!(check_job_name(&"é".repeat(200)).is_ok());
        assert_eq!(
            check_wait_ms(30_001).unwrap_err().to_string(),
            "waitMs: must be between 0 and 30000 milliseconds (got 30001); claim again to wait longer"
        );
        assert_eq!(
            check_exchange_claim(1001).unwrap_err().to_string(),
            "maxTasks: must be between 0 and 1000 (got 1001)"
        );
        assert!(
            check_exchange_reports(1001)
                .unwrap_err()
                .to_string()
                .starts_with("reports: must hold at most 1000 reports (got 1001)")
        );
    }

    #[test]
    fn a_claims_load_is_the_share_of_its_slots_already_running() {
        assert_eq!(claim_load(0, 1), 0.0, "an idle node");
        assert_eq!(claim_load(3, 1), 0.75);
        assert_eq!(claim_load(1, 1), 0.5);
        assert_eq!(claim_load(5, 0), 1.0, "no room left");
        assert_eq!(claim_load(0, 0), 0.0, "nothing running, nothing asked");
        assert_eq!(claim_load(u32::MAX, u32::MAX), 0.5, "no overflow");
        assert!(claim_load(2, 8) < claim_load(8, 2), "busier is higher");
    }

    #[test]
    fn addresses_are_ips_or_host_names_of_sane_length() {
        for ok in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "spot-1",
            "a.example.org",
            "node_7.lan.",
        ] {
            assert!(check_address("ipAddress", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "a b",
            "a..b",
            "x/y",
            "é",
            &"a".repeat(254),
            &"a".repeat(64),
        ] {
            let e = check_address("ipAddress", bad).unwrap_err();
            assert_eq!(e.field, "ipAddress");
            assert!(e.message.contains("IP address or a host name"), "{e}");
        }
        assert!(check_address("ipAddress", &"a".repeat(1 << 20)).is_err());
    }

    #[test]
    fn figures_are_not_negative_and_finite() {
        assert!(check_count("totalCores", 0).is_ok());
        assert_eq!(
            check_count("totalCores", -1).unwrap_err().to_string(),
            "totalCores: must not be negative (got -1)"
        );
        assert!(check_count("runtimeMs", i64::MIN).is_err());
        assert!(check_load("cpuLoad", 45.2).is_ok());
        assert!(check_load("cpuLoad", 250.0).is_ok());
        for bad in [-1e308, -0.1, f64::NAN, f64::INFINITY] {
            assert!(check_load("cpuLoad", bad).is_err(), "{bad}");
        }
        assert!(check_label_bytes(10, 10).is_ok());
        assert!(
            check_label_bytes(11, 10)
                .unwrap_err()
                .to_string()
                .contains("--max-label-bytes")
        );
    }

    proptest! {
        #[test]
        fn each_check_accepts_exactly_its_range(n in any::<u32>(), s in any::<u64>()) {
            prop_assert_eq!(check_max_attempts(n).is_ok(), (1..=100).contains(&n));
            prop_assert_eq!(check_claim_size(n).is_ok(), (1..=1000).contains(&n));
            prop_assert_eq!(
                check_batch_size("reports", n as usize).is_ok(),
                (1..=1000).contains(&n)
            );
            prop_assert_eq!(check_task_timeout_secs(s).is_ok(), (1..=31_536_000).contains(&s));
            prop_assert_eq!(check_exchange_claim(n).is_ok(), n <= 1000);
            prop_assert_eq!(check_exchange_reports(n as usize).is_ok(), n <= 1000);
            prop_assert_eq!(check_wait_ms(s).is_ok(), s <= 30_000);
        }

        #[test]
        fn a_claims_load_is_a_fraction_that_grows_with_what_runs(
            running in any::<u32>(),
            max in any::<u32>(),
        ) {
            let load = claim_load(running, max);
            prop_assert!((0.0..=1.0).contains(&load), "{load}");
            if running < u32::MAX {
                prop_assert!(claim_load(running + 1, max) >= load);
            }
        }
    }
}
