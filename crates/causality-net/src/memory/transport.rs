//! The in-memory transport: frames through the simulated hub.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use causality_hash::ContentId;
use multiaddr::{Multiaddr, Protocol};
use tokio::sync::mpsc;

use super::mesh::{D, IDONTWANT_BYTES, MAX_IWANT, Mesh};
use super::{Frame, Hub, edge};
use crate::core::{Command, InboundId, RequestFailure, RequestId, Verdict};
use crate::error::NetError;
use crate::event::lock;
use crate::peer::PeerId;
use crate::topic::PhysicalTopic;
use crate::transport::{Transport, TransportEvent};

/// What a gossip frame's verdict is reported with: enough to forward it.
#[derive(Debug)]
pub(crate) struct Forward {
    id: ContentId,
    from: PeerId,
    source: PeerId,
    physical: PhysicalTopic,
    bytes: Arc<[u8]>,
}

pub(crate) struct MemoryTransport {
    hub: Arc<Hub>,
    local: PeerId,
    inbox: mpsc::Receiver<Frame>,
    /// Connected peers and the physical topics they subscribe to.
    peers: BTreeMap<PeerId, BTreeSet<PhysicalTopic>>,
    /// Our own physical topics.
    topics: BTreeSet<PhysicalTopic>,
    /// Inbound requests: our id → (requester, its id).
    inbound: HashMap<u64, (PeerId, u64)>,
    next_inbound: u64,
    events: VecDeque<TransportEvent<Forward>>,
    /// The last frame handed out is being processed; count it done at the next poll.
    processing: bool,
    mesh: Mesh,
    heartbeat: tokio::time::Interval,
}

/// The mesh heartbeat (gossipsub's default is 1 s; the libp2p adapter uses 700 ms).
const HEARTBEAT: Duration = Duration::from_millis(700);

impl MemoryTransport {
    pub(super) fn new(hub: Arc<Hub>, local: PeerId, inbox: mpsc::Receiver<Frame>) -> Self {
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            mesh: Mesh::new(local),
            heartbeat,
            hub,
            local,
            inbox,
            peers: BTreeMap::new(),
            topics: BTreeSet::new(),
            inbound: HashMap::new(),
            next_inbound: 0,
            events: VecDeque::new(),
            processing: false,
        }
    }

    fn send(&self, to: PeerId, frame: Frame) {
        self.hub.send(self.local, to, frame);
    }

    fn close(&mut self, peer: PeerId) {
        self.mesh.forget_peer(&peer);
        if self.peers.remove(&peer).is_some() {
            self.events.push_back(TransportEvent::Disconnected { peer });
        }
        self.inbound.retain(|_, (from, _)| *from != peer);
        if self.hub.disconnect(self.local, peer) {
            self.send(peer, Frame::Disconnected { peer: self.local });
        }
    }

    fn hub_connected(&self, peer: PeerId) -> bool {
        lock(&self.hub.state)
            .connections
            .contains(&edge(self.local, peer))
    }

    fn send_subscriptions(&self, peer: PeerId) {
        if !self.topics.is_empty() {
            self.send(
                peer,
                Frame::Subscriptions {
                    peer: self.local,
                    topics: self.topics.iter().cloned().collect(),
                    subscribed: true,
                },
            );
        }
    }

    fn announce(&self, topic: PhysicalTopic, subscribed: bool) {
        for peer in self.peers.keys() {
            self.send(
                *peer,
                Frame::Subscriptions {
                    peer: self.local,
                    topics: vec![topic.clone()],
                    subscribed,
                },
            );
        }
    }

    /// Connected peers subscribed to `physical`, sorted.
    fn subscribers(&self, physical: &PhysicalTopic) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, topics)| topics.contains(physical))
            .map(|(peer, _)| *peer)
            .collect()
    }

    fn gossip(&self, to: PeerId, source: PeerId, physical: &PhysicalTopic, bytes: &Arc<[u8]>) {
        self.send(
            to,
            Frame::Gossip {
                from: self.local,
                source,
                physical: physical.clone(),
                bytes: Arc::clone(bytes),
            },
        );
    }

    /// Sends a message on to the mesh of `physical` (or, for our own message on a topic
    /// we have no mesh in, to up to D subscribers: gossipsub's fanout), except where it
    /// came from, its originator and peers that said they do not want it. Returns how
    /// many it went to.
    fn forward(
        &mut self,
        id: ContentId,
        from: Option<PeerId>,
        source: PeerId,
        physical: &PhysicalTopic,
        bytes: &Arc<[u8]>,
    ) -> usize {
        let targets: Vec<PeerId> = match self.mesh.mesh(physical) {
            Some(mesh) if !mesh.is_empty() => mesh.iter().copied().collect(),
            _ if from.is_none() => {
                let subscribers = self.subscribers(physical);
                self.mesh.choose(subscribers, D)
            }
            _ => Vec::new(),
        };
        let mut sent = 0;
        for peer in targets {
            if Some(peer) == from || peer == source || self.mesh.is_unwanted_by(&peer, &id) {
                continue;
            }
            sent += 1;
            self.gossip(peer, source, physical, bytes);
        }
        sent
    }

    fn subscribe(&mut self, physical: PhysicalTopic) {
        if !self.topics.insert(physical.clone()) {
            return;
        }
        self.announce(physical.clone(), true);
        self.mesh.join(physical.clone());
        let subscribers = self.subscribers(&physical);
        for peer in self.mesh.choose(subscribers, D) {
            self.mesh.graft(&physical, peer);
            self.send(
                peer,
                Frame::Graft {
                    from: self.local,
                    physical: physical.clone(),
                },
            );
        }
    }

    fn unsubscribe(&mut self, physical: PhysicalTopic) {
        if !self.topics.remove(&physical) {
            return;
        }
        for peer in self.mesh.leave(&physical) {
            self.send(
                peer,
                Frame::Prune {
                    from: self.local,
                    physical: physical.clone(),
                },
            );
        }
        self.announce(physical, false);
    }

    fn heartbeat(&mut self) {
        let subscribers: BTreeMap<PhysicalTopic, Vec<PeerId>> = self
            .topics
            .iter()
            .map(|t| (t.clone(), self.subscribers(t)))
            .collect();
        let beat = self.mesh.heartbeat(&subscribers);
        for (physical, peer) in beat.grafts {
            self.send(
                peer,
                Frame::Graft {
                    from: self.local,
                    physical,
                },
            );
        }
        for (physical, peer) in beat.prunes {
            self.send(
                peer,
                Frame::Prune {
                    from: self.local,
                    physical,
                },
            );
        }
        for (peer, ids) in beat.ihaves {
            self.send(
                peer,
                Frame::IHave {
                    from: self.local,
                    ids,
                },
            );
        }
    }

    fn dial_now(&mut self, address: &Multiaddr) -> Result<(), NetError> {
        let bad = |detail: &str| NetError::Address {
            address: address.to_string(),
            detail: detail.to_owned(),
        };
        let Some(Protocol::Memory(port)) = address.iter().next() else {
            return Err(bad("not a /memory/<n> address"));
        };
        let peer = lock(&self.hub.state)
            .addresses
            .get(&port)
            .copied()
            .ok_or_else(|| bad("no node listens there"))?;
        if peer == self.local {
            return Err(bad("cannot dial ourselves"));
        }
        if self.peers.contains_key(&peer) {
            return Ok(());
        }
        self.hub.connect(self.local, peer);
        self.peers.insert(peer, BTreeSet::new());
        self.send(
            peer,
            Frame::Connected {
                peer: self.local,
                dialer: true,
            },
        );
        self.send_subscriptions(peer);
        let ip = self.hub.ip_of(&peer);
        self.events.push_back(TransportEvent::Connected {
            peer,
            dialer: true,
            ip,
        });
        Ok(())
    }

    /// Turns a frame into an event, or handles it here.
    fn on_frame(&mut self, frame: Frame) -> Option<TransportEvent<Forward>> {
        match frame {
            Frame::Connected { peer, dialer } => {
                if !self.hub_connected(peer) {
                    return None;
                }
                self.peers.insert(peer, BTreeSet::new());
                self.send_subscriptions(peer);
                Some(TransportEvent::Connected {
                    peer,
                    dialer: !dialer,
                    ip: self.hub.ip_of(&peer),
                })
            }
            Frame::Disconnected { peer } => {
                self.inbound.retain(|_, (from, _)| *from != peer);
                self.mesh.forget_peer(&peer);
                self.peers
                    .remove(&peer)
                    .map(|_| TransportEvent::Disconnected { peer })
            }
            Frame::Subscriptions {
                peer,
                topics,
                subscribed,
            } => {
                let set = self.peers.get_mut(&peer)?;
                for topic in &topics {
                    if subscribed {
                        set.insert(topic.clone());
                    } else {
                        set.remove(topic);
                    }
                }
                for topic in &topics {
                    if !subscribed {
                        self.mesh.prune(topic, &peer);
                    } else if self.mesh.wants_more(topic) && self.mesh.graft(topic, peer) {
                        self.send(
                            peer,
                            Frame::Graft {
                                from: self.local,
                                physical: topic.clone(),
                            },
                        );
                    }
                }
                for physical in topics {
                    self.events.push_back(TransportEvent::PeerTopic {
                        peer,
                        physical,
                        subscribed,
                    });
                }
                self.events.pop_front()
            }
            Frame::Gossip {
                from,
                source,
                physical,
                bytes,
            } => {
                if !self.peers.contains_key(&from) {
                    return None;
                }
                let id = super::mesh::gossip_id(&source, &bytes);
                if !self.mesh.first_sight(id) {
                    // A duplicate: dropped before validation, as gossipsub does.
                    return None;
                }
                if bytes.len() >= IDONTWANT_BYTES
                    && let Some(mesh) = self.mesh.mesh(&physical)
                {
                    for peer in mesh.iter().filter(|p| **p != from && **p != source) {
                        self.send(
                            *peer,
                            Frame::IDontWant {
                                from: self.local,
                                ids: vec![id],
                            },
                        );
                    }
                }
                let token = Forward {
                    id,
                    from,
                    source,
                    physical: physical.clone(),
                    bytes: Arc::clone(&bytes),
                };
                Some(TransportEvent::Gossip {
                    via: from,
                    source: Some(source),
                    physical,
                    bytes,
                    token,
                })
            }
            Frame::Request {
                from,
                id,
                protocol,
                bytes,
            } => {
                if !self.peers.contains_key(&from) {
                    return None;
                }
                self.next_inbound += 1;
                self.inbound.insert(self.next_inbound, (from, id));
                Some(TransportEvent::Request {
                    id: InboundId(self.next_inbound),
                    peer: from,
                    protocol,
                    bytes,
                })
            }
            Frame::Response { id, bytes } => Some(TransportEvent::Response {
                id: RequestId(id),
                bytes,
            }),
            Frame::Graft { from, physical } => {
                if self.peers.contains_key(&from) && !self.mesh.accept_graft(&physical, from) {
                    self.send(
                        from,
                        Frame::Prune {
                            from: self.local,
                            physical,
                        },
                    );
                }
                None
            }
            Frame::Prune { from, physical } => {
                self.mesh.prune(&physical, &from);
                None
            }
            Frame::IHave { from, ids } => {
                let wanted: Vec<ContentId> = ids
                    .into_iter()
                    .filter(|id| !self.mesh.has_seen(id))
                    .take(MAX_IWANT)
                    .collect();
                if !wanted.is_empty() && self.peers.contains_key(&from) {
                    self.send(
                        from,
                        Frame::IWant {
                            from: self.local,
                            ids: wanted,
                        },
                    );
                }
                None
            }
            Frame::IWant { from, ids } => {
                if self.peers.contains_key(&from) {
                    for id in ids.iter().take(MAX_IWANT) {
                        if let Some((physical, source, bytes)) = self.mesh.stored(id).cloned() {
                            self.gossip(from, source, &physical, &bytes);
                        }
                    }
                }
                None
            }
            Frame::IDontWant { from, ids } => {
                self.mesh.dont_want(from, ids.into_iter().take(MAX_IWANT));
                None
            }
        }
    }
}

impl Transport for MemoryTransport {
    type GossipToken = Forward;

    fn execute(&mut self, command: Command) {
        match command {
            Command::Publish { physical, bytes } => {
                let id = super::mesh::gossip_id(&self.local, &bytes);
                self.mesh.first_sight(id);
                self.mesh
                    .remember(id, physical.clone(), self.local, Arc::clone(&bytes));
                if self.forward(id, None, self.local, &physical, &bytes) == 0 {
                    self.events.push_back(TransportEvent::PublishFailed);
                }
            }
            Command::Subscribe(physical) => self.subscribe(physical),
            Command::Unsubscribe(physical) => self.unsubscribe(physical),
            Command::Request {
                id,
                peer,
                protocol,
                bytes,
                ..
            } => {
                if self.peers.contains_key(&peer) {
                    self.send(
                        peer,
                        Frame::Request {
                            from: self.local,
                            id: id.0,
                            protocol,
                            bytes,
                        },
                    );
                } else {
                    self.events.push_back(TransportEvent::RequestFailed {
                        id,
                        failure: RequestFailure::NotConnected,
                    });
                }
            }
            Command::Respond { id, bytes } => {
                if let Some((to, remote)) = self.inbound.remove(&id.0) {
                    self.send(to, Frame::Response { id: remote, bytes });
                }
            }
            Command::Disconnect(peer) => self.close(peer),
            // The core refuses protocols it does not serve; the hub needs no listener.
            Command::Serve { .. } | Command::Unserve { .. } => {}
        }
    }

    fn report(&mut self, token: Forward, verdict: &Verdict) {
        if *verdict == Verdict::Accept {
            let Forward {
                id,
                from,
                source,
                physical,
                bytes,
            } = token;
            self.mesh
                .remember(id, physical.clone(), source, Arc::clone(&bytes));
            self.forward(id, Some(from), source, &physical, &bytes);
        }
    }

    fn dial(&mut self, token: u64, address: Multiaddr) {
        let result = self.dial_now(&address);
        self.events
            .push_back(TransportEvent::Dialed { token, result });
    }

    fn listen(&mut self, token: u64, address: Multiaddr) {
        self.events.push_back(TransportEvent::Listened {
            token,
            result: Err(NetError::Address {
                address: address.to_string(),
                detail: "simulated nodes listen on their one /memory address".into(),
            }),
        });
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent<Forward>>> {
        if std::mem::take(&mut self.processing) {
            self.hub.done();
        }
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            if self.heartbeat.poll_tick(cx).is_ready() {
                self.heartbeat();
                continue;
            }
            match self.inbox.poll_recv(cx) {
                Poll::Ready(Some(frame)) => {
                    if let Some(event) = self.on_frame(frame) {
                        self.processing = true;
                        return Poll::Ready(Some(event));
                    }
                    self.hub.done();
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn shutdown(&mut self) {
        if std::mem::take(&mut self.processing) {
            self.hub.done();
        }
        {
            let mut state = lock(&self.hub.state);
            state.nodes.remove(&self.local);
            let local = self.local;
            state.addresses.retain(|_, peer| *peer != local);
        }
        for peer in self.peers.keys().copied().collect::<Vec<_>>() {
            self.close(peer);
        }
        self.inbox.close();
        while self.inbox.try_recv().is_ok() {
            self.hub.done();
        }
    }
}
