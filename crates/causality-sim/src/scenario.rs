//! One seeded scenario: a network of [`Stack`] nodes, a workload, faults and Byzantine
//! nodes drawn from the seed, and the invariants checked while it runs and at the end.
//!
//! Everything a scenario does comes from its seed: the network model's randomness (the
//! runner's), and the scenario's own draws (sizes, times, faults, attacks) from a second
//! generator seeded from it. The same seed on the same code gives the same
//! [`Outcome::trace_hash`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use causality_exec::{
    Condition, Edge, ExecutionSequence, ExecutionStatus, ExecutorInfo, NodeClaimToken, NodeId,
    SequenceId, WorkSpec,
};
use causality_hash::ContentId;
use causality_log::{Kind, Level, LogStore as _, MemoryLog, NewEntry};
use causality_net::service::CallId;
use causality_net::service::sim::{Sim, SimConfig};
use causality_net::{Keypair, Topic};
use causality_proofshare::{Announcement, proof_topic};
use causality_regsync::messages::{self, RegisterStateMessage, update_topic};
use causality_regsync::{
    At, Genesis, NullifierUse, Operation, Register, RegisterContents, RegisterDelta, RegisterId,
    StateHash, UpdateHeader,
};
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

use crate::proofs::ProofPool;
use crate::shared::Stores;
use crate::stack::{
    Command, EXECUTOR_ROLE, Event, Injection, Reply, Stack, StackConfig, VERIFIER_ROLE,
};

/// The documented bound on what one simulated node holds in memory in these scenarios
/// (its four state machines and its share of the network model): checked by the
/// `memory.bounded` invariant against the heap's growth over the run.
pub const MEMORY_PER_NODE: u64 = 16 << 20;

/// The register domain of the workload.
pub const DOMAIN: &str = "pay";

/// The work kind every executor runs: a hash of the input and the predecessors' outputs.
pub const WORK_KIND: &str = "hash";

/// What a scenario may vary; the rest is drawn from the seed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes (drawn from 4 to 8 when unset).
    pub nodes: Option<usize>,
    /// How long the workload and the faults last, simulated ms.
    pub workload_ms: u64,
    /// The longest the network may take to settle after the last fault, simulated ms.
    pub settle_ms: u64,
    /// Keep every trace line (otherwise the last [`TRACE_TAIL`]).
    pub full_trace: bool,
    /// A deliberate fault in the harness (for its own tests).
    #[doc(hidden)]
    pub sabotage: Option<Sabotage>,
}

/// Deliberate faults in the harness itself, to show that the invariants catch what they
/// name.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Node `n` never follows the register domain.
    NeverFollows(usize),
    /// One Byzantine node, announcing invalid proofs, is counted as honest.
    TrustAnInvalidProofSender,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: None,
            workload_ms: 12_000,
            settle_ms: 60_000,
            full_trace: false,
            sabotage: None,
        }
    }
}

/// How many trace lines a failing seed prints.
pub const TRACE_TAIL: usize = 40;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name, e.g. `registers.agree`.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// When, simulated ms since the start.
    pub at_ms: u64,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {:.3} s: {}",
            self.invariant,
            self.at_ms as f64 / 1000.0,
            self.detail
        )
    }
}

/// What a scenario did, in numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Proof verifications reported by honest nodes.
    pub proofs_verified: u64,
    /// Proofs honest nodes refused.
    pub proofs_rejected: u64,
    /// Register updates their honest owners saw accepted.
    pub updates: u64,
    /// Nullifiers used by honest owners.
    pub nullifiers: u64,
    /// Double uses detected (evidence events at honest nodes).
    pub double_uses: u64,
    /// Execution nodes whose result was accepted.
    pub results: u64,
    /// Crashes.
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Byzantine actions.
    pub attacks: u64,
    /// Penalties honest nodes gave Byzantine ones.
    pub penalties: u64,
    /// Log entries written (and verified).
    pub log_entries: u64,
}

/// The result of one scenario.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// The Byzantine ones.
    pub byzantine: Vec<usize>,
    /// Simulated time, ms.
    pub simulated_ms: u64,
    /// Wall time.
    pub wall: Duration,
    /// The runner's digest of every input every node received: equal for equal runs.
    pub trace_hash: [u8; 32],
    /// Broken invariants (empty: the seed passed).
    pub violations: Vec<Violation>,
    /// What the scenario did, with times (the tail unless asked for all).
    pub trace: Vec<String>,
    /// Figures.
    pub counts: Counts,
    /// The largest heap growth over the run, per node, when measured.
    pub peak_heap_per_node: Option<u64>,
}

impl Outcome {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Simulated seconds per wall second.
    pub fn speed(&self) -> f64 {
        self.simulated_ms as f64 / 1000.0 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// What a Byzantine node does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Attack {
    /// Announces a proof that does not verify.
    InvalidProof,
    /// Publishes an update of someone else's register, signed with its own key.
    ForgedUpdate,
    /// Publishes an update whose delta does not produce the state it signs.
    ForgedDelta,
    /// Signs two different successors of its own register's head.
    Equivocate,
    /// Uses one nullifier from two of its registers.
    DoubleNullifier,
    /// Sends junk: on topics and as requests of every protocol.
    Junk,
    /// Hands in wrong outputs for the work it is leased.
    WrongOutputs,
    /// Hands in a result again under a token already used, with another output.
    StaleToken,
}

const ATTACKS: &[Attack] = &[
    Attack::InvalidProof,
    Attack::ForgedUpdate,
    Attack::ForgedDelta,
    Attack::Equivocate,
    Attack::DoubleNullifier,
    Attack::Junk,
    Attack::WrongOutputs,
    Attack::StaleToken,
];

/// A call awaiting its reply, and what it was for.
#[derive(Clone, Debug)]
enum Pending {
    Create(RegisterId),
    Update(RegisterId),
    Nullify([u8; 32], RegisterId),
    StoreProof(ContentId),
    Submit(usize),
    Ignore,
}

#[derive(Clone, Debug)]
struct RegisterInfo {
    owner: usize,
    honest: bool,
    created: bool,
    height: u64,
    busy: bool,
    /// The owner's last accepted state.
    last: Option<StateHash>,
}

#[derive(Clone, Debug)]
struct Dag {
    sequence: ExecutionSequence,
    expected: BTreeMap<NodeId, Vec<u8>>,
    skipped: BTreeSet<NodeId>,
    submitted: bool,
}

/// A scheduled scenario action.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Proof(usize),
    Update(usize),
    Nullify(usize),
    Submit(usize),
    Crash(usize),
    Restart(usize),
    Partition(Vec<usize>),
    Heal,
    Skew(usize, i64),
    Attack(usize, Attack),
}

/// Accepted (output, token)s of one execution node, each with how it was first stated.
type Acceptances = BTreeMap<(Vec<u8>, u64), String>;

/// A submitted DAG's id, honest outputs and skipped nodes.
type Expected = (SequenceId, BTreeMap<NodeId, Vec<u8>>, BTreeSet<NodeId>);

struct World<'a> {
    sim: Sim<Stack>,
    rng: ChaCha20Rng,
    pool: &'a ProofPool,
    start: u64,
    honest: Vec<bool>,
    attacks: Vec<BTreeSet<Attack>>,
    configs: Vec<StackConfig>,
    stores: Vec<Stores>,
    logs: Vec<MemoryLog>,
    registers: BTreeMap<RegisterId, RegisterInfo>,
    /// Registers by owner, in creation order.
    owned: BTreeMap<usize, Vec<RegisterId>>,
    calls: BTreeMap<CallId, Pending>,
    /// Honest nullifier uses their owner saw accepted: nullifier → register.
    nullified: BTreeMap<[u8; 32], RegisterId>,
    /// The use each honest node accepted per nullifier.
    accepted_uses: BTreeMap<(usize, [u8; 32]), ContentId>,
    next_nullifier: u64,
    next_proof: usize,
    dags: Vec<Dag>,
    /// (sequence, node) → accepted (output, token)s, with who stated each first, in which
    /// term, under whose lease, from honest nodes' statements.
    accepted: BTreeMap<(SequenceId, NodeId), Acceptances>,
    /// Work running at executors: (due, executor, token, output).
    running: Vec<(u64, usize, NodeClaimToken, Vec<u8>)>,
    /// Submissions to try again (absolute ms, DAG), as a client does when too few
    /// replicas were within reach.
    resubmit: Vec<(u64, usize)>,
    /// Tokens a Byzantine node handed a result in under again: (sequence, node) → output.
    replayed: BTreeMap<(SequenceId, NodeId), Vec<u8>>,
    /// Results a Byzantine node handed in, to replay later.
    spent_tokens: Vec<(usize, NodeClaimToken)>,
    penalties_seen: usize,
    trace: Vec<String>,
    full_trace: bool,
    violations: Vec<Violation>,
    counts: Counts,
    heap_base: Option<i64>,
    heap_peak: i64,
    sabotage: Option<Sabotage>,
}

/// Runs scenario `seed`.
pub fn run(seed: u64, options: &Options, pool: &ProofPool) -> Outcome {
    let started = Instant::now();
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let n = options.nodes.unwrap_or_else(|| rng.gen_range(4..=8)).max(3);
    let config = SimConfig {
        latency_ms: rng.gen_range(2..=30),
        jitter_ms: rng.gen_range(0..=20),
        gossip_loss: if rng.gen_bool(0.5) {
            0.0
        } else {
            rng.gen_range(0.0..0.05)
        },
        request_timeout_ms: 3_000,
        keep_events: true,
    };
    // At most a third Byzantine (never node 0, the bootstrap).
    let byzantine_count = rng.gen_range(0..=(n - 1) / 3);
    let mut candidates: Vec<usize> = (1..n).collect();
    candidates.shuffle(&mut rng);
    let mut byzantine: BTreeSet<usize> = candidates.into_iter().take(byzantine_count).collect();
    let trusted = (options.sabotage == Some(Sabotage::TrustAnInvalidProofSender)).then(|| {
        byzantine.insert(n - 1);
        n - 1
    });
    let mut honest: Vec<bool> = (0..n).map(|i| !byzantine.contains(&i)).collect();
    let mut attacks: Vec<BTreeSet<Attack>> = (0..n)
        .map(|i| {
            if honest[i] {
                return BTreeSet::new();
            }
            let k = rng.gen_range(1..=3);
            ATTACKS.choose_multiple(&mut rng, k).copied().collect()
        })
        .collect();
    if let Some(t) = trusted {
        attacks[t].insert(Attack::InvalidProof);
        honest[t] = true;
    }
    // Executors that may hand in outputs of their own: agreement must outvote them all.
    let wrong_executors = attacks
        .iter()
        .filter(|a| a.contains(&Attack::WrongOutputs) || a.contains(&Attack::StaleToken))
        .count() as u32;
    let mut sim: Sim<Stack> = Sim::new(seed, config.clone());
    let start = sim.now_ms();
    let executors = ExecutorInfo {
        kinds: [WORK_KIND.to_owned()].into(),
        capacity: 4,
    };
    let mut configs = Vec::new();
    let mut stores = Vec::new();
    for i in 0..n {
        let c = StackConfig {
            discovery: causality_discovery::Config {
                bootstrap: vec![Sim::<Stack>::address(0)],
                refresh_interval: Duration::from_secs(1),
                roles: vec![VERIFIER_ROLE.into(), EXECUTOR_ROLE.into()],
                seed: seed.wrapping_add(i as u64),
                ..causality_discovery::Config::default()
            },
            proofs: causality_proofshare::Config {
                seed: *blake3::hash(&[&seed.to_le_bytes()[..], &i.to_le_bytes()].concat())
                    .as_bytes(),
                ..causality_proofshare::Config::default()
            },
            registers: causality_regsync::Config::default(),
            exec: causality_exec::Config {
                executor: executors.clone(),
                seed: seed.wrapping_mul(31).wrapping_add(i as u64),
                ..causality_exec::Config::default()
            },
            executors: executors.clone(),
            address: Sim::<Stack>::address(i),
        };
        let s = Stores::default();
        sim.add_node(|k| Stack::new(c.clone(), k, &s, start));
        configs.push(c);
        stores.push(s);
    }
    let mut w = World {
        sim,
        rng,
        pool,
        start,
        honest,
        attacks,
        configs,
        stores,
        logs: (0..n).map(|_| MemoryLog::new()).collect(),
        registers: BTreeMap::new(),
        owned: BTreeMap::new(),
        calls: BTreeMap::new(),
        nullified: BTreeMap::new(),
        accepted_uses: BTreeMap::new(),
        next_nullifier: 0,
        next_proof: 0,
        dags: Vec::new(),
        accepted: BTreeMap::new(),
        running: Vec::new(),
        resubmit: Vec::new(),
        replayed: BTreeMap::new(),
        spent_tokens: Vec::new(),
        penalties_seen: 0,
        trace: Vec::new(),
        full_trace: options.full_trace,
        violations: Vec::new(),
        counts: Counts::default(),
        heap_base: crate::memory::live_bytes(),
        heap_peak: 0,
        sabotage: options.sabotage,
    };
    w.note(format!(
        "{n} nodes, byzantine {byzantine:?} {:?}, latency {} ± {} ms, gossip loss {:.3}",
        w.attacks
            .iter()
            .filter(|a| !a.is_empty())
            .collect::<Vec<_>>(),
        config.latency_ms,
        config.jitter_ms,
        config.gossip_loss
    ));
    let peers: Vec<String> = (0..n)
        .map(|i| format!("{i}={}", w.sim.peer_id(i).short()))
        .collect();
    w.note(format!("peers {}", peers.join(" ")));
    w.setup(wrong_executors);
    let plan = w.plan(options.workload_ms);
    w.execute(plan, options.workload_ms);
    w.settle(options.settle_ms);
    w.final_checks();
    let simulated_ms = w.sim.now_ms() - w.start;
    let peak_heap_per_node = w.heap_base.map(|_| (w.heap_peak.max(0) as u64) / n as u64);
    if let Some(peak) = peak_heap_per_node
        && peak > MEMORY_PER_NODE
    {
        w.violate(
            "memory.bounded",
            format!("the heap grew by {peak} B per node (bound {MEMORY_PER_NODE} B)"),
        );
    }
    let trace = if w.full_trace {
        w.trace
    } else {
        let skip = w.trace.len().saturating_sub(TRACE_TAIL);
        w.trace.split_off(skip)
    };
    Outcome {
        seed,
        nodes: n,
        byzantine: byzantine.into_iter().collect(),
        simulated_ms,
        wall: started.elapsed(),
        trace_hash: w.sim.trace_hash(),
        violations: w.violations,
        trace,
        counts: w.counts,
        peak_heap_per_node,
    }
}

/// The output honest work gives: a hash of its input and its predecessors' outputs.
pub fn work_output(work: &WorkSpec, inputs: &[Vec<u8>]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&work.input);
    for i in inputs {
        h.update(i);
    }
    h.finalize().as_bytes()[..8].to_vec()
}

fn balance(amount: u64) -> RegisterContents {
    RegisterContents::TokenBalance {
        token: "CAU".into(),
        amount,
    }
}

impl World<'_> {
    fn n(&self) -> usize {
        self.honest.len()
    }

    fn elapsed(&self) -> u64 {
        self.sim.now_ms() - self.start
    }

    fn note(&mut self, line: String) {
        let line = format!("{:>8.3} s  {line}", self.elapsed() as f64 / 1000.0);
        self.trace.push(line);
        if !self.full_trace && self.trace.len() > 4 * TRACE_TAIL {
            self.trace.drain(..2 * TRACE_TAIL);
        }
    }

    fn violate(&mut self, invariant: &'static str, detail: String) {
        // One report per invariant and detail is enough.
        if self
            .violations
            .iter()
            .any(|v| v.invariant == invariant && v.detail == detail)
        {
            return;
        }
        let at_ms = self.elapsed();
        self.note(format!("VIOLATION {invariant}: {detail}"));
        self.violations.push(Violation {
            invariant,
            detail,
            at_ms,
        });
    }

    fn log(&mut self, n: usize, kind: Kind, source: &str, payload: Vec<u8>) {
        let entry = NewEntry::new(Level::Info, kind)
            .at(self.sim.now_ms() * 1_000_000)
            .source(source)
            .payload(payload);
        match self.logs[n].append(entry) {
            Ok(_) => self.counts.log_entries += 1,
            Err(e) => self.violate("log.verifies", format!("node {n}: append failed: {e}")),
        }
    }

    fn call(&mut self, n: usize, command: Command, pending: Pending) {
        if !self.sim.is_alive(n) {
            return;
        }
        let call = self.sim.call(n, command);
        self.calls.insert(call, pending);
    }

    fn command(&mut self, n: usize, command: Command) {
        if self.sim.is_alive(n) {
            self.sim.command(n, command);
        }
    }

    fn inject(&mut self, n: usize, injection: Injection) {
        self.counts.attacks += 1;
        self.command(n, Command::Inject(injection));
    }

    /// Follows what every node follows (again after a restart: follows are not stored).
    fn follow(&mut self, n: usize) {
        let key = self.pool.key_id();
        self.command(
            n,
            Command::Proofs(causality_proofshare::Command::Follow(key)),
        );
        if self.sabotage != Some(Sabotage::NeverFollows(n)) {
            self.command(
                n,
                Command::Registers(causality_regsync::Command::FollowDomain(DOMAIN.into())),
            );
        }
    }

    /// Discovery converges, every node follows the key and the domain, owners create
    /// their registers, the prover stores the key, the DAGs are made.
    fn setup(&mut self, wrong_executors: u32) {
        self.run_for(3_000);
        for n in 0..self.n() {
            self.follow(n);
        }
        let prover = self.first_honest();
        let key = self.pool.key.clone();
        self.call(
            prover,
            Command::Proofs(causality_proofshare::Command::StoreKey(key)),
            Pending::Ignore,
        );
        self.run_for(500);
        // Owners: two or three honest nodes, and every Byzantine node that attacks
        // registers of its own.
        let mut owners: Vec<usize> = (0..self.n()).filter(|&i| self.honest[i]).collect();
        owners.shuffle(&mut self.rng);
        let keep = self.rng.gen_range(2..=3).min(owners.len());
        owners.truncate(keep);
        for b in 0..self.n() {
            if self.attacks[b].contains(&Attack::Equivocate)
                || self.attacks[b].contains(&Attack::DoubleNullifier)
            {
                owners.push(b);
            }
        }
        owners.sort_unstable();
        for owner in owners {
            let count = if self.honest[owner] {
                self.rng.gen_range(1..=2)
            } else {
                2
            };
            for r in 0..count {
                let genesis = Genesis::new(
                    self.sim.peer_id(owner),
                    DOMAIN,
                    "token",
                    format!("{owner}-{r}").as_bytes(),
                );
                let id = genesis.id();
                let amount = self.rng.gen_range(100..1000);
                self.registers.insert(
                    id,
                    RegisterInfo {
                        owner,
                        honest: self.honest[owner],
                        created: false,
                        height: 1,
                        busy: true,
                        last: None,
                    },
                );
                self.owned.entry(owner).or_default().push(id);
                self.call(
                    owner,
                    Command::Registers(causality_regsync::Command::Create {
                        genesis,
                        contents: balance(amount),
                        last_updated: 1,
                        proof_id: None,
                    }),
                    Pending::Create(id),
                );
            }
        }
        // One or two DAGs; validated by agreement beyond the executors that lie.
        let dags = self.rng.gen_range(1..=2);
        for d in 0..dags {
            let size = self.rng.gen_range(20..=60);
            let width = self.rng.gen_range(3..=8);
            let creator = self.first_honest();
            let sequence = dag(
                &mut self.rng,
                self.sim.peer_id(creator),
                size,
                width,
                wrong_executors + 1,
                d,
            );
            let (expected, skipped) = expected(&sequence);
            self.dags.push(Dag {
                sequence,
                expected,
                skipped,
                submitted: false,
            });
        }
        self.run_for(1_000);
    }

    fn first_honest(&self) -> usize {
        (0..self.n())
            .find(|&i| self.honest[i] && self.sim.is_alive(i))
            .unwrap_or(0)
    }

    /// The workload, faults and attacks, at times drawn over `workload_ms`.
    fn plan(&mut self, workload_ms: u64) -> Vec<(u64, Action)> {
        let n = self.n();
        let mut plan = Vec::new();
        let at = |rng: &mut ChaCha20Rng| rng.gen_range(0..workload_ms);
        let proofs = self.rng.gen_range(2..=4);
        for _ in 0..proofs {
            let who = self.random_honest();
            plan.push((at(&mut self.rng), Action::Proof(who)));
        }
        let owners: Vec<usize> = self
            .owned
            .keys()
            .copied()
            .filter(|o| self.honest[*o])
            .collect();
        for &o in &owners {
            for _ in 0..self.rng.gen_range(3..=8) {
                plan.push((at(&mut self.rng), Action::Update(o)));
            }
            for _ in 0..self.rng.gen_range(0..=2) {
                plan.push((at(&mut self.rng), Action::Nullify(o)));
            }
        }
        for d in 0..self.dags.len() {
            let t = self.rng.gen_range(0..workload_ms / 3);
            plan.push((t, Action::Submit(d)));
        }
        // Faults.
        if self.rng.gen_bool(0.6) {
            let who = self.random_honest_not_bootstrap();
            if let Some(who) = who {
                let t = at(&mut self.rng);
                let back = t + self.rng.gen_range(500..4_000);
                plan.push((t, Action::Crash(who)));
                plan.push((back.min(workload_ms), Action::Restart(who)));
            }
        }
        if self.rng.gen_bool(0.6) {
            let mut side: Vec<usize> = (0..n).filter(|_| self.rng.gen_bool(0.5)).collect();
            if side.is_empty() {
                side.push(n - 1);
            }
            if side.len() == n {
                side.pop();
            }
            let t = at(&mut self.rng);
            let heal = t + self.rng.gen_range(1_000..5_000);
            plan.push((t, Action::Partition(side)));
            plan.push((heal.min(workload_ms), Action::Heal));
        }
        for i in 0..n {
            if self.rng.gen_bool(0.3) {
                let skew = self.rng.gen_range(-3_000..=3_000);
                plan.push((0, Action::Skew(i, skew)));
            }
        }
        for b in 0..n {
            let attacks: Vec<Attack> = self.attacks[b].iter().copied().collect();
            for a in attacks {
                if matches!(a, Attack::WrongOutputs) {
                    continue; // a standing behaviour, not an action
                }
                for _ in 0..self.rng.gen_range(1..=3) {
                    plan.push((at(&mut self.rng), Action::Attack(b, a)));
                }
            }
        }
        plan.sort();
        plan
    }

    fn random_honest(&mut self) -> usize {
        let honest: Vec<usize> = (0..self.n()).filter(|&i| self.honest[i]).collect();
        *honest.choose(&mut self.rng).expect("node 0 is honest")
    }

    fn random_honest_not_bootstrap(&mut self) -> Option<usize> {
        let honest: Vec<usize> = (1..self.n()).filter(|&i| self.honest[i]).collect();
        honest.choose(&mut self.rng).copied()
    }

    fn execute(&mut self, plan: Vec<(u64, Action)>, workload_ms: u64) {
        let base = self.elapsed();
        for (t, action) in plan {
            let due = self.start + base + t;
            while self.sim.now_ms() < due {
                let step = (due - self.sim.now_ms()).min(10);
                self.step(step);
            }
            self.act(action);
        }
        let end = self.start + base + workload_ms;
        while self.sim.now_ms() < end {
            self.step(10);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Proof(who) => {
                let proof = self.pool.valid[self.next_proof % self.pool.valid.len()].clone();
                self.next_proof += 1;
                self.note(format!(
                    "node {who} stores and announces proof {}",
                    proof.proof_id
                ));
                let id = proof.proof_id;
                // A prover holds its circuit's key (storing it again is a no-op).
                let key = self.pool.key.clone();
                self.call(
                    who,
                    Command::Proofs(causality_proofshare::Command::StoreKey(key)),
                    Pending::Ignore,
                );
                self.call(
                    who,
                    Command::Proofs(causality_proofshare::Command::StoreProof(proof)),
                    Pending::StoreProof(id),
                );
            }
            Action::Update(owner) => {
                let ids = self.owned.get(&owner).cloned().unwrap_or_default();
                let Some(&id) = ids.choose(&mut self.rng) else {
                    return;
                };
                let amount = self.rng.gen_range(0..1000);
                let Some(info) = self.registers.get_mut(&id) else {
                    return;
                };
                if info.busy || !info.created {
                    return;
                }
                info.busy = true;
                info.height += 1;
                let height = info.height;
                self.call(
                    owner,
                    Command::Registers(causality_regsync::Command::Update {
                        register_id: id,
                        operations: vec![Operation::Update(balance(amount))],
                        last_updated: height,
                        proof_id: None,
                    }),
                    Pending::Update(id),
                );
            }
            Action::Nullify(owner) => {
                let Some(&id) = self.owned.get(&owner).and_then(|ids| ids.first()) else {
                    return;
                };
                let nullifier = self.fresh_nullifier();
                self.call(
                    owner,
                    Command::Registers(causality_regsync::Command::Nullify {
                        domain: DOMAIN.into(),
                        nullifier,
                        register_id: id,
                    }),
                    Pending::Nullify(nullifier, id),
                );
            }
            Action::Submit(d) => {
                let who = self.first_honest();
                let sequence = self.dags[d].sequence.clone();
                self.note(format!(
                    "node {who} submits DAG {d} ({} nodes) {}",
                    sequence.nodes.len(),
                    sequence.id()
                ));
                for n in 0..self.n() {
                    let id = sequence.id();
                    self.command(n, Command::Exec(causality_exec::Command::Monitor(id)));
                }
                self.call(
                    who,
                    Command::Exec(causality_exec::Command::Submit(sequence)),
                    Pending::Submit(d),
                );
            }
            Action::Crash(n) => {
                if self.sim.is_alive(n) {
                    self.note(format!("crash node {n}"));
                    self.counts.crashes += 1;
                    self.sim.crash(n);
                    self.running.retain(|(_, at, ..)| *at != n);
                }
            }
            Action::Restart(n) => self.restart(n),
            Action::Partition(side) => {
                let other: Vec<usize> = (0..self.n()).filter(|i| !side.contains(i)).collect();
                self.note(format!("partition {side:?} | {other:?}"));
                self.counts.partitions += 1;
                self.sim.partition(&[side.clone(), other.clone()]);
                // Keepalives time out across the cut: each side closes its connections.
                for &a in &side {
                    for &b in &other {
                        let peer = self.sim.peer_id(b);
                        self.command(a, Command::Inject(Injection::Disconnect(peer)));
                    }
                }
            }
            Action::Heal => {
                self.note("heal".into());
                self.sim.heal();
            }
            Action::Skew(n, skew) => {
                self.note(format!("node {n}'s clock is {skew:+} ms off"));
                self.sim.set_clock_offset(n, skew);
            }
            Action::Attack(b, attack) => self.attack(b, attack),
        }
    }

    fn restart(&mut self, n: usize) {
        if self.sim.is_alive(n) {
            return;
        }
        self.note(format!("restart node {n} from its stores"));
        let config = self.configs[n].clone();
        let stores = self.stores[n].clone();
        let now = self.sim.clock_ms(n);
        self.sim.restart(n, |k| Stack::new(config, k, &stores, now));
        self.follow(n);
    }

    fn fresh_nullifier(&mut self) -> [u8; 32] {
        self.next_nullifier += 1;
        *blake3::hash(&self.next_nullifier.to_le_bytes()).as_bytes()
    }

    fn attack(&mut self, b: usize, attack: Attack) {
        if !self.sim.is_alive(b) {
            return;
        }
        self.note(format!("byzantine node {b}: {attack:?}"));
        let key = Sim::<Stack>::keypair(b);
        match attack {
            Attack::InvalidProof => {
                let proof = self
                    .pool
                    .invalid
                    .choose(&mut self.rng)
                    .expect("the pool has invalid proofs")
                    .clone();
                self.inject(
                    b,
                    Injection::Publish {
                        topic: proof_topic(&self.pool.key_id()),
                        payload_type: causality_proofshare::ANNOUNCEMENT_TYPE.into(),
                        payload: Announcement::Inline(proof).encode(),
                    },
                );
            }
            Attack::ForgedUpdate | Attack::ForgedDelta => {
                // Someone else's register (forged signature), or its own with a delta
                // that does not give the state it signs.
                let victim: Vec<RegisterId> = self
                    .registers
                    .iter()
                    .filter(|(_, r)| {
                        r.created && (r.owner != b) == (attack == Attack::ForgedUpdate)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                let Some(&id) = victim.choose(&mut self.rng) else {
                    return;
                };
                let Some(head) = self.sim.node(b).and_then(|s| s.registers().register(&id)) else {
                    return;
                };
                let amount = self.rng.gen_range(0..1000);
                let mut m = successor(&head, amount, &key);
                if attack == Attack::ForgedDelta
                    && let Some(d) = m.delta.as_mut()
                {
                    d.operations = vec![Operation::Update(balance(amount + 1))];
                }
                self.inject(
                    b,
                    Injection::Publish {
                        topic: update_topic(&id),
                        payload_type: messages::STATE_MESSAGE_TYPE.into(),
                        payload: m.encode(),
                    },
                );
            }
            Attack::Equivocate => {
                let Some(&id) = self.owned.get(&b).and_then(|ids| ids.first()) else {
                    return;
                };
                let Some(head) = self.sim.node(b).and_then(|s| s.registers().register(&id)) else {
                    return;
                };
                let topic = update_topic(&id);
                for amount in [1, 2] {
                    let m = successor(&head, amount, &key);
                    self.inject(
                        b,
                        Injection::Publish {
                            topic: topic.clone(),
                            payload_type: messages::STATE_MESSAGE_TYPE.into(),
                            payload: m.encode(),
                        },
                    );
                }
            }
            Attack::DoubleNullifier => {
                let ids = self.owned.get(&b).cloned().unwrap_or_default();
                if ids.len() < 2 {
                    return;
                }
                let nullifier = self.fresh_nullifier();
                let topic = messages::domain_topic(messages::NULLIFIER_TOPIC, DOMAIN)
                    .expect("a valid domain");
                for id in &ids[..2] {
                    let u = NullifierUse::new(DOMAIN, nullifier, *id, &key);
                    self.inject(
                        b,
                        Injection::Publish {
                            topic: topic.clone(),
                            payload_type: messages::NULLIFIER_TYPE.into(),
                            payload: u.encode(),
                        },
                    );
                }
            }
            Attack::Junk => {
                let len = self.rng.gen_range(0..300);
                let junk: Vec<u8> = (0..len).map(|_| self.rng.r#gen()).collect();
                let mut topics: Vec<Topic> = vec![proof_topic(&self.pool.key_id())];
                if let Some(id) = self.registers.keys().next() {
                    topics.push(update_topic(id));
                }
                topics.extend(messages::domain_topic(messages::NULLIFIER_TOPIC, DOMAIN));
                for topic in topics {
                    self.inject(
                        b,
                        Injection::Publish {
                            topic,
                            payload_type: "junk".into(),
                            payload: junk.clone(),
                        },
                    );
                }
                let target = self.random_honest();
                let peer = self.sim.peer_id(target);
                for protocol in [
                    causality_discovery::PROTOCOL,
                    causality_proofshare::PROTOCOL,
                    causality_regsync::PROTOCOL,
                    causality_exec::PROTOCOL,
                ] {
                    self.inject(
                        b,
                        Injection::Request {
                            peer,
                            protocol: protocol.into(),
                            body: junk.clone(),
                        },
                    );
                }
            }
            Attack::StaleToken => {
                // A token it already handed a result in under, again, with another output.
                let Some(at) = self.spent_tokens.iter().position(|(n, _)| *n == b) else {
                    return;
                };
                let (_, token) = self.spent_tokens.swap_remove(at);
                let output = b"stale".to_vec();
                self.replayed
                    .insert((token.sequence_id, token.node), output.clone());
                self.counts.attacks += 1;
                self.command(
                    b,
                    Command::Exec(causality_exec::Command::Complete {
                        token,
                        outcome: Ok((output, None)),
                    }),
                );
            }
            Attack::WrongOutputs => {}
        }
    }

    fn run_for(&mut self, ms: u64) {
        let end = self.sim.now_ms() + ms;
        while self.sim.now_ms() < end {
            let step = (end - self.sim.now_ms()).min(10);
            self.step(step);
        }
    }

    /// Runs `ms`, then hands in the work that finished, and looks at what happened.
    fn step(&mut self, ms: u64) {
        self.sim.run_for(ms);
        let now = self.sim.now_ms();
        let (due, later): (Vec<_>, Vec<_>) =
            self.running.drain(..).partition(|(at, ..)| *at <= now);
        self.running = later;
        for (_, n, token, output) in due {
            if !self.honest[n] {
                self.spent_tokens.push((n, token.clone()));
            }
            self.command(
                n,
                Command::Exec(causality_exec::Command::Complete {
                    token,
                    outcome: Ok((output, None)),
                }),
            );
        }
        let (due, later): (Vec<_>, Vec<_>) =
            self.resubmit.drain(..).partition(|(at, _)| *at <= now);
        self.resubmit = later;
        for (_, d) in due {
            self.act(Action::Submit(d));
        }
        self.observe();
        if let (Some(base), Some(live)) = (self.heap_base, crate::memory::live_bytes()) {
            self.heap_peak = self.heap_peak.max(live - base);
        }
    }

    fn observe(&mut self) {
        for (n, call, reply) in self.sim.take_replies() {
            let Some(pending) = self.calls.remove(&call) else {
                continue;
            };
            self.on_reply(n, pending, reply);
        }
        for (n, event) in self.sim.take_events() {
            self.on_event(n, event);
        }
        for n in 0..self.n() {
            let forwarded = self
                .sim
                .node_mut(n)
                .map(Stack::take_forwarded)
                .unwrap_or_default();
            if self.honest[n] {
                for id in forwarded {
                    if !self.pool.is_valid(&id) {
                        self.violate(
                            "proofs.no_invalid_forwarded",
                            format!("honest node {n} sent on proof {id}, which does not verify"),
                        );
                    }
                }
            }
        }
        let penalties = self.sim.penalties();
        let new: Vec<_> = penalties[self.penalties_seen..].to_vec();
        self.penalties_seen = penalties.len();
        for p in new {
            let target = (0..self.n()).find(|&i| self.sim.peer_id(i) == p.peer);
            let honest_target = target.is_some_and(|t| self.honest[t]);
            if self.honest[p.by] && honest_target {
                self.violate(
                    "net.honest_not_penalized",
                    format!(
                        "honest node {} penalized honest node {} ({:?}): {}",
                        p.by,
                        target.unwrap_or(usize::MAX),
                        p.severity,
                        p.reason
                    ),
                );
            } else if self.honest[p.by] {
                self.counts.penalties += 1;
            }
        }
    }

    fn on_reply(&mut self, n: usize, pending: Pending, reply: Reply) {
        match (pending, reply) {
            (Pending::Create(id), Reply::Registers(causality_regsync::Reply::Updated(result))) => {
                if let Some(r) = self.registers.get_mut(&id) {
                    r.busy = false;
                    if let Ok(hash) = result {
                        r.created = true;
                        r.last = Some(hash);
                    }
                }
            }
            (Pending::Update(id), Reply::Registers(causality_regsync::Reply::Updated(result))) => {
                if let Some(r) = self.registers.get_mut(&id) {
                    r.busy = false;
                    match result {
                        Ok(hash) => {
                            r.last = Some(hash);
                            self.counts.updates += 1;
                        }
                        Err(e) => {
                            let line = format!("node {n}: update of {id} refused: {e}");
                            self.note(line);
                        }
                    }
                }
            }
            (
                Pending::Nullify(nullifier, id),
                Reply::Registers(causality_regsync::Reply::Done(result)),
            ) => match result {
                Ok(()) => {
                    self.nullified.insert(nullifier, id);
                    self.counts.nullifiers += 1;
                }
                Err(e) => {
                    let line = format!("node {n}: nullifier refused: {e}");
                    self.note(line);
                }
            },
            (
                Pending::StoreProof(id),
                Reply::Proofs(causality_proofshare::Reply::Proof(result)),
            ) => match result {
                Ok(_) => self.call(
                    n,
                    Command::Proofs(causality_proofshare::Command::Announce(id)),
                    Pending::Ignore,
                ),
                Err(e) => self.violate(
                    "proofs.valid_accepted",
                    format!("node {n} refused its own valid proof {id}: {e}"),
                ),
            },
            (Pending::Submit(d), Reply::Exec(causality_exec::Reply::Submitted(result))) => {
                match result {
                    Ok(_) => self.dags[d].submitted = true,
                    Err(e @ causality_exec::ExecError::NoQuorum { .. }) => {
                        self.note(format!("DAG {d} not taken ({e}); submitting again in 1 s"));
                        let at = self.sim.now_ms() + 1_000;
                        self.resubmit.push((at, d));
                    }
                    Err(e) => self.violate(
                        "exec.completes",
                        format!("DAG {d} was refused at submission: {e}"),
                    ),
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, n: usize, event: Event) {
        let honest = self.honest[n];
        match event {
            Event::Proofs(causality_proofshare::Event::Verified { proof, from }) if honest => {
                self.counts.proofs_verified += 1;
                if !self.pool.is_valid(&proof.proof_id) {
                    self.violate(
                        "proofs.accepted_verify",
                        format!(
                            "honest node {n} accepted proof {} (from {}), which does not verify",
                            proof.proof_id,
                            from.short()
                        ),
                    );
                }
                self.log(
                    n,
                    Kind::Fact,
                    "proofshare",
                    proof.proof_id.as_bytes().to_vec(),
                );
            }
            Event::Proofs(causality_proofshare::Event::Rejected { reason, .. }) if honest => {
                self.counts.proofs_rejected += 1;
                self.log(n, Kind::Network, "proofshare", reason.into_bytes());
            }
            Event::Registers(causality_regsync::Event::Applied {
                register_id,
                state_hash,
                ..
            }) if honest => {
                let payload = [register_id.as_bytes().as_slice(), state_hash.as_bytes()].concat();
                self.log(n, Kind::Effect, "regsync", payload);
            }
            Event::Registers(causality_regsync::Event::Nullified(u)) if honest => {
                let id = u.id();
                match self.accepted_uses.get(&(n, u.nullifier)) {
                    Some(first) if *first != id => self.violate(
                        "nullifiers.once",
                        format!(
                            "honest node {n} accepted two uses of nullifier {}",
                            hex(&u.nullifier)
                        ),
                    ),
                    _ => {
                        self.accepted_uses.insert((n, u.nullifier), id);
                    }
                }
                self.log(n, Kind::Effect, "regsync", u.encode());
            }
            Event::Registers(causality_regsync::Event::DoubleUse(d)) if honest => {
                self.counts.double_uses += 1;
                if self.honest_owner_of(&d.rejected.register_id) {
                    self.violate(
                        "nullifiers.once",
                        format!(
                            "honest node {n} holds double-use evidence against an honest owner"
                        ),
                    );
                }
                self.log(n, Kind::Fact, "regsync", d.rejected.encode());
            }
            Event::Exec(causality_exec::Event::Execute {
                token,
                work,
                inputs,
                ..
            }) => {
                let mut output = work_output(&work, &inputs);
                if self.attacks[n].contains(&Attack::WrongOutputs) {
                    output = [b"wrong".as_slice(), &(n as u64).to_le_bytes()].concat();
                }
                let run_ms = self.rng.gen_range(2..40);
                self.running
                    .push((self.sim.now_ms() + run_ms, n, token, output));
            }
            Event::Exec(causality_exec::Event::Status(m)) if honest => {
                for r in &m.results {
                    if r.error.is_some() {
                        continue;
                    }
                    let outputs = self
                        .accepted
                        .entry((m.sequence_id, r.token.node))
                        .or_default();
                    let key = (r.output.clone(), r.token.token);
                    if let std::collections::btree_map::Entry::Vacant(e) = outputs.entry(key) {
                        e.insert(format!(
                            "stated by node {n} in term {} (leader {}), token {} held by {}",
                            m.term,
                            m.leader.short(),
                            r.token.token,
                            r.token.holder.short()
                        ));
                        let payload = [m.sequence_id.as_bytes().as_slice(), &r.output].concat();
                        self.log(n, Kind::Effect, "exec", payload);
                    }
                }
            }
            _ => {}
        }
    }

    fn honest_owner_of(&self, id: &RegisterId) -> bool {
        self.registers.get(id).is_some_and(|r| r.honest)
    }

    /// After the last fault: heal, restart what is down, and run until the honest nodes
    /// agree and the DAGs finish (or `limit_ms` passes).
    fn settle(&mut self, limit_ms: u64) {
        self.sim.heal();
        for n in 0..self.n() {
            self.restart(n);
        }
        self.note("settling".into());
        let deadline = self.sim.now_ms() + limit_ms;
        while self.sim.now_ms() < deadline {
            self.run_for(500);
            if self.agreed().is_ok() && self.dags_done().is_ok() {
                break;
            }
        }
        self.run_for(1_000);
        self.note("settled".into());
    }

    fn honest_nodes(&self) -> Vec<usize> {
        (0..self.n()).filter(|&i| self.honest[i]).collect()
    }

    /// Whether the honest nodes agree on every register and nullifier; the first
    /// disagreement otherwise.
    fn agreed(&self) -> Result<(), (&'static str, String)> {
        let honest = self.honest_nodes();
        for (id, info) in &self.registers {
            if !info.created {
                continue;
            }
            let heads: BTreeSet<Option<StateHash>> = honest
                .iter()
                .map(|&n| {
                    self.sim
                        .node(n)
                        .and_then(|s| s.registers().register(id))
                        .map(|r| r.state_hash())
                })
                .collect();
            if heads.len() != 1 || heads.contains(&None) {
                return Err((
                    "registers.agree",
                    format!(
                        "register {id} (owner {}): honest nodes hold {} different heads{}",
                        info.owner,
                        heads.len(),
                        if heads.contains(&None) {
                            ", some none"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            if info.honest
                && let Some(last) = info.last
                && !heads.contains(&Some(last))
            {
                return Err((
                    "registers.no_lost_update",
                    format!(
                        "register {id}: the owner's last accepted state {last} is not the agreed head"
                    ),
                ));
            }
        }
        let mut sets = BTreeSet::new();
        for &n in &honest {
            let Some(s) = self.sim.node(n) else {
                continue;
            };
            let uses: BTreeMap<[u8; 32], (RegisterId, ContentId)> = s
                .registers()
                .store()
                .nullifiers(DOMAIN)
                .unwrap_or_default()
                .into_iter()
                .map(|u| (u.nullifier, (u.register_id, u.id())))
                .collect();
            for (nullifier, register) in &self.nullified {
                if uses.get(nullifier).map(|u| u.0) != Some(*register) {
                    return Err((
                        "nullifiers.agree",
                        format!(
                            "honest node {n} lacks the accepted use of nullifier {}",
                            hex(nullifier)
                        ),
                    ));
                }
            }
            sets.insert(uses);
        }
        if sets.len() > 1 {
            return Err((
                "nullifiers.agree",
                format!("honest nodes hold {} different nullifier sets", sets.len()),
            ));
        }
        Ok(())
    }

    fn dags_done(&self) -> Result<(), (&'static str, String)> {
        for (d, dag) in self.dags.iter().enumerate() {
            if !dag.submitted {
                return Err(("exec.completes", format!("DAG {d} was never taken")));
            }
            let id = dag.sequence.id();
            let done = self.honest_nodes().iter().any(|&n| {
                self.sim
                    .node(n)
                    .and_then(|s| s.exec().status(&id))
                    .is_some_and(|m| m.status == ExecutionStatus::Completed)
            });
            if !done {
                // The furthest statement an honest node holds says where it stands.
                let furthest = self
                    .honest_nodes()
                    .iter()
                    .filter_map(|&n| self.sim.node(n)?.exec().status(&id).cloned())
                    .max_by_key(|m| (m.completed_nodes.len(), m.seq));
                let keepers: Vec<usize> = (0..self.n())
                    .filter(|&n| self.sim.node(n).is_some_and(|s| s.exec().keeps(&id)))
                    .collect();
                let state = furthest.map_or_else(
                    || format!("no honest node holds a statement (kept by {keepers:?})"),
                    |m| {
                        format!(
                            "{:?} in term {} by {}: {} completed, {} pending, {} skipped, failed {:?}",
                            m.status,
                            m.term,
                            m.leader.short(),
                            m.completed_nodes.len(),
                            m.pending_nodes.len(),
                            m.skipped_nodes.len(),
                            m.failed_nodes
                        )
                    },
                );
                return Err((
                    "exec.completes",
                    format!("DAG {d} ({id}) did not complete: {state}"),
                ));
            }
        }
        Ok(())
    }

    fn final_checks(&mut self) {
        if let Err((invariant, detail)) = self.agreed() {
            self.violate(invariant, detail);
        }
        if let Err((invariant, detail)) = self.dags_done() {
            self.violate(invariant, detail);
        }
        // Every execution node's result accepted exactly once, the honest output; no
        // replayed token won.
        let dags: Vec<Expected> = self
            .dags
            .iter()
            .filter(|d| d.submitted)
            .map(|d| (d.sequence.id(), d.expected.clone(), d.skipped.clone()))
            .collect();
        for (id, expected, skipped) in dags {
            for (node, want) in &expected {
                let got = self.accepted.get(&(id, *node)).cloned().unwrap_or_default();
                let how = || -> Vec<String> {
                    got.iter()
                        .map(|((o, _), how)| {
                            let honest = if o == want {
                                "the honest output"
                            } else {
                                "a wrong output"
                            };
                            format!("{honest}, {how}")
                        })
                        .collect()
                };
                if got.len() > 1 {
                    let how = how();
                    self.violate(
                        "exec.exactly_once",
                        format!("{id} node {node}: accepted {} times: {how:?}", got.len()),
                    );
                } else if got.keys().any(|(o, _)| o != want) {
                    let stale = self
                        .replayed
                        .get(&(id, *node))
                        .is_some_and(|r| got.keys().any(|(o, _)| o == r));
                    let how = how();
                    self.violate(
                        if stale { "exec.no_stale_token" } else { "exec.exactly_once" },
                        format!("{id} node {node}: the accepted result is not the honest output: {how:?}"),
                    );
                }
            }
            for node in &skipped {
                if self.accepted.contains_key(&(id, *node)) {
                    self.violate(
                        "exec.exactly_once",
                        format!("{id} node {node} is skipped by its conditions but has a result"),
                    );
                }
            }
            self.counts.results += expected
                .keys()
                .filter(|node| self.accepted.contains_key(&(id, **node)))
                .count() as u64;
        }
        for n in self.honest_nodes() {
            if let Err(e) = self.logs[n].verify(&[]) {
                self.violate("log.verifies", format!("node {n}: {e}"));
            }
        }
    }
}

/// A signed successor of `head` setting its balance to `amount`, signed by `signer`.
fn successor(head: &Register, amount: u64, signer: &Keypair) -> RegisterStateMessage {
    let delta = RegisterDelta {
        operations: vec![Operation::Update(balance(amount))],
        previous_state_hash: Some(head.state_hash()),
    };
    let at = At {
        epoch: head.epoch + 1,
        last_updated: head.last_updated + 1,
    };
    let next = causality_regsync::apply(Some(head), &delta, at, &NoContext)
        .map(|(r, _)| r)
        .unwrap_or_else(|_| head.clone());
    let header = UpdateHeader {
        register_id: head.id,
        epoch: at.epoch,
        previous_state_hash: Some(head.state_hash()),
        state_hash: next.state_hash(),
        delta_id: delta.id(),
        owner: head.owner,
        last_updated: at.last_updated,
        proof_id: None,
        fence: None,
        signature: [0; 64],
    }
    .sign(signer);
    RegisterStateMessage {
        header,
        delta: Some(delta),
        full_state: None,
    }
}

struct NoContext;

impl causality_regsync::Context for NoContext {
    fn register(&self, _: &RegisterId) -> Option<Register> {
        None
    }
    fn split_credit(&self, _: &RegisterId) -> Option<(String, u64)> {
        None
    }
    fn merged(&self, _: &RegisterId) -> bool {
        false
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A layered DAG of `n` nodes of `width`, with fan-in, diamonds and a few conditional
/// edges (some never taken, so some nodes are skipped); every node needs `agreement`
/// executors to agree.
fn dag(
    rng: &mut ChaCha20Rng,
    creator: causality_net::PeerId,
    n: u32,
    width: u32,
    agreement: u32,
    salt: usize,
) -> ExecutionSequence {
    let nodes = (0..n).map(|i| {
        let mut work = WorkSpec::new(WORK_KIND, i.to_le_bytes().to_vec());
        work.agreement = agreement;
        (i, work)
    });
    let mut edges = Vec::new();
    let mut seen = BTreeSet::new();
    for i in width..n {
        let layer = i / width;
        let below = (layer - 1) * width..layer * width;
        for _ in 0..rng.gen_range(1..=3) {
            let from = rng.gen_range(below.clone());
            if seen.insert((from, i)) {
                let condition = match rng.gen_range(0..30) {
                    0 => Some(Condition::Equals(b"never".to_vec())),
                    1..=3 => Some(Condition::NonEmpty),
                    _ => None,
                };
                edges.push(Edge {
                    from,
                    to: i,
                    condition,
                    weight: 0,
                });
            }
        }
    }
    ExecutionSequence::new(creator, &salt.to_le_bytes(), nodes, edges)
}

/// The outputs an honest run gives, and which nodes are skipped.
fn expected(sequence: &ExecutionSequence) -> (BTreeMap<NodeId, Vec<u8>>, BTreeSet<NodeId>) {
    let mut outputs: BTreeMap<NodeId, Vec<u8>> = BTreeMap::new();
    let mut skipped = BTreeSet::new();
    let Ok(dag) = sequence.validate(&Default::default()) else {
        return (outputs, skipped);
    };
    for &n in &dag.order {
        let preds = dag.preds.get(&n).cloned().unwrap_or_default();
        let taken = preds.is_empty()
            || preds.iter().any(|&e| {
                let edge = &sequence.edges[e];
                outputs
                    .get(&edge.from)
                    .is_some_and(|o| edge.condition.as_ref().is_none_or(|c| c.holds(o)))
            });
        if !taken {
            skipped.insert(n);
            continue;
        }
        let mut from: Vec<NodeId> = preds.iter().map(|&e| sequence.edges[e].from).collect();
        from.sort_unstable();
        let inputs: Vec<Vec<u8>> = from
            .iter()
            .filter_map(|p| outputs.get(p).cloned())
            .collect();
        outputs.insert(n, work_output(&sequence.nodes[&n], &inputs));
    }
    (outputs, skipped)
}
