//! `causality-node run`: one node, composed from the crates.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use causality_discovery::Discovery;
use causality_log::{
    Budget, LogError, LogLayer, LogStore as _, RocksLog, RocksLogOptions, SyncPolicy,
};
use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, Network, PeerId, Topic};
use futures::StreamExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::admin::Token;
use crate::config::{Config, LogFormat};
use crate::state::{NodeState, SEQ_RESERVE};

/// The diagnostic echo protocol every node serves.
pub(crate) const ECHO: &str = "/causality/echo/0.1.0";

/// A running node's parts, shared with the admin endpoint.
pub(crate) struct Node {
    pub(crate) network: Network,
    pub(crate) discovery: Discovery,
    pub(crate) log: RocksLog,
    pub(crate) started: Instant,
    /// libp2p's own metrics, recorded by the network adapter.
    pub(crate) libp2p_metrics: Arc<Mutex<causality_net::MetricsRegistry>>,
    received: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Node {
    pub(crate) fn received(&self) -> BTreeMap<String, u64> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) async fn publish(&self, topic: &str, payload: &str) -> Result<String> {
        let topic: Topic = topic.parse()?;
        let id = self
            .network
            .publish(&topic, "causality.node.Text", payload.as_bytes().to_vec())
            .await?;
        Ok(id.to_string())
    }

    pub(crate) async fn echo(&self, peer: &str, body: &str) -> Result<String> {
        let peer: PeerId = peer.parse()?;
        let answer = self
            .network
            .request(peer, ECHO, body.as_bytes().to_vec())
            .await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
}

/// Opens the data directory: creates it, checks it is writable, opens the database (whose
/// lock refuses a second process) with the log and the node's own state, and the identity.
pub(crate) fn open_data_dir(config: &Config) -> Result<(RocksLog, NodeState, Keypair)> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("data directory {}: cannot create it", dir.display()))?;
    let probe = tempfile::Builder::new()
        .prefix(".write-test.")
        .tempfile_in(dir)
        .and_then(|mut f| f.write_all(b"ok"));
    probe.with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let log = match RocksLog::open_with(
        dir.join("db"),
        RocksLogOptions::default().with_sync(SyncPolicy::Periodic {
            max_batch: 256,
            max_delay: Duration::from_millis(50),
        }),
        vec![NodeState::descriptor()],
    ) {
        Ok(log) => log,
        Err(LogError::Locked { .. }) => {
            bail!(
                "data directory {} is in use by another causality-node process",
                dir.display()
            )
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot open the database in {}", dir.display()));
        }
    };
    let state = NodeState::new(Arc::clone(log.db()))?;
    let keypair = Keypair::load_or_create(&dir.join("identity.key"))?;
    Ok((log, state, keypair))
}

/// Keeps the sequence reservation ahead of the network and the saved bans current.
struct Persistence {
    state: NodeState,
    network: Network,
    ceiling: u64,
    bans: BTreeMap<PeerId, u64>,
}

impl Persistence {
    /// Raises the reservation when the next sequence number is within half a block of it,
    /// and saves the bans when they changed.
    fn save(&mut self) -> Result<()> {
        let next = self.network.next_seq();
        if next.saturating_add(SEQ_RESERVE / 2) > self.ceiling {
            self.ceiling = self.state.reserve_seq(next)?;
        }
        let bans = self.network.bans();
        if bans != self.bans {
            self.state.save_bans(&bans)?;
            self.bans = bans;
        }
        Ok(())
    }
}

pub(crate) async fn run(config: Config) -> Result<()> {
    config.validate()?;
    // Bind the admin port first: a port in use fails before anything is written.
    let admin = tokio::net::TcpListener::bind(("127.0.0.1", config.admin_port))
        .await
        .with_context(|| {
            format!(
                "admin port {} on 127.0.0.1 is not available",
                config.admin_port
            )
        })?;
    let (log, state, keypair) = open_data_dir(&config)?;

    // Everything at info level and above goes into the log, within a write budget: what a
    // peer can provoke (connections, rejections) cannot fill the disk.
    let (log_layer, log_guard) = LogLayer::with_budget(
        Arc::new(log.clone()),
        causality_log::DEFAULT_QUEUE,
        Budget {
            bytes_per_second: config.event_log_bytes_per_second,
            burst_bytes: config.event_log_burst_bytes,
        },
    );
    let filter = EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("log_filter: `{}`", config.log_filter))?;
    let stderr = match config.log_format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(stderr.with_filter(filter))
        .with(log_layer.with_filter(EnvFilter::new("info")))
        .try_init()
        .context("cannot install the log subscriber")?;

    // Start above every sequence number the last run could have used, and reserve the next
    // block before signing anything; restore the bans in force.
    let floor = state
        .seq_ceiling()
        .with_context(|| format!("data directory {}", config.data_dir.display()))?;
    let bans = state.bans()?;
    let libp2p_metrics = Arc::new(Mutex::new(causality_net::MetricsRegistry::default()));
    let mut net_config = Libp2pConfig::new(keypair);
    net_config.node.seq_floor = floor;
    net_config.node.bans = bans.clone();
    net_config.metrics = Some(Arc::clone(&libp2p_metrics));
    net_config.listen = config.listen_addrs()?;
    net_config.node.limits.max_peers = config.max_peers;
    net_config.node.limits.messages_per_second = config.messages_per_second;
    net_config.node.hello = net_config
        .node
        .hello
        .clone()
        .with_agent(concat!("causality-node/", env!("CARGO_PKG_VERSION")));
    let network = Libp2pNetwork::start(net_config).await?;
    let mut persistence = Persistence {
        ceiling: state.reserve_seq(network.next_seq())?,
        state,
        network: network.clone(),
        bans,
    };
    let discovery = Discovery::start(
        network.clone(),
        causality_discovery::Config {
            bootstrap: config.bootstrap_addrs()?,
            roles: config.roles.clone(),
            refresh_interval: Duration::from_millis(config.refresh_ms),
            ..causality_discovery::Config::default()
        },
    )
    .await?;

    // Diagnostics: echo requests, and count messages on the configured topics.
    let mut echo = network.serve(ECHO).await?;
    tokio::spawn(async move {
        while let Some(request) = echo.next().await {
            let body = request.body.clone();
            request.respond(body);
        }
    });
    let received = Arc::new(Mutex::new(BTreeMap::new()));
    for topic in &config.subscribe {
        let topic: Topic = topic.parse()?;
        let mut subscription = network.subscribe(&topic).await?;
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                // Debug, not info: one line per message would put every peer's traffic
                // into the log.
                tracing::debug!(target: "causality_node", topic = %message.topic, from = %message.sender, "message received");
                *received
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(message.topic.to_string())
                    .or_insert(0) += 1;
            }
        });
    }

    let node = Arc::new(Node {
        network: network.clone(),
        discovery,
        log: log.clone(),
        started: Instant::now(),
        libp2p_metrics,
        received,
    });
    let admin_addr = admin.local_addr()?;
    let token = Token::create(&config.data_dir)?;
    tokio::spawn(crate::admin::serve(
        admin,
        Arc::clone(&node),
        token,
        crate::admin::Limits::default(),
    ));
    std::fs::write(
        config.data_dir.join("admin.addr"),
        format!("http://{admin_addr}\n"),
    )?;
    tracing::info!(target: "causality_node", peer = %network.local_peer_id(), admin = %admin_addr, "node started");
    // Machine-readable lines for supervisors (the devnet reads them). A supervisor that
    // stops reading must not bring the node down, so write errors are ignored.
    let mut lines = format!(
        "PEER {}\nADMIN http://{admin_addr}\n",
        network.local_peer_id()
    );
    for address in network.listen_addresses() {
        lines.push_str(&format!("LISTEN {address}\n"));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(lines.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);

    let mut save = tokio::time::interval(Duration::from_secs(1));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = save.tick() => {
                if let Err(e) = persistence.save() {
                    tracing::error!(target: "causality_node", error = %format!("{e:#}"), "cannot save the node state");
                }
            }
        }
    }
    tracing::info!(target: "causality_node", "shutting down");
    // A failure here must not keep the log from being flushed: the reservation on disk
    // already covers every number used, and bans are only lost, never wrong.
    if let Err(e) = persistence.save() {
        tracing::error!(target: "causality_node", error = %format!("{e:#}"), "cannot save the node state at shutdown");
    }
    drop(persistence);
    drop(node);
    drop(network);
    log_guard.flush();
    log.sync()?;
    let _ = std::fs::remove_file(config.data_dir.join("admin.addr"));
    let _ = std::fs::remove_file(crate::admin::cookie_path(&config.data_dir));
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a signal handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
