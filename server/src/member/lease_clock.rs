//! The leader's lease clock: promotes or demotes the lessor as leadership comes and goes,
//! hands each expired lease to the client API that owns it, to be revoked through the log,
//! and now and then hands over the leases' remaining TTLs, to be logged as checkpoints.
//!
//! It never revokes or checkpoints a lease itself (both are committed requests, applied like
//! any other) and never expires one while this member does not lead.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use super::core::Core;
use crate::node::NodeState;

/// How often the clock looks for expired leases.
const TICK: Duration = Duration::from_millis(250);
/// Most leases handed over per tick.
const EXPIRED_PER_TICK_MAX: usize = 500;
/// How long a lease handed over waits before it is handed over again, if still alive.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// Most leases one checkpoint carries (etcd's batch).
const CHECKPOINTS_PER_BATCH_MAX: usize = 1000;

/// Runs until the node stops; `revoke` is called with each expired lease's id, and, every
/// `checkpoint_every` (none: never), `checkpoint` with (id, remaining TTL) batches and the
/// guard of [`Core::lease_log_order`], to be released once the batch is handed to the log.
pub async fn run(
    state: Arc<NodeState>,
    core: Arc<Core>,
    revoke: impl Fn(i64) + Send + 'static,
    checkpoint_every: Option<Duration>,
    checkpoint: impl Fn(Vec<(i64, i64)>, OwnedMutexGuard<()>) + Send + 'static,
) {
    let mut tick = tokio::time::interval(TICK);
    let mut last_checkpoint = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if state.stopped() {
            return;
        }
        let leading = state.is_leader();
        let expired = {
            let mut l = core.lessor.lock();
            if leading && !l.is_primary() {
                l.promote();
            } else if !leading && l.is_primary() {
                l.demote();
            }
            if leading {
                l.take_expired(EXPIRED_PER_TICK_MAX, REVOKE_RETRY)
            } else {
                Vec::new()
            }
        };
        for id in expired {
            revoke(id);
        }
        if leading && checkpoint_every.is_some_and(|e| last_checkpoint.elapsed() >= e) {
            last_checkpoint = tokio::time::Instant::now();
            let order = Arc::clone(&core.lease_log_order).lock_owned().await;
            let batch = core
                .lessor
                .lock()
                .take_checkpoints(CHECKPOINTS_PER_BATCH_MAX);
            if !batch.is_empty() {
                checkpoint(batch, order);
            }
        }
    }
}
