//! `quorumkv bench btree`: the tree's three workloads of the redb comparison, on our tree
//! alone: batched durable inserts, random point reads, range scans.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use quorumkv_btree::{BTreeOptions, Db};

use super::data::{XorShift as Rng, key};

/// Options of the B+tree benchmark.
#[derive(Debug, Args)]
pub struct BtreeArgs {
    /// Directory for the database file (a fresh file is created and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Keys loaded before the read workloads.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Value bytes.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Random inserts per durable commit.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Keys per range scan.
    #[arg(long, default_value_t = 1000)]
    scan: usize,
    /// Seconds per workload.
    #[arg(long, default_value_t = 3.0)]
    duration_secs: f64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn summary(h: &Histogram<u64>, ops: u64, secs: f64, per_op: u64) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ops": ops,
        "ops_per_sec": ops as f64 / secs,
        "items_per_sec": (ops * per_op) as f64 / secs,
    });
    if let (Some(o), serde_json::Value::Object(p)) = (v.as_object_mut(), super::percentiles_us(h)) {
        o.extend(p);
    }
    v
}

/// Runs the benchmark.
pub fn run(args: &BtreeArgs) -> Result<(), String> {
    let path = args
        .dir
        .join(format!("quorumkv-bench-btree-{}.db", std::process::id()));
    let _cleanup = super::RemoveOnDrop(path.clone());
    let db = Db::open(&path, BTreeOptions::default()).map_err(|e| e.to_string())?;
    let value = vec![7u8; args.value_bytes];
    let t0 = Instant::now();
    let chunk = 50_000u64;
    let mut i = 0;
    while i < args.keys {
        let mut t = db.begin_write().map_err(|e| e.to_string())?;
        for j in i..(i + chunk).min(args.keys) {
            t.insert(&key(j), &value).map_err(|e| e.to_string())?;
        }
        t.commit().map_err(|e| e.to_string())?;
        i += chunk;
    }
    let load_secs = t0.elapsed().as_secs_f64();
    let run_for = Duration::from_secs_f64(args.duration_secs);

    let r = db.begin_read();
    let (mut h, mut n, mut rng) = (hist(), 0u64, Rng(1));
    let start = Instant::now();
    while start.elapsed() < run_for {
        for _ in 0..1000 {
            let k = key(rng.next_u64() % args.keys.max(1));
            let t = Instant::now();
            let v = r.get(&k).map_err(|e| e.to_string())?;
            h.record(t.elapsed().as_nanos() as u64).ok();
            std::hint::black_box(v);
        }
        n += 1000;
    }
    let get = summary(&h, n, start.elapsed().as_secs_f64(), 1);

    let (mut h, mut n, mut rng) = (hist(), 0u64, Rng(2));
    let start = Instant::now();
    while start.elapsed() < run_for {
        let k = key(rng.next_u64() % args.keys.max(1));
        let t = Instant::now();
        let mut bytes = 0usize;
        for x in r.range(&k[..]..).take(args.scan) {
            let (k, v) = x.map_err(|e| e.to_string())?;
            bytes += k.len() + v.len();
        }
        h.record(t.elapsed().as_nanos() as u64).ok();
        std::hint::black_box(bytes);
        n += 1;
    }
    let scan = summary(&h, n, start.elapsed().as_secs_f64(), args.scan as u64);
    drop(r);

    let (mut h, mut n, mut rng) = (hist(), 0u64, Rng(3));
    let start = Instant::now();
    while start.elapsed() < run_for {
        let t = Instant::now();
        let mut w = db.begin_write().map_err(|e| e.to_string())?;
        for _ in 0..args.batch {
            w.insert(&key(rng.next_u64()), &value)
                .map_err(|e| e.to_string())?;
        }
        w.commit().map_err(|e| e.to_string())?;
        h.record(t.elapsed().as_nanos() as u64).ok();
        n += 1;
    }
    let insert = summary(&h, n, start.elapsed().as_secs_f64(), args.batch as u64);
    let stats = db.stats();
    let json = serde_json::json!({
        "target": "btree",
        "keys": args.keys,
        "value_bytes": args.value_bytes,
        "load_secs": load_secs,
        "file_bytes": stats.file_bytes,
        "insert_batch": insert,
        "get_random": get,
        "range_scan": scan,
    });
    println!(
        "btree: insert_batch {:.0} inserts/s ({} per durable commit, p99 {:.0} us); get_random {:.0} gets/s (p50 {:.2} us); range_scan {:.0} keys/s ({} per scan)",
        json["insert_batch"]["items_per_sec"]
            .as_f64()
            .unwrap_or(0.0),
        args.batch,
        json["insert_batch"]["p99_us"].as_f64().unwrap_or(0.0),
        json["get_random"]["ops_per_sec"].as_f64().unwrap_or(0.0),
        json["get_random"]["p50_us"].as_f64().unwrap_or(0.0),
        json["range_scan"]["items_per_sec"].as_f64().unwrap_or(0.0),
        args.scan,
    );
    if args.json {
        println!("{json}");
    }
    Ok(())
}
