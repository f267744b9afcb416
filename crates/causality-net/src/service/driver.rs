//! The generic driver: runs one [`Protocol`] over a [`Network`], executing its outputs and
//! feeding it what arrives. It owns nothing the protocol decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SelectAll};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamMap;

use super::{CallId, InboundId, Input, Output, Protocol};
use crate::error::NetError;
use crate::network::{InboundRequest, Network, Requests, Subscription};
use crate::peer::PeerId;
use crate::protocol::RequestProtocol;
use crate::topic::Topic;

/// Commands queued to a service's driver.
const COMMANDS: usize = 256;

enum ToDriver<P: Protocol> {
    Command(P::Command),
    Call(P::Command, oneshot::Sender<P::Reply>),
}

/// A running protocol: send it commands or call it. The driver task stops when the last
/// clone is dropped.
pub struct Service<P: Protocol> {
    commands: mpsc::Sender<ToDriver<P>>,
    _shutdown: std::sync::Arc<oneshot::Sender<()>>,
}

impl<P: Protocol> Clone for Service<P> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            _shutdown: std::sync::Arc::clone(&self._shutdown),
        }
    }
}

impl<P: Protocol> fmt::Debug for Service<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

/// A handle on a [`Service`] that does not keep it running (for tasks the service itself
/// feeds, which would otherwise keep it alive forever).
pub struct WeakService<P: Protocol> {
    commands: mpsc::Sender<ToDriver<P>>,
    shutdown: std::sync::Weak<oneshot::Sender<()>>,
}

impl<P: Protocol> Clone for WeakService<P> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<P: Protocol> fmt::Debug for WeakService<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakService").finish_non_exhaustive()
    }
}

impl<P: Protocol> WeakService<P> {
    /// The service, while some [`Service`] clone still runs it.
    pub fn upgrade(&self) -> Option<Service<P>> {
        Some(Service {
            commands: self.commands.clone(),
            _shutdown: self.shutdown.upgrade()?,
        })
    }
}

impl<P: Protocol> Service<P> {
    /// A handle that does not keep the service running.
    pub fn downgrade(&self) -> WeakService<P> {
        WeakService {
            commands: self.commands.clone(),
            shutdown: std::sync::Arc::downgrade(&self._shutdown),
        }
    }

    /// Hands the protocol a command.
    pub async fn send(&self, command: P::Command) -> Result<(), NetError> {
        self.commands
            .send(ToDriver::Command(command))
            .await
            .map_err(|_| NetError::Closed)
    }

    /// Hands the protocol a command without waiting: for `Drop` implementations (a
    /// subscription that unsubscribes). Does nothing outside a tokio runtime.
    pub fn send_detached(&self, command: P::Command) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let service = self.clone();
            runtime.spawn(async move {
                let _ = service.send(command).await;
            });
        }
    }

    /// Hands the protocol a command and waits for its reply.
    pub async fn call(&self, command: P::Command) -> Result<P::Reply, NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(ToDriver::Call(command, reply))
            .await
            .map_err(|_| NetError::Closed)?;
        rx.await.map_err(|_| NetError::Closed)
    }
}

/// Starts `protocol` on `network`: serves its request protocols, then runs it until the
/// returned [`Service`] (every clone) is dropped. `view`, when given, is delivered as
/// [`Input::View`] on every change; `on_event` receives the protocol's events. Must be
/// called inside a tokio runtime.
pub async fn spawn<P: Protocol>(
    network: Network,
    protocol: P,
    view: Option<watch::Receiver<P::View>>,
    on_event: impl FnMut(P::Event) + Send + 'static,
) -> Result<Service<P>, NetError> {
    let protocols: HashMap<String, RequestProtocol> = protocol
        .protocols()
        .into_iter()
        .map(|p| (p.name().to_owned(), p))
        .collect();
    let mut requests = SelectAll::new();
    for p in protocols.values() {
        requests.push(network.serve(p).await?);
    }
    let (commands, commands_rx) = mpsc::channel(COMMANDS);
    let (shutdown, shutdown_rx) = oneshot::channel();
    let driver = Driver {
        peers: network.peer_set(),
        network,
        protocol,
        protocols,
        requests,
        subscriptions: StreamMap::new(),
        wanted: BTreeSet::new(),
        connected: BTreeSet::new(),
        timers: BTreeMap::new(),
        timer_seq: 0,
        inbound: HashMap::new(),
        next_inbound: 0,
        calls: HashMap::new(),
        next_call: 0,
        pending: FuturesUnordered::new(),
        on_event: Box::new(on_event),
    };
    tokio::spawn(driver.run(commands_rx, view, shutdown_rx));
    Ok(Service {
        commands,
        _shutdown: std::sync::Arc::new(shutdown),
    })
}

/// What a network operation in flight yields.
enum Done<P: Protocol> {
    Nothing,
    Input(Input<P>),
    Subscribed(Topic, Subscription),
}

/// A network operation in flight.
type Pending<P> = BoxFuture<'static, Done<P>>;

struct Driver<P: Protocol> {
    network: Network,
    protocol: P,
    protocols: HashMap<String, RequestProtocol>,
    requests: SelectAll<Requests>,
    subscriptions: StreamMap<Topic, Subscription>,
    /// Topics the protocol wants; a subscription arriving for another is dropped.
    wanted: BTreeSet<Topic>,
    peers: watch::Receiver<crate::PeerSet>,
    connected: BTreeSet<PeerId>,
    timers: BTreeMap<(u64, u64), P::Timer>,
    timer_seq: u64,
    inbound: HashMap<InboundId, InboundRequest>,
    next_inbound: u64,
    calls: HashMap<CallId, oneshot::Sender<P::Reply>>,
    next_call: u64,
    pending: FuturesUnordered<Pending<P>>,
    on_event: Box<dyn FnMut(P::Event) + Send>,
}

impl<P: Protocol> Driver<P> {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<ToDriver<P>>,
        mut view: Option<watch::Receiver<P::View>>,
        mut shutdown: oneshot::Receiver<()>,
    ) {
        self.handle(Input::Start);
        self.on_peers();
        if let Some(view) = &mut view {
            let current = view.borrow_and_update().clone();
            self.handle(Input::View(current));
        }
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let sleep = match next_timer {
                Some(at) => {
                    let wait = at.saturating_sub(self.network.now_ms());
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).boxed()
                }
                None => std::future::pending().boxed(),
            };
            let view_changed = async {
                match &mut view {
                    Some(view) => view.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                command = commands.recv() => match command {
                    Some(ToDriver::Command(command)) => self.handle(Input::Command { command, call: None }),
                    Some(ToDriver::Call(command, reply)) => {
                        self.next_call += 1;
                        let call = CallId(self.next_call);
                        self.calls.insert(call, reply);
                        self.handle(Input::Command { command, call: Some(call) });
                    }
                    None => break,
                },
                Ok(()) = self.peers.changed() => self.on_peers(),
                Some(done) = self.pending.next(), if !self.pending.is_empty() => match done {
                    Done::Nothing => {}
                    Done::Input(input) => self.handle(input),
                    Done::Subscribed(topic, subscription) => {
                        if self.wanted.contains(&topic) {
                            self.subscriptions.insert(topic, subscription);
                        }
                    }
                },
                Some((_, message)) = self.subscriptions.next(), if !self.subscriptions.is_empty() => {
                    self.handle(Input::Message(message));
                }
                Some(request) = self.requests.next() => {
                    self.next_inbound += 1;
                    let id = InboundId(self.next_inbound);
                    let input = Input::Request {
                        id,
                        peer: request.peer,
                        protocol: request.protocol.clone(),
                        body: request.body.clone(),
                    };
                    self.inbound.insert(id, request);
                    self.handle(input);
                }
                true = view_changed => {
                    let current = view.as_mut().map(|v| v.borrow_and_update().clone());
                    if let Some(current) = current {
                        self.handle(Input::View(current));
                    }
                }
                () = sleep => {
                    let now = self.network.now_ms();
                    while let Some(entry) = self.timers.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let timer = entry.remove();
                        self.handle(Input::Timer(timer));
                    }
                }
            }
        }
    }

    /// Peers with a completed handshake joined or left.
    fn on_peers(&mut self) {
        let now: BTreeSet<PeerId> = self
            .peers
            .borrow_and_update()
            .peers
            .iter()
            .filter(|p| p.agreement.is_some())
            .map(|p| p.peer)
            .collect();
        let gone: Vec<PeerId> = self.connected.difference(&now).copied().collect();
        let new: Vec<PeerId> = now.difference(&self.connected).copied().collect();
        self.connected = now;
        for peer in gone {
            self.handle(Input::PeerDisconnected(peer));
        }
        for peer in new {
            self.handle(Input::PeerConnected(peer));
        }
    }

    fn handle(&mut self, input: Input<P>) {
        let now = self.network.now_ms();
        self.protocol.handle(now, input);
        while let Some(output) = self.protocol.poll_output() {
            self.execute(output);
        }
    }

    fn subscribe(&mut self, topic: Topic, validate: bool) {
        if !self.wanted.insert(topic.clone()) {
            return;
        }
        let network = self.network.clone();
        self.pending.push(
            async move {
                let subscribed = if validate {
                    network.subscribe_validated(&topic).await
                } else {
                    network.subscribe(&topic).await
                };
                match subscribed {
                    Ok(subscription) => Done::Subscribed(topic, subscription),
                    Err(e) => {
                        tracing::warn!(target: "causality_net", topic = %topic, error = %e, "subscribe failed");
                        Done::Nothing
                    }
                }
            }
            .boxed(),
        );
    }

    fn execute(&mut self, output: Output<P>) {
        let network = self.network.clone();
        match output {
            Output::Publish {
                topic,
                payload_type,
                payload,
            } => self.pending.push(
                async move {
                    if let Err(e) = network.publish(&topic, &payload_type, payload).await {
                        tracing::debug!(target: "causality_net", topic = %topic, error = %e, "publish failed");
                    }
                    Done::Nothing
                }
                .boxed(),
            ),
            Output::Subscribe(topic) => self.subscribe(topic, false),
            Output::SubscribeValidated(topic) => self.subscribe(topic, true),
            Output::Validate { message, acceptance } => self.pending.push(
                async move {
                    let _ = network.validate(message, acceptance).await;
                    Done::Nothing
                }
                .boxed(),
            ),
            Output::Unsubscribe(topic) => {
                self.wanted.remove(&topic);
                self.subscriptions.remove(&topic);
            }
            Output::Request {
                id,
                peer,
                protocol,
                body,
            } => {
                let protocol = match self.protocols.get(&protocol) {
                    Some(p) => p.clone(),
                    None => match RequestProtocol::from_id(&protocol) {
                        Ok(p) => p,
                        Err(e) => {
                            self.handle(Input::RequestFailed {
                                id,
                                peer,
                                error: NetError::Config(e),
                            });
                            return;
                        }
                    },
                };
                self.pending.push(
                    async move {
                        Done::Input(match network.request(peer, &protocol, body).await {
                            Ok(body) => Input::Response { id, peer, body },
                            Err(error) => Input::RequestFailed { id, peer, error },
                        })
                    }
                    .boxed(),
                );
            }
            Output::Respond { id, result } => {
                if let Some(request) = self.inbound.remove(&id) {
                    match result {
                        Ok(body) => request.respond(body),
                        Err((reason, detail)) => request.refuse(reason, &detail),
                    }
                }
            }
            Output::Penalize {
                peer,
                severity,
                reason,
            } => self.pending.push(
                async move {
                    let _ = network.penalize(peer, severity.points(), &reason).await;
                    Done::Nothing
                }
                .boxed(),
            ),
            Output::Schedule { at_ms, timer } => {
                self.timer_seq += 1;
                self.timers.insert((at_ms, self.timer_seq), timer);
            }
            Output::Dial { peer, address } => self.pending.push(
                async move {
                    match network.dial(address.clone()).await {
                        Ok(()) => Done::Nothing,
                        Err(e) => {
                            tracing::debug!(target: "causality_net", address = %address, error = %e, "dial failed");
                            Done::Input(Input::DialFailed { peer, address })
                        }
                    }
                }
                .boxed(),
            ),
            Output::Disconnect(peer) => self.pending.push(
                async move {
                    let _ = network.disconnect(peer).await;
                    Done::Nothing
                }
                .boxed(),
            ),
            Output::Reply { call, reply } => {
                if let Some(sender) = self.calls.remove(&call) {
                    let _ = sender.send(reply);
                }
            }
            Output::Event(event) => (self.on_event)(event),
        }
    }
}
