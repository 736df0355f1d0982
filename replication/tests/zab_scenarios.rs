//! ZAB's hard cases, step by step on a synchronous in-memory network.

use quorumkv_replication::harness::Network;
use quorumkv_replication::zab::{PeerState, Vote, Zab, ZabBody, ZabConfig, ZabMessage};
use quorumkv_replication::{
    Conf, ConfChange, Entry, EntryKind, HardState, ProposeError, Protocol, Restored, Role,
};

fn node(id: u64, conf: &Conf, entries: Vec<Entry>, epoch: u64) -> (Zab, Restored) {
    let restored = Restored {
        entries,
        hard_state: HardState {
            term: epoch,
            vote: 0,
            current_epoch: epoch,
        },
        ..Restored::default()
    };
    (
        Zab::new(
            id,
            ZabConfig {
                seed: id,
                ..ZabConfig::default()
            },
            conf.clone(),
            restored.clone(),
        ),
        restored,
    )
}

/// Every member of `conf`, with empty logs.
fn empty_cluster(conf: &Conf) -> Network<Zab> {
    let mut ids = conf.voters.clone();
    ids.extend(&conf.learners);
    Network::restored(
        ids.into_iter()
            .map(|id| node(id, conf, vec![], 0))
            .collect(),
    )
}

fn e(index: u64, epoch: u64, data: &[u8]) -> Entry {
    Entry {
        term: epoch,
        index,
        kind: EntryKind::Normal,
        data: data.to_vec(),
    }
}

fn leader(net: &mut Network<Zab>) -> Option<u64> {
    let ids: Vec<u64> = net.nodes.keys().copied().collect();
    ids.into_iter().find(|&i| {
        net.nodes[&i]
            .as_ref()
            .is_some_and(|p| p.status().role == Role::Leader)
    })
}

fn run(net: &mut Network<Zab>, ticks: u32) -> u64 {
    for _ in 0..ticks {
        net.tick_all(1);
        if let Some(l) = leader(net) {
            net.tick_all(2);
            return l;
        }
    }
    panic!("no leader established");
}

#[test]
fn fast_leader_election_picks_the_most_recent_history() {
    // FLE orders votes by (epoch, last zxid, server id): the node with the longest history of
    // the newest epoch wins even against higher ids.
    let conf = Conf::new([1, 2, 3]);
    let h = |n: u64| (1..=n).map(|i| e(i, 1, b"x")).collect::<Vec<_>>();
    let mut net = Network::restored(vec![
        node(1, &conf, h(2), 1),
        node(2, &conf, h(4), 1),
        node(3, &conf, h(3), 1),
    ]);
    assert_eq!(run(&mut net, 50), 2);
    // Its initial history was committed on establishment and reached everyone, followed by
    // the new epoch's empty entry.
    let st = net.node(1).status();
    assert_eq!(st.term, 2, "a new epoch");
    for id in 1..=3 {
        let log = net.node(id).log_entries(1);
        assert_eq!(log.len(), 5);
        assert_eq!((log[4].kind, log[4].term), (EntryKind::Noop, 2));
    }
}

#[test]
fn a_follower_with_uncommitted_proposals_of_an_old_epoch_is_truncated() {
    // Node 3 led epoch 1 and proposed 3 and 4 that never reached anyone; nodes 1 and 2 moved
    // on to epoch 2 and committed different entries at 3 and 4. When node 3 rejoins, the
    // leader's TRUNC removes its proposals before the DIFF.
    let conf = Conf::new([1, 2, 3]);
    let base = vec![e(1, 1, b"a"), e(2, 1, b"b")];
    let mut old = base.clone();
    old.extend([e(3, 1, b"stale"), e(4, 1, b"stale")]);
    let mut newer = base.clone();
    newer.extend([e(3, 2, b"c"), e(4, 2, b"d")]);
    let mut net = Network::restored(vec![
        node(1, &conf, newer.clone(), 2),
        node(2, &conf, newer, 2),
        node(3, &conf, old, 1),
    ]);
    net.isolate(3);
    let l = run(&mut net, 60);
    assert_ne!(l, 3);
    net.node(l).propose(b"e".to_vec()).unwrap();
    net.settle();
    net.heal();
    for _ in 0..60 {
        net.tick_all(1);
    }
    let log3: Vec<Vec<u8>> = net
        .node(3)
        .log_entries(1)
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert!(
        !log3.iter().any(|d| d == b"stale"),
        "old-epoch proposals were truncated"
    );
    assert_eq!(net.node(3).log_entries(1), net.node(l).log_entries(1));
    assert_eq!(net.applied_data(3).last().unwrap(), b"e");
}

#[test]
fn a_node_missing_a_committed_proposal_cannot_lead() {
    // Entry 2 is committed (on nodes 1 and 2); node 3 lacks it. With node 1 gone, nodes 2 and
    // 3 form the quorum: node 3 may not lead (its vote loses, and discovery would see a
    // follower ahead of it), so node 2 leads and entry 2 survives.
    let conf = Conf::new([1, 2, 3]);
    let full = vec![e(1, 1, b"a"), e(2, 1, b"committed")];
    let short = vec![e(1, 1, b"a")];
    let mut net = Network::restored(vec![
        node(1, &conf, full.clone(), 1),
        node(2, &conf, full, 1),
        node(3, &conf, short, 1),
    ]);
    net.isolate(1);
    assert_eq!(run(&mut net, 80), 2);
    net.node(2).propose(b"next".to_vec()).unwrap();
    net.settle();
    assert_eq!(
        net.applied_data(3),
        vec![b"a".to_vec(), b"committed".to_vec(), b"next".to_vec()]
    );
}

#[test]
fn established_leader_broadcasts_and_reads_need_a_quorum() {
    let mut net = empty_cluster(&Conf::new([1, 2, 3]));
    let l = run(&mut net, 60);
    for i in 0..10u8 {
        net.node(l).propose(vec![i]).unwrap();
    }
    net.settle();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id).len(), 10);
    }
    net.node(l).read_index(5).unwrap();
    net.settle();
    assert_eq!(net.reads[&l].len(), 1);
    // Followers ask the leader (a sync barrier).
    let f = if l == 1 { 2 } else { 1 };
    net.node(f).read_index(6).unwrap();
    net.settle();
    assert_eq!(net.reads[&f][0].ctx, 6);
    // A leader cut off from everyone answers no read.
    net.isolate(l);
    net.node(l).read_index(7).unwrap();
    net.settle();
    assert_eq!(net.reads[&l].len(), 1);
}

#[test]
fn observers_receive_commits_without_voting() {
    let conf = Conf {
        voters: vec![1, 2, 3],
        learners: vec![4],
    };
    let mut net = empty_cluster(&conf);
    let l = run(&mut net, 60);
    net.tick_all(20);
    net.node(l).propose(b"to all".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.applied_data(4), vec![b"to all".to_vec()]);
    assert_eq!(net.node(4).status().role, Role::Learner);
    // Two voters down: the observer does not make a quorum.
    let others: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    net.isolate(others[0]);
    net.isolate(others[1]);
    net.node(l).propose(b"stuck".to_vec()).unwrap();
    net.settle();
    assert!(!net.applied_data(4).contains(&b"stuck".to_vec()));
}

#[test]
fn membership_changes_go_through_the_log() {
    let mut net = empty_cluster(&Conf::new([1, 2, 3]));
    let l = run(&mut net, 60);
    let victim = if l == 3 { 2 } else { 3 };
    net.node(l)
        .propose_conf_change(ConfChange::Remove(victim))
        .unwrap();
    net.settle();
    assert!(!net.node(l).status().conf.is_voter(victim));
    net.isolate(victim);
    net.node(l).propose(b"two voters".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.applied_data(l).last().unwrap(), b"two voters");
}

#[test]
fn a_single_voter_elects_itself() {
    use quorumkv_replication::zab::{Zab, ZabConfig};
    use quorumkv_replication::{Conf, Protocol, Restored, Role};
    let mut z = Zab::new(1, ZabConfig::default(), Conf::new([1]), Restored::default());
    let persist_all = |z: &mut Zab| {
        let last = z.status().last_index;
        let term = z.log_entries(last).first().map_or(0, |e| e.term);
        z.persisted(last, term);
    };
    for _ in 0..200 {
        z.tick();
        while z.has_ready() {
            let _ = z.ready();
            persist_all(&mut z);
        }
        if z.status().role == Role::Leader {
            break;
        }
    }
    assert_eq!(z.status().role, Role::Leader);
    let index = z.propose(b"x".to_vec()).unwrap();
    let mut committed = false;
    for _ in 0..10 {
        let r = z.ready();
        persist_all(&mut z);
        committed |= r.committed.iter().any(|e| e.index == index);
        if committed {
            break;
        }
    }
    assert!(committed, "a lone voter commits its own proposals");
}

#[test]
fn a_paused_leader_that_resumes_steps_down_at_once() {
    let mut net = empty_cluster(&Conf::new([1, 2, 3]));
    let old = run(&mut net, 60);
    let epoch = net.node(old).status().term;
    // The leader is paused: it neither ticks nor hears anything while the others elect.
    net.isolate(old);
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    let new = (0..200)
        .find_map(|_| {
            for &i in &others {
                net.tick(i, 1);
            }
            others
                .iter()
                .copied()
                .find(|&i| net.node(i).status().role == Role::Leader)
        })
        .expect("the others elect a leader");
    for _ in 0..3 {
        for &i in &others {
            net.tick(i, 1);
        }
    }
    assert!(net.node(new).status().term > epoch);
    assert_eq!(
        net.node(old).status().role,
        Role::Leader,
        "still believes it leads"
    );
    // It resumes: its first broadcast is answered with the newer epoch, and it steps down
    // long before its quorum timeout would have told it.
    net.heal();
    net.tick(old, 1);
    assert_ne!(net.node(old).status().role, Role::Leader);
    for _ in 0..10 {
        net.tick_all(1);
    }
    assert_eq!(net.node(old).status().leader, new, "follows the new leader");
    net.node(old).read_index(9).unwrap();
    net.settle();
    assert!(
        net.reads[&old].iter().any(|r| r.ctx == 9),
        "its reads are answered"
    );
}

#[test]
fn a_follower_hands_requests_to_its_leader_in_its_epoch() {
    let mut net = empty_cluster(&Conf::new([1, 2, 3]));
    let l = run(&mut net, 60);
    let epoch = net.node(l).status().term;
    assert!(matches!(
        net.node(l).forward(vec![b"x".to_vec()]),
        Err(ProposeError::NotLeader { leader }) if leader == l
    ));
    let f = if l == 1 { 2 } else { 1 };
    assert_eq!(
        net.node(f).forward(vec![b"a".to_vec(), b"b".to_vec()]),
        Ok(epoch)
    );
    net.settle();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id), vec![b"a".to_vec(), b"b".to_vec()]);
    }
    // A REQUEST of another epoch is dropped.
    net.deliver(ZabMessage {
        from: f,
        to: l,
        epoch: epoch - 1,
        body: ZabBody::Request {
            batch: vec![b"stale".to_vec()],
        },
    });
    net.settle();
    for id in 1..=3 {
        assert_eq!(net.applied_data(id).len(), 2, "node {id}");
    }
}

#[test]
fn a_late_copy_of_an_older_sync_does_not_cut_entries_of_the_epoch() {
    // A leader resends an unacknowledged SYNC; its log grows meanwhile (its first entry of
    // the epoch, a forwarded write), so a newer SYNC carries more. If the older copy arrives
    // last, applying it would cut entries the follower already acknowledged to the leader.
    let conf = Conf::new([1, 2, 3]);
    let (mut f, _) = node(
        1,
        &conf,
        vec![e(1, 1, b"a"), e(2, 1, b"b"), e(3, 1, b"old")],
        1,
    );
    let from_leader = |body| ZabMessage {
        from: 2,
        to: 1,
        epoch: 2,
        body,
    };
    f.step(from_leader(ZabBody::Notification {
        round: 1,
        state: PeerState::Leading,
        vote: Vote {
            epoch: 2,
            last_term: 1,
            last_index: 2,
            leader: 2,
        },
    }));
    f.step(from_leader(ZabBody::NewEpoch));
    // The leader holds entries 1 and 2 of epoch 1, then its own entry 3 of epoch 2.
    let older = from_leader(ZabBody::Sync {
        truncate_from: Some(3),
        snapshot: None,
        entries: vec![],
    });
    let newer = from_leader(ZabBody::Sync {
        truncate_from: Some(3),
        snapshot: None,
        entries: vec![e(3, 2, b"new")],
    });
    f.step(newer);
    f.step(older);
    let log = f.log_entries(1);
    assert_eq!(log.len(), 3, "the epoch's entry is kept");
    assert_eq!((log[2].term, log[2].data.as_slice()), (2, &b"new"[..]));
    let acks: Vec<u64> = f
        .ready()
        .messages_after_persist
        .iter()
        .filter_map(|m| match m.body {
            ZabBody::AckNewLeader { last_index } => Some(last_index),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks,
        vec![3, 3],
        "both answers acknowledge what the log holds"
    );
    // A SYNC the log does not already hold still applies in full, truncation included.
    f.step(from_leader(ZabBody::Sync {
        truncate_from: Some(2),
        snapshot: None,
        entries: vec![e(2, 2, b"c")],
    }));
    let log = f.log_entries(1);
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].data, b"c");
}
