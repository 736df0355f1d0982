//! Lease traffic under faults, and what it must never see.
//!
//! Each lease client grants a short lease, attaches a key to it, keeps it alive for a while
//! (reading the key back between keep-alives), then revokes it or lets it expire, and starts
//! over. It checks as it goes, with times taken on this process's monotonic clock:
//! - a key whose lease was kept alive is never missing before the deadline the last
//!   acknowledged keep-alive promised (measured from when that keep-alive was sent), and the
//!   lease itself is never reported gone before it;
//! - a revoked lease's key is gone once the revoke is acknowledged.
//!
//! After the run, [`settle`] checks every member: the keys of revoked and expired leases are
//! gone everywhere, and none of those leases exists again. Owns only this traffic and these
//! checks; the cluster, faults and other clients are elsewhere.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorumkv_server::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    PutRequest, RangeRequest, kv_client::KvClient, lease_client::LeaseClient,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use super::workload::Shared;

/// TTL the clients ask for.
const TTL_SECS: i64 = 3;
/// Time between keep-alives (a third of the TTL, as clientv3 does).
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(1000);
/// Longest any ended lease may take to be gone from every member after the run.
const SETTLE_PATIENCE: Duration = Duration::from_secs(30);
/// Prefix of the lease clients' keys.
const PREFIX: &str = "chaos-lease/";

/// A lease whose client is done with it: revoked, or left to expire.
#[derive(Debug, Clone)]
pub struct Ended {
    /// Lease id.
    pub id: i64,
    /// Its key.
    pub key: Vec<u8>,
    /// Whether a revoke was acknowledged.
    pub revoked: bool,
}

/// What the lease clients saw.
#[derive(Debug, Default)]
pub struct LeaseLog {
    /// Leases granted.
    pub granted: u64,
    /// Keep-alives acknowledged.
    pub kept_alive: u64,
    /// Leases done with.
    pub ended: Vec<Ended>,
    /// What should never have happened.
    pub violations: Vec<String>,
}

/// Runs lease client `c` until the workload stops.
pub async fn client(
    c: u64,
    channels: Vec<Channel>,
    shared: Arc<Shared>,
    log: Arc<Mutex<LeaseLog>>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x1ea5e ^ (c << 24));
    let mut member = usize::try_from(c).unwrap_or(0) % channels.len();
    let mut n = 0u64;
    while !shared.stop_clients.load(Ordering::Relaxed) {
        n += 1;
        let ch = &channels[member];
        let key = format!("{PREFIX}c{c}/{n}").into_bytes();
        let sent = Instant::now();
        let granted = LeaseClient::new(ch.clone())
            .lease_grant(LeaseGrantRequest {
                ttl: TTL_SECS,
                id: 0,
            })
            .await;
        let (id, ttl) = match granted {
            Ok(r) => {
                let r = r.into_inner();
                (r.id, r.ttl)
            }
            Err(_) => {
                member = (member + 1) % channels.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        log.lock().granted += 1;
        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        let mut alive_until = sent + ttl;
        let attached = KvClient::new(ch.clone())
            .put(PutRequest {
                key: key.clone(),
                value: n.to_string().into_bytes(),
                lease: id,
                ..Default::default()
            })
            .await
            .is_ok();
        let keep = Duration::from_millis(rng.random_range(1000..6000));
        let until = Instant::now() + keep;
        while attached && Instant::now() < until && !shared.stop_clients.load(Ordering::Relaxed) {
            tokio::time::sleep(KEEP_ALIVE_EVERY).await;
            let sent = Instant::now();
            match keep_alive(&channels[member], id).await {
                Ok(left) if left > 0 => {
                    alive_until = alive_until.max(sent + ttl);
                    log.lock().kept_alive += 1;
                }
                Ok(_) => {
                    if Instant::now() < alive_until {
                        log.lock().violations.push(format!(
                            "lease {id:x} reported gone {:?} before its last keep-alive's deadline",
                            alive_until - Instant::now()
                        ));
                    }
                    break;
                }
                Err(_) => member = (member + 1) % channels.len(),
            }
            let read = KvClient::new(channels[member].clone())
                .range(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })
                .await;
            if let Ok(r) = read {
                let answered = Instant::now();
                if r.into_inner().kvs.is_empty() && answered < alive_until {
                    log.lock().violations.push(format!(
                        "key {} of lease {id:x} deleted {:?} before its last keep-alive's deadline",
                        String::from_utf8_lossy(&key),
                        alive_until - answered
                    ));
                    break;
                }
            }
        }
        let revoked = rng.random_bool(0.5)
            && LeaseClient::new(channels[member].clone())
                .lease_revoke(LeaseRevokeRequest { id })
                .await
                .is_ok();
        if revoked {
            let read = KvClient::new(channels[member].clone())
                .range(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })
                .await;
            if read.is_ok_and(|r| !r.into_inner().kvs.is_empty()) {
                log.lock().violations.push(format!(
                    "key {} still there after lease {id:x}'s revoke was acknowledged",
                    String::from_utf8_lossy(&key)
                ));
            }
        }
        log.lock().ended.push(Ended { id, key, revoked });
    }
}

/// Longest a keep-alive may take (a stream has no request timeout of its own).
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// One keep-alive on a stream of its own; the TTL it answers (0: no such lease).
async fn keep_alive(ch: &Channel, id: i64) -> Result<i64, tonic::Status> {
    tokio::time::timeout(KEEP_ALIVE_TIMEOUT, keep_alive_once(ch, id))
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("keep-alive timed out")))
}

async fn keep_alive_once(ch: &Channel, id: i64) -> Result<i64, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.send(LeaseKeepAliveRequest { id }).await;
    drop(tx);
    let mut stream = LeaseClient::new(ch.clone())
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match stream.message().await? {
        Some(r) => Ok(r.ttl),
        None => Err(tonic::Status::unavailable("keep-alive stream ended")),
    }
}

/// After the run (the cluster healed): waits until every ended lease is gone from every
/// member and its key with it; whatever is still there after the patience is a violation.
pub async fn settle(channels: &[Channel], log: &mut LeaseLog) {
    let deadline = Instant::now() + SETTLE_PATIENCE;
    loop {
        let left = remaining(channels, &log.ended).await;
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            log.violations.extend(left);
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What of the ended leases some member still holds.
async fn remaining(channels: &[Channel], ended: &[Ended]) -> Vec<String> {
    let mut out = Vec::new();
    for (m, ch) in channels.iter().enumerate() {
        let held = KvClient::new(ch.clone())
            .range(RangeRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end: b"chaos-lease0".to_vec(),
                serializable: true,
                keys_only: true,
                ..Default::default()
            })
            .await;
        let keys: Vec<Vec<u8>> = match held {
            Ok(r) => r.into_inner().kvs.into_iter().map(|kv| kv.key).collect(),
            Err(e) => {
                out.push(format!("member {m} unreadable: {}", e.message()));
                continue;
            }
        };
        for e in ended {
            if keys.contains(&e.key) {
                out.push(format!(
                    "member {m} still holds key {} of {} lease {:x}",
                    String::from_utf8_lossy(&e.key),
                    if e.revoked { "revoked" } else { "expired" },
                    e.id
                ));
            }
        }
    }
    for e in ended {
        let ttl = LeaseClient::new(channels[0].clone())
            .lease_time_to_live(LeaseTimeToLiveRequest {
                id: e.id,
                keys: false,
            })
            .await;
        let what = if e.revoked { "revoked" } else { "expired" };
        match ttl {
            Ok(r) if r.get_ref().ttl == -1 => {}
            Ok(r) => out.push(format!(
                "{what} lease {:x} still exists (TTL {})",
                e.id,
                r.into_inner().ttl
            )),
            Err(err) => out.push(format!(
                "{what} lease {:x} unknown: {}",
                e.id,
                err.message()
            )),
        }
    }
    out
}
