//! `quorumkv chaos`: real `quorumkv serve` processes on loopback under faults (kill -9,
//! pauses, partitions and one-way cuts, delays and drops through a peer proxy, member
//! replacement, compaction, storage failpoints, disk stalls, crashes inside a step, clock
//! steps, power cuts; see `faults`) while clients record a history of puts, deletes, gets,
//! limited ranges, compare-and-sets, multi-key transactions and watches, lease clients grant,
//! keep alive, revoke and abandon leases with keys attached, and ZooKeeper clients hold
//! sessions with ephemerals on the members' ZooKeeper ports (see `zk_clients`). Afterwards it
//! heals the cluster and checks that the history is linearizable, no acknowledged write was
//! lost, watch streams were ordered and complete, no lease or ZooKeeper check failed, and
//! every member converged to the same revision and hash. The last line sums it up; any
//! violation makes the exit status non-zero.

mod certs;
mod cluster;
mod faults;
mod leases;
mod port;
mod proxy;
mod verify;
mod workload;
mod zk_clients;
mod zk_session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use quorumkv_server::pb::etcdserverpb::{PutRequest, kv_client::KvClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use certs::with_peer_tls;
use cluster::Cluster;
use faults::{FAULTS, FaultStats, NEED_FAILPOINTS, ON_REQUEST};
use proxy::NetFaults;
use workload::Shared;

/// `quorumkv chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Replication protocol of the cluster.
    #[arg(long, default_value = "raft", value_parser = ["raft", "zab"])]
    replication: String,
    /// Members (3 or 5 make sense).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long the faults and the load run (e.g. 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = crate::bench::parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and the clients' choices (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    clients: u64,
    /// The largest value a client writes (one put in fifty is large). By default 1 MiB, or
    /// 64 KiB when power cuts put the data directories on lossyfs, which keeps every member's
    /// files in this process's memory twice.
    #[arg(long)]
    value_bytes_max: Option<usize>,
    /// Concurrent lease clients (grant, attach a key, keep alive, revoke or let expire).
    #[arg(long, default_value_t = 2)]
    lease_clients: u64,
    /// Concurrent ZooKeeper clients (sessions with an ephemeral each, sets, conditional sets,
    /// reads with watches, sequential creates) on the members' ZooKeeper ports.
    #[arg(long, default_value_t = 2)]
    clients_zk: u64,
    /// FAILPOINTS for every member (needs a build with failpoints), e.g.
    /// `lease::renew=return` to show the lease checks catch a broken renewal.
    #[arg(long)]
    member_failpoints: Option<String>,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 2)]
    watchers: usize,
    /// Keys the clients share.
    #[arg(long, default_value_t = 6)]
    keys: u8,
    /// Faults to choose from, comma-separated (default: all but `power-loss`,
    /// `power-loss-all` and `clock-jump`, which are drawn only when named, and `disk`,
    /// `slow-disk` and `crash` in a build without `--features failpoints`). The power faults
    /// put every member's data directory on a lossy FUSE file system (root and /dev/fuse
    /// needed) and cut one member's power, or every member's at once: whatever no fsync
    /// covered is lost. `clock-jump` runs every member under libfaketime and steps one wall
    /// clock by minutes to hours, forward or back.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Faults in force at once: 2 runs network faults on a schedule of their own, beside the
    /// process faults (kills, pauses, crashes, ...).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    faults_at_once: u8,
    /// Extra flags for every `serve` (split on spaces).
    #[arg(
        long,
        default_value = "--heartbeat-interval 50 --election-timeout 500 --snapshot-count 2000 \
                         --experimental-snapshot-catchup-entries 200 \
                         --experimental-lease-checkpoint-interval 1s"
    )]
    serve_flags: String,
    /// Members speak mutual TLS to each other (a CA and a peer certificate are made for the
    /// run). The proxies then see only bytes: partitions and delays apply, message drops do
    /// not.
    #[arg(long)]
    peer_tls: bool,
    /// Where the members keep their data and logs (a fresh temporary directory by default;
    /// kept when the run fails).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

impl ChaosArgs {
    fn check(&self) -> Result<(), String> {
        if !(1..=9).contains(&self.nodes) {
            return Err("--nodes must be between 1 and 9".into());
        }
        if self.clients == 0 || self.keys == 0 || self.keys == u8::MAX {
            return Err("--clients and --keys must be positive (keys below 255)".into());
        }
        if let Some(f) = self.faults.iter().find(|f| !FAULTS.contains(&f.as_str())) {
            return Err(format!("unknown fault {f:?}; known: {}", FAULTS.join(",")));
        }
        if let Some(f) = self
            .faults
            .iter()
            .find(|f| NEED_FAILPOINTS.contains(&f.as_str()))
        {
            if !quorumkv_server::FAILPOINTS_COMPILED {
                return Err(format!(
                    "the {f} fault needs a build with --features failpoints"
                ));
            }
        }
        if self.member_failpoints.is_some() && !quorumkv_server::FAILPOINTS_COMPILED {
            return Err("--member-failpoints needs a build with --features failpoints".into());
        }
        Ok(())
    }

    /// The faults to draw from.
    fn fault_set(&self) -> Vec<String> {
        if !self.faults.is_empty() {
            return self.faults.clone();
        }
        FAULTS
            .iter()
            .filter(|f| !ON_REQUEST.contains(f))
            .filter(|f| !NEED_FAILPOINTS.contains(f) || quorumkv_server::FAILPOINTS_COMPILED)
            .map(|f| f.to_string())
            .collect()
    }

    /// Whether the run cuts power, so the members need lossy disks.
    fn cuts_power(&self) -> bool {
        self.faults.iter().any(|f| f.starts_with("power-loss"))
    }

    /// The largest value a client writes.
    fn value_bytes_max(&self) -> usize {
        self.value_bytes_max
            .unwrap_or(if self.cuts_power() { 64 << 10 } else { 1 << 20 })
    }

    /// Whether the run steps clocks, so the members run under libfaketime.
    fn steps_clocks(&self) -> bool {
        self.faults.iter().any(|f| f == "clock-jump")
    }
}

/// Runs the chaos test; `Ok(false)` when a check failed.
pub fn main(args: &ChaosArgs) -> Result<bool, String> {
    args.check()?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (dir, temp) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => {
            let d =
                std::env::temp_dir().join(format!("quorumkv-chaos-{seed}-{}", std::process::id()));
            (d, true)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    println!(
        "chaos: {} members on {}, {:?}, seed {seed}, data in {}",
        args.nodes,
        args.replication,
        args.duration,
        dir.display()
    );
    let ok = rt.block_on(run(args, seed, &dir))?;
    if ok && temp {
        let _ = std::fs::remove_dir_all(&dir);
    } else if !ok {
        println!(
            "member logs kept in {}; replay with --seed {seed}",
            dir.display()
        );
    }
    Ok(ok)
}

async fn run(args: &ChaosArgs, seed: u64, dir: &std::path::Path) -> Result<bool, String> {
    let started = Instant::now();
    let say = |what: String| println!("[{:7.2}s] {what}", started.elapsed().as_secs_f64());
    // Proxies first: their addresses are the members' peer URLs.
    let mut listeners = Vec::new();
    for _ in 0..args.nodes {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("proxy: {e}"))?;
        listeners.push(l);
    }
    let proxies: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let extra = args
        .serve_flags
        .split_whitespace()
        .map(String::from)
        .collect();
    let (extra, scheme) = if args.peer_tls {
        (with_peer_tls(extra, dir)?, "https")
    } else {
        (extra, "http")
    };
    let mut cl = Cluster::new(
        dir,
        &args.replication,
        seed,
        &proxies,
        extra,
        scheme,
        Duration::from_secs(3),
    )?;
    cl.set_failpoints(args.member_failpoints.clone());
    if args.cuts_power() {
        cl.use_lossy_disks()?;
        say(
            "data directories on lossy file systems: a power cut loses what no fsync covered"
                .into(),
        );
    }
    if args.steps_clocks() {
        cl.use_fake_clocks()?;
        say("members run under libfaketime: their wall clocks can be stepped".into());
    }
    let (faults_tx, faults_rx) = watch::channel(NetFaults::healthy(args.nodes));
    let faults_tx = Arc::new(faults_tx);
    for (i, l) in listeners.into_iter().enumerate() {
        let target = cl.members[i].peer;
        let dialers = proxy::Dialers {
            ids: cl.ids(),
            pids: cl.pids(),
            tls: args.peer_tls,
        };
        tokio::spawn(proxy::run(l, i, target, dialers, faults_rx.clone(), seed));
    }
    for i in 0..args.nodes {
        cl.start(i)?;
    }
    let channels: Vec<_> = cl.members.iter().map(|m| m.channel.clone()).collect();
    let start_revision = initialize(&channels, args.keys).await?;
    say(format!(
        "cluster up; keys initialized at revision {start_revision}"
    ));

    let shared = Arc::new(Shared::new(args.watchers));
    let mut clients = Vec::new();
    for c in 0..args.clients {
        clients.push(tokio::spawn(workload::client(
            c,
            args.keys,
            args.value_bytes_max(),
            channels.clone(),
            Arc::clone(&shared),
            seed,
        )));
    }
    let zk_addrs: Vec<String> = cl.members.iter().map(|m| m.zk.to_string()).collect();
    let zk_log = Arc::new(parking_lot::Mutex::new(zk_clients::ZkLog::default()));
    if args.clients_zk > 0 {
        zk_clients::prepare(&zk_addrs).await?;
    }
    for c in 0..args.clients_zk {
        clients.push(tokio::spawn(zk_clients::client(
            c,
            zk_addrs.clone(),
            Arc::clone(&shared),
            Arc::clone(&zk_log),
            seed,
        )));
    }
    let lease_log = Arc::new(parking_lot::Mutex::new(leases::LeaseLog::default()));
    for c in 0..args.lease_clients {
        clients.push(tokio::spawn(leases::client(
            c,
            channels.clone(),
            Arc::clone(&shared),
            Arc::clone(&lease_log),
            seed,
        )));
    }
    let stream_channels: Vec<_> = cl
        .members
        .iter()
        .map(|m| m.stream_channel.clone())
        .collect();
    let mut watchers = Vec::new();
    for w in 0..args.watchers {
        watchers.push(tokio::spawn(workload::watcher(
            w,
            start_revision + 1,
            stream_channels.clone(),
            Arc::clone(&shared),
        )));
    }

    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = args.fault_set();
    say(format!("faults: {}", faults.join(",")));
    let end = Instant::now() + args.duration;
    let stats = Arc::new(FaultStats::default());
    let net_faults: Vec<String> = faults
        .iter()
        .filter(|f| faults::is_network(f))
        .cloned()
        .collect();
    let beside = if args.faults_at_once == 2 && !net_faults.is_empty() {
        faults.retain(|f| !faults::is_network(f));
        let scheduler = network_schedule(
            net_faults,
            end,
            channels.clone(),
            cl.ids(),
            Arc::clone(&faults_tx),
            seed ^ 0x6e65_7477_6f72_6b21,
            started,
        );
        Some(tokio::spawn(scheduler))
    } else {
        None
    };
    let mut injected = 0u64;
    while Instant::now() < end && !faults.is_empty() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        if Instant::now() >= end {
            break;
        }
        let fault = &faults[rng.random_range(0..faults.len())];
        let hold = Duration::from_millis(rng.random_range(500..4000));
        injected += 1;
        let done = faults::inject(
            fault, hold, &mut cl, &faults_tx, &shared, &stats, &mut rng, &say,
        );
        if let Err(e) = done.await {
            say(format!("{fault}: {e}"));
        }
    }
    if let Some(beside) = beside {
        injected += beside.await.unwrap_or(0);
    }

    say("healing: all members up, network whole".into());
    faults_tx.send_replace(NetFaults::healthy(args.nodes));
    cl.heal()?;
    shared
        .stop_clients
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let converged = verify::converge(&channels, Duration::from_secs(60)).await;
    let last = match &converged {
        Ok(_) => verify::last_key_revision(&channels[0]).await.unwrap_or(0),
        Err(_) => 0,
    };
    let wait_watchers = Instant::now() + Duration::from_secs(20);
    while shared.watched_by_all() < last && Instant::now() < wait_watchers {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared
        .stop_watchers
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut logs = Vec::new();
    for w in watchers {
        logs.push(w.await.map_err(|e| e.to_string())?);
    }

    let mut lease_log = std::mem::take(&mut *lease_log.lock());
    if converged.is_ok() {
        leases::settle(&channels, &mut lease_log).await;
    }
    let mut zk_log = std::mem::take(&mut *zk_log.lock());
    let zk_linearizable = if args.clients_zk == 0 {
        Some(true)
    } else if converged.is_ok() {
        zk_clients::settle(&zk_addrs, &shared, &mut zk_log).await
    } else {
        None
    };
    let history = std::mem::take(&mut *shared.history.lock());
    let lost = verify::lost(&history, &logs, &channels[0]).await;
    let violations = verify::watch_violations(&logs, &history.acked, start_revision + 1, last);
    let (p99_ms, p99_after_stalls_ms) =
        verify::p99_after(&history, &stats.stall_ends_us.lock(), 3_000_000);
    let check_started = Instant::now();
    let (linearizable, why) = verify::linearizable(&history);
    say(format!(
        "checked {} operations in {:.1}s",
        history.ops.len(),
        check_started.elapsed().as_secs_f64()
    ));
    cl.stop_all();

    for a in lost.iter().take(10) {
        say(format!("LOST: {a:?}"));
    }
    for v in violations.iter().take(10) {
        say(format!("WATCH: {v}"));
    }
    if !why.is_empty() {
        say(format!("LINEARIZABILITY: {why}"));
    }
    for v in lease_log.violations.iter().take(10) {
        say(format!("LEASE: {v}"));
    }
    for v in zk_log.violations.iter().take(10) {
        say(format!("ZOOKEEPER: {v}"));
    }
    let (converged_ok, revision, hash) = match converged {
        Ok(c) => (true, c.revision, c.hash),
        Err(e) => {
            say(e);
            (false, 0, 0)
        }
    };
    let reconnects: u64 = logs.iter().map(|l| l.reconnects).sum();
    let events: usize = logs.iter().map(|l| l.events.len()).sum();
    println!(
        "acked={} lost={} linearizable={} watch_violations={} converged={converged_ok} \
         revision={revision} hash={hash} ops={} unknown={} not_sent={} failed_reads={} watch_events={events} \
         watch_reconnects={reconnects} leases={} keep_alives={} lease_violations={} \
         zk_ops={} zk_sessions={} zk_moves={} zk_unknown={} zk_linearizable={} zk_violations={} \
         stalls={} stall_elections={} p99_ms={} p99_after_stalls_ms={} crashes={} \
         faults={injected} seed={seed}",
        history.acked.len(),
        lost.len(),
        match linearizable {
            Some(b) => b.to_string(),
            None => "unknown".into(),
        },
        violations.len(),
        history.ops.len(),
        history.unknown,
        history.not_sent,
        history.failed_reads,
        lease_log.granted,
        lease_log.kept_alive,
        lease_log.violations.len(),
        zk_log.ops.len(),
        zk_log.sessions,
        zk_log.moves,
        zk_log.unknown,
        match zk_linearizable {
            Some(b) => b.to_string(),
            None => "unknown".into(),
        },
        zk_log.violations.len(),
        stats.stalls.load(std::sync::atomic::Ordering::Relaxed),
        stats
            .stall_elections
            .load(std::sync::atomic::Ordering::Relaxed),
        p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
        p99_after_stalls_ms.map_or("-".into(), |v| format!("{v:.1}")),
        stats.crashes.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(lost.is_empty()
        && linearizable == Some(true)
        && violations.is_empty()
        && converged_ok
        && lease_log.violations.is_empty()
        && zk_linearizable == Some(true)
        && zk_log.violations.is_empty())
}

/// Writes "0" to every key once the cluster answers; returns the revision after.
async fn initialize(channels: &[tonic::transport::Channel], keys: u8) -> Result<i64, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k = 0u8;
    let mut revision = 0;
    let mut i = 0usize;
    let mut last = String::new();
    while k < keys {
        if Instant::now() > deadline {
            return Err(format!("the cluster never took writes: {last}"));
        }
        let mut kv = KvClient::new(channels[i % channels.len()].clone());
        match kv
            .put(PutRequest {
                key: workload::key(k),
                value: b"0".to_vec(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => {
                revision = r.into_inner().header.map_or(0, |h| h.revision);
                k += 1;
            }
            Err(e) => {
                last = e.message().to_string();
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok(revision)
}

/// Draws network faults from `net_faults` until `end`, beside the process faults; returns how
/// many it injected.
async fn network_schedule(
    net_faults: Vec<String>,
    end: Instant,
    channels: Vec<tonic::transport::Channel>,
    ids: proxy::Ids,
    net: Arc<watch::Sender<NetFaults>>,
    seed: u64,
    started: Instant,
) -> u64 {
    let say = |what: String| println!("[{:7.2}s] (beside) {what}", started.elapsed().as_secs_f64());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut injected = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        if Instant::now() >= end {
            break;
        }
        let fault = &net_faults[rng.random_range(0..net_faults.len())];
        let hold = Duration::from_millis(rng.random_range(500..4000));
        let leader = match fault.as_str() {
            "isolate-leader" => match cluster::agreed_leader(&channels, &ids).await {
                Some(l) => Some(l),
                None => continue,
            },
            _ => None,
        };
        injected += 1;
        let n = channels.len();
        if let Err(e) = faults::inject_network(fault, hold, n, leader, &net, &mut rng, &say).await {
            say(format!("{fault}: {e}"));
        }
    }
    injected
}
