//! Discovery and gossip over whole simulated networks in one process: for each size, how
//! long full views take to form (simulated time), the membership traffic per node while
//! converging and once steady, the heap per node, how fast a gossip message reaches
//! everyone over 20 ms links, and how many simulated seconds run per wall second.
//!
//! ```text
//! cargo run --release -p causality-discovery --example scale -- 1000 3000 10000
//! ```
//!
//! Without sizes it runs one small network (the build check in CI); with several, one
//! process per size, so each size's resident memory is its own. `--seed S` picks the
//! seed (default 1); `--ttl S` and `--per-source N` change the record lifetime and the
//! per-source quota from their defaults; every figure but wall time and the rates derived from it is a function
//! of the seed. All nodes share one [`RecordCache`], so each signed record is verified
//! once and held once in the process, however many views hold it.

use std::time::{Duration, Instant};

use causality_discovery::{Config, RecordCache, State};
use causality_net::service::sim::{Sim, SimConfig};
use causality_net::service::{Input, Output, Protocol};
use causality_net::{RequestProtocol, Topic, TopicKind, default_hello};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

/// Resident memory of this process, bytes (Linux; 0 elsewhere). Measured, not estimated:
/// it includes allocator overhead and fragmentation.
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

const GOSSIP: TopicKind = TopicKind::new("scale", "gossip");

/// A discovery node that also subscribes to one gossip topic and notes when each message
/// reaches it.
struct Peer {
    discovery: State,
    topic: Topic,
    /// (publish time, arrival time) of every message received, ms.
    arrivals: Vec<(u64, u64)>,
    outputs: std::collections::VecDeque<Output<Peer>>,
}

impl Peer {
    fn lift(&mut self) {
        while let Some(output) = self.discovery.poll_output() {
            let lifted = match output {
                Output::Publish {
                    topic,
                    payload_type,
                    payload,
                } => Output::Publish {
                    topic,
                    payload_type,
                    payload,
                },
                Output::Subscribe(t) => Output::Subscribe(t),
                Output::SubscribeValidated(t) => Output::SubscribeValidated(t),
                Output::Validate {
                    message,
                    acceptance,
                } => Output::Validate {
                    message,
                    acceptance,
                },
                Output::Unsubscribe(t) => Output::Unsubscribe(t),
                Output::Request {
                    id,
                    peer,
                    protocol,
                    body,
                } => Output::Request {
                    id,
                    peer,
                    protocol,
                    body,
                },
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
                Output::Schedule { at_ms, timer } => Output::Schedule { at_ms, timer },
                Output::Dial { peer, address } => Output::Dial { peer, address },
                Output::Disconnect(peer) => Output::Disconnect(peer),
                // Nobody reads discovery's events or replies here.
                Output::Reply { .. } | Output::Event(_) => continue,
            };
            self.outputs.push_back(lifted);
        }
    }
}

impl Protocol for Peer {
    /// A payload to publish on the gossip topic.
    type Command = Vec<u8>;
    type Reply = ();
    type Event = ();
    type Timer = causality_discovery::Timer;
    type View = ();

    fn protocols(&self) -> Vec<RequestProtocol> {
        self.discovery.protocols()
    }

    fn handle(&mut self, now_ms: u64, input: Input<Self>) {
        let input = match input {
            Input::Start => {
                self.outputs
                    .push_back(Output::Subscribe(self.topic.clone()));
                Input::Start
            }
            Input::Message(message) => {
                self.arrivals.push((message.timestamp_ms, now_ms));
                return;
            }
            Input::Command { command, .. } => {
                self.outputs.push_back(Output::Publish {
                    topic: self.topic.clone(),
                    payload_type: "scale.ping".into(),
                    payload: command,
                });
                return;
            }
            Input::Request {
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
            Input::Response { id, peer, body } => Input::Response { id, peer, body },
            Input::RequestFailed { id, peer, error } => Input::RequestFailed { id, peer, error },
            Input::Timer(timer) => Input::Timer(timer),
            Input::PeerConnected(peer) => Input::PeerConnected(peer),
            Input::PeerDisconnected(peer) => Input::PeerDisconnected(peer),
            Input::DialFailed { peer, address } => Input::DialFailed { peer, address },
            Input::View(()) => return,
        };
        self.discovery.handle(now_ms, input);
        self.lift();
    }

    fn poll_output(&mut self) -> Option<Output<Self>> {
        self.outputs.pop_front()
    }
}

/// Discovery settings changed from the defaults.
#[derive(Default)]
struct Options {
    /// `Config::max_records_per_source`.
    per_source: Option<usize>,
    /// `Config::record_ttl`.
    ttl: Option<Duration>,
}

/// What one run measured.
struct Figures {
    n: usize,
    converged_s: Option<f64>,
    converging_bytes: f64,
    steady_bytes: f64,
    memory_per_node: usize,
    cached_records: usize,
    p50_ms: u64,
    p99_ms: u64,
    all_ms: u64,
    sim_per_wall: f64,
    wall: Duration,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn run(n: usize, seed: u64, options: &Options) -> Figures {
    let wall = Instant::now();
    let baseline = resident();
    let mut sim: Sim<Peer> = Sim::new(
        seed,
        SimConfig {
            latency_ms: 20,
            jitter_ms: 10,
            keep_events: false,
            ..SimConfig::default()
        },
    );
    let cache = RecordCache::new();
    let topic = GOSSIP.topic("all").expect("valid topic");
    let start = sim.now_ms();
    for i in 0..n {
        let config = Config {
            bootstrap: vec![Sim::<Peer>::address((i + 1) % 3)],
            refresh_interval: Duration::from_secs(2),
            max_records: n + 10,
            max_records_per_source: options
                .per_source
                .unwrap_or(Config::default().max_records_per_source),
            record_ttl: options.ttl.unwrap_or(Config::default().record_ttl),
            seed: i as u64,
            ..Config::default()
        };
        let cache = cache.clone();
        let topic = topic.clone();
        sim.add_node(move |keypair| Peer {
            discovery: State::new(
                config,
                keypair.clone(),
                default_hello(),
                vec![Sim::<Peer>::address(i)],
                start,
            )
            .with_record_cache(cache),
            topic,
            arrivals: Vec::new(),
            outputs: Default::default(),
        });
    }

    // Convergence: every view holds every other node.
    let limit = start + 900_000;
    let mut converged = None;
    let mut next_report = Instant::now() + Duration::from_secs(30);
    while sim.now_ms() < limit {
        sim.run_for(1_000);
        let full = (0..n)
            .filter(|&i| sim.node(i).is_some_and(|p| p.discovery.view_len() == n - 1))
            .count();
        if Instant::now() >= next_report {
            let views: usize = (0..n)
                .filter_map(|i| sim.node(i).map(|p| p.discovery.view_len()))
                .sum();
            eprintln!(
                "  N={n}: {:.0} s simulated, {full} full views, mean view {:.0}, heap {:.1} GiB, {:.0} s wall",
                (sim.now_ms() - start) as f64 / 1000.0,
                views as f64 / n as f64,
                (resident() - baseline) as f64 / f64::from(1 << 30),
                wall.elapsed().as_secs_f64()
            );
            next_report = Instant::now() + Duration::from_secs(30);
        }
        if full == n {
            converged = Some(sim.now_ms() - start);
            break;
        }
    }
    let converge_bytes = sim.stats().bytes;
    let converge_ms = sim.now_ms() - start;
    let memory_per_node = (resident().saturating_sub(baseline)) / n;

    // Steady state: a minute of maintenance traffic.
    sim.run_for(60_000);
    let steady_bytes = sim.stats().bytes - converge_bytes;

    // Gossip: 20 messages from seeded publishers, a second apart, then quiet.
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    for m in 0..20u32 {
        let from = rng.gen_range(0..n);
        sim.command(from, m.to_le_bytes().to_vec());
        sim.run_for(1_000);
    }
    sim.run_for(10_000);
    let mut delays: Vec<u64> = Vec::new();
    let mut per_message: std::collections::BTreeMap<u64, u64> = Default::default();
    for i in 0..n {
        if let Some(peer) = sim.node(i) {
            for &(sent, arrived) in &peer.arrivals {
                delays.push(arrived - sent);
                let slowest = per_message.entry(sent).or_default();
                *slowest = (*slowest).max(arrived - sent);
            }
        }
    }
    delays.sort_unstable();
    let simulated = (sim.now_ms() - start) as f64 / 1000.0;
    let wall = wall.elapsed();
    Figures {
        n,
        converged_s: converged.map(|ms| ms as f64 / 1000.0),
        converging_bytes: converge_bytes as f64 / n as f64 / (converge_ms as f64 / 1000.0),
        steady_bytes: steady_bytes as f64 / n as f64 / 60.0,
        memory_per_node,
        cached_records: cache.len(),
        p50_ms: percentile(&delays, 0.50),
        p99_ms: percentile(&delays, 0.99),
        all_ms: per_message.values().copied().max().unwrap_or(0),
        sim_per_wall: simulated / wall.as_secs_f64(),
        wall,
    }
}

fn main() {
    let mut seed = 1;
    let mut header = true;
    let mut options = Options::default();
    let mut sizes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--per-source" {
            options.per_source = Some(
                args.next()
                    .and_then(|s| s.parse().ok())
                    .expect("--per-source takes a number"),
            );
        } else if arg == "--ttl" {
            options.ttl = Some(Duration::from_secs(
                args.next()
                    .and_then(|s| s.parse().ok())
                    .expect("--ttl takes seconds"),
            ));
        } else if arg == "--no-header" {
            header = false;
        } else if arg == "--seed" {
            seed = args
                .next()
                .and_then(|s| s.parse().ok())
                .expect("--seed takes a number");
        } else {
            sizes.push(arg.parse::<usize>().expect("sizes are node counts"));
        }
    }
    if sizes.is_empty() {
        sizes.push(100);
    }
    if sizes.len() > 1 {
        // One process per size, so each starts from an empty heap and its resident memory
        // is its own.
        let exe = std::env::current_exe().expect("own path");
        let mut header = true;
        for n in sizes {
            let mut cmd = std::process::Command::new(&exe);
            cmd.args([n.to_string(), "--seed".into(), seed.to_string()]);
            if !header {
                cmd.arg("--no-header");
            }
            if let Some(q) = options.per_source {
                cmd.args(["--per-source".to_owned(), q.to_string()]);
            }
            if let Some(ttl) = options.ttl {
                cmd.args(["--ttl".to_owned(), ttl.as_secs().to_string()]);
            }
            header = false;
            let status = cmd.status().expect("run one size");
            assert!(status.success(), "N={n} failed");
        }
        return;
    }
    if header {
        println!(
            "{:>6}  {:>10}  {:>13}  {:>10}  {:>11}  {:>7}  {:>17}  {:>10}  {:>8}",
            "nodes",
            "converged",
            "B/node/s conv",
            "B/node/s",
            "memory/node",
            "records",
            "gossip p50/p99/all",
            "sim s/wall",
            "wall"
        );
    }
    for n in sizes {
        let f = run(n, seed, &options);
        println!(
            "{:>6}  {:>10}  {:>13.0}  {:>10.0}  {:>8.1} MB  {:>7}  {:>17}  {:>10.2}  {:>6.0} s",
            f.n,
            f.converged_s
                .map_or_else(|| "no".to_owned(), |s| format!("{s:.1} s")),
            f.converging_bytes,
            f.steady_bytes,
            f.memory_per_node as f64 / 1e6,
            f.cached_records,
            format!("{}/{}/{} ms", f.p50_ms, f.p99_ms, f.all_ms),
            f.sim_per_wall,
            f.wall.as_secs_f64()
        );
    }
}
