//! etcd's `Watch` service: one task per stream pulls events for its watchers from the hub's
//! ring (or the tree, for history older than the ring) and sends them in revision order.
//! Sending waits for the client, so a slow client slows only its own stream, and memory per
//! stream stays bounded.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::kv::in_range;
use crate::etcd::range::to_pb;
use crate::etcd::{KvError, KvServer};
use crate::member::keyspace;
use crate::mvcc::{Event, KeyValue, Mvcc, MvccError};
use crate::pb::etcdserverpb::{
    self as pb, watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
};
use crate::pb::mvccpb;

/// Events per response at most (a revision is never split).
const EVENTS_PER_RESPONSE: usize = 1000;
/// Shortest interval between progress notifications (a zero or tiny setting would spin).
const PROGRESS_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// The Watch service of one member.
#[derive(Debug, Clone)]
pub struct WatchService {
    pub(crate) server: Arc<KvServer>,
}

struct Watcher {
    key: Vec<u8>,
    end: Vec<u8>,
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    sent_since_progress: bool,
    /// Split responses larger than the request limit (etcd's `fragment`).
    fragment: bool,
}

pub(crate) type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

struct StreamState {
    server: Arc<KvServer>,
    /// The token the stream was opened with: each create is checked for read access.
    token: Option<String>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    out: Out,
}

fn to_pb_event(e: &Event, prev: Option<KeyValue>) -> mvccpb::Event {
    mvccpb::Event {
        r#type: if e.delete {
            mvccpb::event::EventType::Delete as i32
        } else {
            mvccpb::event::EventType::Put as i32
        },
        kv: Some(to_pb(e.kv.clone())),
        prev_kv: prev.map(to_pb),
    }
}

/// `events` as sent to a watcher that asked for previous versions: those an event does not
/// carry are read from one snapshot of `mvcc`.
fn with_prev(mvcc: &Mvcc, events: &[&Event]) -> Result<Vec<mvccpb::Event>, MvccError> {
    let mut snap = None;
    events
        .iter()
        .map(|e| {
            let prev = if e.prev.is_some() || e.prev_rev.is_none() {
                e.prev.clone()
            } else {
                snap.get_or_insert_with(|| mvcc.snapshot()).prev(e)?
            };
            Ok(to_pb_event(e, prev))
        })
        .collect()
}

/// The reason a watch refused by authentication carries: as in etcd, the text of the gRPC
/// error the same refusal gives a unary call, and "permission denied" for anything else.
fn denial_reason(e: &KvError) -> String {
    let e = match e {
        KvError::UserEmpty | KvError::InvalidAuthToken | KvError::PermissionDenied => e,
        _ => &KvError::PermissionDenied,
    };
    format!("rpc error: code = {:?} desc = {e}", e.code())
}

impl StreamState {
    fn header(&self) -> pb::ResponseHeader {
        self.server.header(self.server.shared().core.hub.revision())
    }

    async fn send(&self, r: pb::WatchResponse) -> bool {
        self.out.send(Ok(r)).await.is_ok()
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> bool {
        let hub = &self.server.shared().core.hub;
        // As etcd: an empty key is the smallest key, "\0".
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        // A refused watch carries etcd's id for "no watch", -1.
        let refused = |watch_id: i64, reason: String| pb::WatchResponse {
            header: Some(self.header()),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        if let Err(e) = self
            .server
            .authorize_read(self.token.as_deref(), &key, &c.range_end)
        {
            return self.send(refused(-1, denial_reason(&e))).await;
        }
        let reason = if !c.range_end.is_empty() && c.range_end != [0] && key >= c.range_end {
            Some("mvcc: watcher range is empty")
        } else if c.watch_id != 0 && self.watchers.contains_key(&c.watch_id) {
            Some("mvcc: duplicate watch ID provided on the WatchStream")
        } else if self.watchers.len() >= self.server.config().watchers_per_stream_max {
            Some("etcdserver: too many watchers on this stream")
        } else {
            None
        };
        if let Some(reason) = reason {
            return self.send(refused(-1, reason.to_string())).await;
        }
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            // etcd's allocation: the lowest free id from where the last one was taken.
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let current = hub.revision();
        let next_rev = if c.start_revision <= 0 {
            current + 1
        } else {
            c.start_revision
        };
        let filters: Vec<i32> = c.filters.clone();
        // A watch never sees the reserved part of the key space: one wholly inside it watches
        // an empty range.
        let end = match keyspace::clamp_end(&key, &c.range_end) {
            Some(end) => end.to_vec(),
            None => keyspace::RESERVED_START.to_vec(),
        };
        let key = if keyspace::is_reserved(&key) {
            keyspace::RESERVED_START.to_vec()
        } else {
            key
        };
        let w = Watcher {
            key,
            end,
            next_rev,
            prev_kv: c.prev_kv,
            no_put: filters.contains(&(FilterType::Noput as i32)),
            no_delete: filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            sent_since_progress: false,
        };
        if hub.watcher_added() > self.server.config().max_watchers {
            hub.watcher_removed();
            let reason = format!(
                "etcdserver: too many watchers on this member (--max-watchers {})",
                self.server.config().max_watchers
            );
            let r = pb::WatchResponse {
                header: Some(self.header()),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: reason,
                ..Default::default()
            };
            return self.send(r).await;
        }
        self.watchers.insert(id, w);
        self.send(pb::WatchResponse {
            header: Some(self.server.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    async fn cancel(&mut self, id: i64, compact_revision: i64, reason: &str) -> bool {
        if self.watchers.remove(&id).is_some() {
            self.server.shared().core.hub.watcher_removed();
            return self
                .send(pb::WatchResponse {
                    header: Some(self.header()),
                    watch_id: id,
                    canceled: true,
                    compact_revision,
                    cancel_reason: reason.into(),
                    ..Default::default()
                })
                .await;
        }
        true
    }

    /// Sends every watcher what it is owed up to the hub's revision.
    async fn deliver(&mut self) -> bool {
        let shared = Arc::clone(self.server.shared());
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            loop {
                let current = shared.core.hub.revision();
                let Some(w) = self.watchers.get(&id) else {
                    break;
                };
                if w.next_rev > current {
                    break;
                }
                let from = w.next_rev;
                // The ring first; the tree for anything older.
                let (events, next) = match shared.core.hub.read(from, EVENTS_PER_RESPONSE) {
                    Some(revs) => {
                        let next = revs.last().map_or(current + 1, |r| r.rev + 1);
                        let evs: Vec<Event> =
                            revs.iter().flat_map(|r| r.events.iter().cloned()).collect();
                        (evs, next)
                    }
                    None => {
                        let snap = shared.core.mvcc.snapshot();
                        match snap.events(from, current, EVENTS_PER_RESPONSE) {
                            Ok(evs) => {
                                let next = match evs.last() {
                                    Some(e) if evs.len() >= EVENTS_PER_RESPONSE => {
                                        e.kv.mod_revision + 1
                                    }
                                    _ => current + 1,
                                };
                                (evs, next)
                            }
                            Err(MvccError::Compacted) => {
                                let compacted = snap.compact_revision().unwrap_or(0);
                                if !self.cancel(id, compacted, "").await {
                                    return false;
                                }
                                break;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "watch history read failed");
                                if !self.cancel(id, 0, "etcdserver: corrupt history").await {
                                    return false;
                                }
                                break;
                            }
                        }
                    }
                };
                let w = self.watchers.get_mut(&id).expect("present");
                w.next_rev = next;
                let wanted: Vec<&Event> = events
                    .iter()
                    .filter(|e| {
                        in_range(&e.kv.key, &w.key, &w.end)
                            && !(e.delete && w.no_delete)
                            && (e.delete || !w.no_put)
                    })
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                w.sent_since_progress = true;
                let fragment = w.fragment;
                let picked = if w.prev_kv {
                    match with_prev(&shared.core.mvcc, &wanted) {
                        Ok(picked) => picked,
                        Err(e) => {
                            let (compacted, reason) = match e {
                                MvccError::Compacted => {
                                    let snap = shared.core.mvcc.snapshot();
                                    (snap.compact_revision().unwrap_or(0), "")
                                }
                                e => {
                                    tracing::error!(error = %e, "watch previous version read failed");
                                    (0, "etcdserver: corrupt history")
                                }
                            };
                            if !self.cancel(id, compacted, reason).await {
                                return false;
                            }
                            break;
                        }
                    }
                } else {
                    wanted.iter().map(|e| to_pb_event(e, None)).collect()
                };
                let resp = pb::WatchResponse {
                    header: Some(self.server.header(current)),
                    watch_id: id,
                    events: picked,
                    ..Default::default()
                };
                let limit = self.server.config().max_request_bytes;
                for part in fragments(resp, fragment, limit) {
                    if !self.send(part).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    async fn progress(&mut self, only_idle: bool) -> bool {
        let rev = self.server.shared().core.hub.revision();
        if only_idle {
            let ids: Vec<i64> = self
                .watchers
                .iter()
                .filter(|(_, w)| w.progress_notify && !w.sent_since_progress && w.next_rev > rev)
                .map(|(id, _)| *id)
                .collect();
            for w in self.watchers.values_mut() {
                w.sent_since_progress = false;
            }
            for id in ids {
                let r = pb::WatchResponse {
                    header: Some(self.server.header(rev)),
                    watch_id: id,
                    ..Default::default()
                };
                if !self.send(r).await {
                    return false;
                }
            }
            return true;
        }
        self.send(pb::WatchResponse {
            header: Some(self.server.header(rev)),
            watch_id: -1,
            ..Default::default()
        })
        .await
    }
}

/// A response as sent: whole, or (when the watcher asked for fragments and it is larger than
/// `limit` bytes) split into parts of at most `limit` bytes where possible, every part but
/// the last marked `fragment`, as etcd splits them and its clients reassemble them.
fn fragments(resp: pb::WatchResponse, fragment: bool, limit: usize) -> Vec<pb::WatchResponse> {
    use prost::Message;
    if !fragment || resp.encoded_len() <= limit || resp.events.len() < 2 {
        return vec![resp];
    }
    let base = pb::WatchResponse {
        events: Vec::new(),
        ..resp.clone()
    };
    let base_len = base.encoded_len();
    let mut parts = Vec::new();
    let mut cur = base.clone();
    let mut cur_len = base_len;
    for ev in resp.events {
        let ev_len = ev.encoded_len() + 8;
        if !cur.events.is_empty() && cur_len + ev_len > limit {
            let mut done = std::mem::replace(&mut cur, base.clone());
            done.fragment = true;
            parts.push(done);
            cur_len = base_len;
        }
        cur_len += ev_len;
        cur.events.push(ev);
    }
    parts.push(cur);
    parts
}

impl Drop for StreamState {
    fn drop(&mut self) {
        for _ in 0..self.watchers.len() {
            self.server.shared().core.hub.watcher_removed();
        }
    }
}

/// Serves one watch stream: requests from `inbound`, responses to `out`. A client that
/// closes its side keeps its watchers until it goes away, as with etcd (the HTTP gateway sends
/// its requests in one body).
///
/// With `require_leader`, the stream ends with "etcdserver: no leader" once the member has lost
/// its leader (see [`KvServer::leader_lost`]), so the client watches through another member
/// rather than waiting for events that cannot come.
pub(crate) async fn run(
    server: Arc<KvServer>,
    token: Option<String>,
    require_leader: bool,
    mut inbound: impl Stream<Item = Result<pb::WatchRequest, Status>> + Unpin + Send,
    out: Out,
) {
    let mut inbound_open = true;
    let mut leader_check = tokio::time::interval(server.election_timeout());
    let mut rev_rx = server.shared().core.hub.subscribe();
    let every = server
        .config()
        .client_port
        .watch_progress_notify_interval
        .max(PROGRESS_INTERVAL_MIN);
    let mut st = StreamState {
        server,
        token,
        watchers: BTreeMap::new(),
        next_id: 0,
        out,
    };
    let mut progress = tokio::time::interval(every);
    progress.tick().await;
    loop {
        let ok = tokio::select! {
            msg = inbound.next(), if inbound_open => match msg {
                Some(Ok(req)) => match req.request_union {
                    Some(RequestUnion::CreateRequest(c)) => st.create(c).await,
                    Some(RequestUnion::CancelRequest(c)) => st.cancel(c.watch_id, 0, "").await,
                    Some(RequestUnion::ProgressRequest(_)) => {
                        st.deliver().await && st.progress(false).await
                    }
                    None => true,
                },
                Some(Err(_)) => return,
                None => {
                    inbound_open = false;
                    true
                }
            },
            r = rev_rx.changed() => r.is_ok(),
            _ = progress.tick() => st.progress(true).await,
            _ = leader_check.tick(), if require_leader => {
                if st.server.leader_lost() {
                    let _ = st.out.send(Err(KvError::NoLeader.into())).await;
                    return;
                }
                true
            }
            _ = st.out.closed() => return,
        };
        if !ok || !st.deliver().await {
            return;
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // (Opening one without a leader was refused before this.)
        let require_leader = super::requires_leader(req.metadata().as_ref());
        let (tx, rx) = mpsc::channel(16);
        let token = super::token(req.metadata());
        let server = Arc::clone(&self.server);
        tokio::spawn(run(server, token, require_leader, req.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_responses_fragment_only_when_asked() {
        let ev = |i: u8| mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: vec![i],
                value: vec![0; 100],
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = pb::WatchResponse {
            watch_id: 3,
            events: (0..50).map(ev).collect(),
            ..Default::default()
        };
        assert_eq!(fragments(resp.clone(), false, 500).len(), 1);
        assert_eq!(fragments(resp.clone(), true, 1 << 20).len(), 1);
        let parts = fragments(resp.clone(), true, 500);
        assert!(parts.len() > 10);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts.last().unwrap().fragment);
        assert!(parts.iter().all(|p| p.watch_id == 3));
        let joined: Vec<mvccpb::Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, resp.events);
    }
}
