//! The [`Network`] handle: the one API upper crates are written against.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use causality_hash::ContentId;
use futures::Stream;
use multiaddr::Multiaddr;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::core::{Command, Core, InboundRequest, PeerInfo};
use crate::envelope::{self, Message};
use crate::error::NetError;
use crate::event::{NetworkEvent, NetworkMetrics, lock};
use crate::peer::PeerId;
use crate::policy::Policy;
use crate::topic::Topic;

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
    core: Arc<Core>,
    /// Dropping it tells the adapter's driver to stop.
    _shutdown: oneshot::Sender<()>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("peer_id", &self.inner.core.local)
            .finish_non_exhaustive()
    }
}

impl Network {
    pub(crate) fn new(core: Arc<Core>, shutdown: oneshot::Sender<()>) -> Self {
        Self {
            inner: Arc::new(Handle {
                core,
                _shutdown: shutdown,
            }),
        }
    }

    fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    async fn command(&self, command: Command) -> Result<(), NetError> {
        self.core()
            .commands
            .send(command)
            .await
            .map_err(|_| NetError::Closed)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.core().local
    }

    /// The addresses this node listens on.
    pub fn listen_addresses(&self) -> Vec<Multiaddr> {
        lock(&self.core().listen).clone()
    }

    /// The version and features this node announces.
    pub fn hello(&self) -> &causality_version::Hello {
        &self.core().hello
    }

    /// Connects to the node at `address`. Returns once the transport connection is up; the
    /// version handshake follows and is reported as [`NetworkEvent::PeerConnected`] or
    /// [`NetworkEvent::VersionMismatch`].
    pub async fn dial(&self, address: Multiaddr) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Dial { address, reply }).await?;
        rx.await.map_err(|_| NetError::Closed)?
    }

    /// Listens on another address, e.g. a relay circuit
    /// (`/ip4/…/tcp/…/p2p/<relay>/p2p-circuit`, feature `nat`). The address appears in
    /// [`listen_addresses`](Self::listen_addresses) once the listener is up.
    pub async fn listen_on(&self, address: Multiaddr) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Listen { address, reply }).await?;
        rx.await.map_err(|_| NetError::Closed)?
    }

    /// Closes every connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NetError> {
        self.command(Command::Disconnect(peer)).await
    }

    /// Connected peers, with what the handshake agreed.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.core().peers()
    }

    /// Subscribes to a logical topic. Dropping the stream unsubscribes.
    pub async fn subscribe(&self, topic: &Topic) -> Result<Subscription, NetError> {
        let (id, rx, new_physical) = self.core().add_subscriber(topic);
        let subscription = Subscription {
            network: self.clone(),
            topic: topic.clone(),
            id,
            rx,
        };
        if let Some(physical) = new_physical {
            self.command(Command::Subscribe(physical)).await?;
        }
        Ok(subscription)
    }

    /// Publishes `payload` on `topic` in a signed envelope; returns the message id.
    /// Subscribers on other nodes receive it; this node's own subscribers do not.
    pub async fn publish(
        &self,
        topic: &Topic,
        payload_type: &str,
        payload: Vec<u8>,
    ) -> Result<ContentId, NetError> {
        let core = self.core();
        if payload_type.len() > core.limits.max_payload_type_bytes {
            return Err(NetError::TooLarge {
                what: "payload type",
                size: payload_type.len(),
                limit: core.limits.max_payload_type_bytes,
            });
        }
        let seq = core.next_seq();
        let timestamp_ms = core.clock.now_ms();
        let (id, bytes) = envelope::seal(
            &core.keypair,
            &envelope::Draft {
                version: core.hello.version,
                topic,
                seq,
                timestamp_ms,
                payload_type,
                payload: &payload,
            },
        );
        if bytes.len() > core.limits.max_envelope_bytes {
            return Err(NetError::TooLarge {
                what: "envelope",
                size: bytes.len(),
                limit: core.limits.max_envelope_bytes,
            });
        }
        core.remember_own(id, seq, timestamp_ms);
        crate::event::Counters::add(&core.counters.published, 1);
        crate::event::Counters::add(&core.counters.bytes_out, bytes.len() as u64);
        self.command(Command::Publish {
            physical: core.physical(topic),
            bytes,
        })
        .await?;
        Ok(id)
    }

    /// Sends a request and waits for the answer (at most [`Limits::request_timeout`](crate::Limits)).
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        self.core().send_request(peer, protocol, body).await
    }

    /// Serves `protocol`: inbound requests for it arrive on the returned stream. Dropping the
    /// stream stops serving.
    pub fn serve(&self, protocol: &str) -> Result<Requests, NetError> {
        let rx = self.core().add_handler(protocol)?;
        Ok(Requests {
            network: self.clone(),
            protocol: protocol.to_owned(),
            rx,
        })
    }

    /// A stream of network events from now on. A subscriber that falls behind by more than
    /// [`Limits::event_queue`](crate::Limits) events misses the oldest.
    pub fn events(&self) -> EventStream {
        EventStream {
            inner: BroadcastStream::new(self.core().subscribe_events()),
        }
    }

    /// Counters of what this node has done.
    pub fn metrics(&self) -> NetworkMetrics {
        self.core().counters.snapshot()
    }

    /// Replaces the authorization policy.
    pub fn set_policy(&self, policy: Policy) {
        *self
            .core()
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }

    /// Checks that `peer` may perform `operation` under the current policy.
    pub fn authorize(&self, peer: &PeerId, operation: &str) -> Result<(), NetError> {
        self.core()
            .policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .authorize(peer, operation)
    }

    /// Signs `message` with this node's key. Callers must prefix their own domain
    /// separator (e.g. `"causality/peer-record/v1\0"`), so a signature made for one
    /// purpose can never be replayed as another.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.core().keypair.sign(message)
    }

    /// Lowers `peer`'s score for misbehaviour an upper protocol detected (a forged record,
    /// an invalid proof, …); enough of it bans the peer. `reason` is logged.
    pub fn penalize(&self, peer: PeerId, points: u32, reason: &str) {
        tracing::warn!(target: "causality_net", kind = "network", peer = %peer, points, reason, "peer penalized");
        self.core().penalize(peer, i64::from(points));
    }

    /// Whether `peer` is currently banned.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.core().is_banned(peer)
    }

    /// Publishes raw bytes on a physical topic with no envelope. Only for tests of how peers
    /// treat bad input.
    #[doc(hidden)]
    pub async fn publish_raw(&self, physical: String, bytes: Vec<u8>) -> Result<(), NetError> {
        self.command(Command::PublishRaw { physical, bytes }).await
    }

    /// Sends a raw request frame. Only for tests of how peers treat bad input.
    #[doc(hidden)]
    pub async fn request_raw(&self, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Request { peer, bytes, reply })
            .await?;
        rx.await.map_err(|_| NetError::Closed)?
    }

    /// The physical gossip topic a logical topic travels on for this node.
    pub fn physical_topic(&self, topic: &Topic) -> String {
        self.core().physical(topic)
    }

    /// Peers known to subscribe to the physical topic `topic` travels on (for gossip, the
    /// candidates to receive what we publish on it).
    pub async fn topic_peers(&self, topic: &Topic) -> Result<Vec<PeerId>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::TopicPeers {
            physical: self.core().physical(topic),
            reply,
        })
        .await?;
        let mut peers = rx.await.map_err(|_| NetError::Closed)?;
        peers.sort();
        Ok(peers)
    }

    /// Signs an envelope with this node's key and arbitrary fields, without publishing it.
    /// Only for tests of replay and freshness checks.
    #[doc(hidden)]
    pub fn sign_own_envelope(
        &self,
        topic: &Topic,
        seq: u64,
        timestamp_ms: u64,
        payload: &[u8],
    ) -> Vec<u8> {
        envelope::sign_envelope(&self.core().keypair, topic, seq, timestamp_ms, payload)
    }

    /// This node's clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.core().clock.now_ms()
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
        let core = self.network.core();
        if let Some(physical) = core.remove_subscriber(&self.topic, self.id)
            && core
                .commands
                .try_send(Command::Unsubscribe(physical))
                .is_err()
        {
            tracing::debug!(target: "causality_net", kind = "network", topic = %self.topic, "command queue full; stays subscribed until the next change");
        }
    }
}

/// Inbound requests for one protocol. Dropping it stops serving the protocol.
#[derive(Debug)]
pub struct Requests {
    network: Network,
    protocol: String,
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
        self.network.core().remove_handler(&self.protocol);
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
