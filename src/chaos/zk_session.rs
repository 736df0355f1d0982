//! One ZooKeeper session for the chaos workload: a connection that sends one request at a time
//! and reads until that request's reply, keeping the watch notifications that arrive before
//! it, in order. Replies and notifications are treated as hostile (bounded frames, decoding
//! errors end the session). A session whose connection fails can be resumed on another member
//! ([`ZkSession::resume`]) with its id, password and the last zxid it saw, as ZooKeeper's
//! clients do; this module never decides when.

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

/// Why a session could not be resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeError {
    /// The member said the session is gone.
    Expired,
    /// No answer, or the member would not take it (it may be behind what the session saw).
    Unreachable(String),
}

/// An open session.
pub struct ZkSession {
    tcp: TcpStream,
    xid: i32,
    /// The session id.
    pub id: i64,
    /// Its password.
    passwd: Vec<u8>,
    /// The timeout it asked for.
    timeout_ms: i32,
    /// The newest zxid a reply carried.
    pub last_zxid: i64,
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
        let hello = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            time_out: timeout_ms,
            session_id: 0,
            passwd: Buffer(vec![0; 16]),
        };
        match Self::connect(addr, hello, call_timeout).await {
            Ok(s) => Ok(s),
            Err(ResumeError::Expired) => Err(format!("{addr}: the server refused the session")),
            Err(ResumeError::Unreachable(e)) => Err(e),
        }
    }

    /// The same session on a new connection to `addr`; its notifications so far stay taken
    /// or not as they were, and those still unread on the old connection are lost with it.
    pub async fn resume(&self, addr: &str) -> Result<Self, ResumeError> {
        let hello = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: self.last_zxid,
            time_out: self.timeout_ms,
            session_id: self.id,
            passwd: Buffer(self.passwd.clone()),
        };
        let mut s = Self::connect(addr, hello, self.call_timeout).await?;
        if s.id != self.id {
            return Err(ResumeError::Unreachable(format!(
                "{addr} answered session {:x} for {:x}",
                s.id, self.id
            )));
        }
        s.last_zxid = self.last_zxid;
        Ok(s)
    }

    async fn connect(
        addr: &str,
        hello: ConnectRequest,
        call_timeout: Duration,
    ) -> Result<Self, ResumeError> {
        let unreachable = |e: String| ResumeError::Unreachable(format!("{addr}: {e}"));
        let timeout_ms = hello.time_out;
        let opened = tokio::time::timeout(call_timeout, async {
            let mut tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tcp.set_nodelay(true)
                .map_err(|e| unreachable(e.to_string()))?;
            let mut body = hello.to_bytes();
            body.push(0);
            tcp.write_all(&framed(&body))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let answer = read_frame(&mut tcp).await.map_err(unreachable)?;
            let r = ConnectResponse::read(&mut Reader::new(&answer))
                .map_err(|e| unreachable(e.to_string()))?;
            // ZooKeeper answers a session it does not know with id 0 (and timeout 0).
            if r.session_id == 0 || r.time_out <= 0 {
                return Err(ResumeError::Expired);
            }
            Ok((tcp, r))
        });
        let (tcp, r) = opened
            .await
            .map_err(|_| unreachable("no session in time".into()))??;
        Ok(ZkSession {
            tcp,
            xid: 0,
            id: r.session_id,
            passwd: r.passwd.0,
            timeout_ms,
            last_zxid: 0,
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
                self.last_zxid = self.last_zxid.max(header.zxid);
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
