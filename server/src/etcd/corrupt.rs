//! etcd's corruption checks, which compare the hash of a member's key space (HashKV at its
//! current revision) with every peer's hash at that same revision:
//!
//! - initial (`--experimental-initial-corrupt-check`): before a member serves clients; it
//!   refuses to start when a peer with the same compaction point holds different data;
//! - periodic (`--experimental-corrupt-check-time`): the leader checks every interval and, on a
//!   difference, raises a CORRUPT alarm through the log, after which every member refuses data
//!   requests with "etcdserver: corrupt cluster" until an operator disarms it.
//!
//! Peers are asked over the member-to-member `Internal.HashKv` call on their client URLs. A
//! peer that cannot answer (down, behind this member's revision, or compacted past it) is
//! reported and skipped, as etcd skips it: the check can only find a difference, never prove
//! there is none. This module reads and compares; it never changes data.

use std::sync::Arc;
use std::time::Duration;

use crate::etcd::{KvError, KvServer};
use crate::pb::etcdserverpb as pb;
use crate::pb::quorumkv::internal_client::InternalClient;
use crate::pb::quorumkv::internal_request::Request;

/// Which corruption checks a member runs (etcd's flags; both off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorruptCheckConfig {
    /// Compare with the peers before serving clients, and refuse to start on a difference
    /// (`--experimental-initial-corrupt-check`).
    pub initial: bool,
    /// How often the leader compares the members' key spaces (`--experimental-corrupt-check-time`;
    /// zero: never).
    pub interval: Duration,
}

/// How long one peer may take to answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// What one peer said.
struct PeerHash {
    id: u64,
    answer: Result<pb::HashKvResponse, tonic::Status>,
}

/// What comparing this member's hash with one peer's found.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Same hash.
    Same,
    /// Same compaction point, different data: corruption on one side.
    Mismatch,
    /// Different compaction points, so the hashes cover different versions.
    Incomparable,
}

/// Compares this member's `(hash, compact_revision)` with a peer's answer for the same
/// revision.
fn compare(local_hash: u32, local_compacted: i64, peer: &pb::HashKvResponse) -> Verdict {
    if peer.hash == local_hash {
        Verdict::Same
    } else if peer.compact_revision == local_compacted {
        Verdict::Mismatch
    } else {
        Verdict::Incomparable
    }
}

/// Logs that `peer` answered another hash than this member's `local` one at the same
/// revision and compaction point.
fn warn_mismatch(peer: u64, local: &pb::HashKvResponse, resp: &pb::HashKvResponse) {
    tracing::warn!(
        peer = %format!("{peer:016x}"),
        revision = local.hash_revision,
        compact_revision = local.compact_revision,
        local_hash = local.hash,
        peer_hash = resp.hash,
        "found different hash values from remote peer"
    );
}

/// Asks every other member for its hash at `revision`, over member-to-member calls.
async fn peer_hashes(server: &Arc<KvServer>, revision: i64) -> Vec<PeerHash> {
    let me = server.member_id();
    let mut out = Vec::new();
    for m in server.members().into_iter().filter(|m| m.id != me) {
        let answer = ask(server, m.id, revision).await;
        out.push(PeerHash { id: m.id, answer });
    }
    out
}

async fn ask(
    server: &Arc<KvServer>,
    member: u64,
    revision: i64,
) -> Result<pb::HashKvResponse, tonic::Status> {
    let mut client = InternalClient::new(server.channel_to_member(member));
    let call = client.hash_kv(pb::HashKvRequest { revision });
    match tokio::time::timeout(PEER_TIMEOUT, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer from member {member:016x} within {PEER_TIMEOUT:?}"
        ))),
    }
}

/// Compares this member's key space with its peers'; an error names the inconsistency.
pub async fn initial_check(server: &Arc<KvServer>) -> Result<(), String> {
    let me = server.member_id();
    tracing::info!(member = %format!("{me:016x}"), "starting initial corruption check");
    let local = server
        .hash_kv_blocking(0)
        .await
        .map_err(|e| format!("{me:016x} failed to fetch hash ({e})"))?;
    let mut mismatches = 0;
    for peer in peer_hashes(server, local.hash_revision).await {
        let id = format!("{:016x}", peer.id);
        match peer.answer {
            Ok(resp) => match compare(local.hash, local.compact_revision, &resp) {
                Verdict::Same => {}
                Verdict::Mismatch => {
                    warn_mismatch(peer.id, &local, &resp);
                    mismatches += 1;
                }
                Verdict::Incomparable => tracing::warn!(
                    peer = %id,
                    compact_revision = local.compact_revision,
                    peer_compact_revision = resp.compact_revision,
                    "found different compact revision values from remote peer"
                ),
            },
            Err(status) => {
                let reason = match status.message() {
                    m if m == KvError::FutureRevision.to_string() => "slow remote peer",
                    m if m == KvError::Compacted.to_string() => "local member is behind",
                    _ => "remote peer unavailable",
                };
                tracing::warn!(peer = %id, error = %status.message(), "cannot fetch hash: {reason}");
            }
        }
    }
    if mismatches > 0 {
        return Err(format!("{me:016x} found data inconsistency with peers"));
    }
    tracing::info!(member = %format!("{me:016x}"), "initial corruption checking passed; no corruption");
    Ok(())
}

/// The leader's periodic check: every `every`, compares the members' key spaces and raises a
/// CORRUPT alarm for the member whose data differs. Runs until dropped.
pub async fn periodic(server: Arc<KvServer>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if !server.node().state().is_leader() || server.corrupt() {
            continue;
        }
        let suspect = match leader_check(&server).await {
            Ok(Some(member)) => member,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "corruption check failed to hash the key space");
                continue;
            }
        };
        let alarm = pb::AlarmRequest {
            action: pb::alarm_request::AlarmAction::Activate as i32,
            member_id: suspect,
            alarm: pb::AlarmType::Corrupt as i32,
        };
        if let Err(e) = server.propose(Request::Alarm(alarm)).await {
            tracing::warn!(error = %e, "raising the CORRUPT alarm failed; retrying next check");
        }
    }
}

/// One comparison by the leader: the member to raise a CORRUPT alarm for, if any.
///
/// Only a definite difference counts: the leader's own hash changing while its revision and
/// compaction point did not, or a peer with the leader's compaction point answering another
/// hash for the same revision (a peer ahead of that revision still hashes the versions up to
/// it). etcd also alarms when a follower's revision or compaction point is ahead of the
/// leader's; here a follower's apply may briefly run ahead of the leader's (both apply
/// committed entries on threads of their own), and a false alarm stops every client of the
/// cluster, so that alone is not taken for corruption.
async fn leader_check(server: &Arc<KvServer>) -> Result<Option<u64>, KvError> {
    let me = server.member_id();
    let first = server.hash_kv_blocking(0).await?;
    let peers = peer_hashes(server, first.hash_revision).await;
    let second = server.hash_kv_blocking(0).await?;
    if second.hash != first.hash
        && second.hash_revision == first.hash_revision
        && second.compact_revision == first.compact_revision
    {
        tracing::warn!(
            revision = first.hash_revision,
            "found hash mismatch: this member's key space changed without a new revision"
        );
        return Ok(Some(me));
    }
    for peer in peers {
        let Ok(resp) = peer.answer else { continue };
        if compare(first.hash, first.compact_revision, &resp) == Verdict::Mismatch {
            warn_mismatch(peer.id, &first, &resp);
            return Ok(Some(peer.id));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(hash: u32, compact_revision: i64) -> pb::HashKvResponse {
        pb::HashKvResponse {
            hash,
            compact_revision,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_difference_at_the_same_compaction_point_is_corruption() {
        assert_eq!(compare(7, 3, &answer(7, 3)), Verdict::Same);
        assert_eq!(compare(7, 3, &answer(8, 3)), Verdict::Mismatch);
        assert_eq!(compare(7, 3, &answer(8, 5)), Verdict::Incomparable);
        assert_eq!(compare(7, 3, &answer(7, 5)), Verdict::Same);
    }
}
