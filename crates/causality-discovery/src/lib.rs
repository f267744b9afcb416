#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod error;
pub mod record;
pub mod state;

/// Raw protobuf wire types generated from `proto/causality/discovery/`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[path = "generated/mod.rs"]
pub mod proto;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use causality_hash::ContentId;
use causality_net::{Network, NetworkEvent, PeerId, RefusalReason};
use futures::StreamExt as _;
use prost::Message as _;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use crate::error::{DiscoveryError, RecordError};
use crate::proto::v1 as pb;
pub use crate::record::PeerRecord;
pub use crate::state::{Config, Output, State, ViewEvent};

/// The request-response protocol discovery speaks.
pub const PROTOCOL: &str = "/causality/discovery/0.1.0";

/// Peer discovery over a [`Network`]: keeps a live view of signed peer records through
/// bootstrap and peer exchange, and answers rendezvous questions over it. Cheap to clone;
/// the background task stops when the last clone is dropped.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use causality_discovery::{Config, Discovery};
/// use causality_hash::ContentId;
/// use causality_net::MemoryNetwork;
///
/// let sim = MemoryNetwork::new(1);
/// let (a, b) = (sim.add_node(), sim.add_node());
/// let bootstrap = vec![a.listen_addresses()[0].clone()];
/// let da = Discovery::start(a, Config::default()).unwrap();
/// let db = Discovery::start(b, Config { bootstrap, ..Config::default() }).unwrap();
/// tokio::time::sleep(std::time::Duration::from_secs(30)).await;
/// assert_eq!(da.members(), db.members());
///
/// let proof = ContentId::of(b"a proof");
/// da.provide(proof).await.unwrap();
/// let providers = db.find_providers(proof).await.unwrap();
/// assert_eq!(providers[0].peer, da.local_peer_id());
/// # });
/// ```
#[derive(Clone)]
pub struct Discovery {
    handle: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
    _shutdown: oneshot::Sender<()>,
}

struct Inner {
    network: Network,
    state: Mutex<State>,
    events: broadcast::Sender<ViewEvent>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("peer_id", &self.local_peer_id())
            .field("view", &self.handle.inner.lock().view().len())
            .finish()
    }
}

enum Done {
    Exchanged(PeerId, pb::Response),
    ExchangeFailed(PeerId),
    DialFailed(PeerId),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sign_own(&self, seq_floor: u64) -> PeerRecord {
        let now = self.network.now_ms();
        let config = self.lock().config().clone();
        let ttl = u64::try_from(config.record_ttl.as_millis()).unwrap_or(u64::MAX);
        PeerRecord::sign(
            &self.network,
            self.network.listen_addresses(),
            config.roles.clone(),
            config.weight_milli,
            now.max(seq_floor),
            now.saturating_add(ttl),
        )
    }
}

/// The encoded request of `kind`.
fn encode(kind: pb::request::Kind) -> Vec<u8> {
    pb::Request { kind: Some(kind) }.encode_to_vec()
}

impl Inner {
    /// The rendezvous peers of `id` (`replication` of them, ourselves possibly included),
    /// and the time they were chosen at.
    fn rendezvous(&self, id: &ContentId) -> (Vec<PeerRecord>, u64) {
        let state = self.lock();
        let k = state.config().replication;
        (
            state.responsible_peers(id.as_bytes(), k, &|_| true),
            self.network.now_ms(),
        )
    }

    /// Sends a discovery request to the peer of `record`, dialing it first when there is no
    /// connection (rendezvous peers are usually not among our connections).
    async fn request(&self, record: &PeerRecord, body: Vec<u8>) -> Result<Vec<u8>, DiscoveryError> {
        match self
            .network
            .request(record.peer, PROTOCOL, body.clone())
            .await
        {
            Err(causality_net::NetError::NotConnected(_)) => {
                let mut last = None;
                for address in &record.addresses {
                    match self.network.dial(address.clone()).await {
                        Ok(()) => {
                            return Ok(self.network.request(record.peer, PROTOCOL, body).await?);
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.map_or(DiscoveryError::NoPeers, DiscoveryError::from))
            }
            other => Ok(other?),
        }
    }
}

impl Discovery {
    /// Starts discovery on `network`: serves [`PROTOCOL`], dials the bootstrap addresses and
    /// keeps the view fresh every `refresh_interval`. Must be called inside a tokio runtime.
    pub fn start(network: Network, config: Config) -> Result<Self, DiscoveryError> {
        let requests = network.serve(PROTOCOL)?;
        let net_events = network.events();
        let (events, _) = broadcast::channel(1024);
        let refresh = config.refresh_interval;
        let placeholder = PeerRecord::sign(&network, Vec::new(), Vec::new(), 0, 0, 0);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(config, placeholder)),
            network,
            events,
        });
        let own = inner.sign_own(1);
        inner.lock().set_own(own);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        tokio::spawn(run(
            Arc::clone(&inner),
            requests,
            net_events,
            refresh,
            shutdown_rx,
        ));
        Ok(Self {
            handle: Arc::new(Handle {
                inner,
                _shutdown: shutdown_tx,
            }),
        })
    }

    fn inner(&self) -> &Inner {
        &self.handle.inner
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner().network.local_peer_id()
    }

    /// The records in the live view (not our own).
    pub fn view(&self) -> Vec<PeerRecord> {
        self.inner().lock().view()
    }

    /// The peer ids in the view, and ours, sorted.
    pub fn members(&self) -> Vec<PeerId> {
        self.inner().lock().members()
    }

    /// The `k` peers responsible for `key` among those passing `filter` (ourselves
    /// included): weighted rendezvous hashing over the live view, salted by the epoch.
    /// Every node with the same view computes the same answer.
    pub fn responsible_peers(
        &self,
        key: &[u8],
        k: usize,
        filter: impl Fn(&PeerRecord) -> bool,
    ) -> Vec<PeerRecord> {
        self.inner().lock().responsible_peers(key, k, &filter)
    }

    /// A stream of view changes from now on.
    pub fn events(&self) -> broadcast::Receiver<ViewEvent> {
        self.inner().events.subscribe()
    }

    /// Registers this node as a provider of `id` with the rendezvous peers of `id` (itself
    /// included when it is one). Returns how many accepted.
    pub async fn provide(&self, id: ContentId) -> Result<usize, DiscoveryError> {
        let inner = self.inner();
        let (targets, now) = inner.rendezvous(&id);
        let local = self.local_peer_id();
        let request = encode(pb::request::Kind::Provide(pb::Provide {
            content_id: id.as_bytes().to_vec(),
        }));
        let mut accepted = 0;
        for target in targets {
            if target.peer == local {
                inner.lock().add_provider(id, local, now);
                accepted += 1;
            } else if inner.request(&target, request.clone()).await.is_ok() {
                accepted += 1;
            }
        }
        Ok(accepted)
    }

    /// Asks the rendezvous peers of `id` who provides it: one round trip, no DHT walk.
    pub async fn find_providers(&self, id: ContentId) -> Result<Vec<PeerRecord>, DiscoveryError> {
        let inner = self.inner();
        let (targets, now) = inner.rendezvous(&id);
        let local = self.local_peer_id();
        let request = encode(pb::request::Kind::FindProviders(pb::FindProviders {
            content_id: id.as_bytes().to_vec(),
        }));
        let mut found: Vec<PeerRecord> = Vec::new();
        let mut last_error = None;
        for target in targets {
            let records = if target.peer == local {
                inner.lock().local_providers(&id, now)
            } else {
                match inner.request(&target, request.clone()).await {
                    Ok(body) => match pb::Response::decode(body.as_slice()) {
                        Ok(response) => response
                            .records
                            .iter()
                            .filter_map(|r| PeerRecord::verify(r, now).ok())
                            .collect(),
                        Err(_) => {
                            inner
                                .network
                                .penalize(target.peer, 10, "malformed discovery response");
                            Vec::new()
                        }
                    },
                    Err(e) => {
                        last_error = Some(e);
                        Vec::new()
                    }
                }
            };
            for record in records {
                if !found.iter().any(|f| f.peer == record.peer) {
                    found.push(record);
                }
            }
        }
        match (found.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(found),
        }
    }
}

async fn run(
    inner: Arc<Inner>,
    mut requests: causality_net::Requests,
    mut net_events: causality_net::EventStream,
    refresh: std::time::Duration,
    mut shutdown: oneshot::Receiver<()>,
) {
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(256);
    let mut interval = tokio::time::interval(refresh);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = interval.tick() => {
                let now = inner.network.now_ms();
                let refresh_own = inner.lock().own_needs_refresh(now);
                if refresh_own {
                    let seq = inner.lock().own().seq + 1;
                    let own = inner.sign_own(seq);
                    inner.lock().set_own(own);
                }
                inner.lock().tick(now);
            }
            Some(event) = net_events.next() => match event {
                NetworkEvent::PeerConnected { peer, .. } => inner.lock().on_connected(peer),
                NetworkEvent::PeerDisconnected { peer } => inner.lock().on_disconnected(peer),
                _ => {}
            },
            Some(request) = requests.next() => {
                let peer = request.peer;
                match pb::Request::decode(request.body.as_slice()) {
                    Ok(decoded) => {
                        let now = inner.network.now_ms();
                        let response = inner.lock().on_request(peer, decoded, now);
                        request.respond(response.encode_to_vec());
                    }
                    Err(e) => {
                        inner.network.penalize(peer, 10, "malformed discovery request");
                        request.refuse(RefusalReason::BadRequest, &e.to_string());
                    }
                }
            }
            Some(done) = done_rx.recv() => {
                let now = inner.network.now_ms();
                match done {
                    Done::Exchanged(peer, response) => inner.lock().on_exchange_response(peer, response, now),
                    Done::ExchangeFailed(peer) => inner.lock().on_exchange_failed(peer),
                    Done::DialFailed(peer) => inner.lock().on_dial_failed(peer),
                }
            }
        }
        perform(&inner, &done_tx);
    }
}

/// Carries out what the state machine asked for.
fn perform(inner: &Arc<Inner>, done: &mpsc::Sender<Done>) {
    loop {
        let Some(output) = inner.lock().poll_output() else {
            return;
        };
        match output {
            Output::Dial { peer, address } => {
                let (network, done) = (inner.network.clone(), done.clone());
                tokio::spawn(async move {
                    if let Err(e) = network.dial(address.clone()).await {
                        tracing::debug!(target: "causality_discovery", address = %address, error = %e, "dial failed");
                        if let Some(peer) = peer {
                            let _ = done.send(Done::DialFailed(peer)).await;
                        }
                    }
                });
            }
            Output::Request { peer, request } => {
                let (network, done) = (inner.network.clone(), done.clone());
                tokio::spawn(async move {
                    match network
                        .request(peer, PROTOCOL, request.encode_to_vec())
                        .await
                    {
                        Ok(body) => match pb::Response::decode(body.as_slice()) {
                            Ok(response) => {
                                let _ = done.send(Done::Exchanged(peer, response)).await;
                            }
                            Err(_) => {
                                network.penalize(peer, 10, "malformed discovery response");
                                let _ = done.send(Done::ExchangeFailed(peer)).await;
                            }
                        },
                        Err(e) => {
                            tracing::debug!(target: "causality_discovery", peer = %peer, error = %e, "exchange failed");
                            let _ = done.send(Done::ExchangeFailed(peer)).await;
                        }
                    }
                });
            }
            Output::Penalize { peer, reason } => inner.network.penalize(peer, 10, &reason),
            Output::Disconnect { peer } => {
                let network = inner.network.clone();
                tokio::spawn(async move {
                    let _ = network.disconnect(peer).await;
                });
            }
            Output::Event(event) => {
                let _ = inner.events.send(event);
            }
        }
    }
}
