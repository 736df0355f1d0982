//! The faults `quorumkv chaos` injects and how each is undone: process faults (kills, pauses,
//! power cuts, storage failpoints, disk stalls, crashes inside a step, clock steps,
//! replacements, compactions), which need the cluster, and network faults (partitions,
//! one-way cuts, delays, drops), which need only the proxies' settings and so can run beside a
//! process fault. Each fault undoes itself before it returns; this module never checks
//! results (that is `verify`'s and `leases`').

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quorumkv_lossyfs::Cut;
use quorumkv_server::pb::etcdserverpb::{
    CompactionRequest, DefragmentRequest, MemberAddRequest, MemberRemoveRequest,
    cluster_client::ClusterClient, kv_client::KvClient, maintenance_client::MaintenanceClient,
};
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::watch;

use super::cluster::Cluster;
use super::proxy::NetFaults;
use super::workload::Shared;

/// Every fault a run can inject.
pub const FAULTS: &[&str] = &[
    "kill",
    "kill-leader",
    "pause",
    "partition",
    "isolate-leader",
    "one-way",
    "delay",
    "drop",
    "compact",
    "replace",
    "disk",
    "slow-disk",
    "crash",
    "clock-jump",
    "power-loss",
    "power-loss-all",
];

/// Faults drawn only when asked for by name: power cuts need each member's data directory on
/// a lossy FUSE file system (root, `/dev/fuse`), clock jumps run members under libfaketime.
pub const ON_REQUEST: &[&str] = &["power-loss", "power-loss-all", "clock-jump"];

/// Faults that need a build with failpoints.
pub const NEED_FAILPOINTS: &[&str] = &["disk", "slow-disk", "crash"];

/// Storage-path failpoints the `disk` fault arms in a restarted member.
const DISK_FAILPOINTS: &[&str] = &[
    "wal::write",
    "wal::after_write",
    "wal::fdatasync",
    "wal::after_fdatasync",
    "wal::rotate",
    "btree::write_meta",
    "btree::sync",
    "btree::flush",
];

/// Where the `crash` fault panics a member, and what it does to make that step run.
const CRASH_POINTS: &[&str] = &[
    "apply::before_commit",
    "apply::conf_change",
    "mvcc::compact",
    "btree::defragment",
    "snapshot::send_chunk",
    "snapshot::receive_chunk",
    "apply::after_install",
];

/// Whether `fault` only changes the network between members.
pub fn is_network(fault: &str) -> bool {
    matches!(
        fault,
        "partition" | "isolate-leader" | "one-way" | "delay" | "drop"
    )
}

/// What the faults observed, for the summary line.
#[derive(Debug, Default)]
pub struct FaultStats {
    /// Disk stalls injected.
    pub stalls: AtomicU64,
    /// Stalls during which the term changed (an election happened).
    pub stall_elections: AtomicU64,
    /// Members that crashed at an armed crash point.
    pub crashes: AtomicU64,
    /// When each disk stall ended, on the histories' clock (µs).
    pub stall_ends_us: parking_lot::Mutex<Vec<u64>>,
}

/// Injects one process fault (or, when `fault` is a network fault, that) for about `hold`,
/// then undoes it.
#[allow(clippy::too_many_arguments)]
pub async fn inject(
    fault: &str,
    hold: Duration,
    cl: &mut Cluster,
    net: &watch::Sender<NetFaults>,
    shared: &Shared,
    stats: &FaultStats,
    rng: &mut StdRng,
    say: &impl Fn(String),
) -> Result<(), String> {
    let n = cl.members.len();
    let random = rng.random_range(0..n);
    if is_network(fault) {
        let leader = match fault {
            "isolate-leader" => Some(cl.leader().await.ok_or("no agreed leader")?),
            _ => None,
        };
        return inject_network(fault, hold, n, leader, net, rng, say).await;
    }
    let pick_leader = || async { cl.leader().await.ok_or("no agreed leader") };
    match fault {
        "kill" | "kill-leader" => {
            let i = if fault == "kill" {
                random
            } else {
                pick_leader().await?
            };
            say(format!("kill -9 {}", cl.members[i].name));
            cl.kill(i);
            tokio::time::sleep(hold).await;
            say(format!("restart {}", cl.members[i].name));
            cl.start(i)?;
        }
        "pause" => {
            say(format!("SIGSTOP {} for {hold:?}", cl.members[random].name));
            cl.pause(random);
            tokio::time::sleep(hold).await;
            cl.resume(random);
        }
        "compact" => {
            // Only revisions every watcher has passed, so no stream loses events it still needs.
            let revision = shared.watched_by_all() - 5;
            if revision > 0 {
                say(format!("compact to revision {revision}"));
                compact(cl, random, revision).await?;
            }
        }
        "replace" => {
            let leader = pick_leader().await?;
            let i = (leader + 1 + rng.random_range(0..n.saturating_sub(1).max(1))) % n;
            if i == leader {
                return Ok(());
            }
            say(format!(
                "replace {} (remove, wipe, add, join)",
                cl.members[i].name
            ));
            cl.replace(i, leader).await?;
            tokio::time::sleep(hold).await;
        }
        "disk" => {
            // The member restarts with one storage failpoint armed to fail after a number of
            // passes; from then on it must stop acknowledging (fail-stop), never pretend.
            let point = DISK_FAILPOINTS[rng.random_range(0..DISK_FAILPOINTS.len())];
            let spec = format!("{point}={}*off->return", rng.random_range(1..300));
            say(format!(
                "disk fault in {}: {spec} for {hold:?}",
                cl.members[random].name
            ));
            cl.kill(random);
            cl.start_with(random, Some(&spec))?;
            tokio::time::sleep(hold).await;
            say(format!(
                "restart {} with healthy storage",
                cl.members[random].name
            ));
            cl.kill(random);
            cl.start(random)?;
        }
        "slow-disk" => {
            slow_disk(cl, stats, rng, say).await?;
            stats.stall_ends_us.lock().push(shared.now_us());
        }
        "crash" => crash(hold, cl, shared, stats, rng, say).await?,
        "clock-jump" => {
            let secs = rng.random_range(60..7200) * if rng.random_bool(0.5) { 1 } else { -1 };
            say(format!(
                "step {}'s wall clock by {secs:+} s for {hold:?}",
                cl.members[random].name
            ));
            cl.set_clock_offset(random, secs)?;
            // libfaketime rereads its file every second.
            tokio::time::sleep(hold + Duration::from_secs(1)).await;
            cl.set_clock_offset(random, 0)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        "power-loss" | "power-loss-all" => {
            let who: Vec<usize> = if fault == "power-loss" {
                vec![random]
            } else {
                (0..n).collect()
            };
            // The processes die first, all of them, so none writes after another's cut.
            for &i in &who {
                cl.kill(i);
            }
            for &i in &who {
                let cut = if rng.random_bool(0.5) {
                    Cut::DropAll
                } else {
                    Cut::Torn(rng.random())
                };
                let r = cl.power_cut(i, cut)?;
                say(format!(
                    "power cut {} ({cut:?}): {} unsynced pages lost, {} kept, {} files gone",
                    cl.members[i].name, r.pages_lost, r.pages_kept, r.inodes_lost
                ));
            }
            tokio::time::sleep(hold).await;
            for &i in &who {
                say(format!("power back on {}", cl.members[i].name));
                cl.start(i)?;
            }
        }
        other => return Err(format!("unknown fault {other}")),
    }
    Ok(())
}

/// Injects one network fault among `n` members for `hold`, then heals the network
/// (`leader`: the member `isolate-leader` cuts off).
pub async fn inject_network(
    fault: &str,
    hold: Duration,
    n: usize,
    leader: Option<usize>,
    net: &watch::Sender<NetFaults>,
    rng: &mut StdRng,
    say: &impl Fn(String),
) -> Result<(), String> {
    let mut f = NetFaults::healthy(n);
    match fault {
        "partition" => {
            // A random minority (at least one member) on the other side.
            let minority = rng.random_range(1..=(n / 2).max(1));
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            for &i in &order[..minority] {
                f.group[i] = 1;
            }
            say(format!("partition {:?} for {hold:?}", f.group));
        }
        "isolate-leader" => {
            f.group[leader.ok_or("no agreed leader")?] = 1;
            say(format!("partition {:?} for {hold:?}", f.group));
        }
        "one-way" => {
            // One member stops hearing the others, or they stop hearing it.
            let x = rng.random_range(0..n);
            let deaf = rng.random_bool(0.5);
            for other in (0..n).filter(|&o| o != x) {
                f.one_way.push(if deaf { (other, x) } else { (x, other) });
            }
            say(format!(
                "one-way cut for {hold:?}: n{x} {}",
                if deaf {
                    "hears nobody"
                } else {
                    "is heard by nobody"
                }
            ));
        }
        "delay" => {
            f.delay_ms = rng.random_range(5..80);
            say(format!(
                "peer traffic delayed {} ms for {hold:?}",
                f.delay_ms
            ));
        }
        "drop" => {
            f.drop_per_mille = rng.random_range(50..400);
            say(format!(
                "peer messages dropped {}‰ for {hold:?}",
                f.drop_per_mille
            ));
        }
        other => return Err(format!("{other} is not a network fault")),
    }
    net.send_replace(f);
    tokio::time::sleep(hold).await;
    net.send_replace(NetFaults::healthy(n));
    Ok(())
}

async fn compact(cl: &Cluster, via: usize, revision: i64) -> Result<(), String> {
    KvClient::new(cl.members[via].channel.clone())
        .compact(CompactionRequest {
            revision,
            physical: false,
        })
        .await
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// Stalls every fdatasync of the leader's or a follower's log for 1–5 s, for a few stalls,
/// and notes whether an election happened meanwhile (peers that still hear heartbeats should
/// not hold one).
async fn slow_disk(
    cl: &mut Cluster,
    stats: &FaultStats,
    rng: &mut StdRng,
    say: &impl Fn(String),
) -> Result<(), String> {
    let leader = cl.leader().await.ok_or("no agreed leader")?;
    let n = cl.members.len();
    let (i, role) = if rng.random_bool(0.5) || n == 1 {
        (leader, "leader")
    } else {
        ((leader + rng.random_range(1..n)) % n, "follower")
    };
    let stall_ms = rng.random_range(1000..5000u64);
    let term = cl.term().await;
    say(format!(
        "slow disk on {} ({role}): each fdatasync stalls {stall_ms} ms",
        cl.members[i].name
    ));
    cl.arm(i, &format!("wal::fdatasync=sleep({stall_ms})"))?;
    tokio::time::sleep(Duration::from_millis(stall_ms * 2 + 500)).await;
    cl.arm(i, "")?;
    // The last stall may still be running.
    tokio::time::sleep(Duration::from_millis(stall_ms)).await;
    stats.stalls.fetch_add(1, Ordering::Relaxed);
    let after = cl.term().await;
    if after != term {
        stats.stall_elections.fetch_add(1, Ordering::Relaxed);
        say(format!("term {term} -> {after} during the stall"));
    }
    Ok(())
}

/// Arms a panic at a crash point in one member, makes that step run, waits for the crash,
/// then disarms it and restarts whoever crashed.
async fn crash(
    hold: Duration,
    cl: &mut Cluster,
    shared: &Shared,
    stats: &FaultStats,
    rng: &mut StdRng,
    say: &impl Fn(String),
) -> Result<(), String> {
    let point = CRASH_POINTS[rng.random_range(0..CRASH_POINTS.len())];
    let n = cl.members.len();
    let leader = cl.leader().await.ok_or("no agreed leader")?;
    let follower = (leader + rng.random_range(1..n.max(2))) % n;
    let random = rng.random_range(0..n);
    let armed = match point {
        "snapshot::send_chunk" => leader,
        "snapshot::receive_chunk" | "apply::after_install" => follower,
        _ => random,
    };
    say(format!("crash {} at {point}", cl.members[armed].name));
    // A replaced member reads the file when it starts, so arming it first is enough.
    cl.arm(armed, &format!("{point}=panic"))?;
    // The member reads the file every 100 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Whether the armed member crashed before the step this fault makes run (a snapshot sent
    // to another lagging member) and was restarted already.
    let mut crashed_early = false;
    let triggered = match point {
        // A learner that never starts is added and removed: two membership changes that
        // commit without the crashed member.
        "apply::conf_change" => {
            churn_membership(cl, if armed == leader { follower } else { leader }).await
        }
        "mvcc::compact" => match shared.watched_by_all() - 5 {
            r if r > 0 => compact(cl, leader, r).await,
            _ => Ok(()),
        },
        "btree::defragment" => MaintenanceClient::new(cl.members[armed].channel.clone())
            .defragment(DefragmentRequest {})
            .await
            .map(|_| ())
            .map_err(|e| e.message().to_string()),
        // The replaced member needs a snapshot when the log it lacks was compacted: the
        // leader crashes sending it, or the new member receiving or installing it. The
        // membership changes go through a third member, which outlives the crash.
        "snapshot::send_chunk" | "snapshot::receive_chunk" | "apply::after_install" => {
            match (0..n).find(|&i| i != leader && i != follower) {
                Some(via) => cl
                    .replace_tending(follower, via, Some(armed))
                    .await
                    .map(|restarted| crashed_early = restarted),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    };
    if let Err(e) = triggered {
        say(format!("{point}: {e}"));
    }
    let deadline = tokio::time::Instant::now() + hold.max(Duration::from_secs(2));
    while tokio::time::Instant::now() < deadline && !cl.exited(armed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cl.arm(armed, "")?;
    if crashed_early {
        stats.crashes.fetch_add(1, Ordering::Relaxed);
        say(format!(
            "{} crashed at {point} before the replaced member joined; restarted then",
            cl.members[armed].name
        ));
    }
    let crashed = !cl.running(armed);
    if crashed {
        stats.crashes.fetch_add(1, Ordering::Relaxed);
        say(format!(
            "{} crashed at {point}; restart",
            cl.members[armed].name
        ));
        cl.start(armed)?;
    } else if !crashed_early {
        say(format!("{} never reached {point}", cl.members[armed].name));
    }
    Ok(())
}

/// Adds a learner that never starts, then removes it.
async fn churn_membership(cl: &Cluster, via: usize) -> Result<(), String> {
    let mut c = ClusterClient::new(cl.members[via].channel.clone());
    let addr = super::port::free_port()?;
    let added = c
        .member_add(MemberAddRequest {
            peer_ur_ls: vec![format!("{}://{addr}", cl.scheme())],
            is_learner: true,
        })
        .await
        .map_err(|e| format!("member add: {}", e.message()))?
        .into_inner();
    let id = added
        .member
        .map(|m| m.id)
        .ok_or("member add named no member")?;
    c.member_remove(MemberRemoveRequest { id })
        .await
        .map_err(|e| format!("member remove: {}", e.message()))?;
    Ok(())
}
