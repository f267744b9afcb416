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
}

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
