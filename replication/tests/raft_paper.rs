//! Raft scenarios, each citing the sentence of the Raft paper (or thesis) it checks, driven
//! step by step on a synchronous in-memory network.

use quorumkv_replication::harness::Network;
use quorumkv_replication::raft::{Raft, RaftBody, RaftConfig, RaftMessage};
use quorumkv_replication::{
    Conf, ConfChange, Entry, EntryKind, ProposeError, Protocol, Restored, Role,
};

fn cfg(seed: u64) -> RaftConfig {
    RaftConfig {
        seed,
        ..RaftConfig::default()
    }
}

fn cluster(n: u64) -> Network<Raft> {
    let conf = Conf::new(1..=n);
    Network::new(
        (1..=n)
            .map(|id| Raft::new(id, cfg(id), conf.clone(), Restored::default()))
            .collect(),
    )
}

/// Elects `id` by letting only it time out.
fn elect(net: &mut Network<Raft>, id: u64) {
    net.tick(id, 25);
    assert_eq!(
        net.node(id).status().role,
        Role::Leader,
        "node {id} should lead"
    );
}

fn leader_of(net: &mut Network<Raft>) -> Option<u64> {
    let ids: Vec<u64> = net.nodes.keys().copied().collect();
    ids.into_iter().find(|&i| {
        net.nodes[&i]
            .as_ref()
            .is_some_and(|p| p.status().role == Role::Leader)
    })
}

#[test]
fn follower_times_out_and_starts_an_election() {
    // §5.2: "If a follower receives no communication over a period of time called the election
    // timeout, then it assumes there is no viable leader and begins an election".
    let mut net = cluster(3);
    elect(&mut net, 1);
    let st = net.node(1).status();
    assert_eq!(st.term, 1);
    // Everyone applied the new leader's empty entry: it committed.
    for id in 1..=3 {
        assert_eq!(net.applied[&id].len(), 1);
        assert_eq!(net.applied[&id][0].kind, EntryKind::Noop);
    }
}

#[test]
fn a_server_votes_at_most_once_per_term() {
    // §5.2: "each server will vote for at most one candidate in a given term, on a
    // first-come-first-served basis".
    let mut net = cluster(3);
    let vote = |from: u64, term: u64| RaftMessage {
        from,
        to: 3,
        term,
        body: RaftBody::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    };
    net.node(3).step(vote(1, 5));
    let r = net.node(3).ready();
    assert_eq!(
        r.messages_after_persist[0].body,
        RaftBody::VoteResp { reject: false }
    );
    assert_eq!(
        r.hard_state.map(|h| h.vote),
        Some(1),
        "the vote is persisted before it is sent"
    );
    net.node(3).step(vote(2, 5));
    let r = net.node(3).ready();
    assert_eq!(
        r.messages_after_persist[0].body,
        RaftBody::VoteResp { reject: true }
    );
}

#[test]
fn a_voter_denies_a_candidate_with_an_older_log() {
    // §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
    // candidate".
    let entries = vec![Entry {
        term: 2,
        index: 1,
        kind: EntryKind::Normal,
        data: vec![],
    }];
    let restored = Restored {
        entries,
        ..Restored::default()
    };
    let mut r = Raft::new(3, cfg(3), Conf::new([1, 2, 3]), restored);
    r.step(RaftMessage {
        from: 1,
        to: 3,
        term: 3,
        body: RaftBody::Vote {
            last_index: 5,
            last_term: 1,
            transfer: false,
        },
    });
    let out = r.ready();
    assert_eq!(
        out.messages_after_persist[0].body,
        RaftBody::VoteResp { reject: true }
    );
}

#[test]
fn inconsistent_follower_logs_are_repaired_by_the_leader() {
    // §5.3: "If an existing entry conflicts with a new one (same index but different terms),
    // delete the existing entry and all that follow it".
    let conf = Conf::new([1, 2, 3]);
    let stale = |t: u64| {
        (1..=4)
            .map(|i| Entry {
                term: t,
                index: i,
                kind: EntryKind::Normal,
                data: vec![i as u8],
            })
            .collect::<Vec<_>>()
    };
    // Node 3 holds uncommitted entries of an old term-1 leader; nodes 1 and 2 have term 2.
    let mk = |id: u64, entries: Vec<Entry>, term: u64| {
        let restored = Restored {
            entries,
            hard_state: quorumkv_replication::HardState {
                term,
                vote: 0,
                current_epoch: 0,
            },
            ..Restored::default()
        };
        (
            Raft::new(id, cfg(id), conf.clone(), restored.clone()),
            restored,
        )
    };
    let mut net = Network::restored(vec![
        mk(1, stale(2)[..2].to_vec(), 2),
        mk(2, stale(2)[..2].to_vec(), 2),
        mk(3, stale(1), 1),
    ]);
    elect(&mut net, 1);
    net.node(1).propose(b"x".to_vec()).unwrap();
    net.settle();
    let l1 = net.node(1).log_entries(1);
    let l3 = net.node(3).log_entries(1);
    assert_eq!(l1, l3, "the follower's conflicting suffix was replaced");
    assert_eq!(net.applied_data(3).last().unwrap(), b"x");
}

#[test]
fn figure_8_old_term_entries_never_commit_by_counting() {
    // §5.4.2: "Raft never commits log entries from previous terms by counting replicas. Only
    // log entries from the leader's current term are committed by counting replicas".
    let conf = Conf::new([1, 2, 3, 4, 5]);
    let restored = |entries: Vec<Entry>, term: u64| Restored {
        entries,
        hard_state: quorumkv_replication::HardState {
            term,
            vote: 0,
            current_epoch: 0,
        },
        ..Restored::default()
    };
    let e = |i: u64, t: u64| Entry {
        term: t,
        index: i,
        kind: EntryKind::Normal,
        data: vec![t as u8],
    };
    // The state of figure 8 (c): S1 holds (2, term 2) also on S2 and S3; S5 holds (2, term 3).
    let logs = [
        vec![e(1, 1), e(2, 2)],
        vec![e(1, 1), e(2, 2)],
        vec![e(1, 1)],
        vec![e(1, 1)],
        vec![e(1, 1), e(2, 3)],
    ];
    let nodes = logs
        .iter()
        .enumerate()
        .map(|(k, log)| {
            let id = k as u64 + 1;
            let r = restored(log.clone(), 3);
            (Raft::new(id, cfg(id), conf.clone(), r.clone()), r)
        })
        .collect();
    let mut net = Network::restored(nodes);
    net.isolate(5);
    // S1 wins term 4 with votes from S2, S3 (and S4).
    net.tick(1, 25);
    assert_eq!(net.node(1).status().role, Role::Leader);
    assert_eq!(net.node(1).status().term, 4);
    // Once (2, term 2) is on a majority but the term-4 entry is not, nothing commits.
    let st = net.node(1).status();
    assert!(
        st.commit >= 3,
        "the term-4 entry committed and carried index 2 with it"
    );
    assert!(
        net.node(1)
            .log_entries(1)
            .iter()
            .any(|e| e.index == 3 && e.term == 4)
    );
    // And now S5 can never win: its (2, term 3) is behind a committed term-4 entry.
    net.heal();
    net.tick_all(40);
    assert_ne!(net.node(5).status().role, Role::Leader);
    assert_eq!(
        net.node(5).log_entries(2)[0].term,
        2,
        "S5's entry was overwritten"
    );
}

#[test]
fn figure_8_commit_waits_for_a_current_term_entry() {
    // The same rule seen in the leader's counting: with only the old-term entry acknowledged
    // by a majority, the commit index must not move.
    let e = |i: u64, t: u64| Entry {
        term: t,
        index: i,
        kind: EntryKind::Normal,
        data: vec![],
    };
    let restored = Restored {
        entries: vec![e(1, 2)],
        hard_state: quorumkv_replication::HardState {
            term: 2,
            vote: 0,
            current_epoch: 0,
        },
        ..Restored::default()
    };
    let mut r = Raft::new(1, cfg(1), Conf::new([1, 2, 3]), restored);
    let msg = |term: u64, body: RaftBody| RaftMessage {
        from: 2,
        to: 1,
        term,
        body,
    };
    while r.status().role != Role::PreCandidate {
        r.tick();
    }
    let _ = r.ready();
    r.step(msg(3, RaftBody::PreVoteResp { reject: false }));
    assert_eq!(r.status().role, Role::Candidate);
    let _ = r.ready();
    r.persisted(1, 2); // our own vote is durable
    r.step(msg(3, RaftBody::VoteResp { reject: false }));
    assert_eq!(r.status().role, Role::Leader);
    let out = r.ready();
    assert_eq!(
        out.entries
            .iter()
            .map(|e| (e.index, e.term))
            .collect::<Vec<_>>(),
        vec![(2, 3)]
    );
    r.persisted(2, 3);
    r.step(msg(
        3,
        RaftBody::AppendResp {
            reject: false,
            index: 1,
            hint: 0,
        },
    ));
    assert_eq!(
        r.status().commit,
        0,
        "entry 1 (term 2) is on a majority but must not commit"
    );
    r.step(msg(
        3,
        RaftBody::AppendResp {
            reject: false,
            index: 2,
            hint: 0,
        },
    ));
    assert_eq!(
        r.status().commit,
        2,
        "committing the term-3 entry commits entry 1 too"
    );
}

#[test]
fn a_partitioned_leader_steps_down_and_its_entries_are_replaced() {
    // Thesis 6.2 (CheckQuorum): a leader that cannot reach a majority steps down after an
    // election timeout; §5.3 then overwrites its uncommitted entries.
    let mut net = cluster(3);
    elect(&mut net, 1);
    net.isolate(1);
    net.node(1).propose(b"lost".to_vec()).unwrap();
    net.settle();
    net.tick_all(25);
    assert_ne!(net.node(1).status().role, Role::Leader);
    let new = leader_of(&mut net).expect("the majority elected a leader");
    assert_ne!(new, 1);
    net.node(new).propose(b"kept".to_vec()).unwrap();
    net.settle();
    net.heal();
    net.tick_all(5);
    assert_eq!(net.applied_data(1), vec![b"kept".to_vec()]);
    assert!(!net.node(1).log_entries(1).iter().any(|e| e.data == b"lost"));
}

#[test]
fn read_index_needs_a_quorum_round() {
    // Thesis 6.4: the leader "needs to make sure it hasn't been superseded by a newer leader
    // ... by exchanging heartbeat messages with a majority".
    let mut net = cluster(3);
    elect(&mut net, 1);
    net.node(1).read_index(7).unwrap();
    net.settle();
    assert_eq!(net.reads[&1].len(), 1);
    assert_eq!(net.reads[&1][0].ctx, 7);
    // A follower asks the leader.
    net.node(2).read_index(8).unwrap();
    net.settle();
    assert_eq!(net.reads[&2][0].ctx, 8);
    // An isolated leader gets no answer.
    net.isolate(1);
    net.node(1).read_index(9).unwrap();
    net.settle();
    assert_eq!(net.reads[&1].len(), 1, "no read state without a quorum");
}

#[test]
fn pre_vote_keeps_a_rejoining_node_from_disrupting_the_leader() {
    // Thesis 9.6: "the Pre-Vote algorithm ... a candidate only increments its term if it first
    // learns from a majority of the cluster that they would be willing to grant it their votes".
    let mut net = cluster(3);
    elect(&mut net, 1);
    net.isolate(3);
    net.tick(3, 100);
    assert_eq!(
        net.node(3).status().term,
        1,
        "pre-votes did not raise the term"
    );
    net.heal();
    net.tick_all(3);
    assert_eq!(net.node(1).status().role, Role::Leader);
    assert_eq!(net.node(1).status().term, 1);
}

#[test]
fn leadership_transfer_hands_over() {
    // Thesis 3.10: "the prior leader sends a TimeoutNow request to the target server".
    let mut net = cluster(3);
    elect(&mut net, 1);
    net.node(1).transfer_leader(2).unwrap();
    net.settle();
    assert_eq!(net.node(2).status().role, Role::Leader);
    assert_eq!(net.node(1).status().role, Role::Follower);
}

#[test]
fn membership_changes_one_at_a_time() {
    // Thesis 4.1: "the leader ... does not allow any further configuration changes until the
    // first one has committed".
    let conf = Conf::new([1, 2, 3]);
    let mut nodes: Vec<Raft> = (1..=3)
        .map(|id| Raft::new(id, cfg(id), conf.clone(), Restored::default()))
        .collect();
    // Node 4 starts knowing it is not yet a member.
    nodes.push(Raft::new(
        4,
        cfg(4),
        Conf::new([1, 2, 3]),
        Restored::default(),
    ));
    let mut net = Network::new(nodes);
    elect(&mut net, 1);
    net.node(1)
        .propose_conf_change(ConfChange::AddLearner(4))
        .unwrap();
    assert_eq!(
        net.node(1).propose_conf_change(ConfChange::Remove(3)),
        Err(ProposeError::ConfChangePending)
    );
    net.settle();
    net.node(1).propose(b"to the learner".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.applied_data(4), vec![b"to the learner".to_vec()]);
    assert_eq!(net.node(4).status().role, Role::Learner);
    net.node(1)
        .propose_conf_change(ConfChange::PromoteLearner(4))
        .unwrap();
    net.settle();
    assert!(net.node(1).status().conf.is_voter(4));
    net.node(1)
        .propose_conf_change(ConfChange::Remove(3))
        .unwrap();
    net.settle();
    assert_eq!(net.node(1).status().conf.voters, vec![1, 2, 4]);
    // The new majority (2 of 3) commits without node 3.
    net.isolate(3);
    net.node(1).propose(b"without 3".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.applied_data(4).last().unwrap(), b"without 3");
}

#[test]
fn a_follower_behind_the_compacted_log_gets_a_snapshot() {
    // §7: "the leader must occasionally send snapshots to followers that lag behind".
    let mut net = cluster(3);
    elect(&mut net, 1);
    net.isolate(3);
    for i in 0..20u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.settle();
    let st = net.node(1).status();
    let meta = quorumkv_replication::SnapshotMeta {
        index: st.applied,
        term: st.term,
        conf: st.conf.clone(),
    };
    net.snapshots.insert(1, (meta.clone(), b"state".to_vec()));
    net.node(1).compact(meta.clone());
    assert!(
        net.node(1)
            .log_entries(0)
            .first()
            .is_none_or(|e| e.index > meta.index)
    );
    net.heal();
    net.tick_all(3);
    assert_eq!(
        net.snapshots.get(&3).map(|s| s.0.index),
        Some(meta.index),
        "node 3 installed the snapshot"
    );
    net.node(1).propose(b"after".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.applied_data(3).last().unwrap(), b"after");
}

#[test]
fn stale_term_messages_are_ignored() {
    // §5.1: "If a server receives a request with a stale term number, it rejects the request."
    let mut net = cluster(3);
    elect(&mut net, 1);
    net.node(1).transfer_leader(2).unwrap();
    net.settle();
    let old = RaftMessage {
        from: 1,
        to: 3,
        term: 1,
        body: RaftBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry {
                term: 1,
                index: 1,
                kind: EntryKind::Normal,
                data: b"evil".to_vec(),
            }],
            commit: 1,
        },
    };
    net.node(3).step(old);
    net.settle();
    assert!(net.applied_data(3).iter().all(|d| d != b"evil"));
}

#[test]
fn a_follower_hands_proposals_to_its_leader_in_its_term() {
    // etcd-raft's forwarded MsgProp: the leader appends them in its term, and they commit
    // like its own.
    let mut net = cluster(3);
    elect(&mut net, 1);
    assert_eq!(
        net.node(1).forward(vec![b"x".to_vec()]),
        Err(ProposeError::NotLeader { leader: 1 }),
        "the leader proposes its own"
    );
    assert_eq!(
        net.node(2).forward(vec![b"a".to_vec(), b"b".to_vec()]),
        Ok(1)
    );
    net.settle();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(net.applied[&id].iter().all(|e| e.term == 1));
    }
    // A batch sent in an older term is dropped by the newer leader: a forwarded proposal
    // commits in the term it was sent in or not at all.
    net.isolate(1);
    net.tick_all(25);
    let new = leader_of(&mut net).expect("the others elect a leader");
    assert_ne!(new, 1);
    assert!(net.node(new).status().term > 1);
    net.deliver(RaftMessage {
        from: 5 - new,
        to: new,
        term: 1,
        body: RaftBody::Forward {
            batch: vec![b"stale".to_vec()],
        },
    });
    net.settle();
    for id in 2..=3 {
        assert_eq!(net.applied_data(id).len(), 2, "node {id}");
    }
    // With no leader known there is no one to hand it to.
    let other = 5 - new;
    net.isolate(other);
    net.tick(other, 60);
    assert!(matches!(
        net.node(other).forward(vec![b"c".to_vec()]),
        Err(ProposeError::NotLeader { leader: 0 })
    ));
}

/// Ticks until `r`, never hearing from anyone, starts campaigning.
fn ticks_to_campaign(r: &mut Raft) -> u32 {
    for t in 1..=100 {
        r.tick();
        if r.status().role != Role::Follower {
            return t;
        }
    }
    panic!("never campaigned");
}

#[test]
fn a_started_member_campaigns_sooner_with_its_election_clock_advanced() {
    // Beyond the paper: etcd's --initial-election-tick-advance. A restarted cluster elects
    // after 2 to election_tick + 2 ticks instead of election_tick to twice that; a sole voter
    // campaigns at its first tick.
    let e = RaftConfig::default().election_tick;
    let conf = Conf::new(1..=3);
    let (mut plain, mut advanced) = (Vec::new(), Vec::new());
    for seed in 0..64 {
        let start = |advance| {
            let c = RaftConfig {
                election_tick_advance: advance,
                ..cfg(seed)
            };
            Raft::new(1, c, conf.clone(), Restored::default())
        };
        plain.push(ticks_to_campaign(&mut start(false)));
        advanced.push(ticks_to_campaign(&mut start(true)));
    }
    assert!(plain.iter().all(|&t| (e..2 * e).contains(&t)), "{plain:?}");
    assert!(
        advanced.iter().all(|&t| (2..e + 2).contains(&t)),
        "{advanced:?}"
    );
    let sole = RaftConfig {
        election_tick_advance: true,
        ..cfg(7)
    };
    let mut alone = Network::new(vec![Raft::new(
        1,
        sole,
        Conf::new([1]),
        Restored::default(),
    )]);
    alone.tick(1, 1);
    assert_eq!(alone.node(1).status().role, Role::Leader);
    // A learner never campaigns, advanced or not.
    let mut learner = Raft::new(
        4,
        RaftConfig {
            election_tick_advance: true,
            ..cfg(4)
        },
        Conf {
            learners: vec![4],
            ..conf.clone()
        },
        Restored::default(),
    );
    for _ in 0..3 * e {
        learner.tick();
    }
    assert_eq!(learner.status().role, Role::Learner);
}
