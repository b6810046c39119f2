//! The `kafscale` binary. `kafscale dev` runs gateway, log worker and
//! assigner in one process on the embedded metadata store and a local
//! object directory.

mod config;
mod control;
mod ctl;
mod dev;
mod gateway;
mod http;
mod logworker;
mod operator;
mod process;
mod security;
mod telemetry;

use clap::{Parser, Subcommand};

/// Wire decoders may reserve memory by lying counts: see the allocator's docs.
#[global_allocator]
static ALLOC: kafscale_gateway::alloc::LazyLargeAlloc = kafscale_gateway::alloc::LazyLargeAlloc;

/// Kafka-compatible message transport whose data lives in object storage.
#[derive(Parser, Debug)]
#[command(name = "kafscale", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Everything in one process on embedded defaults (no etcd, no S3).
    Dev(Box<config::DevArgs>),
    /// A Kafka-protocol gateway (distributed mode: etcd).
    Gateway(Box<config::GatewayArgs>),
    /// A log worker (distributed mode: etcd and S3).
    Logworker(Box<config::LogworkerArgs>),
    /// Talk to a running process's control API (status, drain, undrain, flush).
    Ctl(ctl::CtlArgs),
    /// The Kubernetes operator (KafscaleCluster, KafscaleTopic).
    Operator(Box<config::OperatorArgs>),
    /// Print the CustomResourceDefinitions (KafscaleCluster, KafscaleTopic) as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let open_files = kafscale_gateway::rlimit::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The trace exporter's gRPC connection lives on the runtime.
    let _runtime_guard = runtime.enter();
    match cli.command {
        Command::Dev(args) => {
            let _telemetry = telemetry::init(&args.log_level, "dev", Some(&args.trace))?;
            log_open_files(open_files);
            runtime.block_on(dev::run(*args))
        }
        Command::Gateway(args) => {
            let _telemetry = telemetry::init(&args.log_level, "gateway", Some(&args.trace))?;
            log_open_files(open_files);
            runtime.block_on(gateway::run(*args))
        }
        Command::Logworker(args) => {
            let _telemetry = telemetry::init(&args.log_level, "logworker", Some(&args.trace))?;
            runtime.block_on(logworker::run(*args))
        }
        Command::Ctl(args) => runtime.block_on(ctl::run(args)),
        Command::Operator(args) => {
            let _telemetry = telemetry::init(&args.log_level, "operator", None)?;
            runtime.block_on(operator::run(*args))
        }
        Command::Crd => {
            print!("{}", kafscale_controlplane::operator::crd::crds_yaml()?);
            Ok(())
        }
    }
}

fn log_open_files(limit: Option<u64>) {
    tracing::info!(open_files = ?limit, "open-file limit (bounds client connections)");
}
