//! The load under faults: clients doing puts, linearizable gets and compare-and-set
//! transactions on a small key set, and watchers streaming every event of that key set across
//! reconnects. Everything is recorded with invocation and completion times for the checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorumkv_replication::checker::{Op, OpKind, OpResult};
use quorumkv_server::pb::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    compare, kv_client::KvClient, request_op, watch_client::WatchClient, watch_request,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

/// Keys are `chaos/k<i>`.
pub const PREFIX: &[u8] = b"chaos/";
const PREFIX_END: &[u8] = b"chaos0";

/// The name of key `i`.
pub fn key(i: u8) -> Vec<u8> {
    format!("chaos/k{i}").into_bytes()
}

fn key_index(k: &[u8]) -> Option<u8> {
    std::str::from_utf8(k.strip_prefix(b"chaos/k")?)
        .ok()?
        .parse()
        .ok()
}

fn value_of(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A write the cluster acknowledged: key, value and the revision it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// Key index.
    pub key: u8,
    /// Value written.
    pub value: u64,
    /// Revision of the write.
    pub revision: i64,
}

/// One event a watcher received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Revision of the event.
    pub revision: i64,
    /// Key index (`u8::MAX` for a key outside the workload's set).
    pub key: u8,
    /// Value (0 for deletes or values that do not parse).
    pub value: u64,
}

/// What a watcher observed over the run.
#[derive(Debug, Default, Clone)]
pub struct WatchLog {
    /// Events in the order received.
    pub events: Vec<Seen>,
    /// Revision ranges `[from, to)` the server reported compacted away from under the watcher.
    pub compacted: Vec<(i64, i64)>,
    /// Times the stream was re-established.
    pub reconnects: u64,
}

/// Everything recorded.
#[derive(Debug, Default)]
pub struct History {
    /// Operations for the linearizability check.
    pub ops: Vec<Op>,
    /// Acknowledged writes.
    pub acked: Vec<Acked>,
    /// Writes whose outcome is unknown.
    pub unknown: u64,
    /// Failed reads (no effect, left out of the history).
    pub failed_reads: u64,
    /// Writes refused before they were sent (no connection): no effect, left out.
    pub not_sent: u64,
}

/// Whether a failed call never reached a server: the connection could not be made, so the
/// request was not sent and cannot have taken effect.
fn never_sent(status: &tonic::Status) -> bool {
    let m = status.message();
    status.code() == tonic::Code::Unavailable
        && (m.contains("tcp connect error") || m.contains("error trying to connect"))
}

/// Shared between the workload's tasks.
#[derive(Debug)]
pub struct Shared {
    /// Set when the clients should stop.
    pub stop_clients: AtomicBool,
    /// Set when the watchers should stop.
    pub stop_watchers: AtomicBool,
    /// Recorded operations.
    pub history: Mutex<History>,
    /// Lowest revision every watcher has reached.
    pub watched: Vec<AtomicI64>,
    start: Instant,
}

impl Shared {
    /// State for `watchers` watchers.
    pub fn new(watchers: usize) -> Shared {
        Shared {
            stop_clients: AtomicBool::new(false),
            stop_watchers: AtomicBool::new(false),
            history: Mutex::new(History::default()),
            watched: (0..watchers).map(|_| AtomicI64::new(0)).collect(),
            start: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The revision every watcher has passed.
    pub fn watched_by_all(&self) -> i64 {
        self.watched
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

/// Runs client `id` against `channels` (one per member, with request timeouts) until told to
/// stop. Each failed write is recorded with an unknown outcome (unless it was never sent) and
/// the client continues under
/// a fresh identity on another member, as a crashed client would.
pub async fn client(id: u64, keys: u8, channels: Vec<Channel>, shared: Arc<Shared>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id << 32));
    let mut member = usize::try_from(id).unwrap_or(0) % channels.len();
    let mut identity = id;
    let mut seq = 0u64;
    let mut last_seen = vec![0u64; usize::from(keys)];
    while !shared.stop_clients.load(Ordering::Relaxed) {
        let mut kv = KvClient::new(channels[member].clone());
        let k = rng.random_range(0..keys);
        let roll = rng.random_range(0..100);
        seq += 1;
        let fresh = ((id + 1) << 40) | seq;
        let invoke = shared.now_us();
        let (kind, outcome) = if roll < 40 {
            let r = kv
                .put(PutRequest {
                    key: key(k),
                    value: fresh.to_string().into_bytes(),
                    ..Default::default()
                })
                .await;
            let rev = r.map(|r| r.into_inner().header.map_or(0, |h| h.revision));
            (
                OpKind::Put(fresh),
                rev.map(|rev| (OpResult::Done, Some(rev))),
            )
        } else if roll < 75 {
            let r = kv
                .range(RangeRequest {
                    key: key(k),
                    ..Default::default()
                })
                .await;
            let v = r.map(|r| {
                let v = r
                    .into_inner()
                    .kvs
                    .first()
                    .and_then(|kv| value_of(&kv.value))
                    .unwrap_or(0);
                last_seen[usize::from(k)] = v;
                (OpResult::Value(v), None)
            });
            (OpKind::Get, v)
        } else {
            let expect = last_seen[usize::from(k)];
            let r = kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Value as i32,
                        key: key(k),
                        range_end: vec![],
                        target_union: Some(compare::TargetUnion::Value(
                            expect.to_string().into_bytes(),
                        )),
                    }],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: key(k),
                            value: fresh.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await;
            let out = r.map(|r| {
                let r = r.into_inner();
                let rev = r.header.map_or(0, |h| h.revision);
                (OpResult::Swapped(r.succeeded), r.succeeded.then_some(rev))
            });
            (OpKind::Cas { expect, new: fresh }, out)
        };
        let complete = shared.now_us();
        let failed = outcome.is_err();
        {
            let mut h = shared.history.lock();
            match outcome {
                Ok((result, rev)) => {
                    h.ops.push(Op {
                        client: identity,
                        key: k,
                        kind,
                        result,
                        invoke,
                        complete,
                    });
                    if let Some(revision) = rev {
                        let value = match kind {
                            OpKind::Put(v) | OpKind::Cas { new: v, .. } => v,
                            OpKind::Get => 0,
                        };
                        h.acked.push(Acked {
                            key: k,
                            value,
                            revision,
                        });
                    }
                }
                Err(_) if kind == OpKind::Get => h.failed_reads += 1,
                Err(e) if never_sent(&e) => h.not_sent += 1,
                Err(_) => {
                    h.unknown += 1;
                    h.ops.push(Op {
                        client: identity,
                        key: k,
                        kind,
                        result: OpResult::Unknown,
                        invoke,
                        complete,
                    });
                }
            }
        }
        if failed {
            identity += 1 << 20;
            member = (member + 1 + rng.random_range(0..channels.len())) % channels.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Runs watcher `w` from revision `start` until told to stop, reconnecting to the next member
/// from where it left off whenever its stream ends.
pub async fn watcher(
    w: usize,
    start: i64,
    channels: Vec<Channel>,
    shared: Arc<Shared>,
) -> WatchLog {
    let mut log = WatchLog::default();
    let mut next = start;
    let mut member = w % channels.len();
    let mut first = true;
    while !shared.stop_watchers.load(Ordering::Relaxed) {
        if !first {
            log.reconnects += 1;
            member = (member + 1) % channels.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first = false;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: PREFIX.to_vec(),
                    range_end: PREFIX_END.to_vec(),
                    start_revision: next,
                    ..Default::default()
                },
            )),
        };
        if tx.send(create).await.is_err() {
            continue;
        }
        let mut wc = WatchClient::new(channels[member].clone());
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            wc.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        let Ok(Ok(resp)) = opened else {
            continue;
        };
        let mut stream = resp.into_inner();
        loop {
            if shared.stop_watchers.load(Ordering::Relaxed) {
                return log;
            }
            let msg = match tokio::time::timeout(Duration::from_millis(500), stream.message()).await
            {
                Err(_) => continue,
                Ok(Ok(Some(m))) => m,
                Ok(_) => break,
            };
            if msg.canceled {
                if msg.compact_revision > next {
                    log.compacted.push((next, msg.compact_revision));
                    next = msg.compact_revision;
                }
                break;
            }
            for ev in msg.events {
                let Some(kv) = ev.kv else { continue };
                log.events.push(Seen {
                    revision: kv.mod_revision,
                    key: key_index(&kv.key).unwrap_or(u8::MAX),
                    value: value_of(&kv.value).unwrap_or(0),
                });
                next = next.max(kv.mod_revision + 1);
            }
            shared.watched[w].store(next - 1, Ordering::Relaxed);
        }
        drop(tx);
    }
    log
}
