//! ZooKeeper sessions on a member: the settings that bound them, how a new one is made (an id
//! and a password chosen here, agreed through the log), how a returning one is checked, and
//! how one is closed or expired (through the log, removing its ephemerals).
//!
//! Only the leader's lessor keeps session deadlines; a member touches a session on every
//! request and ping it hears. A follower gathers the sessions it heard from and tells the
//! leader in one call every half tick ([`relay_touches`], over a [`TouchRelay`] the member
//! wiring provides), as a ZooKeeper follower reports its sessions with its pings.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use super::codes::op;
use super::txn::{ZkAnswer, ZkTxn};
use super::znode::{self, SessionRecord};
use crate::member::core::Core;
use crate::member::envelope::{Envelope, now_ms};
use crate::member::error::Error;
use crate::member::lessor::Renewal;
use crate::member::proposer::{Failed, Proposer, Ticket};
use crate::mvcc::{RangeOpts, Snapshot};

/// ZooKeeper's settings (`zoo.cfg`), under their etcd-style flag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkConfig {
    /// `tickTime`.
    pub tick: Duration,
    /// Shortest session timeout granted (`minSessionTimeout`, default 2 ticks).
    pub session_timeout_min: Duration,
    /// Longest session timeout granted (`maxSessionTimeout`, default 20 ticks).
    pub session_timeout_max: Duration,
    /// Largest frame taken (`jute.maxbuffer`).
    pub frame_bytes_max: usize,
    /// Connections one client address may hold (`maxClientCnxns`; 0: no limit).
    pub connections_per_address_max: usize,
    /// Connections the port holds in all.
    pub connections_max: usize,
    /// Sessions the cluster holds in all: a new one past it is refused.
    pub sessions_max: usize,
    /// The super-user's digest, `super:<base64 sha1>`
    /// (`zookeeper.DigestAuthenticationProvider.superDigest`).
    pub super_digest: Option<String>,
    /// Four-letter words answered (`4lw.commands.whitelist`; `*`: all). Others are told
    /// they are not in the whitelist, as ZooKeeper tells them.
    pub four_letter_words: Vec<String>,
    /// How often the leader looks for emptied containers and expired TTL nodes
    /// (`znode.container.checkIntervalMs`).
    pub reap_interval: Duration,
}

impl Default for ZkConfig {
    fn default() -> ZkConfig {
        let tick = Duration::from_millis(2000);
        ZkConfig {
            tick,
            session_timeout_min: tick * 2,
            session_timeout_max: tick * 20,
            frame_bytes_max: 0xfffff,
            connections_per_address_max: 60,
            connections_max: 10_000,
            sessions_max: 100_000,
            super_digest: None,
            four_letter_words: vec!["srvr".into()],
            reap_interval: Duration::from_secs(60),
        }
    }
}

impl ZkConfig {
    /// The timeout granted for the `asked_ms` a client asked for.
    pub fn negotiate_ms(&self, asked_ms: i32) -> i32 {
        let min = self.session_timeout_min.as_millis() as i32;
        let max = self.session_timeout_max.as_millis() as i32;
        asked_ms.clamp(min, max.max(min))
    }
}

/// What a ZooKeeper port needs of its member.
pub struct ZkContext {
    /// Proposes writes.
    pub proposer: Arc<Proposer>,
    /// The key space and the lessor.
    pub core: Arc<Core>,
    /// The watch table its applier fires.
    pub watches: Arc<super::watches::Watches>,
    /// The settings.
    pub cfg: ZkConfig,
    /// This member's id (its low byte marks the sessions it creates).
    pub member_id: u64,
    /// Sessions heard from since the leader was last told.
    pub touched: parking_lot::Mutex<HashSet<i64>>,
    /// Whether writes that add data may go ahead (false: the disk is short of its reserve,
    /// or the cluster's NOSPACE alarm is raised).
    pub may_add_data: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// Most sessions one touch call carries.
pub const TOUCHES_PER_CALL_MAX: usize = 100_000;

/// Tells the leader which sessions a follower heard from; answers the ones it does not know.
pub trait TouchRelay: Send + Sync {
    /// Sends `ids` to the leader.
    fn relay(&self, ids: Vec<i64>)
    -> Pin<Box<dyn Future<Output = Result<Vec<i64>, Error>> + Send>>;
}

/// Whether lease `id` is a ZooKeeper session in `snap` (sessions are leases underneath).
pub fn is_session(snap: &Snapshot, id: i64) -> bool {
    let count = RangeOpts {
        count_only: true,
        ..RangeOpts::default()
    };
    snap.range(&znode::session_key(id), &[], count)
        .is_ok_and(|r| r.count == 1)
}

/// On the leader: renews every session of `ids` it keeps; answers those it does not.
pub fn touch_all(core: &Core, ids: &[i64]) -> Vec<i64> {
    let snap = core.mvcc.snapshot();
    let stored: Vec<bool> = ids.iter().map(|&id| is_session(&snap, id)).collect();
    let mut lessor = core.lessor.lock();
    ids.iter()
        .zip(stored)
        .filter(|&(&id, known)| !known || !matches!(lessor.renew(id), Renewal::Renewed { .. }))
        .map(|(&id, _)| id)
        .collect()
}

/// Every half tick, while this member follows, hands the sessions its clients kept alive to
/// the leader through `relay`.
pub async fn relay_touches(ctx: Arc<ZkContext>, relay: Arc<dyn TouchRelay>) {
    let mut tick = tokio::time::interval(ctx.cfg.tick / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ids: Vec<i64> = std::mem::take(&mut *ctx.touched.lock())
            .into_iter()
            .collect();
        if ids.is_empty() || ctx.proposer.node().state().is_leader() {
            continue;
        }
        for chunk in ids.chunks(TOUCHES_PER_CALL_MAX) {
            if let Err(e) = relay.relay(chunk.to_vec()).await {
                tracing::debug!(error = %e, "telling the leader of live sessions");
            }
        }
    }
}

impl std::fmt::Debug for ZkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkContext")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Proposes `t` and waits for the ZooKeeper applier's answer, trying again (until the request
/// timeout) only while it provably never reached the log.
pub async fn propose(ctx: &ZkContext, t: &ZkTxn) -> Result<ZkAnswer, Error> {
    let deadline = Instant::now() + ctx.proposer.request_timeout();
    loop {
        let ticket = submit(ctx, t, deadline).await?;
        match answer(ctx, ticket).await {
            Ok(answer) => return Ok(answer),
            Err(f) if again(ctx, &f, deadline) => {
                tracing::debug!(error = %f.error, "a ZooKeeper write goes again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// Whether a write that failed so may be proposed again before `deadline`: it never reached
/// the log, for want of a leader, and one is likely to come.
pub fn again(ctx: &ZkContext, f: &Failed, deadline: Instant) -> bool {
    f.never_applied
        && matches!(
            f.error,
            Error::NotLeader | Error::NoLeader | Error::LeaderChanged
        )
        && ctx.proposer.wait_for_leader(deadline)
}

/// Hands `t` to the log (trying again until `deadline` while no leader takes it); its answer
/// comes through [`answer`]. Writes a caller submits one after another enter the log in
/// that order.
pub async fn submit(ctx: &ZkContext, t: &ZkTxn, deadline: Instant) -> Result<Ticket, Error> {
    let body = t.encode_to_vec();
    loop {
        let id = ctx.proposer.fresh_id();
        let entry = Envelope {
            id,
            time_ms: now_ms(),
            member_attributes: None,
            zookeeper: Some(body.clone()),
        }
        .encode_to_vec();
        match ctx.proposer.submit(id, entry).await {
            Ok(ticket) => return Ok(ticket),
            Err(f) if again(ctx, &f, deadline) => {
                tracing::debug!(error = %f.error, "a ZooKeeper write is handed over again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(f) => return Err(f.error),
        }
    }
}

/// The ZooKeeper applier's answer to a submitted write.
pub async fn answer(ctx: &ZkContext, ticket: Ticket) -> Result<ZkAnswer, Failed> {
    let answer = ctx.proposer.wait(ticket).await?;
    Ok(*answer
        .downcast::<ZkAnswer>()
        .expect("ZooKeeper's entries are answered by its applier"))
}

/// A new session id: this member's low byte on top, as ZooKeeper puts its server id there,
/// and a number never used before below (kept positive).
pub fn new_session_id(ctx: &ZkContext) -> i64 {
    let top = ((ctx.member_id & 0x7f) as i64) << 56;
    // Request ids are odd and step by two: halved, they are consecutive and unique.
    let low = (ctx.proposer.fresh_id() >> 1) as i64 & ((1 << 56) - 1);
    (top | low).max(1)
}

/// A fresh 16-byte password from the operating system's random source: whoever holds a
/// session's id and password may take the session over, so neither is guessable together.
pub fn new_password() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

/// How many sessions are stored.
pub fn count(core: &Core) -> usize {
    let (start, end) = znode::sessions_range();
    let opts = RangeOpts {
        count_only: true,
        ..RangeOpts::default()
    };
    core.mvcc
        .snapshot()
        .range(&start, &end, opts)
        .map_or(0, |r| r.count)
}

/// The stored session `id`, if it is alive.
pub fn stored(core: &Core, id: i64) -> Option<SessionRecord> {
    let snap = core.mvcc.snapshot();
    let kv = snap
        .range(&znode::session_key(id), &[], RangeOpts::default())
        .ok()?
        .kvs
        .into_iter()
        .next()?;
    SessionRecord::decode(kv.value.as_slice()).ok()
}

/// Marks session `id` active: its deadline moves here, and the leader hears of it.
pub fn touch(ctx: &ZkContext, id: i64) {
    ctx.core.lessor.lock().renew(id);
    if !ctx.proposer.node().state().is_leader() {
        let mut touched = ctx.touched.lock();
        if touched.len() < TOUCHES_PER_CALL_MAX {
            touched.insert(id);
        }
    }
}

/// Closes session `id` through the log: its ephemerals go in the same revision.
pub async fn close(ctx: &ZkContext, id: i64) -> Result<ZkAnswer, Error> {
    let t = ZkTxn {
        session: id,
        op: op::CLOSE_SESSION,
        ..ZkTxn::default()
    };
    propose(ctx, &t).await
}
