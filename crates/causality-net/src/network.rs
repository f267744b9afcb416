//! The [`Network`] handle: the one API upper crates are written against.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use causality_hash::ContentId;
use futures::Stream;
use multiaddr::Multiaddr;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::core::PeerInfo;
use crate::driver::{ApiCommand, Dropped, PeerSet, Reply, Shared};
use crate::envelope::{Acceptance, Message};
use crate::error::{NetError, RefusalReason};
use crate::event::{NetworkEvent, NetworkMetrics, lock};
use crate::peer::PeerId;
use crate::policy::Policy;
use crate::protocol::AsProtocol;
use crate::topic::{PhysicalTopic, Topic};

/// A node on the network: publish and subscribe on logical topics, send and serve
/// requests, manage peers, watch events. Cheap to clone; every clone is the same node. The
/// node stops when the last clone (and every subscription and request stream) is dropped.
///
/// The same API runs over [`MemoryNetwork`](crate::MemoryNetwork) and, with the `libp2p`
/// feature, over real sockets (`Libp2pNetwork`).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use causality_net::{MemoryNetwork, Topic};
/// use futures::StreamExt;
///
/// let sim = MemoryNetwork::new(7);
/// let (a, b) = (sim.add_node(), sim.add_node());
/// a.dial(b.listen_addresses()[0].clone()).await.unwrap();
/// let topic: Topic = "register/update/r1".parse().unwrap();
/// let mut updates = b.subscribe(&topic).await.unwrap();
/// # sim.settle().await;
/// a.publish(&topic, "example.Update", b"v2".to_vec()).await.unwrap();
/// let message = updates.next().await.unwrap();
/// assert_eq!((message.sender, message.payload), (a.local_peer_id(), b"v2".to_vec()));
/// # });
/// ```
#[derive(Clone)]
pub struct Network {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    commands: mpsc::Sender<ApiCommand>,
    dropped: mpsc::UnboundedSender<Dropped>,
    next_subscription: std::sync::atomic::AtomicU64,
    /// Dropping it tells the driver to stop.
    _shutdown: oneshot::Sender<()>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("peer_id", &self.inner.shared.local)
            .finish_non_exhaustive()
    }
}

impl Network {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::Sender<ApiCommand>,
        dropped: mpsc::UnboundedSender<Dropped>,
        shutdown: oneshot::Sender<()>,
    ) -> Self {
        Self {
            inner: Arc::new(Handle {
                shared,
                commands,
                dropped,
                next_subscription: std::sync::atomic::AtomicU64::new(0),
                _shutdown: shutdown,
            }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    async fn command(&self, command: ApiCommand) -> Result<(), NetError> {
        self.inner
            .commands
            .send(command)
            .await
            .map_err(|_| NetError::Closed)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> ApiCommand) -> Result<T, NetError> {
        let (reply, rx) = oneshot::channel();
        self.command(make(reply)).await?;
        rx.await.map_err(|_| NetError::Closed)?
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared().local
    }

    /// The addresses this node listens on.
    pub fn listen_addresses(&self) -> Vec<Multiaddr> {
        lock(&self.shared().listen).clone()
    }

    /// The version and features this node announces.
    pub fn hello(&self) -> &causality_version::Hello {
        &self.shared().hello
    }

    /// Connects to the node at `address`. Returns once the transport connection is up; the
    /// version handshake follows and is reported as [`NetworkEvent::PeerConnected`] or
    /// [`NetworkEvent::VersionMismatch`].
    pub async fn dial(&self, address: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| ApiCommand::Dial { address, reply }).await
    }

    /// Listens on another address, e.g. a relay circuit
    /// (`/ip4/…/tcp/…/p2p/<relay>/p2p-circuit`, feature `nat`). The address appears in
    /// [`listen_addresses`](Self::listen_addresses) once the listener is up.
    pub async fn listen_on(&self, address: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| ApiCommand::Listen { address, reply })
            .await
    }

    /// Closes every connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NetError> {
        self.command(ApiCommand::Disconnect(peer)).await
    }

    /// Connected peers, with what the handshake agreed.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared().peers.borrow().peers.to_vec()
    }

    /// The connected peers as a watched, versioned snapshot: every change bumps the
    /// version, and a reader that falls behind sees the latest set.
    pub fn peer_set(&self) -> watch::Receiver<PeerSet> {
        self.shared().peers.subscribe()
    }

    /// Subscribes to a logical topic. Dropping the stream unsubscribes.
    pub async fn subscribe(&self, topic: &Topic) -> Result<Subscription, NetError> {
        self.subscribe_with(topic, false).await
    }

    /// Subscribes to a logical topic whose messages this subscriber validates: each one
    /// is delivered after the network's own checks (signature, replay, size, topic) but
    /// forwarded by gossip only once [`validate`](Self::validate) accepts it. A message
    /// with no verdict within 10 s is not forwarded. Give every message a verdict: one
    /// validating subscriber per topic.
    pub async fn subscribe_validated(&self, topic: &Topic) -> Result<Subscription, NetError> {
        self.subscribe_with(topic, true).await
    }

    /// The verdict on message `id` of a topic subscribed with
    /// [`subscribe_validated`](Self::subscribe_validated). Rejecting it penalizes the relay
    /// that delivered it. Unknown, expired or already judged ids are ignored.
    pub async fn validate(&self, id: ContentId, acceptance: Acceptance) -> Result<(), NetError> {
        self.command(ApiCommand::Validate { id, acceptance }).await
    }

    async fn subscribe_with(
        &self,
        topic: &Topic,
        validate: bool,
    ) -> Result<Subscription, NetError> {
        let (tx, rx) = mpsc::channel(self.subscription_queue());
        let id = self
            .inner
            .next_subscription
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, done) = oneshot::channel();
        self.command(ApiCommand::Subscribe {
            topic: topic.clone(),
            id,
            tx,
            validate,
            reply,
        })
        .await?;
        done.await.map_err(|_| NetError::Closed)?;
        Ok(Subscription {
            network: self.clone(),
            topic: topic.clone(),
            id,
            rx,
        })
    }

    fn subscription_queue(&self) -> usize {
        // Set by the driver's config; the handle keeps only what it reads.
        self.shared().subscription_queue()
    }

    /// Publishes `payload` on `topic` in a signed envelope; returns the message id.
    /// Subscribers on other nodes receive it; this node's own subscribers do not.
    pub async fn publish(
        &self,
        topic: &Topic,
        payload_type: &str,
        payload: Vec<u8>,
    ) -> Result<ContentId, NetError> {
        self.call(|reply| ApiCommand::Publish {
            topic: topic.clone(),
            payload_type: payload_type.to_owned(),
            payload,
            reply,
        })
        .await
    }

    /// Registers a request protocol for outbound use with its own limits (size, rate,
    /// timeout). A protocol served with [`serve`](Self::serve) is registered too. Requests
    /// to a protocol that was never registered use [`RequestLimits::default`](crate::RequestLimits).
    pub async fn register(&self, protocol: impl AsProtocol) -> Result<(), NetError> {
        let protocol = protocol.as_protocol()?;
        self.call(|reply| ApiCommand::Register { protocol, reply })
            .await
    }

    /// Sends a request and waits for the answer (at most the protocol's timeout). The
    /// highest version both sides speak is used.
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: impl AsProtocol,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let protocol = protocol.as_protocol()?;
        self.call(|reply| ApiCommand::Request {
            peer,
            protocol,
            body,
            reply,
        })
        .await
    }

    /// Serves `protocol` (every version it lists, with its limits): inbound requests arrive
    /// on the returned stream. Dropping the stream stops serving.
    pub async fn serve(&self, protocol: impl AsProtocol) -> Result<Requests, NetError> {
        let protocol = protocol.as_protocol()?;
        let name = protocol.name().to_owned();
        let (tx, rx) = mpsc::channel(protocol.limits().queue());
        self.call(|reply| ApiCommand::Serve {
            protocol,
            tx,
            reply,
        })
        .await?;
        Ok(Requests {
            network: self.clone(),
            name,
            rx,
        })
    }

    /// A stream of network events from now on. A subscriber that falls behind by more than
    /// [`Limits::event_queue`](crate::Limits) events misses the oldest; membership that must
    /// not be missed is in [`peer_set`](Self::peer_set).
    pub fn events(&self) -> EventStream {
        EventStream {
            inner: BroadcastStream::new(self.shared().events.subscribe()),
        }
    }

    /// Counters of what this node has done.
    pub fn metrics(&self) -> NetworkMetrics {
        lock(&self.shared().metrics).clone()
    }

    /// Replaces the authorization policy; returns once it is in force.
    pub async fn set_policy(&self, policy: Policy) -> Result<(), NetError> {
        self.call(|reply| ApiCommand::SetPolicy { policy, reply })
            .await
    }

    /// Checks that `peer` may perform `operation` under the current policy.
    pub fn authorize(&self, peer: &PeerId, operation: &str) -> Result<(), NetError> {
        lock(&self.shared().policy).authorize(peer, operation)
    }

    /// Signs `message` with this node's key. Callers must prefix their own domain
    /// separator (e.g. `"causality/peer-record/v1\0"`), so a signature made for one
    /// purpose can never be replayed as another.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.shared().keypair.sign(message)
    }

    /// This node's key pair, for protocol state machines that sign (records, claims).
    pub fn keypair(&self) -> &crate::Keypair {
        &self.shared().keypair
    }

    /// Lowers `peer`'s score for misbehaviour an upper protocol detected (a forged record,
    /// an invalid proof, …); enough of it bans the peer. `reason` is logged. Returns once
    /// the penalty is applied.
    pub async fn penalize(&self, peer: PeerId, points: u32, reason: &str) -> Result<(), NetError> {
        tracing::warn!(target: "causality_net", kind = "network", peer = %peer, points, reason, "peer penalized");
        self.call(|reply| ApiCommand::Penalize {
            peer,
            points,
            reply,
        })
        .await
    }

    /// Whether `peer` is currently banned.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        let now = self.now_ms();
        lock(&self.shared().bans)
            .get(peer)
            .is_some_and(|until| *until > now)
    }

    /// Bans in force: each banned peer and the wall-clock time (ms since the epoch) its ban
    /// ends. A node that saves them and passes them back in
    /// [`NodeConfig::bans`](crate::NodeConfig::bans) keeps them across restarts.
    pub fn bans(&self) -> BTreeMap<PeerId, u64> {
        let now = self.now_ms();
        let mut bans = lock(&self.shared().bans).clone();
        bans.retain(|_, until| *until > now);
        bans
    }

    /// The sequence number this node's next envelope will carry. Persist it (with a margin
    /// for what is published before the next save) and pass it back in
    /// [`NodeConfig::seq_floor`](crate::NodeConfig::seq_floor) to stay above what peers
    /// remember across a restart with a clock that stepped backwards.
    pub fn next_seq(&self) -> u64 {
        self.shared()
            .next_seq
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Equivocations proven to this node — by its own detection or by evidence a peer
    /// passed on, which it checked — oldest first. Each sender named is banned.
    pub fn equivocations(&self) -> Vec<crate::Equivocation> {
        lock(&self.shared().equivocations).clone()
    }

    /// The physical gossip topic a logical topic travels on for this node.
    pub fn physical_topic(&self, topic: &Topic) -> PhysicalTopic {
        topic.physical(self.shared().major, self.shared().shards)
    }

    /// Peers known to subscribe to the physical topic `topic` travels on (for gossip, the
    /// candidates to receive what we publish on it).
    pub async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.command(ApiCommand::TopicPeers {
            physical: self.physical_topic(topic),
            reply,
        })
        .await?;
        rx.await.map_err(|_| NetError::Closed)
    }

    /// This node's clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.shared().clock.now_ms()
    }

    /// This node's clock.
    pub fn clock(&self) -> Arc<dyn crate::Clock> {
        Arc::clone(&self.shared().clock)
    }
}

/// Hooks for tests of how peers treat bad input (feature `test-utils`).
#[cfg(feature = "test-utils")]
impl Network {
    /// Publishes raw bytes on a physical topic with no envelope.
    pub async fn publish_raw(
        &self,
        physical: PhysicalTopic,
        bytes: Vec<u8>,
    ) -> Result<(), NetError> {
        self.command(ApiCommand::PublishRaw { physical, bytes })
            .await
    }

    /// Sends a raw request frame on `protocol`'s stream; returns the raw response frame.
    pub async fn request_raw(
        &self,
        peer: PeerId,
        protocol: &str,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let protocol = crate::RequestProtocol::from_id(protocol)?;
        self.call(|reply| ApiCommand::RequestRaw {
            peer,
            protocol,
            bytes,
            reply,
        })
        .await
    }

    /// Signs an envelope with this node's key and arbitrary fields, without publishing it.
    pub fn sign_own_envelope(
        &self,
        topic: &Topic,
        seq: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Vec<u8> {
        crate::envelope::sign_envelope(&self.shared().keypair, topic, seq, timestamp_ms, payload)
    }
}

/// Messages on one logical topic. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    network: Network,
    topic: Topic,
    id: u64,
    rx: mpsc::Receiver<Message>,
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The next message if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.network.inner.dropped.send(Dropped::Subscription {
            topic: self.topic.clone(),
            id: self.id,
        });
    }
}

/// A request for a local handler. Answer it with [`respond`](Self::respond) or
/// [`refuse`](Self::refuse); dropping it refuses it as a handler failure.
#[derive(Debug)]
pub struct InboundRequest {
    /// Who asked (authenticated by the transport).
    pub peer: PeerId,
    /// The protocol id it arrived on, e.g. `/causality/echo/0.1.0`.
    pub protocol: String,
    /// The request body.
    pub body: Vec<u8>,
    responder: oneshot::Sender<Result<Vec<u8>, (RefusalReason, String)>>,
}

impl InboundRequest {
    pub(crate) fn new(
        peer: PeerId,
        protocol: String,
        body: Vec<u8>,
        responder: oneshot::Sender<Result<Vec<u8>, (RefusalReason, String)>>,
    ) -> Self {
        Self {
            peer,
            protocol,
            body,
            responder,
        }
    }

    /// Answers the request.
    pub fn respond(self, body: Vec<u8>) {
        let _ = self.responder.send(Ok(body));
    }

    /// Refuses the request with a reason the requester sees.
    pub fn refuse(self, reason: RefusalReason, detail: &str) {
        let _ = self.responder.send(Err((reason, detail.to_owned())));
    }
}

/// Inbound requests for one protocol. Dropping it stops serving the protocol.
#[derive(Debug)]
pub struct Requests {
    network: Network,
    name: String,
    rx: mpsc::Receiver<InboundRequest>,
}

impl Stream for Requests {
    type Item = InboundRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<InboundRequest>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Requests {
    fn drop(&mut self) {
        self.rx.close();
        let _ = self.network.inner.dropped.send(Dropped::Handler {
            name: self.name.clone(),
        });
    }
}

/// Network events; see [`Network::events`]. A subscriber that falls behind misses the
/// oldest events (a debug line says how many).
pub struct EventStream {
    inner: BroadcastStream<NetworkEvent>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = NetworkEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NetworkEvent>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => return Poll::Ready(Some(event)),
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(n)))) => {
                    tracing::debug!(target: "causality_net", kind = "network", missed = n, "event subscriber lagged");
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
