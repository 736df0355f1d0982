//! The checks after a run: the history is linearizable, every acknowledged write is in the
//! cluster's history, every watch stream is ordered with no duplicates, gaps or disagreements,
//! and all members converge to the same revision and hash.

use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use quorumkv_replication::checker::{self, Outcome};
use quorumkv_server::pb::etcdserverpb::{
    HashKvRequest, RangeRequest, StatusRequest, kv_client::KvClient,
    maintenance_client::MaintenanceClient,
};
use tonic::transport::Channel;

use super::workload::{self, Acked, History, Prev, Seen, WatchLog};

/// Where the members ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converged {
    /// The revision every member reached.
    pub revision: i64,
    /// Their HashKV at that revision.
    pub hash: u32,
}

/// Waits (up to `patience`) until every member reports the same revision and the same
/// HashKV at it.
pub async fn converge(channels: &[Channel], patience: Duration) -> Result<Converged, String> {
    let deadline = Instant::now() + patience;
    let mut last = String::new();
    while Instant::now() < deadline {
        match agree(channels).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("members did not converge: {last}"))
}

async fn agree(channels: &[Channel]) -> Result<Converged, String> {
    let mut revisions = BTreeSet::new();
    for ch in channels {
        let st = MaintenanceClient::new(ch.clone())
            .status(StatusRequest {})
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        revisions.insert(st.header.map_or(0, |h| h.revision));
    }
    let revision = match revisions.iter().collect::<Vec<_>>()[..] {
        [&r] => r,
        _ => return Err(format!("revisions differ: {revisions:?}")),
    };
    let mut hashes = BTreeSet::new();
    for ch in channels {
        let h = MaintenanceClient::new(ch.clone())
            .hash_kv(HashKvRequest { revision })
            .await
            .map_err(|e| e.message().to_string())?
            .into_inner();
        hashes.insert(h.hash);
    }
    match hashes.iter().collect::<Vec<_>>()[..] {
        [&hash] => Ok(Converged { revision, hash }),
        _ => Err(format!("hashes differ at revision {revision}: {hashes:?}")),
    }
}

/// The newest revision of any workload key, read from `ch`.
pub async fn last_key_revision(ch: &Channel) -> Result<i64, String> {
    let r = KvClient::new(ch.clone())
        .range(RangeRequest {
            key: workload::PREFIX.to_vec(),
            range_end: b"chaos0".to_vec(),
            keys_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(r.kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0))
}

/// The 99th percentile latency (ms) of the operations that completed, and of those invoked
/// within `window_us` after any of `ends_us` (how fast the cluster recovers after a fault);
/// None where no operation qualifies.
pub fn p99_after(history: &History, ends_us: &[u64], window_us: u64) -> (Option<f64>, Option<f64>) {
    let p99 = |mut v: Vec<u64>| {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some(v[(v.len() * 99 / 100).min(v.len() - 1)] as f64 / 1000.0)
    };
    let done = history
        .ops
        .iter()
        .filter(|o| o.result != quorumkv_replication::checker::OpResult::Unknown);
    let all: Vec<u64> = done.clone().map(|o| o.complete - o.invoke).collect();
    let after: Vec<u64> = done
        .filter(|o| {
            ends_us
                .iter()
                .any(|&e| o.invoke >= e && o.invoke < e + window_us)
        })
        .map(|o| o.complete - o.invoke)
        .collect();
    (p99(all), p99(after))
}

/// The linearizability verdict: `Ok(true)`, `Ok(false)` with a reason, or unknown.
pub fn linearizable(history: &History) -> (Option<bool>, String) {
    match checker::check(&history.ops, 50_000_000) {
        Outcome::Ok => (Some(true), String::new()),
        Outcome::Violation(why) => (Some(false), why),
        Outcome::Unknown(key) => (None, format!("search budget exceeded on key {key}")),
    }
}

/// Every change anyone saw: by revision, then key (a transaction changes several keys at one
/// revision).
type Changes = BTreeMap<(i64, u8), Seen>;

/// Every event any watcher saw and every acknowledged write, by revision and key; conflicting
/// claims about one change are returned separately.
fn union(watches: &[WatchLog], acked: &[Acked]) -> (Changes, Vec<String>) {
    let mut all = Changes::new();
    let mut conflicts = Vec::new();
    let claims = watches
        .iter()
        .flat_map(|w| w.events.iter().copied())
        .chain(acked.iter().map(|a| Seen {
            revision: a.revision,
            key: a.key,
            value: a.value,
        }));
    for s in claims {
        match all.get(&(s.revision, s.key)) {
            Some(prev) if *prev != s => conflicts.push(format!(
                "revision {}: {prev:?} and {s:?} both claimed",
                s.revision
            )),
            Some(_) => {}
            None => {
                all.insert((s.revision, s.key), s);
            }
        }
    }
    (all, conflicts)
}

/// Acknowledged writes the cluster's history does not contain now: a read at each write's
/// revision must find it (after a power cut, having been seen once proves nothing). Where
/// compaction removed that revision, a watcher's event for it stands in.
pub async fn lost(history: &History, watches: &[WatchLog], ch: &Channel) -> Vec<Acked> {
    let seen: Changes = watches
        .iter()
        .flat_map(|w| w.events.iter().map(|s| ((s.revision, s.key), *s)))
        .collect();
    // Reads in flight at once: the check reads every acknowledged write back.
    const READS_IN_FLIGHT: usize = 64;
    let seen = &seen;
    let checks = history.acked.iter().map(|a| async move {
        let want = Seen {
            revision: a.revision,
            key: a.key,
            value: a.value,
        };
        let read = KvClient::new(ch.clone())
            .max_decoding_message_size(workload::ANSWER_BYTES_MAX)
            .range(RangeRequest {
                key: workload::key(a.key),
                revision: a.revision,
                ..Default::default()
            })
            .await;
        let present = match read {
            // A delete: the key is gone at its revision.
            Ok(r) if a.value == workload::ABSENT => r.into_inner().kvs.is_empty(),
            Ok(r) => r.into_inner().kvs.first().is_some_and(|kv| {
                kv.mod_revision == a.revision && workload::value_of(&kv.value) == Some(a.value)
            }),
            // Compacted away: a watcher's event at that revision is the evidence left.
            Err(e) if e.message().contains("compacted") => {
                seen.get(&(a.revision, a.key)) == Some(&want)
            }
            Err(_) => false,
        };
        (!present).then_some(*a)
    });
    let mut lost: Vec<Acked> = futures::stream::iter(checks)
        .buffer_unordered(READS_IN_FLIGHT)
        .filter_map(std::future::ready)
        .collect()
        .await;
    lost.sort_by_key(|a| a.revision);
    lost
}

/// Why the previous value `p` a watcher was given is wrong, if it is: it must be the key's
/// newest change before the event (`all` holds every change anyone saw), a put when one is
/// given, a delete or nothing when none is.
fn wrong_prev(all: &Changes, events: &[Seen], p: &Prev) -> Option<String> {
    let event = events
        .iter()
        .find(|s| s.revision == p.revision && s.key == p.key)?;
    let newest = all
        .range(..(p.revision, 0))
        .rev()
        .find(|(_, s)| s.key == event.key)
        .map(|((r, _), s)| (*r, s.value));
    match newest {
        // What preceded it was never seen: nothing to compare (before the run, or compacted).
        None => None,
        Some((_, workload::ABSENT)) if p.value == workload::ABSENT => None,
        Some((r, v)) if p.mod_revision == r && p.value == v => None,
        Some((r, v)) if p.mod_revision < r || p.value == workload::ABSENT => Some(format!(
            "event at {} carries previous value {p:?}, but key {} changed at {r} (to {v})",
            p.revision, event.key
        )),
        // The given previous write is newer than any seen: it must at least be known.
        Some(_) => match all.get(&(p.mod_revision, event.key)) {
            Some(s) if s.key == event.key && s.value == p.value => None,
            other => Some(format!(
                "event at {} carries previous value {p:?}, which nobody saw written ({other:?})",
                p.revision
            )),
        },
    }
}

/// Watch violations: events out of order or repeated, revisions of the history a stream
/// skipped (outside ranges reported compacted), streams that never reached `last`, and
/// conflicting claims about a revision.
pub fn watch_violations(
    watches: &[WatchLog],
    acked: &[Acked],
    start: i64,
    last: i64,
) -> Vec<String> {
    let (all, mut out) = union(watches, acked);
    for (w, log) in watches.iter().enumerate() {
        let mut prev = start - 1;
        let mut got: BTreeSet<(i64, u8)> = BTreeSet::new();
        for s in &log.events {
            // Several keys may change at one revision; none twice, and never back in time.
            if s.revision < prev || !got.insert((s.revision, s.key)) {
                out.push(format!(
                    "watcher {w}: revision {} after {prev} (duplicate or time travel)",
                    s.revision
                ));
            }
            prev = prev.max(s.revision);
        }
        let skipped = |r: i64| log.compacted.iter().any(|&(a, b)| a <= r && r < b);
        let gaps: Vec<i64> = all
            .range((start, 0)..=(prev, u8::MAX))
            .filter(|(_, s)| !(log.no_deletes && s.value == workload::ABSENT))
            .map(|(&change, _)| change)
            .filter(|change| !got.contains(change) && !skipped(change.0))
            .map(|(r, _)| r)
            .collect();
        if log.no_deletes {
            if let Some(s) = log.events.iter().find(|s| s.value == workload::ABSENT) {
                out.push(format!(
                    "watcher {w}: a delete at {} passed its filter",
                    s.revision
                ));
            }
        }
        out.extend(
            log.prevs
                .iter()
                .filter_map(|p| wrong_prev(&all, &log.events, p))
                .map(|why| format!("watcher {w}: {why}"))
                .take(10),
        );
        if !gaps.is_empty() {
            out.push(format!(
                "watcher {w}: {} revisions missing, first {:?}",
                gaps.len(),
                &gaps[..gaps.len().min(5)]
            ));
        }
        if prev < last {
            out.push(format!(
                "watcher {w}: stopped at revision {prev}, the history goes to {last}"
            ));
        }
    }
    out
}
