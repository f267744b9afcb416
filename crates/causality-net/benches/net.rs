//! Network benchmarks.
//!
//! Criterion measures the CPU cost of signing, sealing and simulated delivery. Beside it,
//! this binary prints the figures that are not CPU timings: publish-to-all latency and
//! duplicate copies in a 100-node simulation (virtual time, deterministic), and libp2p on
//! loopback — gossip and request-response throughput, connection setup over TCP and QUIC.
//! Under `cargo test --benches` everything runs once at a small size.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use causality_net::{
    Keypair, Libp2pConfig, Libp2pNetwork, LinkConfig, MemoryNetwork, Network, NetworkEvent, Topic,
    seal, sign_envelope,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use futures::StreamExt as _;
use rand::{Rng as _, SeedableRng as _};

fn topic() -> Topic {
    "register/update/bench".parse().unwrap()
}

fn cpu(c: &mut Criterion) {
    let keys = Keypair::from_index(1);
    let mut group = c.benchmark_group("envelope");
    for size in [256usize, 1024] {
        let payload = vec![7u8; size];
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("sign", size), &payload, |b, payload| {
            let mut seq = 0;
            b.iter(|| {
                seq += 1;
                sign_envelope(&keys, &topic(), seq, 1, payload)
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("seal");
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let recipients: Vec<_> = (0..4).map(|i| Keypair::from_index(i).peer_id()).collect();
    let payload = vec![1u8; 4096];
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("seal_4KiB_to_4", |b| {
        b.iter(|| seal::seal(&payload, &recipients, &mut rng).unwrap());
    });
    let sealed = seal::seal(&payload, &recipients, &mut rng).unwrap();
    let reader = Keypair::from_index(2);
    group.bench_function("open_4KiB", |b| {
        b.iter(|| seal::open(&sealed, &reader).unwrap());
    });
    group.finish();

    let mut group = c.benchmark_group("memory");
    group.throughput(Throughput::Elements(100));
    group.bench_function("publish_100_msgs_2_nodes", |b| {
        let rt = paused_runtime();
        let (sim, a, mut sub) = rt.block_on(async {
            let sim = MemoryNetwork::new(1);
            let a = sim.add_node();
            // The receiver must not rate-limit a benchmark that publishes without pause.
            let mut config = causality_net::NodeConfig::new(Keypair::from_index(2));
            config.clock = Arc::new(causality_net::TokioClock::new(
                causality_net::SIMULATION_EPOCH_MS,
            ));
            config.limits.messages_per_second = u32::MAX;
            config.limits.message_burst = u32::MAX;
            let b = sim.add_node_with(config);
            a.dial(b.listen_addresses()[0].clone()).await.unwrap();
            let sub = b.subscribe(&topic()).await.unwrap();
            sim.settle().await;
            (sim, a, sub)
        });
        b.iter(|| {
            rt.block_on(async {
                for i in 0..100u32 {
                    a.publish(&topic(), "bench", i.to_le_bytes().to_vec())
                        .await
                        .unwrap();
                }
                for _ in 0..100 {
                    sub.next().await.unwrap();
                }
            });
        });
        drop((sim, a, sub));
    });
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// 100 nodes on 20 ms links: publish-to-all latency and copies per message per node.
fn simulation(quick: bool) {
    let rt = paused_runtime();
    let (nodes_n, messages) = if quick { (30, 5) } else { (100, 50) };
    rt.block_on(async {
        let sim = MemoryNetwork::new(11);
        sim.set_default_link(LinkConfig { latency: Duration::from_millis(20), ..LinkConfig::default() });
        let nodes: Vec<Network> = (0..nodes_n).map(|_| sim.add_node()).collect();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        for (i, node) in nodes.iter().enumerate() {
            node.dial(nodes[(i + 1) % nodes_n].listen_addresses()[0].clone()).await.unwrap();
            for _ in 0..5 {
                let j = rng.gen_range(0..nodes_n);
                if j != i {
                    node.dial(nodes[j].listen_addresses()[0].clone()).await.unwrap();
                }
            }
        }
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        for node in &nodes {
            let mut sub = node.subscribe(&topic()).await.unwrap();
            let arrivals = Arc::clone(&arrivals);
            tokio::spawn(async move {
                while let Some(message) = sub.next().await {
                    arrivals.lock().unwrap().push((message.id, tokio::time::Instant::now()));
                }
            });
        }
        sim.settle().await;
        let before = sim.stats();
        let mut sent = Vec::new();
        for m in 0..messages {
            let publisher = &nodes[rng.gen_range(0..nodes_n)];
            let at = tokio::time::Instant::now();
            let id = publisher.publish(&topic(), "bench", vec![m as u8; 256]).await.unwrap();
            sent.push((id, at));
            sim.settle().await;
        }
        let after = sim.stats();
        let arrivals = arrivals.lock().unwrap().clone();
        let mut latencies: Vec<Duration> = arrivals
            .iter()
            .filter_map(|(id, t)| sent.iter().find(|(s, _)| s == id).map(|(_, at)| *t - *at))
            .collect();
        latencies.sort();
        let expected = messages * (nodes_n - 1);
        let copies = (after.gossip_frames - before.gossip_frames) as f64 / (messages * nodes_n) as f64;
        println!("FIGURE memory {nodes_n} nodes, 20 ms links, degree ~12: publish-to-all latency p50 {:?}, p99 {:?}, max {:?}",
            percentile(&latencies, 0.5), percentile(&latencies, 0.99), latencies.last().copied().unwrap_or_default());
        println!("FIGURE memory {nodes_n} nodes: {} of {expected} deliveries, {copies:.2} gossip copies received per message per node (1.00 = no duplicates)",
            latencies.len());
    });
}

/// The same scenario over libp2p on 127.0.0.1 (TCP): copies each node receives per
/// message, read from gossipsub's own counters (received with duplicates, and without).
fn libp2p_copies(quick: bool) {
    use causality_net::MetricsRegistry;
    let (nodes_n, messages) = if quick { (6, 3) } else { (100, 20) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut nodes = Vec::new();
        let mut registries = Vec::new();
        for i in 0..nodes_n {
            let registry = Arc::new(Mutex::new(MetricsRegistry::default()));
            let mut config = Libp2pConfig::new(Keypair::from_index(70_000 + i as u64));
            config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
            config.heartbeat = Duration::from_millis(200);
            config.metrics = Some(Arc::clone(&registry));
            nodes.push(Libp2pNetwork::start(config).await.unwrap());
            registries.push(registry);
        }
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        for (i, node) in nodes.iter().enumerate() {
            let _ = node.dial(nodes[(i + 1) % nodes_n].listen_addresses()[0].clone()).await;
            for _ in 0..5 {
                let j = rng.gen_range(0..nodes_n);
                if j != i {
                    let _ = node.dial(nodes[j].listen_addresses()[0].clone()).await;
                }
            }
        }
        let mut subs = Vec::new();
        for node in &nodes {
            subs.push(node.subscribe(&topic()).await.unwrap());
        }
        // Let meshes form over a few heartbeats.
        tokio::time::sleep(Duration::from_secs(if quick { 3 } else { 10 })).await;
        for m in 0..messages {
            let publisher = &nodes[rng.gen_range(0..nodes_n)];
            let _ = publisher.publish(&topic(), "bench", vec![m as u8; 256]).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let count = |registry: &Mutex<MetricsRegistry>, name: &str| -> f64 {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry.lock().unwrap()).unwrap();
            text.lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let unfiltered: f64 = registries
            .iter()
            .map(|r| count(r, "gossipsub_topic_msg_recv_counts_unfiltered_total"))
            .sum();
        let unique: f64 = registries
            .iter()
            .map(|r| count(r, "gossipsub_topic_msg_recv_counts_total"))
            .sum();
        let expected = (messages * (nodes_n - 1)) as f64;
        println!(
            "FIGURE libp2p {nodes_n} nodes (TCP, loopback, degree ~12): {unique:.0} of {expected:.0} deliveries, {:.2} gossip copies received per message delivered",
            unfiltered / unique.max(1.0)
        );
        drop(subs);
    });
}

async fn pair(addr: &str, receiver_limits: bool) -> (Network, Network) {
    let mut rng = rand::rngs::OsRng;
    let mut ca = Libp2pConfig::new(Keypair::generate(&mut rng));
    let mut cb = Libp2pConfig::new(Keypair::generate(&mut rng));
    ca.listen = vec![addr.parse().unwrap()];
    cb.listen = vec![addr.parse().unwrap()];
    if receiver_limits {
        for c in [&mut ca, &mut cb] {
            c.node.limits.messages_per_second = 1_000_000;
            c.node.limits.message_burst = 1_000_000;
            c.node.limits.requests_per_second = 1_000_000;
            c.node.limits.request_burst = 1_000_000;
            c.node.limits.subscription_queue = 1 << 20;
        }
    }
    let a = Libp2pNetwork::start(ca).await.unwrap();
    let b = Libp2pNetwork::start(cb).await.unwrap();
    (a, b)
}

async fn connect(a: &Network, b: &Network) -> Duration {
    let mut events = a.events();
    let start = Instant::now();
    a.dial(b.listen_addresses()[0].clone()).await.unwrap();
    let bp = b.local_peer_id();
    loop {
        if let Some(NetworkEvent::PeerConnected { peer, .. }) = events.next().await
            && peer == bp
        {
            return start.elapsed();
        }
    }
}

fn libp2p(quick: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (name, addr) in [("TCP+noise", "/ip4/127.0.0.1/tcp/0"), ("QUIC", "/ip4/127.0.0.1/udp/0/quic-v1")] {
            let mut times = Vec::new();
            for _ in 0..if quick { 2 } else { 20 } {
                let (a, b) = pair(addr, false).await;
                times.push(connect(&a, &b).await);
            }
            times.sort();
            println!("FIGURE libp2p {name}: connection setup incl. version handshake, median {:?} (min {:?})", percentile(&times, 0.5), times[0]);
        }

        let (a, b) = pair("/ip4/127.0.0.1/tcp/0", true).await;
        connect(&a, &b).await;
        let mut sub = b.subscribe(&topic()).await.unwrap();
        while !a.topic_peers(&topic()).await.unwrap().contains(&b.local_peer_id()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The publisher keeps at most WINDOW messages unreceived, as a flow-controlled
        // application would: gossip has no backpressure, and its send queues drop what
        // overflows them (counted in `publish_failures`).
        const WINDOW: u64 = 256;
        let n: u64 = if quick { 200 } else { 20_000 };
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let payload = vec![0x5a; 1024];
        let start = Instant::now();
        let publisher = {
            let (a, received) = (a.clone(), Arc::clone(&received));
            tokio::spawn(async move {
                for sent in 0..n {
                    while sent >= received.load(std::sync::atomic::Ordering::Relaxed) + WINDOW {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    a.publish(&topic(), "bench", payload.clone()).await.unwrap();
                }
            })
        };
        let mut last = start.elapsed();
        while received.load(std::sync::atomic::Ordering::Relaxed) < n {
            match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
                Ok(Some(_)) => {
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    last = start.elapsed();
                }
                _ => break,
            }
        }
        publisher.abort();
        let got = received.load(std::sync::atomic::Ordering::Relaxed);
        let rate = got as f64 / last.as_secs_f64();
        println!(
            "FIGURE libp2p TCP gossip 1 KiB (window {WINDOW}): {got}/{n} delivered, {rate:.0} msg/s, {:.1} MB/s; publish failures {}",
            rate * 1024.0 / 1e6,
            a.metrics().publish_failures
        );

        let mut requests = b.serve("/causality/bench/0.1.0").await.unwrap();
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                request.respond(vec![1]);
            }
        });
        let body = vec![0xa5; 256 * 1024];
        let n = if quick { 10 } else { 400 };
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (a, body, peer) = (a.clone(), body.clone(), b.local_peer_id());
            tasks.push(tokio::spawn(async move {
                for _ in 0..n / 4 {
                    a.request(peer, "/causality/bench/0.1.0", body.clone()).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = start.elapsed();
        let rate = f64::from(n) / elapsed.as_secs_f64();
        println!("FIGURE libp2p TCP request-response 256 KiB (4 in flight): {rate:.0} req/s, {:.1} MB/s", rate * 262_144.0 / 1e6);
    });
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    cpu(&mut criterion);
    criterion.final_summary();
    simulation(quick);
    libp2p_copies(quick);
    libp2p(quick);
}

/// A current-thread runtime on virtual time, for the in-memory simulations.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}
