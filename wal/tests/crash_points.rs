//! Crash-point enumeration: a 10,000-append workload with truncations and purges runs on the
//! simulated disk with a trace of every mutation. Then, for every prefix of that trace (every
//! write/sync/rename boundary), the disk is crashed twice (unsynced bytes dropped; a random
//! prefix of unsynced writes kept with the last sector torn), the log is reopened, and:
//! - recovery succeeds (a crash is never reported as corruption);
//! - every acknowledged record not since truncated or purged is there, byte for byte;
//! - every record returned was really appended at that index (nothing corrupt, nothing
//!   invented), and nothing durably truncated comes back.
//!
//! A second test crashes every step of one truncation of durable records under many tear seeds.

use quorumkv_simdisk::Rng;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use quorumkv_wal::io::{CrashMode, SimFs};
use quorumkv_wal::{Wal, WalOptions};

const APPENDS: u64 = 10_000;

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 32 << 10,
        record_bytes_max: 2 << 10,
        batch_bytes_max: 4 << 10,
        batch_records_max: 16,
        queued_bytes_max: 64 << 10,
        ..WalOptions::default()
    }
}

enum Event {
    /// Records acknowledged when the trace had `at` mutations.
    Acked {
        at: u64,
        records: Vec<(u64, Vec<u8>)>,
    },
    /// A truncation that started at `start` and had returned by `end`.
    Truncated {
        start: u64,
        end: u64,
        from: u64,
        dead: Vec<Vec<u8>>,
    },
    /// A purge that started at `start`.
    Purged { start: u64, up_to: u64 },
}

fn payload(index: u64, generation: u64, rng: &mut Rng) -> Vec<u8> {
    let mut p = format!("{index}:{generation}:").into_bytes();
    let extra = rng.below(300) as usize;
    p.extend((0..extra).map(|k| (k as u64 ^ generation) as u8));
    p
}

fn run_workload(fs: &SimFs) -> (Vec<Event>, HashMap<u64, HashSet<Vec<u8>>>) {
    let dir = Path::new("/sim/wal");
    let wal = Wal::open_with_fs(dir, opts(), Arc::new(fs.clone())).unwrap();
    let mut rng = Rng::new(42);
    let mut events = Vec::new();
    let mut appended: HashMap<u64, HashSet<Vec<u8>>> = HashMap::new();
    // Live view of the log, to know what a truncation kills.
    let mut live: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut pending = Vec::new();
    let mut generation = 0u64;
    let mut count = 0u64;
    while count < APPENDS {
        let roll = rng.below(1000);
        if roll < 8 && !live.is_empty() {
            for (t, recs) in pending.drain(..) {
                let t: quorumkv_wal::Ticket = t;
                t.wait().unwrap();
                events.push(Event::Acked {
                    at: fs.ops(),
                    records: recs,
                });
            }
            let last = wal.last_index();
            let first = wal.first_index();
            let from = (last.saturating_sub(rng.below(40))).max(first);
            let start = fs.ops();
            wal.truncate_suffix(from).unwrap();
            let dead = live
                .iter()
                .filter(|(i, _)| *i >= from)
                .map(|(_, p)| p.clone())
                .collect();
            live.retain(|(i, _)| *i < from);
            events.push(Event::Truncated {
                start,
                end: fs.ops(),
                from,
                dead,
            });
        } else if roll < 12 && wal.last_index() > wal.first_index() + 300 {
            let up_to = wal.last_index() - 200 - rng.below(50);
            let start = fs.ops();
            wal.purge_prefix(up_to).unwrap();
            live.retain(|(i, _)| *i > up_to);
            events.push(Event::Purged { start, up_to });
        } else if roll == 12 {
            // Purge past the end: the log restarts at a later index (a snapshot install).
            for (t, recs) in pending.drain(..) {
                let t: quorumkv_wal::Ticket = t;
                t.wait().unwrap();
                events.push(Event::Acked {
                    at: fs.ops(),
                    records: recs,
                });
            }
            let up_to = wal.last_index() + 1 + rng.below(10);
            let start = fs.ops();
            wal.purge_prefix(up_to).unwrap();
            live.clear();
            events.push(Event::Purged { start, up_to });
        } else {
            let n = 1 + rng.below(6);
            let first = wal.last_index() + 1;
            let recs: Vec<(u64, Vec<u8>)> = (0..n)
                .map(|k| {
                    generation += 1;
                    (first + k, payload(first + k, generation, &mut rng))
                })
                .collect();
            for (i, p) in &recs {
                appended.entry(*i).or_default().insert(p.clone());
            }
            live.extend(recs.iter().cloned());
            count += n;
            if rng.below(4) == 0 {
                // Written and synced by this thread when the log is idle.
                let range = wal.append_durable(recs.iter().map(|(_, p)| p)).unwrap();
                assert_eq!(range.start, first);
                events.push(Event::Acked {
                    at: fs.ops(),
                    records: recs,
                });
                continue;
            }
            let t = wal.append(recs.iter().map(|(_, p)| p)).unwrap();
            assert_eq!(t.first_index(), first);
            pending.push((t, recs));
            if pending.len() > rng.below(8) as usize {
                for (t, recs) in pending.drain(..) {
                    t.wait().unwrap();
                    events.push(Event::Acked {
                        at: fs.ops(),
                        records: recs,
                    });
                }
            }
        }
    }
    for (t, recs) in pending.drain(..) {
        t.wait().unwrap();
        events.push(Event::Acked {
            at: fs.ops(),
            records: recs,
        });
    }
    drop(wal);
    (events, appended)
}

fn check(
    fs: SimFs,
    k: u64,
    mode: &str,
    events: &[Event],
    appended: &HashMap<u64, HashSet<Vec<u8>>>,
) {
    let wal = Wal::open_with_fs("/sim/wal", opts(), Arc::new(fs))
        .unwrap_or_else(|e| panic!("crash point {k} ({mode}): recovery failed: {e}"));
    let (first, last) = (wal.first_index(), wal.last_index());
    let got = wal.read(first..last + 1).unwrap();
    let got: HashMap<u64, Vec<u8>> = (first..=last).zip(got).collect();
    let mut must: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut dead: HashSet<Vec<u8>> = HashSet::new();
    for e in events {
        match e {
            Event::Acked { at, records } if *at <= k => {
                for (i, p) in records {
                    must.insert(*i, p.clone());
                }
            }
            Event::Truncated {
                start,
                end,
                from,
                dead: d,
            } if *start < k => {
                must.retain(|i, _| *i < *from);
                if *end <= k {
                    dead.extend(d.iter().cloned());
                }
            }
            Event::Purged { start, up_to } if *start < k => {
                must.retain(|i, _| *i > *up_to);
            }
            _ => {}
        }
    }
    for (i, p) in &got {
        assert!(
            appended.get(i).is_some_and(|s| s.contains(p)),
            "crash point {k} ({mode}): record {i} was never appended with this payload"
        );
        assert!(
            !dead.contains(p),
            "crash point {k} ({mode}): truncated record {i} came back"
        );
    }
    for (i, p) in &must {
        assert_eq!(
            got.get(i),
            Some(p),
            "crash point {k} ({mode}): acknowledged record {i} lost (log {first}..={last})"
        );
    }
}

#[test]
fn every_crash_point_recovers_every_acknowledged_record() {
    let fs = SimFs::new();
    fs.record_trace();
    let (events, appended) = run_workload(&fs);
    let trace = fs.trace();
    let acked: usize = events
        .iter()
        .map(|e| match e {
            Event::Acked { records, .. } => records.len(),
            _ => 0,
        })
        .sum();
    let mut replay = SimFs::replay(&[]);
    let mut explored = 0u64;
    for k in 0..=trace.len() as u64 {
        if k > 0 {
            replay.apply(&trace[k as usize - 1]);
        }
        // Before the first segment exists there is nothing to check beyond a clean open.
        check(
            replay.crash(CrashMode::DropUnsynced),
            k,
            "drop unsynced",
            &events,
            &appended,
        );
        check(
            replay.crash(CrashMode::TornTail { seed: k }),
            k,
            "torn tail",
            &events,
            &appended,
        );
        explored += 2;
    }
    println!(
        "crash points explored: {explored} ({} trace operations x 2 crash modes), appends: {APPENDS}, acknowledged records: {acked}",
        trace.len() + 1
    );
    assert!(trace.len() > 1000);
}

/// A truncation rewrites records that are durable. Whatever part of it a crash keeps, and however
/// it tears, recovery must come back with either the records before the cut point alone or all
/// of them (the truncation had not returned), never report corruption.
#[test]
fn a_crash_during_a_truncation_is_never_reported_as_corruption() {
    let fs = SimFs::new();
    fs.record_trace();
    let wal = Wal::open_with_fs("/sim/wal", opts(), Arc::new(fs.clone())).unwrap();
    let mut rng = Rng::new(7);
    let payloads: Vec<Vec<u8>> = (1..=40).map(|i| payload(i, i, &mut rng)).collect();
    wal.append(payloads.iter()).unwrap().wait().unwrap();
    let start = fs.ops() as usize;
    wal.truncate_suffix(21).unwrap();
    drop(wal);
    let trace = fs.trace();
    let mut replay = SimFs::replay(&trace[..start]);
    let mut explored = 0u64;
    for k in start..=trace.len() {
        if k > start {
            replay.apply(&trace[k - 1]);
        }
        for seed in 0..5000u64 {
            let crashed = replay.crash(CrashMode::TornTail { seed });
            let wal =
                Wal::open_with_fs("/sim/wal", opts(), Arc::new(crashed)).unwrap_or_else(|e| {
                    panic!(
                        "crash after {k} of {} operations, seed {seed}: {e}",
                        trace.len()
                    )
                });
            let last = wal.last_index();
            assert!(
                last == 20 || last == 40,
                "crash after {k} operations, seed {seed}: log ends at {last}"
            );
            let got = wal.read(1..last + 1).unwrap();
            assert_eq!(got, payloads[..last as usize], "seed {seed}");
            explored += 1;
        }
    }
    assert!(explored >= 2 * 5000, "the truncation's steps are traced");
}
