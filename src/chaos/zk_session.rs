//! One ZooKeeper session for the chaos workload: a connection that sends one request at a time
//! and reads until that request's reply, keeping the watch notifications that arrive before
//! it, in order. Replies and notifications are treated as hostile (bounded frames, decoding
//! errors end the session). It never reconnects: a session whose connection fails is
//! abandoned, as a crashed client's would be, and left to expire.

use std::time::Duration;

use quorumkv_server::zk::codes::{op, xid};
use quorumkv_server::zk::jute::{Buffer, Jute, Reader};
use quorumkv_server::zk::records::{
    ConnectRequest, ConnectResponse, ReplyHeader, RequestHeader, WatcherEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest frame read (a listing of many sequential children fits).
const FRAME_BYTES_MAX: usize = 16 << 20;

/// A notification and the zxid of the header it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The event.
    pub event: WatcherEvent,
    /// The zxid its header carried.
    pub zxid: i64,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The server answered with this error code.
    Code(i32),
    /// No answer in time, or the connection broke: the outcome is unknown.
    Lost(String),
}

/// An open session.
pub struct ZkSession {
    tcp: TcpStream,
    xid: i32,
    /// The session id.
    pub id: i64,
    /// Notifications received and not yet taken.
    pub notifications: Vec<Notification>,
    /// How long a call may wait for its reply.
    call_timeout: Duration,
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

async fn read_frame(r: &mut TcpStream) -> Result<Vec<u8>, String> {
    let len = r.read_u32().await.map_err(|e| e.to_string())? as usize;
    if len > FRAME_BYTES_MAX {
        return Err(format!("a frame of {len} bytes"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Ok(body)
}

impl ZkSession {
    /// Opens a session of `timeout_ms` at `addr`.
    pub async fn open(addr: &str, timeout_ms: i32, call_timeout: Duration) -> Result<Self, String> {
        let opened = tokio::time::timeout(call_timeout, async {
            let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut body = ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 0,
                time_out: timeout_ms,
                session_id: 0,
                passwd: Buffer(vec![0; 16]),
            }
            .to_bytes();
            body.push(0);
            tcp.write_all(&framed(&body))
                .await
                .map_err(|e| e.to_string())?;
            let answer = read_frame(&mut tcp).await?;
            let r = ConnectResponse::read(&mut Reader::new(&answer)).map_err(|e| e.to_string())?;
            if r.session_id == 0 {
                return Err("the server refused the session".to_string());
            }
            Ok((tcp, r.session_id))
        });
        let (tcp, id) = opened
            .await
            .map_err(|_| format!("{addr}: no session in time"))??;
        Ok(ZkSession {
            tcp,
            xid: 0,
            id,
            notifications: Vec::new(),
            call_timeout,
        })
    }

    /// Sends request `kind` with `body`; returns the reply's zxid and body.
    pub async fn call(&mut self, kind: i32, body: &[u8]) -> Result<(i64, Vec<u8>), CallError> {
        self.xid = self.xid.wrapping_add(1).max(1);
        let want = self.xid;
        let mut msg = RequestHeader { xid: want, kind }.to_bytes();
        msg.extend_from_slice(body);
        let timeout = self.call_timeout;
        let lost = |e: String| CallError::Lost(e);
        tokio::time::timeout(timeout, async {
            self.tcp
                .write_all(&framed(&msg))
                .await
                .map_err(|e| lost(e.to_string()))?;
            loop {
                let frame = read_frame(&mut self.tcp).await.map_err(lost)?;
                let mut r = Reader::new(&frame);
                let header = ReplyHeader::read(&mut r).map_err(|e| lost(e.to_string()))?;
                if header.xid == xid::NOTIFICATION {
                    let event = WatcherEvent::read(&mut r).map_err(|e| lost(e.to_string()))?;
                    self.notifications.push(Notification {
                        event,
                        zxid: header.zxid,
                    });
                    continue;
                }
                if header.xid == xid::PING {
                    continue;
                }
                if header.xid != want {
                    return Err(lost(format!(
                        "reply to xid {} while {want} waits",
                        header.xid
                    )));
                }
                if header.err != 0 {
                    return Err(CallError::Code(header.err));
                }
                let rest = frame[frame.len() - r.remaining()..].to_vec();
                return Ok((header.zxid, rest));
            }
        })
        .await
        .map_err(|_| lost("no reply in time".into()))?
    }

    /// Closes the session; true when the server confirmed it.
    pub async fn close(mut self) -> bool {
        self.call(op::CLOSE_SESSION, &[]).await.is_ok()
    }
}
