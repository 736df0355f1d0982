//! The `quorumkv` command: benchmarks now; the node, simulator and chaos harness join it as
//! their layers land.

use clap::{Parser, Subcommand};

use quorumkv::bench;

mod sim_cmd;

#[derive(Parser)]
#[command(
    name = "quorumkv",
    version,
    about = "A storage engine with pluggable replication"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks of the storage paths.
    Bench {
        #[command(subcommand)]
        target: bench::Target,
    },
    /// Deterministic cluster simulation with fault injection and safety checks.
    Sim(sim_cmd::SimArgs),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { target } => bench::run(target),
        Command::Sim(args) => {
            if sim_cmd::main(&args) {
                Ok(())
            } else {
                std::process::exit(1);
            }
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
