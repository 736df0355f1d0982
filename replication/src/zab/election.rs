//! ZAB's fast leader election: notification rounds in which votes are ordered by current
//! epoch, last zxid and id, a finalize wait before a decided vote is final, and the step from
//! a decision to leading or following. It decides who leads; it never changes the log.

use super::*;

impl Zab {
    pub(super) fn start_looking(&mut self) {
        self.phase = Phase::Looking;
        self.synced = false;
        self.leader = 0;
        self.round += 1;
        self.vote = self.own_vote();
        self.votes.clear();
        if self.is_voter() {
            self.votes.insert(self.id, self.vote);
        }
        self.finalize = None;
        self.elapsed = 0;
        self.peers.clear();
        self.reads.clear();
        self.reads_waiting.clear();
        self.uncommitted_bytes = 0;
        self.bcast_pending = false;
        self.broadcast_notification();
    }

    pub(super) fn broadcast_notification(&mut self) {
        let voters: Vec<NodeId> = self.conf().voters.clone();
        for v in voters {
            if v != self.id {
                let (round, vote) = (self.round, self.vote);
                self.send(
                    v,
                    ZabBody::Notification {
                        round,
                        state: PeerState::Looking,
                        vote,
                    },
                );
            }
        }
    }

    pub(super) fn peer_state(&self) -> PeerState {
        match self.phase {
            Phase::Looking => PeerState::Looking,
            Phase::FollowDiscovery | Phase::FollowSync | Phase::FollowBroadcast => {
                PeerState::Following
            }
            _ => PeerState::Leading,
        }
    }

    pub(super) fn on_notification(&mut self, from: NodeId, round: u64, state: PeerState, v: Vote) {
        if self.phase != Phase::Looking {
            if state == PeerState::Looking && from == self.leader && from != self.id {
                // Our leader is electing again: it no longer leads.
                self.start_looking();
                return;
            }
            if self.phase == Phase::LeadBroadcast
                && state != PeerState::Looking
                && v.epoch > self.accepted_epoch
                && self.conf().is_voter(from)
            {
                // A voter accepted a newer epoch, which took a quorum that no longer acks
                // this one: nothing more can commit here.
                self.start_looking();
                return;
            }
            if state == PeerState::Looking {
                // Tell a looking peer who leads.
                let vote = Vote {
                    leader: self.leader,
                    epoch: self.accepted_epoch,
                    ..self.own_vote()
                };
                let my_state = self.peer_state();
                self.send(
                    from,
                    ZabBody::Notification {
                        round,
                        state: my_state,
                        vote,
                    },
                );
            }
            return;
        }
        match state {
            PeerState::Looking => {
                if round > self.round {
                    self.round = round;
                    self.votes.clear();
                    self.vote = self.own_vote().max(v);
                    if self.is_voter() {
                        self.votes.insert(self.id, self.vote);
                    }
                    self.finalize = None;
                    self.broadcast_notification();
                } else if round < self.round {
                    let (r, vote) = (self.round, self.vote);
                    self.send(
                        from,
                        ZabBody::Notification {
                            round: r,
                            state: PeerState::Looking,
                            vote,
                        },
                    );
                    return;
                } else if v > self.vote {
                    self.vote = v;
                    if self.is_voter() {
                        self.votes.insert(self.id, self.vote);
                    }
                    self.finalize = None;
                    self.broadcast_notification();
                }
                if self.conf().is_voter(from) {
                    self.votes.insert(from, v);
                }
                let agree = self
                    .votes
                    .values()
                    .filter(|x| x.leader == self.vote.leader && **x == self.vote)
                    .count();
                if agree >= self.conf().quorum() && self.finalize.is_none() {
                    self.finalize = Some(self.cfg.finalize_ticks);
                }
            }
            PeerState::Leading if v.leader == from => self.follow(from),
            PeerState::Following | PeerState::Leading if v.leader != 0 && v.leader != self.id => {
                // Ask the leader it names; it answers with a Leading notification.
                let (r, vote) = (self.round, self.vote);
                self.send(
                    v.leader,
                    ZabBody::Notification {
                        round: r,
                        state: PeerState::Looking,
                        vote,
                    },
                );
            }
            _ => {}
        }
    }

    pub(super) fn decide(&mut self) {
        let leader = self.vote.leader;
        if leader == self.id {
            if self.is_voter() {
                self.lead();
            } else {
                self.start_looking();
            }
        } else {
            self.follow(leader);
        }
    }

    pub(super) fn follow(&mut self, leader: NodeId) {
        self.phase = Phase::FollowDiscovery;
        self.synced = false;
        self.leader = leader;
        self.elapsed = 0;
        self.peers.clear();
        let h = self.history();
        self.send(leader, ZabBody::FollowerInfo(h));
    }
}
