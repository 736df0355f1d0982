//! The checks etcd makes before a membership change. With `--strict-reconfig-check` (on by
//! default) a change must not leave the cluster short of a quorum of started voters (members
//! that have published their name) or of voters this leader hears from; a learner is
//! promoted only once it has caught up with the leader (90% of its log), strict or not.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use quorumkv_replication::NodeId;

use crate::etcd::{KvError, KvServer};

/// A peer heard from within this long counts as connected (etcd's `HealthInterval`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// A learner is ready when it matches at least this share of the leader's log.
const LEARNER_READY_SHARE: f64 = 0.9;

fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// The leader's view of the membership, taken once per request.
#[derive(Debug)]
pub(crate) struct Reconfig {
    strict: bool,
    me: NodeId,
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    started: BTreeSet<NodeId>,
    connected: BTreeSet<NodeId>,
    matched: BTreeMap<NodeId, u64>,
    last_index: u64,
}

impl Reconfig {
    /// Reads the membership, the published names and the peers' activity from `server`.
    pub(crate) async fn load(server: &KvServer) -> Result<Reconfig, KvError> {
        let node = server.node();
        let conf = node.state().conf();
        let (last_index, peers) = node.peers().await.map_err(|_| KvError::Stopped)?;
        let me = server.member_id();
        let mut connected: BTreeSet<NodeId> = peers
            .iter()
            .filter(|p| p.heard_ago.is_some_and(|t| t < HEALTH_INTERVAL))
            .map(|p| p.id)
            .collect();
        connected.insert(me);
        Ok(Reconfig {
            strict: server.config().strict_reconfig_check,
            me,
            voters: conf.voters.iter().copied().collect(),
            learners: conf.learners.iter().copied().collect(),
            started: server
                .members()
                .into_iter()
                .filter(|m| !m.name.is_empty())
                .map(|m| m.id)
                .collect(),
            connected,
            matched: peers
                .iter()
                .filter_map(|p| Some((p.id, p.matched?)))
                .collect(),
            last_index,
        })
    }

    fn started_voters(&self, except: Option<NodeId>) -> usize {
        self.voters
            .iter()
            .filter(|v| Some(**v) != except && self.started.contains(v))
            .count()
    }

    /// Adding a voter needs a quorum of the grown cluster already started, and every voter
    /// connected; a learner can always be added.
    pub(crate) fn may_add(&self, learner: bool) -> Result<(), KvError> {
        if !self.strict || learner {
            return Ok(());
        }
        if self.started_voters(None) < quorum(self.voters.len() + 1) {
            return Err(KvError::NotEnoughStartedMembers);
        }
        if !self.voters.iter().all(|v| self.connected.contains(v)) {
            return Err(KvError::Unhealthy);
        }
        Ok(())
    }

    /// Removing a voter needs a quorum of the rest started and, unless the voter is already
    /// down, a quorum of the rest connected.
    pub(crate) fn may_remove(&self, id: NodeId) -> Result<(), KvError> {
        if !self.strict || self.learners.contains(&id) {
            return Ok(());
        }
        let rest = self.voters.iter().filter(|v| **v != id).count();
        if self.started_voters(Some(id)) < quorum(rest) {
            return Err(KvError::NotEnoughStartedMembers);
        }
        if id != self.me && !self.connected.contains(&id) {
            return Ok(());
        }
        let connected = self
            .voters
            .iter()
            .filter(|v| self.connected.contains(v))
            .count();
        if connected.saturating_sub(1) < quorum(rest) {
            return Err(KvError::Unhealthy);
        }
        Ok(())
    }

    /// Promoting a learner needs it caught up; strictly, it also needs a quorum of the grown
    /// voter set started (counting the learner).
    pub(crate) fn may_promote(&self, id: NodeId) -> Result<(), KvError> {
        if self.strict && self.started_voters(None) + 1 < quorum(self.voters.len() + 1) {
            return Err(KvError::NotEnoughStartedMembers);
        }
        let matched = self.matched.get(&id).copied().unwrap_or(0);
        if (matched as f64) < self.last_index as f64 * LEARNER_READY_SHARE {
            return Err(KvError::LearnerNotReady);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(voters: &[u64], started: &[u64], connected: &[u64]) -> Reconfig {
        Reconfig {
            strict: true,
            me: 1,
            voters: voters.iter().copied().collect(),
            learners: [9].into(),
            started: started.iter().copied().collect(),
            connected: connected.iter().copied().collect(),
            matched: [(9, 50)].into(),
            last_index: 100,
        }
    }

    #[test]
    fn adds_need_started_and_connected_voters() {
        assert_eq!(
            view(&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]).may_add(false),
            Ok(())
        );
        // Three started of four after the add: fine by count, but 3 is unreachable.
        assert_eq!(
            view(&[1, 2, 3], &[1, 2, 3], &[1, 2]).may_add(false),
            Err(KvError::Unhealthy)
        );
        // One voter of a grown four never started: 2 < quorum(4) = 3.
        assert_eq!(
            view(&[1, 2, 3], &[1, 2], &[1, 2, 3]).may_add(false),
            Err(KvError::NotEnoughStartedMembers)
        );
        assert_eq!(view(&[1, 2, 3], &[1], &[1]).may_add(true), Ok(()));
    }

    #[test]
    fn removals_keep_a_connected_quorum() {
        assert_eq!(
            view(&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]).may_remove(3),
            Ok(())
        );
        // A member that is down can go.
        assert_eq!(view(&[1, 2, 3], &[1, 2, 3], &[1, 2]).may_remove(3), Ok(()));
        // Removing a live member while another is down leaves one of two connected.
        assert_eq!(
            view(&[1, 2, 3], &[1, 2, 3], &[1, 3]).may_remove(3),
            Err(KvError::Unhealthy)
        );
        assert_eq!(view(&[1, 2, 3], &[1], &[1]).may_remove(9), Ok(()));
    }

    #[test]
    fn a_learner_is_promoted_only_once_caught_up() {
        let mut v = view(&[1, 2, 3], &[1, 2, 3], &[1, 2, 3]);
        assert_eq!(v.may_promote(9), Err(KvError::LearnerNotReady));
        v.matched.insert(9, 95);
        assert_eq!(v.may_promote(9), Ok(()));
        v.strict = false;
        v.matched.insert(9, 10);
        assert_eq!(v.may_promote(9), Err(KvError::LearnerNotReady));
    }
}
