//! A ZAB follower: discovery with its leader, synchronization (DIFF, TRUNC or SNAP, then
//! NEWLEADER), and broadcast (proposals acknowledged only after they are durable, commits in
//! zxid order). A follower that sees a gap in the proposals registers again and is
//! synchronized anew; it never appends past a gap.

use super::*;

impl Zab {
    pub(super) fn resync(&mut self) {
        self.phase = Phase::FollowDiscovery;
        self.synced = false;
        self.elapsed = 0;
        let h = self.history();
        let leader = self.leader;
        self.send(leader, ZabBody::FollowerInfo(h));
    }

    pub(super) fn step_follower(&mut self, m: ZabMessage) {
        if m.from != self.leader {
            return;
        }
        if !matches!(m.body, ZabBody::NewEpoch) && m.epoch != self.accepted_epoch {
            return;
        }
        self.elapsed = 0;
        match m.body {
            ZabBody::NewEpoch => {
                let e = m.epoch;
                self.handshake_ticks = 0;
                if e > self.accepted_epoch {
                    self.accepted_epoch = e;
                    self.phase = Phase::FollowSync;
                    let history = self.history();
                    self.send_after_persist(
                        m.from,
                        ZabBody::AckEpoch {
                            fresh: true,
                            history,
                        },
                    );
                } else if e == self.accepted_epoch {
                    self.phase = Phase::FollowSync;
                    let history = self.history();
                    self.send_after_persist(
                        m.from,
                        ZabBody::AckEpoch {
                            fresh: false,
                            history,
                        },
                    );
                } else {
                    self.start_looking();
                }
            }
            ZabBody::Sync {
                truncate_from,
                snapshot,
                entries,
            } => {
                if self.phase != Phase::FollowSync {
                    return;
                }
                let stale = self.stale_sync(
                    m.epoch,
                    snapshot.as_ref().map(|(meta, _)| meta),
                    truncate_from,
                    &entries,
                );
                if !stale && !self.apply_sync(m.from, truncate_from, snapshot, &entries) {
                    self.start_looking();
                    return;
                }
                self.current_epoch = m.epoch;
                self.synced = true;
                self.handshake_ticks = 0;
                let last_index = self.st.log.last_index();
                self.send_after_persist(m.from, ZabBody::AckNewLeader { last_index });
            }
            ZabBody::UpToDate { commit } if self.phase == Phase::FollowSync && self.synced => {
                self.phase = Phase::FollowBroadcast;
                self.st.log.commit_to(commit.min(self.st.log.last_index()));
            }
            ZabBody::Proposal { entries, commit } => {
                // Only a synchronized log may be extended: before SYNC it may hold stale
                // entries that a proposal would seem to continue.
                if !self.synced {
                    return;
                }
                if entries
                    .first()
                    .is_some_and(|e| e.index > self.st.log.last_index() + 1)
                {
                    // A proposal went missing: register again and be synchronized.
                    self.resync();
                    return;
                }
                if !self.append(&entries) {
                    self.resync();
                    return;
                }
                if self.phase == Phase::FollowBroadcast {
                    self.st.log.commit_to(commit.min(self.st.log.last_index()));
                }
                let index = self.st.log.last_index();
                self.send_after_persist(m.from, ZabBody::Ack { index });
            }
            ZabBody::Commit { index } if self.phase == Phase::FollowBroadcast && self.synced => {
                self.st.log.commit_to(index.min(self.st.log.last_index()));
            }
            ZabBody::Ping { commit, ctx } => {
                if self.phase == Phase::FollowBroadcast && self.synced {
                    self.st.log.commit_to(commit.min(self.st.log.last_index()));
                }
                self.send(m.from, ZabBody::PingResp { ctx });
            }
            ZabBody::ReadIndexResp { ctx, index } => {
                self.st.read_states.push(ReadState { ctx, index })
            }
            _ => {}
        }
    }

    /// Whether a SYNC of `epoch` is an older copy of one already applied (resent, and
    /// delivered late): the log holds everything it carries, followed by entries of `epoch`.
    /// Only this epoch's leader makes those, and its log only grows, so they belong; applying
    /// the old SYNC would cut them after they may have been acknowledged.
    pub(super) fn stale_sync(
        &self,
        epoch: u64,
        snapshot: Option<&SnapshotMeta>,
        truncate_from: Option<u64>,
        entries: &[Entry],
    ) -> bool {
        let end = match (entries.last(), snapshot, truncate_from) {
            (Some(e), _, _) => e.index,
            (None, Some(s), _) => s.index,
            (None, None, Some(t)) => t.saturating_sub(1),
            (None, None, None) => return false,
        };
        let holds = |index: u64, term: u64| self.st.log.term(index) == Some(term);
        snapshot.is_none_or(|s| holds(s.index, s.term))
            && entries.iter().all(|e| holds(e.index, e.term))
            && self.st.log.term(end + 1) == Some(epoch)
    }

    /// Makes the log the leader's as a SYNC says (SNAP, TRUNC, DIFF); false when it cannot
    /// (it would cut committed entries, or the entries do not fit).
    pub(super) fn apply_sync(
        &mut self,
        leader: NodeId,
        truncate_from: Option<u64>,
        snapshot: Option<(SnapshotMeta, Vec<u8>)>,
        entries: &[Entry],
    ) -> bool {
        let mut truncate_from = truncate_from;
        if let Some((meta, data)) = snapshot
            && meta.index > self.st.log.committed
        {
            self.st.log.reset_to_snapshot(meta.index, meta.term);
            self.st.confs.reset(&meta);
            self.st.snapshot = meta.clone();
            self.st.install = Some((meta, data));
            truncate_from = None;
        }
        if let Some(t) = truncate_from.filter(|&t| t <= self.st.log.last_index()) {
            if t <= self.st.log.committed {
                tracing::warn!(leader, t, "zab: refusing to truncate committed entries");
                return false;
            }
            self.st.log.truncate_from(t);
            self.after_truncation(t);
        }
        self.append(entries)
    }

    /// Appends the leader's entries (dense; duplicates skipped; a conflict truncates).
    pub(super) fn append(&mut self, entries: &[Entry]) -> bool {
        let dense = entries.windows(2).all(|w| w[1].index == w[0].index + 1);
        if !dense
            || entries
                .first()
                .is_some_and(|e| e.index > self.st.log.last_index() + 1)
        {
            return false;
        }
        let conflict_below_commit = entries.iter().any(|e| {
            e.index <= self.st.log.committed
                && self.st.log.term(e.index).is_some_and(|t| t != e.term)
        });
        if conflict_below_commit {
            tracing::warn!("zab: leader sent entries that conflict with committed ones");
            return false;
        }
        let old_last = self.st.log.last_index();
        let conflict = self.st.log.append_after(entries);
        let from = match conflict {
            Some(c) => {
                self.after_truncation(c);
                c
            }
            None => old_last + 1,
        };
        for e in entries.iter().filter(|e| e.index >= from) {
            self.note_conf_entry(e);
        }
        true
    }
}
