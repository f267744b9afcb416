//! Execution sequences as operators write them (a JSON file), what the node remembers of
//! the sequences it follows, and `causality-node exec …` / `module add`, which talk to a
//! running node through its admin endpoint.
//!
//! A sequence file:
//!
//! ```json
//! {
//!   "nonce": "my first run",
//!   "nodes": [
//!     { "id": 0, "module_file": "fold.wat", "argument": "left" },
//!     { "id": 1, "module_file": "fold.wat", "argument": "right", "agreement": 2 },
//!     { "id": 2, "module": "<content id>", "function": "run", "fuel": 1000000 }
//!   ],
//!   "edges": [[0, 2], [1, 2]]
//! }
//! ```
//!
//! Each node is WebAssembly work (`kind` defaults to `wasm`) naming its module by content
//! id (`module`) or by a file beside the sequence file (`module_file`, uploaded to the node
//! first, text or binary form); `argument` is text (`argument_hex` for bytes), `function`
//! defaults to `run`, `fuel` to the executor's limit. `agreement: 2` has two executors run
//! the node and their outputs compared before it is accepted. Work of other kinds gives
//! its input as `input` (text) instead.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use causality_exec::{
    Edge, ExecutionSequence, ExecutionSequenceMessage, ExecutionStatus, NodeId, SequenceId,
    WorkSpec,
};
use causality_hash::ContentId;
use futures::StreamExt as _;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::admin::hex;
use crate::executors::{WASM, proto};

/// Sequence files larger than this are refused.
const MAX_SEQUENCE_FILE_BYTES: u64 = 2 << 20;
/// Sequences whose statements the node keeps (the oldest is forgotten first).
const REMEMBERED: usize = 256;

/// A sequence as written in a file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SequenceFile {
    /// Makes the sequence's id unique (default: random).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nonce: Option<String>,
    /// Failures of one node that fail the sequence (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_attempts: Option<u32>,
    /// The execution nodes.
    pub(crate) nodes: Vec<NodeSpec>,
    /// `[from, to]` pairs.
    #[serde(default)]
    pub(crate) edges: Vec<(NodeId, NodeId)>,
}

/// One execution node of a sequence file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeSpec {
    pub(crate) id: NodeId,
    #[serde(default = "wasm_kind")]
    pub(crate) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) module_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) function: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) argument: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) argument_hex: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) input: String,
    #[serde(default)]
    pub(crate) fuel: u64,
    #[serde(default)]
    pub(crate) agreement: u32,
    #[serde(default)]
    pub(crate) estimate_ms: u64,
}

fn wasm_kind() -> String {
    WASM.to_owned()
}

fn unhex(text: &str) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("`{text}` is not hex");
    }
    Ok((0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect())
}

impl NodeSpec {
    fn work(&self) -> Result<WorkSpec> {
        let input = if self.kind == WASM {
            let Some(module) = &self.module else {
                bail!("node {}: `module` (a content id) is required", self.id);
            };
            let module: ContentId = module
                .parse()
                .map_err(|e| anyhow::anyhow!("node {}: module `{module}`: {e}", self.id))?;
            let argument = match &self.argument_hex {
                Some(h) => unhex(h).with_context(|| format!("node {}: argument_hex", self.id))?,
                None => self.argument.as_bytes().to_vec(),
            };
            proto::v1::WasmWork {
                module: module.as_bytes().to_vec(),
                function: self.function.clone(),
                argument,
                fuel: self.fuel,
            }
            .encode_to_vec()
        } else {
            self.input.as_bytes().to_vec()
        };
        Ok(WorkSpec {
            kind: self.kind.clone(),
            input,
            proof_key: None,
            agreement: self.agreement,
            estimate_ms: self.estimate_ms,
        })
    }
}

impl SequenceFile {
    /// The sequence `creator` submits: ids resolved, validated by the protocol on
    /// submission.
    pub(crate) fn to_sequence(&self, creator: causality_net::PeerId) -> Result<ExecutionSequence> {
        if self.nodes.is_empty() {
            bail!("the sequence has no nodes");
        }
        let mut nodes = BTreeMap::new();
        for node in &self.nodes {
            if nodes.insert(node.id, node.work()?).is_some() {
                bail!("node {} is listed twice", node.id);
            }
        }
        let edges = self
            .edges
            .iter()
            .map(|&(from, to)| Edge::new(from, to))
            .collect();
        let nonce = match &self.nonce {
            Some(n) => n.as_bytes().to_vec(),
            None => {
                use rand::RngCore as _;
                let mut nonce = vec![0; 16];
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                nonce
            }
        };
        let mut sequence = ExecutionSequence::new(creator, &nonce, nodes, edges);
        if let Some(attempts) = self.max_attempts {
            sequence.max_attempts = attempts;
        }
        Ok(sequence)
    }
}

/// What the node knows of one sequence: the latest statement, and every result accepted.
#[derive(Debug)]
struct Followed {
    latest: ExecutionSequenceMessage,
    results: BTreeMap<NodeId, causality_exec::NodeResult>,
}

/// The sequences the node follows, bounded.
#[derive(Debug, Default)]
pub(crate) struct Sequences {
    by_id: Mutex<(BTreeMap<SequenceId, Followed>, VecDeque<SequenceId>)>,
}

impl Sequences {
    /// Follows every statement the coordinator hands out, until it stops.
    pub(crate) fn follow(self: &Arc<Self>, exec: &causality_exec::Coordinator) {
        let mut statements = exec.subscribe_to_sequences();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(statement) = statements.next().await {
                this.record(statement);
            }
        });
    }

    fn record(&self, statement: ExecutionSequenceMessage) {
        let mut guard = self
            .by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (by_id, order) = &mut *guard;
        let id = statement.sequence_id;
        if !by_id.contains_key(&id) {
            if order.len() >= REMEMBERED
                && let Some(oldest) = order.pop_front()
            {
                by_id.remove(&oldest);
            }
            order.push_back(id);
        }
        let followed = by_id.entry(id).or_insert_with(|| Followed {
            latest: statement.clone(),
            results: BTreeMap::new(),
        });
        for result in &statement.results {
            followed.results.insert(result.token.node, result.clone());
        }
        // Statements of a later term, or later in the same term, replace the latest.
        if (statement.term, statement.seq) >= (followed.latest.term, followed.latest.seq) {
            followed.latest = statement;
        }
    }

    /// The JSON `GET /exec/sequence` answers: status, leader and term, nodes by state,
    /// results with their outputs in hex.
    pub(crate) fn describe(&self, id: &SequenceId) -> Option<serde_json::Value> {
        let guard = self
            .by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let followed = guard.0.get(id)?;
        let s = &followed.latest;
        Some(json!({
            "sequence": id.to_string(),
            "status": status_name(s.status),
            "leader": s.leader.to_string(),
            "term": s.term,
            "completed": s.completed_nodes,
            "pending": s.pending_nodes,
            "failed": s.failed_nodes.iter().map(|(n, why)| json!({"node": n, "reason": why})).collect::<Vec<_>>(),
            "skipped": s.skipped_nodes,
            "results": followed.results.values().map(|r| json!({
                "node": r.token.node,
                "executor": r.token.holder.to_string(),
                "token": r.token.token,
                "output_hex": hex(&r.output),
                "ms": r.finished_ms.saturating_sub(r.started_ms),
                "error": r.error,
            })).collect::<Vec<_>>(),
        }))
    }
}

fn status_name(status: ExecutionStatus) -> &'static str {
    match status {
        ExecutionStatus::Pending => "pending",
        ExecutionStatus::Running => "running",
        ExecutionStatus::Completed => "completed",
        ExecutionStatus::Failed => "failed",
    }
}

/// Reads a sequence file and uploads the modules it names by file, rewriting them to ids.
async fn load(client: &crate::admin::Client, path: &Path) -> Result<SequenceFile> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_SEQUENCE_FILE_BYTES {
        bail!(
            "{}: {size} bytes, sequence files are at most {MAX_SEQUENCE_FILE_BYTES}",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut file: SequenceFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a sequence file", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut uploaded: BTreeMap<PathBuf, String> = BTreeMap::new();
    for node in &mut file.nodes {
        let Some(module_file) = node.module_file.take() else {
            continue;
        };
        if node.module.is_some() {
            bail!("node {}: give `module` or `module_file`, not both", node.id);
        }
        let module_path = base.join(&module_file);
        let id = match uploaded.get(&module_path) {
            Some(id) => id.clone(),
            None => {
                let id = add_module(client, &module_path).await?;
                uploaded.insert(module_path, id.clone());
                id
            }
        };
        node.module = Some(id);
    }
    Ok(file)
}

/// `module add FILE`: uploads a module; returns its content id.
pub(crate) async fn add_module(client: &crate::admin::Client, path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let answer = client
        .post("/modules", bytes)
        .await
        .with_context(|| format!("module {}", path.display()))?;
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    answer["module"]
        .as_str()
        .map(str::to_owned)
        .context("the node did not name the module")
}

/// `exec submit FILE`: submits a sequence, then (unless `detach`) follows it with a
/// progress bar until it completes (exit 0) or fails (exit 1).
pub(crate) async fn submit(
    client: &crate::admin::Client,
    path: &Path,
    detach: bool,
) -> Result<std::process::ExitCode> {
    let file = load(client, path).await?;
    let answer = client
        .post("/exec/sequences", serde_json::to_vec(&file)?)
        .await
        .context("the node refused the sequence")?;
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    let id = answer["sequence"]
        .as_str()
        .context("the node did not name the sequence")?
        .to_owned();
    println!("sequence {id}");
    if detach {
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let bar = indicatif::ProgressBar::new(file.nodes.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} nodes {msg}",
        )
        .expect("a valid template"),
    );
    loop {
        let shown = match client.get(&format!("/exec/sequence?id={id}")).await {
            Ok(body) => Some(serde_json::from_str::<serde_json::Value>(&body)?),
            // Not yet heard of: the first statement is on its way.
            Err(_) => None,
        };
        if let Some(shown) = shown {
            let count = |key: &str| shown[key].as_array().map_or(0, Vec::len) as u64;
            bar.set_position(count("completed") + count("failed") + count("skipped"));
            bar.set_message(format!(
                "{} (leader {} term {})",
                shown["status"].as_str().unwrap_or("?"),
                shown["leader"].as_str().unwrap_or("?"),
                shown["term"]
            ));
            match shown["status"].as_str() {
                Some("completed") => {
                    bar.finish();
                    println!(
                        "completed: {} nodes done, {} skipped",
                        count("completed"),
                        count("skipped")
                    );
                    return Ok(std::process::ExitCode::SUCCESS);
                }
                Some("failed") => {
                    bar.abandon();
                    println!("failed:");
                    for failure in shown["failed"].as_array().into_iter().flatten() {
                        println!("  node {}: {}", failure["node"], failure["reason"]);
                    }
                    return Ok(std::process::ExitCode::from(1));
                }
                _ => {}
            }
        }
        bar.tick();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
