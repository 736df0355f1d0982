//! etcd's ports: the client port (etcd's v3 gRPC services, gRPC health, and beside them the
//! plain-HTTP routes etcd serves: `/health`, `/version`, `/metrics`, the JSON gateway), and
//! the member-to-member calls a peer port's call connections carry ([`serve_calls`]). Also the
//! request metadata every service reads (the token, `hasleader`).
//!
//! Never serves a member-only call on the client port.

use std::sync::Arc;

use crate::etcd::client_conn::ClientConn;

use tonic::metadata::MetadataMap;

use super::rbac::Caller;
use super::{
    KvServer, auth, authority, cluster, gateway, internal, kv, lease, maintenance, unary, watch,
};
use crate::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer as KvGrpc,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::pb::quorumkv::internal_server::InternalServer;

/// gRPC framing and field overhead allowed above `--max-request-bytes` (etcd allows 512 KiB),
/// so an oversized request gets etcd's "request is too large" rather than a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The auth token a request carries: etcd clients send it as `token` metadata (its gateway
/// as `authorization`). Without one, the user its client certificate names (see
/// [`super::cert_user`]) stands in, as a token no header can carry.
pub(crate) fn token(md: &MetadataMap) -> Option<String> {
    token_in(md.as_ref()).map(|t| t.into_owned())
}

/// [`token`], from a request's headers.
pub(crate) fn token_in(headers: &http::HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    let given = ["token", "authorization"]
        .iter()
        .find_map(|k| headers.get(*k))
        .and_then(|v| v.to_str().ok());
    if let Some(t) = given {
        return Some(std::borrow::Cow::Borrowed(t));
    }
    let user = headers.get(super::cert_user::HEADER)?.to_str().ok()?;
    Some(std::borrow::Cow::Owned(super::cert_user::token_of(user)))
}

/// Passes the caller's token (or certificate user) on with a request relayed to another
/// member.
pub(crate) fn pass_token(caller: &Caller, md: &mut MetadataMap) {
    let Some(t) = caller.token.as_deref() else {
        return;
    };
    if let Some(user) = super::cert_user::user_of(t) {
        if let Ok(v) = user.parse() {
            md.insert(super::cert_user::HEADER, v);
        }
    } else if let Ok(v) = t.parse() {
        md.insert("token", v);
    }
}

/// Whether the client asked that the call fail without a leader (clientv3's
/// `WithRequireLeader`, which etcdctl's watches use). Such a call is refused with "etcdserver:
/// no leader" while this member knows none, as etcd's interceptors refuse it; a watch stream
/// also ends when the member loses its leader (see `watch::run`).
pub(crate) fn requires_leader(headers: &http::HeaderMap) -> bool {
    headers.get("hasleader").is_some_and(|v| v == "true")
}

/// Whether a request on the client port is a gRPC call (the rest is plain HTTP: `/metrics`,
/// `/health`, the JSON gateway).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Gives a request refused for its size the status etcd's gRPC server gives it: tonic answers
/// OutOfRange ("decoded message length too large"), grpc-go ResourceExhausted ("received
/// message larger than max"), and clients branch on the code. Only trailers-only answers (an
/// error before any message) carry the status in their headers, which is where tonic puts a
/// unary request's decoding error.
pub(crate) fn as_grpc_go_status<B>(resp: &mut http::Response<B>) {
    let headers = resp.headers_mut();
    if headers.get("grpc-status").map(http::HeaderValue::as_bytes) != Some(b"11") {
        return;
    }
    // Percent-encoded; tonic's wording has no '%' of its own beyond the encoded spaces.
    let Some(message) = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .filter(|m| m.starts_with("Error, decoded message length too large"))
    else {
        return;
    };
    // "... found {len} bytes, the limit is: {limit} bytes"
    let mut numbers = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty());
    let (Some(len), Some(limit)) = (numbers.next(), numbers.next()) else {
        return;
    };
    let text = format!("grpc: received message larger than max ({len} vs. {limit})");
    if let Ok(v) = http::HeaderValue::from_str(&text) {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert("grpc-message", v);
    }
}

/// How long a TLS client may take over its handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type Incoming = std::io::Result<authority::AuthorityRepair<ClientConn>>;

/// Accepts connections on `listener` within `limit`, through a TLS handshake (in a task of
/// its own, bounded by [`TLS_HANDSHAKE_TIMEOUT`]) when `tls` is set, and hands them to `tx`.
async fn accept(
    listener: tokio::net::TcpListener,
    limit: crate::etcd::conn_limit::ConnLimit,
    tls: Option<Arc<crate::tls::ServerTls>>,
    tx: tokio::sync::mpsc::Sender<Incoming>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "accepting a client");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Without TCP_NODELAY, small responses wait out the peer's delayed ACK (~40 ms).
        let _ = stream.set_nodelay(true);
        let Some(conn) = limit.admit(stream) else {
            continue;
        };
        match &tls {
            None => {
                let c = ClientConn::Plain(conn);
                if tx
                    .send(Ok(authority::AuthorityRepair::new(c)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                        Ok(Ok(s)) => {
                            let c = ClientConn::Tls(Box::new(s));
                            let _ = tx.send(Ok(authority::AuthorityRepair::new(c))).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Serves the client API on `listener` (over TLS when `tls` is set) until `shutdown` resolves.
pub async fn serve(
    server: Arc<KvServer>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<crate::tls::ServerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max_in = server.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
    let max_out = usize::MAX >> 1;
    // Every service refuses a call that asks for a leader while there is none (members'
    // forwarded calls never ask).
    let leader_check = {
        let server = Arc::clone(&server);
        move |req: tonic::Request<()>| {
            if requires_leader(req.metadata().as_ref()) && server.node().state().leader() == 0 {
                return Err(tonic::Status::from(crate::etcd::KvError::NoLeader));
            }
            Ok(req)
        }
    };
    // Size limits and the leader check around each generated service.
    macro_rules! service {
        ($svc:expr) => {
            tonic::service::interceptor::InterceptedService::new(
                $svc.max_decoding_message_size(max_in)
                    .max_encoding_message_size(max_out),
                leader_check.clone(),
            )
        };
    }
    // etcd answers plain HTTP on its client port too (`/health`, `/version`, `/metrics` and the
    // JSON gateway under `/v3/`): those routes sit beside the gRPC services, and HTTP/1
    // connections are accepted for them.
    let http = crate::etcd::metrics::router(Arc::clone(&server))
        .merge(gateway::router(Arc::clone(&server), max_in));
    let routes = tonic::service::Routes::from(http)
        .add_service(service!(KvGrpc::new(kv::KvService {
            server: Arc::clone(&server)
        })))
        .add_service(service!(WatchServer::new(watch::WatchService {
            server: Arc::clone(&server)
        })))
        .add_service(service!(LeaseServer::new(lease::LeaseService {
            server: Arc::clone(&server)
        })))
        .add_service(service!(ClusterServer::new(cluster::ClusterService {
            server: Arc::clone(&server)
        })))
        .add_service(service!(MaintenanceServer::new(
            maintenance::MaintenanceService {
                server: Arc::clone(&server)
            }
        )))
        .add_service(service!(AuthServer::new(auth::AuthService {
            server: Arc::clone(&server)
        })));
    let mut routes = routes;
    let router = std::mem::take(routes.axum_router_mut())
        .fallback(unimplemented)
        .method_not_allowed_fallback(|| async {
            (http::StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
        });
    *routes.axum_router_mut() = router;
    // grpc.health.v1.Health, as etcd registers it: the overall status ("") only, answered
    // without a leader or a token, like /health's probes.
    let (reporter, health) = tonic_health::server::health_reporter();
    let routes = routes.add_service(health);
    let watcher = tokio::spawn(report_health(Arc::clone(&server), reporter));
    let cfg = server.config().client_port;
    let keepalive = Some(cfg.grpc_keepalive_interval).filter(|d| !d.is_zero());
    let limit = crate::etcd::conn_limit::ConnLimit::new(server.config().max_client_connections);
    let (tx, rx) = tokio::sync::mpsc::channel::<Incoming>(64);
    let acceptor = tokio::spawn(accept(listener, limit, tls, tx));
    let keepalive_timeout = Some(cfg.grpc_keepalive_timeout).filter(|d| !d.is_zero());
    let served = tonic::transport::Server::builder()
        // Outermost: the certificate's user, and nobody else's, goes with every request.
        .layer(super::cert_user::CertUserLayer)
        // The KV service's unary calls take a short path; everything else, tonic's.
        .layer(unary::UnaryKvLayer::new(
            kv::KvService {
                server: Arc::clone(&server),
            },
            Arc::clone(server.metrics()),
            max_in,
        ))
        .layer(crate::etcd::metrics::CountLayer(Arc::clone(
            server.metrics(),
        )))
        .accept_http1(true)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(keepalive_timeout)
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .add_routes(routes)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown)
        .await;
    watcher.abort();
    acceptor.abort();
    served
}

/// Serves member-to-member calls on the call connections the peer port accepted (`calls`):
/// `Internal` (writes a follower hands its leader, key-space hashes) and the Lease and Cluster
/// calls a follower relays to its leader with its caller's token. None of these is served on
/// the client port.
pub async fn serve_calls(
    server: Arc<KvServer>,
    calls: tokio::sync::mpsc::Receiver<crate::transport::peer_stream::PeerStream>,
) {
    let max_in = server.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
    let max_out = usize::MAX >> 1;
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(calls),
        Ok::<_, std::io::Error>,
    );
    // The size limits of the client port's services.
    macro_rules! limited {
        ($svc:expr) => {
            $svc.max_decoding_message_size(max_in)
                .max_encoding_message_size(max_out)
        };
    }
    let served = tonic::transport::Server::builder()
        .add_service(limited!(InternalServer::new(internal::InternalService {
            server: Arc::clone(&server),
        })))
        .add_service(limited!(LeaseServer::new(lease::LeaseService {
            server: Arc::clone(&server),
        })))
        .add_service(limited!(ClusterServer::new(cluster::ClusterService {
            server: Arc::clone(&server),
        })))
        .serve_with_incoming(incoming)
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "member-to-member calls are no longer served");
    }
}

// A peer connection's end proved membership before it was handed here; calls learn nothing
// more about it.
impl tonic::transport::server::Connected for crate::transport::peer_stream::PeerStream {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

/// How often the gRPC health status is brought in step with the member.
const HEALTH_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps the gRPC health service's overall status in step with the member: SERVING (as etcd
/// reports it, through elections too, so liveness probes do not restart members that are only
/// between leaders) until the member has stopped for good (its storage failed, or it was
/// removed), then NOT_SERVING.
async fn report_health(server: Arc<KvServer>, reporter: tonic_health::server::HealthReporter) {
    let mut every = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    loop {
        every.tick().await;
        if server.stopped() {
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            return;
        }
    }
}

/// What a request for no known service or path gets: a gRPC call gets gRPC's "unimplemented"
/// (a plain HTTP 200 with `grpc-status: 12`, as tonic answers), anything else a 404, as etcd's
/// HTTP server answers.
async fn unimplemented(req: http::Request<axum::body::Body>) -> http::Response<tonic::body::Body> {
    if !is_grpc(req.headers()) {
        let mut resp =
            http::Response::new(tonic::body::Body::new(String::from("404 page not found\n")));
        *resp.status_mut() = http::StatusCode::NOT_FOUND;
        return resp;
    }
    let (parts, ()) = tonic::Status::unimplemented("")
        .into_http::<()>()
        .into_parts();
    http::Response::from_parts(parts, tonic::body::Body::empty())
}
