//! `quorumkv bench <target>`: benchmarks that print a human summary and, with `--json`, one
//! JSON object as the last line of stdout.

mod btree;
pub mod data;
mod grpc;
mod load;
mod log;
mod plot;
mod wal;
mod zk;

use clap::Subcommand;

pub use load::parse_duration;

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum Target {
    /// Durable appends to the write-ahead log.
    Wal(wal::WalArgs),
    /// Batched inserts, point reads and range scans of the B+tree.
    Btree(btree::BtreeArgs),
    /// Committed appends to an in-process replicated log (3 nodes on loopback, real fsync).
    Log(log::LogArgs),
    /// Puts through the etcd v3 API (quorumkv or etcd).
    Put(load::PutArgs),
    /// Single-key ranges through the etcd v3 API, linearizable or serializable.
    Range(load::RangeArgs),
    /// Transactions of puts (or reads) through the etcd v3 API.
    Txn(load::TxnArgs),
    /// Puts while watchers stream every event: put throughput and event delivery delay.
    Watch(load::WatchArgs),
    /// Creates of new znodes through ZooKeeper's protocol (quorumkv or ZooKeeper).
    ZkCreate(zk::ZkArgs),
    /// setData on znodes of the key space through ZooKeeper's protocol.
    ZkSet(zk::ZkArgs),
    /// getData of znodes of the key space through ZooKeeper's protocol.
    ZkGet(zk::ZkArgs),
    /// PNG charts of benches/compare.sh results: throughput by clients, latency percentiles.
    Plot(plot::PlotArgs),
}

/// Runs one benchmark.
pub fn run(target: Target) -> Result<(), String> {
    match target {
        Target::Wal(args) => wal::run(&args),
        Target::Btree(args) => btree::run(&args),
        Target::Log(args) => log::run(&args),
        Target::Put(args) => load::put(&args),
        Target::Range(args) => load::range(&args),
        Target::Txn(args) => load::txn(&args),
        Target::Watch(args) => load::watch(&args),
        Target::ZkCreate(args) => zk::run(zk::Workload::Create, &args),
        Target::ZkSet(args) => zk::run(zk::Workload::Set, &args),
        Target::ZkGet(args) => zk::run(zk::Workload::Get, &args),
        Target::Plot(args) => plot::run(&args),
    }
}

/// Latency percentiles in microseconds from a histogram of nanoseconds.
pub(crate) fn percentiles_us(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "mean_us": h.mean() / 1000.0,
        "p50_us": us(0.50),
        "p90_us": us(0.90),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": h.max() as f64 / 1000.0,
    })
}

/// Removes a benchmark's scratch file or directory when the benchmark ends, however it ends.
pub(crate) struct RemoveOnDrop(pub(crate) std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
