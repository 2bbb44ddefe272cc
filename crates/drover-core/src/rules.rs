//! Limits that are rules of the domain: how long a job name may be, how many attempts and how
//! long a timeout a job may ask for, how many tasks one claim may take.
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
            check_job_name(&"x".repeat(201)).unwrap_err().to_string(),
            "name: at most 200 characters"
        );
        assert!(check_job_name(&"é".repeat(200)).is_ok());
    }

    proptest! {
        #[test]
        fn each_check_accepts_exactly_its_range(n in any::<u32>(), s in any::<u64>()) {
            prop_assert_eq!(check_max_attempts(n).is_ok(), (1..=100).contains(&n));
            prop_assert_eq!(check_claim_size(n).is_ok(), (1..=1000).contains(&n));
            prop_assert_eq!(check_task_timeout_secs(s).is_ok(), (1..=31_536_000).contains(&s));
        }
    }
}
