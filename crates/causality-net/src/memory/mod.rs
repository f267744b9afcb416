//! [`MemoryNetwork`]: an in-process network for tests and simulation.
//!
//! Every node runs the same [`Core`] as over libp2p; only the transport differs. Frames
//! travel through one scheduler with per-link latency, jitter, bandwidth, gossip loss and
//! partitions, all changeable while the simulation runs. Randomness comes from one seeded
//! RNG and time from `tokio::time`, so under `tokio::time::pause()` on a current-thread
//! runtime a run is reproducible.
//!
//! Gossip follows gossipsub's shape (`mesh.rs`): a mesh of degree 6 (kept between 5 and
//! 12) per physical topic, eager forwarding after validation to the mesh only, lazy gossip
//! of recent ids (IHAVE / IWANT) to a few peers outside it, IDONTWANT for large messages;
//! duplicates are dropped by message id before validation. Request, response and control
//! frames model a reliable stream: they are delayed but never lost, except across a
//! partition.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use multiaddr::{Multiaddr, Protocol};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::clock::TokioClock;
use crate::core::NodeConfig;
use crate::event::lock;
use crate::network::Network;
use crate::peer::{Keypair, PeerId};
use crate::topic::PhysicalTopic;

mod mesh;
mod transport;
use transport::MemoryTransport;

/// Wall-clock reading simulated nodes start at (2026-01-01T00:00:00Z).
pub const SIMULATION_EPOCH_MS: u64 = 1_767_225_600_000;

/// Frames queued for one node before further frames to it are dropped.
const INBOX: usize = 16 * 1024;
/// Frames in flight across the whole simulated network before further frames are dropped
/// (the wire has finite capacity too; this bounds the scheduler's memory).
const MAX_IN_FLIGHT: usize = 1 << 20;

/// Properties of a simulated link, per direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter`.
    pub jitter: Duration,
    /// Probability that a gossip frame is lost.
    pub loss: f64,
    /// Bytes per second; `None` is unlimited.
    pub bandwidth: Option<u64>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            bandwidth: None,
        }
    }
}

/// Totals of what the simulated network carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Frames handed to the network.
    pub frames: u64,
    /// Of which gossip frames.
    pub gossip_frames: u64,
    /// Bytes of all frames' payloads.
    pub bytes: u64,
    /// Frames lost to loss, partitions, full inboxes or a full network.
    pub dropped: u64,
}

#[derive(Debug)]
pub(super) enum Frame {
    Connected {
        peer: PeerId,
        dialer: bool,
    },
    Disconnected {
        peer: PeerId,
    },
    Subscriptions {
        peer: PeerId,
        topics: Vec<PhysicalTopic>,
        subscribed: bool,
    },
    Gossip {
        from: PeerId,
        source: PeerId,
        physical: PhysicalTopic,
        bytes: Arc<[u8]>,
    },
    Request {
        from: PeerId,
        id: u64,
        protocol: String,
        bytes: Vec<u8>,
    },
    /// Mesh control, as gossipsub's: join or leave the sender's mesh for a topic.
    Graft {
        from: PeerId,
        physical: PhysicalTopic,
    },
    Prune {
        from: PeerId,
        physical: PhysicalTopic,
    },
    /// Lazy gossip: message ids the sender holds.
    IHave {
        from: PeerId,
        ids: Vec<causality_hash::ContentId>,
    },
    /// Ask for those messages.
    IWant {
        from: PeerId,
        ids: Vec<causality_hash::ContentId>,
    },
    /// Do not send me these (large messages I already have).
    IDontWant {
        from: PeerId,
        ids: Vec<causality_hash::ContentId>,
    },
    Response {
        id: u64,
        bytes: Vec<u8>,
    },
}

impl Frame {
    fn len(&self) -> usize {
        match self {
            Self::Gossip { bytes, .. } => bytes.len(),
            Self::Request { bytes, .. } | Self::Response { bytes, .. } => bytes.len(),
            Self::Subscriptions { topics, .. } => topics.iter().map(|t| t.as_str().len()).sum(),
            Self::Graft { physical, .. } | Self::Prune { physical, .. } => physical.as_str().len(),
            Self::IHave { ids, .. } | Self::IWant { ids, .. } | Self::IDontWant { ids, .. } => {
                ids.len() * 32
            }
            Self::Connected { .. } | Self::Disconnected { .. } => 0,
        }
    }
}

struct Scheduled {
    at: Instant,
    seq: u64,
    to: PeerId,
    frame: Frame,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub(super) struct HubState {
    rng: ChaCha20Rng,
    pub(super) nodes: HashMap<PeerId, mpsc::Sender<Frame>>,
    pub(super) addresses: HashMap<u64, PeerId>,
    next_port: u64,
    /// Undirected connections, stored as (smaller, larger).
    pub(super) connections: HashSet<(PeerId, PeerId)>,
    default_link: LinkConfig,
    links: HashMap<(PeerId, PeerId), LinkConfig>,
    busy_until: HashMap<(PeerId, PeerId), Instant>,
    partition: HashMap<PeerId, usize>,
    /// Simulated IP addresses, for tests of per-address limits.
    ips: HashMap<PeerId, std::net::IpAddr>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    stats: SimStats,
}

pub(super) struct Hub {
    pub(super) state: Mutex<HubState>,
    wake: Arc<Notify>,
    /// Frames scheduled or queued but not yet fully processed by their node.
    in_flight: AtomicU64,
    idle: Notify,
}

/// An in-process network of simulated nodes. Cheap to clone. Must be created inside a
/// tokio runtime (it spawns the frame scheduler).
#[derive(Clone)]
pub struct MemoryNetwork {
    hub: Arc<Hub>,
}

impl fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.hub.state);
        f.debug_struct("MemoryNetwork")
            .field("nodes", &state.nodes.len())
            .field("connections", &state.connections.len())
            .finish_non_exhaustive()
    }
}

pub(super) fn edge(a: PeerId, b: PeerId) -> (PeerId, PeerId) {
    if a < b { (a, b) } else { (b, a) }
}

impl MemoryNetwork {
    /// A new, empty network whose randomness derives from `seed`.
    pub fn new(seed: u64) -> Self {
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState {
                rng: ChaCha20Rng::seed_from_u64(seed),
                nodes: HashMap::new(),
                addresses: HashMap::new(),
                next_port: 1,
                connections: HashSet::new(),
                default_link: LinkConfig::default(),
                links: HashMap::new(),
                busy_until: HashMap::new(),
                partition: HashMap::new(),
                ips: HashMap::new(),
                queue: BinaryHeap::new(),
                seq: 0,
                stats: SimStats::default(),
            }),
            wake: Arc::new(Notify::new()),
            in_flight: AtomicU64::new(0),
            idle: Notify::new(),
        });
        tokio::spawn(scheduler(Arc::downgrade(&hub), Arc::clone(&hub.wake)));
        Self { hub }
    }

    /// Adds a node with a deterministic identity (derived from its position), default
    /// limits, an open policy and a clock starting at [`SIMULATION_EPOCH_MS`].
    pub fn add_node(&self) -> Network {
        let index = lock(&self.hub.state).next_port;
        let mut config = NodeConfig::new(Keypair::from_index(index));
        config.clock = Arc::new(TokioClock::new(SIMULATION_EPOCH_MS));
        self.add_node_with(config)
    }

    /// Adds a node with the given configuration. It listens on `/memory/<n>`.
    ///
    /// # Panics
    ///
    /// When the configuration's limits do not validate; see
    /// [`try_add_node_with`](Self::try_add_node_with).
    pub fn add_node_with(&self, config: NodeConfig) -> Network {
        match self.try_add_node_with(config) {
            Ok(network) => network,
            Err(e) => panic!("simulated node not added: {e}"),
        }
    }

    /// Adds a node with the given configuration, or says which limit is out of range.
    pub fn try_add_node_with(&self, config: NodeConfig) -> Result<Network, crate::NetError> {
        config.limits.validate()?;
        let local = config.keypair.peer_id();
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX);
        let port = {
            let mut state = lock(&self.hub.state);
            let port = state.next_port;
            state.next_port += 1;
            state.nodes.insert(local, inbox_tx);
            state.addresses.insert(port, local);
            port
        };
        let address = Multiaddr::empty().with(Protocol::Memory(port));
        let transport = MemoryTransport::new(Arc::clone(&self.hub), local, inbox_rx);
        Ok(crate::driver::spawn(&config, transport, vec![address]))
    }

    /// Sets the link properties used where no per-link override exists.
    pub fn set_default_link(&self, link: LinkConfig) {
        lock(&self.hub.state).default_link = link;
    }

    /// Overrides the link between `a` and `b`, both directions.
    pub fn set_link(&self, a: PeerId, b: PeerId, link: LinkConfig) {
        let mut state = lock(&self.hub.state);
        state.links.insert((a, b), link);
        state.links.insert((b, a), link);
    }

    /// Splits the network: frames between peers of different groups are dropped. Peers in
    /// no group form a group of their own.
    pub fn partition(&self, groups: &[Vec<PeerId>]) {
        let mut state = lock(&self.hub.state);
        state.partition.clear();
        for (i, group) in groups.iter().enumerate() {
            for peer in group {
                state.partition.insert(*peer, i + 1);
            }
        }
    }

    /// Gives `peer` a simulated IP address: the peers it connects to see its connections
    /// come from there (per-address connection limits apply). Without one, a node has no
    /// address and those limits do not apply to it.
    pub fn set_ip(&self, peer: PeerId, ip: std::net::IpAddr) {
        lock(&self.hub.state).ips.insert(peer, ip);
    }

    /// Removes any partition.
    pub fn heal(&self) {
        lock(&self.hub.state).partition.clear();
    }

    /// Totals so far.
    pub fn stats(&self) -> SimStats {
        lock(&self.hub.state).stats
    }

    /// Waits until no frame is in flight and every node has processed what it received.
    pub async fn settle(&self) {
        loop {
            loop {
                let idle = self.hub.idle.notified();
                if self.hub.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
            // Let tasks woken by the last frames (handlers, handshakes) run and send.
            tokio::time::sleep(Duration::from_millis(1)).await;
            if self.hub.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
        }
    }
}

impl Hub {
    /// Schedules `frame` from `from` to `to` over the link between them.
    pub(super) fn send(&self, from: PeerId, to: PeerId, frame: Frame) {
        let mut state = lock(&self.state);
        let gossip = matches!(frame, Frame::Gossip { .. });
        let len = frame.len() as u64;
        state.stats.frames += 1;
        state.stats.gossip_frames += u64::from(gossip);
        state.stats.bytes += len;
        let group = |p: &PeerId| state.partition.get(p).copied().unwrap_or(0);
        let partitioned = !state.partition.is_empty() && group(&from) != group(&to);
        let link = state
            .links
            .get(&(from, to))
            .copied()
            .unwrap_or(state.default_link);
        let full = state.queue.len() >= MAX_IN_FLIGHT;
        if full
            || partitioned
            || (gossip && link.loss > 0.0 && state.rng.gen_bool(link.loss.min(1.0)))
        {
            state.stats.dropped += 1;
            return;
        }
        let now = Instant::now();
        let mut depart = now;
        if let Some(bandwidth) = link.bandwidth.filter(|b| *b > 0) {
            let busy = state.busy_until.entry((from, to)).or_insert(now);
            let start = (*busy).max(now);
            let transmit = Duration::from_nanos(len.saturating_mul(1_000_000_000) / bandwidth);
            *busy = start + transmit;
            depart = *busy;
        }
        let jitter = if link.jitter.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(link.jitter.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(state.rng.gen_range(0..=nanos))
        };
        let at = depart + link.latency + jitter;
        state.seq += 1;
        let seq = state.seq;
        state.queue.push(Reverse(Scheduled { at, seq, to, frame }));
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        drop(state);
        self.wake.notify_one();
    }

    pub(super) fn done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub(super) fn connect(&self, a: PeerId, b: PeerId) -> bool {
        lock(&self.state).connections.insert(edge(a, b))
    }

    pub(super) fn ip_of(&self, peer: &PeerId) -> Option<std::net::IpAddr> {
        lock(&self.state).ips.get(peer).copied()
    }

    pub(super) fn disconnect(&self, a: PeerId, b: PeerId) -> bool {
        lock(&self.state).connections.remove(&edge(a, b))
    }
}

async fn scheduler(hub: Weak<Hub>, wake: Arc<Notify>) {
    loop {
        let Some(hub) = hub.upgrade() else { return };
        let woken = wake.notified();
        let next = {
            let mut state = lock(&hub.state);
            let now = Instant::now();
            let mut due = Vec::new();
            while state.queue.peek().is_some_and(|s| s.0.at <= now) {
                let Reverse(s) = state.queue.pop().expect("peeked");
                due.push(s);
            }
            for s in due {
                let delivered = state
                    .nodes
                    .get(&s.to)
                    .is_some_and(|inbox| inbox.try_send(s.frame).is_ok());
                if !delivered {
                    state.stats.dropped += 1;
                    hub.done();
                }
            }
            state.queue.peek().map(|s| s.0.at)
        };
        drop(hub);
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = woken => {}
                }
            }
            None => woken.await,
        }
    }
}
