//! A tokio-free simulation runner: many instances of one [`Protocol`] over a seeded,
//! virtual-time network model with latency, jitter, gossip loss, partitions and crashes.
//! A run is a function of its seed: the same seed gives the same [`Sim::trace_hash`].
//!
//! The model: nodes connect by dialing; requests, responses and connection changes are
//! reliable and delayed by the link latency (plus jitter), unless a partition separates the
//! two nodes, in which case requests time out and dials fail. Gossip floods over
//! connections among subscribers of the topic, each node forwarding a message once, and
//! each hop may be lost. Crashed nodes take their state with them; a restart gives the
//! node a new state machine (built from what it persisted) under the same identity.
//!
//! ```
//! use causality_net::service::sim::{Sim, SimConfig};
//! # use causality_net::service::{Input, Output, Protocol};
//! # #[derive(Default)] struct Nop;
//! # impl Protocol for Nop {
//! #     type Command = (); type Reply = (); type Event = (); type Timer = (); type View = ();
//! #     fn protocols(&self) -> Vec<causality_net::RequestProtocol> { vec![] }
//! #     fn handle(&mut self, _: u64, _: Input<Self>) {}
//! #     fn poll_output(&mut self) -> Option<Output<Self>> { None }
//! # }
//! let mut sim: Sim<Nop> = Sim::new(7, SimConfig::default());
//! let a = sim.add_node(|_keypair| Nop);
//! sim.run_for(1_000);
//! assert_eq!(sim.now_ms(), causality_net::SIMULATION_EPOCH_MS + 1_000);
//! # let _ = a;
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;

use causality_hash::ContentId;
use multiaddr::{Multiaddr, Protocol as AddrProtocol};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

use super::{CallId, InboundId, Input, OutboundId, Output, Protocol, Severity};
use crate::envelope::{Acceptance, Message};
use crate::error::{NetError, RefusalReason};
use crate::peer::{Keypair, PeerId};
use crate::topic::Topic;

/// Properties of the simulated network.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Extra delay drawn uniformly from `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability that one gossip hop is lost.
    pub gossip_loss: f64,
    /// When an unanswered request fails, ms after it was sent.
    pub request_timeout_ms: u64,
    /// Keep the nodes' events for [`Sim::take_events`]; large runs that never read them
    /// turn this off to save memory.
    pub keep_events: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency_ms: 5,
            jitter_ms: 0,
            gossip_loss: 0.0,
            request_timeout_ms: 10_000,
            keep_events: true,
        }
    }
}

/// Totals of what the simulated network carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Inputs handed to nodes.
    pub inputs: u64,
    /// Request and response bodies, and gossip payloads, in bytes.
    pub bytes: u64,
    /// Requests sent.
    pub requests: u64,
    /// Gossip copies delivered.
    pub gossip_deliveries: u64,
    /// Frames lost to partitions, crashes or loss.
    pub dropped: u64,
    /// Messages a validating node rejected (and so did not forward).
    pub rejected: u64,
}

/// A penalty a node asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Penalty {
    /// Who asked.
    pub by: usize,
    /// Against whom.
    pub peer: PeerId,
    /// How bad.
    pub severity: Severity,
    /// Why.
    pub reason: String,
}

enum Delivery<P: Protocol> {
    Input(Input<P>),
    /// A connection attempt from `from` arrives at its target.
    Accept {
        from: usize,
    },
    /// The dialer learns its dial succeeded.
    Dialed {
        to: usize,
    },
    /// A request arrives.
    Request {
        from: usize,
        id: OutboundId,
        protocol: String,
        body: Vec<u8>,
    },
    /// A response arrives at the requester.
    Response {
        from: usize,
        id: OutboundId,
        result: Result<Vec<u8>, (RefusalReason, String)>,
    },
    /// A request's deadline passed.
    Deadline {
        id: OutboundId,
    },
    /// A gossip copy arrives.
    Gossip {
        from: usize,
        message: Message,
    },
    /// A timer fires (if still set).
    Timer {
        key: (u64, u64),
    },
}

struct Scheduled<P: Protocol> {
    at: u64,
    seq: u64,
    node: usize,
    /// The incarnation it was meant for; a crashed-and-restarted node ignores the old.
    life: u64,
    delivery: Delivery<P>,
}

impl<P: Protocol> PartialEq for Scheduled<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<P: Protocol> Eq for Scheduled<P> {}
impl<P: Protocol> PartialOrd for Scheduled<P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<P: Protocol> Ord for Scheduled<P> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Node<P: Protocol> {
    protocol: Option<P>,
    peer: PeerId,
    life: u64,
    subscriptions: BTreeSet<Topic>,
    /// Topics this node validates, and their messages awaiting its verdict (with the node
    /// they came from), oldest first.
    validating: BTreeSet<Topic>,
    awaiting: BTreeMap<ContentId, (u64, usize, Message)>,
    timers: BTreeMap<(u64, u64), P::Timer>,
    /// Requests we sent: id → the peer's index.
    outbound: HashMap<OutboundId, usize>,
    /// Requests we received: our id → (requester, its id).
    inbound: HashMap<InboundId, (usize, OutboundId)>,
    next_inbound: u64,
    seen: HashSet<ContentId>,
    seq: u64,
    /// Wall-clock time spent in the state machine's `handle`.
    busy: std::time::Duration,
    /// How far this node's clock is off the simulation's, ms.
    offset: i64,
}

/// The simulation. See the [module docs](self).
pub struct Sim<P: Protocol> {
    config: SimConfig,
    now: u64,
    rng: ChaCha20Rng,
    nodes: Vec<Node<P>>,
    by_peer: HashMap<PeerId, usize>,
    connections: Links,
    partition: Option<HashMap<usize, usize>>,
    queue: BinaryHeap<Reverse<Scheduled<P>>>,
    seq: u64,
    trace: blake3::Hasher,
    stats: SimStats,
    replies: Vec<(usize, CallId, P::Reply)>,
    events: Vec<(usize, P::Event)>,
    penalties: Vec<Penalty>,
    next_call: u64,
}

impl<P: Protocol> std::fmt::Debug for Sim<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// Who is connected to whom, as sorted adjacency sets (the neighbours of a node in index
/// order, without scanning every link).
#[derive(Debug, Default)]
struct Links(Vec<BTreeSet<usize>>);

impl Links {
    fn insert(&mut self, a: usize, b: usize) -> bool {
        let len = a.max(b) + 1;
        if self.0.len() < len {
            self.0.resize_with(len, BTreeSet::new);
        }
        self.0[b].insert(a);
        self.0[a].insert(b)
    }

    fn remove(&mut self, a: usize, b: usize) -> bool {
        if let Some(s) = self.0.get_mut(b) {
            s.remove(&a);
        }
        self.0.get_mut(a).is_some_and(|s| s.remove(&b))
    }

    fn contains(&self, a: usize, b: usize) -> bool {
        self.0.get(a).is_some_and(|s| s.contains(&b))
    }

    fn of(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        self.0.get(n).into_iter().flatten().copied()
    }
}

impl<P: Protocol> Sim<P> {
    /// An empty simulation whose randomness derives from `seed`; the clock starts at
    /// [`SIMULATION_EPOCH_MS`](crate::SIMULATION_EPOCH_MS).
    pub fn new(seed: u64, config: SimConfig) -> Self {
        Self {
            config,
            now: crate::SIMULATION_EPOCH_MS,
            rng: ChaCha20Rng::seed_from_u64(seed),
            nodes: Vec::new(),
            by_peer: HashMap::new(),
            connections: Links::default(),
            partition: None,
            queue: BinaryHeap::new(),
            seq: 0,
            trace: blake3::Hasher::new(),
            stats: SimStats::default(),
            replies: Vec::new(),
            events: Vec::new(),
            penalties: Vec::new(),
            next_call: 0,
        }
    }

    /// The virtual clock, ms.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// The identity of node `n`: `Keypair::from_index(n + 1)`.
    pub fn keypair(n: usize) -> Keypair {
        Keypair::from_index(n as u64 + 1)
    }

    /// The address node `n` is dialed at: `/memory/<n + 1>`.
    pub fn address(n: usize) -> Multiaddr {
        Multiaddr::empty().with(AddrProtocol::Memory(n as u64 + 1))
    }

    /// Adds a node built by `make` from its key pair; it starts at the next step. Returns its
    /// index.
    pub fn add_node(&mut self, make: impl FnOnce(&Keypair) -> P) -> usize {
        let n = self.nodes.len();
        let keypair = Self::keypair(n);
        let peer = keypair.peer_id();
        self.by_peer.insert(peer, n);
        self.nodes.push(Node {
            protocol: Some(make(&keypair)),
            peer,
            life: 0,
            subscriptions: BTreeSet::new(),
            validating: BTreeSet::new(),
            awaiting: BTreeMap::new(),
            timers: BTreeMap::new(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            next_inbound: 0,
            seen: HashSet::new(),
            seq: 0,
            busy: std::time::Duration::ZERO,
            offset: 0,
        });
        // Started by the first step, so nodes added together all exist when they start.
        self.schedule(self.now, n, Delivery::Input(Input::Start));
        n
    }

    /// Node `n`'s state machine (`None` while crashed).
    pub fn node(&self, n: usize) -> Option<&P> {
        self.nodes[n].protocol.as_ref()
    }

    /// The wall-clock time node `n`'s state machine has spent handling inputs: what it
    /// would cost that node's core alone (measured, so not reproducible; the simulation
    /// itself does not depend on it).
    pub fn busy(&self, n: usize) -> std::time::Duration {
        self.nodes[n].busy
    }

    /// Sets node `n`'s clock `offset_ms` off the simulation's (ahead when positive): the
    /// times it is handed and the timestamps it stamps are on its clock, and its timers
    /// fire when its clock reaches them. It stays across a crash (the machine's clock).
    pub fn set_clock_offset(&mut self, n: usize, offset_ms: i64) {
        self.nodes[n].offset = offset_ms;
    }

    /// Node `n`'s clock, ms.
    pub fn clock_ms(&self, n: usize) -> u64 {
        self.now.saturating_add_signed(self.nodes[n].offset)
    }

    /// Node `n`'s state machine, mutably.
    pub fn node_mut(&mut self, n: usize) -> Option<&mut P> {
        self.nodes[n].protocol.as_mut()
    }

    /// Node `n`'s peer id.
    pub fn peer_id(&self, n: usize) -> PeerId {
        self.nodes[n].peer
    }

    /// Number of nodes, crashed ones included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `n` is running.
    pub fn is_alive(&self, n: usize) -> bool {
        self.nodes[n].protocol.is_some()
    }

    /// Hands node `n` a command.
    pub fn command(&mut self, n: usize, command: P::Command) {
        self.input(
            n,
            Input::Command {
                command,
                call: None,
            },
        );
    }

    /// Hands node `n` a command whose reply appears in [`Sim::take_replies`] under the
    /// returned id.
    pub fn call(&mut self, n: usize, command: P::Command) -> CallId {
        self.next_call += 1;
        let call = CallId(self.next_call);
        self.input(
            n,
            Input::Command {
                command,
                call: Some(call),
            },
        );
        call
    }

    /// Replies to calls so far (node, call, reply), oldest first.
    pub fn take_replies(&mut self) -> Vec<(usize, CallId, P::Reply)> {
        std::mem::take(&mut self.replies)
    }

    /// Events so far (node, event), oldest first.
    pub fn take_events(&mut self) -> Vec<(usize, P::Event)> {
        std::mem::take(&mut self.events)
    }

    /// Penalties asked for so far.
    pub fn penalties(&self) -> &[Penalty] {
        &self.penalties
    }

    /// Totals so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// A digest of every input every node received, with its time: two runs with the same
    /// seed and the same calls have the same hash.
    pub fn trace_hash(&self) -> [u8; 32] {
        *self.trace.clone().finalize().as_bytes()
    }

    /// Splits the network into `groups` (node indices); nodes in no group form one more.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let mut map = HashMap::new();
        for (g, group) in groups.iter().enumerate() {
            for n in group {
                map.insert(*n, g + 1);
            }
        }
        self.partition = Some(map);
    }

    /// Removes any partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    fn separated(&self, a: usize, b: usize) -> bool {
        self.partition
            .as_ref()
            .is_some_and(|p| p.get(&a).copied().unwrap_or(0) != p.get(&b).copied().unwrap_or(0))
    }

    /// Crashes node `n`: its state is gone, its connections close.
    pub fn crash(&mut self, n: usize) {
        self.nodes[n].protocol = None;
        self.nodes[n].life += 1;
        let node = &mut self.nodes[n];
        node.subscriptions.clear();
        node.validating.clear();
        node.awaiting.clear();
        node.timers.clear();
        node.outbound.clear();
        node.inbound.clear();
        node.seen.clear();
        let peers: Vec<usize> = self.connections.of(n).collect();
        for other in peers {
            self.connections.remove(n, other);
            let at = self.now + self.delay();
            let peer = self.nodes[n].peer;
            self.schedule(at, other, Delivery::Input(Input::PeerDisconnected(peer)));
        }
    }

    /// Restarts crashed node `n` with a new state machine (built from what it persisted).
    pub fn restart(&mut self, n: usize, make: impl FnOnce(&Keypair) -> P) {
        assert!(self.nodes[n].protocol.is_none(), "node {n} is running");
        let keypair = Self::keypair(n);
        self.nodes[n].protocol = Some(make(&keypair));
        self.schedule(self.now, n, Delivery::Input(Input::Start));
    }

    /// Hands node `n` a new membership view (as [`Input::View`]) at the next step.
    pub fn set_view(&mut self, n: usize, view: P::View) {
        self.schedule(self.now, n, Delivery::Input(Input::View(view)));
    }

    /// Connects `a` to `b` as if `a` dialed it (the outcome arrives like a dial's: both
    /// learn of it after a link delay, unless one is down or they are separated).
    pub fn connect(&mut self, a: usize, b: usize) {
        let address = Self::address(b);
        let peer = Some(self.nodes[b].peer);
        self.execute(a, Output::Dial { peer, address });
    }

    /// Closes the connection between `a` and `b` from `a`'s side (both learn of it, `b`
    /// after a link delay) — what nodes on the two sides of a partition see when their
    /// connections time out.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        let peer = self.nodes[b].peer;
        self.execute(a, Output::Disconnect(peer));
    }

    /// Runs until nothing is scheduled before `until_ms`, then sets the clock to it.
    pub fn run_until(&mut self, until_ms: u64) {
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= until_ms) {
            self.step();
        }
        self.now = self.now.max(until_ms);
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    /// Runs until `done` holds (checked after every step) or `limit_ms` passes; returns
    /// whether it held.
    pub fn run_while(&mut self, limit_ms: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        let until = self.now + limit_ms;
        loop {
            if done(self) {
                return true;
            }
            match self.queue.peek() {
                Some(Reverse(s)) if s.at <= until => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(until);
                    return done(self);
                }
            }
        }
    }

    /// Processes the next scheduled delivery; `false` when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(s)) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(s.at);
        if self.nodes[s.node].life != s.life || self.nodes[s.node].protocol.is_none() {
            self.stats.dropped += 1;
            return true;
        }
        self.deliver(s.node, s.delivery);
        true
    }

    fn delay(&mut self) -> u64 {
        let jitter = if self.config.jitter_ms > 0 {
            self.rng.gen_range(0..=self.config.jitter_ms)
        } else {
            0
        };
        self.config.latency_ms + jitter
    }

    fn schedule(&mut self, at: u64, node: usize, delivery: Delivery<P>) {
        self.seq += 1;
        let life = self.nodes[node].life;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            node,
            life,
            delivery,
        }));
    }

    fn deliver(&mut self, n: usize, delivery: Delivery<P>) {
        match delivery {
            Delivery::Input(input) => self.input(n, input),
            Delivery::Accept { from } => {
                if self.is_alive(from)
                    && !self.separated(from, n)
                    && self.connections.insert(from, n)
                {
                    let at = self.now + self.delay();
                    self.schedule(at, from, Delivery::Dialed { to: n });
                    let peer = self.nodes[from].peer;
                    self.input(n, Input::PeerConnected(peer));
                }
            }
            Delivery::Dialed { to } => {
                if self.connections.contains(n, to) {
                    let peer = self.nodes[to].peer;
                    self.input(n, Input::PeerConnected(peer));
                }
            }
            Delivery::Request {
                from,
                id,
                protocol,
                body,
            } => {
                if !self.connections.contains(from, n) {
                    self.stats.dropped += 1;
                    return;
                }
                let node = &mut self.nodes[n];
                node.next_inbound += 1;
                let inbound = InboundId(node.next_inbound);
                node.inbound.insert(inbound, (from, id));
                let peer = self.nodes[from].peer;
                self.input(
                    n,
                    Input::Request {
                        id: inbound,
                        peer,
                        protocol,
                        body,
                    },
                );
            }
            Delivery::Response { from, id, result } => {
                if self.nodes[n].outbound.remove(&id).is_none() {
                    return;
                }
                let peer = self.nodes[from].peer;
                let input = match result {
                    Ok(body) => Input::Response { id, peer, body },
                    Err((reason, detail)) => Input::RequestFailed {
                        id,
                        peer,
                        error: NetError::Refused {
                            peer,
                            protocol: String::new(),
                            reason,
                            detail,
                        },
                    },
                };
                self.input(n, input);
            }
            Delivery::Deadline { id } => {
                if let Some(to) = self.nodes[n].outbound.remove(&id) {
                    let peer = self.nodes[to].peer;
                    self.input(
                        n,
                        Input::RequestFailed {
                            id,
                            peer,
                            error: NetError::Timeout {
                                peer,
                                protocol: String::new(),
                            },
                        },
                    );
                }
            }
            Delivery::Gossip { from, message } => {
                if !self.nodes[n].seen.insert(message.id) {
                    return;
                }
                if !self.nodes[n].subscriptions.contains(&message.topic) {
                    return;
                }
                self.stats.gossip_deliveries += 1;
                let mut message = message;
                message.via = self.nodes[from].peer;
                if self.nodes[n].validating.contains(&message.topic) {
                    let node = &mut self.nodes[n];
                    if node.awaiting.len() >= crate::core::MAX_PENDING_VALIDATIONS {
                        let oldest = node
                            .awaiting
                            .iter()
                            .min_by_key(|(_, (at, _, _))| *at)
                            .map(|(id, _)| *id);
                        if let Some(oldest) = oldest {
                            node.awaiting.remove(&oldest);
                        }
                    }
                    node.awaiting
                        .insert(message.id, (self.now, from, message.clone()));
                } else {
                    self.forward(n, Some(from), &message);
                }
                self.input(n, Input::Message(message));
            }
            Delivery::Timer { key } => {
                if let Some(timer) = self.nodes[n].timers.remove(&key) {
                    self.input(n, Input::Timer(timer));
                }
            }
        }
    }

    fn record(&mut self, n: usize, input: &Input<P>) {
        let mut line = format!("{} {n} ", self.now);
        match input {
            Input::Start => line.push_str("start"),
            Input::Message(m) => {
                let _ = write!(line, "msg {}", m.id);
            }
            Input::Request { peer, body, .. } => {
                let _ = write!(line, "req {} {}", peer.short(), ContentId::of(body));
            }
            Input::Response { id, body, .. } => {
                let _ = write!(line, "resp {} {}", id.0, ContentId::of(body));
            }
            Input::RequestFailed { id, .. } => {
                let _ = write!(line, "fail {}", id.0);
            }
            Input::Timer(t) => {
                let _ = write!(line, "timer {t:?}");
            }
            Input::Command { call, .. } => {
                let _ = write!(line, "cmd {call:?}");
            }
            Input::PeerConnected(p) => {
                let _ = write!(line, "up {}", p.short());
            }
            Input::PeerDisconnected(p) => {
                let _ = write!(line, "down {}", p.short());
            }
            Input::DialFailed { address, .. } => {
                let _ = write!(line, "dialfail {address}");
            }
            Input::View(_) => line.push_str("view"),
        }
        line.push('\n');
        if std::env::var_os("SIM_TRACE").is_some() {
            eprint!("{line}");
        }
        self.trace.update(line.as_bytes());
    }

    /// Hands `input` to node `n` now and carries out its outputs. Outputs never feed a node
    /// synchronously: what they cause is scheduled, so call depth stays constant.
    fn input(&mut self, n: usize, input: Input<P>) {
        if self.nodes[n].protocol.is_none() {
            return;
        }
        self.stats.inputs += 1;
        self.record(n, &input);
        // Log lines of the node name it and the simulated time.
        let _span = tracing::info_span!("sim", node = n, ms = self.now).entered();
        let now = self.clock_ms(n);
        let node = &mut self.nodes[n];
        let protocol = node.protocol.as_mut().expect("alive");
        let started = std::time::Instant::now();
        protocol.handle(now, input);
        node.busy += started.elapsed();
        while let Some(output) = self.nodes[n].protocol.as_mut().and_then(P::poll_output) {
            self.execute(n, output);
        }
    }

    fn forward(&mut self, n: usize, from: Option<usize>, message: &Message) {
        let neighbours: Vec<usize> = self
            .connections
            .of(n)
            .filter(|m| Some(*m) != from)
            .collect();
        for m in neighbours {
            if !self.nodes[m].subscriptions.contains(&message.topic) || self.separated(n, m) {
                continue;
            }
            if self.config.gossip_loss > 0.0 && self.rng.gen_bool(self.config.gossip_loss.min(1.0))
            {
                self.stats.dropped += 1;
                continue;
            }
            self.stats.bytes += message.payload.len() as u64;
            let at = self.now + self.delay();
            self.schedule(
                at,
                m,
                Delivery::Gossip {
                    from: n,
                    message: message.clone(),
                },
            );
        }
    }

    fn execute(&mut self, n: usize, output: Output<P>) {
        match output {
            Output::Publish {
                topic,
                payload_type,
                payload,
            } => {
                let node = &mut self.nodes[n];
                node.seq += 1;
                let mut id_input = node.peer.as_bytes().to_vec();
                id_input.extend_from_slice(&node.seq.to_le_bytes());
                id_input.extend_from_slice(topic.as_str().as_bytes());
                id_input.extend_from_slice(&payload);
                let message = Message {
                    id: ContentId::of(&id_input),
                    topic,
                    sender: node.peer,
                    seq: node.seq,
                    timestamp_ms: self.now.saturating_add_signed(node.offset),
                    version: crate::PROTOCOL_VERSION,
                    payload_type,
                    payload,
                    via: node.peer,
                };
                node.seen.insert(message.id);
                self.forward(n, None, &message);
            }
            Output::Subscribe(topic) => {
                self.nodes[n].subscriptions.insert(topic);
            }
            Output::SubscribeValidated(topic) => {
                self.nodes[n].subscriptions.insert(topic.clone());
                self.nodes[n].validating.insert(topic);
            }
            Output::Validate {
                message,
                acceptance,
            } => {
                if let Some((_, from, message)) = self.nodes[n].awaiting.remove(&message) {
                    match acceptance {
                        Acceptance::Accept => self.forward(n, Some(from), &message),
                        Acceptance::Ignore => {}
                        Acceptance::Reject(reason) => {
                            self.stats.rejected += 1;
                            self.penalties.push(Penalty {
                                by: n,
                                peer: self.nodes[from].peer,
                                severity: Severity::Severe,
                                reason,
                            });
                        }
                    }
                }
            }
            Output::Unsubscribe(topic) => {
                self.nodes[n].validating.remove(&topic);
                self.nodes[n].subscriptions.remove(&topic);
            }
            Output::Request {
                id,
                peer,
                protocol,
                body,
            } => {
                let to = self.by_peer.get(&peer).copied();
                let Some(to) = to.filter(|to| self.connections.contains(n, *to)) else {
                    let failed = Input::RequestFailed {
                        id,
                        peer,
                        error: NetError::NotConnected(peer),
                    };
                    self.schedule(self.now, n, Delivery::Input(failed));
                    return;
                };
                self.stats.requests += 1;
                self.stats.bytes += body.len() as u64;
                self.nodes[n].outbound.insert(id, to);
                let deadline = self.now + self.config.request_timeout_ms;
                self.schedule(deadline, n, Delivery::Deadline { id });
                if self.separated(n, to) || !self.is_alive(to) {
                    self.stats.dropped += 1;
                    return;
                }
                let at = self.now + self.delay();
                self.schedule(
                    at,
                    to,
                    Delivery::Request {
                        from: n,
                        id,
                        protocol,
                        body,
                    },
                );
            }
            Output::Respond { id, result } => {
                let Some((to, their)) = self.nodes[n].inbound.remove(&id) else {
                    return;
                };
                if self.separated(n, to) || !self.connections.contains(n, to) {
                    self.stats.dropped += 1;
                    return;
                }
                if let Ok(body) = &result {
                    self.stats.bytes += body.len() as u64;
                }
                let at = self.now + self.delay();
                self.schedule(
                    at,
                    to,
                    Delivery::Response {
                        from: n,
                        id: their,
                        result,
                    },
                );
            }
            Output::Penalize {
                peer,
                severity,
                reason,
            } => self.penalties.push(Penalty {
                by: n,
                peer,
                severity,
                reason,
            }),
            Output::Schedule { at_ms, timer } => {
                self.seq += 1;
                let key = (at_ms, self.seq);
                self.nodes[n].timers.insert(key, timer);
                let at = at_ms.saturating_add_signed(-self.nodes[n].offset);
                self.schedule(at.max(self.now), n, Delivery::Timer { key });
            }
            Output::Dial { peer, address } => {
                let target = match address.iter().next() {
                    Some(AddrProtocol::Memory(port)) => usize::try_from(port)
                        .ok()
                        .and_then(|p| p.checked_sub(1))
                        .filter(|t| *t < self.nodes.len() && *t != n),
                    _ => None,
                };
                let at = self.now + self.delay();
                match target {
                    Some(t) if self.is_alive(t) && !self.separated(n, t) => {
                        if !self.connections.contains(n, t) {
                            self.schedule(at, t, Delivery::Accept { from: n });
                        }
                    }
                    _ => {
                        let at = at + self.config.latency_ms;
                        self.schedule(at, n, Delivery::Input(Input::DialFailed { peer, address }));
                    }
                }
            }
            Output::Disconnect(peer) => {
                if let Some(&to) = self.by_peer.get(&peer)
                    && self.connections.remove(n, to)
                {
                    let us = self.nodes[n].peer;
                    let at = self.now + self.delay();
                    self.schedule(at, to, Delivery::Input(Input::PeerDisconnected(us)));
                    self.schedule(self.now, n, Delivery::Input(Input::PeerDisconnected(peer)));
                }
            }
            Output::Reply { call, reply } => self.replies.push((n, call, reply)),
            Output::Event(event) => {
                if self.config.keep_events {
                    self.events.push((n, event));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schedules one timer 100 ms ahead on its clock, and notes the times it is handed.
    #[derive(Default)]
    struct Clocked {
        seen: Vec<u64>,
        out: Vec<Output<Self>>,
    }

    impl Protocol for Clocked {
        type Command = ();
        type Reply = ();
        type Event = ();
        type Timer = ();
        type View = ();
        fn protocols(&self) -> Vec<crate::RequestProtocol> {
            Vec::new()
        }
        fn handle(&mut self, now_ms: u64, input: Input<Self>) {
            self.seen.push(now_ms);
            if matches!(input, Input::Start) {
                self.out.push(Output::Schedule {
                    at_ms: now_ms + 100,
                    timer: (),
                });
            }
        }
        fn poll_output(&mut self) -> Option<Output<Self>> {
            self.out.pop()
        }
    }

    #[test]
    fn a_skewed_node_lives_on_its_own_clock() {
        let mut sim: Sim<Clocked> = Sim::new(1, SimConfig::default());
        let fast = sim.add_node(|_| Clocked::default());
        let slow = sim.add_node(|_| Clocked::default());
        sim.set_clock_offset(fast, 5_000);
        sim.set_clock_offset(slow, -5_000);
        let t0 = sim.now_ms();
        assert_eq!(sim.clock_ms(fast), t0 + 5_000);
        sim.run_for(99);
        assert_eq!(
            sim.node(fast).unwrap().seen,
            vec![t0 + 5_000],
            "started on its clock"
        );
        assert_eq!(sim.node(slow).unwrap().seen, vec![t0 - 5_000]);
        sim.run_for(1);
        // Each timer fires 100 ms later by its own clock, which is 100 ms of simulation.
        assert_eq!(sim.node(fast).unwrap().seen, vec![t0 + 5_000, t0 + 5_100]);
        assert_eq!(sim.node(slow).unwrap().seen, vec![t0 - 5_000, t0 - 4_900]);
    }
}
