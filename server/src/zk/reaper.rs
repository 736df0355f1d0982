//! The leader's reaper of containers and TTL nodes: a container whose last child went, and a
//! TTL node without children left unmodified for its TTL, are deleted through the log
//! (ZooKeeper's `ContainerManager`). The applier keeps the set of candidates ([`Reapable`]);
//! the reaper only proposes, and the applier checks again, against the entry's own time,
//! before it deletes anything.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::codes::op;
use super::jute::Writer;
use super::read;
use super::session::{self, ZkContext};
use super::txn::ZkTxn;
use super::znode::kind;
use crate::member::envelope::now_ms;

/// Most deletions one pass proposes (ZooKeeper's `maxPerMinute` default).
pub const REAPED_PER_PASS_MAX: usize = 10_000;

/// The paths of every container and TTL node, kept by the applier.
#[derive(Debug, Default)]
pub struct Reapable {
    paths: Mutex<BTreeSet<String>>,
}

impl Reapable {
    /// Replaces the whole set (a load).
    pub fn replace(&self, paths: Vec<String>) {
        *self.paths.lock() = paths.into_iter().collect();
    }

    /// Adds or removes `path`.
    pub fn set(&self, path: String, on: bool) {
        let mut paths = self.paths.lock();
        if on {
            paths.insert(path);
        } else {
            paths.remove(&path);
        }
    }

    /// The paths now.
    pub fn list(&self) -> Vec<String> {
        self.paths.lock().iter().cloned().collect()
    }
}

/// The paths of `reapable` due at `now_ms` on this member's view.
fn due(ctx: &ZkContext, reapable: &Reapable, now_ms: i64) -> Vec<String> {
    let snap = ctx.core.mvcc.snapshot();
    let mut out = Vec::new();
    for path in reapable.list() {
        let Ok(Some(found)) = read::node(&snap, &path) else {
            continue;
        };
        let (rec, stat) = (&found.record, &found.stat);
        let ready = stat.num_children == 0
            && match rec.kind {
                kind::CONTAINER => stat.cversion > 0,
                kind::TTL => rec.mtime.saturating_add(rec.ttl_ms) < now_ms,
                _ => false,
            };
        if ready {
            out.push(path);
            if out.len() == REAPED_PER_PASS_MAX {
                break;
            }
        }
    }
    out
}

/// Every `interval`, while this member leads, proposes the deletion of each due node.
pub async fn run(ctx: Arc<ZkContext>, reapable: Arc<Reapable>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !ctx.proposer.node().state().is_leader() {
            continue;
        }
        for path in due(&ctx, &reapable, now_ms() as i64) {
            let mut w = Writer::default();
            w.ustring(&path);
            let t = ZkTxn {
                op: op::DELETE_CONTAINER,
                body: w.bytes,
                ..ZkTxn::default()
            };
            if let Err(e) = session::propose(&ctx, &t).await {
                tracing::debug!(%path, error = %e, "reaping a node");
                break;
            }
        }
    }
}
