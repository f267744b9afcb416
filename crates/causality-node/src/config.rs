//! Node configuration: a TOML file, then `CAUSALITY_*` environment variables, then flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use causality_net::Multiaddr;
use serde::Deserialize;

/// How logs are written to stderr.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Everything `causality-node run` is configured with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// Where the identity and the database live.
    pub(crate) data_dir: PathBuf,
    /// Addresses to listen on (TCP and QUIC multiaddrs).
    pub(crate) listen: Vec<String>,
    /// Peers to join through.
    pub(crate) bootstrap: Vec<String>,
    /// Roles this node offers (prover, verifier, executor, storage).
    pub(crate) roles: Vec<String>,
    /// Admin endpoint port on 127.0.0.1 (0 picks a free one).
    pub(crate) admin_port: u16,
    /// Log format on stderr.
    pub(crate) log_format: LogFormat,
    /// `tracing` filter for stderr, e.g. `info,causality_net=debug`.
    pub(crate) log_filter: String,
    /// Logical topics to subscribe to at start (counted in `/status`).
    pub(crate) subscribe: Vec<String>,
    /// Connected peers at most.
    pub(crate) max_peers: usize,
    /// Messages accepted per peer per second.
    pub(crate) messages_per_second: u32,
    /// Discovery refresh interval, milliseconds.
    pub(crate) refresh_ms: u64,
    /// Bytes per second the node's event log may grow by, sustained, whatever peers do.
    pub(crate) event_log_bytes_per_second: u64,
    /// Bytes the event log may take at once after a quiet period.
    pub(crate) event_log_burst_bytes: u64,
    /// Proof sharing.
    pub(crate) proofs: ProofsConfig,
    /// Register sync.
    pub(crate) registers: RegistersConfig,
    /// Execution coordination.
    pub(crate) exec: ExecConfig,
}

/// `[proofs]`: proof sharing (Groth16 over BN254 verified here).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProofsConfig {
    /// Run proof sharing.
    pub(crate) enabled: bool,
}

impl Default for ProofsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[registers]`: register sync.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RegistersConfig {
    /// Run register sync.
    pub(crate) enabled: bool,
    /// Domains whose registers are followed from the start (their updates, commitments and
    /// nullifiers are kept here).
    pub(crate) follow: Vec<String>,
}

impl Default for RegistersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            follow: Vec::new(),
        }
    }
}

/// Domain names are short printable words: they name gossip topics.
const MAX_DOMAIN_LEN: usize = 64;

/// `[exec]`: execution coordination, and the work this node runs when it has the
/// `executor` role.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ExecConfig {
    /// Run execution coordination.
    pub(crate) enabled: bool,
    /// Work run at once (with the `executor` role).
    pub(crate) capacity: u32,
    /// WebAssembly fuel per execution at most (a work spec may ask for less).
    pub(crate) max_fuel: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            capacity: 2,
            max_fuel: 1_000_000_000,
        }
    }
}

/// Work run at once at most.
const MAX_CAPACITY: u32 = 256;

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("causality-data"),
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".into(),
                "/ip4/127.0.0.1/udp/0/quic-v1".into(),
            ],
            bootstrap: Vec::new(),
            roles: Vec::new(),
            admin_port: 0,
            log_format: LogFormat::Human,
            log_filter: "info".into(),
            subscribe: Vec::new(),
            max_peers: 256,
            messages_per_second: 200,
            refresh_ms: 2_000,
            event_log_bytes_per_second: causality_log::Budget::default().bytes_per_second,
            event_log_burst_bytes: causality_log::Budget::default().burst_bytes,
            proofs: ProofsConfig::default(),
            registers: RegistersConfig::default(),
            exec: ExecConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path` (when given), applies `CAUSALITY_*` environment overrides, and checks the
    /// result. Errors name the file, key or value at fault.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("config file {}: {}", path.display(), e.message())
                })?
            }
            None => Self::default(),
        };
        config.apply_env(|key| std::env::var(key).ok())?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(v) = var("CAUSALITY_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("CAUSALITY_LISTEN") {
            self.listen = list(v);
        }
        if let Some(v) = var("CAUSALITY_BOOTSTRAP") {
            self.bootstrap = list(v);
        }
        if let Some(v) = var("CAUSALITY_ROLES") {
            self.roles = list(v);
        }
        if let Some(v) = var("CAUSALITY_ADMIN_PORT") {
            self.admin_port = v
                .parse()
                .with_context(|| format!("CAUSALITY_ADMIN_PORT: `{v}` is not a port number"))?;
        }
        if let Some(v) = var("CAUSALITY_LOG_FILTER") {
            self.log_filter = v;
        }
        Ok(())
    }

    /// Whether this node runs the work of others.
    pub(crate) fn executes(&self) -> bool {
        self.exec.enabled
            && self
                .roles
                .iter()
                .any(|r| r == causality_exec::EXECUTOR_ROLE)
    }

    /// What this node runs when it executes: the kinds of its executors, its capacity.
    pub(crate) fn executor_info(&self) -> causality_exec::ExecutorInfo {
        if !self.executes() {
            return causality_exec::ExecutorInfo::default();
        }
        causality_exec::ExecutorInfo {
            kinds: crate::executors::KINDS
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
            capacity: self.exec.capacity,
        }
    }

    /// The roles this node's peer record advertises: the configured ones, and with the
    /// executor role what it runs and how much at once.
    pub(crate) fn advertised_roles(&self) -> Vec<String> {
        let mut roles: Vec<String> = self
            .roles
            .iter()
            .filter(|r| r.as_str() != causality_exec::EXECUTOR_ROLE)
            .cloned()
            .collect();
        if self.executes() {
            roles.extend(self.executor_info().roles());
        }
        roles
    }

    pub(crate) fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        parse_addrs("listen", &self.listen)
    }

    pub(crate) fn bootstrap_addrs(&self) -> Result<Vec<Multiaddr>> {
        parse_addrs("bootstrap", &self.bootstrap)
    }

    /// Checks everything that can be checked before touching the disk or the network.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.listen.is_empty() {
            bail!("listen: at least one address is required");
        }
        self.listen_addrs()?;
        self.bootstrap_addrs()?;
        for topic in &self.subscribe {
            topic
                .parse::<causality_net::Topic>()
                .with_context(|| format!("subscribe: `{topic}`"))?;
        }
        if self.refresh_ms == 0 {
            bail!("refresh_ms: must be positive");
        }
        if self.event_log_bytes_per_second == 0 {
            bail!("event_log_bytes_per_second: must be positive");
        }
        if self.event_log_burst_bytes < 4096 {
            bail!("event_log_burst_bytes: must be at least 4096 (one entry of every size)");
        }
        for domain in &self.registers.follow {
            if domain.is_empty()
                || domain.len() > MAX_DOMAIN_LEN
                || !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                bail!(
                    "registers.follow: `{domain}` is not a domain name (1 to {MAX_DOMAIN_LEN} letters, digits, `-`, `_` or `.`)"
                );
            }
        }
        if self.exec.capacity == 0 || self.exec.capacity > MAX_CAPACITY {
            bail!("exec.capacity: must be between 1 and {MAX_CAPACITY}");
        }
        if self.exec.max_fuel == 0 {
            bail!("exec.max_fuel: must be positive");
        }
        let roles = self.advertised_roles();
        if roles.len() > causality_discovery::MAX_ROLES {
            bail!(
                "roles: {} roles with the executor's, at most {} fit in a peer record",
                roles.len(),
                causality_discovery::MAX_ROLES
            );
        }
        if let Some(role) = roles
            .iter()
            .find(|r| r.is_empty() || r.len() > causality_discovery::MAX_ROLE_LEN)
        {
            bail!(
                "roles: `{role}` is not a role (1 to {} bytes)",
                causality_discovery::MAX_ROLE_LEN
            );
        }
        Ok(())
    }
}

fn parse_addrs(key: &str, values: &[String]) -> Result<Vec<Multiaddr>> {
    values
        .iter()
        .map(|v| {
            v.parse::<Multiaddr>()
                .map_err(|e| anyhow::anyhow!("{key}: `{v}` is not a multiaddr ({e})"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = toml::from_str::<Config>("listen_on = []").unwrap_err();
        assert!(
            err.message().contains("unknown field `listen_on`"),
            "{}",
            err.message()
        );
        let config: Config = toml::from_str("bootstrap = [\"not an address\"]").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("bootstrap: `not an address` is not a multiaddr"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = Config::default();
        config
            .apply_env(|k| {
                (k == "CAUSALITY_BOOTSTRAP")
                    .then(|| "/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/tcp/2".into())
            })
            .unwrap();
        assert_eq!(config.bootstrap.len(), 2);
        let err = config
            .apply_env(|k| (k == "CAUSALITY_ADMIN_PORT").then(|| "http".into()))
            .unwrap_err();
        assert!(err.to_string().contains("not a port number"));
    }
}
