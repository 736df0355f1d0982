//! The `quorumkv` command: a cluster member speaking the etcd v3 API (`serve`), benchmarks,
//! and the deterministic simulator.

use clap::{Parser, Subcommand};

use quorumkv::bench;

// The server allocates per request (HTTP/2 frames, protobuf messages) and per dirty tree page;
// mimalloc's thread-local free lists serve that with less contention and fragmentation than
// glibc's arenas. The library leaves the choice to the program that embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod serve_cmd;
mod sim_cmd;
mod snapshot_cmd;

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
    /// Runs a cluster member serving the etcd v3 API (flags as etcd's).
    Serve(Box<serve_cmd::ServeArgs>),
    /// Benchmarks of the storage paths.
    Bench {
        #[command(subcommand)]
        target: bench::Target,
    },
    /// Deterministic cluster simulation with fault injection and safety checks.
    Sim(sim_cmd::SimArgs),
    /// Real processes on loopback under faults, with linearizability and durability checks.
    Chaos(quorumkv::chaos::ChaosArgs),
    /// Snapshot files: restore one (etcd's or quorumkv's) into a new data directory.
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot_cmd::SnapshotCmd,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,quorumkv=info,quorumkv_server=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve_cmd::main(&args),
        Command::Bench { target } => bench::run(target),
        Command::Snapshot { cmd } => snapshot_cmd::main(&cmd),
        Command::Chaos(args) => match quorumkv::chaos::main(&args) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
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
