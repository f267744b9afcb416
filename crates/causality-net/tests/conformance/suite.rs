//! The conformance suite: every test runs on every adapter.

use std::collections::BTreeMap;
use std::time::Duration;

use causality_net::{
    Hello, Keypair, NetError, Network, NetworkEvent, PROTOCOL_VERSION, Policy, ProtocolVersion,
    RefusalReason, Rejection, Topic, TopicKind, sign_envelope,
};
use futures::StreamExt;
use prost::Message as _;

use crate::harness::{Harness, PATIENCE, eventually, wait_event};

const UPDATE: TopicKind = TopicKind::new("register", "update");

fn topic(id: &str) -> Topic {
    Topic::new(UPDATE, id).unwrap()
}

/// Another id whose topic shares `topic`'s physical shard.
fn same_shard_as(topic: &Topic) -> Topic {
    (0..)
        .map(|i| Topic::new(UPDATE, format!("other-{i}")).unwrap())
        .find(|t| t.shard(16) == topic.shard(16))
        .unwrap()
}

async fn next(sub: &mut causality_net::Subscription) -> causality_net::Message {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("timed out waiting for a message")
        .expect("subscription ended")
}

/// Messages published by `a` reach subscribers `b` and `c` exactly once, and only subscribers
/// of that logical topic (not of another topic on the same shard).
pub(crate) async fn pubsub_delivers_each_message_once<H: Harness>(h: &H) {
    let (a, b, c) = (h.node().await, h.node().await, h.node().await);
    h.connect(&a, &b).await;
    h.connect(&b, &c).await;
    h.connect(&a, &c).await;
    let updates = topic("r1");
    let neighbour = same_shard_as(&updates);
    let mut at_b = b.subscribe(&updates).await.unwrap();
    let mut at_c = c.subscribe(&updates).await.unwrap();
    let mut other = c.subscribe(&neighbour).await.unwrap();
    h.wait_subscribed(&a, &updates, b.local_peer_id()).await;
    h.wait_subscribed(&a, &updates, c.local_peer_id()).await;

    let mut ids = Vec::new();
    for i in 0..20u32 {
        ids.push(
            a.publish(&updates, "test.Update", i.to_le_bytes().to_vec())
                .await
                .unwrap(),
        );
    }
    for sub in [&mut at_b, &mut at_c] {
        let mut got = Vec::new();
        for _ in 0..20 {
            let message = next(sub).await;
            assert_eq!(message.sender, a.local_peer_id());
            assert_eq!(message.topic, updates);
            assert_eq!(message.payload_type, "test.Update");
            got.push(message.id);
        }
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want, "each message exactly once");
    }
    h.quiesce().await;
    // Nothing more: no duplicates, and nothing for the neighbouring logical topic.
    assert!(at_b.try_next().is_none(), "duplicate delivered");
    assert!(other.try_next().is_none(), "wrong logical topic delivered");
    assert_eq!(b.metrics().delivered, 20);
    assert_eq!(c.metrics().delivered, 20);
}

/// Dropping the last subscription on a shard leaves the gossip topic; subscribing again
/// works.
pub(crate) async fn unsubscribe_leaves_the_topic<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    h.connect(&a, &b).await;
    let t = topic("r2");
    let sub = b.subscribe(&t).await.unwrap();
    h.wait_subscribed(&a, &t, b.local_peer_id()).await;
    drop(sub);
    eventually("unsubscription to propagate", || async {
        !a.topic_peers(&t)
            .await
            .unwrap()
            .contains(&b.local_peer_id())
    })
    .await;
    let mut again = b.subscribe(&t).await.unwrap();
    h.wait_subscribed(&a, &t, b.local_peer_id()).await;
    a.publish(&t, "x", b"back".to_vec()).await.unwrap();
    assert_eq!(next(&mut again).await.payload, b"back");
}

const ECHO: &str = "/causality/echo/0.1.0";

async fn serve_echo(net: &Network) {
    let mut requests = net.serve(ECHO).await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let body = request.body.clone();
            request.respond(body);
        }
    });
}

/// Requests are answered; unknown protocols, dropped requests and oversize bodies fail with
/// precise errors; 256 KiB bodies make the round trip.
pub(crate) async fn request_response<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    h.connect(&a, &b).await;
    serve_echo(&b).await;
    let bp = b.local_peer_id();
    assert_eq!(
        a.request(bp, ECHO, b"ping".to_vec()).await.unwrap(),
        b"ping"
    );
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    assert_eq!(a.request(bp, ECHO, big.clone()).await.unwrap(), big);

    match a.request(bp, "/causality/nothing/0.1.0", vec![]).await {
        Err(NetError::Refused {
            reason: RefusalReason::UnsupportedProtocol,
            ..
        }) => {}
        other => panic!("expected an unsupported-protocol refusal, got {other:?}"),
    }
    assert!(matches!(
        b.serve(ECHO).await,
        Err(NetError::AlreadyServing(_))
    ));

    // A handler that drops the request without answering.
    let mut dropping = b.serve("/causality/drop/0.1.0").await.unwrap();
    tokio::spawn(async move {
        while let Some(request) = dropping.next().await {
            drop(request);
        }
    });
    match a.request(bp, "/causality/drop/0.1.0", vec![1]).await {
        Err(NetError::Refused {
            reason: RefusalReason::HandlerFailed,
            ..
        }) => {}
        other => panic!("expected a handler-failed refusal, got {other:?}"),
    }

    let huge = vec![0u8; 5 * 1024 * 1024];
    assert!(matches!(
        a.request(bp, ECHO, huge).await,
        Err(NetError::TooLarge {
            what: "request",
            ..
        })
    ));
    // The connection is still good.
    assert_eq!(
        a.request(bp, ECHO, b"still".to_vec()).await.unwrap(),
        b"still"
    );
}

/// A burst of concurrent requests on one connection is answered in full (libp2p delivers
/// bursts of inbound streams faster than an accept loop takes them; none may be lost).
pub(crate) async fn concurrent_requests_are_all_answered<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    h.connect(&a, &b).await;
    serve_echo(&b).await;
    let bp = b.local_peer_id();
    let mut tasks = Vec::new();
    for i in 0..32u32 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            a.request(bp, ECHO, i.to_le_bytes().to_vec()).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let answer = task.await.unwrap().expect("answered");
        assert_eq!(answer, (i as u32).to_le_bytes());
    }
}

/// Disconnecting is seen by both sides.
pub(crate) async fn disconnect<H: Harness>(h: &H) {
    let (a, b) = (h.node().await, h.node().await);
    h.connect(&a, &b).await;
    assert_eq!(a.peers().len(), 1);
    assert!(a.peers()[0].agreement.is_some());
    let mut a_events = a.events();
    let mut b_events = b.events();
    a.disconnect(b.local_peer_id()).await.unwrap();
    let (ap, bp) = (a.local_peer_id(), b.local_peer_id());
    wait_event(
        &mut a_events,
        |e| matches!(e, NetworkEvent::PeerDisconnected { peer } if *peer == bp),
    )
    .await;
    wait_event(
        &mut b_events,
        |e| matches!(e, NetworkEvent::PeerDisconnected { peer } if *peer == ap),
    )
    .await;
    assert!(a.peers().is_empty());
    assert!(b.peers().is_empty());
}

/// A peer of another major version is refused with the reason, on both sides.
pub(crate) async fn version_mismatch<H: Harness>(h: &H) {
    let a = h.node().await;
    let future = ProtocolVersion::new(PROTOCOL_VERSION.major + 1, 0, 0);
    let b = h
        .node_with(|c| c.hello = Hello::new(future, c.hello.features).with_agent("future/1"))
        .await;
    let mut a_events = a.events();
    let mut b_events = b.events();
    a.dial(b.listen_addresses()[0].clone()).await.unwrap();
    let event = wait_event(&mut a_events, |e| {
        matches!(e, NetworkEvent::VersionMismatch { .. })
    })
    .await;
    assert!(
        event_text(&event).contains("major versions differ"),
        "{event:?}"
    );
    wait_event(&mut b_events, |e| {
        matches!(e, NetworkEvent::VersionMismatch { .. })
    })
    .await;
    eventually("the incompatible peer to be disconnected", || async {
        a.peers().is_empty() && b.peers().is_empty()
    })
    .await;
}

fn event_text(event: &NetworkEvent) -> String {
    match event {
        NetworkEvent::VersionMismatch { reason, .. } => reason.to_string(),
        other => format!("{other:?}"),
    }
}

/// A victim subscribed to a topic and an attacker connected to it.
struct Arena {
    victim: Network,
    attacker: Network,
    topic: Topic,
    physical: causality_net::PhysicalTopic,
    _sub: causality_net::Subscription,
}

async fn arena<H: Harness>(h: &H) -> Arena {
    let victim = h.node().await;
    let attacker = h.node().await;
    h.connect(&attacker, &victim).await;
    let topic = topic("target");
    let sub = victim.subscribe(&topic).await.unwrap();
    h.wait_subscribed(&attacker, &topic, victim.local_peer_id())
        .await;
    let physical = victim.physical_topic(&topic);
    Arena {
        victim,
        attacker,
        topic,
        physical,
        _sub: sub,
    }
}

async fn expect_rejection(
    arena: &Arena,
    bytes: Vec<u8>,
    matches: impl Fn(&Rejection) -> bool,
    label: &str,
) {
    expect_rejection_blaming(arena, bytes, matches, label, true).await;
}

/// Publishes `bytes` from the attacker and waits for the victim's rejection; the attacker
/// (relay and originator here) must be penalized when `blamed`, untouched otherwise.
async fn expect_rejection_blaming(
    arena: &Arena,
    bytes: Vec<u8>,
    matches: impl Fn(&Rejection) -> bool,
    label: &str,
    blamed: bool,
) {
    let mut events = arena.victim.events();
    let before = arena
        .victim
        .metrics()
        .rejected
        .get(label)
        .copied()
        .unwrap_or(0);
    arena
        .attacker
        .publish_raw(arena.physical.clone(), bytes)
        .await
        .unwrap();
    let attacker = arena.attacker.local_peer_id();
    let event = wait_event(
        &mut events,
        |e| matches!(e, NetworkEvent::MessageRejected { from, .. } if *from == attacker),
    )
    .await;
    let NetworkEvent::MessageRejected { reason, .. } = event else {
        unreachable!()
    };
    assert!(matches(&reason), "{label}: unexpected rejection {reason:?}");
    assert_eq!(reason.label(), label);
    let after = arena
        .victim
        .metrics()
        .rejected
        .get(label)
        .copied()
        .unwrap_or(0);
    assert_eq!(after, before + 1, "{label} counted once");
    let score = arena
        .victim
        .peers()
        .iter()
        .find(|p| p.peer == attacker)
        .map(|p| p.score);
    if blamed {
        assert!(
            score.is_some_and(|s| s < 0),
            "{label}: attacker not penalized ({score:?})"
        );
    } else {
        assert_eq!(score, Some(0), "{label}: nobody is to blame");
    }
}

/// Every kind of bad gossip is rejected with its typed reason, counted and penalized. Each
/// case gets a fresh attacker: gossip scoring rightly stops listening to a peer after a few
/// invalid messages, before they reach the validator.
pub(crate) async fn bad_gossip_is_rejected<H: Harness>(h: &H) {
    let forger = Keypair::from_index(999_999);
    let limit = causality_net::Limits::default().max_envelope_bytes;

    let a = arena(h).await;
    expect_rejection(
        &a,
        b"\xff\xff\xff not protobuf".to_vec(),
        |r| matches!(r, Rejection::Malformed(_)),
        "malformed",
    )
    .await;

    let a = arena(h).await;
    expect_rejection(
        &a,
        vec![0u8; limit + 1000],
        |r| matches!(r, Rejection::Oversize { .. }),
        "oversize",
    )
    .await;

    // Forged signature: the attacker's own envelope with the signature's last byte flipped
    // (the sender matches the transport's source, so the signature is what fails).
    let a = arena(h).await;
    let mut forged = a
        .attacker
        .sign_own_envelope(&a.topic, 1, a.victim.now_ms(), b"x");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    expect_rejection(
        &a,
        forged,
        |r| matches!(r, Rejection::BadSignature),
        "bad_signature",
    )
    .await;

    // Validly signed by someone else, but injected by the attacker as originator.
    let a = arena(h).await;
    let stolen = sign_envelope(&forger, &a.topic, 1, a.victim.now_ms(), b"y");
    expect_rejection(
        &a,
        stolen,
        |r| matches!(r, Rejection::WrongSender { .. }),
        "wrong_sender",
    )
    .await;

    // A valid envelope for a topic that does not travel on this physical topic.
    let a = arena(h).await;
    let elsewhere = (0..)
        .map(|i| topic(&format!("elsewhere-{i}")))
        .find(|t| a.victim.physical_topic(t) != a.physical)
        .unwrap();
    let misrouted = a
        .attacker
        .sign_own_envelope(&elsewhere, 2, a.victim.now_ms(), b"z");
    expect_rejection(
        &a,
        misrouted,
        |r| matches!(r, Rejection::BadTopic(_)),
        "bad_topic",
    )
    .await;

    // Replay: a sequence number below the window. Nobody can be blamed for it (a relay
    // cannot know our window); a different envelope under a sequence number we accepted
    // is an equivocation (`equivocation_is_proven_and_the_evidence_spreads`).
    let a = arena(h).await;
    let mut events = a.victim.events();
    publish_accepted(&a, 1_000, b"recent").await;
    let ancient = a
        .attacker
        .sign_own_envelope(&a.topic, 10, a.victim.now_ms(), b"ancient");
    expect_rejection_blaming(
        &a,
        ancient,
        |r| matches!(r, Rejection::Replay { seq: 10, .. }),
        "replay",
        false,
    )
    .await;
    assert!(
        events_now(&mut events)
            .iter()
            .all(|e| !matches!(e, NetworkEvent::PeerBanned { .. }))
    );

    // Timestamps an hour away from the victim's clock, either way.
    let a = arena(h).await;
    let future = a
        .attacker
        .sign_own_envelope(&a.topic, 11, a.victim.now_ms() + 3_600_000, b"late");
    expect_rejection(
        &a,
        future,
        |r| matches!(r, Rejection::ClockSkew { skew_ms, .. } if *skew_ms > 0),
        "clock_skew",
    )
    .await;
    let past = a
        .attacker
        .sign_own_envelope(&a.topic, 12, a.victim.now_ms() - 3_600_000, b"early");
    expect_rejection(
        &a,
        past,
        |r| matches!(r, Rejection::ClockSkew { skew_ms, .. } if *skew_ms < 0),
        "clock_skew",
    )
    .await;

    // The same peer's honest messages still get through afterwards.
    publish_accepted(&a, 20, b"fine").await;
}

/// The attacker publishes a valid envelope under `seq`; the victim accepts it (its first).
async fn publish_accepted(a: &Arena, seq: u64, payload: &[u8]) {
    let envelope = a
        .attacker
        .sign_own_envelope(&a.topic, seq, a.victim.now_ms(), payload);
    a.attacker
        .publish_raw(a.physical.clone(), envelope)
        .await
        .unwrap();
    wait_accepted(a, 1).await;
}

async fn wait_accepted(a: &Arena, n: u64) {
    eventually("the valid message to be accepted", || async {
        a.victim.metrics().accepted >= n
    })
    .await;
}

fn events_now(events: &mut causality_net::EventStream) -> Vec<NetworkEvent> {
    let mut out = Vec::new();
    while let Some(Some(event)) = events.next().now_or_never() {
        out.push(event);
    }
    out
}

/// A flood beyond the rate limit is dropped, the flooder is banned, and an honest peer's
/// messages keep arriving throughout.
pub(crate) async fn flood_is_limited_and_honest_traffic_flows<H: Harness>(h: &H) {
    let victim = h
        .node_with(|c| {
            c.limits.messages_per_second = 20;
            c.limits.message_burst = 40;
        })
        .await;
    let flooder = h.node().await;
    let honest = h.node().await;
    h.connect(&flooder, &victim).await;
    h.connect(&honest, &victim).await;
    let t = topic("flood");
    let mut sub = victim.subscribe(&t).await.unwrap();
    h.wait_subscribed(&flooder, &t, victim.local_peer_id())
        .await;
    h.wait_subscribed(&honest, &t, victim.local_peer_id()).await;
    let mut events = victim.events();

    let flood = {
        let flooder = flooder.clone();
        let t = t.clone();
        tokio::spawn(async move {
            for i in 0..400u32 {
                if flooder
                    .publish(&t, "spam", i.to_le_bytes().to_vec())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        })
    };
    let mut honest_ids = Vec::new();
    for i in 0..10u32 {
        honest_ids.push(
            honest
                .publish(&t, "honest", i.to_le_bytes().to_vec())
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flood.await.unwrap();
    let fp = flooder.local_peer_id();
    wait_event(
        &mut events,
        |e| matches!(e, NetworkEvent::PeerBanned { peer, .. } if *peer == fp),
    )
    .await;
    assert!(victim.is_banned(&fp));
    let mut received_honest = Vec::new();
    let mut spam = 0;
    eventually("honest messages to arrive", || {
        while let Some(message) = sub.try_next() {
            if message.sender == honest.local_peer_id() {
                received_honest.push(message.id);
            } else {
                spam += 1;
            }
        }
        let done = received_honest.len() == honest_ids.len();
        async move { done }
    })
    .await;
    let rejected: BTreeMap<_, _> = victim.metrics().rejected;
    assert!(
        rejected.get("rate_limited").copied().unwrap_or(0) > 0,
        "{rejected:?}"
    );
    assert!(spam < 400, "the flood was not limited: {spam} delivered");
}

/// Requests: malformed frames and over-rate requests are refused with reasons; the policy
/// gates protected protocols.
pub(crate) async fn bad_requests_are_refused<H: Harness>(h: &H) {
    let server = h
        .node_with(|c| {
            c.limits.requests_per_second = 5;
            c.limits.request_burst = 5;
        })
        .await;
    let client = h.node().await;
    h.connect(&client, &server).await;
    serve_echo(&server).await;
    let sp = server.local_peer_id();

    let reply = client
        .request_raw(sp, ECHO, b"\xff\xfe garbage".to_vec())
        .await
        .unwrap();
    let decoded =
        <causality_net::proto::v1::Response as prost::Message>::decode(reply.as_slice()).unwrap();
    let Some(causality_net::proto::v1::response::Result::Refused(refusal)) = decoded.result else {
        panic!("a malformed request was answered: {decoded:?}");
    };
    assert_eq!(
        refusal.reason,
        causality_net::proto::v1::refusal::Reason::BadRequest as i32
    );

    let mut limited = 0;
    for _ in 0..20 {
        if let Err(NetError::Refused {
            reason: RefusalReason::RateLimited,
            ..
        }) = client.request(sp, ECHO, b"x".to_vec()).await
        {
            limited += 1;
        }
    }
    assert!(
        limited >= 10,
        "only {limited} of 20 requests were rate limited"
    );

    // Authorization: only role holders may use the protected protocol.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server
        .set_policy(Policy::open().require(ECHO, "operator"))
        .await
        .unwrap();
    match client.request(sp, ECHO, b"x".to_vec()).await {
        Err(NetError::Refused {
            reason: RefusalReason::Unauthorized,
            ..
        }) => {}
        other => panic!("expected unauthorized, got {other:?}"),
    }
    server
        .set_policy(
            Policy::open()
                .grant(client.local_peer_id(), "operator")
                .require(ECHO, "operator"),
        )
        .await
        .unwrap();
    assert_eq!(
        client.request(sp, ECHO, b"ok".to_vec()).await.unwrap(),
        b"ok"
    );
}

use futures::FutureExt as _;

/// Cheap checks come before the signature: a forged envelope that is also misrouted, or
/// also below the replay window, is refused for the cheap reason (no signature work is
/// spent on it). (A stale timestamp is charged to the originator, so its signature is
/// checked first: a forgery cannot get an honest originator penalized.)
pub(crate) async fn cheap_checks_come_before_the_signature<H: Harness>(h: &H) {
    let a = arena(h).await;
    let elsewhere = (0..)
        .map(|i| topic(&format!("elsewhere-{i}")))
        .find(|t| a.victim.physical_topic(t) != a.physical)
        .unwrap();
    let mut forged = a
        .attacker
        .sign_own_envelope(&elsewhere, 3, a.victim.now_ms(), b"z");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    expect_rejection(
        &a,
        forged,
        |r| matches!(r, Rejection::BadTopic(_)),
        "bad_topic",
    )
    .await;

    let a = arena(h).await;
    publish_accepted(&a, 1_000, b"recent").await;
    let mut ancient = a
        .attacker
        .sign_own_envelope(&a.topic, 4, a.victim.now_ms(), b"old");
    let last = ancient.len() - 1;
    ancient[last] ^= 1;
    expect_rejection_blaming(
        &a,
        ancient,
        |r| matches!(r, Rejection::Replay { seq: 4, .. }),
        "replay",
        false,
    )
    .await;

    let a = arena(h).await;
    let mut stale =
        a.attacker
            .sign_own_envelope(&a.topic, 4, a.victim.now_ms() - 3_600_000, b"old");
    let last = stale.len() - 1;
    stale[last] ^= 1;
    expect_rejection(
        &a,
        stale,
        |r| matches!(r, Rejection::BadSignature),
        "bad_signature",
    )
    .await;
}

/// On a topic a node validates, gossip forwards only what it accepts: in the line
/// `a — b — c`, `c` receives what `b` accepted, never what `b` rejected or left unjudged,
/// and a rejection penalizes the relay (`a`) that delivered it.
pub(crate) async fn validated_topics_forward_only_what_is_accepted<H: Harness>(h: &H) {
    use causality_net::Acceptance;
    let (a, b, c) = (h.node().await, h.node().await, h.node().await);
    h.connect(&a, &b).await;
    h.connect(&b, &c).await;
    let proofs = topic("validated");
    let mut at_b = b.subscribe_validated(&proofs).await.unwrap();
    let mut at_c = c.subscribe(&proofs).await.unwrap();
    h.wait_subscribed(&a, &proofs, b.local_peer_id()).await;
    h.wait_subscribed(&b, &proofs, c.local_peer_id()).await;

    for payload in [&b"bad"[..], b"unjudged", b"good"] {
        a.publish(&proofs, "test.Proof", payload.to_vec())
            .await
            .unwrap();
        let message = next(&mut at_b).await;
        assert_eq!(message.payload, payload);
        let verdict = match payload {
            b"bad" => Acceptance::Reject("not a proof".into()),
            b"unjudged" => continue,
            _ => Acceptance::Accept,
        };
        b.validate(message.id, verdict).await.unwrap();
    }
    // `b` forwards in verdict order, so a forwarded rejection would have come first.
    let first = next(&mut at_c).await;
    assert_eq!(first.payload, b"good");
    assert_eq!(first.sender, a.local_peer_id());
    h.quiesce().await;
    assert!(
        at_c.try_next().is_none(),
        "something unaccepted was forwarded"
    );
    assert_eq!(b.metrics().rejected.get("invalid_payload"), Some(&1));
    let score_of_a = b
        .peers()
        .into_iter()
        .find(|p| p.peer == a.local_peer_id())
        .map(|p| p.score);
    assert!(
        score_of_a.is_some_and(|s| s < 0),
        "relay not penalized: {score_of_a:?}"
    );
    // The unjudged message expires unforwarded (waited out in virtual time only; the
    // timeout is the core's, the same on both adapters).
    if !H::VIRTUAL_TIME {
        return;
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(b.metrics().validation_timeouts >= 1);
    assert!(at_c.try_next().is_none());
}

/// A sender that signs two envelopes under one sequence number is proven to equivocate
/// where the second arrives: it is banned, and the evidence reaches a peer that saw neither
/// envelope, which checks it and bans the key itself. Evidence that does not hold is refused
/// and costs whoever sent it.
pub(crate) async fn equivocation_is_proven_and_the_evidence_spreads<H: Harness>(h: &H) {
    let a = arena(h).await;
    let bystander = h.node().await;
    h.connect(&bystander, &a.victim).await;
    let mut victim_events = a.victim.events();
    let mut bystander_events = bystander.events();
    let k = a.attacker.local_peer_id();
    let proven = |e: &NetworkEvent| matches!(e, NetworkEvent::Equivocation { evidence } if evidence.sender() == k && evidence.seq() == 10);

    publish_accepted(&a, 10, b"first").await;
    let second = a
        .attacker
        .sign_own_envelope(&a.topic, 10, a.victim.now_ms(), b"second");
    a.attacker
        .publish_raw(a.physical.clone(), second)
        .await
        .unwrap();
    wait_event(&mut victim_events, proven).await;
    assert!(a.victim.is_banned(&k), "the equivocator is banned");
    assert_eq!(a.victim.metrics().rejected.get("equivocation"), Some(&1));

    wait_event(&mut bystander_events, proven).await;
    eventually("the bystander to ban the equivocator", || async {
        bystander.is_banned(&k)
    })
    .await;
    let evidence = bystander.equivocations();
    assert_eq!(evidence.len(), 1);
    assert_eq!(
        causality_net::Equivocation::from_bytes(&evidence[0].to_bytes()).unwrap(),
        evidence[0]
    );
    let victim_id = a.victim.local_peer_id();
    let victim_score = bystander
        .peers()
        .iter()
        .find(|p| p.peer == victim_id)
        .map(|p| p.score);
    assert_eq!(
        victim_score,
        Some(0),
        "the peer that passed the evidence on is not blamed"
    );

    // A liar's "evidence": two envelopes of different senders.
    let liar = h.node().await;
    h.connect(&liar, &a.victim).await;
    let one = liar.sign_own_envelope(&a.topic, 3, a.victim.now_ms(), b"one");
    let other = bystander.sign_own_envelope(&a.topic, 3, a.victim.now_ms(), b"other");
    let lie = causality_net::proto::v1::Equivocation {
        first: one,
        second: other,
    }
    .encode_to_vec();
    let evidence_protocol = causality_net::RequestProtocol::new(
        "evidence",
        &[ProtocolVersion::new(1, 0, 0)],
        causality_net::RequestLimits::default(),
    )
    .unwrap();
    let refused = liar
        .request(victim_id, &evidence_protocol, lie)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            NetError::Refused { reason: RefusalReason::BadRequest, detail, .. } if detail.contains("different senders")
        ),
        "{refused}"
    );
    let liar_id = liar.local_peer_id();
    let liar_score = a
        .victim
        .peers()
        .iter()
        .find(|p| p.peer == liar_id)
        .map(|p| p.score);
    assert!(
        liar_score.is_some_and(|s| s < 0),
        "the liar pays ({liar_score:?})"
    );
}

/// Gossip message ids bind the gossip source: a peer that republishes an honest envelope
/// under its own source gets its copy rejected, and the genuine copy, arriving later, is
/// not mistaken for a duplicate of it.
pub(crate) async fn a_republished_envelope_does_not_poison_the_genuine_one<H: Harness>(h: &H) {
    let a = arena(h).await;
    let honest = h.node().await;
    h.connect(&honest, &a.victim).await;
    h.wait_subscribed(&honest, &a.topic, a.victim.local_peer_id())
        .await;
    let mut events = a.victim.events();
    let envelope = honest.sign_own_envelope(&a.topic, 1, a.victim.now_ms(), b"genuine");
    a.attacker
        .publish_raw(a.physical.clone(), envelope.clone())
        .await
        .unwrap();
    let attacker = a.attacker.local_peer_id();
    wait_event(&mut events, |e| {
        matches!(e, NetworkEvent::MessageRejected { from, reason: Rejection::WrongSender { .. } } if *from == attacker)
    })
    .await;
    honest
        .publish_raw(a.physical.clone(), envelope)
        .await
        .unwrap();
    wait_accepted(&a, 1).await;
}
