//! The load generator's gRPC connection: unary calls straight on an HTTP/2 connection (the
//! `h2` crate), so a request costs the client one stream on a shared connection and nothing
//! more. tonic's `Channel` puts a buffer task and a body-pipe task in front of every request;
//! a load generator sharing the machine with the server it measures should spend as little
//! as it can, or it measures itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::{Code, Status};

/// Most bytes a response message may have (etcd's default `--max-recv-bytes` is 2 GiB; a
/// load generator asks for small things and refuses anything bigger than this).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// One HTTP/2 connection to a gRPC server; clones share it. A connection that fails (the
/// server went away or sent GOAWAY) is dialled again by the next request, as etcd's clients
/// reconnect; requests in flight on it fail with `Unavailable`.
#[derive(Clone)]
pub struct GrpcConn {
    shared: Arc<Shared>,
}

/// A TLS client configuration and the name the server's certificate must carry.
pub type Tls = (
    Arc<rustls::ClientConfig>,
    rustls_pki_types::ServerName<'static>,
);

struct Shared {
    url: String,
    addr: String,
    tls: Option<Tls>,
    authority: http::uri::Authority,
    /// The live connection and its number; `None` once it failed, until a request dials.
    current: parking_lot::Mutex<Option<(u64, h2::client::SendRequest<Bytes>)>>,
    /// Held while dialling, so one request dials and the others wait for its connection.
    dialing: tokio::sync::Mutex<u64>,
}

impl GrpcConn {
    /// Connects to `url` (`http://host:port`, or `https://host:port` with `tls`) and drives
    /// the connection on a task.
    pub async fn connect(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<GrpcConn, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url}: no host:port"))?;
        let tls = match (uri.scheme_str(), tls) {
            (Some("http"), _) => None,
            (Some("https"), Some(config)) => {
                let host = authority.host().trim_matches(['[', ']']).to_string();
                let name = rustls_pki_types::ServerName::try_from(host)
                    .map_err(|e| format!("{url}: {e}"))?;
                Some((config, name))
            }
            (Some("https"), None) => return Err(format!("{url}: https:// needs TLS settings")),
            _ => return Err(format!("{url}: expected http:// or https://")),
        };
        let addr = if authority.port().is_some() {
            authority.as_str().to_string()
        } else {
            format!("{}:2379", authority.host())
        };
        let send = dial(&addr, tls.as_ref())
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(GrpcConn {
            shared: Arc::new(Shared {
                url: url.to_string(),
                addr,
                tls,
                authority,
                current: parking_lot::Mutex::new(Some((0, send))),
                dialing: tokio::sync::Mutex::new(0),
            }),
        })
    }

    /// The live connection, dialling a new one if the last one failed.
    async fn sender(&self) -> Result<(u64, h2::client::SendRequest<Bytes>), Status> {
        if let Some(c) = self.shared.current.lock().clone() {
            return Ok(c);
        }
        let mut dialed = self.shared.dialing.lock().await;
        if let Some(c) = self.shared.current.lock().clone() {
            return Ok(c);
        }
        let send = dial(&self.shared.addr, self.shared.tls.as_ref())
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot connect to {}: {e}", self.shared.url))
            })?;
        *dialed += 1;
        let c = (*dialed, send);
        *self.shared.current.lock() = Some(c.clone());
        Ok(c)
    }

    /// Forgets connection `generation` after it failed (unless a newer one replaced it).
    fn failed(&self, generation: u64) {
        let mut current = self.shared.current.lock();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    /// Calls `path` (`/package.Service/Method`) with `req` and decodes the answer.
    pub async fn unary<Req, Resp>(&self, path: &str, req: &Req) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let (generation, send) = self.sender().await?;
        let conn_failed = AtomicBool::new(false);
        let result = self.call(send, path, req, &conn_failed).await;
        if conn_failed.load(Ordering::Relaxed) {
            self.failed(generation);
        }
        result
    }

    async fn call<Req, Resp>(
        &self,
        mut send: h2::client::SendRequest<Bytes>,
        path: &str,
        req: &Req,
        conn_failed: &AtomicBool,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        // An error of the connection (not of this stream) means dialling again.
        let fail = |e: h2::Error| {
            if e.is_io() || e.is_go_away() {
                conn_failed.store(true, Ordering::Relaxed);
            }
            h2_status(e)
        };
        let len = req.encoded_len();
        let mut body = BytesMut::with_capacity(5 + len);
        body.put_u8(0);
        body.put_u32(len as u32);
        req.encode(&mut body)
            .expect("the buffer holds the encoded length");
        let request = http::Request::post(
            http::Uri::builder()
                .scheme("http")
                .authority(self.shared.authority.clone())
                .path_and_query(path)
                .build()
                .map_err(|e| Status::internal(e.to_string()))?,
        )
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(())
        .map_err(|e| Status::internal(e.to_string()))?;
        let ready = std::future::poll_fn(|cx| send.poll_ready(cx));
        ready.await.map_err(fail)?;
        let (response, mut stream) = send.send_request(request, false).map_err(fail)?;
        stream.send_data(body.freeze(), true).map_err(fail)?;
        let response = response.await.map_err(fail)?;
        if response.status() != http::StatusCode::OK {
            return Err(Status::unknown(format!(
                "HTTP status {}",
                response.status()
            )));
        }
        // A trailers-only answer carries the gRPC status in its headers.
        if let Some(s) = grpc_status(response.headers()) {
            s?;
        }
        let mut recv = response.into_body();
        let mut buf = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(fail)?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES + 5 {
                return Err(Status::resource_exhausted("response too large"));
            }
            buf.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.map_err(fail)?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(s) => s?,
            None => return Err(Status::internal("response without grpc-status")),
        }
        decode_message(buf.freeze())
    }
}

/// Opens an HTTP/2 connection to `addr` (over TLS with `tls`) and drives it on a task until
/// it ends.
async fn dial(addr: &str, tls: Option<&Tls>) -> Result<h2::client::SendRequest<Bytes>, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    match tls {
        None => handshake(Unvectored(tcp)).await,
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let stream = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            handshake(Unvectored(stream)).await
        }
    }
}

/// The HTTP/2 handshake on `io`, and a task driving the connection.
async fn handshake<T>(io: T) -> Result<h2::client::SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // Ends when every sender is dropped or the server goes; requests in flight then fail.
        let _ = conn.await;
    });
    Ok(send)
}

/// A socket that tells h2 it has no vectored writes. h2 then copies data frames of up to
/// 1 KiB into its write buffer, so the requests its connection task finds queued leave in
/// one write. Told the socket has vectored writes, h2 keeps each data frame of 256 bytes or
/// more apart and writes the buffer out before queueing another frame: one `writev` per
/// request with etcd's 256-byte values.
struct Unvectored<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Unvectored<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Unvectored<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// The gRPC status in `headers`, if they carry one: `Ok` for code 0. Not tonic's
/// `Status::from_header_map`: that clones the whole header map on every answer, and panics on
/// a `grpc-status-details-bin` that is not base64.
fn grpc_status(headers: &http::HeaderMap) -> Option<Result<(), Status>> {
    let code = headers.get("grpc-status")?;
    let code = code
        .to_str()
        .ok()
        .and_then(|c| c.parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32);
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| {
            percent_encoding::percent_decode_str(m)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    Some(Err(Status::new(code, message)))
}

/// One length-prefixed, uncompressed message making up the whole body.
fn decode_message<Resp: prost::Message + Default>(mut body: Bytes) -> Result<Resp, Status> {
    if body.len() < 5 {
        return Err(Status::internal(
            "response body shorter than a message header",
        ));
    }
    if body.get_u8() != 0 {
        return Err(Status::internal("compressed response (none was asked for)"));
    }
    let len = body.get_u32() as usize;
    if len != body.len() {
        return Err(Status::internal(format!(
            "response message of {} bytes, header says {len}",
            body.len()
        )));
    }
    Resp::decode(body).map_err(|e| Status::internal(format!("bad response message: {e}")))
}

fn h2_status(e: h2::Error) -> Status {
    let code = match e.reason() {
        Some(h2::Reason::REFUSED_STREAM) | Some(h2::Reason::CANCEL) => Code::Unavailable,
        _ if e.is_io() || e.is_go_away() => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bodies_get_an_error() {
        type R = quorumkv_server::pb::etcdserverpb::PutResponse;
        assert!(decode_message::<R>(Bytes::from_static(&[0, 0])).is_err());
        assert!(decode_message::<R>(Bytes::from_static(&[1, 0, 0, 0, 0])).is_err());
        assert!(decode_message::<R>(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
        assert!(decode_message::<R>(Bytes::from_static(&[0, 0, 0, 0, 1, 0xff])).is_err());
        assert!(decode_message::<R>(Bytes::from_static(&[0, 0, 0, 0, 0])).is_ok());
    }
}
