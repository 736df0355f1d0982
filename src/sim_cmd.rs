//! `quorumkv sim`: runs the deterministic cluster simulator over many seeds.

use clap::{Args, ValueEnum};
use quorumkv_replication::checker::Outcome;
use quorumkv_replication::raft::Raft;
use quorumkv_replication::sim::{self, SimProtocol, SimReport};

/// Which protocol to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtocolName {
    /// Raft.
    Raft,
    /// ZAB.
    Zab,
}

/// Options of `quorumkv sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Protocol to simulate.
    #[arg(long, value_enum, default_value = "raft")]
    protocol: ProtocolName,
    /// Number of seeds to run (1..=N), unless --seed is given.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Run exactly this seed (replays a failure).
    #[arg(long)]
    seed: Option<u64>,
    /// Use the protocol's deliberately broken read path (to see the checker catch it).
    #[arg(long, hide = true)]
    unsafe_reads: bool,
}

fn run<P: SimProtocol>(args: &SimArgs) -> bool {
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (1..=args.seeds).collect(),
    };
    let (mut failed, mut ops, mut unknown, mut elections, mut crashes, mut unchecked) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for &seed in &seeds {
        let r: SimReport = sim::run_seed::<P>(seed, args.unsafe_reads);
        ops += r.ops_ok;
        unknown += r.ops_unknown;
        elections += r.elections as u64;
        crashes += r.crashes;
        if matches!(r.linearizable, Outcome::Unknown(_)) {
            unchecked += 1;
        }
        if sim::failed(&r) {
            failed += 1;
            println!(
                "seed {seed}: FAILED (replay: quorumkv sim --protocol {} --seed {seed})",
                P::NAME
            );
            for v in &r.violations {
                println!("  {v}");
            }
            if r.linearizable != Outcome::Ok {
                println!("  linearizability: {:?}", r.linearizable);
            }
        } else if args.seed.is_some() {
            println!(
                "seed {seed}: ok, {} ops ({} unknown), {} elections, {} crashes, applied {}",
                r.ops_ok + r.ops_unknown,
                r.ops_unknown,
                r.elections,
                r.crashes,
                r.applied
            );
        }
    }
    println!(
        "protocol={} seeds={} violations={failed} linearizable={} unchecked={unchecked} ops={ops} unknown_ops={unknown} elections={elections} crashes={crashes}",
        P::NAME,
        seeds.len(),
        failed == 0
    );
    failed == 0
}

/// Runs the simulator; returns whether every seed passed.
pub fn main(args: &SimArgs) -> bool {
    match args.protocol {
        ProtocolName::Raft => run::<Raft>(args),
        ProtocolName::Zab => run::<quorumkv_replication::zab::Zab>(args),
    }
}
