//! Ships snapshots to peers that fell behind the compacted log: for each snapshot message a
//! leader's protocol emits, writes the state machine's snapshot to a file and streams it to
//! the peer (see `transport::snapshot`), at most one transfer per peer at a time. Messages
//! for a peer with a transfer under way are dropped; the protocols ask again. After a failed
//! transfer the peer waits out a backoff (1 s, doubling to 30 s) before the next one, so an
//! unreachable peer does not cost a snapshot file every few ticks.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quorumkv_replication::{NodeId, ProtocolMessage};

use super::StateMachine;
use crate::transport::{snapshot, tcp};

/// Sends snapshots, one transfer per peer at a time.
pub struct Shipper {
    machine: Option<Arc<dyn StateMachine>>,
    peers: Arc<tcp::Outbound>,
    dir: PathBuf,
    busy: Arc<Mutex<HashSet<NodeId>>>,
    backoff: Arc<Mutex<HashMap<NodeId, Duration>>>,
}

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Shipper {
    /// A shipper writing its outgoing snapshot files in `dir`.
    pub fn new(
        machine: Option<Arc<dyn StateMachine>>,
        peers: Arc<tcp::Outbound>,
        dir: PathBuf,
    ) -> Shipper {
        Shipper {
            machine,
            peers,
            dir,
            busy: Arc::default(),
            backoff: Arc::default(),
        }
    }

    /// Starts sending the snapshot `m` asks for, unless a transfer to its recipient is under
    /// way (or there is no state machine to snapshot).
    pub fn ship<M: ProtocolMessage>(&self, m: M) {
        let to = m.to();
        let (Some(machine), Some(addr)) = (self.machine.clone(), self.peers.addr(to)) else {
            tracing::warn!(
                to,
                "a peer needs a snapshot but this node has no state machine"
            );
            return;
        };
        if !self.busy.lock().insert(to) {
            return;
        }
        let mut message = Vec::new();
        m.encode(&mut message);
        let index = m.snapshot_request().map_or(0, |s| s.index);
        let path = self.dir.join(format!("send-{to:x}.tmp"));
        let busy = Arc::clone(&self.busy);
        let backoff = Arc::clone(&self.backoff);
        let peers = Arc::clone(&self.peers);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let p = path.clone();
            let written = tokio::task::spawn_blocking(move || {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                machine.write_snapshot(&p)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            let result = match written {
                Ok(applied) => async {
                    let stream = peers.dial_snapshot(addr).await?;
                    snapshot::send(stream, &path, &message).await
                }
                .await
                .map(|bytes| (applied, bytes))
                .map_err(|e| e.to_string()),
                Err(e) => Err(format!("writing the snapshot: {e}")),
            };
            let _ = tokio::fs::remove_file(&path).await;
            match result {
                Ok((applied, bytes)) => {
                    tracing::info!(
                        to,
                        index,
                        applied,
                        bytes,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "snapshot sent"
                    );
                    backoff.lock().remove(&to);
                }
                Err(e) => {
                    let wait = {
                        let mut b = backoff.lock();
                        let w = b
                            .get(&to)
                            .map_or(BACKOFF_MIN, |w| (*w * 2).min(BACKOFF_MAX));
                        b.insert(to, w);
                        w
                    };
                    tracing::warn!(to, index, error = %e, retry_in_ms = wait.as_millis() as u64, "snapshot not sent");
                    tokio::time::sleep(wait).await;
                }
            }
            busy.lock().remove(&to);
        });
    }
}
