#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod error;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
pub mod messages;
mod record;
mod state;
mod view;

/// Raw protobuf wire types generated from `proto/causality/discovery/`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[path = "generated/mod.rs"]
pub mod proto;

use std::fmt;
use std::time::Duration;

use causality_hash::ContentId;
use causality_net::service::{self, Service};
use causality_net::{Network, PeerId, ProtocolVersion, RequestLimits, RequestProtocol};
use tokio::sync::{broadcast, watch};

pub use crate::error::{DiscoveryError, RecordError};
pub use crate::record::{
    MAX_ADDRESS_LEN, MAX_ADDRESSES, MAX_RECORD_BYTES, MAX_ROLE_LEN, MAX_ROLES, PeerRecord,
    RECORD_DOMAIN, RecordCache,
};
pub use crate::state::{
    Command, Config, Event, MAX_WEIGHT_MILLI, Membership, RecordFilter, Reply, State, Timer,
    ViewEvent,
};

/// The request protocol discovery speaks (its one version).
pub const PROTOCOL: &str = "/causality/discovery/0.1.0";
/// The protocol's name, as registered.
pub const PROTOCOL_NAME: &str = "discovery";

/// Discovery's request protocol and its limits: bodies of at most 64 records, 50 requests
/// per peer per second (burst 100), a 10 s timeout.
pub fn protocol() -> RequestProtocol {
    let max = messages::max_body(Config::default().max_records_per_message);
    let limits = RequestLimits::builder()
        .max_request_bytes(max)
        .max_response_bytes(max)
        .queue(256)
        .rate(50, 100)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid discovery limits");
    RequestProtocol::new(PROTOCOL_NAME, &[ProtocolVersion::new(0, 1, 0)], limits)
        .expect("valid discovery protocol")
}

/// Peer discovery over a [`Network`]: keeps a live view of signed peer records through
/// bootstrap and peer exchange, and answers rendezvous questions over it. The logic is the
/// [`State`] machine; this is its thin driver. Cheap to clone; the background task stops
/// when the last clone is dropped.
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
/// let da = Discovery::start(a, Config::default()).await.unwrap();
/// let db = Discovery::start(b, Config { bootstrap, ..Config::default() }).await.unwrap();
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
    service: Service<State>,
    local: PeerId,
    membership: watch::Receiver<Membership>,
    events: broadcast::Sender<ViewEvent>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("peer_id", &self.local)
            .field("view", &self.membership.borrow().len())
            .finish()
    }
}

impl Discovery {
    /// Starts discovery on `network`: serves [`PROTOCOL`], dials the bootstrap addresses and
    /// keeps the view fresh every `refresh_interval`. Must be called inside a tokio runtime.
    pub async fn start(network: Network, config: Config) -> Result<Self, DiscoveryError> {
        config.validate()?;
        let state = State::new(
            config,
            network.keypair().clone(),
            network.hello().clone(),
            network.listen_addresses(),
            network.now_ms(),
        );
        let (membership_tx, membership) = watch::channel(state.membership());
        let (events, _) = broadcast::channel(1024);
        let sender = events.clone();
        let local = network.local_peer_id();
        let service = service::spawn(network, state, None, move |event| match event {
            Event::Membership(snapshot) => {
                membership_tx.send_replace(snapshot);
            }
            Event::View(event) => {
                let _ = sender.send(event);
            }
        })
        .await?;
        Ok(Self {
            service,
            local,
            membership,
            events,
        })
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The records in the live view (not our own).
    pub fn view(&self) -> Vec<PeerRecord> {
        self.membership.borrow().records().cloned().collect()
    }

    /// The peer ids in the view, and ours, sorted.
    pub fn members(&self) -> Vec<PeerId> {
        self.membership.borrow().members()
    }

    /// The view as a watched, versioned snapshot: a consumer that falls behind sees the
    /// latest view, never a hole (leader election and claim placement rely on it).
    pub fn membership(&self) -> watch::Receiver<Membership> {
        self.membership.clone()
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
        self.membership.borrow().responsible_peers(key, k, &filter)
    }

    /// A stream of view changes from now on. It may lag and lose the oldest; what must not
    /// be missed is in [`membership`](Self::membership).
    pub fn events(&self) -> broadcast::Receiver<ViewEvent> {
        self.events.subscribe()
    }

    /// Registers this node as a provider of `id` with the rendezvous peers of `id` (itself
    /// included when it is one). Returns how many accepted.
    pub async fn provide(&self, id: ContentId) -> Result<usize, DiscoveryError> {
        match self.service.call(Command::Provide(id)).await? {
            Reply::Provided(n) => Ok(n),
            Reply::Providers(_) => Err(DiscoveryError::Stopped),
        }
    }

    /// Asks the rendezvous peers of `id` who provides it: one round trip, no DHT walk.
    pub async fn find_providers(&self, id: ContentId) -> Result<Vec<PeerRecord>, DiscoveryError> {
        match self.service.call(Command::FindProviders(id)).await? {
            Reply::Providers(result) => result,
            Reply::Provided(_) => Err(DiscoveryError::Stopped),
        }
    }
}
