//! Adversarial input to one register-sync state machine, driven by hand: forged, replayed
//! and malformed updates and nullifiers get typed errors and leave the stored state as it
//! was; only the peer that sent them is penalized.

use causality_hash::ContentId;
use causality_net::service::{CallId, Input, Output, Protocol, Severity};
use causality_net::{Acceptance, Keypair, Message, PROTOCOL_VERSION, PeerId, Topic};
use causality_regsync::messages::{self, RegisterStateMessage, update_topic};
use causality_regsync::{
    ClassRules, Command, Config, Event, Genesis, MemoryStore, NullifierUse, OpError, Operation,
    RegisterContents, RegisterDelta, RegisterId, Reply, State, StateHash, UpdateError,
    UpdateHeader,
};

fn balance(amount: u64) -> RegisterContents {
    RegisterContents::TokenBalance {
        token: "CAU".into(),
        amount,
    }
}

fn node(key: &Keypair, config: Config) -> State {
    let mut s = State::new(config, key.clone(), Box::new(MemoryStore::new()));
    s.handle(0, Input::Start);
    drain(&mut s);
    s
}

fn drain(s: &mut State) -> Vec<Output<State>> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn call(s: &mut State, command: Command) -> Reply {
    s.handle(
        1,
        Input::Command {
            command,
            call: Some(CallId(1)),
        },
    );
    drain(s)
        .into_iter()
        .find_map(|o| match o {
            Output::Reply { reply, .. } => Some(reply),
            _ => None,
        })
        .expect("a reply")
}

/// A follower of `domain` (and so of every register in it).
fn follower(domain: &str, config: Config) -> State {
    let mut s = node(&Keypair::from_index(50), config);
    s.handle(
        1,
        Input::Command {
            command: Command::FollowDomain(domain.into()),
            call: None,
        },
    );
    drain(&mut s);
    s
}

/// What `sender` publishing `payload` on `topic` delivers.
fn message(topic: Topic, payload: Vec<u8>, sender: PeerId, n: u64) -> Message {
    Message {
        id: ContentId::of(&[payload.as_slice(), &n.to_le_bytes()].concat()),
        topic,
        sender,
        seq: n,
        timestamp_ms: 0,
        version: PROTOCOL_VERSION,
        payload_type: messages::STATE_MESSAGE_TYPE.into(),
        payload,
        via: sender,
    }
}

/// Delivers a message; returns the verdict, penalties and events.
fn deliver(s: &mut State, m: Message) -> (Option<Acceptance>, Vec<(PeerId, Severity)>, Vec<Event>) {
    s.handle(10, Input::Message(m));
    let mut verdict = None;
    let mut penalties = Vec::new();
    let mut events = Vec::new();
    for o in drain(s) {
        match o {
            Output::Validate { acceptance, .. } => verdict = Some(acceptance),
            Output::Penalize { peer, severity, .. } => penalties.push((peer, severity)),
            Output::Event(e) => events.push(e),
            _ => {}
        }
    }
    (verdict, penalties, events)
}

fn rejected(events: &[Event]) -> Vec<UpdateError> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Rejected { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

/// What `owner` publishes on the creation topic when it creates `genesis`.
fn creation_of(owner: &Keypair, genesis: Genesis, amount: u64, n: u64) -> Message {
    let mut at_owner = node(owner, Config::default());
    at_owner.handle(
        1,
        Input::Command {
            command: Command::Create {
                genesis,
                contents: balance(amount),
                last_updated: 1,
                proof_id: None,
            },
            call: None,
        },
    );
    drain(&mut at_owner)
        .into_iter()
        .find_map(|o| match o {
            Output::Publish { topic, payload, .. } if topic.is(messages::CREATION_TOPIC) => {
                Some(message(topic, payload, owner.peer_id(), n))
            }
            _ => None,
        })
        .expect("the creation is published")
}

struct Setup {
    owner: Keypair,
    id: RegisterId,
    head: StateHash,
    creation: Message,
    follower: State,
}

/// An owner's register, created at the owner and applied at a follower.
fn setup(config: Config) -> Setup {
    let owner = Keypair::from_index(1);
    let genesis = Genesis::new(owner.peer_id(), "pay", "token", b"r");
    let id = genesis.id();
    let creation = creation_of(&owner, genesis, 100, 1);
    let mut follower = follower("pay", config);
    let (verdict, penalties, _) = deliver(&mut follower, creation.clone());
    assert_eq!(verdict, Some(Acceptance::Accept));
    assert!(penalties.is_empty());
    let head = follower.register(&id).expect("created").state_hash();
    Setup {
        owner,
        id,
        head,
        creation,
        follower,
    }
}

/// An update of the register at `head` to `amount`, signed by `signer`, with its header
/// fields then changed by `tamper` (and the delta by `tamper_delta`), re-signed.
fn update(
    s: &Setup,
    signer: &Keypair,
    operations: Vec<Operation>,
    tamper_delta: impl FnOnce(&mut RegisterDelta),
    tamper: impl FnOnce(&mut UpdateHeader),
) -> Message {
    let previous = s.follower.register(&s.id).unwrap();
    let mut delta = RegisterDelta {
        operations,
        previous_state_hash: Some(s.head),
    };
    let (next, _) = causality_regsync::apply(
        Some(&previous),
        &delta,
        causality_regsync::At {
            epoch: previous.epoch + 1,
            last_updated: 2,
        },
        &NoContext,
    )
    .unwrap_or_else(|_| {
        // Invalid operations: announce some state they cannot produce.
        let mut other = previous.clone();
        other.last_updated = u64::MAX;
        (other, Default::default())
    });
    tamper_delta(&mut delta);
    let mut header = UpdateHeader {
        register_id: s.id,
        epoch: previous.epoch + 1,
        previous_state_hash: Some(s.head),
        state_hash: next.state_hash(),
        delta_id: delta.id(),
        owner: next.owner,
        last_updated: 2,
        proof_id: None,
        fence: None,
        signature: [0; 64],
    };
    tamper(&mut header);
    let header = header.sign(signer);
    let payload = RegisterStateMessage {
        header,
        delta: Some(delta),
        full_state: None,
    }
    .encode();
    message(update_topic(&s.id), payload, signer.peer_id(), 7)
}

struct NoContext;

impl causality_regsync::Context for NoContext {
    fn register(&self, _: &RegisterId) -> Option<causality_regsync::Register> {
        None
    }
    fn split_credit(&self, _: &RegisterId) -> Option<(String, u64)> {
        None
    }
    fn merged(&self, _: &RegisterId) -> bool {
        false
    }
}

/// Delivers `m` and checks it was refused for `want`, the sender penalized, the relay
/// not blamed by gossip, and the state unchanged.
fn refused(s: &mut Setup, m: Message, want: impl Fn(&UpdateError) -> bool) {
    let sender = m.sender;
    let (verdict, penalties, events) = deliver(&mut s.follower, m);
    let errors = rejected(&events);
    assert!(errors.iter().any(&want), "refused with {errors:?}");
    assert_eq!(verdict, Some(Acceptance::Ignore), "not forwarded");
    assert_eq!(
        penalties,
        vec![(sender, Severity::Severe)],
        "its sender is penalized"
    );
    assert_eq!(
        s.follower.register(&s.id).unwrap().state_hash(),
        s.head,
        "stored state unchanged"
    );
}

#[test]
fn an_update_signed_by_another_key_is_refused() {
    let mut s = setup(Config::default());
    let mallory = Keypair::from_index(66);
    let m = update(
        &s,
        &mallory,
        vec![Operation::Update(balance(1))],
        |_| {},
        |_| {},
    );
    refused(&mut s, m, |e| matches!(e, UpdateError::Unauthorized));
    // Nor can it hand itself the register.
    let m = update(
        &s,
        &mallory,
        vec![Operation::TransferOwnership(mallory.peer_id())],
        |_| {},
        |_| {},
    );
    refused(&mut s, m, |e| matches!(e, UpdateError::Unauthorized));
}

#[test]
fn a_delta_that_does_not_produce_the_announced_state_is_refused() {
    let mut s = setup(Config::default());
    let owner = s.owner.clone();
    let lie = ContentId::of(b"another state");
    let m = update(
        &s,
        &owner,
        vec![Operation::Update(balance(1))],
        |_| {},
        |h| h.state_hash = lie,
    );
    refused(
        &mut s,
        m,
        |e| matches!(e, UpdateError::WrongStateHash { announced, .. } if *announced == lie),
    );
}

#[test]
fn a_delta_on_another_previous_state_is_refused() {
    let mut s = setup(Config::default());
    let owner = s.owner.clone();
    let m = update(
        &s,
        &owner,
        vec![Operation::Update(balance(1))],
        |d| d.previous_state_hash = Some(ContentId::of(b"elsewhere")),
        |_| {},
    );
    // The header's delta id covers the tampered delta, so the chain link itself is what
    // fails.
    refused(&mut s, m, |e| {
        matches!(e, UpdateError::Op(OpError::WrongPrevious))
    });
}

#[test]
fn a_delta_swapped_under_a_signed_header_is_refused() {
    let mut s = setup(Config::default());
    let owner = s.owner.clone();
    let m = update(
        &s,
        &owner,
        vec![Operation::Update(balance(1))],
        |d| d.operations = vec![Operation::Update(balance(1_000_000))],
        |h| h.delta_id = ContentId::of(b"the original delta"),
    );
    refused(&mut s, m, |e| matches!(e, UpdateError::WrongDelta));
}

#[test]
fn invalid_operations_are_refused_with_their_reason() {
    let mut s = setup(Config::default());
    let owner = s.owner.clone();
    let child = ContentId::of(b"child");
    let m = update(
        &s,
        &owner,
        vec![Operation::Split(vec![(child, 101)])],
        |_| {},
        |_| {},
    );
    refused(&mut s, m, |e| {
        matches!(
            e,
            UpdateError::Op(OpError::Insufficient {
                balance: 100,
                needed: 101
            })
        )
    });
    let m = update(
        &s,
        &owner,
        vec![Operation::Update(RegisterContents::TokenBalance {
            token: "OTHER".into(),
            amount: 100,
        })],
        |_| {},
        |_| {},
    );
    refused(&mut s, m, |e| {
        matches!(e, UpdateError::Op(OpError::Conservation(_)))
    });
    let m = update(
        &s,
        &owner,
        vec![
            Operation::SetLifecycle {
                lifecycle: causality_regsync::Lifecycle::Archived,
                into: None,
            },
            Operation::Update(balance(5)),
        ],
        |_| {},
        |_| {},
    );
    refused(&mut s, m, |e| {
        matches!(e, UpdateError::Op(OpError::NotActive(_)))
    });
    let m = update(
        &s,
        &owner,
        vec![Operation::Update(balance(1))],
        |_| {},
        |h| h.epoch += 5,
    );
    refused(&mut s, m, |e| {
        matches!(e, UpdateError::Op(OpError::Epoch { .. }))
    });
}

#[test]
fn a_replayed_update_changes_nothing_and_costs_nobody() {
    let mut s = setup(Config::default());
    let owner = s.owner.clone();
    let m = update(
        &s,
        &owner,
        vec![Operation::Update(balance(60))],
        |_| {},
        |_| {},
    );
    let (verdict, penalties, events) = deliver(&mut s.follower, m.clone());
    assert_eq!(verdict, Some(Acceptance::Accept));
    assert!(penalties.is_empty());
    assert!(events.iter().any(|e| matches!(e, Event::Applied { .. })));
    let after = s.follower.register(&s.id).unwrap();
    for replay in [m, s.creation.clone()] {
        let (_, penalties, events) = deliver(&mut s.follower, replay);
        assert!(penalties.is_empty(), "a replay is no fault of its relay");
        assert!(
            !events.iter().any(|e| matches!(e, Event::Applied { .. })),
            "nothing applied twice"
        );
        assert_eq!(s.follower.register(&s.id).unwrap(), after);
    }
    assert_eq!(
        s.follower.stats().deltas_applied,
        2,
        "the creation and the update, once each"
    );
}

#[test]
fn malformed_and_misplaced_updates_are_rejected_for_the_relay() {
    let mut s = setup(Config::default());
    let junk = message(update_topic(&s.id), vec![0xff; 64], s.owner.peer_id(), 3);
    let (verdict, ..) = deliver(&mut s.follower, junk);
    assert!(
        matches!(verdict, Some(Acceptance::Reject(_))),
        "the relay could have checked the bytes"
    );
    let huge = message(update_topic(&s.id), vec![0; 64 << 10], s.owner.peer_id(), 4);
    let (verdict, ..) = deliver(&mut s.follower, huge);
    assert!(matches!(verdict, Some(Acceptance::Reject(r)) if r.contains("limit")));
    // A valid update of one register on another register's topic.
    let owner = s.owner.clone();
    let mut m = update(
        &s,
        &owner,
        vec![Operation::Update(balance(1))],
        |_| {},
        |_| {},
    );
    m.topic = update_topic(&ContentId::of(b"some other register"));
    let (verdict, ..) = deliver(&mut s.follower, m);
    assert!(matches!(verdict, Some(Acceptance::Reject(_))));
    assert_eq!(s.follower.register(&s.id).unwrap().state_hash(), s.head);
}

#[test]
fn an_update_that_arrives_before_its_predecessor_waits_for_it() {
    let owner = Keypair::from_index(1);
    let mut at_owner = node(&owner, Config::default());
    let genesis = Genesis::new(owner.peer_id(), "pay", "token", b"r");
    let id = genesis.id();
    let mut published = Vec::new();
    let mut publish = |s: &mut State, command| {
        s.handle(
            1,
            Input::Command {
                command,
                call: None,
            },
        );
        for o in drain(s) {
            if let Output::Publish { topic, payload, .. } = o
                && topic.is(messages::UPDATE_TOPIC)
            {
                published.push(message(
                    topic,
                    payload,
                    owner.peer_id(),
                    published.len() as u64,
                ));
            }
        }
    };
    publish(
        &mut at_owner,
        Command::Create {
            genesis,
            contents: balance(9),
            last_updated: 1,
            proof_id: None,
        },
    );
    for h in 2..5 {
        publish(
            &mut at_owner,
            Command::Update {
                register_id: id,
                operations: vec![Operation::Update(balance(h))],
                last_updated: h,
                proof_id: None,
            },
        );
    }
    let mut f = node(&Keypair::from_index(9), Config::default());
    f.handle(
        1,
        Input::Command {
            command: Command::Follow(id),
            call: None,
        },
    );
    drain(&mut f);
    // Delivered newest first: each waits, then all apply once the creation comes.
    for m in published.iter().rev() {
        let (_, penalties, _) = deliver(&mut f, m.clone());
        assert!(penalties.is_empty());
    }
    assert_eq!(f.register(&id).unwrap().epoch, 3);
    assert_eq!(f.stats().buffered, 3);
    assert_eq!(f.stats().sync_requests, 0, "nothing fetched");
}

#[test]
fn proof_carrying_classes_need_a_checked_proof() {
    let key = ContentId::of(b"the class's verification key");
    let config = || Config {
        classes: [(
            "zk".to_owned(),
            ClassRules {
                critical: false,
                proof_key: Some(key),
            },
        )]
        .into(),
        ..Config::default()
    };
    let owner = Keypair::from_index(1);
    let mut at_owner = node(&owner, config());
    let genesis = Genesis::new(owner.peer_id(), "pay", "zk", b"r");
    let id = genesis.id();
    // Locally too: no proof, no update.
    let reply = call(
        &mut at_owner,
        Command::Create {
            genesis: genesis.clone(),
            contents: balance(1),
            last_updated: 1,
            proof_id: None,
        },
    );
    assert!(matches!(
        reply,
        Reply::Updated(Err(causality_regsync::SyncError::Update(
            UpdateError::MissingProof(_)
        )))
    ));
    let _ = (genesis, id);
    // A follower asks for the proof before applying, and applies only on a good verdict.
    let owner_key = owner.clone();
    let header_for = |proof_id: Option<ContentId>, nonce: &[u8]| {
        let g = Genesis::new(owner_key.peer_id(), "pay", "zk", nonce);
        let state = causality_regsync::Register {
            id: g.id(),
            genesis: g.clone(),
            owner: owner_key.peer_id(),
            contents: balance(1),
            lifecycle: causality_regsync::Lifecycle::Active,
            epoch: 0,
            last_updated: 1,
            consumed_into: None,
        };
        let delta = RegisterDelta {
            operations: vec![Operation::Create {
                genesis: g,
                contents: balance(1),
            }],
            previous_state_hash: None,
        };
        let header = UpdateHeader {
            register_id: state.id,
            epoch: 0,
            previous_state_hash: None,
            state_hash: state.state_hash(),
            delta_id: delta.id(),
            owner: owner_key.peer_id(),
            last_updated: 1,
            proof_id,
            fence: None,
            signature: [0; 64],
        }
        .sign(&owner_key);
        let topic = messages::domain_topic(messages::CREATION_TOPIC, "pay").unwrap();
        let (rid, hash) = (state.id, state.state_hash());
        (
            rid,
            hash,
            message(
                topic,
                RegisterStateMessage {
                    header,
                    delta: None,
                    full_state: Some(state),
                }
                .encode(),
                owner_key.peer_id(),
                1,
            ),
        )
    };
    let mut f = follower("pay", config());
    let (no_proof, _, m) = header_for(None, b"a");
    let (_, penalties, events) = deliver(&mut f, m);
    assert!(
        rejected(&events)
            .iter()
            .any(|e| matches!(e, UpdateError::MissingProof(_)))
    );
    assert_eq!(penalties.len(), 1);
    assert!(f.register(&no_proof).is_none());

    for (nonce, verdict) in [
        (&b"bad"[..], Err("does not verify".to_owned())),
        (&b"good"[..], Ok(())),
    ] {
        let proof_id = ContentId::of(nonce);
        let (rid, hash, m) = header_for(Some(proof_id), nonce);
        let (verdict_now, _, events) = deliver(&mut f, m);
        assert_eq!(verdict_now, None, "the verdict waits for the proof");
        let asked = events.iter().find_map(|e| match e {
            Event::ProofNeeded {
                proof_id: p,
                key: k,
                binding,
                ..
            } => Some((*p, *k, *binding)),
            _ => None,
        });
        assert_eq!(
            asked,
            Some((proof_id, key, causality_regsync::binding(&rid, &hash)))
        );
        assert!(
            f.register(&rid).is_none(),
            "not applied before the proof is checked"
        );
        let ok = verdict.is_ok();
        f.handle(
            20,
            Input::Command {
                command: Command::ProofChecked {
                    proof_id,
                    result: verdict,
                },
                call: None,
            },
        );
        let outputs = drain(&mut f);
        let accepted = outputs.iter().any(|o| {
            matches!(
                o,
                Output::Validate {
                    acceptance: Acceptance::Accept,
                    ..
                }
            )
        });
        assert_eq!(accepted, ok, "forwarded only when the proof checks");
        assert_eq!(f.register(&rid).is_some(), ok);
        if !ok {
            assert!(outputs.iter().any(|o| matches!(
                o,
                Output::Event(Event::Rejected {
                    error: UpdateError::InvalidProof { .. },
                    ..
                })
            )));
        }
    }
}

#[test]
fn nullifiers_are_checked_and_a_second_use_is_kept_as_evidence() {
    let mut s = setup(Config::default());
    let owner = s.owner.clone();
    let nullifier_message = |u: &NullifierUse, n| {
        let topic = messages::domain_topic(messages::NULLIFIER_TOPIC, "pay").unwrap();
        let mut m = message(topic, u.encode(), owner.peer_id(), n);
        m.payload_type = messages::NULLIFIER_TYPE.into();
        m
    };
    // Signed by someone who does not own the register: not accepted.
    let mallory = Keypair::from_index(66);
    let forged = NullifierUse::new("pay", [1; 32], s.id, &mallory);
    let (verdict, ..) = deliver(&mut s.follower, nullifier_message(&forged, 1));
    assert_eq!(verdict, Some(Acceptance::Ignore));
    assert!(
        s.follower
            .store()
            .nullifier("pay", &[1; 32])
            .unwrap()
            .is_none()
    );
    // A tampered signature: rejected for the relay.
    let mut tampered = NullifierUse::new("pay", [2; 32], s.id, &owner);
    tampered.nullifier = [3; 32];
    let (verdict, ..) = deliver(&mut s.follower, nullifier_message(&tampered, 2));
    assert!(matches!(verdict, Some(Acceptance::Reject(_))));
    // The owner's use is accepted once; a second, different use is evidence.
    let first = NullifierUse::new("pay", [4; 32], s.id, &owner);
    let (verdict, _, events) = deliver(&mut s.follower, nullifier_message(&first, 3));
    assert_eq!(verdict, Some(Acceptance::Accept));
    assert!(events.iter().any(|e| matches!(e, Event::Nullified(_))));
    let (again, ..) = deliver(&mut s.follower, nullifier_message(&first, 4));
    assert_eq!(
        again,
        Some(Acceptance::Accept),
        "the same use again is no fault"
    );
    // The same owner spends the same nullifier from a second register of theirs.
    let other = Genesis::new(owner.peer_id(), "pay", "token", b"second");
    let other_id = other.id();
    let creation = creation_of(&owner, other, 5, 9);
    deliver(&mut s.follower, creation);
    let second = NullifierUse::new("pay", [4; 32], other_id, &owner);
    let (verdict, penalties, events) = deliver(&mut s.follower, nullifier_message(&second, 5));
    assert!(
        penalties.is_empty(),
        "the relay of a double use is not at fault"
    );
    assert_eq!(
        verdict,
        Some(Acceptance::Accept),
        "forwarded once, so every node sees both"
    );
    let evidence = events
        .iter()
        .find_map(|e| match e {
            Event::DoubleUse(d) => Some((**d).clone()),
            _ => None,
        })
        .expect("a double use");
    let kept = s
        .follower
        .store()
        .nullifier("pay", &[4; 32])
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.id(),
        first.id().min(second.id()),
        "the lower use id is kept"
    );
    assert_eq!(evidence.kept, kept);
    assert_eq!(
        s.follower.store().double_uses("pay").unwrap(),
        vec![evidence.clone()]
    );
    // The refused use seen again is not forwarded again.
    let (verdict, ..) = deliver(&mut s.follower, nullifier_message(&evidence.rejected, 6));
    assert_ne!(verdict, Some(Acceptance::Accept));
}

/// Sends `follower` a sync for `id`; answers its request with `response`; returns the
/// penalties and the reply.
fn sync_answered(
    follower: &mut State,
    id: RegisterId,
    server: PeerId,
    response: causality_regsync::messages::Response,
) -> (Vec<(PeerId, Severity)>, Option<Reply>, Vec<Event>) {
    follower.handle(1, Input::PeerConnected(server));
    drain(follower);
    follower.handle(
        2,
        Input::Command {
            command: Command::Synchronize {
                register_id: id,
                peers: vec![server],
            },
            call: Some(CallId(7)),
        },
    );
    let request = drain(follower)
        .into_iter()
        .find_map(|o| match o {
            Output::Request { id, .. } => Some(id),
            _ => None,
        })
        .expect("a sync request");
    follower.handle(
        3,
        Input::Response {
            id: request,
            peer: server,
            body: response.encode(),
        },
    );
    let (mut penalties, mut reply, mut events) = (Vec::new(), None, Vec::new());
    for o in drain(follower) {
        match o {
            Output::Penalize { peer, severity, .. } => penalties.push((peer, severity)),
            Output::Reply { reply: r, .. } => reply = Some(r),
            Output::Event(e) => events.push(e),
            _ => {}
        }
    }
    (penalties, reply, events)
}

#[test]
fn a_server_that_forges_the_chain_or_the_state_is_penalized_and_changes_nothing() {
    let owner = Keypair::from_index(1);
    let server = Keypair::from_index(2).peer_id();
    let genesis = Genesis::new(owner.peer_id(), "pay", "token", b"r");
    let id = genesis.id();
    let state = causality_regsync::Register::created(genesis.clone(), balance(5), 1);
    let delta = RegisterDelta {
        operations: vec![Operation::Create {
            genesis,
            contents: balance(5),
        }],
        previous_state_hash: None,
    };
    let header = |signer: &Keypair, state: &causality_regsync::Register| {
        UpdateHeader {
            register_id: id,
            epoch: 0,
            previous_state_hash: None,
            state_hash: state.state_hash(),
            delta_id: delta.id(),
            owner: owner.peer_id(),
            last_updated: 1,
            proof_id: None,
            fence: None,
            signature: [0; 64],
        }
        .sign(signer)
    };
    let sync = |headers, full_state| causality_regsync::messages::Response::Sync {
        headers,
        deltas: Vec::new(),
        full_state,
        more: false,
    };
    let mut rich = state.clone();
    rich.contents = balance(1_000_000);
    let cases = [
        (
            "a header not signed by the owner",
            sync(
                vec![header(&Keypair::from_index(66), &state)],
                Some(state.clone()),
            ),
        ),
        (
            "a state that is not the header's",
            sync(vec![header(&owner, &state)], Some(rich.clone())),
        ),
        (
            "a chain that does not start at the creation",
            sync(
                vec![{
                    let mut h = header(&owner, &state);
                    h.epoch = 3;
                    h.previous_state_hash = Some(ContentId::of(b"nowhere"));
                    h.sign(&owner)
                }],
                Some(state.clone()),
            ),
        ),
    ];
    for (what, response) in cases {
        let mut f = node(&Keypair::from_index(9), Config::default());
        let (penalties, reply, events) = sync_answered(&mut f, id, server, response);
        assert_eq!(penalties, vec![(server, Severity::Severe)], "{what}");
        assert!(!rejected(&events).is_empty(), "{what}");
        assert!(f.register(&id).is_none(), "{what}: nothing stored");
        assert!(
            matches!(reply, Some(Reply::Register(Err(_)))),
            "{what}: the caller learns it failed"
        );
    }
    // The honest answer is taken.
    let mut f = node(&Keypair::from_index(9), Config::default());
    let (penalties, reply, _) = sync_answered(
        &mut f,
        id,
        server,
        sync(vec![header(&owner, &state)], Some(state.clone())),
    );
    assert!(penalties.is_empty());
    assert!(matches!(reply, Some(Reply::Register(Ok(r))) if r == state));
}

#[test]
fn a_write_with_a_lower_fencing_token_is_refused_without_blame() {
    let mut s = setup(Config::default());
    let owner = s.owner.clone();
    let key = ContentId::of(b"execution node 7");
    let fenced =
        |token| move |h: &mut UpdateHeader| h.fence = Some(causality_regsync::Fence { key, token });
    let m = update(
        &s,
        &owner,
        vec![Operation::Update(balance(50))],
        |_| {},
        fenced(5 << 32 | 1),
    );
    let (verdict, ..) = deliver(&mut s.follower, m);
    assert_eq!(verdict, Some(Acceptance::Accept));
    s.head = s.follower.register(&s.id).unwrap().state_hash();
    assert_eq!(
        s.follower.store().fence(&s.id, &key).unwrap(),
        Some(5 << 32 | 1)
    );
    // The zombie of an earlier lease writes on top: refused, and nobody is penalized.
    let zombie = update(
        &s,
        &owner,
        vec![Operation::Update(balance(1))],
        |_| {},
        fenced(4 << 32 | 9),
    );
    let (verdict, penalties, events) = deliver(&mut s.follower, zombie);
    assert_eq!(verdict, Some(Acceptance::Ignore));
    assert!(penalties.is_empty());
    assert!(
        rejected(&events)
            .iter()
            .any(|e| matches!(e, UpdateError::StaleFence { .. }))
    );
    assert_eq!(
        s.follower.register(&s.id).unwrap().state_hash(),
        s.head,
        "unchanged"
    );
    // A later lease's write goes through.
    let next = update(
        &s,
        &owner,
        vec![Operation::Update(balance(2))],
        |_| {},
        fenced(6 << 32 | 1),
    );
    let (verdict, ..) = deliver(&mut s.follower, next);
    assert_eq!(verdict, Some(Acceptance::Accept));
}
