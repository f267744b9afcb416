//! The same register-sync scenario through the async API on both network adapters: the
//! in-memory network, and libp2p over real sockets on 127.0.0.1. Three nodes in a line.

use std::time::Duration;

use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, MemoryNetwork, Network};
use causality_regsync::{
    Config, Genesis, MembershipProof, MemoryStore, Operation, RegSync, RegisterContents,
};

const PATIENCE: Duration = Duration::from_secs(30);

async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn balance(amount: u64) -> RegisterContents {
    RegisterContents::TokenBalance {
        token: "CAU".into(),
        amount,
    }
}

async fn scenario(nets: [Network; 3]) {
    let [a_net, b_net, c_net] = nets;
    b_net
        .dial(a_net.listen_addresses()[0].clone())
        .await
        .unwrap();
    c_net
        .dial(b_net.listen_addresses()[0].clone())
        .await
        .unwrap();
    let start = |net: &Network| {
        RegSync::start(net.clone(), Config::default(), Box::new(MemoryStore::new()))
    };
    let (a, b, c) = (
        start(&a_net).await.unwrap(),
        start(&b_net).await.unwrap(),
        start(&c_net).await.unwrap(),
    );
    for node in [&a, &b, &c] {
        node.follow_domain("pay").await.unwrap();
    }
    let creation = causality_regsync::messages::domain_topic(
        causality_regsync::messages::CREATION_TOPIC,
        "pay",
    )
    .unwrap();
    eventually("the domain's mesh", || async {
        a_net
            .topic_peers(&creation)
            .await
            .unwrap()
            .contains(&b_net.local_peer_id())
            && b_net
                .topic_peers(&creation)
                .await
                .unwrap()
                .contains(&c_net.local_peer_id())
    })
    .await;

    // Created at one end, it reaches the other through the middle.
    let genesis = Genesis::new(a.local_peer_id(), "pay", "token", b"r1");
    let id = genesis.id();
    let mut hash = a.create_register(genesis, balance(100), 1).await.unwrap();
    eventually("the creation at c", || async {
        c.verify_register_state(id, hash).await.unwrap()
    })
    .await;
    for h in 2..6 {
        hash = a
            .update_register(id, vec![Operation::Update(balance(100 - h))], h)
            .await
            .unwrap();
    }
    eventually("the updates at b and c", || async {
        b.verify_register_state(id, hash).await.unwrap()
            && c.verify_register_state(id, hash).await.unwrap()
    })
    .await;
    assert!(matches!(
        c.synchronize_register(id).await.unwrap(),
        RegisterContents::TokenBalance { amount: 95, .. }
    ));

    // A subscription sees the next update, and stops on drop.
    let mut updates = c.subscribe_to_registers(id).await.unwrap();
    let next = a
        .update_register(id, vec![Operation::Update(balance(1))], 9)
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(PATIENCE, updates.next())
            .await
            .unwrap(),
        Some(next)
    );
    drop(updates);

    // Nullifiers and commitments: every node ends with the same root, and c proves the
    // register's state against b's commitment.
    a.nullify("pay", [5; 32], id).await.unwrap();
    eventually("the nullifier at c", || async {
        c.double_uses("pay").await.unwrap().is_empty() && {
            let (root_a, _) = a.commitment("pay").await.unwrap();
            let (root_c, _) = c.commitment("pay").await.unwrap();
            root_a == root_c
        }
    })
    .await;
    let (root, size, proof) = c
        .prove_register("pay", id, Some(b.local_peer_id()))
        .await
        .unwrap();
    assert!(matches!(proof, MembershipProof::Included(_)));
    assert_eq!(proof.verify(&id, &root, size).unwrap(), Some(next));

    // c reconciles with b: nothing to do, checked against b's commitment.
    let report = c.reconcile(b.local_peer_id(), "pay").await.unwrap();
    assert_eq!(report.remote_only + report.local_only, 0);
    assert!(report.verified);
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_the_memory_network() {
    let sim = MemoryNetwork::new(3);
    scenario([sim.add_node(), sim.add_node(), sim.add_node()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_libp2p_on_loopback() {
    let mut nets = Vec::new();
    for i in 0..3 {
        let mut config = Libp2pConfig::new(Keypair::from_index(800 + i));
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        nets.push(Libp2pNetwork::start(config).await.unwrap());
    }
    scenario(nets.try_into().unwrap()).await;
}
