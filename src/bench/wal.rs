//! `quorumkv bench wal`: concurrent appenders, each appending one record and waiting until it
//! is durable, against a fresh log on a real disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use quorumkv_wal::{Backend, Wal, WalOptions};

/// Options of the WAL benchmark.
#[derive(Debug, Args)]
pub struct WalArgs {
    /// Directory for the log (a fresh sub-directory is created and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// io backend: uring or pwrite.
    #[arg(long, default_value = "pwrite")]
    backend: Backend,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 256)]
    record_bytes: usize,
    /// Concurrent appenders, each with one append in flight.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Run appenders as OS threads instead of tasks on one thread.
    #[arg(long)]
    threads: bool,
    /// Seconds to measure (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// One fdatasync per append: no group commit, no pipelining.
    #[arg(long)]
    sync_each: bool,
    /// Group-commit cap on records per batch.
    #[arg(long, default_value_t = 4096)]
    batch_records_max: usize,
    /// Group-commit cap on bytes per batch.
    #[arg(long, default_value_t = 4 << 20)]
    batch_bytes_max: usize,
    /// Extra wait for a batch to fill, in microseconds.
    #[arg(long, default_value_t = 0)]
    commit_delay_us: u64,
    /// Most wait for a batch to reach the size of the last synced group, in microseconds.
    #[arg(long, default_value_t = 50)]
    batch_linger_us: u64,
    /// Batches written but not yet synced (1 = no pipelining).
    #[arg(long, default_value_t = 2)]
    pipeline_depth: usize,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// Do not preallocate and zero-fill segments ahead of need.
    #[arg(long)]
    no_preallocate: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

const WARMUP: Duration = Duration::from_millis(500);

struct Outcome {
    hist: Histogram<u64>,
    records: u64,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

async fn appender(
    wal: Arc<Wal>,
    payload: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    warm: Instant,
) -> Result<Outcome, String> {
    let mut out = Outcome {
        hist: new_hist(),
        records: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let ticket = wal
            .append([payload.as_slice()])
            .map_err(|e| e.to_string())?;
        ticket.await.map_err(|e| e.to_string())?;
        if t0 >= warm {
            out.hist.record(t0.elapsed().as_nanos() as u64).ok();
            out.records += 1;
        }
    }
    Ok(out)
}

fn blocking_appender(
    wal: &Wal,
    payload: &[u8],
    stop: &AtomicBool,
    warm: Instant,
) -> Result<Outcome, String> {
    let mut out = Outcome {
        hist: new_hist(),
        records: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        wal.append([payload])
            .map_err(|e| e.to_string())?
            .wait()
            .map_err(|e| e.to_string())?;
        if t0 >= warm {
            out.hist.record(t0.elapsed().as_nanos() as u64).ok();
            out.records += 1;
        }
    }
    Ok(out)
}

/// Runs the benchmark.
pub fn run(args: &WalArgs) -> Result<(), String> {
    let dir = args
        .dir
        .join(format!("quorumkv-bench-wal-{}", std::process::id()));
    let _cleanup = super::RemoveOnDrop(dir.clone());
    let mut opts = WalOptions {
        segment_bytes: args.segment_bytes,
        record_bytes_max: args
            .record_bytes
            .max(WalOptions::default().record_bytes_max),
        batch_records_max: args.batch_records_max,
        batch_bytes_max: args.batch_bytes_max.max(args.record_bytes + 64),
        commit_delay: Duration::from_micros(args.commit_delay_us),
        pipeline_depth: args.pipeline_depth,
        batch_linger: Duration::from_micros(args.batch_linger_us),
        preallocate: !args.no_preallocate,
        ..WalOptions::default()
    };
    opts.queued_bytes_max = opts.queued_bytes_max.max(opts.batch_bytes_max * 2);
    if args.sync_each {
        opts.batch_records_max = 1;
        opts.pipeline_depth = 1;
        opts.commit_delay = Duration::ZERO;
        opts.batch_linger = Duration::ZERO;
    }
    let wal = Arc::new(Wal::open(&dir, opts, args.backend).map_err(|e| e.to_string())?);
    let payload = Arc::new(
        (0..args.record_bytes)
            .map(|i| (i * 7) as u8)
            .collect::<Vec<u8>>(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let warm = start + WARMUP;
    let end = warm + Duration::from_secs_f64(args.duration_secs);
    let timer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let stats_at_warm = {
        // Sample the counters at the end of the warm-up from a helper thread.
        let wal = wal.clone();
        std::thread::spawn(move || {
            std::thread::sleep(warm.saturating_duration_since(Instant::now()));
            wal.stats()
        })
    };
    let outcomes: Vec<Result<Outcome, String>> = if args.threads {
        let handles: Vec<_> = (0..args.appenders)
            .map(|_| {
                let (wal, payload, stop) = (wal.clone(), payload.clone(), stop.clone());
                std::thread::spawn(move || blocking_appender(&wal, &payload, &stop, warm))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("appender thread"))
            .collect()
    } else {
        let tasks: FuturesUnordered<_> = (0..args.appenders)
            .map(|_| appender(wal.clone(), payload.clone(), stop.clone(), warm))
            .collect();
        futures::executor::block_on(tasks.collect())
    };
    let elapsed = warm.elapsed().as_secs_f64();
    timer.join().expect("timer thread");
    let before = stats_at_warm.join().expect("stats thread");
    let after = wal.stats();
    let mut hist = new_hist();
    let mut records = 0;
    for o in outcomes {
        let o = o?;
        hist.add(&o.hist).expect("same histogram bounds");
        records += o.records;
    }
    let fsyncs = after.syncs - before.syncs;
    let rps = records as f64 / elapsed;
    let mut json = serde_json::json!({
        "target": "wal",
        "backend": wal.backend_name(),
        "mode": if args.sync_each { "sync-each" } else { "group-commit" },
        "appenders": args.appenders,
        "appender_threads": args.threads,
        "record_bytes": args.record_bytes,
        "pipeline_depth": wal.options().pipeline_depth,
        "commit_delay_us": args.commit_delay_us,
        "batch_linger_us": args.batch_linger_us,
        "preallocate": !args.no_preallocate,
        "duration_secs": elapsed,
        "records": records,
        "records_per_sec": rps,
        "mb_per_sec": rps * args.record_bytes as f64 / 1e6,
        "fsyncs": fsyncs,
        "fsync_mean_us": if fsyncs == 0 { 0.0 } else { (after.sync_nanos - before.sync_nanos) as f64 / fsyncs as f64 / 1000.0 },
        "records_per_fsync": if fsyncs == 0 { 0.0 } else { (after.records - before.records) as f64 / fsyncs as f64 },
    });
    if let (Some(obj), serde_json::Value::Object(p)) =
        (json.as_object_mut(), super::percentiles_us(&hist))
    {
        obj.extend(p);
    }
    println!(
        "wal {} {}: {:.0} records/s, {:.1} MB/s, {} fsyncs, {:.1} records/fsync, fsync mean {:.0} us, p50 {:.0} us, p99 {:.0} us",
        json["backend"].as_str().unwrap_or(""),
        json["mode"].as_str().unwrap_or(""),
        rps,
        json["mb_per_sec"].as_f64().unwrap_or(0.0),
        fsyncs,
        json["records_per_fsync"].as_f64().unwrap_or(0.0),
        json["fsync_mean_us"].as_f64().unwrap_or(0.0),
        json["p50_us"].as_f64().unwrap_or(0.0),
        json["p99_us"].as_f64().unwrap_or(0.0),
    );
    drop(wal);
    if args.json {
        println!("{json}");
    }
    Ok(())
}
