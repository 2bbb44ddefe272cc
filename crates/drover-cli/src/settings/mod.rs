//! The settings of `drover server`, from every source: flags, `DROVER_*` variables, the
//! contracts' own variables as aliases, and the TOML file given with `--config`.
//!
//! Precedence, the same for every setting: a flag, then its `DROVER_*` variable (both read by
//! clap), then the contract's alias where one exists ([`alias`]), then the file, then the
//! default. Each group of settings is one struct serving all three sources (see [`groups`] and
//! [`runners`]), so a setting is declared once: its flag, variable, file key and merge rule
//! come from that one field. This module merges and shapes; whether the result is acceptable
//! (zero intervals, a public address without keys) is the server's configuration check.

pub mod alias;
pub mod groups;
pub mod journal;
pub mod runners;

use crate::process::LogFormat;
use clap::Args;
use drover_server::{AppConfig, ServerConfig, Surface};
use groups::{
    AuthSettings, ClusterSettings, LimitSettings, ListenSettings, LogSettings, PrioritySettings,
    StoreSettings, TaskSettings, TlsSettings,
};
use journal::JournalSettings;
use merge::Merge;
use runners::RunnerSettings;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Settings that cannot be read or used; the message names the flag, variable or file key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("in config file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The options of `drover server`; the command's help text is on the binary's `Command::Server`.
#[derive(Debug, Args, Default)]
pub struct ServerArgs {
    /// TOML file with settings; flags and environment variables override it.
    #[arg(long, env = "DROVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: ServerSettings,
}

/// Every settings group of the server. The file has the same shape: the groups' keys at the
/// top level, the runner group as a `[runners]` table.
#[derive(Debug, Default, Args, Merge)]
pub struct ServerSettings {
    #[command(flatten)]
    pub listen: ListenSettings,
    #[command(flatten)]
    pub tls: TlsSettings,
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub tasks: TaskSettings,
    #[command(flatten)]
    pub logging: LogSettings,
    #[command(flatten)]
    pub runners: RunnerSettings,
    #[command(flatten)]
    pub limits: LimitSettings,
    #[command(flatten)]
    pub cluster: ClusterSettings,
    #[command(flatten)]
    pub priority: PrioritySettings,
    #[command(flatten)]
    pub journal: JournalSettings,
}

/// The settings after merging every source and applying the defaults: the server's
/// configuration (not yet validated: `AppConfig::validate` does that) and the log format, which
/// is the command line's concern.
#[derive(Debug)]
pub struct Resolved {
    pub app: AppConfig,
    pub log_format: LogFormat,
}

impl ServerArgs {
    /// Flags and `DROVER_*` variables (already in `self`), then aliases, then the file.
    pub fn merged(self) -> Result<ServerSettings, SettingsError> {
        let mut settings = self.settings;
        settings.fill_aliases()?;
        if let Some(path) = &self.config {
            settings.merge(ServerSettings::from_file(path)?);
        }
        Ok(settings)
    }

    /// Every source merged, with the defaults for what none of them gives.
    pub fn resolve(self) -> Result<Resolved, SettingsError> {
        self.merged()?.resolve()
    }
}

impl ServerSettings {
    fn fill_aliases(&mut self) -> Result<(), SettingsError> {
        self.listen.fill_aliases()?;
        self.store.fill_aliases()?;
        self.auth.fill_aliases()?;
        self.tasks.fill_aliases()?;
        self.priority.fill_aliases()?;
        self.journal.fill_aliases()?;
        self.runners.fill_aliases()
    }

    /// Reads the TOML file: each top-level key goes to the group whose flag has that long name,
    /// the `[runners]` table to the runner group; a key no group knows is refused.
    pub fn from_file(path: &Path) -> Result<ServerSettings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let in_file = |message: String| SettingsError::File {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| in_file(e.to_string()))?;
        let runners = match table.remove("runners") {
            Some(value) => parse(value).map_err(|e| in_file(format!("[runners] {e}")))?,
            None => RunnerSettings::default(),
        };
        let settings = ServerSettings {
            listen: take_group(&mut table).map_err(in_file)?,
            tls: take_group(&mut table).map_err(in_file)?,
            store: take_group(&mut table).map_err(in_file)?,
            auth: take_group(&mut table).map_err(in_file)?,
            tasks: take_group(&mut table).map_err(in_file)?,
            logging: take_group(&mut table).map_err(in_file)?,
            limits: take_group(&mut table).map_err(in_file)?,
            cluster: take_group(&mut table).map_err(in_file)?,
            priority: take_group(&mut table).map_err(in_file)?,
            journal: take_group(&mut table).map_err(in_file)?,
            runners,
        };
        if let Some(key) = table.keys().next() {
            let mut known = file_keys();
            known.push("runners".into());
            let hint = match crate::suggest::closest(key, known.iter().map(String::as_str)) {
                Some(name) => format!("did you mean `{name}`? "),
                None => String::new(),
            };
            return Err(in_file(format!(
                "unknown field `{key}`: {hint}The keys are the long option names of \
                 `drover server` (`port`, `spot-timeout`, ...), runner settings in a [runners] \
                 table"
            )));
        }
        Ok(settings)
    }

    /// Every setting with its default applied.
    pub fn resolve(self) -> Result<Resolved, SettingsError> {
        let runners = self.runners.build()?;
        let store_url = self.store.url();
        let server = self.limits.apply(ServerConfig {
            runners: runners.config,
            min_free_disk: self.store.min_free_disk(),
            cluster: self.cluster.config(),
            priority: self.priority.config()?,
            da_dir: self.store.da_dir.clone(),
            journal: self.journal.config(&store_url)?,
            ..self.tasks.server_config(&self.auth)
        });
        // `--runner-listen ADDR` is `--listen runners=ADDR`, kept for its name.
        let runner_listen = runners.listen.map(|addr| groups::Listen {
            surface: Surface::Runners,
            addr,
        });
        Ok(Resolved {
            app: AppConfig {
                store_url,
                postgres: self.store.postgres()?,
                listeners: self.listen.listeners(runner_listen),
                server,
                runner_driver: runners.driver,
                allow_unauthenticated: self.auth.allow_unauthenticated,
                tls: self.tls.files()?,
                grpc: self.listen.grpc(),
            },
            log_format: self.logging.format(),
        })
    }
}

/// Takes out of `table` the keys of group `G` (its flags' long names) and reads them as `G`.
fn take_group<G: clap::Args + DeserializeOwned>(table: &mut toml::Table) -> Result<G, String> {
    let flags = G::augment_args(clap::Command::new("settings"));
    let own: toml::Table = flags
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter_map(|key| table.remove_entry(key))
        .collect();
    parse(toml::Value::Table(own))
}

/// The top-level keys of the config file: the long names of every group's flags.
fn file_keys() -> Vec<String> {
    fn of<G: clap::Args>() -> impl Iterator<Item = String> {
        let flags = G::augment_args(clap::Command::new("settings"));
        let names: Vec<String> = flags
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .map(String::from)
            .collect();
        names.into_iter()
    }
    of::<ListenSettings>()
        .chain(of::<TlsSettings>())
        .chain(of::<StoreSettings>())
        .chain(of::<AuthSettings>())
        .chain(of::<TaskSettings>())
        .chain(of::<LogSettings>())
        .chain(of::<LimitSettings>())
        .chain(of::<ClusterSettings>())
        .chain(of::<PrioritySettings>())
        .chain(of::<JournalSettings>())
        .collect()
}

/// Reads a group from a TOML value; an error names the key it is about, and the valid key
/// closest to an unknown one.
fn parse<G: DeserializeOwned>(value: toml::Value) -> Result<G, String> {
    value
        .try_into()
        .map_err(|e: toml::de::Error| crate::suggest::unknown_field(e.to_string().trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `drover server --help` lists each group's options under its own heading, in the order
    /// the groups are declared, so an option is found by what it is about.
    #[test]
    fn server_help_puts_every_group_under_its_heading() {
        let help = ServerArgs::augment_args(clap::Command::new("server"))
            .render_long_help()
            .to_string();
        let groups = [
            ("Listeners:", "--port <PORT>"),
            ("TLS:", "--tls-cert <FILE>"),
            ("Store:", "--db <"),
            ("Keys and access:", "--api-key <"),
            ("Tasks, spots and reapers:", "--spot-timeout <"),
            ("Logging:", "--log-format <"),
            ("Session runners:", "--runner-driver <"),
            ("Limits:", "--max-connections <"),
            ("Replicas:", "--lease-ttl <"),
            ("Priority router:", "--dispatch <"),
            ("Event journal:", "--journal-sink <"),
        ];
        // Headings are the unindented lines ending in a colon; each group runs to the next.
        let lines: Vec<&str> = help.lines().collect();
        let is_heading = |l: &&str| l.ends_with(':') && !l.starts_with(' ');
        let mut after = 0;
        for (heading, option) in groups {
            let at = (lines.iter().skip(after))
                .position(|l| *l == heading)
                .map(|i| after + i)
                .unwrap_or_else(|| panic!("no {heading:?} after line {after} in:\n{help}"));
            let end = (lines.iter().skip(at + 1))
                .position(is_heading)
                .map_or(lines.len(), |i| at + 1 + i);
            let group = lines[at..end].join("\n");
            assert!(
                group.contains(option),
                "{option} is not under {heading:?}:\n{group}"
            );
            after = at + 1;
        }
    }

    /// The keys serde accepts for `G`, read from its refusal of a key it does not know.
    fn file_keys<G: DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
        let mut probe = toml::Table::new();
        probe.insert("no-such-key".into(), toml::Value::Integer(1));
        let error = parse::<G>(toml::Value::Table(probe)).unwrap_err();
        let expected = error.split("expected").nth(1).unwrap_or_default();
        let mut keys: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect();
        keys.sort();
        keys
    }

    fn flag_names<G: clap::Args>() -> Vec<String> {
        let flags = G::augment_args(clap::Command::new("settings"));
        let mut names: Vec<String> = flags
            .get_arguments()
            .filter_map(|a| a.get_long())
            .map(String::from)
            .collect();
        names.sort();
        names
    }

    /// The file reader routes a key to the group whose flag has that name, so every group's
    /// file keys must be exactly its flags' long names.
    #[test]
    fn every_file_key_is_a_long_option_name() {
        fn same<G: clap::Args + DeserializeOwned + std::fmt::Debug>() {
            assert_eq!(
                file_keys::<G>(),
                flag_names::<G>(),
                "{}",
                std::any::type_name::<G>()
            );
        }
        same::<ListenSettings>();
        same::<TlsSettings>();
        same::<StoreSettings>();
        same::<AuthSettings>();
        same::<TaskSettings>();
        same::<LogSettings>();
        same::<RunnerSettings>();
        same::<LimitSettings>();
        same::<ClusterSettings>();
        same::<JournalSettings>();
    }

    /// The replica's name and the lease come from the file; unset, the lease is 10 s, the
    /// grace is the spot timeout, and the name is made up at start.
    #[test]
    fn cluster_settings_come_from_the_file_and_default_when_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        let server = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let file = ServerSettings::from_file(&path).unwrap();
            file.resolve().unwrap().app.server
        };
        let set = server("replica-id = \"east-1\"\nlease-ttl = \"30s\"\ntakeover-grace = \"1m\"\n");
        assert_eq!(set.cluster.replica_id, "east-1");
        assert_eq!(set.cluster.lease_ttl, std::time::Duration::from_secs(30));
        assert_eq!(
            set.cluster.takeover_grace,
            Some(std::time::Duration::from_secs(60))
        );
        let unset = server("port = 1\n");
        assert_eq!(unset.cluster.lease_ttl, std::time::Duration::from_secs(10));
        assert_eq!(unset.cluster.takeover_grace, None);
        assert!(!unset.cluster.replica_id.is_empty());
        assert_ne!(
            unset.cluster.replica_id,
            server("port = 1\n").cluster.replica_id,
            "a new name at every start"
        );
    }

    /// `--public-reads` and `--require-node-credentials` reach the server's configuration from
    /// the file (and default to off, the contract's behaviour).
    #[test]
    fn read_and_node_credential_switches_come_from_the_file() {
        let server = |text: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("drover.toml");
            std::fs::write(&path, text).unwrap();
            let file = ServerSettings::from_file(&path).unwrap();
            file.resolve().unwrap().app.server
        };
        let default = server("port = 1\n");
        assert!(!default.public_reads && !default.require_node_credentials);
        let set = server("public-reads = true\nrequire-node-credentials = true\n");
        assert!(set.public_reads && set.require_node_credentials);
    }

    #[test]
    fn runner_settings_come_from_the_runners_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        std::fs::write(
            &path,
            "port = 1\n[runners]\nmax-runners = 7\nrunner-reuse = true\n",
        )
        .unwrap();
        let s = ServerSettings::from_file(&path)
            .unwrap()
            .resolve()
            .unwrap()
            .app;
        assert_eq!(s.listeners[0].addr.port(), 1);
        assert_eq!(s.server.runners.max_runners, Some(7));
        assert!(s.server.runners.reuse);

        std::fs::write(&path, "max-runners = 7\n").unwrap();
        let e = ServerSettings::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("unknown field `max-runners`"), "{e}");
    }

    #[test]
    fn a_misspelt_key_names_the_key_that_was_meant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        let refusal = |text: &str| {
            std::fs::write(&path, text).unwrap();
            ServerSettings::from_file(&path).unwrap_err().to_string()
        };
        let e = refusal("spot_timout = \"10s\"\n");
        assert!(
            e.contains("unknown field `spot_timout`: did you mean `spot-timeout`?"),
            "{e}"
        );
        let e = refusal("[runers]\nmax-runners = 1\n");
        assert!(e.contains("did you mean `runners`?"), "{e}");
        let e = refusal("[runners]\nmax-runner = 7\n");
        assert!(
            e.contains("unknown field `max-runner`: did you mean `max-runners`?"),
            "{e}"
        );
        // A key like none of them still says where the keys come from.
        let e = refusal("zebra = 1\n");
        assert!(!e.contains("did you mean"), "{e}");
        assert!(e.contains("long option names"), "{e}");
    }

    #[test]
    fn limits_come_from_the_file_and_default_when_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        std::fs::write(
            &path,
            "idle-timeout = \"5s\"\nmax-connections = 64\nmax-spots = 0\n",
        )
        .unwrap();
        let s = ServerSettings::from_file(&path)
            .unwrap()
            .resolve()
            .unwrap()
            .app
            .server;
        let d = ServerConfig::default();
        assert_eq!(s.http.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(s.http.max_connections, 64);
        assert_eq!(s.http.header_timeout, d.http.header_timeout);
        assert_eq!(s.max_spots, None);
        assert_eq!(s.max_job_bytes, d.max_job_bytes);
    }
}
