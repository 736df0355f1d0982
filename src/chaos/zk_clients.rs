//! ZooKeeper clients under faults: sessions on the members' ZooKeeper ports, each with an
//! ephemeral znode, doing sets (plain and conditional on the version read), reads with and
//! without watches, sequential creates, creates and deletes of plain znodes, and checks that
//! their ephemeral is still there. A session whose member fails moves to another member with
//! its id and password and re-arms its watches (setWatches from the last zxid it saw), as
//! ZooKeeper's clients do; one that cannot move within its timeout, or that the cluster says
//! expired, is abandoned, and the client opens another.
//!
//! The checks: the registers' writes (sets and conditional sets) with a final read of each,
//! after a sync, are linearizable; each session's reads never go back in time, moves
//! included, and show its own writes (ZooKeeper serves reads from the member a session is on,
//! so reads across sessions are only sequentially consistent, and are not checked as
//! linearizable); the ephemeral of a session that is still answering is never missing; a
//! watch notification never arrives after a reply that already shows the change it announces;
//! sequential names are unique and gap-free under their parent with every acknowledged one
//! present; every acknowledged create is there until its delete is acknowledged, and gone
//! after; once the run is over and sessions have had time to expire, no ephemeral is left.
//! This module never judges the etcd workload.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorumkv_replication::checker::{self, Op, OpKind, OpResult};
use quorumkv_server::zk::codes::{err, op};
use quorumkv_server::zk::jute::{Data, Jute, Reader};
use quorumkv_server::zk::records::{
    Acl, CreateRequest, CreateResponse, DeleteRequest, ExistsRequest, GetChildrenRequest,
    GetChildrenResponse, GetDataRequest, GetDataResponse, Id, SetDataRequest, SetDataResponse,
    SetWatches,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workload::Shared;
use super::zk_session::{CallError, ResumeError, ZkSession};

/// Where the workload's znodes live.
const ROOT: &str = "/chaos-zk";
/// The session timeout asked for (ZooKeeper's smallest default).
const SESSION_TIMEOUT_MS: i32 = 4000;
/// How long a call waits for its reply before the session is given up.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Registers (`/chaos-zk/r<k>`).
const REGISTERS: u8 = 4;
/// Sequential creates per run at most (the final listing stays small).
const SEQUENTIAL_MAX: usize = 20_000;
/// ZooKeeper's create flags.
const EPHEMERAL: i32 = 1;
const SEQUENTIAL: i32 = 2;

/// What became of a plain znode a client created and deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Its create was acknowledged, and no delete was.
    Present,
    /// Its create was refused, or its delete acknowledged.
    Absent,
    /// A create or delete of it has an unknown outcome.
    Unknown,
}

/// What the ZooKeeper clients recorded.
#[derive(Debug, Default)]
pub struct ZkLog {
    /// The registers' operations, for the linearizability check.
    pub ops: Vec<Op>,
    /// Sequential names acknowledged.
    pub sequential: Vec<String>,
    /// Plain znodes created (and deleted), by path.
    pub nodes: BTreeMap<String, Fate>,
    /// Sessions opened.
    pub sessions: u64,
    /// Sessions moved to another member after their connection failed.
    pub moves: u64,
    /// Writes whose outcome is unknown.
    pub unknown: u64,
    /// What the checks found.
    pub violations: Vec<String>,
}

fn register(k: u8) -> String {
    format!("{ROOT}/r{k}")
}

fn open_acl() -> Vec<Acl> {
    vec![Acl {
        perms: 31,
        id: Id {
            scheme: "world".into(),
            id: "anyone".into(),
        },
    }]
}

fn create_body(path: &str, data: &[u8], flags: i32) -> Vec<u8> {
    CreateRequest {
        path: path.to_string(),
        data: Data::of(data.to_vec()),
        acl: open_acl(),
        flags,
    }
    .to_bytes()
}

fn decode<T: Jute>(body: &[u8]) -> Result<T, CallError> {
    T::read(&mut Reader::new(body)).map_err(|e| CallError::Lost(format!("undecodable reply: {e}")))
}

fn number(data: &Data) -> u64 {
    data.0
        .as_deref()
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Opens a session on the first member of `addrs` that gives one, trying for up to 30 s.
async fn any_session(addrs: &[String]) -> Result<ZkSession, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        for a in addrs {
            match ZkSession::open(a, SESSION_TIMEOUT_MS, CALL_TIMEOUT).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no ZooKeeper session: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the workload's znodes (registers hold "0").
pub async fn prepare(addrs: &[String]) -> Result<(), String> {
    let mut s = any_session(addrs).await?;
    let paths = [
        ROOT.to_string(),
        format!("{ROOT}/seq"),
        format!("{ROOT}/eph"),
        format!("{ROOT}/p"),
    ]
    .into_iter()
    .chain((0..REGISTERS).map(register));
    for path in paths {
        match s.call(op::CREATE, &create_body(&path, b"0", 0)).await {
            Ok(_) | Err(CallError::Code(err::NODE_EXISTS)) => {}
            Err(e) => return Err(format!("creating {path}: {e:?}")),
        }
    }
    s.close().await;
    Ok(())
}

/// One session's view of the watches it set: register → the mzxid its data had then.
type Watched = BTreeMap<u8, i64>;

/// Runs ZooKeeper client `c` until told to stop.
pub async fn client(
    c: u64,
    addrs: Vec<String>,
    shared: Arc<Shared>,
    log: Arc<Mutex<ZkLog>>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7a6b ^ (c << 24));
    let mut member = usize::try_from(c).unwrap_or(0) % addrs.len();
    let mut identity = c;
    let mut seq = 0u64;
    while !shared.stop_clients.load(Ordering::Relaxed) {
        let Ok(mut s) = ZkSession::open(&addrs[member], SESSION_TIMEOUT_MS, CALL_TIMEOUT).await
        else {
            member = (member + 1) % addrs.len();
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        log.lock().sessions += 1;
        let eph = format!("{ROOT}/eph/c{c}-{:016x}", s.id);
        let mut alive = s
            .call(op::CREATE, &create_body(&eph, b"", EPHEMERAL))
            .await
            .is_ok();
        let mut seen: Vec<Option<(u64, i32)>> = vec![None; usize::from(REGISTERS)];
        let mut watched = Watched::new();
        // The newest mzxid this session saw or made on each register.
        let mut newest = vec![0i64; usize::from(REGISTERS)];
        // A plain znode this session created and will delete.
        let mut plain: Option<String> = None;
        // Where the session moved so far (member, the zxid it re-armed its watches from),
        // told with any violation it meets.
        let mut path_taken = vec![(member, 0i64)];
        // The session's latest steps, told with any violation it meets.
        let mut trail: VecDeque<String> = VecDeque::new();
        let mut left = rng.random_range(50..400);
        while alive && left > 0 && !shared.stop_clients.load(Ordering::Relaxed) {
            left -= 1;
            let k = rng.random_range(0..REGISTERS);
            seq += 1;
            let fresh = ((c + 1) << 40) | seq;
            let roll = rng.random_range(0..100);
            let invoke = shared.now_us();
            let op = Op1 {
                k,
                fresh,
                roll,
                eph: &eph,
            };
            let step = one_op(&mut s, &mut rng, op, &mut seen, &mut plain, &log).await;
            let complete = shared.now_us();
            let lost = {
                let mut l = log.lock();
                // Notifications carry no zxid of their own (ZooKeeper sends -1): they are
                // checked against the replies around them.
                for n in s.notifications.drain(..) {
                    if let Some(k) = (0..REGISTERS).find(|k| register(*k) == n.event.path) {
                        watched.remove(&k);
                        note(&mut trail, format!("notified r{k} ({})", n.event.kind));
                    }
                }
                note(
                    &mut trail,
                    format!(
                        "r{k} {step:?} at {} ms, zxid {}",
                        complete / 1000,
                        s.last_zxid
                    ),
                );
                match step {
                    Step::Read { mzxid, watch } => {
                        if mzxid < newest[usize::from(k)] {
                            l.violations.push(format!(
                                "session {:x}: a read of {} went back from zxid {} to {mzxid}",
                                s.id,
                                register(k),
                                newest[usize::from(k)]
                            ));
                        }
                        newest[usize::from(k)] = newest[usize::from(k)].max(mzxid);
                        if let Some(set_at) = watched.get(&k)
                            && mzxid > *set_at
                        {
                            l.violations.push(format!(
                                "session {:x}: a read of {} shows zxid {mzxid}, but the watch set \
                             at {set_at} was not notified first (members and zxids: {:?}; \
                             latest steps: {:?})",
                                s.id,
                                register(k),
                                path_taken,
                                trail
                            ));
                        }
                        if watch {
                            watched.entry(k).or_insert(mzxid);
                        }
                        false
                    }
                    Step::Wrote(kind, result, made) => {
                        if let Some(m) = made {
                            newest[usize::from(k)] = newest[usize::from(k)].max(m);
                        }
                        l.ops.push(Op {
                            client: identity,
                            key: k,
                            kind,
                            result,
                            invoke,
                            complete,
                        });
                        false
                    }
                    Step::Lost(write) => {
                        if let Some(kind) = write {
                            l.unknown += 1;
                            l.ops.push(Op {
                                client: identity,
                                key: k,
                                kind,
                                result: OpResult::Unknown,
                                invoke,
                                complete,
                            });
                            // The write may still take effect: later operations are another
                            // process's for the checker.
                            identity += 1 << 20;
                        }
                        true
                    }
                    Step::Other => false,
                }
            };
            if lost {
                match move_session(&s, &addrs, &mut member, &watched).await {
                    Some(moved) => {
                        path_taken.push((member, moved.last_zxid));
                        s = moved;
                        log.lock().moves += 1;
                    }
                    None => alive = false,
                }
            }
        }
        if alive && s.close().await {
            continue;
        }
        // Abandoned: another member next time.
        member = (member + 1 + rng.random_range(0..addrs.len())) % addrs.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Moves session `s`, whose connection failed, to another member as ZooKeeper's clients do:
/// each member in turn (the failed one last) until twice the session's timeout has passed,
/// then re-arms its watches with setWatches from the last zxid it saw, so it hears of every
/// change it missed. None: the cluster says the session expired, or no member took it.
async fn move_session(
    s: &ZkSession,
    addrs: &[String],
    member: &mut usize,
    watched: &Watched,
) -> Option<ZkSession> {
    let deadline = Instant::now() + Duration::from_millis(2 * SESSION_TIMEOUT_MS as u64);
    while Instant::now() < deadline {
        *member = (*member + 1) % addrs.len();
        match s.resume(&addrs[*member]).await {
            Ok(mut moved) => {
                if watched.is_empty() {
                    return Some(moved);
                }
                let rearm = SetWatches {
                    relative_zxid: moved.last_zxid,
                    data_watches: watched.keys().map(|k| register(*k)).collect(),
                    exist_watches: Vec::new(),
                    child_watches: Vec::new(),
                };
                if moved.call(op::SET_WATCHES, &rearm.to_bytes()).await.is_ok() {
                    return Some(moved);
                }
            }
            Err(ResumeError::Expired) => return None,
            Err(ResumeError::Unreachable(_)) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Most steps a session's trail keeps.
const TRAIL_STEPS_MAX: usize = 24;

/// Adds `step` to `trail`, forgetting the oldest past [`TRAIL_STEPS_MAX`].
fn note(trail: &mut VecDeque<String>, step: String) {
    if trail.len() == TRAIL_STEPS_MAX {
        trail.pop_front();
    }
    trail.push_back(step);
}

/// One operation's inputs: the register, a fresh value, the roll that picks the operation,
/// and the session's ephemeral.
struct Op1<'a> {
    k: u8,
    fresh: u64,
    roll: u32,
    eph: &'a str,
}

/// What one operation came to.
#[derive(Debug)]
enum Step {
    /// A register read: the mzxid it showed, and whether it set a watch.
    Read { mzxid: i64, watch: bool },
    /// A register write with a known outcome (and the mzxid it made, if it made one).
    Wrote(OpKind, OpResult, Option<i64>),
    /// The session is lost; the write (if any) has an unknown outcome.
    Lost(Option<OpKind>),
    /// Nothing for the register history.
    Other,
}

async fn one_op(
    s: &mut ZkSession,
    rng: &mut StdRng,
    op1: Op1<'_>,
    seen: &mut [Option<(u64, i32)>],
    plain: &mut Option<String>,
    log: &Mutex<ZkLog>,
) -> Step {
    let Op1 {
        k,
        fresh,
        roll,
        eph,
    } = op1;
    let path = register(k);
    let conditional = seen[usize::from(k)].filter(|_| (30..50).contains(&roll));
    if roll < 50 {
        let (version, kind) = match conditional {
            Some((expect, version)) => (version, OpKind::Cas { expect, new: fresh }),
            None => (-1, OpKind::Put(fresh)),
        };
        let body = SetDataRequest {
            path,
            data: Data::of(fresh.to_string().into_bytes()),
            version,
        }
        .to_bytes();
        return match s.call(op::SET_DATA, &body).await {
            Ok((_, reply)) => Step::Wrote(
                kind,
                match kind {
                    OpKind::Cas { .. } => OpResult::Swapped(true),
                    _ => OpResult::Done,
                },
                decode::<SetDataResponse>(&reply).ok().map(|r| r.stat.mzxid),
            ),
            Err(CallError::Code(err::BAD_VERSION)) if version >= 0 => {
                Step::Wrote(kind, OpResult::Swapped(false), None)
            }
            Err(_) => Step::Lost(Some(kind)),
        };
    }
    if roll < 80 {
        let watch = rng.random_bool(0.3);
        let body = GetDataRequest { path, watch }.to_bytes();
        return match s.call(op::GET_DATA, &body).await {
            Ok((_, reply)) => match decode::<GetDataResponse>(&reply) {
                Ok(r) => {
                    let v = number(&r.data);
                    seen[usize::from(k)] = Some((v, r.stat.version));
                    Step::Read {
                        mzxid: r.stat.mzxid,
                        watch,
                    }
                }
                Err(_) => Step::Lost(None),
            },
            Err(_) => Step::Lost(None),
        };
    }
    if roll < 88 {
        if log.lock().sequential.len() >= SEQUENTIAL_MAX {
            return Step::Other;
        }
        let body = create_body(&format!("{ROOT}/seq/s-"), b"", SEQUENTIAL);
        return match s.call(op::CREATE, &body).await {
            Ok((_, reply)) => match decode::<CreateResponse>(&reply) {
                Ok(r) => {
                    log.lock().sequential.push(r.path);
                    Step::Other
                }
                Err(_) => Step::Lost(None),
            },
            Err(_) => Step::Lost(None),
        };
    }
    if roll < 95 {
        return create_or_delete(s, fresh, plain, log).await;
    }
    let body = ExistsRequest {
        path: eph.to_string(),
        watch: false,
    }
    .to_bytes();
    match s.call(op::EXISTS, &body).await {
        Ok(_) => Step::Other,
        Err(CallError::Code(err::NO_NODE)) => {
            log.lock().violations.push(format!(
                "session {:x}: its ephemeral {eph} is gone while the session answers",
                s.id
            ));
            Step::Other
        }
        Err(_) => Step::Lost(None),
    }
}

/// Creates a plain znode named after `fresh`, or deletes the one this session created,
/// recording what became of it.
async fn create_or_delete(
    s: &mut ZkSession,
    fresh: u64,
    plain: &mut Option<String>,
    log: &Mutex<ZkLog>,
) -> Step {
    let Some(path) = plain.take() else {
        let path = format!("{ROOT}/p/n{fresh:x}");
        let r = s.call(op::CREATE, &create_body(&path, b"", 0)).await;
        let fate = match r {
            Ok(_) => {
                *plain = Some(path.clone());
                Fate::Present
            }
            Err(CallError::Code(_)) => Fate::Absent,
            Err(CallError::Lost(_)) => Fate::Unknown,
        };
        log.lock().nodes.insert(path, fate);
        return if fate == Fate::Unknown {
            Step::Lost(None)
        } else {
            Step::Other
        };
    };
    let body = DeleteRequest {
        path: path.clone(),
        version: -1,
    }
    .to_bytes();
    match s.call(op::DELETE, &body).await {
        Ok(_) => {
            log.lock().nodes.insert(path, Fate::Absent);
            Step::Other
        }
        Err(CallError::Code(err::NO_NODE)) => {
            let mut l = log.lock();
            l.violations.push(format!(
                "session {:x}: {path}, whose create was acknowledged, was gone before its delete",
                s.id
            ));
            l.nodes.insert(path, Fate::Unknown);
            Step::Other
        }
        Err(CallError::Code(_)) => {
            // Refused (no room, say): still there, deleted later.
            *plain = Some(path);
            Step::Other
        }
        Err(CallError::Lost(_)) => {
            log.lock().nodes.insert(path, Fate::Unknown);
            Step::Lost(None)
        }
    }
}

/// The checks after the run (the cluster healed): a final read of every register joins the
/// history, the sequential names are checked, and every ephemeral must be gone once sessions
/// had time to expire. Returns whether the registers' history is linearizable.
pub async fn settle(addrs: &[String], shared: &Shared, log: &mut ZkLog) -> Option<bool> {
    let mut s = match any_session(addrs).await {
        Ok(s) => s,
        Err(e) => {
            log.violations.push(e);
            return None;
        }
    };
    // The member catches up with the leader before the final reads.
    let sync = quorumkv_server::zk::records::PathRequest {
        path: ROOT.to_string(),
    }
    .to_bytes();
    if let Err(e) = s.call(op::SYNC, &sync).await {
        log.violations
            .push(format!("sync before the final reads: {e:?}"));
    }
    for k in 0..REGISTERS {
        let invoke = shared.now_us();
        let body = GetDataRequest {
            path: register(k),
            watch: false,
        }
        .to_bytes();
        match s.call(op::GET_DATA, &body).await {
            Ok((_, reply)) => {
                if let Ok(r) = decode::<GetDataResponse>(&reply) {
                    log.ops.push(Op {
                        client: u64::MAX - u64::from(k),
                        key: k,
                        kind: OpKind::Get,
                        result: OpResult::Value(number(&r.data)),
                        invoke,
                        complete: shared.now_us(),
                    });
                }
            }
            Err(e) => log.violations.push(format!("final read of r{k}: {e:?}")),
        }
    }
    match children(&mut s, &format!("{ROOT}/seq")).await {
        Ok(names) => check_sequential(&names, &log.sequential, &mut log.violations),
        Err(e) => log.violations.push(format!("listing sequentials: {e:?}")),
    }
    match children(&mut s, &format!("{ROOT}/p")).await {
        Ok(names) => check_nodes(&names, &log.nodes, &mut log.violations),
        Err(e) => log.violations.push(format!("listing plain znodes: {e:?}")),
    }
    // Abandoned sessions expire within their timeout of the last touch; closed ones at once.
    let deadline = Instant::now() + Duration::from_millis(3 * SESSION_TIMEOUT_MS as u64 + 10_000);
    let mut left = Vec::new();
    while Instant::now() < deadline {
        match children(&mut s, &format!("{ROOT}/eph")).await {
            Ok(names) if names.is_empty() => {
                left.clear();
                break;
            }
            Ok(names) => left = names,
            Err(e) => left = vec![format!("(listing failed: {e:?})")],
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !left.is_empty() {
        log.violations.push(format!(
            "{} ephemerals outlived their sessions, first {:?}",
            left.len(),
            &left[..left.len().min(5)]
        ));
    }
    s.close().await;
    match checker::check(&log.ops, 50_000_000) {
        checker::Outcome::Ok => Some(true),
        checker::Outcome::Violation(why) => {
            log.violations.push(format!("registers: {why}"));
            Some(false)
        }
        checker::Outcome::Unknown(_) => None,
    }
}

async fn children(s: &mut ZkSession, path: &str) -> Result<Vec<String>, CallError> {
    let body = GetChildrenRequest {
        path: path.to_string(),
        watch: false,
    }
    .to_bytes();
    let (_, reply) = s.call(op::GET_CHILDREN, &body).await?;
    Ok(decode::<GetChildrenResponse>(&reply)?.children)
}

/// Sequential names under their parent: every acknowledged one present, and their numbers
/// exactly 0..n (unique, no gap: nothing is ever deleted there).
fn check_sequential(names: &[String], acked: &[String], violations: &mut Vec<String>) {
    let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|a| !listed.contains(a.rsplit('/').next().unwrap_or(a)))
        .collect();
    if !missing.is_empty() {
        violations.push(format!(
            "{} acknowledged sequential creates are missing, first {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    let mut numbers: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_prefix("s-")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    let expected: Vec<u64> = (0..names.len() as u64).collect();
    if numbers != expected {
        let gap = expected.iter().zip(&numbers).find(|(a, b)| a != b);
        violations.push(format!(
            "sequential numbers of {} children are not 0..{} (first difference {gap:?})",
            names.len(),
            names.len()
        ));
    }
}

/// The plain znodes listed under their parent against what the clients were told: every
/// acknowledged create not deleted is there, no refused create or acknowledged delete is, and
/// nothing is there that no client created.
fn check_nodes(names: &[String], nodes: &BTreeMap<String, Fate>, violations: &mut Vec<String>) {
    let listed: BTreeSet<String> = names.iter().map(|n| format!("{ROOT}/p/{n}")).collect();
    let mut wrong = Vec::new();
    for (path, fate) in nodes {
        match fate {
            Fate::Present if !listed.contains(path) => wrong.push(format!("{path} missing")),
            Fate::Absent if listed.contains(path) => wrong.push(format!("{path} still there")),
            _ => {}
        }
    }
    wrong.extend(
        listed
            .iter()
            .filter(|p| !nodes.contains_key(*p))
            .map(|p| format!("{p} never created")),
    );
    if !wrong.is_empty() {
        violations.push(format!(
            "{} plain znodes disagree with what their clients were told, first {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_znodes_must_match_what_their_clients_were_told() {
        let nodes = BTreeMap::from([
            (format!("{ROOT}/p/a"), Fate::Present),
            (format!("{ROOT}/p/b"), Fate::Absent),
            (format!("{ROOT}/p/c"), Fate::Unknown),
        ]);
        let mut v = Vec::new();
        check_nodes(&["a".into(), "c".into()], &nodes, &mut v);
        check_nodes(&["a".into()], &nodes, &mut v);
        assert!(v.is_empty(), "{v:?}");
        check_nodes(&[], &nodes, &mut v);
        assert!(v.pop().unwrap().contains("a missing"));
        check_nodes(&["a".into(), "b".into()], &nodes, &mut v);
        assert!(v.pop().unwrap().contains("b still there"));
        check_nodes(&["a".into(), "z".into()], &nodes, &mut v);
        assert!(v.pop().unwrap().contains("z never created"));
    }

    #[test]
    fn sequential_names_must_be_whole_and_gap_free() {
        let names: Vec<String> = (0..3).map(|i| format!("s-{i:010}")).collect();
        let acked = vec![format!("{ROOT}/seq/s-0000000001")];
        let mut v = Vec::new();
        check_sequential(&names, &acked, &mut v);
        assert!(v.is_empty(), "{v:?}");
        check_sequential(&names[1..], &acked, &mut v);
        assert_eq!(v.len(), 1, "a gap at 0: {v:?}");
        v.clear();
        check_sequential(&names[..1], &acked, &mut v);
        assert!(v[0].contains("missing"), "{v:?}");
    }
}
