//! The one reader of the contracts' own environment variables (`ORHESTRA_PORT`, `COORDINATOR_PORT`, `NODE_ENV`,
//! `REUSE_RUNNER_MODE`, ...), which drover accepts as aliases of its settings.
//!
//! An alias ranks below a flag and its `DROVER_*` variable and above the config file, so it only
//! fills what those left unset. One rule for every alias: the value is trimmed, and a variable
//! that is unset, empty or blank is not given. This module reads the environment; it does not
//! decide what a value may be beyond parsing it.

use super::SettingsError;
use std::fmt::Display;
use std::str::FromStr;

/// Where aliases are read from: the process's environment ([`environment`]), or a table of
/// variables in tests, which must not set the contracts' real variables for the whole process.
pub type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment, as [`Vars`].
pub fn environment(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The variable `name`, trimmed; `None` when it is unset, empty or blank.
pub fn read(name: &str) -> Option<String> {
    read_from(&environment, name)
}

/// [`read`] from `vars`.
pub fn read_from(vars: Vars, name: &str) -> Option<String> {
    vars(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Fills `slot` from the variable `name` when nothing above the alias set it.
pub fn fill<T: FromStr>(slot: &mut Option<T>, name: &str) -> Result<(), SettingsError>
where
    T::Err: Display,
{
    fill_with(slot, name, str::parse)
}

/// [`fill`], with the alias's own way of reading its value (e.g. a number of seconds).
pub fn fill_with<T, E: Display>(
    slot: &mut Option<T>,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<(), SettingsError> {
    fill_from(&environment, slot, name, parse)
}

/// [`fill_with`], reading from `vars`.
pub fn fill_from<T, E: Display>(
    vars: Vars,
    slot: &mut Option<T>,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<(), SettingsError> {
    if slot.is_none()
        && let Some(value) = read_from(vars, name)
    {
        let parsed =
            parse(&value).map_err(|e| SettingsError::Invalid(format!("{name}={value:?}: {e}")))?;
        *slot = Some(parsed);
    }
    Ok(())
}

/// Says that an alias is ignored, and why. Settings are read before logging starts (its format
/// is one of them), so without a subscriber yet the warning goes to standard error.
pub fn warn(message: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::warn!("{message}");
    } else {
        eprintln!("warning: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test uses a variable of its own: tests run in parallel in one process.
    #[test]
    fn blank_is_not_given_and_values_are_trimmed() {
        unsafe { std::env::set_var("DROVER_TEST_ALIAS_BLANK", "   ") };
        let mut slot: Option<u16> = None;
        fill(&mut slot, "DROVER_TEST_ALIAS_BLANK").unwrap();
        assert_eq!(slot, None);

        unsafe { std::env::set_var("DROVER_TEST_ALIAS_TRIM", " 9000 ") };
        fill(&mut slot, "DROVER_TEST_ALIAS_TRIM").unwrap();
        assert_eq!(slot, Some(9000));
    }

    #[test]
    fn a_value_set_above_the_alias_wins_and_bad_values_name_the_variable() {
        unsafe { std::env::set_var("DROVER_TEST_ALIAS_BAD", "soon") };
        let mut slot = Some(1u16);
        fill(&mut slot, "DROVER_TEST_ALIAS_BAD").unwrap();
        assert_eq!(slot, Some(1), "the alias fills only what is unset");
        let mut empty: Option<u16> = None;
        let e = fill(&mut empty, "DROVER_TEST_ALIAS_BAD").unwrap_err();
        assert!(
            e.to_string().starts_with("DROVER_TEST_ALIAS_BAD=\"soon\""),
            "{e}"
        );
    }
}
