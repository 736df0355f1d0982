//! The simulator suite: 1,000 seeds each of Raft and ZAB with faults must show no violation of election
//! safety, log matching, leader completeness or state-machine safety, must make progress once
//! healed, and must produce linearizable client histories. A deliberately broken read path is
//! caught, and a seed replays exactly.

use quorumkv_replication::checker::Outcome;
use quorumkv_replication::raft::Raft;
use quorumkv_replication::sim::{SimProtocol, failed, run_seed};
use quorumkv_replication::zab::Zab;

fn run_range<P: SimProtocol>(seeds: std::ops::RangeInclusive<u64>) {
    let mut bad = Vec::new();
    let (mut ops, mut elections, mut crashes) = (0, 0, 0);
    for seed in seeds.clone() {
        let r = run_seed::<P>(seed, false);
        ops += r.ops_ok;
        elections += r.elections;
        crashes += r.crashes;
        if failed(&r) {
            bad.push(format!(
                "seed {seed}: {:?} {:?}",
                r.violations, r.linearizable
            ));
        }
    }
    println!(
        "{} seeds {}..={}: violations={} ops={ops} elections={elections} crashes={crashes}",
        P::NAME,
        seeds.start(),
        seeds.end(),
        bad.len()
    );
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn raft_seeds_1_to_500() {
    run_range::<Raft>(1..=500);
}

#[test]
fn raft_seeds_501_to_1000() {
    run_range::<Raft>(501..=1000);
}

#[test]
fn zab_seeds_1_to_500() {
    run_range::<Zab>(1..=500);
}

#[test]
fn zab_seeds_501_to_1000() {
    run_range::<Zab>(501..=1000);
}

fn catches_stale_reads<P: SimProtocol>() {
    // With unsafe leader reads (and a leader that never notices it was deposed), reads are
    // answered from a stale state; somewhere in the first seeds that shows up as a
    // non-linearizable history (rarely: most clients that find a follower stay there and
    // have their writes forwarded, and reads through a follower are safe).
    let caught = (1..=600).find(|&seed| {
        let r = run_seed::<P>(seed, true);
        matches!(r.linearizable, Outcome::Violation(_))
    });
    let seed = caught.expect("a broken read path must be caught within 600 seeds");
    // The same seed with the real read path passes.
    assert!(
        !failed(&run_seed::<P>(seed, false)),
        "seed {seed} fails even with safe reads"
    );
    println!("{}: broken read path caught at seed {seed}", P::NAME);
}

#[test]
fn the_checker_catches_reads_served_by_a_stale_raft_leader() {
    catches_stale_reads::<Raft>();
}

#[test]
fn the_checker_catches_reads_served_by_a_stale_zab_leader() {
    catches_stale_reads::<Zab>();
}

#[test]
fn a_seed_replays_exactly() {
    let a = run_seed::<Raft>(42, false);
    let b = run_seed::<Raft>(42, false);
    assert_eq!(
        (a.ops_ok, a.ops_unknown, a.elections, a.applied, a.crashes),
        (b.ops_ok, b.ops_unknown, b.elections, b.applied, b.crashes)
    );
    let a = run_seed::<Zab>(42, false);
    let b = run_seed::<Zab>(42, false);
    assert_eq!(
        (a.ops_ok, a.elections, a.applied),
        (b.ops_ok, b.elections, b.applied)
    );
}
