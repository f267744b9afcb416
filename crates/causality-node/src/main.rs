//! `causality-node`: the Causality network node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use causality_log::LogStore as _;
use clap::{Parser, Subcommand};

mod admin;
mod config;
mod devnet;
mod executors;
mod node;
mod proof;
mod state;
mod work;

#[derive(Debug, Parser)]
#[command(
    name = "causality-node",
    version,
    about = "A node of the Causality network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Create (or show) the node identity in a data directory.
    Keygen {
        /// The data directory.
        #[arg(long, default_value = "causality-data")]
        data_dir: PathBuf,
    },
    /// Ask a running node for its status over its admin endpoint.
    Status {
        /// The admin URL, e.g. `http://127.0.0.1:9100`; read from `DATA_DIR/admin.addr` when absent.
        #[arg(long)]
        admin: Option<String>,
        /// The admin token file; default `DATA_DIR/admin.cookie`.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The node's data directory.
        #[arg(long, default_value = "causality-data")]
        data_dir: PathBuf,
    },
    /// Operations on a node's stored log.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Check or convert Groth16 proofs (snarkjs JSON, the node's form, bare compressed bytes).
    Proof {
        #[command(subcommand)]
        command: ProofCommand,
    },
    /// Submit execution sequences to a running node and follow them.
    Exec {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: ExecCommand,
    },
    /// WebAssembly modules held by a running node.
    Module {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: ModuleCommand,
    },
    /// Start a local multi-node network on 127.0.0.1 and exercise it.
    Devnet(devnet::Args),
}

/// How to reach a running node's admin endpoint.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin URL, e.g. `http://127.0.0.1:9100`; read from `DATA_DIR/admin.addr` when absent.
    #[arg(long, global = true)]
    admin: Option<String>,
    /// The admin token file; default `DATA_DIR/admin.cookie`.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// The node's data directory.
    #[arg(long, global = true, default_value = "causality-data")]
    data_dir: PathBuf,
}

impl AdminArgs {
    fn client(&self) -> Result<admin::Client> {
        let token_file = self
            .token_file
            .clone()
            .unwrap_or_else(|| admin::cookie_path(&self.data_dir));
        match &self.admin {
            Some(url) => Ok(admin::Client::new(
                url.clone(),
                Some(admin::Token::read(&token_file)?),
            )),
            None => admin::Client::for_data_dir(&self.data_dir),
        }
    }
}

#[derive(Debug, Subcommand)]
enum ExecCommand {
    /// Submit a sequence file (modules named by file are uploaded first) and follow it
    /// with a live progress display: exit 0 when it completes, 1 when it fails.
    Submit {
        /// The sequence file (JSON; see the README for its format).
        file: PathBuf,
        /// Print the sequence id and return without following it.
        #[arg(long)]
        detach: bool,
    },
    /// Show a sequence's status and results (JSON).
    Show {
        /// The sequence id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum ModuleCommand {
    /// Check a module (binary or text form) and keep it at the node; prints its content id.
    Add {
        /// The `.wasm` or `.wat` file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ProofCommand {
    /// Verify a proof: prints `valid` (exit 0) or `invalid: <reason>` (exit 1).
    Verify {
        /// The verification key file.
        #[arg(long)]
        vk: PathBuf,
        /// The proof file.
        #[arg(long)]
        proof: PathBuf,
        /// The public inputs file (needed unless the proof is in the node's form).
        #[arg(long)]
        public: Option<PathBuf>,
    },
    /// Convert snarkjs JSON into the node's form (`OUT/key.bin`, `OUT/proof.bin`), checking it first.
    Import {
        /// `verification_key.json`.
        #[arg(long)]
        vk: PathBuf,
        /// `proof.json`.
        #[arg(long)]
        proof: PathBuf,
        /// `public.json`.
        #[arg(long)]
        public: PathBuf,
        /// The directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Check the stored log's hash chain, Merkle tree and checkpoints (node stopped).
    Verify {
        /// The node's data directory.
        data_dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (overrides the file and CAUSALITY_DATA_DIR).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address; repeat for several (overrides the file).
    #[arg(long)]
    listen: Vec<String>,
    /// Bootstrap peer address; repeat for several (overrides the file).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Role offered; repeat for several.
    #[arg(long)]
    role: Vec<String>,
    /// Admin endpoint port on 127.0.0.1.
    #[arg(long)]
    admin_port: Option<u16>,
    /// Log format on stderr.
    #[arg(long, value_enum)]
    log_format: Option<config::LogFormat>,
    /// Logical topic to subscribe to; repeat for several.
    #[arg(long)]
    subscribe: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run(args) => {
            let mut config = config::Config::load(args.config.as_deref())?;
            if let Some(dir) = args.data_dir {
                config.data_dir = dir;
            }
            if !args.listen.is_empty() {
                config.listen = args.listen;
            }
            if !args.bootstrap.is_empty() {
                config.bootstrap = args.bootstrap;
            }
            if !args.role.is_empty() {
                config.roles = args.role;
            }
            if let Some(port) = args.admin_port {
                config.admin_port = port;
            }
            if let Some(format) = args.log_format {
                config.log_format = format;
            }
            config.subscribe.extend(args.subscribe);
            node::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { data_dir } => {
            // An existing identity is only read; a new one is created under the data
            // directory's lock, so it cannot race a starting node.
            let keypair = match causality_net::Keypair::load(&data_dir.join("identity.key"))? {
                Some(keypair) => keypair,
                None => {
                    let config = config::Config {
                        data_dir: data_dir.clone(),
                        ..config::Config::default()
                    };
                    node::open_data_dir(&config)?.2
                }
            };
            println!("{}", keypair.peer_id());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            admin,
            token_file,
            data_dir,
        } => {
            let token_file = token_file.unwrap_or_else(|| admin::cookie_path(&data_dir));
            let client = match admin {
                Some(url) => admin::Client::new(url, Some(admin::Token::read(&token_file)?)),
                None => admin::Client::for_data_dir(&data_dir)?,
            };
            print!("{}", client.get("/status").await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Log {
            command: LogCommand::Verify { data_dir },
        } => {
            let log = causality_log::RocksLog::open(
                data_dir.join("db"),
                causality_log::RocksLogOptions::default(),
            )
            .with_context(|| {
                format!(
                    "cannot open the log in {} (is the node still running?)",
                    data_dir.display()
                )
            })?;
            match log.verify(&[]) {
                Ok(report) => {
                    println!(
                        "log ok: {} entries, root {}, {} checkpoints",
                        report.size,
                        report
                            .root
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>(),
                        report.checkpoints
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("log damaged: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Proof {
            command: ProofCommand::Verify { vk, proof, public },
        } => match proof::verify(&vk, &proof, public.as_deref()) {
            Ok(code) => Ok(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Proof {
            command:
                ProofCommand::Import {
                    vk,
                    proof,
                    public,
                    out,
                },
        } => {
            proof::import(&vk, &proof, &public, &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec { admin, command } => {
            let client = admin.client()?;
            match command {
                ExecCommand::Submit { file, detach } => work::submit(&client, &file, detach).await,
                ExecCommand::Show { id } => {
                    print!("{}", client.get(&format!("/exec/sequence?id={id}")).await?);
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Module {
            admin,
            command: ModuleCommand::Add { file },
        } => {
            println!("{}", work::add_module(&admin.client()?, &file).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Devnet(args) => devnet::run(args).await,
    }
}
