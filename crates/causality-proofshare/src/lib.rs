#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod error;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "groth16")]
pub mod groth16;
mod messages;
mod state;
mod store;
mod system;

/// Raw protobuf wire types generated from `proto/causality/proofshare/`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[path = "generated/mod.rs"]
pub mod proto;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use causality_hash::ContentId;
use causality_net::service::{self, Service};
use causality_net::{Network, PeerId, ProtocolVersion, RequestLimits, RequestProtocol};
use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

pub use crate::error::{ImportError, ProofShareError, VerifyError};
pub use crate::messages::{
    ACK_DOMAIN, Ack, Announcement, Batch, Limits, MAX_ACKS_PER_REQUEST, MAX_REQUEST_BYTES,
    MessageError, ProofMessage, VerificationKey, part_id,
};
pub use crate::state::{
    ANNOUNCEMENT_TYPE, AcceptPolicy, BatchInfo, Command, Config, Event, PROOF_TOPIC, Reply, State,
    Stats, VERIFIER_ROLE, VerifierView, proof_topic, verifier_view,
};
#[cfg(feature = "rocksdb")]
pub use crate::store::RocksStore;
pub use crate::store::{MAX_ACKS_PER_PROOF, MemoryStore, ProofStore};
pub use crate::system::{Claim, PreparedKey, ProofSystem, ProofVerifier, Verifiers};

/// The request protocol proof sharing speaks (its one version).
pub const PROTOCOL: &str = "/causality/proofshare/0.1.0";
/// The protocol's name, as registered.
pub const PROTOCOL_NAME: &str = "proofshare";

/// Proof sharing's request protocol and its limits: requests of at most 16 KiB, responses
/// as large as the largest proof or key `limits` allow, 100 requests per peer per second
/// (burst 200), a 10 s timeout.
pub fn protocol(limits: &Limits) -> RequestProtocol {
    let limits = RequestLimits::builder()
        .max_request_bytes(messages::MAX_REQUEST_BYTES)
        .max_response_bytes(limits.max_body())
        .queue(256)
        .rate(100, 200)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid proof-sharing limits");
    RequestProtocol::new(PROTOCOL_NAME, &[ProtocolVersion::new(0, 1, 0)], limits)
        .expect("valid proof-sharing protocol")
}

/// Events kept for slow subscribers before they miss some (they can still read the store).
const EVENTS: usize = 1024;
/// Key lookups and announcements queued for discovery.
const KEY_WORK: usize = 256;
/// Providers of a key dialed per lookup.
const PROVIDERS: usize = 3;

/// What [`ProofShare::start_with`] may be given beyond the basics.
#[derive(Debug, Default)]
pub struct Options {
    /// The verifier view for [`AcceptPolicy::Attested`].
    pub view: Option<tokio::sync::watch::Receiver<VerifierView>>,
    /// Discovery, for providing keys and finding their providers.
    pub discovery: Option<causality_discovery::Discovery>,
}

/// Provides stored keys and batches and looks what no connected peer has up at its
/// rendezvous providers, dialing
/// those not connected, for as long as the service runs.
async fn providers(
    network: Network,
    discovery: causality_discovery::Discovery,
    service: service::WeakService<State>,
    mut work: tokio::sync::mpsc::Receiver<Event>,
) {
    while let Some(event) = work.recv().await {
        match event {
            Event::Provide(key) => {
                if let Err(e) = discovery.provide(key).await {
                    tracing::debug!(target: "causality_proofshare", key = %key, error = %e, "providing a key failed");
                }
            }
            Event::Wanted(key) => {
                let records = match discovery.find_providers(key).await {
                    Ok(records) => records,
                    Err(e) => {
                        tracing::debug!(target: "causality_proofshare", key = %key, error = %e, "no providers found");
                        continue;
                    }
                };
                let connected: std::collections::BTreeSet<PeerId> =
                    network.peers().iter().map(|p| p.peer).collect();
                let mut peers = Vec::new();
                for record in records.into_iter().take(PROVIDERS) {
                    if !connected.contains(&record.peer) {
                        for address in &record.addresses {
                            if network.dial(address.clone()).await.is_ok() {
                                break;
                            }
                        }
                    }
                    peers.push(record.peer);
                }
                let Some(running) = service.upgrade() else {
                    return;
                };
                if running
                    .send(Command::Sources { id: key, peers })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Proof sharing over a [`Network`]: the [`State`] machine run by the shared driver, with a
/// typed async API. Cheap to clone; the background task stops when the last clone is
/// dropped.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use causality_proofshare::groth16::snarkjs;
/// use causality_proofshare::{Config, MemoryStore, ProofMessage, ProofShare, ProofSystem, VerificationKey, Verifiers};
///
/// let sim = causality_net::MemoryNetwork::new(1);
/// let (a, b) = (sim.add_node(), sim.add_node());
/// b.dial(a.listen_addresses()[0].clone()).await.unwrap();
/// let start = |net| ProofShare::start(net, Config::default(), Verifiers::standard(), Box::new(MemoryStore::new()));
/// let (pa, pb) = (start(a).await.unwrap(), start(b).await.unwrap());
///
/// // A snarkjs proof of `out = a · b`, imported and stored (verified) at `a`.
/// let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap() + "/tests/vectors/groth16/";
/// let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
/// let bundle = snarkjs::import(&read("verification_key.json"), &read("proof_1.json"), &read("public_1.json")).unwrap();
/// let key = VerificationKey { system: ProofSystem::GROTH16_BN254, key: bundle.verification_key };
/// let key_id = pa.store_key(key).await.unwrap();
/// let proof = ProofMessage::new(key_id, ProofSystem::GROTH16_BN254, bundle.public_inputs, bundle.proof, Default::default()).unwrap();
/// let proof_id = pa.store_proof(proof).await.unwrap();
///
/// // `b` follows the key (it does not have it: it fetches it from `a`), `a` announces.
/// let mut proofs = pb.subscribe_to_proofs(key_id).await.unwrap();
/// tokio::time::sleep(std::time::Duration::from_secs(2)).await;
/// pa.announce_proof(proof_id).await.unwrap();
/// let got = proofs.next().await.unwrap();
/// assert_eq!(got.proof_id, proof_id);
/// # });
/// ```
#[derive(Clone)]
pub struct ProofShare {
    service: Service<State>,
    local: PeerId,
    events: broadcast::Sender<Event>,
}

impl fmt::Debug for ProofShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofShare")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl ProofShare {
    /// Starts proof sharing on `network`, verifying with `verifiers` and keeping what it
    /// accepts in `store`.
    pub async fn start(
        network: Network,
        config: Config,
        verifiers: Verifiers,
        store: Box<dyn ProofStore>,
    ) -> Result<Self, ProofShareError> {
        Self::start_with(network, config, verifiers, store, Options::default()).await
    }

    /// [`start`](Self::start), with the verifier view that [`AcceptPolicy::Attested`]
    /// assigns batch parts over (typically discovery's members with the `verifier` role)
    /// and discovery, through which stored keys are provided and unknown keys looked up at
    /// their rendezvous providers when no connected peer has them.
    pub async fn start_with(
        network: Network,
        mut config: Config,
        verifiers: Verifiers,
        store: Box<dyn ProofStore>,
        options: Options,
    ) -> Result<Self, ProofShareError> {
        let local = network.local_peer_id();
        config.ask_for_providers |= options.discovery.is_some();
        let state = State::new(config, network.keypair().clone(), verifiers, store);
        let (events, _) = broadcast::channel(EVENTS);
        let sender = events.clone();
        let (keys_tx, keys_rx) = tokio::sync::mpsc::channel(KEY_WORK);
        let service = service::spawn(network.clone(), state, options.view, move |event| {
            if let Event::Wanted(_) | Event::Provide(_) = event {
                // Dropped when the lookups fall behind: the fetch then fails on time.
                let _ = keys_tx.try_send(event.clone());
            }
            let _ = sender.send(event);
        })
        .await?;
        if let Some(discovery) = options.discovery {
            tokio::spawn(providers(network, discovery, service.downgrade(), keys_rx));
        }
        Ok(Self {
            service,
            local,
            events,
        })
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    async fn call(&self, command: Command) -> Result<Reply, ProofShareError> {
        Ok(self.service.call(command).await?)
    }

    /// Checks a verification key and keeps it; returns its id.
    pub async fn store_key(&self, key: VerificationKey) -> Result<ContentId, ProofShareError> {
        match self.call(Command::StoreKey(key)).await? {
            Reply::Key(result) => result,
            other => unreachable!("StoreKey answered {other:?}"),
        }
    }

    /// Verifies a proof made here and keeps it, for [`announce_proof`](Self::announce_proof) and for
    /// peers that ask. Its key must be stored or fetchable from a connected peer.
    pub async fn store_proof(&self, proof: ProofMessage) -> Result<ContentId, ProofShareError> {
        match self.call(Command::StoreProof(proof)).await? {
            Reply::Proof(result) => result.map(|p| p.proof_id),
            other => unreachable!("StoreProof answered {other:?}"),
        }
    }

    /// Announces a stored proof on its key's topic: inline when small, by id otherwise.
    pub async fn announce_proof(&self, proof_id: ContentId) -> Result<(), ProofShareError> {
        match self.call(Command::Announce(proof_id)).await? {
            Reply::Done(result) => result,
            other => unreachable!("Announce answered {other:?}"),
        }
    }

    /// Verifies proofs made here, all under one key, and keeps them as one batch (each
    /// proof is also kept on its own). Returns the batch's id, Merkle root and size.
    pub async fn store_batch(
        &self,
        proofs: Vec<ProofMessage>,
    ) -> Result<BatchInfo, ProofShareError> {
        match self.call(Command::StoreBatch(proofs)).await? {
            Reply::Batch(result) => result,
            other => unreachable!("StoreBatch answered {other:?}"),
        }
    }

    /// Announces a stored batch by id; followers pull it (LZ4-packed when that helps),
    /// check its id and root, and verify every proof in it.
    pub async fn announce_batch(&self, batch_id: ContentId) -> Result<(), ProofShareError> {
        match self.call(Command::AnnounceBatch(batch_id)).await? {
            Reply::Done(result) => result,
            other => unreachable!("AnnounceBatch answered {other:?}"),
        }
    }

    /// A proof by id: from the store, or pulled from `from` and then connected peers,
    /// checked against its id and verified.
    pub async fn request_proof(
        &self,
        proof_id: ContentId,
        from: Vec<PeerId>,
    ) -> Result<ProofMessage, ProofShareError> {
        match self.call(Command::Fetch { proof_id, from }).await? {
            Reply::Proof(result) => result,
            other => unreachable!("Fetch answered {other:?}"),
        }
    }

    /// Verifies a proof, fetching its key from connected peers when it is not known here.
    /// `Ok` only when it verifies; the error says why not.
    pub async fn verify_shared_proof(&self, proof: &ProofMessage) -> Result<(), ProofShareError> {
        match self.call(Command::Verify(proof.clone())).await? {
            Reply::Proof(result) => result.map(|_| ()),
            other => unreachable!("Verify answered {other:?}"),
        }
    }

    /// Follows a key: proofs announced under it are verified, kept and yielded by the
    /// returned subscription; missed ones are caught up from peers. Dropping the
    /// subscription stops following (when it was the last).
    pub async fn subscribe_to_proofs(
        &self,
        key: ContentId,
    ) -> Result<ProofSubscription, ProofShareError> {
        let stream = BroadcastStream::new(self.events.subscribe());
        self.service.send(Command::Follow(key)).await?;
        Ok(ProofSubscription {
            key,
            stream,
            service: self.service.clone(),
        })
    }

    /// The signed acknowledgements recorded for one of our proofs.
    pub async fn acks(&self, proof_id: ContentId) -> Result<Vec<Ack>, ProofShareError> {
        match self.call(Command::Acks(proof_id)).await? {
            Reply::Acks(result) => result,
            other => unreachable!("Acks answered {other:?}"),
        }
    }

    /// Counters so far.
    pub async fn stats(&self) -> Result<Stats, ProofShareError> {
        match self.call(Command::Stats).await? {
            Reply::Stats(stats) => Ok(stats),
            other => unreachable!("Stats answered {other:?}"),
        }
    }

    /// Every event (verified and rejected proofs, acknowledgements). A receiver that falls
    /// more than 1024 events behind misses the oldest.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// Verified proofs under one key, as they arrive. Stops following on drop.
pub struct ProofSubscription {
    key: ContentId,
    stream: BroadcastStream<Event>,
    service: Service<State>,
}

impl fmt::Debug for ProofSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofSubscription")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ProofSubscription {
    /// The next verified proof; `None` when the service stopped.
    pub async fn next(&mut self) -> Option<Arc<ProofMessage>> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for ProofSubscription {
    type Item = Arc<ProofMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(Event::Verified { proof, .. })))
                    if proof.verification_key_id == self.key =>
                {
                    return Poll::Ready(Some(proof));
                }
                Poll::Ready(Some(Err(lagged))) => {
                    tracing::warn!(target: "causality_proofshare", key = %self.key, error = %lagged, "subscriber fell behind; proofs it missed are in the store");
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for ProofSubscription {
    fn drop(&mut self) {
        self.service.send_detached(Command::Unfollow(self.key));
    }
}
