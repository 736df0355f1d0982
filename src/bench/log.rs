//! `quorumkv bench log`: the embeddable replicated log's put path, in process: three nodes on
//! loopback with real write-ahead logs (real fdatasync), concurrent clients appending through
//! the leader. No gRPC: this is the library path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use quorumkv_replication::Role;
use quorumkv_server::node::{Node, NodeConfig, ProtocolKind};

/// Which protocol to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    /// Raft.
    Raft,
    /// ZAB.
    Zab,
}

/// Options of the replicated-log benchmark.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Directory for the nodes' data (fresh sub-directories, removed afterwards).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Protocol.
    #[arg(long, value_enum, default_value = "raft")]
    protocol: Proto,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Concurrent clients, each with one append in flight.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub fn run(args: &LogArgs) -> Result<(), String> {
    let base = args
        .dir
        .join(format!("quorumkv-bench-log-{}", std::process::id()));
    let _cleanup = super::RemoveOnDrop(base.clone());
    let listeners: BTreeMap<u64, std::net::TcpListener> = (1..=args.nodes)
        .map(|id| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .map(|l| (id, l))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let peers: BTreeMap<u64, SocketAddr> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().expect("bound")))
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let mut cfg = NodeConfig::new(id, peers.clone(), base.join(format!("node{id}")));
        cfg.protocol = match args.protocol {
            Proto::Raft => ProtocolKind::Raft,
            Proto::Zab => ProtocolKind::Zab,
        };
        nodes.insert(id, Node::start(cfg, l)?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some((id, _)) = nodes
            .iter()
            .find(|(_, n)| n.status().is_some_and(|s| s.role == Role::Leader))
        {
            break *id;
        }
        if Instant::now() > deadline {
            return Err("no leader elected within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let node = &nodes[&leader];
    // Warm up until appends commit.
    while node.append_blocking(vec![0; args.value_bytes]).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = node.wal_stats();
    let end = Instant::now() + Duration::from_secs_f64(args.duration_secs);
    let payload = vec![7u8; args.value_bytes];
    let started = Instant::now();
    let clients: FuturesUnordered<_> = (0..args.clients)
        .map(|_| {
            let payload = payload.clone();
            async move {
                let mut h =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < end {
                    let t0 = Instant::now();
                    match node.append(payload.clone()).await {
                        Ok(_) => {
                            h.record(t0.elapsed().as_nanos() as u64).ok();
                            ok += 1;
                        }
                        Err(_) => failed += 1,
                    }
                }
                (h, ok, failed)
            }
        })
        .collect();
    let results: Vec<_> = futures::executor::block_on(clients.collect());
    let secs = started.elapsed().as_secs_f64();
    let after = node.wal_stats();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    let (mut ok, mut failed) = (0u64, 0u64);
    for (h, o, f) in results {
        hist.add(&h).expect("same bounds");
        ok += o;
        failed += f;
    }
    let syncs = after.syncs - before.syncs;
    let records = after.records - before.records;
    let mut json = serde_json::json!({
        "target": "log",
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "nodes": args.nodes,
        "clients": args.clients,
        "value_bytes": args.value_bytes,
        "duration_secs": secs,
        "ok": ok,
        "failed": failed,
        "records_per_sec": ok as f64 / secs,
        "leader_fsyncs": syncs,
        "entries_per_fsync": if syncs == 0 { 0.0 } else { records as f64 / syncs as f64 },
    });
    if let (Some(o), serde_json::Value::Object(p)) =
        (json.as_object_mut(), super::percentiles_us(&hist))
    {
        o.extend(p);
    }
    println!(
        "log {} x{}: {:.0} appends/s committed, p50 {:.0} us, p99 {:.0} us, {:.1} entries per leader fsync, {} failed",
        json["protocol"].as_str().unwrap_or(""),
        args.nodes,
        ok as f64 / secs,
        json["p50_us"].as_f64().unwrap_or(0.0),
        json["p99_us"].as_f64().unwrap_or(0.0),
        json["entries_per_fsync"].as_f64().unwrap_or(0.0),
        failed
    );
    drop(nodes);
    if args.json {
        println!("{json}");
    }
    Ok(())
}
