//! Who the members are, as the replicated log records them: each member's name, peer URLs
//! and client URLs, kept in member rows of the tree and in memory. It applies member
//! attributes, publishes this member's own through the log once a leader exists (as etcd's
//! publish does), and keeps the node's peer addresses in step with the rows.
//!
//! Which members vote is the node's membership, not this: the roster only names them. It never
//! takes a client API's request; member attributes enter the log only through
//! [`publish`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use prost::Message;

use super::envelope::{Envelope, MemberAttributes, now_ms};
use super::error::Error;
use super::identity::{Member, parse_url};
use super::proposer::Proposer;
use crate::mvcc::{Mvcc, MvccError, MvccTxn};
use crate::node::Node;

/// Prefix of member rows (`M <id be>` → [`MemberAttributes`]).
pub const MEMBER_PREFIX: u8 = b'M';
/// Where member rows were kept before: after the revision rows, so every put landed in the
/// leaf that also held them and split it in the middle, leaving leaves two-thirds full.
/// [`Roster::load`] moves them.
pub const OLD_MEMBER_PREFIX: u8 = b'u';

/// The members by id.
#[derive(Debug, Default)]
pub struct Roster {
    members: RwLock<BTreeMap<u64, Member>>,
    /// Bumped when a member changes.
    version: AtomicU64,
}

impl Roster {
    /// The members of `initial` (from the flags), before any row is loaded.
    pub fn new(initial: &[Member]) -> Roster {
        Roster {
            members: RwLock::new(initial.iter().map(|m| (m.id, m.clone())).collect()),
            version: AtomicU64::new(0),
        }
    }

    /// Member `id`, if known.
    pub fn get(&self, id: u64) -> Option<Member> {
        self.members.read().get(&id).cloned()
    }

    /// Every known member, in id order.
    pub fn all(&self) -> Vec<Member> {
        self.members.read().values().cloned().collect()
    }

    /// Bumped whenever a member changes.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// The members of the membership in effect, learners marked, in id order (every known
    /// member while the node has not reported a membership yet).
    pub fn current(&self, conf: &quorumkv_replication::Conf) -> Vec<Member> {
        let members = self.members.read();
        if conf.voters.is_empty() {
            return members.values().cloned().collect();
        }
        let mut out: Vec<Member> = conf
            .voters
            .iter()
            .chain(&conf.learners)
            .map(|id| {
                let mut m = members.get(id).cloned().unwrap_or(Member {
                    id: *id,
                    ..Member::default()
                });
                m.is_learner = conf.learners.contains(id);
                m
            })
            .collect();
        // Learners too in id order, as etcd lists members.
        out.sort_unstable_by_key(|m| m.id);
        out
    }

    fn record(&self, m: MemberAttributes) {
        let mut members = self.members.write();
        let e = members.entry(m.id).or_insert_with(|| Member {
            id: m.id,
            ..Member::default()
        });
        e.name = m.name;
        e.client_urls = m.client_urls;
        if !m.peer_urls.is_empty() {
            e.peer_urls = m.peer_urls;
        }
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies committed member attributes: their row, then memory.
    pub fn apply(&self, txn: &mut MvccTxn, m: MemberAttributes) -> Result<(), MvccError> {
        txn.tree()
            .insert(&member_row(m.id), &m.encode_to_vec())
            .map_err(MvccError::Storage)?;
        self.record(m);
        Ok(())
    }

    /// Loads the member rows of the tree (at start and after a snapshot install), first moving
    /// rows kept where older versions kept them.
    pub fn load(&self, mvcc: &Mvcc) -> Result<(), MvccError> {
        let moved = mvcc.move_prefix(OLD_MEMBER_PREFIX, MEMBER_PREFIX)?;
        if moved > 0 {
            tracing::info!(rows = moved, "member rows moved before the revision rows");
        }
        let snap = mvcc.snapshot();
        let txn = snap.txn();
        let mut rows = Vec::new();
        for item in txn.prefix(&[MEMBER_PREFIX]) {
            let (k, v) = item.map_err(MvccError::Storage)?;
            let (k, v) = (k.to_vec(), v);
            let m = MemberAttributes::decode(v).map_err(|_| MvccError::Corrupt(k))?;
            rows.push(m);
        }
        for m in rows {
            self.record(m);
        }
        Ok(())
    }
}

/// The row key of member `id`.
fn member_row(id: u64) -> Vec<u8> {
    let mut k = vec![MEMBER_PREFIX];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Records `attrs` through the log and waits until applied here.
pub async fn publish(proposer: &Proposer, attrs: MemberAttributes) -> Result<(), Error> {
    let id = proposer.fresh_id();
    let entry = Envelope {
        id,
        time_ms: now_ms(),
        member_attributes: Some(attrs),
        zookeeper: None,
    }
    .encode_to_vec();
    proposer
        .propose(id, entry)
        .await
        .map(|_| ())
        .map_err(|f| f.error)
}

/// Publishes this member's name and client URLs once a leader exists, retrying until they
/// stick (for about two minutes).
pub async fn publish_own(
    proposer: &Proposer,
    roster: &Roster,
    me: u64,
    name: String,
    client_urls: Vec<String>,
) {
    for _ in 0..600 {
        let current = roster.get(me);
        if current
            .as_ref()
            .is_some_and(|m| m.client_urls == client_urls && m.name == name)
        {
            return;
        }
        if proposer.node().state().leader() != 0 {
            let attrs = MemberAttributes {
                id: me,
                name: name.clone(),
                client_urls: client_urls.clone(),
                peer_urls: current.map(|m| m.peer_urls).unwrap_or_default(),
            };
            match publish(proposer, attrs).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "publishing member attributes"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps the node's peer addresses in step with the members' peer URLs (members added or
/// moved at runtime, and those loaded from the tree at start).
pub async fn sync_peers(node: &Node, roster: Arc<Roster>) {
    let mut seen = u64::MAX;
    loop {
        let version = roster.version();
        if version != seen {
            seen = version;
            for m in roster.all() {
                if let Some(addr) = m.peer_urls.first().and_then(|u| parse_url(u).ok()) {
                    node.set_peer(m.id, addr);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
