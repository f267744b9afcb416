//! Three coordinators over the in-memory network (virtual time) run a small DAG — a
//! diamond — with an executor that concatenates its inputs; the creator follows the
//! leader's signed statements to the end. `cargo run -p causality-exec --example run_a_dag`.

use std::sync::Arc;
use std::time::Duration;

use causality_exec::{
    Config, Coordinator, Edge, ExecOutput, ExecutionSequence, ExecutionStatus, Executor,
    ExecutorInfo, ExecutorView, WorkSpec,
};

/// The work: its own input followed by its predecessors' outputs.
struct Concat;

#[async_trait::async_trait]
impl Executor for Concat {
    async fn execute(&self, work: &WorkSpec, inputs: &[Vec<u8>]) -> Result<ExecOutput, String> {
        let mut output = work.input.clone();
        for input in inputs {
            output.extend_from_slice(input);
        }
        Ok(ExecOutput {
            output,
            proof_id: None,
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let hub = causality_net::MemoryNetwork::new(3);
    let nets: Vec<_> = (0..3).map(|_| hub.add_node()).collect();
    for n in &nets[1..] {
        n.dial(nets[0].listen_addresses()[0].clone()).await?;
    }
    nets[2].dial(nets[1].listen_addresses()[0].clone()).await?;
    // Every node executes "concat" work, two at a time. (In the node, this view comes
    // from discovery's members with the executor role.)
    let info = ExecutorInfo {
        kinds: ["concat".to_owned()].into(),
        capacity: 2,
    };
    let view: ExecutorView = Arc::new(
        nets.iter()
            .map(|n| (n.local_peer_id(), info.clone()))
            .collect(),
    );
    let (_keep, view) = tokio::sync::watch::channel(view);
    let mut nodes = Vec::new();
    for net in &nets {
        let config = Config {
            executor: info.clone(),
            ..Config::default()
        };
        nodes.push(Coordinator::start(net.clone(), config, view.clone(), Arc::new(Concat)).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 0 → {1, 2} → 3.
    let work = |s: &str| WorkSpec::new("concat", s.as_bytes().to_vec());
    let sequence = ExecutionSequence::new(
        nets[0].local_peer_id(),
        b"example",
        [
            (0, work("a")),
            (1, work("b")),
            (2, work("c")),
            (3, work("d")),
        ],
        vec![
            Edge::new(0, 1),
            Edge::new(0, 2),
            Edge::new(1, 3),
            Edge::new(2, 3),
        ],
    );
    let id = sequence.id();
    let mut monitor = nodes[0].monitor_sequence(id).await?;
    nodes[0].announce_sequence(sequence).await?;
    let mut last = None;
    let mut outputs = std::collections::BTreeMap::new();
    while let Some(statement) =
        tokio::time::timeout(Duration::from_secs(60), monitor.next()).await?
    {
        println!(
            "term {} statement {}: {:?}, done {:?}",
            statement.term, statement.seq, statement.status, statement.completed_nodes
        );
        for result in &statement.results {
            outputs.insert(result.token.node, result.output.clone());
        }
        last = Some(statement);
    }
    let last = last.ok_or("no statement arrived")?;
    assert_eq!(last.status, ExecutionStatus::Completed);
    // Each output is the node's input followed by its predecessors' outputs.
    assert_eq!(outputs[&3], b"dbaca");
    println!(
        "sequence {} completed under leader {}; node 3 output {:?}",
        id.short(),
        last.leader.short(),
        String::from_utf8_lossy(&outputs[&3])
    );
    Ok(())
}
