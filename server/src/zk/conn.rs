//! One ZooKeeper client connection: the connect handshake, then requests kept in flight by a
//! [`Pipeline`] and answered in the order they came, pings, and the session's close.
//!
//! A frame over `jute.maxbuffer`, a record that does not decode, or a silence longer than the
//! session's timeout closes this connection only. Each request is answered by
//! [`super::request`]; notifications queued for the connection go out before the replies that
//! reflect their changes and after those that do not (see [`super::watches`] and
//! [`super::outbox`]). While [`IN_FLIGHT_MAX`] requests, or four
//! frames' worth of bytes, await their answers, no more are read.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

use super::acl::AuthId;
use super::codes::{err, op};
use super::four_letter::ConnStats;
use super::jute::{Buffer, Jute, JuteError, Reader};
use super::outbox::Outbox;
use super::pipeline::{Done, Pipeline};
use super::records::*;
use super::request::{Client, Fatal};
use super::session::{self, ZkContext};
use super::txn::ZkTxn;

/// Requests of one connection in flight at most (ZooKeeper's `globalOutstandingLimit` is a
/// thousand for the whole server).
pub const IN_FLIGHT_MAX: usize = 256;

/// How long the replies left in the buffer may take to go out once the connection ends.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Replies buffered before they are written, unless nothing else is ready first.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

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

/// Writes `parts` as one frame into the connection's buffer (flushed by the caller).
pub(super) async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[&[u8]],
) -> Result<(), ConnError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    w.write_all(&(len as u32).to_be_bytes()).await?;
    for p in parts {
        w.write_all(p).await?;
    }
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
    let (mut r, w) = tokio::io::split(stream);
    let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, w);
    let max = ctx.cfg.frame_bytes_max;
    let hello = frame(&mut r, max, first).await?;
    let mut rd = Reader::new(&hello);
    let req: ConnectRequest = rd.record()?;
    // A 3.4+ client appends whether it accepts a read-only server.
    let can_be_read_only = if rd.remaining() > 0 {
        rd.boolean()?
    } else {
        false
    };
    // A member cut off from its quorum serves such a client read-only, as ZooKeeper's
    // read-only mode does: a new session stays on this member (nothing can record it), reads
    // come from this member's state, and writes answer NOTREADONLY.
    let read_only = can_be_read_only && ctx.proposer.leader_lost();
    let applied = ctx.core.mvcc.snapshot().revision().unwrap_or(0);
    if req.last_zxid_seen > applied {
        return Err(ConnError::Ahead);
    }
    let timeout_ms = ctx.cfg.negotiate_ms(req.time_out);
    let (id, password) = if req.session_id == 0 && read_only {
        (session::new_session_id(&ctx), session::new_password())
    } else if req.session_id == 0 {
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
                w.flush().await?;
                return Err(ConnError::Expired);
            }
        }
    };
    if !read_only {
        session::touch(&ctx, id);
    }
    stats.session.store(id, Ordering::Relaxed);
    let resp = ConnectResponse {
        protocol_version: 0,
        time_out: timeout_ms,
        session_id: id,
        passwd: Buffer(password),
    };
    send(&mut w, &[&resp.to_bytes(), &[u8::from(read_only)]]).await?;
    w.flush().await?;
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
    let (conn, mut notes) = ctx.watches.connect(id);
    let _watching = Disconnect(&ctx, conn);
    let mut client = Client {
        session: id,
        conn,
        ids: vec![AuthId::ip(stats.peer.ip())],
        read_only,
    };
    ctx.watches.identify(conn, client.ids.clone());
    let mut pipeline = Pipeline::new(Arc::clone(&ctx), IN_FLIGHT_MAX, max.saturating_mul(4));
    let mut outbox = Outbox::default();
    // Whatever ends the connection, what the buffer holds goes out first: replies to
    // requests that were answered before it ended.
    let end: Result<(), ConnError> = async {
        loop {
            // Outside the wait below, so a submission is never dropped half-way.
            pipeline.submit(&client).await?;
            // Replies and notifications wait in the buffer while more work is ready at once, and
            // go out together when none is.
            let event = {
                let next = next_event(&mut notes, &mut pipeline, &mut client, &mut frames, silence);
                tokio::pin!(next);
                match poll_once(next.as_mut()) {
                    Some(event) => event,
                    None => {
                        w.flush().await?;
                        next.await
                    }
                }
            };
            match event {
                Event::Note(Some(n)) => {
                    // While a request is in flight its reply may reflect an older revision
                    // than this change, so the notification waits for that reply.
                    let taken = outbox.hold(n);
                    if taken.ended && !pipeline.closing() {
                        return Err(ConnError::Expired);
                    }
                    if taken.cut {
                        return Ok(());
                    }
                    if pipeline.is_empty() {
                        let sent = outbox.send_through(&mut w, i64::MAX).await?;
                        stats.sent.fetch_add(sent, Ordering::Relaxed);
                    }
                }
                // Cut off: its queue overflowed, or a snapshot install cut every connection.
                Event::Note(None) => return Ok(()),
                Event::Done(done) => {
                    // Every event up to what a reply reflects goes out before it, and no
                    // later one.
                    let through = match &done {
                        Ok(Done::Answered { reply, .. }) => reply.zxid,
                        Ok(Done::Closed { zxid, .. }) => *zxid,
                        Ok(Done::Again) => i64::MIN,
                        Err(_) => i64::MAX,
                    };
                    let taken = outbox.take(&mut notes);
                    let sent = outbox.send_through(&mut w, through).await?;
                    stats.sent.fetch_add(sent, Ordering::Relaxed);
                    if taken.ended && !pipeline.closing() {
                        return Err(ConnError::Expired);
                    }
                    // Cut off while the answer was made: it may reflect changes whose
                    // notifications this connection will never queue (a snapshot install,
                    // or its queue overflowed), so it is not sent; the client reconnects
                    // and re-arms its watches from the last zxid it saw.
                    if taken.cut {
                        return Ok(());
                    }
                    match done? {
                        Done::Answered { xid, reply: r } => {
                            reply(&mut w, xid, r.zxid, r.result).await?;
                            stats.sent.fetch_add(1, Ordering::Relaxed);
                            if r.close {
                                w.flush().await?;
                                return Err(ConnError::AuthFailed);
                            }
                        }
                        Done::Closed { xid, zxid } => {
                            reply(&mut w, xid, zxid, Ok(Vec::new())).await?;
                            w.flush().await?;
                            return Err(ConnError::Closed);
                        }
                        Done::Again => {}
                    }
                    // Nothing in flight: what waited goes now.
                    if pipeline.is_empty() && !outbox.is_empty() {
                        let sent = outbox.send_through(&mut w, i64::MAX).await?;
                        stats.sent.fetch_add(sent, Ordering::Relaxed);
                    }
                }
                Event::Frame(Ok(Some(body))) => {
                    let body = body?;
                    if !read_only {
                        session::touch(&ctx, id);
                    }
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    let mut rd = Reader::new(&body);
                    let header: RequestHeader = rd.record()?;
                    let rest = body[body.len() - rd.remaining()..].to_vec();
                    pipeline.push(&client, header, rest);
                }
                // The client went, or fell silent for its whole timeout.
                Event::Frame(Ok(None) | Err(_)) => return Ok(()),
            }
        }
    }
    .await;
    // Bounded: a client that reads nothing does not hold the connection open.
    let _ = tokio::time::timeout(FINAL_FLUSH, w.flush()).await;
    end
}

/// What the connection's loop wakes for.
enum Event {
    Note(Option<super::watches::Note>),
    Done(Result<Done, ConnError>),
    Frame(Result<Option<Result<Vec<u8>, ConnError>>, tokio::time::error::Elapsed>),
}

/// The next thing to do: a notification to send, the front request's answer, or a frame.
/// Every branch is safe to drop unfinished.
async fn next_event(
    notes: &mut super::watches::Notifications,
    pipeline: &mut Pipeline,
    client: &mut Client,
    frames: &mut tokio::sync::mpsc::Receiver<Result<Vec<u8>, ConnError>>,
    silence: Duration,
) -> Event {
    tokio::select! {
        biased;
        note = notes.recv() => Event::Note(note),
        done = pipeline.next(client), if !pipeline.is_empty() => Event::Done(done),
        frame = tokio::time::timeout(silence, frames.recv()), if !pipeline.is_full() => {
            Event::Frame(frame)
        }
    }
}

/// `fut`'s output if it is ready without waiting.
fn poll_once<F: Future>(fut: Pin<&mut F>) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    match fut.poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
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
