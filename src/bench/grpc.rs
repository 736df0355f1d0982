//! The load generator's gRPC connection: unary calls straight on an HTTP/2 connection (the
//! `h2` crate), so a request costs the client one stream on a shared connection and nothing
//! more. tonic's `Channel` puts a buffer task and a body-pipe task in front of every request;
//! a load generator sharing the machine with the server it measures should spend as little
//! as it can, or it measures itself.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::{Code, Status};

/// Most bytes a response message may have (etcd's default `--max-recv-bytes` is 2 GiB; a
/// load generator asks for small things and refuses anything bigger than this).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// One HTTP/2 connection to a gRPC server; clones share it.
#[derive(Clone)]
pub struct GrpcConn {
    send: h2::client::SendRequest<Bytes>,
    authority: http::uri::Authority,
}

impl GrpcConn {
    /// Connects to `url` (`http://host:port`) and drives the connection on a task.
    pub async fn connect(url: &str) -> Result<GrpcConn, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{url}: only http:// endpoints are supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url}: no host:port"))?;
        let addr = if authority.port().is_some() {
            authority.as_str().to_string()
        } else {
            format!("{}:2379", authority.host())
        };
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .map_err(|_| format!("cannot connect to {url}: timed out"))?
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(1 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        tokio::spawn(async move {
            // The connection ends when every clone is dropped or the server goes; requests in
            // flight then fail with the error.
            let _ = conn.await;
        });
        Ok(GrpcConn { send, authority })
    }

    /// Calls `path` (`/package.Service/Method`) with `req` and decodes the answer.
    pub async fn unary<Req, Resp>(&mut self, path: &str, req: &Req) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let mut body = BytesMut::with_capacity(5 + req.encoded_len());
        body.put_u8(0);
        body.put_u32(req.encoded_len() as u32);
        req.encode(&mut body)
            .expect("the buffer holds the encoded length");
        let request = http::Request::post(
            http::Uri::builder()
                .scheme("http")
                .authority(self.authority.clone())
                .path_and_query(path)
                .build()
                .map_err(|e| Status::internal(e.to_string()))?,
        )
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(())
        .map_err(|e| Status::internal(e.to_string()))?;
        let ready = std::future::poll_fn(|cx| self.send.poll_ready(cx));
        ready.await.map_err(h2_status)?;
        let (response, mut stream) = self.send.send_request(request, false).map_err(h2_status)?;
        stream.send_data(body.freeze(), true).map_err(h2_status)?;
        let response = response.await.map_err(h2_status)?;
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
            let chunk = chunk.map_err(h2_status)?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES + 5 {
                return Err(Status::resource_exhausted("response too large"));
            }
            buf.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.map_err(h2_status)?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(s) => s?,
            None => return Err(Status::internal("response without grpc-status")),
        }
        decode_message(buf.freeze())
    }
}

/// The gRPC status in `headers`, if they carry one: `Ok` for code 0.
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
