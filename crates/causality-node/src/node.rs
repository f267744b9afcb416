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
use crate::executors::{Modules, NodeExecutor, WasmExecutor};
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
    /// The register communication layer, each protocol when enabled.
    pub(crate) protocols: Protocols,
    /// WebAssembly modules held here.
    pub(crate) modules: Arc<Modules>,
    /// The engine modules are checked and run with.
    pub(crate) engine: wasmi::Engine,
    /// The execution sequences followed here.
    pub(crate) sequences: Arc<crate::work::Sequences>,
}

/// The protocols a node runs beside discovery, each `None` when disabled.
#[derive(Clone, Debug, Default)]
pub(crate) struct Protocols {
    pub(crate) proofs: Option<causality_proofshare::ProofShare>,
    pub(crate) registers: Option<causality_regsync::RegSync>,
    pub(crate) exec: Option<causality_exec::Coordinator>,
}

/// Each protocol's counters at one moment (`None`: disabled, or its service stopped).
#[derive(Debug, Default)]
pub(crate) struct ProtocolStats {
    pub(crate) proofs: Option<causality_proofshare::Stats>,
    pub(crate) registers: Option<causality_regsync::Stats>,
    pub(crate) exec: Option<causality_exec::Stats>,
}

impl Protocols {
    pub(crate) async fn stats(&self) -> ProtocolStats {
        ProtocolStats {
            proofs: match &self.proofs {
                Some(p) => p.stats().await.ok(),
                None => None,
            },
            registers: match &self.registers {
                Some(r) => r.stats().await.ok(),
                None => None,
            },
            exec: match &self.exec {
                Some(e) => e.stats().await.ok(),
                None => None,
            },
        }
    }
}

/// Every column family the node's database holds: the node's own, and each protocol's
/// (opened whether or not the protocol is enabled, so that turning one off loses nothing).
fn column_families() -> Vec<rocksdb::ColumnFamilyDescriptor> {
    let mut families = vec![NodeState::descriptor()];
    families.extend(causality_proofshare::RocksStore::column_families());
    families.extend(causality_regsync::RocksStore::column_families());
    families.extend(causality_exec::RocksStore::column_families());
    families
}

/// The verifier and executor views, kept in step with discovery's membership (this node's
/// own record included).
fn views(
    discovery: &Discovery,
) -> (
    tokio::sync::watch::Receiver<causality_proofshare::VerifierView>,
    tokio::sync::watch::Receiver<causality_exec::ExecutorView>,
) {
    fn compute(
        m: &causality_discovery::Membership,
    ) -> (
        causality_proofshare::VerifierView,
        causality_exec::ExecutorView,
    ) {
        let peers: Vec<(PeerId, &[String])> = std::iter::once(&m.own)
            .chain(m.records())
            .map(|r| (r.peer, r.roles.as_slice()))
            .collect();
        (
            causality_proofshare::verifier_view(peers.iter().copied()),
            causality_exec::executor_view(peers),
        )
    }
    let mut membership = discovery.membership();
    let (verifiers, executors) = compute(&membership.borrow_and_update());
    let (verifiers_tx, verifiers_rx) = tokio::sync::watch::channel(verifiers);
    let (executors_tx, executors_rx) = tokio::sync::watch::channel(executors);
    tokio::spawn(async move {
        while membership.changed().await.is_ok() {
            let (verifiers, executors) = compute(&membership.borrow_and_update());
            verifiers_tx.send_if_modified(|v| replace_if_changed(v, verifiers));
            executors_tx.send_if_modified(|e| replace_if_changed(e, executors));
            if verifiers_tx.is_closed() && executors_tx.is_closed() {
                return;
            }
        }
    });
    (verifiers_rx, executors_rx)
}

fn replace_if_changed<T: PartialEq>(current: &mut T, new: T) -> bool {
    if *current == new {
        return false;
    }
    *current = new;
    true
}

/// Starts the enabled protocols on `network`, each with its column families in `db`.
async fn start_protocols(
    config: &Config,
    network: &Network,
    discovery: &Discovery,
    db: &Arc<rocksdb::DB>,
    modules: &Arc<Modules>,
    engine: &wasmi::Engine,
) -> Result<Protocols> {
    let (verifiers, executors) = views(discovery);
    let mut protocols = Protocols::default();
    if config.proofs.enabled {
        let store = causality_proofshare::RocksStore::open_in(Arc::clone(db))
            .context("cannot open the proof store")?;
        protocols.proofs = Some(
            causality_proofshare::ProofShare::start_with(
                network.clone(),
                causality_proofshare::Config::default(),
                causality_proofshare::Verifiers::standard(),
                Box::new(store),
                causality_proofshare::Options {
                    view: Some(verifiers),
                    discovery: Some(discovery.clone()),
                },
            )
            .await
            .context("cannot start proof sharing")?,
        );
    }
    if config.registers.enabled {
        let store = causality_regsync::RocksStore::open_in(Arc::clone(db))
            .context("cannot open the register store")?;
        let registers = causality_regsync::RegSync::start_with(
            network.clone(),
            causality_regsync::Config::default(),
            Box::new(store),
            causality_regsync::Options {
                proofs: protocols.proofs.clone(),
            },
        )
        .await
        .context("cannot start register sync")?;
        for domain in &config.registers.follow {
            registers
                .follow_domain(domain)
                .await
                .with_context(|| format!("cannot follow domain `{domain}`"))?;
        }
        protocols.registers = Some(registers);
    }
    if config.exec.enabled {
        let store = causality_exec::RocksStore::open_in(Arc::clone(db))
            .context("cannot open the execution store")?;
        let executor = NodeExecutor {
            wasm: WasmExecutor::new(
                engine.clone(),
                Arc::clone(modules),
                network.clone(),
                config.exec.max_fuel,
            ),
        };
        protocols.exec = Some(
            causality_exec::Coordinator::start_with(
                network.clone(),
                causality_exec::Config {
                    executor: config.executor_info(),
                    ..causality_exec::Config::default()
                },
                executors,
                Arc::new(executor),
                causality_exec::Options {
                    store: Some(Box::new(store)),
                    proofs: protocols.proofs.clone(),
                },
            )
            .await
            .context("cannot start execution coordination")?,
        );
    }
    Ok(protocols)
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
        column_families(),
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
            roles: config.advertised_roles(),
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

    let engine = crate::executors::engine();
    let modules = Arc::new(Modules::open(&config.data_dir.join("modules"))?);
    crate::executors::serve_modules(network.clone(), Arc::clone(&modules)).await?;
    let protocols =
        start_protocols(&config, &network, &discovery, log.db(), &modules, &engine).await?;
    let sequences = Arc::new(crate::work::Sequences::default());
    if let Some(exec) = &protocols.exec {
        sequences.follow(exec);
    }

    let node = Arc::new(Node {
        network: network.clone(),
        discovery,
        log: log.clone(),
        started: Instant::now(),
        libp2p_metrics,
        received,
        protocols,
        modules,
        engine,
        sequences,
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
