//! etcd's HTTP/JSON gateway on the client port: `POST /v3/<service>/<method>` (and the older
//! `/v3beta/` prefix) with the request as JSON, answered with the response as JSON, as etcd's
//! grpc-gateway maps them (proto field names, 64-bit integers as strings, bytes as base64,
//! default values left out). Each route calls the same service method a gRPC client reaches,
//! so checks, limits and errors are the same; an auth token goes in the `Authorization`
//! header. The streaming calls (`/v3/watch`, `/v3/lease/keepalive`) take their requests as one
//! body of JSON objects and answer with one `{"result": ...}` line per response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::routing::post;
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::{auth::AuthService, cluster::ClusterService, kv::KvService, lease::LeaseService};
use super::{maintenance::MaintenanceService, watch};
use crate::etcd::KvServer;
use crate::pb::etcdserverpb::{
    self as pb, auth_server::Auth, cluster_server::Cluster, kv_server::Kv, lease_server::Lease,
    maintenance_server::Maintenance,
};

type Reply<T> = Pin<Box<dyn Future<Output = Result<tonic::Response<T>, Status>> + Send>>;

/// The HTTP status grpc-gateway gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// grpc-gateway's error body.
fn error_json(s: &Status) -> serde_json::Value {
    serde_json::json!({
        "error": s.message(),
        "code": s.code() as i32,
        "message": s.message(),
    })
}

fn json_response(status: StatusCode, body: &impl Serialize) -> http::Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap_or_default()
}

fn error_response(s: &Status) -> http::Response<Body> {
    json_response(http_status(s.code()), &error_json(s))
}

/// The request a body decodes to (an empty body is the empty request).
fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Every JSON object of a streaming call's body, in order.
fn decode_all<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, Status> {
    serde_json::Deserializer::from_slice(body)
        .into_iter::<T>()
        .collect::<Result<Vec<T>, _>>()
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A gRPC request carrying `body`, with the `Authorization` header as the auth token.
fn grpc_request<T>(headers: &HeaderMap, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        r.metadata_mut().insert("token", v);
    }
    // The client certificate's user, as the port's outermost layer set it.
    if let Some(v) = headers
        .get(super::cert_user::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        r.metadata_mut().insert(super::cert_user::HEADER, v);
    }
    r
}

/// A route calling `f(service, request)` for a JSON body.
fn unary<S, Req, Resp>(
    svc: S,
    f: fn(S, tonic::Request<Req>) -> Reply<Resp>,
) -> axum::routing::MethodRouter
where
    S: Clone + Send + Sync + 'static,
    Req: DeserializeOwned + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    post(move |headers: HeaderMap, body: Bytes| {
        let svc = svc.clone();
        async move {
            let req = match decode::<Req>(&body) {
                Ok(r) => r,
                Err(s) => return error_response(&s),
            };
            match f(svc, grpc_request(&headers, req)).await {
                Ok(resp) => json_response(StatusCode::OK, resp.get_ref()),
                Err(s) => error_response(&s),
            }
        }
    })
}

/// One `{"result": ...}` (or `{"error": ...}`) line of a streaming response.
fn stream_line<T: Serialize>(r: Result<T, Status>) -> Result<Bytes, std::convert::Infallible> {
    let v = match r {
        Ok(m) => serde_json::json!({ "result": m }),
        Err(s) => serde_json::json!({ "error": error_json(&s) }),
    };
    let mut line = serde_json::to_vec(&v).unwrap_or_default();
    line.push(b'\n');
    Ok(Bytes::from(line))
}

fn streaming_response<T: Serialize + Send + 'static>(
    rx: mpsc::Receiver<Result<T, Status>>,
) -> http::Response<Body> {
    http::Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx).map(stream_line)))
        .unwrap_or_default()
}

/// `/v3/watch`: the watch requests in the body open watchers on one stream, which runs until
/// the client goes away.
async fn watch(server: Arc<KvServer>, headers: HeaderMap, body: Bytes) -> http::Response<Body> {
    let reqs = match decode_all::<pb::WatchRequest>(&body) {
        Ok(r) => r,
        Err(s) => return error_response(&s),
    };
    let token = super::token(grpc_request(&headers, ()).metadata());
    let (tx, rx) = mpsc::channel(16);
    let inbound = tokio_stream::iter(reqs.into_iter().map(Ok));
    tokio::spawn(watch::run(server, token, false, inbound, tx));
    streaming_response(rx)
}

/// `/v3/lease/keepalive`: one keep-alive per request in the body.
async fn keep_alive(lease: LeaseService, body: Bytes) -> http::Response<Body> {
    let reqs = match decode_all::<pb::LeaseKeepAliveRequest>(&body) {
        Ok(r) => r,
        Err(s) => return error_response(&s),
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        for r in reqs {
            let out = lease.keep_alive_one(r.id).await.map_err(Status::from);
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    streaming_response(rx)
}

macro_rules! routes {
    ($router:ident, $svc:expr, $( $path:literal => $method:ident ),* $(,)?) => {
        $(
            let m = unary($svc.clone(), |s, r| Box::pin(async move { s.$method(r).await }));
            $router = $router
                .route(concat!("/v3/", $path), m.clone())
                .route(concat!("/v3beta/", $path), m);
        )*
    };
}

/// The gateway's routes over `server`'s services.
pub fn router(server: Arc<KvServer>, limit_bytes: usize) -> axum::Router {
    let kv = KvService {
        server: Arc::clone(&server),
    };
    let lease = LeaseService {
        server: Arc::clone(&server),
    };
    let cluster = ClusterService {
        server: Arc::clone(&server),
    };
    let maintenance = MaintenanceService {
        server: Arc::clone(&server),
    };
    let auth = AuthService {
        server: Arc::clone(&server),
    };
    let mut r = axum::Router::new();
    routes!(r, kv,
        "kv/range" => range,
        "kv/put" => put,
        "kv/deleterange" => delete_range,
        "kv/txn" => txn,
        "kv/compaction" => compact,
    );
    routes!(r, lease,
        "lease/grant" => lease_grant,
        "lease/revoke" => lease_revoke,
        "kv/lease/revoke" => lease_revoke,
        "lease/timetolive" => lease_time_to_live,
        "kv/lease/timetolive" => lease_time_to_live,
        "lease/leases" => lease_leases,
        "kv/lease/leases" => lease_leases,
    );
    routes!(r, cluster,
        "cluster/member/add" => member_add,
        "cluster/member/remove" => member_remove,
        "cluster/member/update" => member_update,
        "cluster/member/list" => member_list,
        "cluster/member/promote" => member_promote,
    );
    routes!(r, maintenance,
        "maintenance/alarm" => alarm,
        "maintenance/status" => status,
        "maintenance/defragment" => defragment,
        "maintenance/hash" => hash,
        "maintenance/hashkv" => hash_kv,
        "maintenance/transfer-leadership" => move_leader,
    );
    routes!(r, auth,
        "auth/enable" => auth_enable,
        "auth/disable" => auth_disable,
        "auth/status" => auth_status,
        "auth/authenticate" => authenticate,
        "auth/user/add" => user_add,
        "auth/user/get" => user_get,
        "auth/user/list" => user_list,
        "auth/user/delete" => user_delete,
        "auth/user/changepw" => user_change_password,
        "auth/user/grant" => user_grant_role,
        "auth/user/revoke" => user_revoke_role,
        "auth/role/add" => role_add,
        "auth/role/get" => role_get,
        "auth/role/list" => role_list,
        "auth/role/delete" => role_delete,
        "auth/role/grant" => role_grant_permission,
        "auth/role/revoke" => role_revoke_permission,
    );
    for prefix in ["/v3/", "/v3beta/"] {
        let s = Arc::clone(&server);
        let l = lease.clone();
        r = r
            .route(
                &format!("{prefix}watch"),
                post(move |h: HeaderMap, b: Bytes| watch(Arc::clone(&s), h, b)),
            )
            .route(
                &format!("{prefix}lease/keepalive"),
                post(move |b: Bytes| keep_alive(l.clone(), b)),
            );
    }
    r.layer(axum::extract::DefaultBodyLimit::max(limit_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_follows_etcds_gateway_mapping() {
        let put: pb::PutRequest =
            decode(br#"{"key": "Zm9v", "value": "YmFy", "lease": "7"}"#).unwrap();
        assert_eq!(
            (put.key.as_slice(), put.value.as_slice()),
            (&b"foo"[..], &b"bar"[..])
        );
        assert_eq!(put.lease, 7);
        let range: pb::RangeRequest =
            decode(br#"{"key": "YQ==", "range_end": "AA==", "sort_order": "DESCEND"}"#).unwrap();
        assert_eq!(range.range_end, vec![0]);
        assert_eq!(
            range.sort_order,
            pb::range_request::SortOrder::Descend as i32
        );
        let resp = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                revision: 5,
                ..Default::default()
            }),
            count: 1,
            ..Default::default()
        };
        let v = serde_json::to_value(&resp).unwrap();
        assert_eq!(v["header"]["revision"], "5");
        assert_eq!(v["count"], "1");
        assert!(v.get("more").is_none(), "defaults are left out: {v}");
        assert!(decode::<pb::PutRequest>(b"{nope").is_err());
        assert_eq!(
            decode::<pb::PutRequest>(b"  ").unwrap(),
            pb::PutRequest::default()
        );
        let two: Vec<pb::WatchRequest> =
            decode_all(br#"{"create_request": {"key": "YQ=="}} {"progress_request": {}}"#).unwrap();
        assert_eq!(two.len(), 2);
    }
}
