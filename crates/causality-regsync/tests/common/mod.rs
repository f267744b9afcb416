//! Helpers shared by the simulation tests.
#![allow(dead_code, unreachable_pub)]

use causality_net::Keypair;
use causality_net::service::CallId;
use causality_net::service::sim::{Sim, SimConfig};
use causality_regsync::{
    Command, Config, Genesis, MemoryStore, Operation, RegisterContents, RegisterId, Reply, State,
    StateHash,
};

/// `n` nodes, each connected to the next and (beyond six) to the one three further on,
/// running for a second so every connection is up. Node `i` signs register updates with
/// `owner(i)`.
pub fn network(
    seed: u64,
    n: usize,
    config: impl Fn(usize) -> Config,
    owner: impl Fn(usize) -> Keypair,
) -> Sim<State> {
    let mut sim = Sim::new(
        seed,
        SimConfig {
            latency_ms: 20,
            jitter_ms: 10,
            keep_events: true,
            ..SimConfig::default()
        },
    );
    for i in 0..n {
        let config = config(i);
        let key = owner(i);
        sim.add_node(|_| State::new(config, key, Box::new(MemoryStore::new())));
    }
    for i in 0..n {
        sim.connect(i, (i + 1) % n);
        if n > 6 {
            sim.connect(i, (i + 3) % n);
        }
    }
    sim.run_for(1000);
    sim
}

/// Each node signs with its own network key.
pub fn own_key(i: usize) -> Keypair {
    Sim::<State>::keypair(i)
}

/// The reply to `call`, after running a little.
pub fn reply(sim: &mut Sim<State>, call: CallId) -> Reply {
    for _ in 0..100 {
        sim.run_for(100);
        let replies = sim.take_replies();
        if let Some((_, _, r)) = replies.into_iter().find(|(_, c, _)| *c == call) {
            return r;
        }
    }
    panic!("call {call:?} was not answered in 10 s");
}

/// A balance.
pub fn balance(amount: u64) -> RegisterContents {
    RegisterContents::TokenBalance {
        token: "CAU".into(),
        amount,
    }
}

/// Node `n` creates a balance register in `domain` (owned by the key node `n` signs with).
pub fn create(
    sim: &mut Sim<State>,
    n: usize,
    owner: &Keypair,
    domain: &str,
    nonce: &str,
    amount: u64,
) -> (RegisterId, StateHash) {
    let genesis = Genesis::new(owner.peer_id(), domain, "token", nonce.as_bytes());
    let id = genesis.id();
    let call = sim.call(
        n,
        Command::Create {
            genesis,
            contents: balance(amount),
            last_updated: 1,
            proof_id: None,
        },
    );
    let Reply::Updated(Ok(hash)) = reply(sim, call) else {
        panic!("creation refused")
    };
    (id, hash)
}

/// Node `n` sets a balance register's amount.
pub fn set(sim: &mut Sim<State>, n: usize, id: RegisterId, amount: u64, height: u64) -> StateHash {
    let call = sim.call(
        n,
        Command::Update {
            register_id: id,
            operations: vec![Operation::Update(balance(amount))],
            last_updated: height,
            proof_id: None,
        },
    );
    match reply(sim, call) {
        Reply::Updated(Ok(hash)) => hash,
        other => panic!("update refused: {other:?}"),
    }
}

/// Node `n`'s head of a register.
pub fn head(sim: &Sim<State>, n: usize, id: &RegisterId) -> Option<StateHash> {
    sim.node(n)?.register(id).map(|r| r.state_hash())
}

/// Has every node `nodes` the register at `hash`?
pub fn all_at(
    sim: &Sim<State>,
    nodes: impl IntoIterator<Item = usize>,
    id: &RegisterId,
    hash: StateHash,
) -> bool {
    nodes.into_iter().all(|n| head(sim, n, id) == Some(hash))
}

/// Every node follows `domain`.
pub fn follow_domain(sim: &mut Sim<State>, domain: &str) {
    for n in 0..sim.len() {
        sim.command(n, Command::FollowDomain(domain.into()));
    }
    sim.run_for(500);
}
