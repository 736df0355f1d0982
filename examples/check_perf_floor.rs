//! A calibration server for `etcdctl check perf`. It answers etcd's `KV.Put` after the least
//! work an acknowledged write can take on this machine, and keeps nothing else:
//! - each put's key and value go into one file, every put that arrives while the previous group
//!   is syncing in one pwrite, and one fdatasync per group (group commit, as a member's log);
//! - ranges find nothing and deletes delete nothing; the other calls are unimplemented.
//!
//! The throughput etcdctl reaches against it bounds what any server that syncs before it answers
//! can reach with the same client on the same machine. With `--no-sync` nothing is written, and
//! it bounds what the client itself can drive. It measures; it stores nothing.
//!
//! Run with `cargo run --release --example check_perf_floor -- --log-file <file>`, then
//! `etcdctl check perf --load=xl`; `benches/check_perf.sh xl floor1 nosync1` runs both.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;

use clap::Parser;
use quorumkv::server::pb::etcdserverpb::kv_server::{Kv, KvServer};
use quorumkv::server::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// Puts queued for the syncer at most; more are refused until it catches up.
const QUEUED_PUTS_MAX: usize = 65_536;

#[derive(Parser)]
struct Args {
    /// Where clients connect.
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen: std::net::SocketAddr,
    /// The file puts are written to (created; its first `--log-bytes` are overwritten in turn).
    #[arg(long, default_value = "check-perf-floor.log")]
    log_file: PathBuf,
    /// Bytes of the file used, round and round.
    #[arg(long, default_value_t = 64 << 20)]
    log_bytes: u64,
    /// Answer at once: no write and no fdatasync.
    #[arg(long)]
    no_sync: bool,
}

/// A put waiting for its group's fdatasync.
struct Queued {
    bytes: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Writes each group of queued puts at the next offset of a preallocated ring, syncs once,
/// then answers the group. Stops at the first IO error, which every later put gets.
fn syncer(file: File, ring_bytes: u64, queue: mpsc::Receiver<Queued>) {
    let mut offset = 0u64;
    let mut buf = Vec::new();
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter());
        buf.clear();
        for q in &group {
            buf.extend_from_slice(&q.bytes);
        }
        if offset + buf.len() as u64 > ring_bytes {
            offset = 0;
        }
        let result = file
            .write_all_at(&buf, offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| e.to_string());
        offset += buf.len() as u64;
        for q in group {
            let _ = q.done.send(result.clone());
        }
        if result.is_err() {
            return;
        }
    }
}

struct Floor {
    revision: AtomicI64,
    queue: Option<mpsc::SyncSender<Queued>>,
}

impl Floor {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 1,
            member_id: 1,
            revision,
            raft_term: 1,
        })
    }
}

#[tonic::async_trait]
impl Kv for Floor {
    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Ok(Response::new(RangeResponse {
            header: self.header(self.revision.load(Ordering::Relaxed)),
            ..RangeResponse::default()
        }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        if let Some(queue) = &self.queue {
            let put = req.into_inner();
            let mut bytes = put.key;
            bytes.extend_from_slice(&put.value);
            let (done, answer) = oneshot::channel();
            queue
                .try_send(Queued { bytes, done })
                .map_err(|_| Status::resource_exhausted("too many puts queued"))?;
            match answer.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Status::unavailable(format!("log failed: {e}"))),
                Err(_) => return Err(Status::unavailable("log stopped")),
            }
        }
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response::new(PutResponse {
            header: self.header(revision),
            prev_kv: None,
        }))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(DeleteRangeResponse {
            header: self.header(self.revision.load(Ordering::Relaxed)),
            ..DeleteRangeResponse::default()
        }))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented(
            "the calibration server answers puts only",
        ))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented(
            "the calibration server answers puts only",
        ))
    }
}

/// Creates the log file with its first `ring_bytes` written and synced, so later writes
/// overwrite allocated blocks and an fdatasync has no metadata to commit.
fn preallocate(path: &Path, ring_bytes: u64) -> std::io::Result<File> {
    let file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < ring_bytes {
        let n = chunk.len().min((ring_bytes - at) as usize);
        file.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(file)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let queue = if args.no_sync {
        None
    } else {
        let file = preallocate(&args.log_file, args.log_bytes)
            .map_err(|e| format!("{}: {e}", args.log_file.display()))?;
        let (tx, rx) = mpsc::sync_channel(QUEUED_PUTS_MAX);
        let ring_bytes = args.log_bytes;
        std::thread::Builder::new()
            .name("floor-sync".into())
            .spawn(move || syncer(file, ring_bytes, rx))?;
        Some(tx)
    };
    // One worker, as a member runs on two cores.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        eprintln!("answering puts on {}", args.listen);
        let floor = Floor {
            revision: AtomicI64::new(1),
            queue,
        };
        tonic::transport::Server::builder()
            .add_service(KvServer::new(floor))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await?;
        Ok(())
    })
}
