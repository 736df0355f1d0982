//! Prometheus metrics (`/metrics`) and a health check (`/health`) on `--listen-metrics-urls`,
//! named after etcd's where etcd has the metric; and the tower layer that counts gRPC
//! requests by method and code.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;

use crate::etcd::KvServer;

/// Calls of one gRPC method: how many started, and how many ended by status code (index into
/// [`CODES`]). A streaming call ends when its stream does.
#[derive(Debug, Default)]
pub(crate) struct MethodCounts {
    started: AtomicU64,
    handled: [AtomicU64; CODES.len()],
}

impl MethodCounts {
    /// Counts one call starting.
    pub(crate) fn start(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one call that ended with gRPC status `code`; a code outside the known ones
    /// counts as Unknown (2), as gRPC reads it.
    pub(crate) fn handled(&self, code: usize) {
        self.handled[if code < CODES.len() { code } else { 2 }].fetch_add(1, Ordering::Relaxed);
    }
}

/// How a method's messages flow, as go-grpc-prometheus labels it (`grpc_type`): etcd's
/// streaming methods by name, every other method unary.
fn grpc_type(path: &str) -> &'static str {
    match path {
        "/etcdserverpb.Watch/Watch" | "/etcdserverpb.Lease/LeaseKeepAlive" => "bidi_stream",
        "/etcdserverpb.Maintenance/Snapshot"
        | "/v3electionpb.Election/Observe"
        | "/grpc.health.v1.Health/Watch" => "server_stream",
        _ => "unary",
    }
}

/// A counted path, the calls to it that started, and those that ended by status code.
type GrpcRow = (Box<str>, u64, [u64; CODES.len()]);

/// Distinct gRPC paths counted by name; calls to any further path are counted under
/// [`OTHER_PATH`], so a client inventing paths cannot grow the table or `/metrics`.
const GRPC_PATHS_MAX: usize = 256;
/// Where calls to malformed paths, and to paths beyond [`GRPC_PATHS_MAX`], are counted.
const OTHER_PATH: &str = "/unknown/unknown";

/// Counters kept beside the key space.
#[derive(Debug, Default)]
pub struct Metrics {
    grpc: Mutex<HashMap<Box<str>, Arc<MethodCounts>>>,
    /// Proposals that failed.
    pub proposals_failed: AtomicU64,
}

impl Metrics {
    /// The counters of calls to `path` (`/package.Service/Method`).
    pub(crate) fn method(&self, path: &str) -> Arc<MethodCounts> {
        let mut grpc = self.grpc.lock();
        if let Some(c) = grpc.get(path) {
            return Arc::clone(c);
        }
        let named = grpc.len() < GRPC_PATHS_MAX && well_formed(path);
        let key = if named { path } else { OTHER_PATH };
        Arc::clone(grpc.entry(key.into()).or_default())
    }

    /// Every counted path with its started and handled counts, sorted by path.
    fn grpc_counts(&self) -> Vec<GrpcRow> {
        let mut out: Vec<_> = self
            .grpc
            .lock()
            .iter()
            .map(|(path, c)| {
                (
                    path.clone(),
                    c.started.load(Ordering::Relaxed),
                    c.handled.each_ref().map(|n| n.load(Ordering::Relaxed)),
                )
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// `/service/method` of at most 128 bytes, both parts non-empty and made of ASCII letters,
/// digits, `_` and `.` (so it is safe as a Prometheus label value).
fn well_formed(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let Some((service, method)) = rest.split_once('/') else {
        return false;
    };
    let part = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    };
    path.len() <= 128 && part(service) && part(method)
}

/// Counts each gRPC call by method and status (after [`crate::etcd::as_grpc_go_status`] has
/// given a transport-level refusal the status etcd's gRPC server gives it), as etcd's
/// go-grpc-prometheus does: started when it arrives, handled when it ends, which for a stream
/// is when the stream does.
#[derive(Debug, Clone)]
pub struct CountLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// The service [`CountLayer`] wraps around.
#[derive(Debug, Clone)]
pub struct Count<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for Count<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Plain HTTP on the same port (`/metrics`, the JSON gateway) is not a gRPC call.
        let counted = crate::etcd::is_grpc(req.headers()).then(|| {
            let path = req.uri().path();
            let counts = self.metrics.method(path);
            counts.start();
            (counts, grpc_type(path) != "unary")
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut r = fut.await;
            if let (Ok(resp), Some((counts, stream))) = (&mut r, counted) {
                crate::etcd::as_grpc_go_status(resp);
                // An error before any message travels in the headers ("trailers-only").
                match grpc_status(resp.headers()) {
                    Some(code) => counts.handled(code),
                    // A stream is counted when its trailers pass, or when it is dropped.
                    None if stream => {
                        let body = std::mem::take(resp.body_mut());
                        *resp.body_mut() = tonic::body::Body::new(CountedStream {
                            inner: body,
                            counts: Some(counts),
                        });
                    }
                    // A unary answer that started fine.
                    None => counts.handled(0),
                }
            }
            r
        })
    }
}

/// The status code in `headers` (headers or trailers), if they carry one; one that does not
/// parse counts as Unknown (2).
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?;
    Some(v.to_str().ok().and_then(|v| v.parse().ok()).unwrap_or(2))
}

/// A streaming call's response body, which counts the call as handled once: with the status
/// its trailers carry, or Canceled when it is dropped before them (the client went away).
struct CountedStream {
    inner: tonic::body::Body,
    counts: Option<Arc<MethodCounts>>,
}

impl CountedStream {
    fn finish(&mut self, code: usize) {
        if let Some(c) = self.counts.take() {
            c.handled(code);
        }
    }
}

impl http_body::Body for CountedStream {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code = match &polled {
            // Trailers without a status end the call as Unknown, as gRPC reads them.
            Poll::Ready(Some(Ok(frame))) => {
                frame.trailers_ref().map(|t| grpc_status(t).unwrap_or(2))
            }
            Poll::Ready(Some(Err(status))) => Some(status.code() as usize),
            Poll::Ready(None) => Some(0),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            self.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.finish(1);
    }
}

const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The Prometheus text exposition of `server`.
pub fn render(server: &KvServer) -> String {
    let mut o = String::new();
    let st = server.node().state();
    let shared = server.shared();
    let gauge = |o: &mut String, name: &str, help: &str, kind: &str, v: f64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    gauge(
        &mut o,
        "etcd_server_has_leader",
        "Whether a leader exists.",
        "gauge",
        f64::from(u8::from(st.leader() != 0)),
    );
    gauge(
        &mut o,
        "etcd_server_is_leader",
        "Whether this member leads.",
        "gauge",
        f64::from(u8::from(st.is_leader())),
    );
    gauge(
        &mut o,
        "etcd_server_leader_changes_seen_total",
        "Leader changes seen.",
        "counter",
        st.leader_changes() as f64,
    );
    gauge(
        &mut o,
        "etcd_server_proposals_committed_total",
        "Highest committed log index.",
        "gauge",
        st.commit() as f64,
    );
    let applied = shared.core.pending.applied();
    gauge(
        &mut o,
        "etcd_server_proposals_applied_total",
        "Highest applied log index.",
        "gauge",
        applied as f64,
    );
    gauge(
        &mut o,
        "quorumkv_apply_lag_entries",
        "Committed entries not yet applied.",
        "gauge",
        st.commit().saturating_sub(applied) as f64,
    );
    gauge(
        &mut o,
        "etcd_server_proposals_pending",
        "Proposals waiting to be applied.",
        "gauge",
        shared.core.pending.len() as f64,
    );
    gauge(
        &mut o,
        "etcd_server_proposals_failed_total",
        "Proposals that failed.",
        "counter",
        server.metrics().proposals_failed.load(Ordering::Relaxed) as f64,
    );
    gauge(
        &mut o,
        "etcd_server_term",
        "Current term or epoch.",
        "gauge",
        st.term() as f64,
    );
    gauge(
        &mut o,
        "etcd_mvcc_db_total_size_in_bytes",
        "Physical size of the backend.",
        "gauge",
        server.db_size_bytes() as f64,
    );
    gauge(
        &mut o,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Backend bytes in use.",
        "gauge",
        server.db_in_use_bytes() as f64,
    );
    gauge(
        &mut o,
        "etcd_mvcc_current_revision",
        "Current revision.",
        "gauge",
        shared.core.hub.revision() as f64,
    );
    let (keys, compacted) = shared.core.mvcc.index_stats();
    gauge(
        &mut o,
        "etcd_debugging_mvcc_keys_total",
        "Keys with a version in the key index.",
        "gauge",
        keys as f64,
    );
    gauge(
        &mut o,
        "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction.",
        "gauge",
        compacted as f64,
    );
    gauge(
        &mut o,
        "quorumkv_mvcc_compaction_sweeping",
        "1 while the last compaction still sweeps the versions it drops, else 0.",
        "gauge",
        u8::from(shared.core.mvcc.sweeping()).into(),
    );
    // The names etcd 3.4 used for these, which older dashboards still read.
    gauge(
        &mut o,
        "etcd_debugging_mvcc_current_revision",
        "Current revision.",
        "gauge",
        shared.core.hub.revision() as f64,
    );
    gauge(
        &mut o,
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        "Physical size of the backend.",
        "gauge",
        server.db_size_bytes() as f64,
    );
    let version = crate::etcd::maintenance::API_VERSION;
    let _ = writeln!(
        o,
        "# HELP etcd_server_id Which member this is.\n# TYPE etcd_server_id gauge\netcd_server_id{{server_id=\"{:x}\"}} 1",
        server.member_id()
    );
    let _ = writeln!(
        o,
        "# HELP etcd_server_version Which version is running.\n# TYPE etcd_server_version gauge\netcd_server_version{{server_version=\"{version}\"}} 1"
    );
    gauge(
        &mut o,
        "etcd_debugging_mvcc_watcher_total",
        "Watchers open.",
        "gauge",
        shared.core.hub.watchers() as f64,
    );
    gauge(
        &mut o,
        "etcd_server_quota_backend_bytes",
        "Backend quota.",
        "gauge",
        server.config().quota_backend_bytes as f64,
    );
    gauge(
        &mut o,
        "quorumkv_lease_total",
        "Leases.",
        "gauge",
        shared.core.lessor.lock().len() as f64,
    );
    shared.core.backend_commits.render(
        &mut o,
        "etcd_disk_backend_commit_duration_seconds",
        "Durable commits (checkpoints) of the backend tree.",
    );
    let w = server.node().wal_stats_now();
    let bounds_seconds = quorumkv_wal::SYNC_BUCKET_BOUNDS_US.map(|us| us as f64 / 1e6);
    crate::duration_histogram::render_histogram(
        &mut o,
        "etcd_disk_wal_fsync_duration_seconds",
        "WAL fdatasync latency.",
        &bounds_seconds,
        &w.sync_buckets,
        w.sync_nanos as f64 / 1e9,
    );
    gauge(
        &mut o,
        "quorumkv_wal_slow_fsyncs_total",
        "fdatasync calls slower than 1 s.",
        "counter",
        w.slow_syncs as f64,
    );
    gauge(
        &mut o,
        "quorumkv_wal_records_total",
        "WAL records written.",
        "counter",
        w.records as f64,
    );
    gauge(
        &mut o,
        "etcd_disk_wal_write_bytes_total",
        "WAL bytes written.",
        "gauge",
        w.bytes as f64,
    );
    gauge(
        &mut o,
        "quorumkv_wal_bytes_total",
        "WAL bytes written.",
        "counter",
        w.bytes as f64,
    );
    gauge(
        &mut o,
        "quorumkv_wal_records_per_fsync",
        "Mean records per fdatasync (group-commit batch size).",
        "gauge",
        if w.syncs == 0 {
            0.0
        } else {
            w.records as f64 / w.syncs as f64
        },
    );
    let peers = server.node().peer_traffic();
    type Column = fn(&crate::transport::traffic::PeerTotals) -> u64;
    let peer_counters: [(&str, &str, &str, Column); 3] = [
        (
            "etcd_network_peer_sent_bytes_total",
            "The total number of bytes sent to peers.",
            "To",
            |p| p.sent_bytes,
        ),
        (
            "etcd_network_peer_received_bytes_total",
            "The total number of bytes received from peers.",
            "From",
            |p| p.received_bytes,
        ),
        (
            "etcd_network_peer_sent_failures_total",
            "The total number of send failures from peers.",
            "To",
            |p| p.sent_failures,
        ),
    ];
    for (name, help, label, value) in peer_counters {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in &peers {
            let _ = writeln!(o, "{name}{{{label}=\"{:x}\"}} {}", p.id, value(p));
        }
    }
    let counts = server.metrics().grpc_counts();
    let labels = |path: &str| {
        let (service, method) = path[1..].split_once('/').expect("well-formed paths only");
        let kind = grpc_type(path);
        format!("grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"")
    };
    let _ = writeln!(
        o,
        "# HELP grpc_server_started_total Total number of RPCs started on the server.\n# TYPE grpc_server_started_total counter"
    );
    for (path, started, _) in &counts {
        let _ = writeln!(o, "grpc_server_started_total{{{}}} {started}", labels(path));
    }
    let _ = writeln!(
        o,
        "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE grpc_server_handled_total counter"
    );
    for (path, _, handled) in &counts {
        let labels = labels(path);
        for (code, n) in CODES.iter().zip(handled) {
            if *n > 0 {
                let _ = writeln!(
                    o,
                    "grpc_server_handled_total{{grpc_code=\"{code}\",{labels}}} {n}"
                );
            }
        }
    }
    if let Some(p) = crate::process_stats::ProcessStats::read() {
        p.render_into(&mut o);
    }
    o
}

/// `/metrics` (Prometheus text), `/health` (etcd's `{"health":"true"}`, 503 when there is no
/// leader or the member has stopped) and `/version`, as etcd serves them.
pub fn router(server: Arc<KvServer>) -> axum::Router {
    use axum::routing::get;
    let s1 = Arc::clone(&server);
    let s2 = Arc::clone(&server);
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let s = Arc::clone(&s1);
                async move { render(&s) }
            }),
        )
        .route(
            "/health",
            get(move || {
                let s = Arc::clone(&s2);
                async move {
                    let ok = s.node().state().leader() != 0 && !s.stopped();
                    let body = format!("{{\"health\":\"{ok}\"}}");
                    if ok {
                        (http::StatusCode::OK, body)
                    } else {
                        (http::StatusCode::SERVICE_UNAVAILABLE, body)
                    }
                }
            }),
        )
        .route(
            "/version",
            get(|| async {
                let v = crate::etcd::maintenance::API_VERSION;
                format!("{{\"etcdserver\":\"{v}\",\"etcdcluster\":\"{v}\"}}")
            }),
        )
}

/// Serves [`router`] until `stop` resolves.
pub async fn serve(
    server: Arc<KvServer>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<crate::tls::ServerTls>>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let served = match tls {
        None => {
            axum::serve(listener, router(server))
                .with_graceful_shutdown(stop)
                .await
        }
        Some(tls) => {
            let listener = match crate::tls::TlsListener::new(
                listener,
                tls,
                std::time::Duration::from_secs(10),
            ) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "metrics server failed");
                    return;
                }
            };
            axum::serve(listener, router(server))
                .with_graceful_shutdown(stop)
                .await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics server failed");
    }
}
