//! etcd's initial corruption check (`--experimental-initial-corrupt-check`): before a member
//! serves clients, it compares the hash of its key space (HashKV at its current revision) with
//! every peer's hash at that same revision, and refuses to start when a peer that has the same
//! compaction point holds different data.
//!
//! Peers are asked over the member-to-member `Internal.HashKv` call on their client URLs. A
//! peer that cannot answer (down, behind this member's revision, or compacted past it) is
//! reported and skipped, as etcd skips it: the check can only find a difference, never prove
//! there is none. This module reads and compares; it never changes data.

use std::sync::Arc;
use std::time::Duration;

use crate::kv::{KvError, KvServer};
use crate::pb::etcdserverpb as pb;
use crate::pb::quorumkv::internal_client::InternalClient;

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

/// Asks every other member with a published client URL for its hash at `revision`.
async fn peer_hashes(server: &Arc<KvServer>, revision: i64) -> Vec<PeerHash> {
    let me = server.member_id();
    let mut out = Vec::new();
    for m in server.members().into_iter().filter(|m| m.id != me) {
        let mut answer = Err(tonic::Status::unavailable("no client URL published"));
        for url in &m.client_urls {
            answer = ask(server, url, revision).await;
            if answer.is_ok() {
                break;
            }
        }
        out.push(PeerHash { id: m.id, answer });
    }
    out
}

async fn ask(
    server: &Arc<KvServer>,
    url: &str,
    revision: i64,
) -> Result<pb::HashKvResponse, tonic::Status> {
    let channel = server.channel_to(url).map_err(tonic::Status::from)?;
    let mut client = InternalClient::new(channel);
    let call = client.hash_kv(pb::HashKvRequest { revision });
    match tokio::time::timeout(PEER_TIMEOUT, call).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer from {url} within {PEER_TIMEOUT:?}"
        ))),
    }
}

/// Compares this member's key space with its peers'; an error names the inconsistency.
pub async fn initial_check(server: &Arc<KvServer>) -> Result<(), String> {
    let me = server.member_id();
    tracing::info!(member = %format!("{me:016x}"), "starting initial corruption check");
    let local = server
        .hash_kv(0)
        .map_err(|e| format!("{me:016x} failed to fetch hash ({e})"))?;
    let mut mismatches = 0;
    for peer in peer_hashes(server, local.hash_revision).await {
        let id = format!("{:016x}", peer.id);
        match peer.answer {
            Ok(resp) => match compare(local.hash, local.compact_revision, &resp) {
                Verdict::Same => {}
                Verdict::Mismatch => {
                    tracing::warn!(
                        peer = %id,
                        revision = local.hash_revision,
                        compact_revision = local.compact_revision,
                        local_hash = local.hash,
                        peer_hash = resp.hash,
                        "found different hash values from remote peer"
                    );
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
