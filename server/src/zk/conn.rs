//! One ZooKeeper client connection: the connect handshake, then requests answered one at a
//! time in the order they came (so replies keep their order), pings, and the session's close.
//!
//! A frame over `jute.maxbuffer`, a record that does not decode, or a silence longer than the
//! session's timeout closes this connection only. Each request is answered by
//! [`super::request`]; notifications queued for the connection go out before every reply (see
//! [`super::watches`] for why that orders them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::acl::AuthId;
use super::codes::{err, op};
use super::four_letter::ConnStats;
use super::jute::{Buffer, Jute, JuteError, Reader};
use super::records::*;
use super::request::{self, Client, Fatal};
use super::session::{self, ZkContext};
use super::txn::ZkTxn;

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than the limit.
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// A record that does not decode.
    #[error("bad record: {0}")]
    Bad(#[from] JuteError),
    /// The session is unknown or its password wrong.
    #[error("session expired")]
    Expired,
    /// The client has seen a later zxid than this member has applied.
    #[error("the client is ahead of this member")]
    Ahead,
    /// The member could not take a write whose fate is then unknown.
    #[error("member: {0}")]
    Member(#[from] crate::member::error::Error),
    /// The client closed its session.
    #[error("session closed")]
    Closed,
    /// A request that ends the connection.
    #[error("{0}")]
    Request(#[from] Fatal),
    /// The cluster holds as many sessions as it may.
    #[error("too many sessions")]
    TooManySessions,
    /// Credentials of a scheme not served.
    #[error("authentication failed")]
    AuthFailed,
}

/// Reads one length-prefixed frame.
async fn frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    len: u32,
) -> Result<Vec<u8>, ConnError> {
    let len = len as usize;
    if len > max {
        return Err(ConnError::TooLarge(len));
    }
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Sends `parts` as one frame.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> Result<(), ConnError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

async fn reply<W: AsyncWrite + Unpin>(
    w: &mut W,
    xid: i32,
    zxid: i64,
    result: Result<Vec<u8>, i32>,
) -> Result<(), ConnError> {
    let (code, body) = match result {
        Ok(body) => (err::OK, body),
        Err(code) => (code, Vec::new()),
    };
    let header = ReplyHeader {
        xid,
        zxid,
        err: code,
    }
    .to_bytes();
    send(w, &[&header, &body]).await
}

/// Serves one connection whose first four bytes (a frame length) were read already.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    ctx: Arc<ZkContext>,
    stream: S,
    stats: Arc<ConnStats>,
    first: u32,
) -> Result<(), ConnError> {
    let (mut r, mut w) = tokio::io::split(stream);
    let max = ctx.cfg.frame_bytes_max;
    let hello = frame(&mut r, max, first).await?;
    let mut rd = Reader::new(&hello);
    let req: ConnectRequest = rd.record()?;
    // A 3.4+ client appends its read-only flag.
    let _read_only = if rd.remaining() > 0 {
        rd.boolean()?
    } else {
        false
    };
    let applied = ctx.core.mvcc.snapshot().revision().unwrap_or(0);
    if req.last_zxid_seen > applied {
        return Err(ConnError::Ahead);
    }
    let timeout_ms = ctx.cfg.negotiate_ms(req.time_out);
    let (id, password) = if req.session_id == 0 {
        if session::count(&ctx.core) >= ctx.cfg.sessions_max {
            return Err(ConnError::TooManySessions);
        }
        // An id someone holds already (an etcd lease's) is refused: another is tried.
        let mut made = None;
        for _ in 0..3 {
            let id = session::new_session_id(&ctx);
            let password = session::new_password();
            let t = ZkTxn {
                session: id,
                op: op::CREATE_SESSION,
                timeout_ms,
                password: password.clone(),
                ..ZkTxn::default()
            };
            if session::propose(&ctx, &t).await?.result.is_ok() {
                made = Some((id, password));
                break;
            }
        }
        let Some((id, password)) = made else {
            return Err(ConnError::Expired);
        };
        (id, password)
    } else {
        match session::stored(&ctx.core, req.session_id) {
            Some(s) if s.password == req.passwd.0 => (req.session_id, s.password),
            _ => {
                let expired = ConnectResponse {
                    passwd: Buffer(vec![0; 16]),
                    ..ConnectResponse::default()
                };
                send(&mut w, &[&expired.to_bytes(), &[0]]).await?;
                return Err(ConnError::Expired);
            }
        }
    };
    session::touch(&ctx, id);
    stats.session.store(id, Ordering::Relaxed);
    let resp = ConnectResponse {
        protocol_version: 0,
        time_out: timeout_ms,
        session_id: id,
        passwd: Buffer(password),
    };
    send(&mut w, &[&resp.to_bytes(), &[0]]).await?;
    // A client silent for its whole timeout is gone (it pings at a third of it).
    let silence = Duration::from_millis(timeout_ms as u64);
    // Frames are read by a task of their own, so waiting for one never loses half of it
    // while a notification goes out.
    let (frames_tx, mut frames) = tokio::sync::mpsc::channel::<Result<Vec<u8>, ConnError>>(16);
    let reader = tokio::spawn(async move {
        loop {
            let mut head = [0u8; 4];
            let next = match r.read_exact(&mut head).await {
                Ok(_) => frame(&mut r, max, u32::from_be_bytes(head)).await,
                Err(e) => Err(e.into()),
            };
            let failed = next.is_err();
            if frames_tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    let (conn, mut notes) = ctx.watches.connect();
    let _watching = Disconnect(&ctx, conn);
    let mut client = Client {
        session: id,
        conn,
        ids: vec![AuthId::ip(stats.peer.ip())],
    };
    ctx.watches.identify(conn, client.ids.clone());
    loop {
        let body = tokio::select! {
            next = tokio::time::timeout(silence, frames.recv()) => match next {
                Ok(Some(body)) => body?,
                Ok(None) | Err(_) => return Ok(()),
            },
            note = notes.recv() => match note {
                Some(n) => {
                    send(&mut w, &[&n]).await?;
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                // Cut off: its queue overflowed.
                None => return Ok(()),
            },
        };
        session::touch(&ctx, id);
        stats.received.fetch_add(1, Ordering::Relaxed);
        let mut rd = Reader::new(&body);
        let header: RequestHeader = rd.record()?;
        let rest = &body[body.len() - rd.remaining()..];
        if header.kind == op::CLOSE_SESSION {
            let answer = session::close(&ctx, id).await?;
            drain(&mut w, &mut notes).await?;
            reply(&mut w, header.xid, answer.zxid, Ok(Vec::new())).await?;
            return Err(ConnError::Closed);
        }
        let answer = request::handle(&ctx, &mut client, &header, rest).await?;
        // Every event up to what this reply reflects goes out before it.
        let drained = drain(&mut w, &mut notes).await?;
        reply(&mut w, header.xid, answer.zxid, answer.result).await?;
        stats.sent.fetch_add(drained + 1, Ordering::Relaxed);
        if answer.close {
            return Err(ConnError::AuthFailed);
        }
    }
}

/// Aborts the frame reader when the connection ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forgets the connection's watches when it ends.
struct Disconnect<'a>(&'a ZkContext, u64);

impl Drop for Disconnect<'_> {
    fn drop(&mut self) {
        self.0.watches.disconnect(self.1);
    }
}

/// Sends the notifications queued so far.
async fn drain<W: AsyncWrite + Unpin>(
    w: &mut W,
    notes: &mut super::watches::Notifications,
) -> Result<u64, ConnError> {
    let mut sent = 0;
    while let Ok(n) = notes.try_recv() {
        send(w, &[&n]).await?;
        sent += 1;
    }
    Ok(sent)
}
