//! The work this node runs for execution sequences: content-addressed WebAssembly modules,
//! interpreted by `wasmi` with fuel metering.
//!
//! A work spec of kind `wasm` carries a `WasmWork` as its input: the
//! module's content id (BLAKE3 of its binary form), the exported function (default `run`),
//! an argument and a fuel limit. The module's contract (see the crate README):
//! - it imports nothing (no host calls: its output depends on its input alone) and uses no
//!   floating point (NaN bit patterns are the one nondeterminism WebAssembly has);
//! - it exports its `memory`, `alloc(len: i32) -> i32` and the function,
//!   `(ptr: i32, len: i32) -> i64`;
//! - the input written at `ptr` is a list of frames, each a u32 little-endian length then
//!   the bytes: the argument first, then each predecessor's output in order;
//! - the function returns `ptr << 32 | len` of its output in memory.
//!
//! So the same module on the same input gives the same output on every executor, which is
//! what validation by re-execution (`agreement`) relies on. Fuel bounds the instructions a
//! run executes, a memory limit the pages it grows to, and the output's size is bounded.
//!
//! Modules live in `DATA_DIR/modules/`, one file per content id, checked against the id
//! when read. An executor that lacks a module asks its connected peers for it
//! (`/causality/wasm-module/0.1.0`) and keeps the first copy whose hash matches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use causality_exec::{ExecOutput, Executor, WorkSpec};
use causality_hash::ContentId;
use causality_net::{Network, ProtocolVersion, RequestLimits, RequestProtocol};
use futures::StreamExt as _;
use prost::Message as _;

/// The node's protobuf wire types, generated from `proto/causality/node/`.
#[allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
#[path = "generated/mod.rs"]
pub(crate) mod proto;

/// The kind of WebAssembly work.
pub(crate) const WASM: &str = "wasm";
/// Every work kind this node's executors run.
pub(crate) const KINDS: &[&str] = &[WASM];
/// The function called when a work spec names none.
const DEFAULT_FUNCTION: &str = "run";

/// The request protocol over which modules are fetched by content id
/// (`/causality/wasm-module/0.1.0`).
pub(crate) const MODULE_PROTOCOL: &str = "wasm-module";
/// A module's binary form is at most this large.
pub(crate) const MAX_MODULE_BYTES: usize = 1 << 20;
/// An output is at most this large.
const MAX_OUTPUT_BYTES: usize = 1 << 20;
/// A run's linear memory grows to this at most.
const MAX_MEMORY_BYTES: usize = 64 << 20;
/// Peers asked for a missing module before giving up.
const FETCH_PEERS: usize = 8;
/// Compiled modules kept; the cache is emptied when it is full.
const COMPILED: usize = 64;

/// The module protocol and its limits: tiny requests, responses as large as a module.
pub(crate) fn module_protocol() -> RequestProtocol {
    let limits = RequestLimits::builder()
        .max_request_bytes(64)
        .max_response_bytes(MAX_MODULE_BYTES + 16)
        .queue(64)
        .rate(20, 40)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("valid module protocol limits");
    RequestProtocol::new(MODULE_PROTOCOL, &[ProtocolVersion::new(0, 1, 0)], limits)
        .expect("valid module protocol")
}

/// Modules by content id, one file each under a directory.
#[derive(Debug)]
pub(crate) struct Modules {
    dir: PathBuf,
}

impl Modules {
    /// The module directory `dir`, created when missing.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the module directory {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, id: &ContentId) -> PathBuf {
        self.dir.join(format!("{}.wasm", id.to_hex()))
    }

    /// The module `id`, when it is held here and its bytes still hash to `id` (a damaged
    /// file is removed, so that it is fetched again).
    pub(crate) fn get(&self, id: &ContentId) -> Option<Vec<u8>> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).ok()?;
        if ContentId::of(&bytes) == *id {
            return Some(bytes);
        }
        tracing::warn!(target: "causality_node", module = %id, file = %path.display(), "a stored module does not match its id; removed");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Checks that `wasm` is a module this node can run and keeps it; returns its id.
    /// Text form (`.wat`) is turned into the binary form first: the id is the binary's.
    pub(crate) fn add(&self, engine: &wasmi::Engine, wasm: &[u8]) -> Result<ContentId> {
        let binary = wat::parse_bytes(wasm).context("not a WebAssembly module")?;
        if binary.len() > MAX_MODULE_BYTES {
            anyhow::bail!(
                "the module is {} bytes, at most {MAX_MODULE_BYTES} are accepted",
                binary.len()
            );
        }
        check_contract(
            &wasmi::Module::new(engine, &binary[..]).map_err(|e| anyhow::anyhow!("{e}"))?,
        )?;
        let id = ContentId::of(&binary);
        self.put(&id, &binary)?;
        Ok(id)
    }

    /// Writes a module whose id was checked, through a temporary file and a rename.
    fn put(&self, id: &ContentId, binary: &[u8]) -> Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)
            .with_context(|| format!("cannot write in {}", self.dir.display()))?;
        std::io::Write::write_all(&mut file, binary)?;
        file.persist(self.path(id)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The engine every run uses: fuel metered, no floating point.
pub(crate) fn engine() -> wasmi::Engine {
    let mut config = wasmi::Config::default();
    config.consume_fuel(true).floats(false);
    wasmi::Engine::new(&config)
}

/// Refuses modules that import anything (host calls would make output depend on more
/// than input) or lack the exports the contract names.
fn check_contract(module: &wasmi::Module) -> Result<()> {
    if let Some(import) = module.imports().next() {
        anyhow::bail!(
            "the module imports `{}.{}`; modules may import nothing",
            import.module(),
            import.name()
        );
    }
    for name in ["memory", "alloc"] {
        if module.get_export(name).is_none() {
            anyhow::bail!("the module does not export `{name}`");
        }
    }
    Ok(())
}

/// Runs `wasm` work.
pub(crate) struct WasmExecutor {
    engine: wasmi::Engine,
    modules: Arc<Modules>,
    network: Network,
    max_fuel: u64,
    compiled: Mutex<BTreeMap<ContentId, wasmi::Module>>,
}

impl WasmExecutor {
    pub(crate) fn new(
        engine: wasmi::Engine,
        modules: Arc<Modules>,
        network: Network,
        max_fuel: u64,
    ) -> Self {
        Self {
            engine,
            modules,
            network,
            max_fuel,
            compiled: Mutex::new(BTreeMap::new()),
        }
    }

    /// The module `id`: from the store, else from the first connected peer that has it.
    async fn module(&self, id: ContentId) -> Result<Vec<u8>, String> {
        if let Some(bytes) = self.modules.get(&id) {
            return Ok(bytes);
        }
        let request = proto::v1::ModuleRequest {
            module: id.as_bytes().to_vec(),
        }
        .encode_to_vec();
        for peer in self.network.peers().into_iter().take(FETCH_PEERS) {
            let answer = match self
                .network
                .request(peer.peer, module_protocol(), request.clone())
                .await
            {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::debug!(target: "causality_node", module = %id, peer = %peer.peer, error = %e, "module fetch failed");
                    continue;
                }
            };
            let Ok(response) = proto::v1::ModuleResponse::decode(&answer[..]) else {
                tracing::warn!(target: "causality_node", module = %id, peer = %peer.peer, "malformed module response");
                continue;
            };
            if response.wasm.is_empty() {
                continue;
            }
            if ContentId::of(&response.wasm) != id {
                tracing::warn!(target: "causality_node", module = %id, peer = %peer.peer, "a peer served a module that does not match its id");
                continue;
            }
            if let Err(e) = self.modules.put(&id, &response.wasm) {
                tracing::warn!(target: "causality_node", module = %id, error = %format!("{e:#}"), "cannot keep a fetched module");
            }
            return Ok(response.wasm);
        }
        Err(format!(
            "module {id} is not held here nor by any connected peer"
        ))
    }

    fn compile(&self, id: ContentId, bytes: &[u8]) -> Result<wasmi::Module, String> {
        let mut compiled = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(module) = compiled.get(&id) {
            return Ok(module.clone());
        }
        let module =
            wasmi::Module::new(&self.engine, bytes).map_err(|e| format!("module {id}: {e}"))?;
        check_contract(&module).map_err(|e| format!("module {id}: {e}"))?;
        if compiled.len() >= COMPILED {
            compiled.clear();
        }
        compiled.insert(id, module.clone());
        Ok(module)
    }

    async fn run(&self, work: &WorkSpec, inputs: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        let spec = proto::v1::WasmWork::decode(&work.input[..])
            .map_err(|e| format!("the work's input is not a WasmWork: {e}"))?;
        let id = ContentId::from_slice(&spec.module)
            .map_err(|e| format!("the work's module id: {e}"))?;
        let fuel = match spec.fuel {
            0 => self.max_fuel,
            asked if asked > self.max_fuel => {
                return Err(format!(
                    "the work asks for {asked} fuel, this executor gives {} at most",
                    self.max_fuel
                ));
            }
            asked => asked,
        };
        let function = if spec.function.is_empty() {
            DEFAULT_FUNCTION.to_owned()
        } else {
            spec.function
        };
        let bytes = self.module(id).await?;
        let module = self.compile(id, &bytes)?;
        let mut input = Vec::new();
        for frame in std::iter::once(&spec.argument).chain(inputs) {
            let len =
                u32::try_from(frame.len()).map_err(|_| "an input is over 4 GiB".to_owned())?;
            input.extend_from_slice(&len.to_le_bytes());
            input.extend_from_slice(frame);
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || run_module(&engine, &module, &function, &input, fuel))
            .await
            .map_err(|e| format!("the run was lost: {e}"))?
    }
}

/// One run of `function` on `input`, in a fresh store.
pub(crate) fn run_module(
    engine: &wasmi::Engine,
    module: &wasmi::Module,
    function: &str,
    input: &[u8],
    fuel: u64,
) -> Result<Vec<u8>, String> {
    let limits = wasmi::StoreLimitsBuilder::new()
        .memory_size(MAX_MEMORY_BYTES)
        .instances(1)
        .memories(1)
        .tables(1)
        .build();
    let mut store = wasmi::Store::new(engine, limits);
    store.limiter(|limits| limits);
    store.set_fuel(fuel).map_err(|e| e.to_string())?;
    let instance = wasmi::Linker::<wasmi::StoreLimits>::new(engine)
        .instantiate_and_start(&mut store, module)
        .map_err(|e| format!("cannot start the module: {e}"))?;
    let memory = instance
        .get_memory(&store, "memory")
        .ok_or("the module exports no `memory`")?;
    let alloc = instance
        .get_typed_func::<i32, i32>(&store, "alloc")
        .map_err(|e| format!("`alloc`: {e}"))?;
    let run = instance
        .get_typed_func::<(i32, i32), i64>(&store, function)
        .map_err(|e| format!("`{function}`: {e}"))?;
    let len = i32::try_from(input.len()).map_err(|_| "the input is over 2 GiB".to_owned())?;
    let ptr = alloc
        .call(&mut store, len)
        .map_err(|e| format!("`alloc` failed: {e}"))?;
    memory
        .write(&mut store, ptr as u32 as usize, input)
        .map_err(|_| "`alloc` returned memory the input does not fit in".to_owned())?;
    let packed = run
        .call(&mut store, (ptr, len))
        .map_err(|e| format!("`{function}` failed: {e}"))?;
    let (out_ptr, out_len) = (
        (packed as u64 >> 32) as usize,
        (packed as u64 as u32) as usize,
    );
    if out_len > MAX_OUTPUT_BYTES {
        return Err(format!(
            "the output is {out_len} bytes, at most {MAX_OUTPUT_BYTES} are accepted"
        ));
    }
    let mut output = vec![0; out_len];
    memory
        .read(&store, out_ptr, &mut output)
        .map_err(|_| "the output lies outside the module's memory".to_owned())?;
    Ok(output)
}

/// The node's executor: dispatches work by kind.
pub(crate) struct NodeExecutor {
    pub(crate) wasm: WasmExecutor,
}

#[async_trait::async_trait]
impl Executor for NodeExecutor {
    async fn execute(&self, work: &WorkSpec, inputs: &[Vec<u8>]) -> Result<ExecOutput, String> {
        match work.kind.as_str() {
            WASM => Ok(ExecOutput {
                output: self.wasm.run(work, inputs).await?,
                proof_id: None,
            }),
            other => Err(format!("this node runs no work of kind `{other}`")),
        }
    }
}

/// Answers module requests from the store, until the network stops.
pub(crate) async fn serve_modules(network: Network, modules: Arc<Modules>) -> Result<()> {
    let mut requests = network.serve(module_protocol()).await?;
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let wasm = proto::v1::ModuleRequest::decode(&request.body[..])
                .ok()
                .and_then(|r| ContentId::from_slice(&r.module).ok())
                .and_then(|id| modules.get(&id))
                .unwrap_or_default();
            request.respond(proto::v1::ModuleResponse { wasm }.encode_to_vec());
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOLD: &str = include_str!("../modules/fold.wat");

    fn compile(engine: &wasmi::Engine, wat: &str) -> Result<wasmi::Module> {
        let binary = wat::parse_str(wat)?;
        let module = wasmi::Module::new(engine, &binary[..]).map_err(|e| anyhow::anyhow!("{e}"))?;
        check_contract(&module)?;
        Ok(module)
    }

    fn frames(items: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            out.extend_from_slice(&(item.len() as u32).to_le_bytes());
            out.extend_from_slice(item);
        }
        out
    }

    fn fnv(bytes: &[u8]) -> Vec<u8> {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        hash.to_le_bytes().to_vec()
    }

    #[test]
    fn the_example_module_folds_its_input_the_same_way_every_time() {
        let engine = engine();
        let module = compile(&engine, FOLD).unwrap();
        let input = frames(&[b"argument", b"first predecessor", b""]);
        let out = run_module(&engine, &module, "run", &input, 1_000_000).unwrap();
        assert_eq!(out, fnv(&input));
        assert_eq!(
            run_module(&engine, &module, "run", &input, 1_000_000).unwrap(),
            out
        );
        let other = frames(&[b"argument", b"first predecessor!"]);
        assert_ne!(
            run_module(&engine, &module, "run", &other, 1_000_000).unwrap(),
            out
        );
        // An input larger than the initial page makes `alloc` grow memory.
        let big = vec![7u8; 200_000];
        let input = frames(&[&big]);
        assert_eq!(
            run_module(&engine, &module, "run", &input, 100_000_000).unwrap(),
            fnv(&input)
        );
    }

    #[test]
    fn a_run_stops_when_its_fuel_is_gone() {
        let engine = engine();
        let module = compile(&engine, FOLD).unwrap();
        let err = run_module(&engine, &module, "spin", &frames(&[b""]), 100_000).unwrap_err();
        assert!(err.contains("fuel"), "{err}");
        // Too little fuel for a long input fails the same way, not with a wrong output.
        let input = frames(&[&vec![1u8; 100_000]]);
        let err = run_module(&engine, &module, "run", &input, 1_000).unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }

    #[test]
    fn modules_that_import_use_floats_or_break_the_contract_are_refused() {
        let engine = engine();
        let imports = r#"(module (import "env" "now" (func (result i64)))
            (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 0))"#;
        let err = compile(&engine, imports).unwrap_err().to_string();
        assert!(err.contains("imports `env.now`"), "{err}");
        let floats = r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "run") (param i32 i32) (result i64) f64.const 1.5 i64.trunc_f64_s))"#;
        assert!(compile(&engine, floats).is_err());
        let no_alloc = r#"(module (memory (export "memory") 1))"#;
        let err = compile(&engine, no_alloc).unwrap_err().to_string();
        assert!(err.contains("`alloc`"), "{err}");
    }

    #[test]
    fn hostile_modules_get_an_error_not_memory() {
        let engine = engine();
        // Grows memory far past the limit.
        let grow = r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "run") (param i32 i32) (result i64)
              (drop (memory.grow (i32.const 60000))) (i64.const 0)))"#;
        let module = compile(&engine, grow).unwrap();
        // The grow fails (returns -1) within the limit; the run still ends.
        assert_eq!(
            run_module(&engine, &module, "run", &[], 1_000_000).unwrap(),
            b""
        );
        // Claims an output outside its memory, or larger than accepted.
        let outside = r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "run") (param i32 i32) (result i64) (i64.const 0x0010000000000010)))"#;
        let module = compile(&engine, outside).unwrap();
        let err = run_module(&engine, &module, "run", &[], 1_000_000).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        let huge = r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "run") (param i32 i32) (result i64) (i64.const 0x7fffffff)))"#;
        let module = compile(&engine, huge).unwrap();
        let err = run_module(&engine, &module, "run", &[], 1_000_000).unwrap_err();
        assert!(err.contains("at most"), "{err}");
        // `alloc` pointing past the end of memory.
        let bad_alloc = r#"(module (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 65530)
            (func (export "run") (param i32 i32) (result i64) (i64.const 0)))"#;
        let module = compile(&engine, bad_alloc).unwrap();
        let err = run_module(&engine, &module, "run", &[0; 64], 1_000_000).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        // A missing function is named.
        let module = compile(&engine, FOLD).unwrap();
        let err = run_module(&engine, &module, "nope", &[], 1_000).unwrap_err();
        assert!(err.contains("`nope`"), "{err}");
    }

    #[test]
    fn stored_modules_are_checked_against_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let modules = Modules::open(dir.path()).unwrap();
        let engine = engine();
        let id = modules.add(&engine, FOLD.as_bytes()).unwrap();
        assert_eq!(id, ContentId::of(&wat::parse_str(FOLD).unwrap()));
        assert!(modules.get(&id).is_some());
        // A damaged file is not served, and is removed.
        let path = dir.path().join(format!("{}.wasm", id.to_hex()));
        std::fs::write(&path, b"\0asm damaged").unwrap();
        assert!(modules.get(&id).is_none());
        assert!(!path.exists());
        // Junk is refused before it is stored.
        assert!(modules.add(&engine, b"not wasm").is_err());
    }
}
