//! The KV service's unary calls (Range, Put, DeleteRange, Txn) answered on a short path.
//!
//! These four calls are nearly all of a metadata store's traffic. Through tonic, each one
//! passes the router, the generated service's per-call wrappers, a streaming decoder, an
//! interceptor, a streaming encoder and the metrics layer's boxed future: about a fifth of a
//! member's CPU under 1,000 clients. [`UnaryKv`] sits in front of all that, reads the single
//! length-prefixed message itself, calls the same [`KvService`] methods tonic's path calls, and
//! answers with one data frame and `grpc-status: 0` trailers, or with the trailers-only error
//! tonic would send (the same status, as `Status::into_http` builds it). Requests it does not
//! own (other paths, HTTP/1, compressed or non-protobuf bodies) go on to the inner service
//! untouched, so the two paths can never disagree about anything but cost.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use prost::Message;
use tonic::Status;
use tonic::body::Body;

use super::kv::KvService;
use super::{requires_leader, token_in};
use crate::etcd::KvError;
use crate::etcd::metrics::{MethodCounts, Metrics};

/// gRPC's length-prefixed message header: a compression flag and a big-endian length.
const MESSAGE_HEADER_BYTES: usize = 5;

/// The calls answered here, by index into [`PATHS`].
#[derive(Debug, Clone, Copy)]
enum Call {
    Range,
    Put,
    DeleteRange,
    Txn,
}

const PATHS: [&str; 4] = [
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn",
];

/// Wraps the client API's service with [`UnaryKv`].
#[derive(Debug, Clone)]
pub struct UnaryKvLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    kv: KvService,
    metrics: Arc<Metrics>,
    /// The largest request message read, framing included in `--max-request-bytes`' slack.
    max_message_bytes: usize,
    /// Each call's counters, looked up once (the table is keyed by path).
    counts: [OnceLock<Arc<MethodCounts>>; PATHS.len()],
}

impl UnaryKvLayer {
    /// The layer serving `kv`'s unary calls, reading messages of at most
    /// `max_message_bytes`, counting calls in `metrics`.
    pub fn new(kv: KvService, metrics: Arc<Metrics>, max_message_bytes: usize) -> UnaryKvLayer {
        UnaryKvLayer {
            shared: Arc::new(Shared {
                kv,
                metrics,
                max_message_bytes,
                counts: Default::default(),
            }),
        }
    }
}

impl<S> tower::Layer<S> for UnaryKvLayer {
    type Service = UnaryKv<S>;
    fn layer(&self, inner: S) -> UnaryKv<S> {
        UnaryKv {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Answers the KV service's unary calls itself and passes every other request to `inner`.
#[derive(Debug, Clone)]
pub struct UnaryKv<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<Request<B>> for UnaryKv<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(call) = owned_call(&req) else {
            return Box::pin(self.inner.call(req));
        };
        let shared = Arc::clone(&self.shared);
        shared.counts(call).start();
        Box::pin(async move {
            let (resp, code) = match shared.answer(call, req).await {
                Ok(message) => (ok_response(message), 0),
                Err(status) => {
                    let code = status.code() as usize;
                    (status.into_http(), code)
                }
            };
            shared.counts(call).handled(code);
            Ok(resp)
        })
    }
}

/// The call `req` is, if it is one answered here: an HTTP/2 POST of an uncompressed protobuf
/// message to one of [`PATHS`].
fn owned_call<B>(req: &Request<B>) -> Option<Call> {
    if req.version() != http::Version::HTTP_2 || req.method() != http::Method::POST {
        return None;
    }
    let call = match req.uri().path() {
        "/etcdserverpb.KV/Range" => Call::Range,
        "/etcdserverpb.KV/Put" => Call::Put,
        "/etcdserverpb.KV/DeleteRange" => Call::DeleteRange,
        "/etcdserverpb.KV/Txn" => Call::Txn,
        _ => return None,
    };
    let headers = req.headers();
    let content_type = headers.get(http::header::CONTENT_TYPE)?.as_bytes();
    if content_type != b"application/grpc" && content_type != b"application/grpc+proto" {
        return None;
    }
    if headers
        .get("grpc-encoding")
        .is_some_and(|e| e.as_bytes() != b"identity")
    {
        return None;
    }
    Some(call)
}

impl Shared {
    fn counts(&self, call: Call) -> &MethodCounts {
        let path = PATHS[call as usize];
        self.counts[call as usize].get_or_init(|| self.metrics.method(path))
    }

    /// Serves one call: the encoded, length-prefixed response message, or the call's status.
    async fn answer<B>(&self, call: Call, req: Request<B>) -> Result<Bytes, Status>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let (parts, mut body) = req.into_parts();
        if requires_leader(&parts.headers) && self.kv.server.node().state().leader() == 0 {
            return Err(KvError::NoLeader.into());
        }
        let message = read_message(&mut body, self.max_message_bytes).await?;
        let token = token_in(&parts.headers);
        let token = token.as_deref();
        let kv = &self.kv;
        match call {
            Call::Range => encode(&kv.range_by(token, decode(message)?).await?),
            Call::Put => encode(&kv.put_by(token, decode(message)?).await?),
            Call::DeleteRange => encode(&kv.delete_range_by(token, decode(message)?).await?),
            Call::Txn => encode(&kv.txn_by(token, decode(message)?).await?),
        }
    }
}

/// Reads a unary call's one length-prefixed message from `body`, refusing it as soon as its
/// declared length is over `max_bytes` (so no more than that is ever buffered).
async fn read_message<B>(body: &mut B, max_bytes: usize) -> Result<Bytes, Status>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    let mut single: Option<Bytes> = None;
    let mut declared: Option<usize> = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| Status::internal(format!("reading the request: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing a unary call reads
        };
        // Most requests arrive in one data frame: keep it without copying.
        if single.is_none() && buf.is_empty() {
            single = Some(data);
        } else {
            if let Some(first) = single.take() {
                buf.extend_from_slice(&first);
            }
            buf.extend_from_slice(&data);
        }
        let have = single.as_deref().unwrap_or(&buf);
        if declared.is_none() && have.len() >= MESSAGE_HEADER_BYTES {
            let len = u32::from_be_bytes([have[1], have[2], have[3], have[4]]) as usize;
            if len > max_bytes {
                return Err(Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({len} vs. {max_bytes})"
                )));
            }
            declared = Some(len);
        }
        if have.len() > MESSAGE_HEADER_BYTES + max_bytes {
            return Err(Status::internal("grpc: more than one request message"));
        }
    }
    let mut all = single.unwrap_or_else(|| buf.freeze());
    if all.is_empty() {
        return Err(Status::internal("Missing request message."));
    }
    let Some(len) = declared else {
        return Err(Status::internal("protocol error: truncated message header"));
    };
    match all[0] {
        0 => {}
        1 => {
            return Err(Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ));
        }
        f => {
            return Err(Status::internal(format!(
                "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1)"
            )));
        }
    }
    if all.len() < MESSAGE_HEADER_BYTES + len {
        return Err(Status::internal("protocol error: truncated message"));
    }
    if all.len() > MESSAGE_HEADER_BYTES + len {
        return Err(Status::internal("grpc: more than one request message"));
    }
    all.advance(MESSAGE_HEADER_BYTES);
    Ok(all)
}

fn decode<M: Message + Default>(message: Bytes) -> Result<M, Status> {
    M::decode(message)
        .map_err(|e| Status::internal(format!("failed to decode Protobuf message: {e}")))
}

/// `m` as a length-prefixed gRPC message.
fn encode<M: Message>(m: &M) -> Result<Bytes, Status> {
    let len = m.encoded_len();
    let Ok(prefix) = u32::try_from(len) else {
        return Err(Status::resource_exhausted(format!(
            "response of {len} bytes is over gRPC's 4 GiB message limit"
        )));
    };
    let mut buf = BytesMut::with_capacity(MESSAGE_HEADER_BYTES + len);
    buf.put_u8(0);
    buf.put_u32(prefix);
    m.encode_raw(&mut buf);
    Ok(buf.freeze())
}

/// A successful unary answer: its message, then `grpc-status: 0`.
fn ok_response(message: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::new(UnaryBody {
        message: Some(message),
        trailers_sent: false,
    }));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// A response body of one data frame followed by the OK trailers.
struct UnaryBody {
    message: Option<Bytes>,
    trailers_sent: bool,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(m) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(m))));
        }
        if self.trailers_sent {
            return Poll::Ready(None);
        }
        self.trailers_sent = true;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers_sent
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use http_body::Body as _;

    /// A request body arriving in the given data frames.
    struct Frames(VecDeque<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn read(frames: &[&[u8]], max_bytes: usize) -> Result<Bytes, Status> {
        let mut body = Frames(frames.iter().map(|f| Bytes::copy_from_slice(f)).collect());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(read_message(&mut body, max_bytes))
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0];
        f.extend((payload.len() as u32).to_be_bytes());
        f.extend(payload);
        f
    }

    #[test]
    fn reads_one_message_however_it_is_split() {
        let f = framed(b"hello");
        assert_eq!(read(&[&f], 100).unwrap(), &b"hello"[..]);
        assert_eq!(
            read(&[&f[..2], &f[2..6], &f[6..]], 100).unwrap(),
            &b"hello"[..]
        );
        assert_eq!(read(&[&framed(b"")], 100).unwrap(), &b""[..]);
    }

    #[test]
    fn refuses_bad_framing_with_grpc_statuses() {
        let missing = read(&[], 100).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Internal);
        assert_eq!(missing.message(), "Missing request message.");
        // Declared over the limit: refused from the prefix alone, in grpc-go's words.
        let big = read(&[&[0, 0, 0, 1, 0]], 100).unwrap_err();
        assert_eq!(big.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            big.message(),
            "grpc: received message larger than max (256 vs. 100)"
        );
        let mut compressed = framed(b"x");
        compressed[0] = 1;
        assert!(
            read(&[&compressed], 100)
                .unwrap_err()
                .message()
                .contains("compressed-flag")
        );
        let mut odd = framed(b"x");
        odd[0] = 7;
        assert!(
            read(&[&odd], 100)
                .unwrap_err()
                .message()
                .contains("invalid compression flag: 7")
        );
        for cut in [&framed(b"hello")[..3], &framed(b"hello")[..7]] {
            let e = read(&[cut], 100).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Internal, "{}", e.message());
            assert!(e.message().contains("truncated"), "{}", e.message());
        }
        let two = [framed(b"a"), framed(b"b")].concat();
        assert!(
            read(&[&two], 100)
                .unwrap_err()
                .message()
                .contains("more than one")
        );
        // Bytes past the largest message are refused without buffering the rest.
        let flood = [framed(&[7; 100]), vec![0; 1000]].concat();
        assert!(
            read(&[&flood], 100)
                .unwrap_err()
                .message()
                .contains("more than one")
        );
    }

    #[test]
    fn answers_are_framed_messages_then_ok_trailers() {
        let m = crate::pb::etcdserverpb::PutResponse::default();
        let data = encode(&m).unwrap();
        assert_eq!(&data[..], &[0, 0, 0, 0, 0]);
        let mut body = UnaryBody {
            message: Some(data),
            trailers_sent: false,
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let Poll::Ready(Some(Ok(first))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("a data frame first");
        };
        assert!(first.is_data());
        let Poll::Ready(Some(Ok(second))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("then trailers");
        };
        assert_eq!(second.trailers_ref().unwrap()["grpc-status"], "0");
        assert!(http_body::Body::is_end_stream(&body));
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }
}
