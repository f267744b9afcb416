//! The discovery state machine: no I/O, no clock, no tasks. Inputs carry the time; outputs
//! say what to send and dial. [`crate::Discovery`] drives it over a `Network`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use causality_hash::{ContentId, Rendezvous};
use causality_net::{Multiaddr, PeerId};
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

use crate::error::RecordError;
use crate::proto::v1 as pb;
use crate::record::PeerRecord;

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
    /// Our weight in thousandths.
    pub weight_milli: u32,
    /// Rendezvous peers a content id is provided to and looked up at.
    pub replication: usize,
    /// Lifetime of a provider registration.
    pub provider_ttl: Duration,
    /// Most provider registrations held.
    pub max_providers: usize,
    /// Seed for the RNG choosing exchange partners and jitter.
    pub seed: u64,
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
            replication: 3,
            provider_ttl: Duration::from_secs(600),
            max_providers: 100_000,
            seed: 0,
        }
    }
}

/// A change in the live view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewEvent {
    /// A peer entered the view (or its record changed).
    Joined(PeerRecord),
    /// A peer left the view: expired, unreachable or replaced.
    Left(PeerId),
}

/// What the state machine asks its driver to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Dial this address (a known peer, or a bootstrap address when `peer` is `None`).
    Dial {
        /// The peer, when known.
        peer: Option<PeerId>,
        /// Where.
        address: Multiaddr,
    },
    /// Send a request to a connected peer.
    Request {
        /// To whom.
        peer: PeerId,
        /// What.
        request: pb::Request,
    },
    /// Close the connection to a peer (the node holds too many).
    Disconnect {
        /// Whom.
        peer: PeerId,
    },
    /// Penalize a peer for sending forged data.
    Penalize {
        /// Whom.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// Report a view change.
    Event(ViewEvent),
}

#[derive(Debug)]
struct Known {
    record: PeerRecord,
    /// When we last received a newer version (or first learned it), ms.
    updated_ms: u64,
    connected: bool,
    failures: u32,
    next_dial_ms: u64,
}

/// A filter over peer records for [`State::responsible_peers`].
pub type RecordFilter<'a> = &'a dyn Fn(&PeerRecord) -> bool;

/// The discovery state machine.
#[derive(Debug)]
pub struct State {
    config: Config,
    local: PeerId,
    own: PeerRecord,
    view: BTreeMap<PeerId, Known>,
    /// Connected peers not (yet) in the view: bootstrap peers before their record arrives.
    connected_unknown: BTreeMap<PeerId, ()>,
    providers: HashMap<ContentId, BTreeMap<PeerId, u64>>,
    provider_count: usize,
    /// For each peer we exchange with while connected: the record versions (owner → seq)
    /// it holds, from what we sent it and what it sent us. Exchanges carry only records a
    /// partner lacks, so a settled view costs almost nothing to maintain. Forgotten when
    /// the connection closes or an exchange fails; owners leaving the view are dropped,
    /// and a map is cleared past twice the view's capacity, so each stays bounded.
    told: HashMap<PeerId, HashMap<PeerId, u64>>,
    hrw: Rendezvous,
    rng: ChaCha20Rng,
    outputs: VecDeque<Output>,
}

impl State {
    /// A state machine for the node whose current signed record is `own`.
    pub fn new(config: Config, own: PeerRecord) -> Self {
        Self {
            local: own.peer,
            hrw: Rendezvous::for_epoch(config.epoch),
            rng: ChaCha20Rng::seed_from_u64(
                config.seed
                    ^ u64::from_le_bytes(own.peer.as_bytes()[..8].try_into().expect("8 bytes")),
            ),
            own,
            view: BTreeMap::new(),
            connected_unknown: BTreeMap::new(),
            providers: HashMap::new(),
            provider_count: 0,
            told: HashMap::new(),
            config,
            outputs: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Our own record.
    pub fn own(&self) -> &PeerRecord {
        &self.own
    }

    /// Replaces our own record (after re-signing with a higher sequence number).
    pub fn set_own(&mut self, own: PeerRecord) {
        self.own = own;
    }

    /// Whether our record should be re-signed now.
    pub fn own_needs_refresh(&self, now_ms: u64) -> bool {
        let half = u64::try_from(self.config.record_ttl.as_millis() / 2).unwrap_or(u64::MAX);
        self.own.expires_at_ms.saturating_sub(now_ms) < half
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Every record in the view (not our own), by peer id.
    pub fn view(&self) -> Vec<PeerRecord> {
        self.view.values().map(|k| k.record.clone()).collect()
    }

    /// Peers in the view, plus ourselves.
    pub fn members(&self) -> Vec<PeerId> {
        let mut members: Vec<PeerId> = self.view.keys().copied().collect();
        members.push(self.local);
        members.sort();
        members
    }

    /// Connected peers (with or without a record).
    pub fn connected(&self) -> usize {
        self.view.values().filter(|k| k.connected).count() + self.connected_unknown.len()
    }

    /// The `k` peers (possibly including ourselves) responsible for `key`: weighted HRW top-k
    /// over the live view salted by the epoch, among records passing `filter`.
    pub fn responsible_peers(
        &self,
        key: &[u8],
        k: usize,
        filter: RecordFilter<'_>,
    ) -> Vec<PeerRecord> {
        struct Candidate<'a> {
            record: &'a PeerRecord,
        }
        impl AsRef<[u8]> for Candidate<'_> {
            fn as_ref(&self) -> &[u8] {
                self.record.peer.as_bytes()
            }
        }
        let candidates: Vec<Candidate<'_>> = std::iter::once(&self.own)
            .chain(self.view.values().map(|known| &known.record))
            .filter(|r| filter(r))
            .map(|record| Candidate { record })
            .collect();
        self.hrw
            .top_k_weighted(key, &candidates, k, |c| c.record.weight())
            .into_iter()
            .map(|c| c.record.clone())
            .collect()
    }

    // ----- inputs -----

    /// Periodic maintenance at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        // Expire records and providers.
        let expired: Vec<PeerId> = self
            .view
            .iter()
            .filter(|(_, k)| k.record.expires_at_ms <= now_ms)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.remove(peer);
        }
        let mut removed = 0;
        self.providers.retain(|_, providers| {
            let before = providers.len();
            providers.retain(|_, expiry| *expiry > now_ms);
            removed += before - providers.len();
            !providers.is_empty()
        });
        self.provider_count -= removed;

        // Re-bootstrap when we are alone.
        if self.connected() == 0 {
            for address in self.config.bootstrap.clone() {
                self.outputs.push_back(Output::Dial {
                    peer: None,
                    address,
                });
            }
        }

        // Dial toward the target.
        let want = self
            .config
            .target_connections
            .saturating_sub(self.connected());
        if want > 0 {
            let mut candidates: Vec<PeerId> = self
                .view
                .iter()
                .filter(|(_, k)| {
                    !k.connected && k.next_dial_ms <= now_ms && !k.record.addresses.is_empty()
                })
                .map(|(p, _)| *p)
                .collect();
            candidates.shuffle(&mut self.rng);
            for peer in candidates.into_iter().take(want) {
                let backoff = self.backoff(self.view[&peer].failures);
                let known = self.view.get_mut(&peer).expect("candidate is known");
                known.next_dial_ms = now_ms + backoff;
                let address = known.record.addresses[0].clone();
                self.outputs.push_back(Output::Dial {
                    peer: Some(peer),
                    address,
                });
            }
        }

        // Shed connections far above the target, so well-known peers (bootstrap nodes
        // above all) keep room for newcomers. Only peers whose records we hold are shed:
        // they have already exchanged and can be found again.
        let high_water = self.config.target_connections.saturating_mul(2).max(1);
        let connected = self.connected();
        if connected > high_water {
            let mut sheddable: Vec<PeerId> = self
                .view
                .iter()
                .filter(|(_, k)| k.connected)
                .map(|(p, _)| *p)
                .collect();
            sheddable.shuffle(&mut self.rng);
            for peer in sheddable
                .into_iter()
                .take(connected - self.config.target_connections)
            {
                if let Some(known) = self.view.get_mut(&peer) {
                    known.connected = false;
                }
                self.outputs.push_back(Output::Disconnect { peer });
            }
        }

        // Exchange with a few connected peers.
        let mut partners: Vec<PeerId> = self
            .view
            .iter()
            .filter(|(_, k)| k.connected)
            .map(|(p, _)| *p)
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
        self.outputs.push_back(Output::Request {
            peer,
            request: pb::Request {
                kind: Some(pb::request::Kind::Exchange(pb::Exchange { records })),
            },
        });
    }

    /// Our record, then up to `n` records of the view (not `partner`'s own), leaving out
    /// the versions `partner` already holds: the most recently updated half first, so
    /// refreshed records spread fast, then a random sample. What is sent is remembered.
    fn sample(&mut self, n: usize, partner: PeerId) -> Vec<pb::PeerRecord> {
        let told = self.told.get(&partner);
        let lacks = |owner: &PeerId, seq: u64| {
            told.and_then(|t| t.get(owner))
                .is_none_or(|&held| held < seq)
        };
        let mut peers: Vec<(u64, PeerId)> = self
            .view
            .iter()
            .filter(|(p, k)| **p != partner && lacks(p, k.record.seq))
            .map(|(p, k)| (k.updated_ms, *p))
            .collect();
        let own = lacks(&self.local, self.own.seq);
        peers.sort_unstable_by(|a, b| b.cmp(a));
        let fresh = (n / 2).min(peers.len());
        let (recent, rest) = peers.split_at_mut(fresh);
        rest.shuffle(&mut self.rng);
        let chosen: Vec<&PeerRecord> = own
            .then_some(&self.own)
            .into_iter()
            .chain(
                recent
                    .iter()
                    .chain(rest.iter())
                    .take(n)
                    .map(|(_, p)| &self.view[p].record),
            )
            .collect();
        let records = chosen.iter().map(|r| r.to_proto()).collect();
        let sent: Vec<(PeerId, u64)> = chosen.iter().map(|r| (r.peer, r.seq)).collect();
        if self.is_connected(&partner) {
            self.told.entry(partner).or_default().extend(sent);
        }
        records
    }

    /// Whether a connection to `peer` is up (only then is what it holds remembered).
    fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected_unknown.contains_key(peer)
            || self.view.get(peer).is_some_and(|k| k.connected)
    }

    /// A connection to `peer` is up.
    pub fn on_connected(&mut self, peer: PeerId) {
        match self.view.get_mut(&peer) {
            Some(known) => {
                known.connected = true;
                known.failures = 0;
            }
            None => {
                self.connected_unknown.insert(peer, ());
                // Learn its record (and its view) right away.
                self.exchange_with(peer);
            }
        }
    }

    /// The connection to `peer` closed.
    pub fn on_disconnected(&mut self, peer: PeerId) {
        self.connected_unknown.remove(&peer);
        self.told.remove(&peer);
        if let Some(known) = self.view.get_mut(&peer) {
            known.connected = false;
        }
    }

    /// Dialing `peer` failed; after enough failures it leaves the view.
    pub fn on_dial_failed(&mut self, peer: PeerId) {
        let Some(known) = self.view.get_mut(&peer) else {
            return;
        };
        if known.connected {
            return;
        }
        known.failures += 1;
        if known.failures >= self.config.max_dial_failures {
            tracing::debug!(target: "causality_discovery", peer = %peer, "dropping unreachable peer");
            self.remove(peer);
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
        self.told.remove(&peer);
    }

    /// Registers `provider` for `id` locally.
    pub fn add_provider(&mut self, id: ContentId, provider: PeerId, now_ms: u64) {
        let expiry =
            now_ms + u64::try_from(self.config.provider_ttl.as_millis()).unwrap_or(u64::MAX);
        let entry = self.providers.entry(id).or_default();
        if !entry.contains_key(&provider) {
            if self.provider_count >= self.config.max_providers {
                tracing::debug!(target: "causality_discovery", "provider table full; registration dropped");
                return;
            }
            self.provider_count += 1;
        }
        entry.insert(provider, expiry);
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
                    self.view.get(peer).map(|k| k.record.clone())
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
            let result = self.insert(&record, now_ms);
            if matches!(result, Ok(()) | Err(RecordError::Stale { .. }))
                && self.is_connected(&from)
                && let Ok(owner) = PeerId::from_bytes(&record.peer_id)
            {
                // `from` holds this version (or a newer one): no need to send it back.
                let held = self.told.entry(from).or_default();
                if held.len() >= self.config.max_records.saturating_mul(2) {
                    // Owners we do not keep (a full view): forget, at worst resend.
                    held.clear();
                }
                let seq = held.entry(owner).or_default();
                *seq = (*seq).max(record.seq);
            }
            match result {
                Ok(()) => {}
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
        self.outputs.push_back(Output::Penalize { peer, reason });
    }

    /// Verifies and merges one record.
    pub fn insert(&mut self, record: &pb::PeerRecord, now_ms: u64) -> Result<(), RecordError> {
        // Cheap checks first: a record identical to the one we hold needs no verification.
        if let Some(known) = self
            .view
            .get(&PeerId::from_bytes(&record.peer_id).map_err(|_| RecordError::BadPeerId)?)
            && (record.seq < known.record.seq
                || (record.seq == known.record.seq && record.signature == known.record.signature()))
        {
            return Err(RecordError::Stale {
                peer: known.record.peer,
                seq: record.seq,
                have: known.record.seq,
            });
        }
        let record = PeerRecord::verify(record, now_ms)?;
        if record.peer == self.local {
            return Ok(());
        }
        if let Some(known) = self.view.get_mut(&record.peer) {
            if record.seq <= known.record.seq {
                return Err(RecordError::Stale {
                    peer: record.peer,
                    seq: record.seq,
                    have: known.record.seq,
                });
            }
            known.record = record.clone();
            known.updated_ms = now_ms;
            self.outputs
                .push_back(Output::Event(ViewEvent::Joined(record)));
            return Ok(());
        }
        if self.view.len() >= self.config.max_records {
            tracing::debug!(target: "causality_discovery", "view full; record dropped");
            return Ok(());
        }
        let connected = self.connected_unknown.remove(&record.peer).is_some();
        self.view.insert(
            record.peer,
            Known {
                record: record.clone(),
                updated_ms: now_ms,
                connected,
                failures: 0,
                next_dial_ms: 0,
            },
        );
        self.outputs
            .push_back(Output::Event(ViewEvent::Joined(record)));
        Ok(())
    }

    fn remove(&mut self, peer: PeerId) {
        for held in self.told.values_mut() {
            held.remove(&peer);
        }
        if let Some(known) = self.view.remove(&peer) {
            if known.connected {
                self.connected_unknown.insert(peer, ());
            }
            self.outputs.push_back(Output::Event(ViewEvent::Left(peer)));
        }
    }
}

fn content_id(bytes: &[u8]) -> Result<ContentId, ()> {
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| ())?;
    Ok(ContentId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use causality_net::{Keypair, default_hello};

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

    fn state(bootstrap: Vec<Multiaddr>) -> State {
        let config = Config {
            bootstrap,
            target_connections: 2,
            ..Config::default()
        };
        State::new(config, record(0, 1, NOW + 60_000))
    }

    fn drain(state: &mut State) -> Vec<Output> {
        std::iter::from_fn(|| state.poll_output()).collect()
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
                .filter(|o| matches!(o, Output::Event(ViewEvent::Joined(_))))
                .count(),
            2
        );
    }

    #[test]
    fn alone_it_bootstraps_then_dials_toward_the_target_with_backoff() {
        let seed: Multiaddr = "/memory/99".parse().unwrap();
        let mut s = state(vec![seed.clone()]);
        s.tick(NOW);
        assert_eq!(
            drain(&mut s),
            vec![Output::Dial {
                peer: None,
                address: seed
            }]
        );
        for n in 1..=4 {
            s.insert(&record(n, 1, NOW + 60_000).to_proto(), NOW)
                .unwrap();
        }
        drain(&mut s);
        s.on_connected(Keypair::from_index(1).peer_id());
        drain(&mut s);
        s.tick(NOW);
        let dials: Vec<_> = drain(&mut s)
            .into_iter()
            .filter(|o| matches!(o, Output::Dial { peer: Some(_), .. }))
            .collect();
        assert_eq!(
            dials.len(),
            1,
            "one more connection reaches the target of 2"
        );
        // The dialed peer is not dialed again before its backoff expires.
        let Output::Dial {
            peer: Some(dialed), ..
        } = dials[0]
        else {
            unreachable!()
        };
        s.tick(NOW + 1);
        assert!(
            drain(&mut s)
                .iter()
                .all(|o| !matches!(o, Output::Dial { peer: Some(p), .. } if *p == dialed))
        );
        // Three failures drop it from the view.
        for _ in 0..3 {
            s.on_dial_failed(dialed);
        }
        assert!(s.view().iter().all(|r| r.peer != dialed));
        assert!(drain(&mut s).contains(&Output::Event(ViewEvent::Left(dialed))));
    }

    #[test]
    fn expired_records_leave_and_exchanges_carry_our_record_first() {
        let mut s = state(vec![]);
        s.insert(&record(1, 1, NOW + 1_000).to_proto(), NOW)
            .unwrap();
        s.insert(&record(2, 1, NOW + 100_000).to_proto(), NOW)
            .unwrap();
        s.on_connected(Keypair::from_index(2).peer_id());
        drain(&mut s);
        s.tick(NOW + 2_000);
        let outputs = drain(&mut s);
        assert!(outputs.contains(&Output::Event(ViewEvent::Left(
            Keypair::from_index(1).peer_id()
        ))));
        let exchange = outputs.iter().find_map(|o| match o {
            Output::Request {
                request:
                    pb::Request {
                        kind: Some(pb::request::Kind::Exchange(e)),
                    },
                ..
            } => Some(e),
            _ => None,
        });
        assert_eq!(
            exchange.unwrap().records[0].peer_id,
            Keypair::from_index(0).peer_id().as_bytes()
        );
    }

    #[test]
    fn exchanges_carry_only_what_the_partner_lacks() {
        let mut s = state(vec![]);
        for n in 1..=5 {
            s.insert(&record(n, 1, NOW + 100_000).to_proto(), NOW)
                .unwrap();
        }
        let partner = record(9, 1, NOW + 100_000);
        let id = |n| Keypair::from_index(n).peer_id();
        let sent = |outputs: Vec<Output>| -> Vec<PeerId> {
            outputs
                .into_iter()
                .find_map(|o| match o {
                    Output::Request {
                        request:
                            pb::Request {
                                kind: Some(pb::request::Kind::Exchange(e)),
                            },
                        ..
                    } => Some(e.records),
                    _ => None,
                })
                .unwrap()
                .iter()
                .map(|r| PeerId::from_bytes(&r.peer_id).unwrap())
                .collect()
        };
        // First contact: our record and the whole view (never the partner's own).
        s.on_connected(partner.peer);
        let first = sent(drain(&mut s));
        assert_eq!(first.len(), 6);
        assert_eq!(first[0], id(0));
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
        s.on_disconnected(partner.peer);
        s.on_connected(partner.peer);
        s.tick(NOW);
        assert_eq!(sent(drain(&mut s)).len(), 7);
        assert_eq!(exchange(&mut s, vec![]), vec![]);
        // A failed exchange forgets too.
        s.on_exchange_failed(partner.peer);
        assert_eq!(exchange(&mut s, vec![]).len(), 7);
    }

    #[test]
    fn responsible_peers_are_the_same_for_the_same_view() {
        let mut a = state(vec![]);
        let mut b = State::new(Config::default(), record(5, 1, NOW + 60_000));
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
        }
    }
}
