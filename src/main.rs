//! The `quorumkv` command: benchmarks now; the node, simulator and chaos harness join it as
//! their layers land.

use clap::{Parser, Subcommand};

use quorumkv::bench;

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
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
