//! Who gets a connection slot. Outbound dials (peers we chose) have slots of their own that
//! inbound connections cannot take; inbound connections are capped per IP address and per
//! subnet; when the inbound slots are full, a newcomer evicts an inbound peer from the most
//! crowded subnet (or one that misbehaved) rather than being refused, so Sybils from a few
//! hosts displace each other, not honest peers. (Bitcoin Core keeps outbound-only slots and
//! evicts from the most represented network group the same way.)

use std::collections::HashMap;
use std::net::IpAddr;

use super::Core;
use crate::peer::PeerId;

/// The subnet an address counts against: its /24 for IPv4, its /48 for IPv6.
fn subnet(ip: IpAddr) -> (u8, u128) {
    match ip {
        IpAddr::V4(v4) => (4, u128::from(u32::from(v4) >> 8)),
        IpAddr::V6(v6) => (6, u128::from(v6) >> 80),
    }
}

/// Addresses that per-address caps ignore: every node of a local test shares them.
fn exempt(ip: IpAddr) -> bool {
    ip.is_loopback()
}

impl Core {
    fn inbound(&self) -> impl Iterator<Item = (&PeerId, &super::Peer)> {
        self.peers.iter().filter(|(_, p)| !p.dialer)
    }

    /// Slots inbound connections may fill.
    fn inbound_slots(&self) -> usize {
        let reserved = self.limits.outbound_slots.min(self.limits.max_peers / 2);
        self.limits.max_peers - reserved
    }

    /// Whether a new connection to `peer` may take a slot; evicts an inbound peer to make
    /// room when that is the rule.
    pub(super) fn admit(
        &mut self,
        peer: PeerId,
        dialer: bool,
        ip: Option<IpAddr>,
        now_ms: u64,
    ) -> bool {
        if dialer {
            if self.peers.len() < self.limits.max_peers {
                return true;
            }
            // We chose this peer: an inbound one makes room.
            if self.make_room(peer, true, now_ms) {
                return true;
            }
            tracing::info!(target: "causality_net", kind = "network", peer = %peer, max = self.limits.max_peers, "refused connection: every slot is outbound");
            return false;
        }
        if let Some(ip) = ip.filter(|ip| !exempt(*ip)) {
            let same_ip = self.inbound().filter(|(_, p)| p.ip == Some(ip)).count();
            if same_ip >= self.limits.max_inbound_per_ip {
                tracing::info!(target: "causality_net", kind = "network", peer = %peer, %ip, max = self.limits.max_inbound_per_ip, "refused connection: too many from this address");
                return false;
            }
            let net = subnet(ip);
            let same_net = self
                .inbound()
                .filter(|(_, p)| p.ip.is_some_and(|i| subnet(i) == net))
                .count();
            if same_net >= self.limits.max_inbound_per_subnet {
                tracing::info!(target: "causality_net", kind = "network", peer = %peer, %ip, max = self.limits.max_inbound_per_subnet, "refused connection: too many from this subnet");
                return false;
            }
        }
        let inbound = self.inbound().count();
        if inbound < self.inbound_slots() && self.peers.len() < self.limits.max_peers {
            return true;
        }
        if self.make_room(peer, false, now_ms) {
            return true;
        }
        tracing::info!(target: "causality_net", kind = "network", peer = %peer, max = self.inbound_slots(), "refused connection: inbound slots full");
        false
    }

    /// The inbound peer to evict: the worst-scored one if any has a negative score, else
    /// the youngest of the most crowded subnet (with at least two members). With `forced`
    /// (an outbound dial needs the slot), the youngest inbound peer when no subnet is
    /// crowded.
    fn eviction_candidate(&self, now_ms: u64, forced: bool) -> Option<PeerId> {
        let worst = self
            .inbound()
            .map(|(peer, _)| (self.scores.score(peer, now_ms), *peer))
            .min();
        if let Some((score, peer)) = worst
            && score < 0
        {
            return Some(peer);
        }
        let mut groups: HashMap<(u8, u128), Vec<(u64, PeerId)>> = HashMap::new();
        for (peer, p) in self.inbound() {
            if let Some(ip) = p.ip.filter(|ip| !exempt(*ip)) {
                groups
                    .entry(subnet(ip))
                    .or_default()
                    .push((p.since_ms, *peer));
            }
        }
        let crowded = groups
            .into_values()
            .filter(|members| members.len() >= 2)
            .max_by_key(|members| (members.len(), members.iter().max().copied()));
        if let Some(members) = crowded {
            return members.into_iter().max().map(|(_, peer)| peer);
        }
        if forced {
            return self
                .inbound()
                .map(|(peer, p)| (p.since_ms, *peer))
                .max()
                .map(|(_, peer)| peer);
        }
        None
    }

    /// Evicts the [`eviction_candidate`](Self::eviction_candidate) for `newcomer`, when
    /// there is one; whether room was made.
    fn make_room(&mut self, newcomer: PeerId, forced: bool, now_ms: u64) -> bool {
        let Some(victim) = self.eviction_candidate(now_ms, forced) else {
            return false;
        };
        tracing::info!(target: "causality_net", kind = "network", peer = %victim, newcomer = %newcomer, "evicting an inbound peer to make room");
        self.metrics.evictions += 1;
        self.transport(super::Command::Disconnect(victim));
        self.on_disconnected(victim, now_ms);
        true
    }
}
