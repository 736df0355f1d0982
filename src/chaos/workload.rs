//! The load under faults: clients doing puts (some of them large, up to 1 MiB), deletes,
//! linearizable gets, range reads with limits, compare-and-set transactions and multi-key
//! transactions on a small key set, and watchers streaming every event of that key set across
//! reconnects (every other one with previous values and deletes filtered out). Everything is
//! recorded with invocation and completion times for the checks.
//!
//! Each key is a register for the linearizability check: its value is the number a write put
//! in it, or [`ABSENT`] once deleted. A read of several keys at once (a limited range, a
//! transaction's reads) is recorded as one read per key, all over the same interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quorumkv_replication::checker::{Op, OpKind, OpResult};
use quorumkv_server::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, compare, kv_client::KvClient, request_op, response_op,
    watch_client::WatchClient, watch_create_request::FilterType, watch_request,
};
use quorumkv_server::pb::mvccpb::{KeyValue, event::EventType};
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

/// The largest answer a client takes (values reach 1 MiB; a watch response batches events).
pub const ANSWER_BYTES_MAX: usize = 256 << 20;

/// The register value of a deleted (or never written) key.
pub const ABSENT: u64 = u64::MAX;

/// The number a value carries: its digits, before any `#` padding.
pub fn value_of(v: &[u8]) -> Option<u64> {
    let digits = v.split(|b| *b == b'#').next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A value carrying `n`, padded with `#`s to `bytes` bytes when that is longer.
fn padded(n: u64, bytes: usize) -> Vec<u8> {
    let mut v = n.to_string().into_bytes();
    if bytes > v.len() {
        v.resize(bytes, b'#');
    }
    v
}

/// The register value a read found: the key's number, or [`ABSENT`].
fn read_value(kv: Option<&KeyValue>) -> u64 {
    kv.map_or(ABSENT, |kv| value_of(&kv.value).unwrap_or(0))
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
    /// Value ([`ABSENT`] for deletes, 0 for values that do not parse).
    pub value: u64,
}

/// What a watcher that asked for previous values was told preceded an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prev {
    /// Revision of the event.
    pub revision: i64,
    /// Key index of the event.
    pub key: u8,
    /// The key's value before it ([`ABSENT`] when the event carried no previous value).
    pub value: u64,
    /// The revision of that value (0 when absent).
    pub mod_revision: i64,
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
    /// Whether the stream left deletes out (etcd's NODELETE filter).
    pub no_deletes: bool,
    /// Previous values, for a stream that asked for them (`prev_kv`).
    pub prevs: Vec<Prev>,
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

    /// Microseconds since the run started (the histories' clock).
    pub fn now_us(&self) -> u64 {
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

/// What one request of a client did: operations for the history, and writes with their
/// revisions.
#[derive(Default)]
struct Done {
    ops: Vec<(u8, OpKind, OpResult)>,
    acked: Vec<Acked>,
}

/// The keys and register values of a range answer, as reads: every key of the workload's set
/// that sorts before the last returned (or every key, when nothing more was left out) and was
/// not returned is absent.
fn range_reads(keys: u8, kvs: &[KeyValue], more: bool, seen: &mut [(u64, i64)]) -> Done {
    let last = kvs.last().map(|kv| kv.key.clone());
    let mut done = Done::default();
    for k in 0..keys {
        let name = key(k);
        let found = kvs.iter().find(|kv| kv.key == name);
        let covered = !more || last.as_ref().is_some_and(|l| name <= *l);
        if found.is_none() && !covered {
            continue;
        }
        let v = read_value(found);
        seen[usize::from(k)] = (v, found.map_or(0, |kv| kv.mod_revision));
        done.ops.push((k, OpKind::Get, OpResult::Value(v)));
    }
    done
}

/// The comparison a compare-and-set makes for the value it last read: the key is absent, or
/// still holds the write it read (values are unique per write, so the revision says which).
fn unchanged(k: u8, (value, mod_revision): (u64, i64)) -> Compare {
    let (target, union) = if value == ABSENT {
        (
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(0),
        )
    } else {
        (
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(mod_revision),
        )
    };
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key(k),
        range_end: vec![],
        target_union: Some(union),
    }
}

fn put_op(k: u8, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key(k),
            value,
            ..Default::default()
        })),
    }
}

/// Runs client `id` against `channels` (one per member, with request timeouts) until told to
/// stop. Each failed write is recorded with an unknown outcome (unless it was never sent) and
/// the client continues under a fresh identity on another member, as a crashed client would.
pub async fn client(
    id: u64,
    keys: u8,
    value_bytes_max: usize,
    channels: Vec<Channel>,
    shared: Arc<Shared>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id << 32));
    let mut member = usize::try_from(id).unwrap_or(0) % channels.len();
    let mut identity = id;
    let mut seq = 0u64;
    // The value and revision each key had when this client last read it; before its first
    // read, a value no key holds and a revision no write has, so a compare-and-set fails.
    let mut seen = vec![(ABSENT - 1, -1i64); usize::from(keys)];
    while !shared.stop_clients.load(Ordering::Relaxed) {
        let mut kv =
            KvClient::new(channels[member].clone()).max_decoding_message_size(ANSWER_BYTES_MAX);
        let k = rng.random_range(0..keys);
        let roll = rng.random_range(0..100);
        seq += 1;
        let fresh = ((id + 1) << 40) | seq;
        // One put in fifty carries 1 KiB up to the largest value.
        let bytes = if rng.random_range(0..50) == 0 {
            rng.random_range(1 << 10..=value_bytes_max.max(1 << 10))
        } else {
            0
        };
        let invoke = shared.now_us();
        // The writes a request makes, recorded as unknown if it fails.
        let mut writes: Vec<(u8, OpKind)> = Vec::new();
        let outcome: Result<Done, tonic::Status> = if roll < 30 {
            writes.push((k, OpKind::Put(fresh)));
            kv.put(PutRequest {
                key: key(k),
                value: padded(fresh, bytes),
                ..Default::default()
            })
            .await
            .map(|r| {
                let revision = r.into_inner().header.map_or(0, |h| h.revision);
                Done {
                    ops: vec![(k, OpKind::Put(fresh), OpResult::Done)],
                    acked: vec![Acked {
                        key: k,
                        value: fresh,
                        revision,
                    }],
                }
            })
        } else if roll < 38 {
            writes.push((k, OpKind::Put(ABSENT)));
            kv.delete_range(DeleteRangeRequest {
                key: key(k),
                ..Default::default()
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                let revision = r.header.map_or(0, |h| h.revision);
                Done {
                    ops: vec![(k, OpKind::Put(ABSENT), OpResult::Done)],
                    // Deleting an absent key makes no revision.
                    acked: (r.deleted > 0)
                        .then_some(Acked {
                            key: k,
                            value: ABSENT,
                            revision,
                        })
                        .into_iter()
                        .collect(),
                }
            })
        } else if roll < 60 {
            kv.range(RangeRequest {
                key: key(k),
                ..Default::default()
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                let found = r.kvs.first();
                let v = read_value(found);
                seen[usize::from(k)] = (v, found.map_or(0, |kv| kv.mod_revision));
                Done {
                    ops: vec![(k, OpKind::Get, OpResult::Value(v))],
                    acked: Vec::new(),
                }
            })
        } else if roll < 70 {
            kv.range(RangeRequest {
                key: PREFIX.to_vec(),
                range_end: PREFIX_END.to_vec(),
                limit: rng.random_range(1..=3),
                ..Default::default()
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                range_reads(keys, &r.kvs, r.more, &mut seen)
            })
        } else if roll < 88 {
            let expect = seen[usize::from(k)];
            writes.push((
                k,
                OpKind::Cas {
                    expect: expect.0,
                    new: fresh,
                },
            ));
            kv.txn(TxnRequest {
                compare: vec![unchanged(k, expect)],
                success: vec![put_op(k, padded(fresh, bytes))],
                failure: vec![],
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                let revision = r.header.map_or(0, |h| h.revision);
                Done {
                    ops: vec![(
                        k,
                        OpKind::Cas {
                            expect: expect.0,
                            new: fresh,
                        },
                        OpResult::Swapped(r.succeeded),
                    )],
                    acked: r
                        .succeeded
                        .then_some(Acked {
                            key: k,
                            value: fresh,
                            revision,
                        })
                        .into_iter()
                        .collect(),
                }
            })
        } else {
            // One transaction writes two keys and reads two others, all at its revision.
            let others: Vec<u8> = (1..keys).map(|d| (k + d) % keys).take(3).collect();
            let second = others.first().copied().filter(|_| others.len() == 3);
            seq += 1;
            let fresh2 = ((id + 1) << 40) | seq;
            writes.push((k, OpKind::Put(fresh)));
            writes.extend(second.map(|s| (s, OpKind::Put(fresh2))));
            let reads: Vec<u8> = others
                .iter()
                .skip(usize::from(second.is_some()))
                .copied()
                .collect();
            let mut success = vec![put_op(k, padded(fresh, bytes))];
            success.extend(second.map(|s| put_op(s, padded(fresh2, 0))));
            success.extend(reads.iter().map(|&o| RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key(o),
                    ..Default::default()
                })),
            }));
            kv.txn(TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                let revision = r.header.map_or(0, |h| h.revision);
                let mut done = Done {
                    ops: vec![(k, OpKind::Put(fresh), OpResult::Done)],
                    acked: vec![Acked {
                        key: k,
                        value: fresh,
                        revision,
                    }],
                };
                if let Some(s) = second {
                    done.ops.push((s, OpKind::Put(fresh2), OpResult::Done));
                    done.acked.push(Acked {
                        key: s,
                        value: fresh2,
                        revision,
                    });
                }
                let skip = 1 + usize::from(second.is_some());
                for (o, resp) in reads.iter().zip(r.responses.iter().skip(skip)) {
                    if let Some(response_op::Response::ResponseRange(rr)) = &resp.response {
                        let found = rr.kvs.first();
                        let v = read_value(found);
                        seen[usize::from(*o)] = (v, found.map_or(0, |kv| kv.mod_revision));
                        done.ops.push((*o, OpKind::Get, OpResult::Value(v)));
                    }
                }
                done
            })
        };
        let complete = shared.now_us();
        let failed = outcome.is_err();
        {
            let mut h = shared.history.lock();
            match outcome {
                Ok(done) => {
                    for (key, kind, result) in done.ops {
                        h.ops.push(Op {
                            client: identity,
                            key,
                            kind,
                            result,
                            invoke,
                            complete,
                        });
                    }
                    h.acked.extend(done.acked);
                }
                Err(_) if writes.is_empty() => h.failed_reads += 1,
                Err(e) if never_sent(&e) => h.not_sent += 1,
                Err(_) => {
                    h.unknown += 1;
                    for (key, kind) in writes {
                        h.ops.push(Op {
                            client: identity,
                            key,
                            kind,
                            result: OpResult::Unknown,
                            invoke,
                            complete,
                        });
                    }
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
/// from where it left off whenever its stream ends. Odd-numbered watchers ask for previous
/// values and filter deletes out.
pub async fn watcher(
    w: usize,
    start: i64,
    channels: Vec<Channel>,
    shared: Arc<Shared>,
) -> WatchLog {
    let mut log = WatchLog {
        no_deletes: w % 2 == 1,
        ..WatchLog::default()
    };
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
                    prev_kv: log.no_deletes,
                    filters: if log.no_deletes {
                        vec![FilterType::Nodelete as i32]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                },
            )),
        };
        if tx.send(create).await.is_err() {
            continue;
        }
        // Events carry values of up to 1 MiB, and a response may hold many.
        let mut wc =
            WatchClient::new(channels[member].clone()).max_decoding_message_size(ANSWER_BYTES_MAX);
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
                let deleted = ev.r#type == EventType::Delete as i32;
                log.events.push(Seen {
                    revision: kv.mod_revision,
                    key: key_index(&kv.key).unwrap_or(u8::MAX),
                    value: if deleted {
                        ABSENT
                    } else {
                        value_of(&kv.value).unwrap_or(0)
                    },
                });
                if log.no_deletes {
                    log.prevs.push(Prev {
                        revision: kv.mod_revision,
                        key: key_index(&kv.key).unwrap_or(u8::MAX),
                        value: read_value(ev.prev_kv.as_ref()),
                        mod_revision: ev.prev_kv.as_ref().map_or(0, |p| p.mod_revision),
                    });
                }
                next = next.max(kv.mod_revision + 1);
            }
            shared.watched[w].store(next - 1, Ordering::Relaxed);
        }
        drop(tx);
    }
    log
}
