//! The fault-injecting peer proxy. Each member advertises a proxy address as its peer URL, so
//! every connection between members passes through here. The proxy reads a connection's
//! handshake to learn which member dialed, then forwards it frame by frame, applying the
//! current [`NetFaults`]: members in different partition groups cannot connect (and their open
//! connections are cut when a partition starts), a one-way cut fails only the connections one
//! member dials to another (each member sends its messages on connections it dials, so one
//! direction's messages are lost and the other's flow), every frame waits out the configured delay
//! (order kept, throughput not serialized), and message frames are dropped at the configured
//! rate. Snapshot streams and info queries are forwarded whole, subject to partitions only.
//! Call connections (a member relaying a client's request to the leader) are read up to their
//! membership proof, then forwarded as bytes, delayed and cut by partitions.
//!
//! With peer TLS the proxy reads nothing: it finds the dialing member by which member process
//! owns the connection's other end (through `/proc`), and forwards bytes, delayed and cut by
//! partitions; messages cannot be told apart, so none is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use quorumkv_server::transport::frame;
use quorumkv_server::transport::peer_auth::HELLO_BYTES;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Largest frame forwarded (above the members' own peer frame limit).
const MAX_FRAME_BYTES: usize = 600 << 20;
/// Frames queued between a connection's reader and its delayed writer.
const QUEUE_FRAMES: usize = 4096;
const MESSAGE_MAGIC: &[u8; 8] = b"QKVPEER1";
const STREAM_MAGIC: &[u8; 8] = b"QKVSTRM1";
/// A member-to-member call connection: framed hello and proof, then HTTP/2 bytes.
const CALLS_MAGIC: &[u8; 8] = b"QKVCALL1";

/// The network faults in force between members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFaults {
    /// Partition group of each member (by index); members in different groups cannot talk.
    pub group: Vec<u8>,
    /// Delay added to every frame.
    pub delay_ms: u64,
    /// Message frames dropped, per thousand.
    pub drop_per_mille: u32,
    /// One-way cuts `(from, to)`: connections member `from` dials to `to` fail, so what
    /// `from` sends `to` is lost while the other direction flows.
    pub one_way: Vec<(usize, usize)>,
}

impl NetFaults {
    /// No faults among `members` members.
    pub fn healthy(members: usize) -> NetFaults {
        NetFaults {
            group: vec![0; members],
            delay_ms: 0,
            drop_per_mille: 0,
            one_way: Vec::new(),
        }
    }

    /// Whether traffic between members `a` and `b` is cut.
    pub fn blocked(&self, a: Option<usize>, b: usize) -> bool {
        match a {
            Some(a) => self.group.get(a) != self.group.get(b) || self.one_way.contains(&(a, b)),
            None => false,
        }
    }
}

/// Member ids to member indexes, kept current as members are replaced.
pub type Ids = Arc<RwLock<HashMap<u64, usize>>>;

/// Member process ids to member indexes, kept current as members restart.
pub type Pids = Arc<RwLock<HashMap<u32, usize>>>;

/// How the proxy learns which member dialed.
#[derive(Debug, Clone)]
pub struct Dialers {
    /// By the member id a plaintext handshake names.
    pub ids: Ids,
    /// By the process that owns the dialing socket (peer TLS: nothing is readable).
    pub pids: Pids,
    /// Whether connections are TLS (forwarded as opaque bytes).
    pub tls: bool,
}

/// Runs the proxy in front of member `to`, whose peer listener is at `target`.
pub async fn run(
    listener: TcpListener,
    to: usize,
    target: SocketAddr,
    dialers: Dialers,
    faults: watch::Receiver<NetFaults>,
    seed: u64,
) {
    let mut conns = 0u64;
    loop {
        let Ok((client, remote)) = listener.accept().await else {
            continue;
        };
        conns += 1;
        let dialers = dialers.clone();
        let faults = faults.clone();
        let rng = StdRng::seed_from_u64(seed ^ ((to as u64) << 48) ^ conns);
        tokio::spawn(async move {
            let forwarded = if dialers.tls {
                let from = dialing_member(remote, &dialers.pids);
                forward_opaque(client, from, to, target, faults).await
            } else {
                forward(client, to, target, &dialers.ids, faults, rng).await
            };
            if let Err(e) = forwarded {
                tracing::debug!(to, "proxy connection ended: {e}");
            }
        });
    }
}

async fn forward(
    client: TcpStream,
    to: usize,
    target: SocketAddr,
    ids: &Ids,
    faults: watch::Receiver<NetFaults>,
    mut rng: StdRng,
) -> Result<(), String> {
    let _ = client.set_nodelay(true);
    let (mut client_rd, client_wr) = client.into_split();
    let mut dec = frame::Decoder::new(MAX_FRAME_BYTES);
    let mut buf = vec![0u8; 64 << 10];
    // The handshake names the dialing member (info queries name nobody).
    let hello = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(p) = dec.next_frame().map_err(|e| e.to_string())? {
                return Ok::<_, String>(p);
            }
            let n = client_rd.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before its handshake".into());
            }
            dec.push(&buf[..n]);
        }
    })
    .await
    .map_err(|_| "no handshake".to_string())??;
    let magic = hello.get(..8);
    let calls = magic == Some(CALLS_MAGIC);
    let from = if hello.len() == HELLO_BYTES
        && (magic == Some(MESSAGE_MAGIC) || magic == Some(STREAM_MAGIC) || calls)
    {
        let id = u64::from_le_bytes(hello[16..24].try_into().expect("8 bytes"));
        ids.read().get(&id).copied()
    } else {
        None
    };
    let messages = magic == Some(MESSAGE_MAGIC);
    if faults.borrow().blocked(from, to) {
        return Err("partitioned".into());
    }
    let upstream = dial(target).await?;
    let (target_rd, target_wr) = upstream.into_split();
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_FRAMES);
    let mut first = Vec::with_capacity(hello.len() + frame::HEADER_BYTES);
    frame::encode(&mut first, &hello);
    tx.send((Instant::now(), first))
        .await
        .map_err(|_| "writer gone")?;
    let faults_now = faults.clone();
    let up = async move {
        // The frame after the hello is the dialer's membership proof, never dropped.
        let mut proven = false;
        loop {
            while let Some(p) = dec.next_frame().map_err(|e| e.to_string())? {
                let (delay_ms, drop_per_mille) = {
                    let f = faults_now.borrow();
                    (f.delay_ms, f.drop_per_mille)
                };
                if messages && proven && rng.random_range(0..1000) < drop_per_mille {
                    continue;
                }
                proven = true;
                let mut out = Vec::with_capacity(p.len() + frame::HEADER_BYTES);
                frame::encode(&mut out, &p);
                let due = Instant::now() + Duration::from_millis(delay_ms);
                tx.send((due, out)).await.map_err(|_| "writer gone")?;
                if calls {
                    break;
                }
            }
            if calls && proven {
                // Past the proof a call connection carries HTTP/2: forwarded as bytes.
                let mut chunk = dec.take_buffered();
                loop {
                    if !chunk.is_empty() {
                        let delay_ms = faults_now.borrow().delay_ms;
                        let due = Instant::now() + Duration::from_millis(delay_ms);
                        tx.send((due, chunk)).await.map_err(|_| "writer gone")?;
                    }
                    let n = client_rd.read(&mut buf).await.map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Ok::<(), String>(());
                    }
                    chunk = buf[..n].to_vec();
                }
            }
            let n = client_rd.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok::<(), String>(());
            }
            dec.push(&buf[..n]);
        }
    };
    let cut = partitioned(faults, from, to);
    // A dialer that closes its side ends the connection once the delayed frames are written.
    let up = async move {
        up.await?;
        std::future::pending::<Result<(), String>>().await
    };
    tokio::select! {
        r = up => r,
        r = write_delayed(rx, target_wr) => r,
        r = copy(target_rd, client_wr) => r,
        () = cut => Err("partitioned".into()),
    }
}

/// Forwards a connection whose bytes cannot be read (TLS) from member `from` to `to`, each
/// chunk after the configured delay, until a partition cuts it.
async fn forward_opaque(
    client: TcpStream,
    from: Option<usize>,
    to: usize,
    target: SocketAddr,
    faults: watch::Receiver<NetFaults>,
) -> Result<(), String> {
    if faults.borrow().blocked(from, to) {
        return Err("partitioned".into());
    }
    let _ = client.set_nodelay(true);
    let upstream = dial(target).await?;
    let (mut client_rd, client_wr) = client.into_split();
    let (target_rd, target_wr) = upstream.into_split();
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_FRAMES);
    let faults_now = faults.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = client_rd.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return std::future::pending::<Result<(), String>>().await;
            }
            let delay_ms = faults_now.borrow().delay_ms;
            let due = Instant::now() + Duration::from_millis(delay_ms);
            tx.send((due, buf[..n].to_vec()))
                .await
                .map_err(|_| "writer gone")?;
        }
    };
    let cut = partitioned(faults, from, to);
    tokio::select! {
        r = up => r,
        r = write_delayed(rx, target_wr) => r,
        r = copy(target_rd, client_wr) => r,
        () = cut => Err("partitioned".into()),
    }
}

/// Resolves once `from` and `to` are partitioned from each other.
async fn partitioned(mut faults: watch::Receiver<NetFaults>, from: Option<usize>, to: usize) {
    loop {
        if faults.borrow_and_update().blocked(from, to) {
            return;
        }
        if faults.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Connects to the member behind the proxy.
async fn dial(target: SocketAddr) -> Result<TcpStream, String> {
    let upstream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = upstream.set_nodelay(true);
    Ok(upstream)
}

/// The member whose process owns the loopback socket at `dialer` (the dialing end of an
/// accepted connection): its inode from `/proc/net/tcp`, then the member process holding it.
fn dialing_member(dialer: SocketAddr, pids: &Pids) -> Option<usize> {
    let SocketAddr::V4(addr) = dialer else {
        return None;
    };
    // The kernel prints the address as the hex of its in-memory u32, the port big-endian.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode: u64 = table.lines().skip(1).find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
    })?;
    let wanted = format!("socket:[{inode}]");
    let pids: Vec<(u32, usize)> = pids.read().iter().map(|(&p, &i)| (p, i)).collect();
    pids.into_iter().find_map(|(pid, member)| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str()))
            .then_some(member)
    })
}

async fn write_delayed(
    mut rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut out: OwnedWriteHalf,
) -> Result<(), String> {
    while let Some((due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        out.write_all(&bytes).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf) -> Result<(), String> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = from.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
    }
}
