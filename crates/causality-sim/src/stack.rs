//! One node running every protocol — discovery, proof sharing, register sync and execution
//! coordination — as one [`Protocol`], so the simulation runner can run whole nodes.
//!
//! The stack routes each input to the protocol it belongs to: messages by the topics each
//! protocol subscribed to, requests by protocol id, responses by the outbound id it handed
//! out in place of the protocol's own, timers, commands and replies by their variant.
//! Connection changes go to all four. It wires the protocols together the way a node
//! does: discovery's membership becomes proof sharing's verifier view and execution's
//! executor view (peers by role), and what proof sharing stores is provided through
//! discovery.
//!
//! A Byzantine node in a scenario runs this same stack and, besides, sends bytes of its
//! choosing ([`Command::Inject`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use causality_discovery::Membership;
use causality_exec::{ExecutorInfo, ExecutorView};
use causality_hash::ContentId;
use causality_net::service::{Input, OutboundId, Output, Protocol};
use causality_net::{Acceptance, Keypair, Message, PeerId, RefusalReason, RequestProtocol, Topic};
use causality_proofshare::{Announcement, VerifierView};
use multiaddr::Multiaddr;

use crate::shared::Stores;

/// The role a discovery record names for a node that verifies proofs.
pub const VERIFIER_ROLE: &str = "verifier";
/// The role a discovery record names for a node that executes work.
pub const EXECUTOR_ROLE: &str = "executor";

/// Which protocol of the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Peer discovery.
    Discovery,
    /// Proof sharing.
    Proofs,
    /// Register sync.
    Registers,
    /// Execution coordination.
    Exec,
}

type DiscoveryState = causality_discovery::State;
type ProofState = causality_proofshare::State;
type RegisterState = causality_regsync::State;
type ExecState = causality_exec::State;

/// A command for one protocol of the stack, or bytes to send as they are.
#[derive(Debug)]
pub enum Command {
    /// For discovery.
    Discovery(causality_discovery::Command),
    /// For proof sharing.
    Proofs(causality_proofshare::Command),
    /// For register sync.
    Registers(causality_regsync::Command),
    /// For execution coordination.
    Exec(causality_exec::Command),
    /// What a Byzantine node sends besides what its protocols do.
    Inject(Injection),
}

/// Bytes sent as they are, not through a protocol.
#[derive(Debug)]
pub enum Injection {
    /// A publish on a topic.
    Publish {
        /// Where.
        topic: Topic,
        /// The payload type it claims.
        payload_type: String,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// A request to a peer (its answer is dropped).
    Request {
        /// To whom.
        peer: PeerId,
        /// The protocol id or name.
        protocol: String,
        /// The bytes.
        body: Vec<u8>,
    },
    /// Close the connections to a peer (what a keepalive timing out does).
    Disconnect(PeerId),
}

/// A reply of one protocol.
#[derive(Debug)]
pub enum Reply {
    /// From discovery.
    Discovery(causality_discovery::Reply),
    /// From proof sharing.
    Proofs(causality_proofshare::Reply),
    /// From register sync.
    Registers(causality_regsync::Reply),
    /// From execution coordination.
    Exec(causality_exec::Reply),
}

/// An event of one protocol.
#[derive(Debug)]
pub enum Event {
    /// From discovery.
    Discovery(causality_discovery::Event),
    /// From proof sharing.
    Proofs(causality_proofshare::Event),
    /// From register sync.
    Registers(causality_regsync::Event),
    /// From execution coordination.
    Exec(causality_exec::Event),
}

/// A timer of one protocol.
#[derive(Debug)]
pub enum Timer {
    /// Of discovery.
    Discovery(<DiscoveryState as Protocol>::Timer),
    /// Of proof sharing.
    Proofs(<ProofState as Protocol>::Timer),
    /// Of register sync.
    Registers(<RegisterState as Protocol>::Timer),
    /// Of execution coordination.
    Exec(<ExecState as Protocol>::Timer),
}

/// How one node's stack is set up.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Discovery (its `roles` decide what the others see this node as).
    pub discovery: causality_discovery::Config,
    /// Proof sharing.
    pub proofs: causality_proofshare::Config,
    /// Register sync.
    pub registers: causality_regsync::Config,
    /// Execution coordination.
    pub exec: causality_exec::Config,
    /// What every peer with the executor role is taken to run (the simulation's executors
    /// are alike).
    pub executors: ExecutorInfo,
    /// Where this node listens.
    pub address: Multiaddr,
}

/// A protocol of the stack, with how its types map into the stack's.
trait Component: Protocol {
    const PART: Part;
    fn timer(timer: Self::Timer) -> Timer;
    fn reply(reply: Self::Reply) -> Reply;
    fn event(event: Self::Event) -> Event;
    /// Notes what the stack itself reacts to.
    fn observe(_event: &Self::Event, _notes: &mut Notes) {}
}

impl Component for DiscoveryState {
    const PART: Part = Part::Discovery;
    fn timer(timer: Self::Timer) -> Timer {
        Timer::Discovery(timer)
    }
    fn reply(reply: Self::Reply) -> Reply {
        Reply::Discovery(reply)
    }
    fn event(event: Self::Event) -> Event {
        Event::Discovery(event)
    }
    fn observe(event: &Self::Event, notes: &mut Notes) {
        if let causality_discovery::Event::Membership(m) = event {
            notes.membership = Some(m.clone());
        }
    }
}

impl Component for ProofState {
    const PART: Part = Part::Proofs;
    fn timer(timer: Self::Timer) -> Timer {
        Timer::Proofs(timer)
    }
    fn reply(reply: Self::Reply) -> Reply {
        Reply::Proofs(reply)
    }
    fn event(event: Self::Event) -> Event {
        Event::Proofs(event)
    }
    fn observe(event: &Self::Event, notes: &mut Notes) {
        if let causality_proofshare::Event::Provide(id) = event {
            notes.provide.push(*id);
        }
    }
}

impl Component for RegisterState {
    const PART: Part = Part::Registers;
    fn timer(timer: Self::Timer) -> Timer {
        Timer::Registers(timer)
    }
    fn reply(reply: Self::Reply) -> Reply {
        Reply::Registers(reply)
    }
    fn event(event: Self::Event) -> Event {
        Event::Registers(event)
    }
}

impl Component for ExecState {
    const PART: Part = Part::Exec;
    fn timer(timer: Self::Timer) -> Timer {
        Timer::Exec(timer)
    }
    fn reply(reply: Self::Reply) -> Reply {
        Reply::Exec(reply)
    }
    fn event(event: Self::Event) -> Event {
        Event::Exec(event)
    }
}

/// What the stack reacts to after a protocol ran.
#[derive(Default)]
struct Notes {
    membership: Option<Membership>,
    provide: Vec<ContentId>,
}

/// The most announcements remembered while their verdict is pending.
const MAX_PENDING_AUDIT: usize = 4096;

/// The routing tables, and the outputs for the runner.
#[derive(Default)]
struct Router {
    topics: BTreeMap<Topic, BTreeSet<Part>>,
    validated: BTreeSet<Topic>,
    protocols: HashMap<String, Part>,
    outbound: HashMap<OutboundId, (Part, OutboundId)>,
    next_outbound: u64,
    outputs: VecDeque<Output<Stack>>,
    notes: Notes,
    /// Proofs carried by announcements awaiting this node's verdict, by message id.
    pending: BTreeMap<ContentId, ContentId>,
    /// Proofs this node sent on or announced itself.
    forwarded: Vec<ContentId>,
}

impl Router {
    fn outbound_id(&mut self) -> OutboundId {
        self.next_outbound += 1;
        OutboundId(self.next_outbound)
    }

    /// Carries one protocol's output out, translated into the stack's.
    fn lift<P: Component>(&mut self, output: Output<P>) {
        let out = match output {
            Output::Publish {
                topic,
                payload_type,
                payload,
            } => {
                if topic.is(causality_proofshare::PROOF_TOPIC) {
                    self.forwarded.extend(inline_proof(&payload));
                }
                Output::Publish {
                    topic,
                    payload_type,
                    payload,
                }
            }
            Output::Subscribe(topic) => {
                let parts = self.topics.entry(topic.clone()).or_default();
                let first = parts.is_empty();
                parts.insert(P::PART);
                if !first {
                    return;
                }
                Output::Subscribe(topic)
            }
            Output::SubscribeValidated(topic) => {
                self.topics
                    .entry(topic.clone())
                    .or_default()
                    .insert(P::PART);
                if !self.validated.insert(topic.clone()) {
                    return;
                }
                Output::SubscribeValidated(topic)
            }
            Output::Validate {
                message,
                acceptance,
            } => {
                if let Some(proof) = self.pending.remove(&message)
                    && acceptance == Acceptance::Accept
                {
                    self.forwarded.push(proof);
                }
                Output::Validate {
                    message,
                    acceptance,
                }
            }
            Output::Unsubscribe(topic) => {
                let Some(parts) = self.topics.get_mut(&topic) else {
                    return;
                };
                parts.remove(&P::PART);
                if !parts.is_empty() {
                    return;
                }
                self.topics.remove(&topic);
                self.validated.remove(&topic);
                Output::Unsubscribe(topic)
            }
            Output::Request {
                id,
                peer,
                protocol,
                body,
            } => {
                let ours = self.outbound_id();
                self.outbound.insert(ours, (P::PART, id));
                Output::Request {
                    id: ours,
                    peer,
                    protocol,
                    body,
                }
            }
            Output::Respond { id, result } => Output::Respond { id, result },
            Output::Penalize {
                peer,
                severity,
                reason,
            } => Output::Penalize {
                peer,
                severity,
                reason,
            },
            Output::Schedule { at_ms, timer } => Output::Schedule {
                at_ms,
                timer: P::timer(timer),
            },
            Output::Dial { peer, address } => Output::Dial { peer, address },
            Output::Disconnect(peer) => Output::Disconnect(peer),
            Output::Reply { call, reply } => Output::Reply {
                call,
                reply: P::reply(reply),
            },
            Output::Event(event) => {
                P::observe(&event, &mut self.notes);
                Output::Event(P::event(event))
            }
        };
        self.outputs.push_back(out);
    }
}

/// The proof an inline announcement carries, if the payload is one.
fn inline_proof(payload: &[u8]) -> Option<ContentId> {
    match Announcement::decode(payload, &causality_proofshare::Limits::default()) {
        Ok(Announcement::Inline(proof)) => Some(proof.proof_id),
        _ => None,
    }
}

/// Hands `input` to `protocol` and carries its outputs out.
fn run<P: Component>(protocol: &mut P, router: &mut Router, now_ms: u64, input: Input<P>) {
    protocol.handle(now_ms, input);
    while let Some(output) = protocol.poll_output() {
        router.lift(output);
    }
}

/// One node running every protocol, its inputs routed to the protocol each belongs to.
pub struct Stack {
    discovery: DiscoveryState,
    proofs: ProofState,
    registers: RegisterState,
    exec: ExecState,
    executors: ExecutorInfo,
    router: Router,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("peer", &self.discovery.membership().own.peer)
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// The stack of the node of `keypair`, keeping what it must not lose in `stores` (a
    /// restart from the same stores resumes), its clock at `now_ms`.
    pub fn new(config: StackConfig, keypair: &Keypair, stores: &Stores, now_ms: u64) -> Self {
        let discovery = DiscoveryState::new(
            config.discovery,
            keypair.clone(),
            causality_net::default_hello(),
            vec![config.address],
            now_ms,
        );
        let proofs = ProofState::new(
            config.proofs,
            keypair.clone(),
            causality_proofshare::Verifiers::standard(),
            Box::new(stores.proofs.clone()),
        );
        let registers = RegisterState::new(
            config.registers,
            keypair.clone(),
            Box::new(stores.registers.clone()),
        );
        let exec =
            ExecState::with_store(config.exec, keypair.clone(), Box::new(stores.exec.clone()));
        let mut router = Router::default();
        let parts: [(Part, Vec<RequestProtocol>); 4] = [
            (Part::Discovery, discovery.protocols()),
            (Part::Proofs, proofs.protocols()),
            (Part::Registers, registers.protocols()),
            (Part::Exec, exec.protocols()),
        ];
        for (part, protocols) in parts {
            for p in protocols {
                router.protocols.insert(p.name().to_owned(), part);
                for id in p.ids() {
                    router.protocols.insert(id.to_string(), part);
                }
            }
        }
        Self {
            discovery,
            proofs,
            registers,
            exec,
            executors: config.executors,
            router,
        }
    }

    /// Discovery's state machine.
    pub fn discovery(&self) -> &DiscoveryState {
        &self.discovery
    }

    /// Proof sharing's state machine.
    pub fn proofs(&self) -> &ProofState {
        &self.proofs
    }

    /// Register sync's state machine.
    pub fn registers(&self) -> &RegisterState {
        &self.registers
    }

    /// Execution coordination's state machine.
    pub fn exec(&self) -> &ExecState {
        &self.exec
    }

    /// The proofs this node sent on (accepted for gossip) or announced inline since the
    /// last call: what an audit checks no honest node ever does with an invalid proof.
    pub fn take_forwarded(&mut self) -> Vec<ContentId> {
        std::mem::take(&mut self.router.forwarded)
    }

    fn each(&mut self, now_ms: u64, input: impl Fn() -> Untyped) {
        let r = &mut self.router;
        run(&mut self.discovery, r, now_ms, input().input());
        run(&mut self.proofs, r, now_ms, input().input());
        run(&mut self.registers, r, now_ms, input().input());
        run(&mut self.exec, r, now_ms, input().input());
    }

    fn to(&mut self, part: Part, now_ms: u64, input: Untyped) {
        let r = &mut self.router;
        match part {
            Part::Discovery => run(&mut self.discovery, r, now_ms, input.input()),
            Part::Proofs => run(&mut self.proofs, r, now_ms, input.input()),
            Part::Registers => run(&mut self.registers, r, now_ms, input.input()),
            Part::Exec => run(&mut self.exec, r, now_ms, input.input()),
        }
    }

    fn on_message(&mut self, now_ms: u64, message: Message) {
        let parts: Vec<Part> = self
            .router
            .topics
            .get(&message.topic)
            .map(|p| p.iter().copied().collect())
            .unwrap_or_default();
        if parts.is_empty() {
            if self.router.validated.contains(&message.topic) {
                self.router.outputs.push_back(Output::Validate {
                    message: message.id,
                    acceptance: Acceptance::Ignore,
                });
            }
            return;
        }
        if self.router.validated.contains(&message.topic)
            && message.topic.is(causality_proofshare::PROOF_TOPIC)
            && let Some(proof) = inline_proof(&message.payload)
        {
            if self.router.pending.len() >= MAX_PENDING_AUDIT {
                self.router.pending.pop_first();
            }
            self.router.pending.insert(message.id, proof);
        }
        for part in parts {
            self.to(part, now_ms, Untyped::Message(message.clone()));
        }
    }

    fn inject(&mut self, injection: Injection) {
        let out = match injection {
            Injection::Publish {
                topic,
                payload_type,
                payload,
            } => {
                if topic.is(causality_proofshare::PROOF_TOPIC) {
                    self.router.forwarded.extend(inline_proof(&payload));
                }
                Output::Publish {
                    topic,
                    payload_type,
                    payload,
                }
            }
            Injection::Request {
                peer,
                protocol,
                body,
            } => Output::Request {
                // Not in the routing table: the answer is dropped.
                id: self.router.outbound_id(),
                peer,
                protocol,
                body,
            },
            Injection::Disconnect(peer) => Output::Disconnect(peer),
        };
        self.router.outputs.push_back(out);
    }

    /// What the protocols noted: membership becomes the others' views; stored proof
    /// material is provided through discovery.
    fn react(&mut self, now_ms: u64) {
        if let Some(membership) = self.router.notes.membership.take() {
            let (verifiers, executors) = views(&membership, &self.executors);
            run(
                &mut self.proofs,
                &mut self.router,
                now_ms,
                Input::View(verifiers),
            );
            run(
                &mut self.exec,
                &mut self.router,
                now_ms,
                Input::View(executors),
            );
        }
        for id in std::mem::take(&mut self.router.notes.provide) {
            run(
                &mut self.discovery,
                &mut self.router,
                now_ms,
                Input::Command {
                    command: causality_discovery::Command::Provide(id),
                    call: None,
                },
            );
        }
    }
}

/// Proof sharing's verifier view and execution's executor view from discovery's members
/// (this node included), by role.
fn views(membership: &Membership, executors: &ExecutorInfo) -> (VerifierView, ExecutorView) {
    let records = std::iter::once(&membership.own).chain(membership.records());
    let mut verifiers = BTreeSet::new();
    let mut running = BTreeMap::new();
    for r in records {
        if r.roles.iter().any(|x| x == VERIFIER_ROLE) {
            verifiers.insert(r.peer);
        }
        if r.roles.iter().any(|x| x == EXECUTOR_ROLE) {
            running.insert(r.peer, executors.clone());
        }
    }
    (Arc::new(verifiers), Arc::new(running))
}

/// An input every protocol takes alike (no protocol-specific content).
enum Untyped {
    Start,
    Message(Message),
    Request {
        id: causality_net::service::InboundId,
        peer: PeerId,
        protocol: String,
        body: Vec<u8>,
    },
    Response {
        id: OutboundId,
        peer: PeerId,
        body: Vec<u8>,
    },
    RequestFailed {
        id: OutboundId,
        peer: PeerId,
        error: causality_net::NetError,
    },
    Connected(PeerId),
    Disconnected(PeerId),
    DialFailed {
        peer: Option<PeerId>,
        address: Multiaddr,
    },
}

impl Untyped {
    fn input<P: Protocol>(self) -> Input<P> {
        match self {
            Self::Start => Input::Start,
            Self::Message(m) => Input::Message(m),
            Self::Request {
                id,
                peer,
                protocol,
                body,
            } => Input::Request {
                id,
                peer,
                protocol,
                body,
            },
            Self::Response { id, peer, body } => Input::Response { id, peer, body },
            Self::RequestFailed { id, peer, error } => Input::RequestFailed { id, peer, error },
            Self::Connected(p) => Input::PeerConnected(p),
            Self::Disconnected(p) => Input::PeerDisconnected(p),
            Self::DialFailed { peer, address } => Input::DialFailed { peer, address },
        }
    }
}

impl Protocol for Stack {
    type Command = Command;
    type Reply = Reply;
    type Event = Event;
    type Timer = Timer;
    type View = ();

    fn protocols(&self) -> Vec<RequestProtocol> {
        let mut all = self.discovery.protocols();
        all.extend(self.proofs.protocols());
        all.extend(self.registers.protocols());
        all.extend(self.exec.protocols());
        all
    }

    fn handle(&mut self, now_ms: u64, input: Input<Self>) {
        match input {
            Input::Start => self.each(now_ms, || Untyped::Start),
            Input::Message(message) => self.on_message(now_ms, message),
            Input::Request {
                id,
                peer,
                protocol,
                body,
            } => match self.router.protocols.get(&protocol).copied() {
                Some(part) => self.to(
                    part,
                    now_ms,
                    Untyped::Request {
                        id,
                        peer,
                        protocol,
                        body,
                    },
                ),
                None => self.router.outputs.push_back(Output::Respond {
                    id,
                    result: Err((RefusalReason::UnsupportedProtocol, protocol)),
                }),
            },
            Input::Response { id, peer, body } => {
                if let Some((part, id)) = self.router.outbound.remove(&id) {
                    self.to(part, now_ms, Untyped::Response { id, peer, body });
                }
            }
            Input::RequestFailed { id, peer, error } => {
                if let Some((part, id)) = self.router.outbound.remove(&id) {
                    self.to(part, now_ms, Untyped::RequestFailed { id, peer, error });
                }
            }
            Input::Timer(timer) => {
                let r = &mut self.router;
                match timer {
                    Timer::Discovery(t) => run(&mut self.discovery, r, now_ms, Input::Timer(t)),
                    Timer::Proofs(t) => run(&mut self.proofs, r, now_ms, Input::Timer(t)),
                    Timer::Registers(t) => run(&mut self.registers, r, now_ms, Input::Timer(t)),
                    Timer::Exec(t) => run(&mut self.exec, r, now_ms, Input::Timer(t)),
                }
            }
            Input::Command { command, call } => {
                let r = &mut self.router;
                match command {
                    Command::Discovery(command) => {
                        run(
                            &mut self.discovery,
                            r,
                            now_ms,
                            Input::Command { command, call },
                        );
                    }
                    Command::Proofs(command) => {
                        run(
                            &mut self.proofs,
                            r,
                            now_ms,
                            Input::Command { command, call },
                        );
                    }
                    Command::Registers(command) => {
                        run(
                            &mut self.registers,
                            r,
                            now_ms,
                            Input::Command { command, call },
                        );
                    }
                    Command::Exec(command) => {
                        run(&mut self.exec, r, now_ms, Input::Command { command, call });
                    }
                    Command::Inject(injection) => self.inject(injection),
                }
            }
            Input::PeerConnected(peer) => self.each(now_ms, || Untyped::Connected(peer)),
            Input::PeerDisconnected(peer) => self.each(now_ms, || Untyped::Disconnected(peer)),
            Input::DialFailed { peer, address } => self.each(now_ms, || Untyped::DialFailed {
                peer,
                address: address.clone(),
            }),
            Input::View(()) => {}
        }
        self.react(now_ms);
    }

    fn poll_output(&mut self) -> Option<Output<Self>> {
        self.router.outputs.pop_front()
    }
}
