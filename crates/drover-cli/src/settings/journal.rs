//! The event-journal settings group of `drover server`: where the journal (drover's log of every
//! change) is published — a primary sink with an optional secondary and emergency fallback —,
//! when a sink counts as down or up, and how blobs kept on a fallback are reconciled to the
//! primary; with the placement contract's data-availability variables (`USE_MOCK_DA`,
//! `ENABLE_FALLBACK`, `DA_TIMEOUT_MS`, `RECONCILE_*`, ...) as aliases. The result is the
//! server's `JournalConfig`, or none when no sink is given.
//!
//! It shapes what the server is given and refuses what the contract asks for and drover does
//! not do (Celestia, a quorum fallback, parallel reconciliation), with the way out; publishing,
//! routing and reconciling are the server's (`drover_server::journal`).

use super::SettingsError;
use super::alias::{self, Vars};
use crate::span::Span;
use clap::Args;
use drover_core::sink_routing::RoutingConfig;
use drover_server::journal::{JournalConfig, SinkSpec};
use merge::Merge;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The kinds of sink, as messages name them.
const SINKS: &str = "file:DIR, postgres://..., http(s)://host:port";

/// The placement contract's settings of its Celestia node, which drover has no use for.
const CELESTIA: [&str; 4] = ["DA_RPC_URL", "DA_NAMESPACE", "DA_AUTH_TOKEN", "DA_NETWORK"];

/// One sink as a setting: given (flag, variable, file, `EMERGENCY_DA_URL`), or the file sink
/// beside the database that `USE_MOCK_DA=true` asks for, placed once every source has said
/// where the database is.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Given(SinkSpec),
    BesideDatabase,
}

impl std::str::FromStr for Sink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Sink::Given)
    }
}

impl<'de> Deserialize<'de> for Sink {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Sink {
    /// The sink, for a server whose store is `store_url`.
    fn place(&self, store_url: &str) -> SinkSpec {
        match self {
            Sink::Given(spec) => spec.clone(),
            Sink::BesideDatabase => SinkSpec::File(beside_database(store_url)),
        }
    }
}

/// `journal-sink` in the SQLite database's directory; `./data/journal-sink` for PostgreSQL (or
/// a URL that names no file, which the store check refuses anyway).
fn beside_database(store_url: &str) -> PathBuf {
    if !drover_store::is_postgres(store_url)
        && let Ok(db) = drover_store::sqlite_path(store_url)
    {
        return db.parent().unwrap_or(Path::new("")).join("journal-sink");
    }
    PathBuf::from("./data/journal-sink")
}

/// Where the event journal is published, and how.
#[derive(Debug, Default, Args, Deserialize, Merge)]
#[command(next_help_heading = "Event journal")]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
#[merge(strategy = merge::option::overwrite_none)]
pub struct JournalSettings {
    /// Publish the event journal, drover's log of every change, to this sink: file:DIR (a
    /// directory of fsynced files; a plain path too), postgres://user:password@host/db (a table
    /// in that database), or http(s)://host:port (another drover server's POST /da/post).
    /// Unset, the journal is kept in the store only [alias: USE_MOCK_DA=true gives
    /// file:journal-sink beside the SQLite database, ./data/journal-sink with PostgreSQL].
    ///
    /// The contract's Celestia settings (DA_RPC_URL, DA_NAMESPACE, DA_AUTH_TOKEN, DA_NETWORK)
    /// are ignored with a warning when a sink is given, and refused when none is.
    #[arg(long, env = "DROVER_JOURNAL_SINK", value_name = "SINK")]
    pub journal_sink: Option<Sink>,

    /// Where blobs go while the primary sink (--journal-sink, which it needs) is down: file:DIR,
    /// postgres://... or http(s)://host:port; they are posted to the primary again, in order,
    /// once it is back [default: none]. In place of the contract's FALLBACK_DA_TYPE=quorum,
    /// which drover does not implement.
    #[arg(long, env = "DROVER_JOURNAL_SECONDARY", value_name = "SINK")]
    pub journal_secondary: Option<Sink>,

    /// Where blobs go while the primary and the secondary are both down; needs --journal-sink
    /// [default: none] [alias: EMERGENCY_DA_URL, with ENABLE_FALLBACK=true and
    /// FALLBACK_DA_TYPE=emergency].
    #[arg(long, env = "DROVER_JOURNAL_EMERGENCY", value_name = "SINK")]
    pub journal_emergency: Option<Sink>,

    /// Consecutive failed posts or checks after which a sink counts as down and blobs go to the
    /// next one. A failed post or check is retried at the next check (--journal-check-interval),
    /// so this is the contract's retry count [default: 3] [alias: DA_RETRY_COUNT].
    #[arg(long, env = "DROVER_JOURNAL_FAILURE_THRESHOLD", value_name = "N")]
    pub journal_failure_threshold: Option<u32>,

    /// Consecutive successful checks after which a down sink counts as up again [default: 2].
    #[arg(long, env = "DROVER_JOURNAL_RECOVERY_THRESHOLD", value_name = "N")]
    pub journal_recovery_threshold: Option<u32>,

    /// How often every configured sink is checked. A failed post or check is retried at the
    /// next check, so this is the contract's delay between retries [default: 5s]
    /// [alias: DA_RETRY_DELAY_MS, in milliseconds].
    #[arg(long, env = "DROVER_JOURNAL_CHECK_INTERVAL", value_name = "DURATION")]
    pub journal_check_interval: Option<Span>,

    /// How long one post, read or check of a sink may take before it counts as failed
    /// [default: 30s] [alias: DA_TIMEOUT_MS, in milliseconds].
    #[arg(long, env = "DROVER_JOURNAL_TIMEOUT", value_name = "DURATION")]
    pub journal_timeout: Option<Span>,

    /// How often new journal entries are looked for and posted: an entry waits about this long
    /// at most before it is posted, when its sink takes it [default: 200ms].
    #[arg(long, env = "DROVER_JOURNAL_PUBLISH_EVERY", value_name = "DURATION")]
    pub journal_publish_every: Option<Span>,

    /// Largest blob, in bytes of encoded entries; one entry larger than this is posted alone
    /// [default: 1048576].
    #[arg(long, env = "DROVER_JOURNAL_BLOB_MAX_BYTES", value_name = "BYTES")]
    pub journal_blob_max_bytes: Option<usize>,

    /// Blobs per batch when those kept on a fallback are posted to the primary again, one after
    /// another and in order (the contract's RECONCILE_PARALLEL=true is refused) [default: 10]
    /// [alias: RECONCILE_BATCH_SIZE].
    #[arg(long, env = "DROVER_RECONCILE_BATCH_SIZE", value_name = "N")]
    pub reconcile_batch_size: Option<u32>,

    /// Tries per blob in one reconciliation pass [default: 3] [alias: RECONCILE_MAX_RETRIES].
    #[arg(long, env = "DROVER_RECONCILE_MAX_RETRIES", value_name = "N")]
    pub reconcile_max_retries: Option<u32>,

    /// Wait between two tries of one blob in a reconciliation pass [default: 1s]
    /// [alias: RECONCILE_RETRY_DELAY_MS, in milliseconds].
    #[arg(long, env = "DROVER_RECONCILE_RETRY_DELAY", value_name = "DURATION")]
    pub reconcile_retry_delay: Option<Span>,

    /// Retention: entries the primary sink holds are compacted behind a snapshot of the state,
    /// keeping the newest N in the store (a rebuild reads the sink, which keeps every one).
    /// Entries not on the primary yet are never dropped [default: keep every entry].
    #[arg(long, env = "DROVER_JOURNAL_KEEP", value_name = "N")]
    pub journal_keep: Option<u64>,

    /// How often the journal is compacted, with --journal-keep [default: 60s].
    #[arg(long, env = "DROVER_JOURNAL_COMPACT_EVERY", value_name = "DURATION")]
    pub journal_compact_every: Option<Span>,

    /// The key to send, as `Authorization: Bearer KEY`, to the http(s) sinks: the --api-key of
    /// the drover server behind them. This server's own --api-key is never sent to a sink
    /// [default: none].
    #[arg(
        long,
        env = "DROVER_JOURNAL_SINK_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub journal_sink_key: Option<String>,

    /// What the aliases asked for that depends on the sinks every source gives: checked when
    /// the settings are resolved.
    #[arg(skip)]
    #[serde(skip)]
    #[merge(skip)]
    unmet: Vec<Unmet>,
}

/// Which sink an alias's demand is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Primary,
    Secondary,
    Emergency,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Primary => "primary",
            Slot::Secondary => "secondary",
            Slot::Emergency => "emergency",
        }
    }
}

/// An alias that needs a sink given by some source: without one it is `error`; with one the
/// alias is ignored, saying `ignored` if anything.
#[derive(Debug, Clone)]
struct Unmet {
    slot: Slot,
    error: String,
    ignored: Option<String>,
}

fn invalid(message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid(message.into())
}

/// A number of milliseconds, as the contract's `*_MS` variables give it.
fn millis(text: &str) -> Result<Span, String> {
    text.parse::<u64>()
        .map(|ms| Span(Duration::from_millis(ms)))
        .map_err(|_| "not a number of milliseconds".to_string())
}

/// A contract's switch: `true` or `false` (in any case); unset is `None`.
fn switch(vars: Vars, name: &str) -> Result<Option<bool>, SettingsError> {
    match alias::read_from(vars, name) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(invalid(format!("{name}={v:?}: give true or false"))),
    }
}

/// The message refusing the contract's Celestia settings when no sink is given.
fn celestia_error(names: &[&str]) -> String {
    let subject = match names {
        ["DA_RPC_URL"] => "DA_RPC_URL names a Celestia node".to_string(),
        [one] => format!("{one} is a setting of a Celestia node"),
        many => format!("{} are settings of a Celestia node", many.join(", ")),
    };
    format!(
        "{subject}; drover publishes its journal to file, PostgreSQL or HTTP sinks instead: \
         set --journal-sink ({SINKS}) or USE_MOCK_DA=true"
    )
}

impl JournalSettings {
    /// Fills what flags and `DROVER_*` variables left unset from the placement contract's
    /// variables.
    pub(super) fn fill_aliases(&mut self) -> Result<(), SettingsError> {
        self.fill_aliases_from(&alias::environment)
    }

    /// [`Self::fill_aliases`], reading the variables from `vars`.
    pub(super) fn fill_aliases_from(&mut self, vars: Vars) -> Result<(), SettingsError> {
        if switch(vars, "USE_MOCK_DA")? == Some(true) && self.journal_sink.is_none() {
            self.journal_sink = Some(Sink::BesideDatabase);
        }
        let celestia: Vec<&str> = CELESTIA
            .into_iter()
            .filter(|name| alias::read_from(vars, name).is_some())
            .collect();
        if !celestia.is_empty() {
            self.unmet.push(Unmet {
                slot: Slot::Primary,
                error: celestia_error(&celestia),
                ignored: Some(format!(
                    "{} ignored (drover does not publish to Celestia)",
                    celestia.join(", ")
                )),
            });
        }

        alias::fill_from(vars, &mut self.journal_timeout, "DA_TIMEOUT_MS", millis)?;
        alias::fill_from(
            vars,
            &mut self.journal_failure_threshold,
            "DA_RETRY_COUNT",
            str::parse,
        )?;
        alias::fill_from(
            vars,
            &mut self.journal_check_interval,
            "DA_RETRY_DELAY_MS",
            millis,
        )?;
        alias::fill_from(
            vars,
            &mut self.reconcile_batch_size,
            "RECONCILE_BATCH_SIZE",
            str::parse,
        )?;
        alias::fill_from(
            vars,
            &mut self.reconcile_max_retries,
            "RECONCILE_MAX_RETRIES",
            str::parse,
        )?;
        alias::fill_from(
            vars,
            &mut self.reconcile_retry_delay,
            "RECONCILE_RETRY_DELAY_MS",
            millis,
        )?;
        if switch(vars, "RECONCILE_PARALLEL")? == Some(true) {
            return Err(invalid(
                "blobs are reconciled one after another, in order, so the primary keeps the \
                 journal's order; RECONCILE_PARALLEL=true is not supported (leave it unset or \
                 false)",
            ));
        }
        self.fill_fallback(vars)
    }

    /// `ENABLE_FALLBACK=true` with `FALLBACK_DA_TYPE`: `emergency` takes `EMERGENCY_DA_URL` as
    /// the emergency sink; `quorum` (or `QUORUM_VALIDATORS` without a type) is refused unless a
    /// secondary sink is given; `none` does nothing.
    fn fill_fallback(&mut self, vars: Vars) -> Result<(), SettingsError> {
        if switch(vars, "ENABLE_FALLBACK")? != Some(true) {
            return Ok(());
        }
        let kind = alias::read_from(vars, "FALLBACK_DA_TYPE").map(|k| k.to_ascii_lowercase());
        let validators = alias::read_from(vars, "QUORUM_VALIDATORS").is_some();
        let quorum = match kind.as_deref() {
            Some("quorum") => "FALLBACK_DA_TYPE=quorum",
            None if validators => "QUORUM_VALIDATORS (a quorum fallback)",
            None | Some("none") => return Ok(()),
            Some("emergency") => return self.fill_emergency(vars),
            Some(other) => {
                return Err(invalid(format!(
                    "FALLBACK_DA_TYPE={other:?}: give none, emergency (with EMERGENCY_DA_URL) \
                     or quorum (not supported: give --journal-secondary instead)"
                )));
            }
        };
        self.unmet.push(Unmet {
            slot: Slot::Secondary,
            error: format!(
                "{quorum} collects validator signatures, which drover does not implement; give \
                 a secondary sink with --journal-secondary ({SINKS})"
            ),
            ignored: Some(format!("{quorum} ignored")),
        });
        Ok(())
    }

    fn fill_emergency(&mut self, vars: Vars) -> Result<(), SettingsError> {
        alias::fill_from(
            vars,
            &mut self.journal_emergency,
            "EMERGENCY_DA_URL",
            str::parse::<Sink>,
        )?;
        if self.journal_emergency.is_none() {
            self.unmet.push(Unmet {
                slot: Slot::Emergency,
                error: "ENABLE_FALLBACK=true with FALLBACK_DA_TYPE=emergency needs \
                        EMERGENCY_DA_URL, the emergency sink (http(s)://host:port of another \
                        drover server, or file:DIR, postgres://...): set it, or give \
                        --journal-emergency"
                    .into(),
                ignored: None,
            });
        }
        Ok(())
    }

    /// The tuning settings that some source gave, each named with its variables.
    fn tuned(&self) -> Vec<&'static str> {
        [
            (
                self.journal_failure_threshold.is_some(),
                "--journal-failure-threshold (DROVER_JOURNAL_FAILURE_THRESHOLD, DA_RETRY_COUNT)",
            ),
            (
                self.journal_recovery_threshold.is_some(),
                "--journal-recovery-threshold (DROVER_JOURNAL_RECOVERY_THRESHOLD)",
            ),
            (
                self.journal_check_interval.is_some(),
                "--journal-check-interval (DROVER_JOURNAL_CHECK_INTERVAL, DA_RETRY_DELAY_MS)",
            ),
            (
                self.journal_timeout.is_some(),
                "--journal-timeout (DROVER_JOURNAL_TIMEOUT, DA_TIMEOUT_MS)",
            ),
            (
                self.journal_publish_every.is_some(),
                "--journal-publish-every (DROVER_JOURNAL_PUBLISH_EVERY)",
            ),
            (
                self.journal_blob_max_bytes.is_some(),
                "--journal-blob-max-bytes (DROVER_JOURNAL_BLOB_MAX_BYTES)",
            ),
            (
                self.reconcile_batch_size.is_some(),
                "--reconcile-batch-size (DROVER_RECONCILE_BATCH_SIZE, RECONCILE_BATCH_SIZE)",
            ),
            (
                self.reconcile_max_retries.is_some(),
                "--reconcile-max-retries (DROVER_RECONCILE_MAX_RETRIES, RECONCILE_MAX_RETRIES)",
            ),
            (
                self.reconcile_retry_delay.is_some(),
                "--reconcile-retry-delay (DROVER_RECONCILE_RETRY_DELAY, RECONCILE_RETRY_DELAY_MS)",
            ),
            (
                self.journal_keep.is_some(),
                "--journal-keep (DROVER_JOURNAL_KEEP)",
            ),
            (
                self.journal_compact_every.is_some(),
                "--journal-compact-every (DROVER_JOURNAL_COMPACT_EVERY)",
            ),
            (
                self.journal_sink_key.is_some(),
                "--journal-sink-key (DROVER_JOURNAL_SINK_KEY)",
            ),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }

    /// How the journal is published, for a server whose store is `store_url`; `None` without a
    /// primary sink. Refuses fallbacks or tuning without a primary, what the aliases asked for
    /// and no source gave, and zero sizes and intervals.
    pub fn config(&self, store_url: &str) -> Result<Option<JournalConfig>, SettingsError> {
        let place = |sink: &Option<Sink>| sink.as_ref().map(|s| s.place(store_url));
        let primary = place(&self.journal_sink);
        let secondary = place(&self.journal_secondary);
        let emergency = place(&self.journal_emergency);
        for unmet in &self.unmet {
            let given = match unmet.slot {
                Slot::Primary => &primary,
                Slot::Secondary => &secondary,
                Slot::Emergency => &emergency,
            };
            match (given, &unmet.ignored) {
                (None, _) => return Err(invalid(unmet.error.clone())),
                (Some(sink), Some(ignored)) => alias::warn(&format!(
                    "{ignored}: the journal's {} sink is {sink}",
                    unmet.slot.name()
                )),
                (Some(_), None) => {}
            }
        }

        let Some(primary) = primary else {
            for (fallback, given) in [
                (
                    "--journal-secondary (DROVER_JOURNAL_SECONDARY)",
                    secondary.is_some(),
                ),
                (
                    "--journal-emergency (DROVER_JOURNAL_EMERGENCY, EMERGENCY_DA_URL)",
                    emergency.is_some(),
                ),
            ] {
                if given {
                    return Err(invalid(format!(
                        "{fallback} is a fallback of the journal's primary sink, and there is \
                         none: set --journal-sink ({SINKS}) or USE_MOCK_DA=true"
                    )));
                }
            }
            let tuned = self.tuned();
            if !tuned.is_empty() {
                return Err(invalid(format!(
                    "{} tune{} publishing the event journal, which is off without a sink: set \
                     --journal-sink ({SINKS}) or USE_MOCK_DA=true, or leave {} out",
                    tuned.join(", "),
                    if tuned.len() == 1 { "s" } else { "" },
                    if tuned.len() == 1 { "it" } else { "them" },
                )));
            }
            return Ok(None);
        };

        let d = JournalConfig::to(primary);
        let or = |span: Option<Span>, default: Duration| span.map_or(default, |Span(s)| s);
        let config = JournalConfig {
            secondary,
            emergency,
            routing: RoutingConfig {
                failure_threshold: self
                    .journal_failure_threshold
                    .unwrap_or(d.routing.failure_threshold),
                recovery_threshold: self
                    .journal_recovery_threshold
                    .unwrap_or(d.routing.recovery_threshold),
                check_interval: or(self.journal_check_interval, d.routing.check_interval),
                ..d.routing
            },
            timeout: or(self.journal_timeout, d.timeout),
            publish_every: or(self.journal_publish_every, d.publish_every),
            blob_max_bytes: self.journal_blob_max_bytes.unwrap_or(d.blob_max_bytes),
            reconcile_batch: self.reconcile_batch_size.unwrap_or(d.reconcile_batch),
            reconcile_max_retries: self
                .reconcile_max_retries
                .unwrap_or(d.reconcile_max_retries),
            reconcile_retry_delay: or(self.reconcile_retry_delay, d.reconcile_retry_delay),
            keep: self.journal_keep.or(d.keep),
            compact_every: or(self.journal_compact_every, d.compact_every),
            sink_key: self.journal_sink_key.clone().filter(|k| !k.is_empty()),
            ..d
        };
        for (zero, flag) in [
            (
                config.routing.check_interval.is_zero(),
                "--journal-check-interval",
            ),
            (config.timeout.is_zero(), "--journal-timeout"),
            (config.publish_every.is_zero(), "--journal-publish-every"),
            (config.blob_max_bytes == 0, "--journal-blob-max-bytes"),
            (config.compact_every.is_zero(), "--journal-compact-every"),
            (config.reconcile_batch == 0, "--reconcile-batch-size"),
            (config.reconcile_max_retries == 0, "--reconcile-max-retries"),
        ] {
            if zero {
                return Err(invalid(format!("{flag} must be greater than zero")));
            }
        }
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ServerArgs, ServerSettings};
    use clap::FromArgMatches;

    // The contract's variable names are fixed, and other tests resolve settings from the
    // process's environment: these tests never set a variable, they give aliases as a table.

    const DB: &str = "./data/drover.db";

    fn parse<G: Args + FromArgMatches>(args: &[&str]) -> Result<G, clap::Error> {
        let cmd = G::augment_args(clap::Command::new("server"));
        let matches = cmd.try_get_matches_from(std::iter::once("server").chain(args.to_vec()))?;
        G::from_arg_matches(&matches)
    }

    fn flags(args: &[&str]) -> JournalSettings {
        parse(args).unwrap()
    }

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    /// The journal's configuration from flags and aliases, for a server on `db`.
    fn journal_on(
        db: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Option<JournalConfig>, SettingsError> {
        let mut settings = flags(args);
        settings.fill_aliases_from(&vars(env))?;
        settings.config(db)
    }

    fn journal(args: &[&str], env: &[(&str, &str)]) -> Option<JournalConfig> {
        journal_on(DB, args, env).unwrap()
    }

    fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
        journal_on(DB, args, env).unwrap_err().to_string()
    }

    fn file(dir: &str) -> SinkSpec {
        SinkSpec::File(dir.into())
    }

    #[test]
    fn without_a_sink_the_journal_is_not_published() {
        assert_eq!(journal(&[], &[]), None);
        assert_eq!(
            ServerSettings::default()
                .resolve()
                .unwrap()
                .app
                .server
                .journal,
            None
        );
    }

    #[test]
    fn a_sink_alone_takes_the_contract_defaults() {
        let config = journal(&["--journal-sink", "file:/var/lib/journal"], &[]).unwrap();
        assert_eq!(config, JournalConfig::to(file("/var/lib/journal")));
        assert_eq!(config.secondary, None);
        assert_eq!(config.emergency, None);
        assert_eq!(config.routing.failure_threshold, 3);
        assert_eq!(config.routing.recovery_threshold, 2);
        assert_eq!(config.routing.check_interval, Duration::from_secs(5));
        assert!(!config.routing.secondary && !config.routing.emergency);
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.publish_every, Duration::from_millis(200));
        assert_eq!(config.blob_max_bytes, 1_048_576);
        assert_eq!(config.reconcile_batch, 10);
        assert_eq!(config.reconcile_max_retries, 3);
        assert_eq!(config.reconcile_retry_delay, Duration::from_secs(1));
    }

    /// Every flag, through the whole server's settings into `ServerConfig.journal`.
    #[test]
    fn every_flag_reaches_the_servers_journal_config() {
        let settings: ServerSettings = parse(&[
            "--journal-sink",
            "postgres://drover:secret@db:5432/journal",
            "--journal-secondary",
            "/var/lib/drover/secondary",
            "--journal-emergency",
            "http://10.0.0.9:8080/",
            "--journal-failure-threshold",
            "5",
            "--journal-recovery-threshold",
            "4",
            "--journal-check-interval",
            "750ms",
            "--journal-timeout",
            "12s",
            "--journal-publish-every",
            "1s",
            "--journal-blob-max-bytes",
            "4096",
            "--reconcile-batch-size",
            "25",
            "--reconcile-max-retries",
            "7",
            "--reconcile-retry-delay",
            "2500ms",
            "--journal-keep",
            "5000",
            "--journal-compact-every",
            "10s",
            "--journal-sink-key",
            "k-of-10.0.0.9",
        ])
        .unwrap();
        let config = settings.resolve().unwrap().app.server.journal.unwrap();
        assert_eq!(
            config,
            JournalConfig {
                primary: SinkSpec::Postgres("postgres://drover:secret@db:5432/journal".into()),
                secondary: Some(file("/var/lib/drover/secondary")),
                emergency: Some(SinkSpec::Http("http://10.0.0.9:8080".into())),
                routing: RoutingConfig {
                    failure_threshold: 5,
                    recovery_threshold: 4,
                    check_interval: Duration::from_millis(750),
                    secondary: false,
                    emergency: false,
                },
                timeout: Duration::from_secs(12),
                publish_every: Duration::from_secs(1),
                blob_max_bytes: 4096,
                reconcile_batch: 25,
                reconcile_max_retries: 7,
                reconcile_retry_delay: Duration::from_millis(2500),
                keep: Some(5000),
                sink_key: Some("k-of-10.0.0.9".into()),
                compact_every: Duration::from_secs(10),
            }
        );
    }

    #[test]
    fn sinks_are_files_postgres_or_http_and_other_schemes_are_refused() {
        let primary = |sink: &str| journal(&["--journal-sink", sink], &[]).unwrap().primary;
        assert_eq!(primary("file:./j"), file("./j"));
        assert_eq!(primary("/srv/journal"), file("/srv/journal"));
        assert_eq!(
            primary("https://other:8443"),
            SinkSpec::Http("https://other:8443".into())
        );
        let e = parse::<JournalSettings>(&["--journal-sink", "celestia://node:26658"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--journal-sink"), "{e}");
        assert!(e.contains("Celestia"), "{e}");
    }

    #[test]
    fn the_sinks_and_tuning_come_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        std::fs::write(
            &path,
            "journal-sink = \"file:/j\"\njournal-secondary = \"postgres://h/d\"\n\
             journal-timeout = \"2s\"\nreconcile-batch-size = 4\n",
        )
        .unwrap();
        let config = ServerSettings::from_file(&path)
            .unwrap()
            .resolve()
            .unwrap()
            .app
            .server
            .journal
            .unwrap();
        assert_eq!(config.primary, file("/j"));
        assert_eq!(
            config.secondary,
            Some(SinkSpec::Postgres("postgres://h/d".into()))
        );
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.reconcile_batch, 4);
    }

    #[test]
    fn tuning_without_a_sink_is_refused() {
        for (flag, value) in [
            ("--journal-failure-threshold", "5"),
            ("--journal-recovery-threshold", "5"),
            ("--journal-check-interval", "1s"),
            ("--journal-timeout", "1s"),
            ("--journal-publish-every", "1s"),
            ("--journal-blob-max-bytes", "10"),
            ("--reconcile-batch-size", "5"),
            ("--reconcile-max-retries", "5"),
            ("--reconcile-retry-delay", "1s"),
        ] {
            let e = refused(&[flag, value], &[]);
            assert!(e.starts_with(flag), "{e}");
            assert!(e.contains("off without a sink: set --journal-sink"), "{e}");
        }
        // From an alias, the message names the alias too.
        let e = refused(&[], &[("DA_TIMEOUT_MS", "5000")]);
        assert!(e.contains("DA_TIMEOUT_MS"), "{e}");
        assert!(e.contains("set --journal-sink"), "{e}");
    }

    #[test]
    fn fallbacks_without_a_primary_are_refused() {
        let e = refused(&["--journal-secondary", "file:/s"], &[]);
        assert!(e.starts_with("--journal-secondary"), "{e}");
        assert!(e.contains("there is none: set --journal-sink"), "{e}");
        let e = refused(&["--journal-emergency", "http://e:1"], &[]);
        assert!(e.starts_with("--journal-emergency"), "{e}");
        assert!(e.contains("there is none: set --journal-sink"), "{e}");
    }

    #[test]
    fn zero_sizes_and_intervals_are_refused() {
        for (flag, value) in [
            ("--journal-check-interval", "0"),
            ("--journal-timeout", "0s"),
            ("--journal-publish-every", "0"),
            ("--journal-blob-max-bytes", "0"),
            ("--reconcile-batch-size", "0"),
            ("--reconcile-max-retries", "0"),
        ] {
            let e = refused(&["--journal-sink", "/j", flag, value], &[]);
            assert_eq!(e, format!("{flag} must be greater than zero"));
        }
        let config = journal(
            &["--journal-sink", "/j", "--reconcile-retry-delay", "0"],
            &[],
        );
        assert_eq!(config.unwrap().reconcile_retry_delay, Duration::ZERO);
    }

    #[test]
    fn use_mock_da_publishes_to_a_file_sink_beside_the_database() {
        let mock = [("USE_MOCK_DA", "true")];
        let primary = |db: &str| journal_on(db, &[], &mock).unwrap().unwrap().primary;
        assert_eq!(primary(DB), file("./data/journal-sink"));
        assert_eq!(
            primary("sqlite:///srv/drover/state.db"),
            file("/srv/drover/journal-sink")
        );
        assert_eq!(primary("state.db"), file("journal-sink"));
        assert_eq!(
            primary("postgres://drover@db:5432/drover"),
            file("./data/journal-sink")
        );
        assert_eq!(
            journal(&[], &[("USE_MOCK_DA", " TRUE ")]).unwrap(),
            JournalConfig::to(file("./data/journal-sink"))
        );
        // A flag or DROVER_JOURNAL_SINK wins over the alias.
        assert_eq!(
            journal(&["--journal-sink", "http://h:1"], &mock)
                .unwrap()
                .primary,
            SinkSpec::Http("http://h:1".into())
        );
        assert_eq!(journal(&[], &[("USE_MOCK_DA", "false")]), None);
        let e = refused(&[], &[("USE_MOCK_DA", "yes")]);
        assert!(e.starts_with("USE_MOCK_DA=\"yes\""), "{e}");
        assert!(e.contains("true or false"), "{e}");
    }

    /// The alias ranks above the file: `USE_MOCK_DA=true` beats the file's sink, and the sink
    /// is placed beside the database the file names.
    #[test]
    fn use_mock_da_beats_the_file_and_follows_its_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        std::fs::write(
            &path,
            "db = \"/srv/drover/state.db\"\njournal-sink = \"file:/elsewhere\"\n",
        )
        .unwrap();
        let mut settings = ServerArgs::default().settings;
        settings
            .journal
            .fill_aliases_from(&vars(&[("USE_MOCK_DA", "true")]))
            .unwrap();
        settings.merge(ServerSettings::from_file(&path).unwrap());
        let config = settings.resolve().unwrap().app.server.journal.unwrap();
        assert_eq!(config.primary, file("/srv/drover/journal-sink"));
    }

    #[test]
    fn the_contracts_tuning_variables_fill_what_flags_leave_unset() {
        let env = [
            ("USE_MOCK_DA", "true"),
            ("DA_TIMEOUT_MS", "1500"),
            ("DA_RETRY_COUNT", "6"),
            ("DA_RETRY_DELAY_MS", "250"),
            ("RECONCILE_BATCH_SIZE", "20"),
            ("RECONCILE_MAX_RETRIES", "9"),
            ("RECONCILE_RETRY_DELAY_MS", "40"),
            ("RECONCILE_PARALLEL", "false"),
        ];
        let config = journal(&[], &env).unwrap();
        assert_eq!(config.timeout, Duration::from_millis(1500));
        assert_eq!(config.routing.failure_threshold, 6);
        assert_eq!(config.routing.check_interval, Duration::from_millis(250));
        assert_eq!(config.reconcile_batch, 20);
        assert_eq!(config.reconcile_max_retries, 9);
        assert_eq!(config.reconcile_retry_delay, Duration::from_millis(40));
        // Untouched by any alias.
        assert_eq!(config.routing.recovery_threshold, 2);

        let config = journal(
            &[
                "--journal-timeout",
                "3s",
                "--journal-failure-threshold",
                "1",
                "--journal-check-interval",
                "2s",
                "--reconcile-batch-size",
                "1",
                "--reconcile-max-retries",
                "1",
                "--reconcile-retry-delay",
                "2s",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(config.timeout, Duration::from_secs(3));
        assert_eq!(config.routing.failure_threshold, 1);
        assert_eq!(config.routing.check_interval, Duration::from_secs(2));
        assert_eq!(config.reconcile_batch, 1);
        assert_eq!(config.reconcile_max_retries, 1);
        assert_eq!(config.reconcile_retry_delay, Duration::from_secs(2));

        let e = refused(&[], &[("USE_MOCK_DA", "true"), ("DA_TIMEOUT_MS", "30s")]);
        assert!(e.starts_with("DA_TIMEOUT_MS=\"30s\""), "{e}");
        assert!(e.contains("milliseconds"), "{e}");
    }

    #[test]
    fn reconcile_parallel_true_is_refused() {
        let e = refused(&[], &[("RECONCILE_PARALLEL", "true")]);
        assert!(
            e.contains("blobs are reconciled one after another, in order"),
            "{e}"
        );
        assert!(
            e.contains("RECONCILE_PARALLEL=true is not supported"),
            "{e}"
        );
        assert_eq!(journal(&[], &[("RECONCILE_PARALLEL", "false")]), None);
    }

    #[test]
    fn the_emergency_fallback_comes_from_emergency_da_url() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut env = vec![
                ("USE_MOCK_DA", "true"),
                ("ENABLE_FALLBACK", "true"),
                ("FALLBACK_DA_TYPE", "emergency"),
            ];
            env.extend_from_slice(extra);
            env
        };
        let env = with(&[("EMERGENCY_DA_URL", "http://10.0.0.2:8080")]);
        let config = journal(&[], &env).unwrap();
        assert_eq!(
            config.emergency,
            Some(SinkSpec::Http("http://10.0.0.2:8080".into()))
        );
        assert_eq!(config.secondary, None);
        // The flag wins.
        let config = journal(&["--journal-emergency", "file:/e"], &env).unwrap();
        assert_eq!(config.emergency, Some(file("/e")));

        let e = refused(&[], &with(&[]));
        assert!(e.contains("needs EMERGENCY_DA_URL"), "{e}");
        // Not needed when the flag gives the emergency sink.
        let config = journal(&["--journal-emergency", "file:/e"], &with(&[])).unwrap();
        assert_eq!(config.emergency, Some(file("/e")));

        let e = refused(&[], &with(&[("EMERGENCY_DA_URL", "celestia://x")]));
        assert!(e.starts_with("EMERGENCY_DA_URL=\"celestia://x\""), "{e}");

        // Without ENABLE_FALLBACK=true, or with FALLBACK_DA_TYPE=none, nothing.
        for env in [
            vec![
                ("USE_MOCK_DA", "true"),
                ("FALLBACK_DA_TYPE", "emergency"),
                ("EMERGENCY_DA_URL", "http://e:1"),
            ],
            vec![
                ("USE_MOCK_DA", "true"),
                ("ENABLE_FALLBACK", "false"),
                ("FALLBACK_DA_TYPE", "emergency"),
                ("EMERGENCY_DA_URL", "http://e:1"),
            ],
            vec![
                ("USE_MOCK_DA", "true"),
                ("ENABLE_FALLBACK", "true"),
                ("FALLBACK_DA_TYPE", "none"),
                ("EMERGENCY_DA_URL", "http://e:1"),
            ],
        ] {
            let config = journal(&[], &env).unwrap();
            assert_eq!(
                (config.secondary, config.emergency),
                (None, None),
                "{env:?}"
            );
        }
        let e = refused(
            &[],
            &[
                ("ENABLE_FALLBACK", "true"),
                ("FALLBACK_DA_TYPE", "celestia"),
            ],
        );
        assert!(e.starts_with("FALLBACK_DA_TYPE=\"celestia\""), "{e}");
        let e = refused(&[], &[("ENABLE_FALLBACK", "on")]);
        assert!(e.starts_with("ENABLE_FALLBACK=\"on\""), "{e}");
    }

    #[test]
    fn a_quorum_fallback_is_refused_with_the_way_out() {
        let quorum = [
            ("USE_MOCK_DA", "true"),
            ("ENABLE_FALLBACK", "true"),
            ("FALLBACK_DA_TYPE", "quorum"),
            ("QUORUM_VALIDATORS", "v1,v2,v3"),
        ];
        let e = refused(&[], &quorum);
        assert!(
            e.starts_with(
                "FALLBACK_DA_TYPE=quorum collects validator signatures, which drover does not \
                 implement; give a secondary sink with --journal-secondary (file:DIR, \
                 postgres://..., http(s)://"
            ),
            "{e}"
        );
        let e = refused(
            &[],
            &[
                ("USE_MOCK_DA", "true"),
                ("ENABLE_FALLBACK", "true"),
                ("QUORUM_VALIDATORS", "v1"),
            ],
        );
        assert!(e.starts_with("QUORUM_VALIDATORS"), "{e}");
        assert!(
            e.contains("give a secondary sink with --journal-secondary"),
            "{e}"
        );
        // With a secondary sink given, the quorum settings are ignored (with a warning).
        let config = journal(&["--journal-secondary", "file:/s"], &quorum).unwrap();
        assert_eq!(config.secondary, Some(file("/s")));
        // Without ENABLE_FALLBACK=true they are not read at all.
        assert_eq!(
            journal(
                &[],
                &[("FALLBACK_DA_TYPE", "quorum"), ("QUORUM_VALIDATORS", "v1")]
            ),
            None
        );
    }

    #[test]
    fn celestia_settings_need_a_sink_or_use_mock_da() {
        let e = refused(&[], &[("DA_RPC_URL", "http://localhost:26658")]);
        assert_eq!(
            e,
            "DA_RPC_URL names a Celestia node; drover publishes its journal to file, PostgreSQL \
             or HTTP sinks instead: set --journal-sink (file:DIR, postgres://..., \
             http(s)://host:port) or USE_MOCK_DA=true"
        );
        for name in CELESTIA {
            let e = refused(&[], &[(name, "x")]);
            assert!(e.starts_with(name), "{e}");
            assert!(
                e.contains("drover publishes its journal to file, PostgreSQL or HTTP"),
                "{e}"
            );
        }
        let e = refused(
            &[],
            &[
                ("USE_MOCK_DA", "false"),
                ("DA_NAMESPACE", "00"),
                ("DA_NETWORK", "mocha"),
            ],
        );
        assert!(
            e.starts_with("DA_NAMESPACE, DA_NETWORK are settings of a Celestia node"),
            "{e}"
        );
        // A sink, or the mock, and they are ignored (with a warning).
        let celestia = [
            ("DA_RPC_URL", "http://localhost:26658"),
            ("DA_AUTH_TOKEN", "t"),
        ];
        assert_eq!(
            journal(&["--journal-sink", "file:/j"], &celestia)
                .unwrap()
                .primary,
            file("/j")
        );
        let mut mock = celestia.to_vec();
        mock.push(("USE_MOCK_DA", "true"));
        assert_eq!(
            journal(&[], &mock).unwrap().primary,
            file("./data/journal-sink")
        );
    }

    /// A sink from the config file meets what the aliases ask for, as a flag does.
    #[test]
    fn a_sink_from_the_file_meets_the_aliases_demands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        std::fs::write(
            &path,
            "journal-sink = \"file:/j\"\njournal-secondary = \"file:/s\"\n",
        )
        .unwrap();
        let env = [
            ("DA_RPC_URL", "http://localhost:26658"),
            ("ENABLE_FALLBACK", "true"),
            ("FALLBACK_DA_TYPE", "quorum"),
        ];
        let mut settings = ServerArgs::default().settings;
        settings.journal.fill_aliases_from(&vars(&env)).unwrap();
        settings.merge(ServerSettings::from_file(&path).unwrap());
        let config = settings.resolve().unwrap().app.server.journal.unwrap();
        assert_eq!(
            (config.primary, config.secondary),
            (file("/j"), Some(file("/s")))
        );
    }

    #[test]
    fn server_help_shows_the_event_journal_group() {
        let help = ServerArgs::augment_args(clap::Command::new("server"))
            .render_long_help()
            .to_string();
        let heading = help.find("Event journal:").expect(&help);
        for expected in [
            "--journal-sink <SINK>",
            "DROVER_JOURNAL_SINK",
            "--journal-secondary <SINK>",
            "DROVER_JOURNAL_SECONDARY",
            "--journal-emergency <SINK>",
            "DROVER_JOURNAL_EMERGENCY",
            "--journal-failure-threshold <N>",
            "DROVER_JOURNAL_FAILURE_THRESHOLD",
            "--journal-recovery-threshold <N>",
            "DROVER_JOURNAL_RECOVERY_THRESHOLD",
            "--journal-check-interval <DURATION>",
            "DROVER_JOURNAL_CHECK_INTERVAL",
            "--journal-timeout <DURATION>",
            "DROVER_JOURNAL_TIMEOUT",
            "--journal-publish-every <DURATION>",
            "DROVER_JOURNAL_PUBLISH_EVERY",
            "--journal-blob-max-bytes <BYTES>",
            "DROVER_JOURNAL_BLOB_MAX_BYTES",
            "--journal-sink-key <KEY>",
            "DROVER_JOURNAL_SINK_KEY",
            "--reconcile-batch-size <N>",
            "DROVER_RECONCILE_BATCH_SIZE",
            "--reconcile-max-retries <N>",
            "DROVER_RECONCILE_MAX_RETRIES",
            "--reconcile-retry-delay <DURATION>",
            "DROVER_RECONCILE_RETRY_DELAY",
            "USE_MOCK_DA",
            "EMERGENCY_DA_URL",
            "DA_RETRY_COUNT",
            "DA_RETRY_DELAY_MS",
            "DA_TIMEOUT_MS",
            "RECONCILE_BATCH_SIZE",
            "RECONCILE_MAX_RETRIES",
            "RECONCILE_RETRY_DELAY_MS",
        ] {
            let at = help.find(expected);
            assert!(
                at.is_some_and(|at| at > heading),
                "{expected:?} under the heading:\n{help}"
            );
        }
    }
}
