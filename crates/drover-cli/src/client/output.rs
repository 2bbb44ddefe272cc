//! How the client commands print: the `--output` formats (a table for people, pretty JSON of
//! the API's wire types, CSV for spreadsheets), and the small text functions tables share (ages,
//! durations, commands, payload values).
//!
//! It formats what it is given and fetches nothing; which columns a command shows is decided by
//! that command.

use super::Failure;
use chrono::{DateTime, Utc};
use comfy_table::{Table, presets};
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// The `--output` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for reading.
    Table,
    /// Pretty JSON of the API's own types.
    Json,
    /// Comma-separated values with a header row (list commands only).
    Csv,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }

    /// Refuses a format that `command` cannot print, before anything is sent to the server.
    pub fn require(self, command: &str, allowed: &[Format]) -> Result<Format, Failure> {
        if allowed.contains(&self) {
            return Ok(self);
        }
        let names: Vec<&str> = allowed.iter().map(|f| f.name()).collect();
        Err(Failure::Usage(format!(
            "`{command}` prints a single record, not a list, so --output {} does not apply; use {}",
            self.name(),
            names.join(" or ")
        )))
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Prints a line on stdout.
pub fn line(text: &str) -> Result<(), Failure> {
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// A remark for the person at the terminal (hints, notes), on stderr so that stdout stays
/// the command's output. A closed stderr is no reason to fail the command.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Prints a table: a header row, then one row per entry, columns aligned, no borders, so that
/// the output still reads well through `grep` and `less`.
pub fn table(header: &[String], rows: Vec<Vec<String>>) -> Result<(), Failure> {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    line(&table.trim_fmt())
}

/// Prints `key  value` pairs aligned, for the commands that show one record.
pub fn record(pairs: Vec<(&str, String)>) -> Result<(), Failure> {
    line(&record_text(pairs))
}

/// `key  value` pairs aligned, as [`record`] prints them.
pub fn record_text(pairs: Vec<(&str, String)>) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    for (key, value) in pairs {
        table.add_row(vec![key.to_string(), value]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

/// Prints CSV: a header row, then the rows.
pub fn csv(header: &[String], rows: Vec<Vec<String>>) -> Result<(), Failure> {
    let mut writer = csv::Writer::from_writer(std::io::stdout().lock());
    writer.write_record(header).map_err(csv_error)?;
    for row in rows {
        writer.write_record(&row).map_err(csv_error)?;
    }
    writer.flush()?;
    Ok(())
}

fn csv_error(e: csv::Error) -> Failure {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => Failure::Output(io),
        other => Failure::Output(std::io::Error::other(format!("{other:?}"))),
    }
}

/// Writes text that is already in its final form (the server's CSV) to stdout.
pub fn raw(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// An optional value, or `-`.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A duration in at most two units: `45s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) if seconds == 0 => format!("{minutes}m"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// Milliseconds of run time, for a table.
pub fn millis(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => {
            let d = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
            if d < Duration::from_secs(60) {
                format!("{:.1}s", d.as_secs_f64())
            } else {
                short_duration(d)
            }
        }
        None => "-".into(),
    }
}

fn instant(ts: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// How long ago a server timestamp was (`12s ago`); the timestamp itself if it cannot be read
/// or lies ahead (the two clocks disagree).
pub fn age(ts: &str) -> String {
    age_at(ts, Utc::now())
}

fn age_at(ts: &str, now: DateTime<Utc>) -> String {
    match instant(ts).map(|t| now - t) {
        // A second of clock difference between client and server is no reason to show a date.
        Some(d) if d >= chrono::TimeDelta::seconds(-1) => match d.to_std() {
            Ok(d) => format!("{} ago", short_duration(d)),
            Err(_) => "just now".into(),
        },
        _ => ts.to_string(),
    }
}

/// The time from one server timestamp to another, if both can be read.
pub fn between(from: &str, to: &str) -> Option<Duration> {
    (instant(to)? - instant(from)?).to_std().ok()
}

/// An argv as a shell would show it, quoting only what needs quoting, for reading (it is not
/// run through a shell anywhere).
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let safe = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%{}".contains(c));
            if safe {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first line of a text, cut to `max` characters, for a table cell.
pub fn excerpt(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    let cut: String = first.chars().take(max).collect();
    if cut.len() < first.len() || first.len() < text.trim_end().len() {
        format!("{cut}…")
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        let s = Duration::from_secs;
        assert_eq!(short_duration(s(45)), "45s");
        assert_eq!(short_duration(s(120)), "2m");
        assert_eq!(short_duration(s(200)), "3m 20s");
        assert_eq!(short_duration(s(7500)), "2h 5m");
        assert_eq!(short_duration(s(3 * 86_400 + 4 * 3600 + 5)), "3d 4h");
        assert_eq!(millis(Some(250)), "250ms");
        assert_eq!(millis(Some(1500)), "1.5s");
        assert_eq!(millis(None), "-");
    }

    #[test]
    fn ages_tolerate_a_little_clock_difference() {
        let now = "2026-01-01T00:01:00.000Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(age_at("2026-01-01T00:00:00.000Z", now), "1m ago");
        assert_eq!(age_at("2026-01-01T00:01:00.500Z", now), "just now");
        assert_eq!(
            age_at("2026-01-01T00:05:00.000Z", now),
            "2026-01-01T00:05:00.000Z"
        );
        assert_eq!(age_at("yesterday", now), "yesterday");
    }

    #[test]
    fn commands_are_quoted_only_where_needed() {
        let argv = ["python3", "/opt/x y.py", "--seed", "{seed}", "it's"].map(String::from);
        assert_eq!(
            command_line(&argv),
            r"python3 '/opt/x y.py' --seed {seed} 'it'\''s'"
        );
    }

    #[test]
    fn excerpts_keep_the_first_line() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("a long message", 6), "a long…");
        assert_eq!(excerpt("first\nsecond", 20), "first…");
    }

    #[test]
    fn formats_that_do_not_apply_are_refused_by_name() {
        let err = Format::Csv
            .require("drover job status", &[Format::Table, Format::Json])
            .unwrap_err();
        let Failure::Usage(message) = err else {
            panic!("not a usage error: {err:?}")
        };
        assert!(message.contains("--output csv"), "{message}");
        assert!(message.contains("table or json"), "{message}");
    }
}
