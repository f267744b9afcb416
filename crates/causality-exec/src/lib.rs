//! Execution-sequence coordination for Causality: sequences of work as DAGs, a leader per
//! sequence chosen by rendezvous hashing with terms, leased claims with fencing tokens,
//! retries with backoff, validation by agreement or by proof, and a status stream.
//!
//! The protocol is the sans-IO [`State`] machine; [`Coordinator`] runs it on a
//! [`Network`] with the shared driver and calls an [`Executor`]
//! for the work leased to this node.
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod error;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
mod model;
mod state;
mod store;

/// Raw protobuf wire types generated from `proto/causality/exec/`.
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

pub use crate::error::{
    ClaimError, DecodeError, ExecError, RetryError, SequenceError, SubmissionError,
};
pub use crate::model::{
    Condition, Dag, Edge, ExecutionSequence, ExecutionSequenceMessage, ExecutionStatus,
    FailureReason, Limits, NodeClaimToken, NodeId, NodeResult, SequenceId, WorkSpec,
};
pub use crate::state::{
    Command, Config, EXECUTOR_ROLE, Event, ExecutorInfo, ExecutorView, NODE_TOPIC, PROTOCOL_NAME,
    RESULT_TOPIC, RESULT_TYPE, Reply, SEQUENCE_TOPIC, STATUS_TYPE, State, Stats,
    VERIFICATION_TOPIC, executor_view, sequence_topic,
};
#[cfg(feature = "rocksdb")]
pub use crate::store::RocksStore;
pub use crate::store::{ExecStore, MemoryStore, StoreError};

/// The request protocol's full id.
pub const PROTOCOL: &str = "/causality/exec/0.1.0";

/// The request protocol and its limits: requests as large as the largest sequence, 1,000
/// requests per peer per second (burst 2,000: leases and results are many and small), a
/// 10 s timeout.
pub fn protocol(limits: &Limits) -> RequestProtocol {
    let limits = RequestLimits::builder()
        .max_request_bytes(limits.max_sequence_bytes + 1024)
        .max_response_bytes(limits.max_sequence_bytes + 1024)
        .queue(1024)
        .rate(1000, 2000)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("valid exec limits");
    RequestProtocol::new(PROTOCOL_NAME, &[ProtocolVersion::new(0, 1, 0)], limits)
        .expect("valid exec protocol")
}

/// What an executor returns: the output and, for work that needs one, a proof id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// The output bytes.
    pub output: Vec<u8>,
    /// The proof (stored in proof sharing), for work with a proof key.
    pub proof_id: Option<ContentId>,
}

/// Runs the work leased to this node. The node binary supplies real ones (WebAssembly,
/// provers); tests supply their own.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs `work` with its predecessors' outputs.
    async fn execute(&self, work: &WorkSpec, inputs: &[Vec<u8>]) -> Result<ExecOutput, String>;

    /// Runs `work` with its predecessors' outputs and its secret input (a witness that
    /// travelled sealed to this node alone), when it has one. By default the witness is
    /// ignored.
    async fn execute_with_witness(
        &self,
        work: &WorkSpec,
        inputs: &[Vec<u8>],
        witness: Option<&[u8]>,
    ) -> Result<ExecOutput, String> {
        let _ = witness;
        self.execute(work, inputs).await
    }

    /// Runs `work` under `lease` — what the coordinator calls. Work that writes registers
    /// passes [`lease.fence()`](NodeClaimToken::fence) with each write
    /// (`RegSync::update_register_fenced`), so that a register refuses the write of a
    /// holder whose lease was given to someone else since. By default the lease is not
    /// needed and [`execute_with_witness`](Self::execute_with_witness) runs.
    async fn execute_leased(
        &self,
        lease: &NodeClaimToken,
        work: &WorkSpec,
        inputs: &[Vec<u8>],
        witness: Option<&[u8]>,
    ) -> Result<ExecOutput, String> {
        let _ = lease;
        self.execute_with_witness(work, inputs, witness).await
    }
}

/// Events kept for slow subscribers.
const EVENTS: usize = 4096;

/// Checks that a (verified) proof is under `key` and its public inputs are `public_inputs`
/// (the work's input: 32-byte field elements, concatenated).
pub fn proof_matches(
    proof: &causality_proofshare::ProofMessage,
    key: &ContentId,
    public_inputs: &[u8],
) -> Result<(), String> {
    if proof.verification_key_id != *key {
        return Err(format!(
            "proof is under key {}, the work needs {key}",
            proof.verification_key_id
        ));
    }
    if proof.public_inputs.concat() != public_inputs {
        return Err("the proof's public inputs are not the work's".into());
    }
    Ok(())
}

/// What [`Coordinator::start_with`] may be given beyond the basics.
#[derive(Default)]
pub struct Options {
    /// Where sequences, terms and results are kept (default: memory).
    pub store: Option<Box<dyn ExecStore>>,
    /// Proof sharing, through which the proofs of proving work are fetched and verified
    /// before their results are accepted. Without it such results are refused.
    pub proofs: Option<causality_proofshare::ProofShare>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("store", &self.store.is_some())
            .field("proofs", &self.proofs)
            .finish()
    }
}

/// Fetches and checks the proofs of proving work.
async fn check_proofs(
    proofs: Option<causality_proofshare::ProofShare>,
    service: service::WeakService<State>,
    token: NodeClaimToken,
    proof_id: ContentId,
    key: ContentId,
    public_inputs: Vec<u8>,
    peer: PeerId,
) {
    let result = match &proofs {
        None => Err("no proof sharing configured".to_owned()),
        // `request_proof` checks the proof against its id and verifies it.
        Some(p) => match p.request_proof(proof_id, vec![peer]).await {
            Ok(proof) => proof_matches(&proof, &key, &public_inputs),
            Err(e) => Err(e.to_string()),
        },
    };
    if let Some(running) = service.upgrade() {
        let _ = running.send(Command::ProofChecked { token, result }).await;
    }
}

/// Execution coordination over a network: the [`State`] machine run by the shared driver,
/// an [`Executor`] for the work leased here, and a typed async API. Cheap to clone.
///
/// ```no_run
/// # async fn run(network: causality_net::Network, view: tokio::sync::watch::Receiver<causality_exec::ExecutorView>) -> Result<(), causality_exec::ExecError> {
/// use std::sync::Arc;
/// use causality_exec::{Config, Coordinator, Edge, ExecOutput, ExecutionSequence, Executor, ExecutorInfo, WorkSpec};
///
/// struct Echo;
/// #[async_trait::async_trait]
/// impl Executor for Echo {
///     async fn execute(&self, work: &WorkSpec, _inputs: &[Vec<u8>]) -> Result<ExecOutput, String> {
///         Ok(ExecOutput { output: work.input.clone(), proof_id: None })
///     }
/// }
///
/// let config = Config { executor: ExecutorInfo { kinds: ["echo".into()].into(), capacity: 4 }, ..Config::default() };
/// let me = network.local_peer_id();
/// let node = Coordinator::start(network, config, view, Arc::new(Echo)).await?;
/// let work = |s: &str| WorkSpec::new("echo", s.as_bytes().to_vec());
/// let sequence = ExecutionSequence::new(me, b"hello", [(0, work("a")), (1, work("b"))], vec![Edge::new(0, 1)]);
/// let id = node.announce_sequence(sequence).await?;
/// let mut monitor = node.monitor_sequence(id).await?;
/// while let Some(statement) = monitor.next().await {
///     println!("{:?}: {} done", statement.status, statement.completed_nodes.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Coordinator {
    service: Service<State>,
    local: PeerId,
    events: broadcast::Sender<Event>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

macro_rules! expect_reply {
    ($reply:expr, $variant:ident) => {
        match $reply {
            Reply::$variant(value) => value,
            other => unreachable!("answered {other:?}"),
        }
    };
}

/// Runs executions and hands their outcomes back.
async fn run_work(
    executor: Arc<dyn Executor>,
    service: service::WeakService<State>,
    token: NodeClaimToken,
    work: WorkSpec,
    inputs: Vec<Vec<u8>>,
    witness: Option<Vec<u8>>,
) {
    let outcome = executor
        .execute_leased(&token, &work, &inputs, witness.as_deref())
        .await
        .map(|o| (o.output, o.proof_id));
    if let Some(running) = service.upgrade() {
        let _ = running.send(Command::Complete { token, outcome }).await;
    }
}

impl Coordinator {
    /// Starts coordination on `network` with the executor view `view` (typically
    /// discovery's members with the executor role, this node included when it executes).
    pub async fn start(
        network: Network,
        config: Config,
        view: tokio::sync::watch::Receiver<ExecutorView>,
        executor: Arc<dyn Executor>,
    ) -> Result<Self, ExecError> {
        Self::start_with(network, config, view, executor, Options::default()).await
    }

    /// [`start`](Self::start) with a store (a restarted node resumes the sequences it kept)
    /// and proof sharing (to verify the proofs of proving work).
    pub async fn start_with(
        network: Network,
        config: Config,
        view: tokio::sync::watch::Receiver<ExecutorView>,
        executor: Arc<dyn Executor>,
        options: Options,
    ) -> Result<Self, ExecError> {
        let local = network.local_peer_id();
        let store = options
            .store
            .unwrap_or_else(|| Box::new(MemoryStore::new()));
        let proofs = options.proofs;
        let state = State::with_store(config, network.keypair().clone(), store);
        let (events, _) = broadcast::channel(EVENTS);
        let sender = events.clone();
        let (work_tx, mut work_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let service = service::spawn(network, state, Some(view), move |event| {
            if let Event::Execute { .. } | Event::ProofNeeded { .. } = &event {
                let _ = work_tx.send(event.clone());
            }
            let _ = sender.send(event);
        })
        .await?;
        let weak = service.downgrade();
        tokio::spawn(async move {
            while let Some(event) = work_rx.recv().await {
                match event {
                    Event::Execute {
                        token,
                        work,
                        inputs,
                        witness,
                    } => {
                        tokio::spawn(run_work(
                            executor.clone(),
                            weak.clone(),
                            token,
                            work,
                            inputs,
                            witness,
                        ));
                    }
                    Event::ProofNeeded {
                        token,
                        proof_id,
                        key,
                        public_inputs,
                        peer,
                    } => {
                        let (proofs, weak) = (proofs.clone(), weak.clone());
                        tokio::spawn(check_proofs(
                            proofs,
                            weak,
                            token,
                            proof_id,
                            key,
                            public_inputs,
                            peer,
                        ));
                    }
                    _ => {}
                }
            }
        });
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

    async fn call(&self, command: Command) -> Result<Reply, ExecError> {
        Ok(self.service.call(command).await?)
    }

    /// Validates a sequence and hands it to its leader and replicas; returns its id.
    pub async fn announce_sequence(
        &self,
        sequence: ExecutionSequence,
    ) -> Result<SequenceId, ExecError> {
        expect_reply!(self.call(Command::Submit(sequence)).await?, Submitted)
    }

    /// Seals secret inputs (e.g. proving witnesses) of a sequence's nodes with HPKE to the
    /// replicas the sequence will go to, so only they (and, re-sealed by the leader, the
    /// holder of each node's lease) can read them. Call right before
    /// [`announce_sequence`](Self::announce_sequence): the replicas follow the live view.
    pub async fn seal_witnesses(
        &self,
        sequence: &mut ExecutionSequence,
        secrets: std::collections::BTreeMap<NodeId, Vec<u8>>,
    ) -> Result<(), ExecError> {
        let replicas = expect_reply!(self.call(Command::Replicas(sequence.id())).await?, Replicas);
        if replicas.is_empty() {
            return Err(ExecError::NoLeader);
        }
        let mut rng = rand::rngs::OsRng;
        for (node, secret) in secrets {
            let sealed = causality_net::seal::seal(&secret, &replicas, &mut rng)?;
            sequence.witnesses.insert(node, sealed);
        }
        Ok(())
    }

    /// A lease on a node, to run it here and [`submit_node_result`](Self::submit_node_result).
    pub async fn claim_node(
        &self,
        sequence_id: SequenceId,
        node: NodeId,
    ) -> Result<NodeClaimToken, ClaimError> {
        match self.call(Command::Claim { sequence_id, node }).await {
            Ok(Reply::Claimed(r)) => r,
            Ok(other) => unreachable!("answered {other:?}"),
            Err(e) => Err(ClaimError::Remote(e.to_string())),
        }
    }

    /// Hands in the result of a claimed node.
    pub async fn submit_node_result(
        &self,
        token: NodeClaimToken,
        result: ExecOutput,
    ) -> Result<(), SubmissionError> {
        match self
            .call(Command::Complete {
                token,
                outcome: Ok((result.output, result.proof_id)),
            })
            .await
        {
            Ok(Reply::Completed(r)) => r,
            Ok(other) => unreachable!("answered {other:?}"),
            Err(e) => Err(SubmissionError::Remote(e.to_string())),
        }
    }

    /// Runs a failed sequence again from its last good state (this node must be its
    /// creator): accepted results stay, failed nodes get fresh attempts. Monitor it again
    /// to follow the new run.
    pub async fn retry_sequence(&self, sequence_id: SequenceId) -> Result<(), RetryError> {
        match self.call(Command::Retry(sequence_id)).await {
            Ok(Reply::Retried(r)) => r,
            Ok(other) => unreachable!("answered {other:?}"),
            Err(e) => Err(RetryError::Remote(e.to_string())),
        }
    }

    /// Sequences this node learns of, as their statements arrive (stops on drop).
    pub fn subscribe_to_sequences(&self) -> SequenceSubscription {
        SequenceSubscription {
            stream: BroadcastStream::new(self.events.subscribe()),
        }
    }

    /// The statements of one sequence, until it completes or fails.
    pub async fn monitor_sequence(
        &self,
        sequence_id: SequenceId,
    ) -> Result<SequenceMonitor, ExecError> {
        let stream = BroadcastStream::new(self.events.subscribe());
        self.call(Command::Monitor(sequence_id)).await?;
        Ok(SequenceMonitor {
            sequence_id,
            stream,
            done: false,
            service: self.service.clone(),
        })
    }

    /// The latest statement of a sequence known here.
    pub async fn status(
        &self,
        sequence_id: SequenceId,
    ) -> Result<Option<ExecutionSequenceMessage>, ExecError> {
        Ok(expect_reply!(
            self.call(Command::Status(sequence_id)).await?,
            Status
        ))
    }

    /// Counters.
    pub async fn stats(&self) -> Result<Stats, ExecError> {
        Ok(expect_reply!(self.call(Command::Stats).await?, Stats))
    }
}

/// Statements of any sequence known here.
#[derive(Debug)]
pub struct SequenceSubscription {
    stream: BroadcastStream<Event>,
}

impl Stream for SequenceSubscription {
    type Item = ExecutionSequenceMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(Event::Status(m)))) => return Poll::Ready(Some(*m)),
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One sequence's statements; ends after the final one. Stops following on drop.
pub struct SequenceMonitor {
    sequence_id: SequenceId,
    stream: BroadcastStream<Event>,
    done: bool,
    service: Service<State>,
}

impl fmt::Debug for SequenceMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SequenceMonitor")
            .field("sequence_id", &self.sequence_id)
            .finish_non_exhaustive()
    }
}

impl SequenceMonitor {
    /// The next statement; `None` after the final one.
    pub async fn next(&mut self) -> Option<ExecutionSequenceMessage> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for SequenceMonitor {
    type Item = ExecutionSequenceMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(Event::Status(m)))) if m.sequence_id == self.sequence_id => {
                    if m.status.is_final() {
                        self.done = true;
                    }
                    return Poll::Ready(Some(*m));
                }
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for SequenceMonitor {
    fn drop(&mut self) {
        self.service
            .send_detached(Command::Unmonitor(self.sequence_id));
    }
}
