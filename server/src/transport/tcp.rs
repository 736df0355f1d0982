//! TCP connections between peers: one outbound connection per peer, fed by a bounded queue
//! and re-established with backoff, and inbound connections whose frames are decoded into
//! protocol messages. A third kind of connection carries member-to-member calls: after its
//! handshake the accepted stream is handed, acknowledged and otherwise untouched, to whoever
//! serves those calls (see [`dial_calls`]); the transport knows nothing of what they say.
//!
//! A connection that sends anything invalid (bad frame, bad handshake, undecodable or
//! misattributed message) is closed with a logged reason; the process and the other
//! connections carry on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use quorumkv_replication::{NodeId, ProtocolMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::frame;
use super::snapshot::{self, ReceiveLimits};
use super::traffic::PeerTraffic;

const HANDSHAKE_MAGIC: &[u8; 8] = b"QKVPEER1";
/// Opens an info query: the answer is one frame describing the cluster, then the connection
/// closes (how a member joining a running cluster learns its id and its peers).
const INFO_MAGIC: &[u8; 8] = b"QKVINFO1";

/// Opens a member-to-member call connection: after the handshake and a one-byte
/// acknowledgement, the stream belongs to the calls' own protocol.
const CALLS_MAGIC: &[u8; 8] = b"QKVCALL1";
/// The acknowledgement of a call connection's handshake.
const CALLS_ACK: u8 = 0xca;

/// Largest frame a connection may send before its handshake (handshakes are 24 bytes).
const HANDSHAKE_BYTES_MAX: usize = 64;
/// How long a new connection has to send its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long dialing a peer may take before it is retried (etcd's peer dial timeout).
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long sent data may stay unacknowledged before the kernel drops the connection, and
/// how soon an idle connection is probed. Without it a connection cut off by a partition keeps
/// retransmitting with exponential backoff, and a healed peer stays unheard for tens of
/// seconds; dropped instead, the connection is dialed again as soon as the peer is reachable.
const STUCK_AFTER: Duration = Duration::from_secs(5);

/// Peer connection settings: no Nagle delay, and dead connections dropped after
/// [`STUCK_AFTER`] (TCP_USER_TIMEOUT, keepalive probes on idle ones).
fn tune(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: `fd` is an open socket owned by `stream` for the duration of the call, and
        // the option value is a plain int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(name, error = %std::io::Error::last_os_error(), "setsockopt failed");
        }
    };
    let stuck_ms = STUCK_AFTER.as_millis() as libc::c_int;
    let idle_secs = (STUCK_AFTER.as_secs() / 2).max(1) as libc::c_int;
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, stuck_ms);
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_secs);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
}

/// Produces the answer to an info query.
pub type InfoFn = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// Where accepted member-to-member call connections go.
pub type CallSink = mpsc::Sender<TcpStream>;

fn handshake(cluster: u64, from: NodeId) -> Vec<u8> {
    handshake_of(HANDSHAKE_MAGIC, cluster, from)
}

fn handshake_of(magic: &[u8; 8], cluster: u64, from: NodeId) -> Vec<u8> {
    let mut p = magic.to_vec();
    p.extend_from_slice(&cluster.to_le_bytes());
    p.extend_from_slice(&from.to_le_bytes());
    let mut out = Vec::new();
    frame::encode(&mut out, &p);
    out
}

/// A peer's address and the queue of frames for it.
type PeerQueue = (SocketAddr, mpsc::Sender<Vec<u8>>);

/// Sends encoded messages to every peer; peers can be added or moved while it runs.
#[derive(Debug)]
pub struct Outbound {
    cluster: u64,
    me: NodeId,
    queue_len: usize,
    runtime: tokio::runtime::Handle,
    queues: RwLock<BTreeMap<NodeId, PeerQueue>>,
    traffic: Arc<PeerTraffic>,
}

impl Outbound {
    /// Starts one sender task per peer (other than `me`) on the current runtime.
    pub fn start(
        cluster: u64,
        me: NodeId,
        peers: &BTreeMap<NodeId, SocketAddr>,
        queue_len: usize,
    ) -> Outbound {
        let out = Outbound {
            cluster,
            me,
            queue_len,
            runtime: tokio::runtime::Handle::current(),
            queues: RwLock::new(BTreeMap::new()),
            traffic: Arc::default(),
        };
        for (&id, &addr) in peers {
            out.set_peer(id, addr);
        }
        out
    }

    /// Sends to `id` at `addr` from now on (a new member, or one that moved).
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        if id == self.me {
            return;
        }
        let mut queues = self.queues.write();
        if queues.get(&id).is_some_and(|(a, _)| *a == addr) {
            return;
        }
        let (tx, rx) = mpsc::channel(self.queue_len);
        let counts = self.traffic.peer(id);
        self.runtime
            .spawn(sender(self.cluster, self.me, id, addr, rx, counts));
        // Dropping a replaced queue ends its sender task.
        queues.insert(id, (addr, tx));
    }

    /// Opens a member-to-member call connection to member `id`'s peer port (see
    /// [`dial_calls`]); a member whose address is not known is an error.
    pub async fn dial_calls(&self, id: NodeId) -> std::io::Result<TcpStream> {
        let addr = self.addr(id).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no peer address for member {id:x}"),
            )
        })?;
        dial_calls(addr, self.cluster, self.me).await
    }

    /// The address `id` is reached at.
    pub fn addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.queues.read().get(&id).map(|(a, _)| *a)
    }

    /// Queues a message (already a frame) for `to`; drops it when the queue is full (the
    /// protocols retransmit).
    pub fn send(&self, to: NodeId, frame: Vec<u8>) -> bool {
        let queued = self
            .queues
            .read()
            .get(&to)
            .is_some_and(|(_, q)| q.try_send(frame).is_ok());
        if !queued {
            self.traffic.peer(to).failed();
        }
        queued
    }

    /// What has travelled to and from each peer (inbound connections count into it too).
    pub fn traffic(&self) -> &Arc<PeerTraffic> {
        &self.traffic
    }
}

/// Asks the member at `addr` to describe its cluster (see `INFO_MAGIC`); blocking, bounded by
/// `timeout` per step, and the answer by `max_bytes`.
pub fn query_info(
    addr: SocketAddr,
    timeout: Duration,
    max_bytes: usize,
) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut hello = INFO_MAGIC.to_vec();
    hello.extend_from_slice(&[0u8; 16]);
    let mut out = Vec::new();
    frame::encode(&mut out, &hello);
    s.write_all(&out)?;
    let mut dec = frame::Decoder::new(max_bytes);
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if let Some(f) = dec.next_frame().map_err(std::io::Error::other)? {
            return Ok(f);
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "peer closed before answering",
            ));
        }
        dec.push(&buf[..n]);
    }
}

/// Opens a member-to-member call connection to the member at `addr`: dials, identifies this
/// member of `cluster` and waits for the acknowledgement. The stream is then the caller's.
pub async fn dial_calls(addr: SocketAddr, cluster: u64, me: NodeId) -> std::io::Result<TcpStream> {
    let timed_out =
        |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string());
    let mut stream = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("dialing the member timed out"))??;
    tune(&stream);
    stream
        .write_all(&handshake_of(CALLS_MAGIC, cluster, me))
        .await?;
    let mut ack = [0u8; 1];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut ack))
        .await
        .map_err(|_| timed_out("the member did not acknowledge in time"))??;
    if ack[0] != CALLS_ACK {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the member refused the call connection",
        ));
    }
    Ok(stream)
}

async fn sender(
    cluster: u64,
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    counts: Arc<super::traffic::PeerCounts>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let dialed = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await;
        let mut stream = match dialed {
            Ok(Ok(s)) => s,
            Ok(Err(_)) | Err(_) => {
                // Drop what piled up while the peer is unreachable; it is stale by now.
                while rx.try_recv().is_ok() {}
                if rx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        tune(&stream);
        backoff = Duration::from_millis(20);
        if stream.write_all(&handshake(cluster, me)).await.is_err() {
            continue;
        }
        let mut batch = Vec::new();
        loop {
            let Some(first) = rx.recv().await else { return };
            batch.clear();
            batch.extend_from_slice(&first);
            // Coalesce whatever else is queued into one write.
            while batch.len() < 1 << 20 {
                match rx.try_recv() {
                    Ok(f) => batch.extend_from_slice(&f),
                    Err(_) => break,
                }
            }
            if let Err(e) = stream.write_all(&batch).await {
                tracing::debug!(peer, error = %e, "peer connection lost; reconnecting");
                counts.failed();
                break;
            }
            counts.sent(batch.len());
        }
    }
}

/// What an accepting member is: its cluster and id, the largest frame a peer may send, where
/// received snapshots go, how it describes its cluster to info queries, and where traffic is
/// counted.
pub struct Acceptor {
    /// The cluster's id; peers from another are refused.
    pub cluster: u64,
    /// This member's id; messages for another are refused.
    pub me: NodeId,
    /// Largest frame an identified peer may send.
    pub max_frame_bytes: usize,
    /// Where received snapshots go and how large one may be.
    pub snapshots: ReceiveLimits,
    /// The answer to info queries, if this member gives one.
    pub info: Option<InfoFn>,
    /// Where member-to-member call connections go, if this member serves calls.
    pub calls: Option<CallSink>,
    /// Bytes received per peer.
    pub traffic: Arc<PeerTraffic>,
}

/// Accepts peer connections (message connections and snapshot streams) and forwards their
/// decoded messages to `inbound`.
pub async fn accept<M: ProtocolMessage>(
    listener: TcpListener,
    acceptor: Acceptor,
    inbound: mpsc::Sender<M>,
) {
    let acceptor = Arc::new(acceptor);
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let inbound = inbound.clone();
        let acceptor = Arc::clone(&acceptor);
        tokio::spawn(async move {
            if let Err(reason) = serve::<M>(stream, &acceptor, inbound).await {
                tracing::warn!(%from, reason, "closing peer connection");
            }
        });
    }
}

async fn serve<M: ProtocolMessage>(
    mut stream: TcpStream,
    acceptor: &Acceptor,
    inbound: mpsc::Sender<M>,
) -> Result<(), String> {
    let Acceptor {
        cluster,
        me,
        max_frame_bytes,
        ref snapshots,
        ref info,
        ref calls,
        ref traffic,
    } = *acceptor;
    tune(&stream);
    // Until it identifies itself, a connection may send one small frame, promptly.
    let mut dec = frame::Decoder::new(HANDSHAKE_BYTES_MAX);
    let mut buf = vec![0u8; 64 << 10];
    let mut peer: Option<NodeId> = None;
    let mut counts: Option<Arc<super::traffic::PeerCounts>> = None;
    loop {
        let read = stream.read(&mut buf);
        let n = if peer.is_none() {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
                .await
                .map_err(|_| "no handshake in time".to_string())?
        } else {
            read.await
        }
        .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        if let Some(c) = &counts {
            c.received(n);
        }
        dec.push(&buf[..n]);
        while let Some(payload) = dec.next_frame().map_err(|e| e.to_string())? {
            let Some(from) = peer else {
                let stream_kind = payload.get(..8);
                if payload.len() == 24 && stream_kind == Some(INFO_MAGIC) {
                    let answer = info.as_ref().map(|f| f()).unwrap_or_default();
                    let mut out = Vec::with_capacity(answer.len() + frame::HEADER_BYTES);
                    frame::encode(&mut out, &answer);
                    stream.write_all(&out).await.map_err(|e| e.to_string())?;
                    let _ = stream.shutdown().await;
                    return Ok(());
                }
                if payload.len() != 24
                    || (stream_kind != Some(HANDSHAKE_MAGIC)
                        && stream_kind != Some(snapshot::STREAM_MAGIC)
                        && stream_kind != Some(CALLS_MAGIC))
                {
                    return Err("bad handshake".into());
                }
                let c = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
                if c != cluster {
                    return Err(format!("peer from another cluster ({c})"));
                }
                let from = u64::from_le_bytes(payload[16..24].try_into().expect("8 bytes"));
                if stream_kind == Some(CALLS_MAGIC) {
                    // The caller waits for the acknowledgement before it says more.
                    if dec.buffered() != 0 {
                        return Err("call connection spoke before its acknowledgement".into());
                    }
                    let Some(sink) = calls else {
                        return Err("this member serves no member-to-member calls".into());
                    };
                    stream
                        .write_all(&[CALLS_ACK])
                        .await
                        .map_err(|e| e.to_string())?;
                    let _ = sink.send(stream).await;
                    return Ok(());
                }
                dec.set_max(max_frame_bytes.max(snapshot::CHUNK_BYTES + 1));
                if stream_kind == Some(snapshot::STREAM_MAGIC) {
                    return snapshot::receive(stream, dec, from, me, snapshots, &inbound).await;
                }
                peer = Some(from);
                counts = Some(traffic.peer(from));
                continue;
            };
            let m = M::decode(&payload).map_err(|e| e.to_string())?;
            if m.from() != from || m.to() != me {
                return Err(format!(
                    "message from {} to {} on the connection of {from}",
                    m.from(),
                    m.to()
                ));
            }
            if inbound.send(m).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(stream: &TcpStream, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the socket is open for the call; `value` and `len` describe an int buffer.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                level,
                name,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        value
    }

    #[tokio::test]
    async fn both_ends_of_a_peer_connection_drop_it_when_stuck() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (dialed, (accepted, _)) = (dialed.unwrap(), accepted.unwrap());
        for s in [&dialed, &accepted] {
            tune(s);
            assert_eq!(option(s, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 5000);
            assert_eq!(option(s, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
            assert_eq!(option(s, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 2);
            assert_eq!(option(s, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
        }
    }
}
