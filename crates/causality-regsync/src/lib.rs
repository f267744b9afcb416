#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod commitment;
mod error;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
pub mod messages;
mod model;
pub mod riblt;
mod state;
mod store;

/// Raw protobuf wire types generated from `proto/causality/regsync/`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[path = "generated/mod.rs"]
pub mod proto;

use std::fmt;
use std::pin::Pin;
use std::task::{self, Poll};
use std::time::Duration;

use causality_hash::ContentId;
use causality_net::service::{self, Service};
use causality_net::{Network, PeerId, ProtocolVersion, RequestLimits, RequestProtocol};
use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

pub use crate::commitment::{MembershipProof, ProofError, SetCommitment};
pub use crate::error::{DecodeError, OpError, SyncError, UpdateError};
pub use crate::model::{
    At, Context, Fence, Genesis, Lifecycle, Limits, NullifierUse, Operation, Register,
    RegisterContents, RegisterDelta, RegisterId, StateHash, TimeMap, UpdateHeader, apply,
};
pub use crate::state::{
    ClassRules, Command, Config, Event, ReconcileReport, Reply, State, Stats, Via, binding,
    proof_binds,
};
#[cfg(feature = "rocksdb")]
pub use crate::store::RocksStore;
pub use crate::store::{Commit, DoubleUse, Fork, Head, MemoryStore, RegisterStore, StoreError};

/// The request protocol register sync speaks (its one version).
pub const PROTOCOL: &str = "/causality/regsync/0.1.0";
/// The protocol's name, as registered.
pub const PROTOCOL_NAME: &str = "regsync";

/// Headers a node walks back through to serve one sync request, at most.
pub(crate) const MAX_CHAIN_WALK: usize = 1 << 20;

/// The largest response: a full state, a page of headers and a margin.
pub(crate) fn max_response_bytes(limits: &Limits) -> usize {
    limits.max_state_bytes + (256 << 10)
}

/// Register sync's request protocol and its limits: requests of at most 16 KiB, responses
/// as large as the largest state allows, 200 requests per peer per second (burst 400), a
/// 10 s timeout.
pub fn protocol(limits: &Limits) -> RequestProtocol {
    let limits = RequestLimits::builder()
        .max_request_bytes(messages::MAX_REQUEST_BYTES)
        .max_response_bytes(max_response_bytes(limits))
        .queue(256)
        .rate(200, 400)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid regsync limits");
    RequestProtocol::new(PROTOCOL_NAME, &[ProtocolVersion::new(0, 1, 0)], limits)
        .expect("valid regsync protocol")
}

/// Events kept for slow subscribers before they miss some (they can still read the store).
const EVENTS: usize = 4096;

/// What [`RegSync::start_with`] may be given beyond the basics.
#[derive(Debug, Default)]
pub struct Options {
    /// Proof sharing, through which the proofs of proof-carrying classes are fetched and
    /// verified. Without it, updates of such classes are refused.
    pub proofs: Option<causality_proofshare::ProofShare>,
}

/// Register sync over a [`Network`]: the [`State`] machine run by the shared driver, with
/// a typed async API. Cheap to clone; the background task stops when the last clone is
/// dropped.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use causality_regsync::{Config, Genesis, MemoryStore, Operation, RegSync, RegisterContents};
///
/// let sim = causality_net::MemoryNetwork::new(1);
/// let (a, b) = (sim.add_node(), sim.add_node());
/// b.dial(a.listen_addresses()[0].clone()).await.unwrap();
/// let owner = a.local_peer_id();
/// let start = |net| RegSync::start(net, Config::default(), Box::new(MemoryStore::new()));
/// let (ra, rb) = (start(a).await.unwrap(), start(b).await.unwrap());
///
/// tokio::time::sleep(std::time::Duration::from_secs(1)).await; // connected
///
/// // `a` creates a balance; `b` synchronizes it, then follows its updates.
/// let genesis = Genesis::new(owner, "payments", "token", b"first");
/// let id = genesis.id();
/// ra.create_register(genesis, RegisterContents::TokenBalance { token: "CAU".into(), amount: 100 }, 1).await.unwrap();
/// assert!(matches!(rb.synchronize_register(id).await.unwrap(), RegisterContents::TokenBalance { amount: 100, .. }));
///
/// let mut updates = rb.subscribe_to_registers(id).await.unwrap();
/// tokio::time::sleep(std::time::Duration::from_secs(2)).await;
/// let hash = ra
///     .update_register(id, vec![Operation::Update(RegisterContents::TokenBalance { token: "CAU".into(), amount: 60 })], 2)
///     .await
///     .unwrap();
/// assert_eq!(updates.next().await.unwrap(), hash);
/// assert!(rb.verify_register_state(id, hash).await.unwrap());
/// # });
/// ```
#[derive(Clone)]
pub struct RegSync {
    service: Service<State>,
    local: PeerId,
    events: broadcast::Sender<Event>,
}

impl fmt::Debug for RegSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegSync")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// Fetches and checks the proofs proof-carrying updates wait for.
async fn check_proofs(
    proofs: Option<causality_proofshare::ProofShare>,
    service: service::WeakService<State>,
    mut work: tokio::sync::mpsc::Receiver<Event>,
) {
    while let Some(event) = work.recv().await {
        let Event::ProofNeeded {
            proof_id,
            key,
            binding,
            peer,
        } = event
        else {
            continue;
        };
        let result = match &proofs {
            None => Err("no proof sharing configured".to_owned()),
            // `request_proof` checks the proof against its id and verifies it.
            Some(p) => match p.request_proof(proof_id, vec![peer]).await {
                Ok(proof) => proof_binds(&proof, &key, &binding),
                Err(e) => Err(e.to_string()),
            },
        };
        let Some(running) = service.upgrade() else {
            return;
        };
        if running
            .send(Command::ProofChecked { proof_id, result })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Proof checks queued for proof sharing.
const PROOF_WORK: usize = 1024;

macro_rules! expect_reply {
    ($reply:expr, $variant:ident) => {
        match $reply {
            Reply::$variant(value) => value,
            other => unreachable!("answered {other:?}"),
        }
    };
}

impl RegSync {
    /// Starts register sync on `network`, keeping what it accepts in `store`.
    pub async fn start(
        network: Network,
        config: Config,
        store: Box<dyn RegisterStore>,
    ) -> Result<Self, SyncError> {
        Self::start_with(network, config, store, Options::default()).await
    }

    /// [`start`](Self::start), with proof sharing for proof-carrying classes.
    pub async fn start_with(
        network: Network,
        config: Config,
        store: Box<dyn RegisterStore>,
        options: Options,
    ) -> Result<Self, SyncError> {
        let local = network.local_peer_id();
        let state = State::new(config, network.keypair().clone(), store);
        let (events, _) = broadcast::channel(EVENTS);
        let sender = events.clone();
        let (proofs_tx, proofs_rx) = tokio::sync::mpsc::channel(PROOF_WORK);
        let service = service::spawn(network, state, None, move |event| {
            if let Event::ProofNeeded { proof_id, .. } = &event
                && proofs_tx.try_send(event.clone()).is_err()
            {
                tracing::warn!(target: "causality_regsync", proof = %proof_id, "proof checks are behind; the update waits for its next announcement");
            }
            let _ = sender.send(event);
        })
        .await?;
        tokio::spawn(check_proofs(options.proofs, service.downgrade(), proofs_rx));
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

    async fn call(&self, command: Command) -> Result<Reply, SyncError> {
        Ok(self.service.call(command).await?)
    }

    /// Creates a register owned by this node and announces it; returns its state hash.
    pub async fn create_register(
        &self,
        genesis: Genesis,
        contents: RegisterContents,
        last_updated: u64,
    ) -> Result<StateHash, SyncError> {
        self.create_register_with_proof(genesis, contents, last_updated, None)
            .await
    }

    /// [`create_register`](Self::create_register) for a proof-carrying class (see
    /// [`update_register_with_proof`](Self::update_register_with_proof); the state to bind
    /// is [`Register::created`]'s).
    pub async fn create_register_with_proof(
        &self,
        genesis: Genesis,
        contents: RegisterContents,
        last_updated: u64,
        proof_id: Option<ContentId>,
    ) -> Result<StateHash, SyncError> {
        expect_reply!(
            self.call(Command::Create {
                genesis,
                contents,
                last_updated,
                proof_id
            })
            .await?,
            Updated
        )
    }

    /// The state hash an update would produce here, without applying it: what a proof
    /// for a proof-carrying class binds ([`binding`]).
    pub async fn preview_update(
        &self,
        register_id: RegisterId,
        operations: Vec<Operation>,
        last_updated: u64,
    ) -> Result<StateHash, SyncError> {
        expect_reply!(
            self.call(Command::Preview {
                register_id,
                operations,
                last_updated
            })
            .await?,
            Updated
        )
    }

    /// Applies operations to a register this node owns, signs the update and announces
    /// it; returns the new state hash.
    pub async fn update_register(
        &self,
        register_id: RegisterId,
        operations: Vec<Operation>,
        last_updated: u64,
    ) -> Result<StateHash, SyncError> {
        self.update_register_with_proof(register_id, operations, last_updated, None)
            .await
    }

    /// [`update_register`](Self::update_register) for a proof-carrying class: `proof_id`
    /// names a proof stored in proof sharing whose first public input is the update's
    /// [`binding`] (of the state hash [`preview_update`](Self::preview_update) gives). The
    /// update applies, here as everywhere, once proof sharing has verified the proof.
    pub async fn update_register_with_proof(
        &self,
        register_id: RegisterId,
        operations: Vec<Operation>,
        last_updated: u64,
        proof_id: Option<ContentId>,
    ) -> Result<StateHash, SyncError> {
        expect_reply!(
            self.call(Command::Update {
                register_id,
                operations,
                last_updated,
                proof_id
            })
            .await?,
            Updated
        )
    }

    /// [`update_register`](Self::update_register) carrying a fencing token (e.g. an
    /// execution lease's): refused here and at every follower once a higher token for the
    /// same key was accepted for the register, so a writer whose lease was taken over
    /// cannot overwrite its successor.
    pub async fn update_register_fenced(
        &self,
        register_id: RegisterId,
        operations: Vec<Operation>,
        last_updated: u64,
        fence: Fence,
    ) -> Result<StateHash, SyncError> {
        expect_reply!(
            self.call(Command::UpdateFenced {
                register_id,
                operations,
                last_updated,
                fence
            })
            .await?,
            Updated
        )
    }

    /// Announces a stored state of a register again.
    pub async fn announce_register_update(
        &self,
        register_id: RegisterId,
        state_hash: StateHash,
    ) -> Result<(), SyncError> {
        expect_reply!(
            self.call(Command::Announce {
                register_id,
                state_hash
            })
            .await?,
            Done
        )
    }

    /// Brings a register up to date from connected peers and returns its contents.
    pub async fn synchronize_register(
        &self,
        register_id: RegisterId,
    ) -> Result<RegisterContents, SyncError> {
        Ok(self
            .synchronize_from(register_id, Vec::new())
            .await?
            .contents)
    }

    /// [`synchronize_register`](Self::synchronize_register), asking `peers` first, and
    /// returning the whole state.
    pub async fn synchronize_from(
        &self,
        register_id: RegisterId,
        peers: Vec<PeerId>,
    ) -> Result<Register, SyncError> {
        expect_reply!(
            self.call(Command::Synchronize { register_id, peers })
                .await?,
            Register
        )
    }

    /// A register's current state here.
    pub async fn register(&self, register_id: RegisterId) -> Result<Option<Register>, SyncError> {
        Ok(expect_reply!(
            self.call(Command::Get(register_id)).await?,
            Found
        ))
    }

    /// A register's opaque data. Data larger than a chunk (64 KiB) is held as
    /// content-addressed chunks, fetched here on first read from connected peers, checked
    /// against their ids, and kept.
    pub async fn read_data(&self, register_id: RegisterId) -> Result<Vec<u8>, SyncError> {
        expect_reply!(
            self.call(Command::ReadData {
                register_id,
                peers: Vec::new()
            })
            .await?,
            Data
        )
    }

    /// Whether `state_hash` is the register's current state here, stored and checked.
    pub async fn verify_register_state(
        &self,
        register_id: RegisterId,
        state_hash: StateHash,
    ) -> Result<bool, SyncError> {
        Ok(expect_reply!(
            self.call(Command::Verify {
                register_id,
                state_hash
            })
            .await?,
            Verified
        ))
    }

    /// Follows a register: its updates are checked and applied as they are announced, and
    /// the returned subscription yields each new state hash. Dropping it stops following.
    pub async fn subscribe_to_registers(
        &self,
        register_id: RegisterId,
    ) -> Result<RegisterSubscription, SyncError> {
        let stream = BroadcastStream::new(self.events.subscribe());
        self.service.send(Command::Follow(register_id)).await?;
        Ok(RegisterSubscription {
            register_id,
            stream,
            service: self.service.clone(),
        })
    }

    /// Calls `callback` with each new state hash of a register until the returned handle
    /// is dropped (an adapter over [`subscribe_to_registers`](Self::subscribe_to_registers)).
    pub async fn on_register_update(
        &self,
        register_id: RegisterId,
        mut callback: impl FnMut(StateHash) + Send + 'static,
    ) -> Result<CallbackHandle, SyncError> {
        let mut subscription = self.subscribe_to_registers(register_id).await?;
        let task = tokio::spawn(async move {
            while let Some(hash) = subscription.next().await {
                callback(hash);
            }
        });
        Ok(CallbackHandle(task))
    }

    /// Follows a domain: creations, nullifiers, commitments, time maps and every register
    /// in it; reconciles it with each peer that connects.
    pub async fn follow_domain(&self, domain: &str) -> Result<(), SyncError> {
        expect_reply!(
            self.call(Command::FollowDomain(domain.to_owned())).await?,
            Done
        )
    }

    /// Uses a nullifier of a register this node owns and announces it.
    pub async fn nullify(
        &self,
        domain: &str,
        nullifier: [u8; 32],
        register_id: RegisterId,
    ) -> Result<(), SyncError> {
        expect_reply!(
            self.call(Command::Nullify {
                domain: domain.to_owned(),
                nullifier,
                register_id
            })
            .await?,
            Done
        )
    }

    /// Merges heights into a domain's time map and announces the result.
    pub async fn update_time_map(&self, domain: &str, map: TimeMap) -> Result<(), SyncError> {
        expect_reply!(
            self.call(Command::UpdateTimeMap {
                domain: domain.to_owned(),
                map
            })
            .await?,
            Done
        )
    }

    /// A domain's time map here.
    pub async fn time_map(&self, domain: &str) -> Result<TimeMap, SyncError> {
        Ok(expect_reply!(
            self.call(Command::TimeMap(domain.to_owned())).await?,
            TimeMap
        ))
    }

    /// Announces this node's commitments to a domain (register set and time map).
    pub async fn publish_commitment(&self, domain: &str) -> Result<(), SyncError> {
        expect_reply!(
            self.call(Command::PublishCommitment(domain.to_owned()))
                .await?,
            Done
        )
    }

    /// This node's commitment to a domain's register set: root and size.
    pub async fn commitment(&self, domain: &str) -> Result<(ContentId, u64), SyncError> {
        match self.call(Command::Commitment(domain.to_owned())).await? {
            Reply::Commitment(root, size) => Ok((root, size)),
            other => unreachable!("answered {other:?}"),
        }
    }

    /// A membership proof for a register: against this node's commitment, or `peer`'s.
    /// Returns the root and size it is against, and the proof (check it with
    /// [`MembershipProof::verify`]).
    pub async fn prove_register(
        &self,
        domain: &str,
        register_id: RegisterId,
        peer: Option<PeerId>,
    ) -> Result<(ContentId, u64, MembershipProof), SyncError> {
        expect_reply!(
            self.call(Command::Prove {
                domain: domain.to_owned(),
                register_id,
                peer
            })
            .await?,
            Proof
        )
    }

    /// Reconciles a domain's registers and nullifiers with `peer`: finds the difference
    /// with rateless IBLT symbols, fetches what the peer has newer, and checks the result
    /// against the peer's commitment.
    pub async fn reconcile(
        &self,
        peer: PeerId,
        domain: &str,
    ) -> Result<ReconcileReport, SyncError> {
        expect_reply!(
            self.call(Command::Reconcile {
                peer,
                domain: domain.to_owned()
            })
            .await?,
            Reconciled
        )
    }

    /// Fork evidence recorded for a register.
    pub async fn forks(&self, register_id: RegisterId) -> Result<Vec<Fork>, SyncError> {
        Ok(expect_reply!(
            self.call(Command::Forks(register_id)).await?,
            Forks
        ))
    }

    /// Double-use evidence recorded for a domain.
    pub async fn double_uses(&self, domain: &str) -> Result<Vec<DoubleUse>, SyncError> {
        Ok(expect_reply!(
            self.call(Command::DoubleUses(domain.to_owned())).await?,
            DoubleUses
        ))
    }

    /// Counters so far.
    pub async fn stats(&self) -> Result<Stats, SyncError> {
        Ok(expect_reply!(self.call(Command::Stats).await?, Stats))
    }

    /// Every event. A receiver that falls more than 4096 events behind misses the oldest.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// New state hashes of one register, as they are applied. Stops following on drop.
pub struct RegisterSubscription {
    register_id: RegisterId,
    stream: BroadcastStream<Event>,
    service: Service<State>,
}

impl fmt::Debug for RegisterSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterSubscription")
            .field("register_id", &self.register_id)
            .finish_non_exhaustive()
    }
}

impl RegisterSubscription {
    /// The next state hash; `None` when the service stopped.
    pub async fn next(&mut self) -> Option<StateHash> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for RegisterSubscription {
    type Item = StateHash;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(Event::Applied {
                    register_id,
                    state_hash,
                    ..
                }))) if register_id == self.register_id => return Poll::Ready(Some(state_hash)),
                Poll::Ready(Some(Err(lagged))) => {
                    tracing::warn!(target: "causality_regsync", register = %self.register_id, error = %lagged, "subscriber fell behind; the register's state is in the store");
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for RegisterSubscription {
    fn drop(&mut self) {
        self.service
            .send_detached(Command::Unfollow(self.register_id));
    }
}

/// Keeps a callback registered with [`RegSync::on_register_update`]; dropping it stops the
/// callback (and following).
#[derive(Debug)]
pub struct CallbackHandle(tokio::task::JoinHandle<()>);

impl Drop for CallbackHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}
