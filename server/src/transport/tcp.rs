//! TCP connections between peers: one outbound connection per peer, fed by a bounded queue
//! and re-established with backoff, and inbound connections whose frames are decoded into
//! protocol messages. A third kind of connection carries member-to-member calls: after its
//! handshake the accepted stream is handed, acknowledged and otherwise untouched, to whoever
//! serves those calls (see [`dial_calls`]); the transport knows nothing of what they say.
//!
//! Every connection is opened through [`PeerSecurity`]: TLS when configured, and a proof of
//! membership always, before it carries anything. A connection that sends anything invalid
//! (bad frame, failed proof, undecodable or misattributed message) is closed with a logged
//! reason; the process and the other connections carry on.

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
use super::peer_auth::{HANDSHAKE_FRAME_BYTES_MAX, Hello};
use super::peer_stream::PeerStream;
use super::security::PeerSecurity;
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

/// How long a new connection has for its handshakes (TLS and the membership proof).
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted that have not finished their handshakes yet, at most; more are
/// closed at once (a flood of idle connections cannot hold the member's memory).
const UNPROVEN_CONNECTIONS_MAX: usize = 256;

/// How long dialing a peer may take before it is retried (etcd's peer dial timeout).
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long sent data may stay unacknowledged before the kernel drops the connection, and
/// how soon an idle connection is probed. Without it a connection cut off by a partition keeps
/// retransmitting with exponential backoff, and a healed peer stays unheard for tens of
/// seconds; dropped instead, the connection is dialed again as soon as the peer is reachable.
const STUCK_AFTER: Duration = Duration::from_secs(5);

/// Peer connection settings: no Nagle delay, and dead connections dropped after
/// [`STUCK_AFTER`] (TCP_USER_TIMEOUT, keepalive probes on idle ones).
pub(super) fn tune(stream: &TcpStream) {
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
pub type CallSink = mpsc::Sender<PeerStream>;

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
    security: Arc<PeerSecurity>,
}

impl Outbound {
    /// Starts one sender task per peer (other than `me`) on the current runtime.
    pub fn start(
        cluster: u64,
        me: NodeId,
        peers: &BTreeMap<NodeId, SocketAddr>,
        queue_len: usize,
        security: Arc<PeerSecurity>,
    ) -> Outbound {
        let out = Outbound {
            cluster,
            me,
            queue_len,
            runtime: tokio::runtime::Handle::current(),
            queues: RwLock::new(BTreeMap::new()),
            traffic: Arc::default(),
            security,
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
        let hello = Hello {
            magic: *HANDSHAKE_MAGIC,
            cluster: self.cluster,
            from: self.me,
        };
        self.runtime.spawn(sender(
            Arc::clone(&self.security),
            hello,
            id,
            addr,
            rx,
            counts,
        ));
        // Dropping a replaced queue ends its sender task.
        queues.insert(id, (addr, tx));
    }

    /// Opens a member-to-member call connection to member `id`'s peer port (see
    /// [`dial_calls`]); a member whose address is not known is an error.
    pub async fn dial_calls(&self, id: NodeId) -> std::io::Result<PeerStream> {
        let addr = self.addr(id).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no peer address for member {id:x}"),
            )
        })?;
        dial_calls(&self.security, addr, self.cluster, self.me).await
    }

    /// Opens a snapshot stream to `addr` (see [`snapshot::send`]).
    pub async fn dial_snapshot(&self, addr: SocketAddr) -> std::io::Result<PeerStream> {
        let hello = Hello {
            magic: *snapshot::STREAM_MAGIC,
            cluster: self.cluster,
            from: self.me,
        };
        self.security.dial(addr, hello).await
    }

    /// How this member's peer connections are secured.
    pub fn security(&self) -> &Arc<PeerSecurity> {
        &self.security
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

/// Asks the member at `addr` to describe its cluster (see `INFO_MAGIC`), once both ends
/// proved membership; the answer is bounded by `max_bytes`, the whole by `timeout`.
pub async fn query_info(
    security: &PeerSecurity,
    addr: SocketAddr,
    timeout: Duration,
    max_bytes: usize,
) -> std::io::Result<Vec<u8>> {
    let hello = Hello {
        magic: *INFO_MAGIC,
        cluster: 0,
        from: 0,
    };
    let asked = async {
        let mut s = security.dial(addr, hello).await?;
        let mut dec = frame::Decoder::new(max_bytes);
        super::peer_auth::read_frame(&mut s, &mut dec)
            .await
            .map_err(std::io::Error::other)
    };
    tokio::time::timeout(timeout, asked)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

/// Opens a member-to-member call connection to the member at `addr`: dials, proves this
/// member of `cluster` and waits for the acknowledgement. The stream is then the caller's.
pub async fn dial_calls(
    security: &PeerSecurity,
    addr: SocketAddr,
    cluster: u64,
    me: NodeId,
) -> std::io::Result<PeerStream> {
    let hello = Hello {
        magic: *CALLS_MAGIC,
        cluster,
        from: me,
    };
    let mut stream = security.dial(addr, hello).await?;
    let mut ack = [0u8; 1];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut ack))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the member did not acknowledge in time",
            )
        })??;
    if ack[0] != CALLS_ACK {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the member refused the call connection",
        ));
    }
    Ok(stream)
}

async fn sender(
    security: Arc<PeerSecurity>,
    hello: Hello,
    peer: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    counts: Arc<super::traffic::PeerCounts>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let mut stream = match security.dial(addr, hello).await {
            Ok(s) => s,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    tracing::warn!(peer, %addr, error = %e, "peer connection refused");
                }
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
        backoff = Duration::from_millis(20);
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
    /// How connections prove membership (and, with TLS, are encrypted).
    pub security: Arc<PeerSecurity>,
}

/// Accepts peer connections (message connections and snapshot streams) and forwards their
/// decoded messages to `inbound`.
pub async fn accept<M: ProtocolMessage>(
    listener: TcpListener,
    acceptor: Acceptor,
    inbound: mpsc::Sender<M>,
) {
    let acceptor = Arc::new(acceptor);
    let unproven = Arc::new(tokio::sync::Semaphore::new(UNPROVEN_CONNECTIONS_MAX));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = Arc::clone(&unproven).try_acquire_owned() else {
            tracing::warn!(%from, "closing peer connection: {UNPROVEN_CONNECTIONS_MAX} others are still in their handshakes");
            continue;
        };
        let inbound = inbound.clone();
        let acceptor = Arc::clone(&acceptor);
        tokio::spawn(async move {
            if let Err(reason) = serve::<M>(stream, permit, &acceptor, inbound).await {
                tracing::warn!(%from, reason, "closing peer connection");
            }
        });
    }
}

async fn serve<M: ProtocolMessage>(
    tcp: TcpStream,
    unproven: tokio::sync::OwnedSemaphorePermit,
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
        ref security,
    } = *acceptor;
    // Until it proved membership, a connection may send only small frames, promptly.
    let mut dec = frame::Decoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let (mut stream, hello) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, security.accept(tcp, &mut dec))
            .await
            .map_err(|_| "no handshake in time".to_string())??;
    drop(unproven);
    let kind = &hello.magic;
    if kind == INFO_MAGIC {
        let answer = info.as_ref().map(|f| f()).unwrap_or_default();
        let mut out = Vec::with_capacity(answer.len() + frame::HEADER_BYTES);
        frame::encode(&mut out, &answer);
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let _ = stream.shutdown().await;
        return Ok(());
    }
    if kind != HANDSHAKE_MAGIC && kind != snapshot::STREAM_MAGIC && kind != CALLS_MAGIC {
        return Err("bad handshake".into());
    }
    if hello.cluster != cluster {
        return Err(format!("peer from another cluster ({})", hello.cluster));
    }
    let from = hello.from;
    if kind == CALLS_MAGIC {
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
    if kind == snapshot::STREAM_MAGIC {
        return snapshot::receive(stream, dec, from, me, snapshots, &inbound).await;
    }
    let counts = traffic.peer(from);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        while let Some(payload) = dec.next_frame().map_err(|e| e.to_string())? {
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
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        counts.received(n);
        dec.push(&buf[..n]);
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
