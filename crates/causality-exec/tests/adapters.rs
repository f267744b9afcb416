//! The coordinator's async API with real executors on both network adapters: three nodes,
//! a DAG with a diamond and a conditional branch, monitored to its end; a claim and a
//! submission by hand; a failed sequence retried by its creator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use causality_exec::{
    Condition, Config, Coordinator, Edge, ExecOutput, ExecutionSequence, ExecutionStatus, Executor,
    ExecutorInfo, ExecutorView, WorkSpec,
};
use causality_net::{Keypair, Libp2pConfig, Libp2pNetwork, MemoryNetwork, Network};

/// Concatenates its input and its predecessors' outputs; work with input "flaky" fails
/// until `fixed` is set.
struct Concat {
    fixed: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Executor for Concat {
    async fn execute(&self, work: &WorkSpec, inputs: &[Vec<u8>]) -> Result<ExecOutput, String> {
        if work.input == b"flaky" && !self.fixed.load(Ordering::SeqCst) {
            return Err("disk full".into());
        }
        let mut output = work.input.clone();
        for i in inputs {
            output.extend_from_slice(i);
        }
        Ok(ExecOutput {
            output,
            proof_id: None,
        })
    }
}

fn info() -> ExecutorInfo {
    ExecutorInfo {
        kinds: ["concat".to_owned()].into(),
        capacity: 2,
    }
}

async fn scenario(nets: [Network; 3]) {
    let [a, b, c] = &nets;
    b.dial(a.listen_addresses()[0].clone()).await.unwrap();
    c.dial(a.listen_addresses()[0].clone()).await.unwrap();
    c.dial(b.listen_addresses()[0].clone()).await.unwrap();
    let view: ExecutorView = Arc::new(nets.iter().map(|n| (n.local_peer_id(), info())).collect());
    let (_tx, rx) = tokio::sync::watch::channel(view);
    let fixed = Arc::new(AtomicBool::new(false));
    let mut nodes = Vec::new();
    for net in &nets {
        let config = Config {
            executor: info(),
            ..Config::default()
        };
        nodes.push(
            Coordinator::start(
                net.clone(),
                config,
                rx.clone(),
                Arc::new(Concat {
                    fixed: fixed.clone(),
                }),
            )
            .await
            .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 0 → {1, 2} → 3 (a diamond); 3 → 4 only if 3's output is "never" (so 4 is skipped).
    let work = |s: &str| WorkSpec::new("concat", s.as_bytes().to_vec());
    let sequence = ExecutionSequence::new(
        a.local_peer_id(),
        b"adapters",
        [
            (0, work("a")),
            (1, work("b")),
            (2, work("c")),
            (3, work("d")),
            (4, work("e")),
        ],
        vec![
            Edge::new(0, 1),
            Edge::new(0, 2),
            Edge::new(1, 3),
            Edge::new(2, 3),
            Edge {
                from: 3,
                to: 4,
                condition: Some(Condition::Equals(b"never".to_vec())),
                weight: 0,
            },
        ],
    );
    let id = sequence.id();
    let mut monitor = nodes[2].monitor_sequence(id).await.unwrap();
    assert_eq!(nodes[0].announce_sequence(sequence).await.unwrap(), id);
    let mut last = None;
    while let Some(statement) = tokio::time::timeout(Duration::from_secs(30), monitor.next())
        .await
        .unwrap()
    {
        last = Some(statement);
    }
    let last = last.expect("statements arrived");
    assert_eq!(last.status, ExecutionStatus::Completed);
    assert_eq!(last.skipped_nodes, vec![4]);
    let mut completed = last.completed_nodes.clone();
    completed.sort_unstable();
    assert_eq!(completed, vec![0, 1, 2, 3]);

    // By hand: claim a node of a one-node sequence and hand its result in.
    let single = ExecutionSequence::new(
        a.local_peer_id(),
        b"by hand",
        [(0, WorkSpec::new("manual", b"x".to_vec()))],
        Vec::new(),
    );
    let sid = nodes[0].announce_sequence(single).await.unwrap();
    let mut token = None;
    for _ in 0..100 {
        match nodes[1].claim_node(sid, 0).await {
            Ok(t) => {
                token = Some(t);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let token = token.expect("a lease");
    assert_eq!(token.holder, b.local_peer_id());
    nodes[1]
        .submit_node_result(
            token.clone(),
            ExecOutput {
                output: b"done by hand".to_vec(),
                proof_id: None,
            },
        )
        .await
        .unwrap();
    // Twice is idempotent; another claim is refused.
    nodes[1]
        .submit_node_result(
            token,
            ExecOutput {
                output: b"done by hand".to_vec(),
                proof_id: None,
            },
        )
        .await
        .unwrap();
    assert!(nodes[2].claim_node(sid, 0).await.is_err());

    // A sequence whose second node fails every attempt; its creator retries it once the
    // fault is fixed, and only the failed node runs again.
    let flaky = ExecutionSequence::new(
        a.local_peer_id(),
        b"flaky",
        [(0, work("ok")), (1, work("flaky"))],
        vec![Edge::new(0, 1)],
    );
    let fid = flaky.id();
    let last_of = |mut monitor: causality_exec::SequenceMonitor| async move {
        let mut last = None;
        while let Some(s) = tokio::time::timeout(Duration::from_secs(30), monitor.next())
            .await
            .unwrap()
        {
            last = Some(s);
        }
        last.expect("statements arrived")
    };
    let monitor = nodes[0].monitor_sequence(fid).await.unwrap();
    nodes[0].announce_sequence(flaky).await.unwrap();
    let failed = last_of(monitor).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(failed.failed_nodes.len(), 1, "{failed:?}");
    assert!(failed.failed_nodes[0].1.contains("disk full"), "{failed:?}");
    let e = nodes[1].retry_sequence(fid).await.unwrap_err();
    assert!(e.to_string().contains("creator"), "{e}");
    fixed.store(true, Ordering::SeqCst);
    nodes[0].retry_sequence(fid).await.unwrap();
    let monitor = nodes[0].monitor_sequence(fid).await.unwrap();
    let mut done = last_of(monitor).await;
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:?}");
    done.completed_nodes.sort_unstable();
    assert_eq!(done.completed_nodes, vec![0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_coordinators_over_the_memory_network() {
    let sim = MemoryNetwork::new(5);
    scenario([sim.add_node(), sim.add_node(), sim.add_node()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_coordinators_over_libp2p_on_loopback() {
    let mut nets = Vec::new();
    for i in 0..3 {
        let mut config = Libp2pConfig::new(Keypair::from_index(900 + i));
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        nets.push(Libp2pNetwork::start(config).await.unwrap());
    }
    scenario(nets.try_into().unwrap()).await;
}
