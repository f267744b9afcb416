//! The discovery state machine: no I/O, no clock, no tasks. It implements
//! [`causality_net::service::Protocol`]: inputs carry the time; outputs say what to send,
//! dial, penalize and when to be called back. Exchanges, provide and find-providers,
//! penalties, dial backoff and the re-signing of our own record are all decided here;
//! [`crate::Discovery`] only runs it over a `Network`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use causality_hash::{ContentId, PeerDigest, Rendezvous};
use causality_net::service::{
    CallId, Ids, InboundId, Input, OutboundId, Output, Protocol, Severity,
};
use causality_net::{Hello, Keypair, Multiaddr, PeerId, RefusalReason, RequestProtocol};
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

use crate::error::{DiscoveryError, RecordError};
use crate::messages;
use crate::proto::v1 as pb;
use crate::record::{PeerRecord, RecordCache};
use crate::view::{Member, View};

/// Discovery settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Addresses to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// Connections to keep open.
    pub target_connections: usize,
    /// How often to run maintenance (exchange, dial, expire).
    pub refresh_interval: Duration,
    /// Lifetime of our own record; it is re-signed at half of it.
    pub record_ttl: Duration,
    /// Peers to exchange records with per refresh.
    pub exchange_fanout: usize,
    /// Most records per exchange message.
    pub max_records_per_message: usize,
    /// Most records held (memory bound).
    pub max_records: usize,
    /// Consecutive dial failures after which an unconnected peer is dropped from the view.
    pub max_dial_failures: u32,
    /// First dial retry delay; doubles per failure, with ±50% jitter.
    pub dial_backoff: Duration,
    /// Longest dial retry delay.
    pub max_dial_backoff: Duration,
    /// Network epoch salting rendezvous hashing.
    pub epoch: u64,
    /// Our roles.
    pub roles: Vec<String>,
    /// The weight we advertise in our record, in thousandths. Advisory only: rendezvous uses
    /// [`weights`](Self::weights), never a peer's own claim.
    pub weight_milli: u32,
    /// Rendezvous weights by local policy, in thousandths: peers not listed weigh 1,000
    /// (every peer equal). Every node of a network must use the same table, or their
    /// rendezvous answers differ. A weight is capped at 100,000 (100×).
    pub weights: BTreeMap<PeerId, u32>,
    /// How far a peer's clock may be ahead of ours: a record may expire at most
    /// `record_ttl + max_clock_skew` from now.
    pub max_clock_skew: Duration,
    /// Rendezvous peers a content id is provided to and looked up at.
    pub replication: usize,
    /// Lifetime of a provider registration.
    pub provider_ttl: Duration,
    /// Most provider registrations held.
    pub max_providers: usize,
    /// Most records one peer may introduce into our view (its own record aside), so that
    /// no source fills the view first-come. Default 1,000 (a tenth of `max_records`).
    pub max_records_per_source: usize,
    /// Most content ids one peer may be registered as provider of here. Default 1,000.
    pub max_provided_per_peer: usize,
    /// Seed for the RNG choosing exchange partners and jitter.
    pub seed: u64,
    /// How long a provide or find-providers call waits for its rendezvous peers.
    pub call_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            target_connections: 8,
            refresh_interval: Duration::from_secs(5),
            record_ttl: Duration::from_secs(120),
            exchange_fanout: 3,
            max_records_per_message: 64,
            max_records: 10_000,
            max_dial_failures: 3,
            dial_backoff: Duration::from_secs(1),
            max_dial_backoff: Duration::from_secs(60),
            epoch: 0,
            roles: Vec::new(),
            weight_milli: 1000,
            weights: BTreeMap::new(),
            max_clock_skew: Duration::from_secs(30),
            replication: 3,
            provider_ttl: Duration::from_secs(600),
            max_providers: 100_000,
            max_records_per_source: 1_000,
            max_provided_per_peer: 1_000,
            seed: 0,
            call_timeout: Duration::from_secs(15),
        }
    }
}

impl Config {
    /// Checks the settings; the first one out of range is named.
    pub fn validate(&self) -> Result<(), causality_net::ConfigError> {
        use causality_net::ConfigError;
        ConfigError::positive("target_connections", self.target_connections > 0)?;
        ConfigError::positive("refresh_interval", !self.refresh_interval.is_zero())?;
        ConfigError::positive("exchange_fanout", self.exchange_fanout > 0)?;
        ConfigError::positive("max_records", self.max_records > 0)?;
        ConfigError::positive("max_records_per_source", self.max_records_per_source > 0)?;
        ConfigError::positive("max_provided_per_peer", self.max_provided_per_peer > 0)?;
        ConfigError::positive("replication", self.replication > 0)?;
        ConfigError::positive("dial_backoff", !self.dial_backoff.is_zero())?;
        ConfigError::positive("call_timeout", !self.call_timeout.is_zero())?;
        ConfigError::positive("provider_ttl", !self.provider_ttl.is_zero())?;
        if !(2..=1024).contains(&self.max_records_per_message) {
            return Err(ConfigError::new(
                "max_records_per_message",
                "must be between 2 and 1024",
            ));
        }
        if self.record_ttl < self.refresh_interval * 2 {
            return Err(ConfigError::new(
                "record_ttl",
                "must be at least two refresh intervals (records are re-signed at half their life)",
            ));
        }
        if self.max_dial_backoff < self.dial_backoff {
            return Err(ConfigError::new(
                "max_dial_backoff",
                "must not be below dial_backoff",
            ));
        }
        Ok(())
    }
}

/// A change in the live view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewEvent {
    /// A peer entered the view (or its record changed).
    Joined(Arc<PeerRecord>),
    /// A peer left the view: expired, unreachable or replaced.
    Left(PeerId),
}

/// What discovery reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// A change of one record.
    View(ViewEvent),
    /// The whole view after a change: a versioned snapshot.
    Membership(Membership),
}

/// Local commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Register as a provider of a content id with its rendezvous peers.
    Provide(ContentId),
    /// Ask the rendezvous peers of a content id who provides it.
    FindProviders(ContentId),
}

/// Replies to calls.
#[derive(Debug)]
pub enum Reply {
    /// How many rendezvous peers accepted a provider registration.
    Provided(usize),
    /// The providers found.
    Providers(Result<Vec<PeerRecord>, DiscoveryError>),
}

/// Timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Periodic maintenance.
    Refresh,
    /// A call's deadline.
    Call(CallId),
}

/// The view as one versioned snapshot: every node with the same records computes the same
/// rendezvous answers from it.
#[derive(Clone, Debug)]
pub struct Membership {
    /// Grows by one with every change.
    pub version: u64,
    /// Our own record.
    pub own: PeerRecord,
    /// The records of the view (not ours) with their rendezvous digests, by peer.
    records: Arc<BTreeMap<PeerId, Member>>,
    own_digest: PeerDigest,
    weights: Arc<BTreeMap<PeerId, u32>>,
    hrw: Rendezvous,
}

impl Membership {
    /// The records of the view (not ours), by peer id.
    pub fn records(&self) -> impl Iterator<Item = &PeerRecord> {
        self.records.values().map(|m| &*m.record)
    }

    /// `peer`'s record, when the view holds it (ours is [`own`](Self::own)).
    pub fn get(&self, peer: &PeerId) -> Option<&PeerRecord> {
        self.records.get(peer).map(|m| &*m.record)
    }

    /// How many records the view holds (not counting ours).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the view holds no record besides ours.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The peer ids in the view, and ours, sorted.
    pub fn members(&self) -> Vec<PeerId> {
        let mut members: Vec<PeerId> = self.records.keys().copied().collect();
        members.push(self.own.peer);
        members.sort();
        members
    }

    /// The `k` peers (possibly including ourselves) responsible for `key` among records
    /// passing `filter`: weighted HRW top-k, salted by the epoch.
    pub fn responsible_peers(
        &self,
        key: &[u8],
        k: usize,
        filter: RecordFilter<'_>,
    ) -> Vec<PeerRecord> {
        let view = self.records.values().map(|m| (&*m.record, m.digest));
        responsible(
            &self.hrw,
            &self.weights,
            (&self.own, self.own_digest),
            view,
            key,
            k,
            filter,
        )
    }
}

/// Most weight local policy may give one peer, in thousandths (100×).
pub const MAX_WEIGHT_MILLI: u32 = 100_000;

/// A peer's rendezvous weight under local policy: 1.0 unless listed.
fn weight_of(weights: &BTreeMap<PeerId, u32>, peer: &PeerId) -> f64 {
    let milli = weights
        .get(peer)
        .copied()
        .unwrap_or(1000)
        .min(MAX_WEIGHT_MILLI);
    f64::from(milli) / 1000.0
}

/// Weighted HRW top-k over our record and the view's, each with its epoch digest (one
/// BLAKE3 per lookup, for the key).
fn responsible<'a>(
    hrw: &Rendezvous,
    weights: &BTreeMap<PeerId, u32>,
    own: (&'a PeerRecord, PeerDigest),
    view: impl Iterator<Item = (&'a PeerRecord, PeerDigest)>,
    key: &[u8],
    k: usize,
    filter: RecordFilter<'_>,
) -> Vec<PeerRecord> {
    let candidates = std::iter::once(own).chain(view).filter(|(r, _)| filter(r));
    hrw.top_k_weighted_iter(key, candidates, k, |(r, d)| {
        (
            *d,
            weight_of(weights, &r.peer),
            r.peer.as_bytes().as_slice(),
        )
    })
    .into_iter()
    .map(|(r, _)| r.clone())
    .collect()
}

/// A provide or find-providers call in progress.
#[derive(Debug)]
struct Call {
    command: Command,
    /// Rendezvous peers not heard from yet.
    outstanding: BTreeSet<PeerId>,
    /// The encoded request for them.
    request: Vec<u8>,
    accepted: usize,
    found: BTreeMap<PeerId, PeerRecord>,
    last_error: Option<String>,
}

/// What an outbound request was for.
#[derive(Debug)]
enum Outgoing {
    Exchange,
    Call(CallId),
}

/// Gives back one unit of `peer`'s quota count, forgetting it at zero.
fn release(counts: &mut HashMap<PeerId, usize>, peer: &PeerId) {
    if let Some(n) = counts.get_mut(peer) {
        *n -= 1;
        if *n == 0 {
            counts.remove(peer);
        }
    }
}

/// Ticks a connected peer may stay without sending a record before it may be shed.
const UNKNOWN_GRACE_TICKS: u32 = 3;
/// Peers remembered after their records expired, to dial again when we are alone.
const LOST_PEERS: usize = 16;

/// A filter over peer records for [`State::responsible_peers`].
pub type RecordFilter<'a> = &'a dyn Fn(&PeerRecord) -> bool;

/// The discovery state machine.
#[derive(Debug)]
pub struct State {
    config: Config,
    local: PeerId,
    own: PeerRecord,
    view: View,
    /// Connected peers not (yet) in the view — bootstrap peers before their record arrives,
    /// or connections that never send one — with the ticks they have been here.
    connected_unknown: BTreeMap<PeerId, u32>,
    /// Peers whose records expired (most recent last), with an address: a node cut off
    /// from everyone — the bootstrap node above all, which has no one to bootstrap from —
    /// dials them again when it is alone, so a healed partition joins up again.
    lost: VecDeque<(PeerId, Multiaddr)>,
    providers: HashMap<ContentId, BTreeMap<PeerId, u64>>,
    provider_count: usize,
    /// Registrations held per provider.
    provided_by: HashMap<PeerId, usize>,
    /// Verified records shared with other state machines of the process, if any.
    cache: Option<RecordCache>,
    hrw: Rendezvous,
    rng: ChaCha20Rng,
    keypair: Keypair,
    hello: Hello,
    ids: Ids,
    outgoing: HashMap<OutboundId, (PeerId, Outgoing)>,
    calls: BTreeMap<CallId, Call>,
    /// Calls waiting for a connection to a rendezvous peer we dialed.
    dialing: BTreeMap<PeerId, Vec<CallId>>,
    own_digest: PeerDigest,
    weights: Arc<BTreeMap<PeerId, u32>>,
    version: u64,
    view_changed: bool,
    outputs: VecDeque<Output<State>>,
}

impl State {
    /// A state machine for the node of `keypair`, announcing `hello` and reachable at
    /// `addresses`; it signs its own record at `now_ms` and re-signs it before it expires.
    pub fn new(
        config: Config,
        keypair: Keypair,
        hello: Hello,
        addresses: Vec<Multiaddr>,
        now_ms: u64,
    ) -> Self {
        let ttl = u64::try_from(config.record_ttl.as_millis()).unwrap_or(u64::MAX);
        let own = PeerRecord::sign_with(
            &keypair,
            &hello,
            addresses,
            config.roles.clone(),
            config.weight_milli,
            now_ms.max(1),
            now_ms.saturating_add(ttl),
        );
        Self::with_record(config, keypair, hello, own)
    }

    /// A state machine whose current signed record is `own` (made with `keypair`).
    pub fn with_record(config: Config, keypair: Keypair, hello: Hello, own: PeerRecord) -> Self {
        Self {
            keypair,
            hello,
            ids: Ids::default(),
            outgoing: HashMap::new(),
            calls: BTreeMap::new(),
            dialing: BTreeMap::new(),
            own_digest: Rendezvous::for_epoch(config.epoch).peer_digest(own.peer.as_bytes()),
            weights: Arc::new(config.weights.clone()),
            version: 0,
            view_changed: true,
            local: own.peer,
            hrw: Rendezvous::for_epoch(config.epoch),
            rng: ChaCha20Rng::seed_from_u64(
                config.seed
                    ^ u64::from_le_bytes(own.peer.as_bytes()[..8].try_into().expect("8 bytes")),
            ),
            own,
            view: View::new(),
            connected_unknown: BTreeMap::new(),
            lost: VecDeque::new(),
            provided_by: HashMap::new(),
            cache: None,
            providers: HashMap::new(),
            provider_count: 0,
            config,
            outputs: VecDeque::new(),
        }
    }

    /// Shares verified records with every state machine given the same `cache`: a record
    /// one of them verified is taken as is by the others (see [`RecordCache`]). Many
    /// simulated nodes in one process hold one copy of each record this way.
    #[must_use]
    pub fn with_record_cache(mut self, cache: RecordCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Our own record.
    pub fn own(&self) -> &PeerRecord {
        &self.own
    }

    /// Whether our record should be re-signed now.
    fn own_needs_refresh(&self, now_ms: u64) -> bool {
        let half = u64::try_from(self.config.record_ttl.as_millis() / 2).unwrap_or(u64::MAX);
        self.own.expires_at_ms.saturating_sub(now_ms) < half
    }

    /// Re-signs our record with a higher sequence number and a fresh expiry.
    fn resign(&mut self, now_ms: u64) {
        let ttl = u64::try_from(self.config.record_ttl.as_millis()).unwrap_or(u64::MAX);
        self.own = PeerRecord::sign_with(
            &self.keypair,
            &self.hello,
            self.own.addresses.clone(),
            self.config.roles.clone(),
            self.config.weight_milli,
            now_ms.max(self.own.seq + 1),
            now_ms.saturating_add(ttl),
        );
        self.view_changed = true;
    }

    /// The view as a versioned snapshot.
    pub fn membership(&self) -> Membership {
        Membership {
            version: self.version,
            own: self.own.clone(),
            records: Arc::clone(self.view.members()),
            own_digest: self.own_digest,
            weights: Arc::clone(&self.weights),
            hrw: self.hrw.clone(),
        }
    }

    fn push(&mut self, output: Output<State>) {
        self.outputs.push_back(output);
    }

    fn event(&mut self, event: ViewEvent) {
        self.view_changed = true;
        self.push(Output::Event(Event::View(event)));
    }

    /// Every record in the view (not our own), by peer id.
    pub fn view(&self) -> Vec<PeerRecord> {
        self.view.iter().map(|(_, k)| (*k.record).clone()).collect()
    }

    /// How many records the view holds (not counting ours).
    pub fn view_len(&self) -> usize {
        self.view.len()
    }

    /// Peers in the view, plus ourselves.
    pub fn members(&self) -> Vec<PeerId> {
        let mut members: Vec<PeerId> = self.view.iter().map(|(p, _)| *p).collect();
        members.push(self.local);
        members.sort();
        members
    }

    /// Connected peers (with or without a record).
    pub fn connected(&self) -> usize {
        self.view.linked().len() + self.connected_unknown.len()
    }

    /// The `k` peers (possibly including ourselves) responsible for `key`: weighted HRW top-k
    /// over the live view salted by the epoch, among records passing `filter`.
    pub fn responsible_peers(
        &self,
        key: &[u8],
        k: usize,
        filter: RecordFilter<'_>,
    ) -> Vec<PeerRecord> {
        responsible(
            &self.hrw,
            &self.weights,
            (&self.own, self.own_digest),
            self.view.members().values().map(|m| (&*m.record, m.digest)),
            key,
            k,
            filter,
        )
    }

    // ----- inputs -----

    /// Periodic maintenance at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        // Expire records and providers.
        for peer in self.view.expired(now_ms) {
            self.forget(peer);
        }
        let mut removed = 0;
        let provided_by = &mut self.provided_by;
        self.providers.retain(|_, providers| {
            providers.retain(|provider, expiry| {
                let keep = *expiry > now_ms;
                if !keep {
                    removed += 1;
                    release(provided_by, provider);
                }
                keep
            });
            !providers.is_empty()
        });
        self.provider_count -= removed;

        // Re-bootstrap when we are alone.
        if self.connected() == 0 {
            for address in self.config.bootstrap.clone() {
                self.push(Output::Dial {
                    peer: None,
                    address,
                });
            }
            for (peer, address) in self.lost.clone() {
                self.push(Output::Dial {
                    peer: Some(peer),
                    address,
                });
            }
        }

        // Dial toward the target, counting only peers whose records we hold: connections
        // that never send one (Sybils sitting on our slots) do not stop us dialing.
        let useful = self.view.linked().len();
        let want = self.config.target_connections.saturating_sub(useful);
        if want > 0 {
            let mut candidates: Vec<PeerId> = self
                .view
                .iter()
                .filter(|(p, k)| {
                    !self.view.linked().contains(*p)
                        && k.next_dial_ms <= now_ms
                        && !k.record.addresses.is_empty()
                })
                .map(|(p, _)| *p)
                .collect();
            candidates.shuffle(&mut self.rng);
            for peer in candidates.into_iter().take(want) {
                let failures = self.view.get(&peer).map_or(0, |k| k.failures);
                let backoff = self.backoff(failures);
                let known = self.view.get_mut(&peer).expect("candidate is known");
                known.next_dial_ms = now_ms + backoff;
                known.dialed = true;
                let address = known.record.addresses[0].clone();
                self.push(Output::Dial {
                    peer: Some(peer),
                    address,
                });
            }
        }

        // Shed connections far above the target, so well-known peers (bootstrap nodes
        // above all) keep room for newcomers: first connections that never sent a record
        // (past a grace of a few ticks, longest here first), then peers that dialed us
        // (they have exchanged and can find us again). Peers we dialed are never shed.
        for ticks in self.connected_unknown.values_mut() {
            *ticks = ticks.saturating_add(1);
        }
        let high_water = self.config.target_connections.saturating_mul(2).max(1);
        let connected = self.connected();
        if connected > high_water {
            let excess = connected - self.config.target_connections;
            let mut silent: Vec<(u32, PeerId)> = self
                .connected_unknown
                .iter()
                .filter(|(_, ticks)| **ticks > UNKNOWN_GRACE_TICKS)
                .map(|(p, ticks)| (*ticks, *p))
                .collect();
            silent.sort_by(|a, b| b.cmp(a));
            let mut inbound: Vec<PeerId> = self
                .view
                .linked()
                .iter()
                .filter(|p| self.view.get(p).is_some_and(|k| !k.dialed))
                .copied()
                .collect();
            inbound.shuffle(&mut self.rng);
            let shed: Vec<PeerId> = silent
                .into_iter()
                .map(|(_, p)| p)
                .chain(inbound)
                .take(excess)
                .collect();
            for peer in shed {
                self.view.set_connected(&peer, false);
                self.connected_unknown.remove(&peer);
                self.push(Output::Disconnect(peer));
            }
        }

        // Exchange with a few connected peers.
        let mut partners: Vec<PeerId> = self
            .view
            .linked()
            .iter()
            .copied()
            .chain(self.connected_unknown.keys().copied())
            .collect();
        partners.shuffle(&mut self.rng);
        for peer in partners.into_iter().take(self.config.exchange_fanout) {
            self.exchange_with(peer);
        }
    }

    fn backoff(&mut self, failures: u32) -> u64 {
        let base = u64::try_from(self.config.dial_backoff.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(self.config.max_dial_backoff.as_millis()).unwrap_or(u64::MAX);
        let delay = base.saturating_mul(1 << failures.min(20)).min(max);
        // ±50% jitter so a partition's dialers do not all return at once.
        self.rng.gen_range(delay / 2..=delay + delay / 2)
    }

    /// An exchange request to `peer`: our record and a sample of the view.
    fn exchange_with(&mut self, peer: PeerId) {
        let records = self.sample(self.config.max_records_per_message.saturating_sub(1), peer);
        let body = messages::encode_request(pb::request::Kind::Exchange(pb::Exchange { records }));
        let id = self.ids.next_id();
        self.outgoing.insert(id, (peer, Outgoing::Exchange));
        self.push(Output::Request {
            id,
            peer,
            protocol: crate::PROTOCOL_NAME.to_owned(),
            body,
        });
    }

    /// Our record, then up to `n` records of the view (not `partner`'s own), leaving out
    /// the versions `partner` already holds: the most recently updated half first, so
    /// refreshed records spread fast, then a random sample. What is sent is remembered.
    fn sample(&mut self, n: usize, partner: PeerId) -> Vec<pb::PeerRecord> {
        let mut lacking = self.view.lacking(&partner);
        let own = self.view.lacks_own(&partner, self.own.seq);
        // Newest first; the slot breaks ties, so the order is a function of the inputs.
        let newest = |a: &(u64, u32), b: &(u64, u32)| b.cmp(a);
        let fresh = (n / 2).min(lacking.len());
        if fresh < lacking.len() {
            lacking.select_nth_unstable_by(fresh, newest);
        }
        let (recent, rest) = lacking.split_at_mut(fresh);
        recent.sort_unstable_by(newest);
        let (sampled, _) = rest.partial_shuffle(&mut self.rng, n - fresh);
        let chosen: Vec<Arc<PeerRecord>> = recent
            .iter()
            .chain(sampled.iter())
            .map(|(_, slot)| Arc::clone(self.view.at(*slot)))
            .collect();
        let mut records = Vec::with_capacity(chosen.len() + 1);
        if own {
            records.push(self.own.to_proto());
            self.view.holds_own(&partner, self.own.seq);
        }
        for record in chosen {
            records.push(record.to_proto());
            self.view.holds(&partner, &record.peer, record.seq);
        }
        records
    }

    /// Whether a connection to `peer` is up (only then is what it holds remembered).
    fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected_unknown.contains_key(peer) || self.view.linked().contains(peer)
    }

    /// A connection to `peer` is up.
    pub fn on_connected(&mut self, peer: PeerId) {
        self.view.track(peer);
        match self.view.get_mut(&peer) {
            Some(known) => {
                known.failures = 0;
                self.view.set_connected(&peer, true);
            }
            None => {
                self.connected_unknown.insert(peer, 0);
                // Learn its record (and its view) right away.
                self.exchange_with(peer);
            }
        }
    }

    /// The connection to `peer` closed.
    pub fn on_disconnected(&mut self, peer: PeerId) {
        self.connected_unknown.remove(&peer);
        self.view.forget(&peer);
        if let Some(known) = self.view.get_mut(&peer) {
            known.dialed = false;
        }
        self.view.set_connected(&peer, false);
    }

    /// Dialing `peer` failed; after enough failures it leaves the view.
    pub fn on_dial_failed(&mut self, peer: PeerId) {
        if self.view.linked().contains(&peer) {
            return;
        }
        let Some(known) = self.view.get_mut(&peer) else {
            return;
        };
        known.dialed = false;
        known.failures += 1;
        if known.failures >= self.config.max_dial_failures {
            tracing::debug!(target: "causality_discovery", peer = %peer, "dropping unreachable peer");
            self.forget(peer);
        }
    }

    /// A request from `from`; returns the response.
    pub fn on_request(&mut self, from: PeerId, request: pb::Request, now_ms: u64) -> pb::Response {
        match request.kind {
            Some(pb::request::Kind::Exchange(exchange)) => {
                self.absorb(from, exchange.records, now_ms);
                let records =
                    self.sample(self.config.max_records_per_message.saturating_sub(1), from);
                pb::Response { records }
            }
            Some(pb::request::Kind::Provide(provide)) => {
                if let Ok(id) = content_id(&provide.content_id) {
                    self.add_provider(id, from, now_ms);
                } else {
                    self.penalize(from, "provide with a malformed content id".into());
                }
                pb::Response::default()
            }
            Some(pb::request::Kind::FindProviders(find)) => {
                let records = content_id(&find.content_id)
                    .map(|id| self.local_providers(&id, now_ms))
                    .unwrap_or_default();
                pb::Response {
                    records: records
                        .iter()
                        .take(self.config.max_records_per_message)
                        .map(PeerRecord::to_proto)
                        .collect(),
                }
            }
            None => pb::Response::default(),
        }
    }

    /// The response to an exchange we sent to `from`.
    pub fn on_exchange_response(&mut self, from: PeerId, response: pb::Response, now_ms: u64) {
        self.absorb(from, response.records, now_ms);
    }

    /// An exchange we sent to `peer` failed: it may not hold what we sent, so the next
    /// exchange starts afresh.
    pub fn on_exchange_failed(&mut self, peer: PeerId) {
        self.view.reset(&peer);
    }

    /// Registers `provider` for `id` locally.
    pub fn add_provider(&mut self, id: ContentId, provider: PeerId, now_ms: u64) {
        let expiry =
            now_ms + u64::try_from(self.config.provider_ttl.as_millis()).unwrap_or(u64::MAX);
        let known = self
            .providers
            .get(&id)
            .is_some_and(|e| e.contains_key(&provider));
        if !known {
            if self.provider_count >= self.config.max_providers {
                tracing::debug!(target: "causality_discovery", "provider table full; registration dropped");
                return;
            }
            let held = self.provided_by.get(&provider).copied().unwrap_or(0);
            if provider != self.local && held >= self.config.max_provided_per_peer {
                tracing::debug!(target: "causality_discovery", peer = %provider, held, "provider over its quota; registration dropped");
                return;
            }
            self.provider_count += 1;
            *self.provided_by.entry(provider).or_default() += 1;
        }
        self.providers
            .entry(id)
            .or_default()
            .insert(provider, expiry);
    }

    /// Providers of `id` registered here, as records (ourselves included when we provide it).
    pub fn local_providers(&self, id: &ContentId, now_ms: u64) -> Vec<PeerRecord> {
        self.providers
            .get(id)
            .into_iter()
            .flatten()
            .filter(|(_, expiry)| **expiry > now_ms)
            .filter_map(|(peer, _)| {
                if *peer == self.local {
                    Some(self.own.clone())
                } else {
                    self.view.get(peer).map(|k| (*k.record).clone())
                }
            })
            .collect()
    }

    /// Records received from `from`: verified, merged, forgeries penalized.
    fn absorb(&mut self, from: PeerId, records: Vec<pb::PeerRecord>, now_ms: u64) {
        if records.len() > self.config.max_records_per_message {
            self.penalize(from, format!("{} records in one message", records.len()));
        }
        let mut forged = 0;
        for record in records
            .into_iter()
            .take(self.config.max_records_per_message)
        {
            let result = self.insert_from(&record, now_ms, Some(from));
            let owner = match &result {
                Ok(owner) | Err(RecordError::Stale { peer: owner, .. }) => Some(*owner),
                Err(_) => None,
            };
            // `from` holds this version (or a newer one): no need to send it back.
            match owner {
                Some(owner) if owner == self.local => self.view.holds_own(&from, record.seq),
                Some(owner) => self.view.holds(&from, &owner, record.seq),
                None => {}
            }
            match result {
                Ok(_) => {}
                Err(e) if e.is_forgery() => {
                    forged += 1;
                    tracing::debug!(target: "causality_discovery", peer = %from, error = %e, "bad record");
                }
                Err(_) => {}
            }
        }
        if forged > 0 {
            self.penalize(from, format!("{forged} forged or malformed records"));
        }
    }

    fn penalize(&mut self, peer: PeerId, reason: String) {
        // Never dialed again on our own account.
        self.lost.retain(|(p, _)| *p != peer);
        self.push(Output::Penalize {
            peer,
            severity: Severity::Severe,
            reason,
        });
    }

    /// Verifies and merges one record; returns whose it is.
    pub fn insert(&mut self, record: &pb::PeerRecord, now_ms: u64) -> Result<PeerId, RecordError> {
        self.insert_from(record, now_ms, None)
    }

    /// [`insert`](Self::insert) of a record `source` sent us: a new record counts against
    /// the source's quota (unless it is the source's own).
    fn insert_from(
        &mut self,
        record: &pb::PeerRecord,
        now_ms: u64,
        source: Option<PeerId>,
    ) -> Result<PeerId, RecordError> {
        // Bytes another state machine of the process verified need no second check.
        let (digest, shared) = match &self.cache {
            Some(cache) => {
                let (digest, shared) = cache.lookup(record);
                (Some(digest), shared)
            }
            None => (None, None),
        };
        // Cheap checks first: a record no newer than the one we hold needs no verification.
        let (peer, key) = match &shared {
            Some(shared) => (shared.peer, None),
            None => {
                let key = crate::record::decode_key(&record.peer_id)?;
                (PeerId::from_verifying_key(&key), Some(key))
            }
        };
        if let Some(known) = self.view.get(&peer)
            && (record.seq < known.record.seq
                || (record.seq == known.record.seq && record.signature == known.record.signature()))
        {
            return Err(RecordError::Stale {
                peer: known.record.peer,
                seq: record.seq,
                have: known.record.seq,
            });
        }
        if peer == self.local {
            // Our own record, relayed back: nothing to learn, nothing to verify.
            return Ok(self.local);
        }
        let horizon = self.config.record_ttl + self.config.max_clock_skew;
        let latest = now_ms.saturating_add(u64::try_from(horizon.as_millis()).unwrap_or(u64::MAX));
        if record.expires_at_ms > latest {
            // A record that would outlive every refresh (and every eviction by expiry).
            return Err(RecordError::ExpiresTooLate {
                peer,
                expires_at_ms: record.expires_at_ms,
                latest,
            });
        }
        let record = match shared {
            Some(shared) if shared.expires_at_ms <= now_ms => {
                return Err(RecordError::Expired(peer));
            }
            Some(shared) => shared,
            None => {
                let key = key.ok_or(RecordError::BadPeerId)?;
                let verified = Arc::new(PeerRecord::verify_with(record, &key, now_ms)?);
                if let (Some(cache), Some(digest)) = (&self.cache, digest) {
                    cache.share(digest, &verified);
                }
                verified
            }
        };
        if let Some(known) = self.view.get(&record.peer) {
            if record.seq <= known.record.seq {
                return Err(RecordError::Stale {
                    peer: record.peer,
                    seq: record.seq,
                    have: known.record.seq,
                });
            }
            self.view.update(Arc::clone(&record), now_ms);
            self.event(ViewEvent::Joined(Arc::clone(&record)));
            return Ok(peer);
        }
        if self.view.len() >= self.config.max_records {
            tracing::debug!(target: "causality_discovery", "view full; record dropped");
            return Ok(peer);
        }
        let source = source.filter(|s| *s != peer);
        if let Some(source) = source {
            let held = self.view.introduced_by(&source);
            if held >= self.config.max_records_per_source {
                tracing::debug!(target: "causality_discovery", peer = %source, held, "source over its quota; record dropped");
                return Ok(peer);
            }
        }
        let connected = self.connected_unknown.remove(&peer).is_some();
        let digest = self.hrw.peer_digest(peer.as_bytes());
        self.view
            .insert(Arc::clone(&record), digest, now_ms, source, connected);
        self.event(ViewEvent::Joined(record));
        Ok(peer)
    }

    /// Removes a peer that expired or could not be reached, remembering where it was.
    fn forget(&mut self, peer: PeerId) {
        if let Some(address) = self
            .view
            .get(&peer)
            .and_then(|k| k.record.addresses.first().cloned())
        {
            self.lost.retain(|(p, _)| *p != peer);
            if self.lost.len() == LOST_PEERS {
                self.lost.pop_front();
            }
            self.lost.push_back((peer, address));
        }
        self.remove(peer);
    }

    fn remove(&mut self, peer: PeerId) {
        if let Some(connected) = self.view.remove(&peer) {
            if connected {
                self.connected_unknown.insert(peer, 0);
            }
            self.event(ViewEvent::Left(peer));
        }
    }
}

impl State {
    fn start_call(&mut self, call: CallId, command: Command, now_ms: u64) {
        let (id, kind) = match &command {
            Command::Provide(id) => (
                *id,
                pb::request::Kind::Provide(pb::Provide {
                    content_id: id.as_bytes().to_vec(),
                }),
            ),
            Command::FindProviders(id) => (
                *id,
                pb::request::Kind::FindProviders(pb::FindProviders {
                    content_id: id.as_bytes().to_vec(),
                }),
            ),
        };
        let targets = self.responsible_peers(id.as_bytes(), self.config.replication, &|_| true);
        let mut entry = Call {
            command,
            outstanding: BTreeSet::new(),
            request: messages::encode_request(kind),
            accepted: 0,
            found: BTreeMap::new(),
            last_error: None,
        };
        for target in targets {
            if target.peer == self.local {
                match entry.command {
                    Command::Provide(id) => {
                        self.add_provider(id, self.local, now_ms);
                        entry.accepted += 1;
                    }
                    Command::FindProviders(id) => {
                        for record in self.local_providers(&id, now_ms) {
                            entry.found.insert(record.peer, record);
                        }
                    }
                }
                continue;
            }
            entry.outstanding.insert(target.peer);
            if self.is_connected(&target.peer) {
                self.call_request(call, target.peer, entry.request.clone());
            } else if let Some(address) = target.addresses.first() {
                // Rendezvous peers are usually not among our connections: dial, then ask.
                self.dialing.entry(target.peer).or_default().push(call);
                self.push(Output::Dial {
                    peer: Some(target.peer),
                    address: address.clone(),
                });
            } else {
                entry.outstanding.remove(&target.peer);
                entry.last_error = Some(format!("{} has no address", target.peer));
            }
        }
        self.calls.insert(call, entry);
        let deadline =
            now_ms + u64::try_from(self.config.call_timeout.as_millis()).unwrap_or(u64::MAX);
        self.push(Output::Schedule {
            at_ms: deadline,
            timer: Timer::Call(call),
        });
        self.maybe_finish(call);
    }

    fn call_request(&mut self, call: CallId, peer: PeerId, body: Vec<u8>) {
        let id = self.ids.next_id();
        self.outgoing.insert(id, (peer, Outgoing::Call(call)));
        self.push(Output::Request {
            id,
            peer,
            protocol: crate::PROTOCOL_NAME.to_owned(),
            body,
        });
    }

    /// One rendezvous peer of `call` answered (`Ok`) or could not (`Err`).
    fn call_part(
        &mut self,
        call: CallId,
        peer: PeerId,
        answer: Result<pb::Response, String>,
        now_ms: u64,
    ) {
        let Some(entry) = self.calls.get_mut(&call) else {
            return;
        };
        if !entry.outstanding.remove(&peer) {
            return;
        }
        match answer {
            Ok(response) => match entry.command {
                Command::Provide(_) => entry.accepted += 1,
                Command::FindProviders(_) => {
                    let limit = self.config.max_records_per_message;
                    for record in response.records.iter().take(limit) {
                        if let Ok(record) = PeerRecord::verify(record, now_ms) {
                            entry.found.entry(record.peer).or_insert(record);
                        }
                    }
                }
            },
            Err(error) => entry.last_error = Some(error),
        }
        self.maybe_finish(call);
    }

    fn maybe_finish(&mut self, call: CallId) {
        if self
            .calls
            .get(&call)
            .is_some_and(|c| c.outstanding.is_empty())
        {
            self.finish(call);
        }
    }

    fn finish(&mut self, call: CallId) {
        let Some(entry) = self.calls.remove(&call) else {
            return;
        };
        for waiting in self.dialing.values_mut() {
            waiting.retain(|c| *c != call);
        }
        self.dialing.retain(|_, waiting| !waiting.is_empty());
        let reply = match entry.command {
            Command::Provide(_) => Reply::Provided(entry.accepted),
            Command::FindProviders(_) => {
                if entry.found.is_empty()
                    && let Some(error) = entry.last_error
                {
                    Reply::Providers(Err(DiscoveryError::Unreachable(error)))
                } else {
                    Reply::Providers(Ok(entry.found.into_values().collect()))
                }
            }
        };
        self.push(Output::Reply { call, reply });
    }

    fn on_inbound(&mut self, id: InboundId, peer: PeerId, body: &[u8], now_ms: u64) {
        let result = match messages::decode_request(body, self.config.max_records_per_message) {
            Ok(request) => Ok(messages::encode_response(
                &self.on_request(peer, request, now_ms),
            )),
            Err(e) => {
                self.penalize(peer, format!("malformed discovery request: {e}"));
                Err((RefusalReason::BadRequest, e.to_string()))
            }
        };
        self.push(Output::Respond { id, result });
    }

    fn on_response(&mut self, id: OutboundId, peer: PeerId, body: &[u8], now_ms: u64) {
        let Some((_, outgoing)) = self.outgoing.remove(&id) else {
            return;
        };
        let response = messages::decode_response(body, self.config.max_records_per_message);
        if let Err(e) = &response {
            self.penalize(peer, format!("malformed discovery response: {e}"));
        }
        match (outgoing, response) {
            (Outgoing::Exchange, Ok(response)) => self.on_exchange_response(peer, response, now_ms),
            (Outgoing::Exchange, Err(_)) => self.on_exchange_failed(peer),
            (Outgoing::Call(call), response) => {
                self.call_part(call, peer, response.map_err(|e| e.to_string()), now_ms);
            }
        }
    }

    fn on_request_failed(&mut self, id: OutboundId, peer: PeerId, error: String, now_ms: u64) {
        tracing::debug!(target: "causality_discovery", peer = %peer, error, "discovery request failed");
        match self.outgoing.remove(&id) {
            Some((_, Outgoing::Exchange)) => self.on_exchange_failed(peer),
            Some((_, Outgoing::Call(call))) => self.call_part(call, peer, Err(error), now_ms),
            None => {}
        }
    }

    fn on_peer_connected(&mut self, peer: PeerId) {
        self.on_connected(peer);
        for call in self.dialing.remove(&peer).unwrap_or_default() {
            if let Some(body) = self.calls.get(&call).map(|c| c.request.clone()) {
                self.call_request(call, peer, body);
            }
        }
    }

    fn on_dial_error(&mut self, peer: PeerId, now_ms: u64) {
        self.on_dial_failed(peer);
        for call in self.dialing.remove(&peer).unwrap_or_default() {
            self.call_part(call, peer, Err(format!("cannot reach {peer}")), now_ms);
        }
    }

    fn refresh(&mut self, now_ms: u64) {
        if self.own_needs_refresh(now_ms) {
            self.resign(now_ms);
        }
        self.tick(now_ms);
        let interval = u64::try_from(self.config.refresh_interval.as_millis()).unwrap_or(u64::MAX);
        self.push(Output::Schedule {
            at_ms: now_ms.saturating_add(interval.max(1)),
            timer: Timer::Refresh,
        });
    }
}

impl Protocol for State {
    type Command = Command;
    type Reply = Reply;
    type Event = Event;
    type Timer = Timer;
    type View = ();

    fn protocols(&self) -> Vec<RequestProtocol> {
        vec![crate::protocol()]
    }

    fn handle(&mut self, now_ms: u64, input: Input<Self>) {
        match input {
            Input::Start | Input::Timer(Timer::Refresh) => self.refresh(now_ms),
            Input::Timer(Timer::Call(call)) => {
                if let Some(entry) = self.calls.get_mut(&call) {
                    entry.last_error = Some("no answer in time".into());
                    self.finish(call);
                }
            }
            Input::Command { command, call } => {
                let call = call.unwrap_or(CallId(u64::MAX));
                self.start_call(call, command, now_ms);
            }
            Input::Request { id, peer, body, .. } => self.on_inbound(id, peer, &body, now_ms),
            Input::Response { id, peer, body } => self.on_response(id, peer, &body, now_ms),
            Input::RequestFailed { id, peer, error } => {
                self.on_request_failed(id, peer, error.to_string(), now_ms);
            }
            Input::PeerConnected(peer) => self.on_peer_connected(peer),
            Input::PeerDisconnected(peer) => self.on_disconnected(peer),
            Input::DialFailed { peer, .. } => {
                if let Some(peer) = peer {
                    self.on_dial_error(peer, now_ms);
                }
            }
            Input::Message(_) | Input::View(()) => {}
        }
        if std::mem::take(&mut self.view_changed) {
            self.version += 1;
            let membership = self.membership();
            self.push(Output::Event(Event::Membership(membership)));
        }
    }

    fn poll_output(&mut self) -> Option<Output<Self>> {
        self.outputs.pop_front()
    }
}

fn content_id(bytes: &[u8]) -> Result<ContentId, ()> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| ())?;
    Ok(ContentId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use causality_net::{Keypair, NetError, default_hello};

    use super::*;

    const NOW: u64 = 1_000_000;

    fn record(n: u64, seq: u64, expires: u64) -> PeerRecord {
        let address: Multiaddr = format!("/memory/{n}").parse().unwrap();
        PeerRecord::sign_with(
            &Keypair::from_index(n),
            &default_hello(),
            vec![address],
            vec![],
            1000,
            seq,
            expires,
        )
    }

    fn state_of(n: u64, config: Config) -> State {
        State::with_record(
            config,
            Keypair::from_index(n),
            default_hello(),
            record(n, 1, NOW + 60_000),
        )
    }

    fn state(bootstrap: Vec<Multiaddr>) -> State {
        let config = Config {
            bootstrap,
            target_connections: 2,
            ..Config::default()
        };
        state_of(0, config)
    }

    fn drain(state: &mut State) -> Vec<Output<State>> {
        std::iter::from_fn(|| state.poll_output()).collect()
    }

    fn id(n: u64) -> PeerId {
        Keypair::from_index(n).peer_id()
    }

    fn dials(outputs: &[Output<State>]) -> Vec<(Option<PeerId>, Multiaddr)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Dial { peer, address } => Some((*peer, address.clone())),
                _ => None,
            })
            .collect()
    }

    fn left(outputs: &[Output<State>]) -> Vec<PeerId> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(Event::View(ViewEvent::Left(p))) => Some(*p),
                _ => None,
            })
            .collect()
    }

    /// The exchange requests among `outputs`: (id, to, records sent).
    fn exchanges(outputs: &[Output<State>]) -> Vec<(OutboundId, PeerId, Vec<PeerId>)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Request { id, peer, body, .. } => {
                    let request = messages::decode_request(body, 64).unwrap();
                    match request.kind {
                        Some(pb::request::Kind::Exchange(e)) => Some((
                            *id,
                            *peer,
                            e.records
                                .iter()
                                .map(|r| PeerId::from_bytes(&r.peer_id).unwrap())
                                .collect(),
                        )),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn newer_records_win_and_stale_ones_are_refused() {
        let mut s = state(vec![]);
        s.insert(&record(1, 5, NOW + 10_000).to_proto(), NOW)
            .unwrap();
        assert!(matches!(
            s.insert(&record(1, 4, NOW + 10_000).to_proto(), NOW),
            Err(RecordError::Stale { .. })
        ));
        s.insert(&record(1, 6, NOW + 10_000).to_proto(), NOW)
            .unwrap();
        assert_eq!(s.view()[0].seq, 6);
        assert!(matches!(
            s.insert(&record(2, 1, NOW).to_proto(), NOW),
            Err(RecordError::Expired(_))
        ));
        let mut forged = record(3, 1, NOW + 10_000).to_proto();
        forged.weight_milli = 5000;
        assert!(matches!(
            s.insert(&forged, NOW),
            Err(RecordError::BadSignature(_))
        ));
        let mut oversize = record(4, 1, NOW + 10_000).to_proto();
        oversize.addresses = vec!["/memory/1".into(); 17];
        assert!(matches!(s.insert(&oversize, NOW), Err(RecordError::Limits)));
        let events = drain(&mut s);
        assert_eq!(
            events
                .iter()
                .filter(|o| matches!(o, Output::Event(Event::View(ViewEvent::Joined(_)))))
                .count(),
            2
        );
    }

    #[test]
    fn alone_it_bootstraps_then_dials_toward_the_target_with_backoff() {
        let seed: Multiaddr = "/memory/99".parse().unwrap();
        let mut s = state(vec![seed.clone()]);
        s.handle(NOW, Input::Start);
        let outputs = drain(&mut s);
        assert_eq!(dials(&outputs), vec![(None, seed)]);
        // The next maintenance is scheduled one refresh interval later.
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::Schedule { at_ms, timer: Timer::Refresh } if *at_ms == NOW + 5_000
        )));
        for n in 1..=4 {
            s.insert(&record(n, 1, NOW + 60_000).to_proto(), NOW)
                .unwrap();
        }
        drain(&mut s);
        s.handle(NOW, Input::PeerConnected(id(1)));
        drain(&mut s);
        s.handle(NOW, Input::Timer(Timer::Refresh));
        let dialed: Vec<PeerId> = dials(&drain(&mut s))
            .into_iter()
            .filter_map(|(p, _)| p)
            .collect();
        assert_eq!(
            dialed.len(),
            1,
            "one more connection reaches the target of 2"
        );
        let dialed = dialed[0];
        // The dialed peer is not dialed again before its backoff (1 s ± 50%) expires...
        s.handle(NOW + 1, Input::Timer(Timer::Refresh));
        assert!(
            !dials(&drain(&mut s))
                .iter()
                .any(|(p, _)| *p == Some(dialed))
        );
        // ...and three failures drop it from the view.
        for _ in 0..3 {
            s.handle(
                NOW + 2,
                Input::DialFailed {
                    peer: Some(dialed),
                    address: "/memory/1".parse().unwrap(),
                },
            );
        }
        assert!(s.view().iter().all(|r| r.peer != dialed));
        assert!(left(&drain(&mut s)).contains(&dialed));
    }

    /// A node cut off from everyone (a partition) drops its peers as unreachable; the
    /// bootstrap node has no one else to dial. Before, it stayed alone after the heal, and
    /// the others, not alone, never dialed it again.
    #[test]
    fn alone_it_dials_again_the_peers_it_dropped_as_unreachable() {
        let mut s = state(Vec::new());
        s.handle(NOW, Input::Start);
        drain(&mut s);
        for n in 1..=3 {
            s.insert(&record(n, 1, NOW + 60_000).to_proto(), NOW)
                .unwrap();
        }
        drain(&mut s);
        for n in 1..=3 {
            for _ in 0..3 {
                s.handle(
                    NOW + 1,
                    Input::DialFailed {
                        peer: Some(id(n)),
                        address: "/memory/1".parse().unwrap(),
                    },
                );
            }
        }
        assert!(s.view().is_empty(), "all three dropped");
        drain(&mut s);
        s.handle(NOW + 2, Input::Timer(Timer::Refresh));
        let dialed: BTreeSet<PeerId> = dials(&drain(&mut s))
            .into_iter()
            .filter_map(|(p, _)| p)
            .collect();
        assert_eq!(
            dialed,
            (1..=3).map(id).collect(),
            "alone, it dials them again"
        );
        // A peer penalized meanwhile is not among them.
        s.handle(NOW + 3, Input::PeerConnected(id(1)));
        s.penalize(id(2), "test".into());
        s.handle(NOW + 3, Input::PeerDisconnected(id(1)));
        drain(&mut s);
        s.handle(NOW + 4, Input::Timer(Timer::Refresh));
        let dialed: BTreeSet<PeerId> = dials(&drain(&mut s))
            .into_iter()
            .filter_map(|(p, _)| p)
            .collect();
        assert!(!dialed.contains(&id(2)), "{dialed:?}");
        assert!(dialed.contains(&id(3)));
    }

    /// Connections that never send a record cannot push out the peers we chose. Before,
    /// they counted toward the target and the high-water mark, and only view peers were
    /// shed: nine silent inbound connections made every tick drop honest peers, and
    /// nothing was redialed.
    #[test]
    fn silent_connections_are_shed_before_the_peers_we_dialed() {
        let config = Config {
            target_connections: 4,
            ..Config::default()
        };
        let mut s = state_of(0, config);
        for n in 1..=4 {
            s.insert(&record(n, 1, NOW + 140_000).to_proto(), NOW)
                .unwrap();
        }
        drain(&mut s);
        s.handle(NOW, Input::Timer(Timer::Refresh));
        let dialed: Vec<PeerId> = dials(&drain(&mut s))
            .into_iter()
            .filter_map(|(p, _)| p)
            .collect();
        assert_eq!(dialed.len(), 4, "dials toward the target");
        for peer in &dialed {
            s.handle(NOW, Input::PeerConnected(*peer));
        }
        // Nine Sybils connect and never answer with a record.
        let sybils: Vec<PeerId> = (100..109).map(id).collect();
        for sybil in &sybils {
            s.handle(NOW, Input::PeerConnected(*sybil));
        }
        drain(&mut s);
        let mut shed = Vec::new();
        for tick in 1..=10 {
            s.handle(NOW + tick * 5_000, Input::Timer(Timer::Refresh));
            shed.extend(drain(&mut s).into_iter().filter_map(|o| match o {
                Output::Disconnect(p) => Some(p),
                _ => None,
            }));
        }
        assert!(
            shed.iter().all(|p| sybils.contains(p)),
            "only silent connections are shed: {shed:?}"
        );
        assert!(
            shed.len() >= 9 - 4,
            "down to the target at least ({} shed)",
            shed.len()
        );
        // Sybils that are still connected do not stop us dialing again when the peers we
        // chose are gone.
        let kept: Vec<PeerId> = sybils
            .iter()
            .filter(|p| !shed.contains(p))
            .copied()
            .collect();
        for sybil in &kept {
            assert!(s.is_connected(sybil));
        }
        for peer in &dialed {
            s.handle(NOW + 60_000, Input::PeerDisconnected(*peer));
        }
        s.handle(NOW + 100_000, Input::Timer(Timer::Refresh));
        let redialed = dials(&drain(&mut s));
        assert!(
            !redialed.is_empty(),
            "silent connections do not count toward the target"
        );
    }

    /// One source cannot fill the view first-come, nor one peer the provider table.
    /// Before, the view filled with whatever arrived first and the table had only its
    /// global cap.
    #[test]
    fn sources_and_providers_have_quotas() {
        let config = Config {
            max_records_per_source: 10,
            max_provided_per_peer: 5,
            ..Config::default()
        };
        let mut s = state_of(0, config);
        let records = |range: std::ops::Range<u64>, expires: u64| pb::Response {
            records: range.map(|n| record(n, 1, expires).to_proto()).collect(),
        };
        // A source's own record does not count; ten others do.
        let mut own_and_others = records(100..150, NOW + 60_000);
        own_and_others
            .records
            .push(record(1, 1, NOW + 60_000).to_proto());
        s.on_exchange_response(id(1), own_and_others, NOW);
        assert_eq!(s.view().len(), 11, "its own record and ten it introduced");
        s.on_exchange_response(id(2), records(200..230, NOW + 60_000), NOW);
        assert_eq!(s.view().len(), 21, "another source still has room");
        // Nobody was penalized for sending more than we keep.
        assert!(
            !drain(&mut s)
                .iter()
                .any(|o| matches!(o, Output::Penalize { .. }))
        );
        // When a record leaves, its source's quota frees up.
        s.tick(NOW + 61_000);
        s.on_exchange_response(id(3), records(300..310, NOW + 120_000), NOW + 61_000);
        assert_eq!(s.view().len(), 10);

        for n in 0..20u64 {
            let content = ContentId::of(&n.to_le_bytes());
            s.add_provider(content, id(7), NOW);
            s.add_provider(content, id(8), NOW);
        }
        let provided = |s: &State, p: PeerId| {
            (0..20u64)
                .filter(|n| {
                    s.local_providers(&ContentId::of(&n.to_le_bytes()), NOW)
                        .iter()
                        .any(|r| r.peer == p)
                })
                .count()
        };
        // Providers are found by record; give both one.
        s.insert(&record(7, 1, NOW + 100_000).to_proto(), NOW)
            .unwrap();
        s.insert(&record(8, 1, NOW + 100_000).to_proto(), NOW)
            .unwrap();
        assert_eq!(provided(&s, id(7)), 5);
        assert_eq!(provided(&s, id(8)), 5);
    }

    #[test]
    fn expired_records_leave_and_exchanges_carry_our_record_first() {
        let mut s = state(vec![]);
        s.insert(&record(1, 1, NOW + 1_000).to_proto(), NOW)
            .unwrap();
        s.insert(&record(2, 1, NOW + 100_000).to_proto(), NOW)
            .unwrap();
        s.handle(NOW, Input::PeerConnected(id(2)));
        drain(&mut s);
        s.handle(NOW + 2_000, Input::Timer(Timer::Refresh));
        let outputs = drain(&mut s);
        assert!(left(&outputs).contains(&id(1)));
        let exchange = exchanges(&outputs);
        assert_eq!(exchange[0].2[0], id(0));
    }

    fn weighted_record(n: u64, weight_milli: u32, expires: u64) -> PeerRecord {
        let address: Multiaddr = format!("/memory/{n}").parse().unwrap();
        PeerRecord::sign_with(
            &Keypair::from_index(n),
            &default_hello(),
            vec![address],
            vec![],
            weight_milli,
            1,
            expires,
        )
    }

    /// Three identities claiming the largest weight must not capture the rendezvous keys:
    /// weights are local policy, a record's own claim is ignored.
    #[test]
    fn claimed_weights_do_not_capture_rendezvous() {
        let mut s = state(vec![]);
        for n in 1..=20 {
            s.insert(&record(n, 1, NOW + 100_000).to_proto(), NOW)
                .unwrap();
        }
        let sybils: Vec<PeerId> = (100..103)
            .map(|n| {
                s.insert(&weighted_record(n, u32::MAX, NOW + 100_000).to_proto(), NOW)
                    .unwrap()
            })
            .collect();
        let keys = 3_000u32;
        let captured = (0..keys)
            .filter(|k| {
                let winner = s.responsible_peers(&k.to_le_bytes(), 1, &|_| true)[0].peer;
                sybils.contains(&winner)
            })
            .count();
        // Fair share: 3 of 24 peers (ourselves included) = 12.5 %.
        let share = captured as f64 / f64::from(keys);
        assert!(
            share < 0.2,
            "three heavy records won {share:.3} of the keys"
        );
        // An operator's weight does count, capped at 100x.
        let config = Config {
            weights: [(sybils[0], u32::MAX)].into_iter().collect(),
            ..Config::default()
        };
        let mut weighted = state_of(0, config);
        for n in 1..=20 {
            weighted
                .insert(&record(n, 1, NOW + 100_000).to_proto(), NOW)
                .unwrap();
        }
        weighted
            .insert(&weighted_record(100, 1000, NOW + 100_000).to_proto(), NOW)
            .unwrap();
        let heavy = (0..keys)
            .filter(|k| {
                weighted.responsible_peers(&k.to_le_bytes(), 1, &|_| true)[0].peer == sybils[0]
            })
            .count() as f64
            / f64::from(keys);
        // 100 / (100 + 21) ≈ 0.83 of the keys.
        assert!(
            (heavy - 100.0 / 121.0).abs() < 0.05,
            "weighted share {heavy:.3}"
        );
    }

    /// A record may expire at most a lifetime plus the skew bound from now: one that claims
    /// ten years would never leave the view.
    #[test]
    fn records_expiring_too_late_are_refused() {
        let mut s = state(vec![]);
        let ten_years = NOW + 10 * 365 * 24 * 3_600_000;
        assert!(matches!(
            s.insert(&record(1, 1, ten_years).to_proto(), NOW),
            Err(RecordError::ExpiresTooLate { .. })
        ));
        // A lifetime plus 30 s of skew is fine; a little more is not.
        let limit = NOW + 120_000 + 30_000;
        s.insert(&record(2, 1, limit).to_proto(), NOW).unwrap();
        assert!(s.insert(&record(3, 1, limit + 1).to_proto(), NOW).is_err());
        assert!(
            RecordError::ExpiresTooLate {
                peer: id(1),
                expires_at_ms: 0,
                latest: 0
            }
            .is_forgery()
        );
    }

    #[test]
    fn settings_out_of_range_are_named() {
        assert!(Config::default().validate().is_ok());
        let bad = Config {
            record_ttl: Duration::from_secs(5),
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().field(), "record_ttl");
        let bad = Config {
            max_records_per_message: 1,
            ..Config::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().field(),
            "max_records_per_message"
        );
    }

    #[test]
    fn our_record_is_re_signed_at_half_its_lifetime() {
        let config = Config {
            record_ttl: Duration::from_secs(120),
            ..Config::default()
        };
        let mut s = State::new(config, Keypair::from_index(0), default_hello(), vec![], NOW);
        assert_eq!(s.own().seq, NOW);
        assert_eq!(s.own().expires_at_ms, NOW + 120_000);
        s.handle(NOW + 59_000, Input::Timer(Timer::Refresh));
        assert_eq!(s.own().seq, NOW, "not yet at half");
        s.handle(NOW + 61_000, Input::Timer(Timer::Refresh));
        assert_eq!(s.own().seq, NOW + 61_000);
        assert_eq!(s.own().expires_at_ms, NOW + 181_000);
        // It verifies, and a membership snapshot with the new record went out.
        PeerRecord::verify(&s.own().to_proto(), NOW + 61_000).unwrap();
        assert!(drain(&mut s).iter().any(|o| matches!(
            o,
            Output::Event(Event::Membership(m)) if m.own.seq == NOW + 61_000
        )));
    }

    #[test]
    fn exchanges_carry_only_what_the_partner_lacks() {
        let mut s = state(vec![]);
        for n in 1..=5 {
            s.insert(&record(n, 1, NOW + 100_000).to_proto(), NOW)
                .unwrap();
        }
        let partner = record(9, 1, NOW + 100_000);
        // First contact: our record and the whole view (never the partner's own).
        s.handle(NOW, Input::PeerConnected(partner.peer));
        let first = exchanges(&drain(&mut s));
        assert_eq!(first[0].2.len(), 6);
        assert_eq!(first[0].2[0], id(0));
        let exchange = |s: &mut State, records: Vec<pb::PeerRecord>| -> Vec<PeerId> {
            let request = pb::Request {
                kind: Some(pb::request::Kind::Exchange(pb::Exchange { records })),
            };
            let response = s.on_request(partner.peer, request, NOW);
            response
                .records
                .iter()
                .map(|r| PeerId::from_bytes(&r.peer_id).unwrap())
                .collect()
        };
        // Nothing changed: nothing to send.
        assert_eq!(exchange(&mut s, vec![partner.to_proto()]), vec![]);
        // A refreshed record, and one the partner told us about, which it need not get back.
        s.insert(&record(3, 2, NOW + 100_000).to_proto(), NOW)
            .unwrap();
        let learned = record(7, 1, NOW + 100_000);
        assert_eq!(exchange(&mut s, vec![learned.to_proto()]), vec![id(3)]);
        assert_eq!(exchange(&mut s, vec![]), vec![]);
        // After a reconnection the partner may have forgotten: everything again (7 now).
        s.handle(NOW, Input::PeerDisconnected(partner.peer));
        s.handle(NOW, Input::PeerConnected(partner.peer));
        s.handle(NOW, Input::Timer(Timer::Refresh));
        let again = exchanges(&drain(&mut s));
        assert_eq!(
            again.iter().find(|e| e.1 == partner.peer).unwrap().2.len(),
            7
        );
        assert_eq!(exchange(&mut s, vec![]), vec![]);
        // A failed exchange forgets too.
        let (request, ..) = again[0];
        s.handle(
            NOW,
            Input::RequestFailed {
                id: request,
                peer: partner.peer,
                error: NetError::Timeout {
                    peer: partner.peer,
                    protocol: crate::PROTOCOL.into(),
                },
            },
        );
        assert_eq!(exchange(&mut s, vec![]).len(), 7);
    }

    #[test]
    fn responsible_peers_are_the_same_for_the_same_view() {
        let mut a = state(vec![]);
        let mut b = state_of(5, Config::default());
        for n in 0..10 {
            a.insert(&record(n, 1, NOW + 60_000).to_proto(), NOW)
                .unwrap();
            b.insert(&record(n, 1, NOW + 60_000).to_proto(), NOW)
                .unwrap();
        }
        for key in 0u32..200 {
            let key = key.to_le_bytes();
            let pa: Vec<_> = a
                .responsible_peers(&key, 3, &|_| true)
                .into_iter()
                .map(|r| r.peer)
                .collect();
            let pb: Vec<_> = b
                .responsible_peers(&key, 3, &|_| true)
                .into_iter()
                .map(|r| r.peer)
                .collect();
            assert_eq!(pa, pb);
            // The snapshot answers the same.
            let pm: Vec<_> = a
                .membership()
                .responsible_peers(&key, 3, &|_| true)
                .into_iter()
                .map(|r| r.peer)
                .collect();
            assert_eq!(pa, pm);
        }
    }

    /// A view of peers 1..=5 (ourselves 0) where peer 1 is connected.
    fn five() -> State {
        let mut s = state(vec![]);
        for n in 1..=5 {
            s.insert(&record(n, 1, NOW + 100_000).to_proto(), NOW)
                .unwrap();
        }
        s.handle(NOW, Input::PeerConnected(id(1)));
        drain(&mut s);
        s
    }

    fn replies(outputs: &[Output<State>]) -> Vec<(CallId, &Reply)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Reply { call, reply } => Some((*call, reply)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn provide_asks_connected_rendezvous_peers_and_dials_the_others() {
        let mut s = five();
        let content = ContentId::of(b"content");
        let targets: Vec<PeerId> = s
            .responsible_peers(content.as_bytes(), 3, &|_| true)
            .iter()
            .map(|r| r.peer)
            .collect();
        let call = CallId(1);
        s.handle(
            NOW,
            Input::Command {
                command: Command::Provide(content),
                call: Some(call),
            },
        );
        let outputs = drain(&mut s);
        let requested: Vec<(OutboundId, PeerId)> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Request { id, peer, .. } => Some((*id, *peer)),
                _ => None,
            })
            .collect();
        let dialed: Vec<PeerId> = dials(&outputs).into_iter().filter_map(|(p, _)| p).collect();
        let remote: Vec<PeerId> = targets.iter().copied().filter(|p| *p != id(0)).collect();
        for peer in &remote {
            assert!(
                requested.iter().any(|(_, p)| p == peer) != dialed.contains(peer),
                "each rendezvous peer is asked now (connected) or dialed first"
            );
        }
        // The deadline is set 15 s out.
        assert!(outputs.iter().any(|o| matches!(
            o,
            Output::Schedule { at_ms, timer: Timer::Call(c) } if *at_ms == NOW + 15_000 && *c == call
        )));
        // Dialed peers connect and are asked; one answers, one never connects.
        let local = usize::from(targets.contains(&id(0)));
        for peer in &dialed[..dialed.len().min(1)] {
            s.handle(NOW + 10, Input::PeerConnected(*peer));
        }
        let more: Vec<(OutboundId, PeerId)> = drain(&mut s)
            .iter()
            .filter_map(|o| match o {
                Output::Request { id, peer, .. } => Some((*id, *peer)),
                _ => None,
            })
            .collect();
        let answered: Vec<(OutboundId, PeerId)> = requested.iter().chain(&more).copied().collect();
        let empty = messages::encode_response(&pb::Response::default());
        for (request, peer) in &answered {
            s.handle(
                NOW + 20,
                Input::Response {
                    id: *request,
                    peer: *peer,
                    body: empty.clone(),
                },
            );
        }
        let outputs = drain(&mut s);
        let pending = remote.len() - answered.len();
        if pending == 0 {
            assert!(
                matches!(replies(&outputs)[..], [(c, Reply::Provided(n))] if c == call && *n == answered.len() + local)
            );
        } else {
            assert!(replies(&outputs).is_empty(), "still waiting for {pending}");
            // The deadline answers with what there is.
            s.handle(NOW + 15_000, Input::Timer(Timer::Call(call)));
            let outputs = drain(&mut s);
            assert!(
                matches!(replies(&outputs)[..], [(c, Reply::Provided(n))] if c == call && *n == answered.len() + local)
            );
        }
    }

    #[test]
    fn find_providers_merges_verified_answers_and_penalizes_malformed_ones() {
        let mut s = five();
        for n in 2..=5 {
            s.handle(NOW, Input::PeerConnected(id(n)));
        }
        drain(&mut s);
        let content = ContentId::of(b"wanted");
        s.handle(
            NOW,
            Input::Command {
                command: Command::FindProviders(content),
                call: Some(CallId(7)),
            },
        );
        let requests: Vec<(OutboundId, PeerId)> = drain(&mut s)
            .iter()
            .filter_map(|o| match o {
                Output::Request { id, peer, .. } => Some((*id, *peer)),
                _ => None,
            })
            .collect();
        assert!(!requests.is_empty());
        let provider = record(42, 3, NOW + 60_000);
        let mut forged = record(43, 3, NOW + 60_000).to_proto();
        forged.signature[0] ^= 1;
        let answer = messages::encode_response(&pb::Response {
            records: vec![provider.to_proto(), forged, provider.to_proto()],
        });
        let (first, rest) = requests.split_first().unwrap();
        s.handle(
            NOW + 5,
            Input::Response {
                id: first.0,
                peer: first.1,
                body: answer,
            },
        );
        for (i, (request, peer)) in rest.iter().enumerate() {
            if i == 0 {
                s.handle(
                    NOW + 5,
                    Input::Response {
                        id: *request,
                        peer: *peer,
                        body: b"\xff\xff not protobuf".to_vec(),
                    },
                );
            } else {
                s.handle(
                    NOW + 5,
                    Input::RequestFailed {
                        id: *request,
                        peer: *peer,
                        error: NetError::NotConnected(*peer),
                    },
                );
            }
        }
        let outputs = drain(&mut s);
        let providers: Vec<PeerId> = match replies(&outputs)[..] {
            [(CallId(7), Reply::Providers(Ok(found)))] => found.iter().map(|r| r.peer).collect(),
            ref other => panic!("unexpected replies {other:?}"),
        };
        assert_eq!(
            providers,
            vec![provider.peer],
            "verified, deduplicated, forged dropped"
        );
        if !rest.is_empty() {
            assert!(outputs.iter().any(|o| matches!(
                o,
                Output::Penalize { peer, severity: Severity::Severe, .. } if *peer == rest[0].1
            )));
        }
    }

    #[test]
    fn malformed_and_oversize_requests_are_refused_and_penalized() {
        let mut s = five();
        s.handle(
            NOW,
            Input::Request {
                id: InboundId(1),
                peer: id(1),
                protocol: crate::PROTOCOL.into(),
                body: b"\x0a\xff\xff\xff\xff\x0f".to_vec(),
            },
        );
        let huge = vec![0u8; messages::max_body(64) + 1];
        s.handle(
            NOW,
            Input::Request {
                id: InboundId(2),
                peer: id(2),
                protocol: crate::PROTOCOL.into(),
                body: huge,
            },
        );
        let outputs = drain(&mut s);
        for (request, peer) in [(1, id(1)), (2, id(2))] {
            assert!(outputs.iter().any(|o| matches!(
                o,
                Output::Respond { id: InboundId(i), result: Err((RefusalReason::BadRequest, _)) } if *i == request
            )));
            assert!(outputs.iter().any(|o| matches!(
                o,
                Output::Penalize { peer: p, severity: Severity::Severe, .. } if *p == peer
            )));
        }
    }
}
