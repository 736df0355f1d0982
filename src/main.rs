//! The `quorumkv` command: a cluster member speaking the etcd v3 API (`serve`), benchmarks,
//! and the deterministic simulator.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use tracing_subscriber::fmt::writer::BoxMakeWriter;

// The server allocates per request (HTTP/2 frames, protobuf messages) and per dirty tree page;
// mimalloc's thread-local free lists serve that with less contention and fragmentation than
// glibc's arenas. The library leaves the choice to the program that embeds it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Allocator settings for a long-running server, unless the environment sets them
/// (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ALLOW_THP`):
///
/// - Freed memory goes back to the OS after 10 s idle instead of 1 s. Under steady load the
///   same memory is freed and reused every few hundred milliseconds; returning it after 1 s
///   made the workers fault it back in (zeroing it) while serving requests.
/// - No transparent huge pages: a fault on a sparsely used 2 MiB page zeroes all of it, and
///   those faults bunch up when a thousand clients connect at once (a p99 spike in the first
///   second). Most latency-sensitive servers run with THP off for the same reason.
///
/// Measurements in docs/design.md ("Allocator settings").
fn tune_allocator() {
    // `mi_option_purge_delay` in mimalloc.h (the -sys crate names only some options).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: reads and sets a plain integer option; mimalloc reads it on its next purge.
        unsafe {
            debug_assert_eq!(
                libmimalloc_sys::mi_option_get(PURGE_DELAY),
                1000,
                "option 15 is mimalloc's purge delay (default 1000 ms)"
            );
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 10_000);
        }
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: a process attribute with no pointer arguments; it only affects later faults.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "PR_SET_THP_DISABLE");
        }
    }
}

mod bench;
mod chaos;
mod failpoints;
mod serve_cmd;
mod serve_settings;
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
    #[command(
        after_help = "Every flag can also be set by an ETCD_<FLAG> environment variable \
        (ETCD_DATA_DIR for --data-dir) when the command line does not give it. With \
        --config-file, an etcd-style YAML file (data-dir: DIR) is the whole configuration."
    )]
    Serve(Box<serve_cmd::ServeArgs>),
    /// Benchmarks of the storage paths.
    Bench {
        #[command(subcommand)]
        target: bench::Target,
    },
    /// Deterministic cluster simulation with fault injection and safety checks.
    Sim(sim_cmd::SimArgs),
    /// Real processes on loopback under faults, with linearizability and durability checks.
    Chaos(chaos::ChaosArgs),
    /// Snapshot files: restore one (etcd's or quorumkv's) into a new data directory.
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot_cmd::SnapshotCmd,
    },
}

/// The log's writer for `output`, and whether it takes colours (not in files).
fn log_writer(output: &serve_cmd::LogOutput) -> Result<(BoxMakeWriter, bool), String> {
    use serve_cmd::LogOutput;
    Ok(match output {
        LogOutput::Stderr => (BoxMakeWriter::new(std::io::stderr), true),
        LogOutput::Stdout => (BoxMakeWriter::new(std::io::stdout), true),
        LogOutput::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-outputs {}: {e}", path.display()))?;
            (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
        }
    })
}

fn main() {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `serve` also takes its flags from ETCD_* variables or a config file, as etcd does.
    let (mut notes, mut warnings) = (Vec::new(), Vec::new());
    if let (Command::Serve(args), Some(("serve", serve))) = (&mut cli.command, matches.subcommand())
    {
        let env: Vec<_> = std::env::vars_os().collect();
        match serve_settings::Settings::resolve(serve, &env) {
            Ok(settings) => {
                **args = settings.args;
                notes = settings.notes;
                warnings = settings.warnings;
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
    // `serve` logs every quorumkv crate at --log-level; the other commands log the binary's
    // and the server's crates at info, so benchmarks and the simulator stay quiet.
    let filter = match &cli.command {
        Command::Serve(args) => {
            let l = args.log_level();
            format!(
                "warn,quorumkv={l},quorumkv_server={l},quorumkv_wal={l},quorumkv_btree={l},\
                 quorumkv_replication={l}"
            )
        }
        _ => "warn,quorumkv=info,quorumkv_server=info".to_string(),
    };
    let output = match &cli.command {
        Command::Serve(args) => {
            warnings.extend(args.ignored());
            args.log_output().unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1);
            })
        }
        _ => serve_cmd::LogOutput::Stderr,
    };
    let (writer, ansi) = log_writer(&output).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1);
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(writer)
        .with_ansi(ansi)
        .init();
    for note in notes {
        tracing::info!("{note}");
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    tune_allocator();
    let result = match cli.command {
        Command::Serve(args) => serve_cmd::main(&args),
        Command::Bench { target } => bench::run(target),
        Command::Snapshot { cmd } => snapshot_cmd::main(&cmd),
        Command::Chaos(args) => match chaos::main(&args) {
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
