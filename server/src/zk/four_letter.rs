//! The four-letter words of a ZooKeeper port (`ruok`, `isro`, `envi`, `conf`, `srvr`, `stat`,
//! `mntr`, `wchs`, `cons`), in ZooKeeper 3.8's formats, and the per-connection counters `cons`
//! shows. Answers only: never changes the member.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::session::ZkContext;
use super::znode;
use crate::mvcc::RangeOpts;

/// The version a ZooKeeper client is told (`envi`, `srvr`, `mntr`).
pub const VERSION: &str = "3.8.0-quorumkv";

/// One connection's counters.
#[derive(Debug)]
pub struct ConnStats {
    /// Its client's address.
    pub peer: SocketAddr,
    /// Its session (0 until agreed).
    pub session: AtomicI64,
    /// Requests received.
    pub received: AtomicU64,
    /// Frames sent (replies and notifications).
    pub sent: AtomicU64,
}

/// The open connections of a port, by number.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<ConnStats>>>,
    next: AtomicU64,
}

/// Takes a connection out of [`Connections`] when dropped.
#[derive(Debug)]
pub struct Registered {
    conns: Arc<Connections>,
    id: u64,
    /// Its counters.
    pub stats: Arc<ConnStats>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.open.lock().remove(&self.id);
    }
}

impl Connections {
    /// Registers a connection from `peer`.
    pub fn register(self: &Arc<Self>, peer: SocketAddr) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(ConnStats {
            peer,
            session: AtomicI64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        self.open.lock().insert(id, Arc::clone(&stats));
        Registered {
            conns: Arc::clone(self),
            id,
            stats,
        }
    }

    fn snapshot(&self) -> Vec<Arc<ConnStats>> {
        let mut v: Vec<_> = self.open.lock().values().cloned().collect();
        v.sort_by_key(|c| c.peer);
        v
    }
}

/// How many znodes are stored (the root and the system nodes counted as a server counts them).
fn znode_count(ctx: &ZkContext) -> i64 {
    let mut start = znode::PREFIX.to_vec();
    start.push(b'n');
    let mut end = znode::PREFIX.to_vec();
    end.push(b'n' + 1);
    let opts = RangeOpts {
        count_only: true,
        ..RangeOpts::default()
    };
    let stored = ctx
        .core
        .mvcc
        .snapshot()
        .range(&start, &end, opts)
        .map_or(0, |r| r.count);
    (stored + 1 + znode::SYSTEM.len()) as i64
}

/// The answer to a four-letter word, if `word` is one served here.
pub fn answer(word: &[u8; 4], ctx: &ZkContext, conns: &Connections) -> Option<String> {
    let zxid = ctx.core.mvcc.snapshot().revision().unwrap_or(0);
    let mode = if ctx.proposer.node().state().is_leader() {
        "leader"
    } else {
        "follower"
    };
    const KNOWN: [&[u8; 4]; 9] = [
        b"ruok", b"isro", b"envi", b"conf", b"srvr", b"stat", b"mntr", b"wchs", b"cons",
    ];
    if !KNOWN.contains(&word) {
        return None;
    }
    let name = String::from_utf8_lossy(word);
    let allowed = &ctx.cfg.four_letter_words;
    if !allowed.iter().any(|w| w == "*" || *w == name) {
        return Some(format!(
            "{name} is not executed because it is not in the whitelist.\n"
        ));
    }
    let open = conns.snapshot();
    let cfg = &ctx.cfg;
    Some(match word {
        b"ruok" => "imok".to_string(),
        b"isro" if ctx.proposer.leader_lost() => "ro".to_string(),
        b"isro" => "rw".to_string(),
        b"envi" => format!("Environment:\nzookeeper.version={VERSION}\n"),
        b"conf" => format!(
            "tickTime={}\nmaxClientCnxns={}\nminSessionTimeout={}\nmaxSessionTimeout={}\n\
             jute.maxbuffer={}\nserverId={}\n",
            cfg.tick.as_millis(),
            cfg.connections_per_address_max,
            cfg.session_timeout_min.as_millis(),
            cfg.session_timeout_max.as_millis(),
            cfg.frame_bytes_max,
            ctx.member_id
        ),
        b"srvr" | b"stat" => {
            let mut out = format!("Zookeeper version: {VERSION}\n");
            if word == b"stat" {
                out.push_str("Clients:\n");
                for c in &open {
                    out.push_str(&format!(
                        " /{}[1](queued=0,recved={},sent={})\n",
                        c.peer,
                        c.received.load(Ordering::Relaxed),
                        c.sent.load(Ordering::Relaxed)
                    ));
                }
                out.push('\n');
            }
            out.push_str(&format!(
                "Connections: {}\nOutstanding: 0\nZxid: 0x{zxid:x}\nMode: {mode}\nNode count: {}\n",
                open.len(),
                znode_count(ctx)
            ));
            out
        }
        b"mntr" => {
            let (_, _, watches) = ctx.watches.stats();
            let sessions = ctx.core.lessor.lock().len();
            [
                ("zk_version", VERSION.to_string()),
                ("zk_server_state", mode.to_string()),
                ("zk_num_alive_connections", open.len().to_string()),
                ("zk_outstanding_requests", "0".to_string()),
                ("zk_znode_count", znode_count(ctx).to_string()),
                ("zk_watch_count", watches.to_string()),
                ("zk_leases_and_sessions", sessions.to_string()),
                ("zk_zxid", format!("0x{zxid:x}")),
            ]
            .iter()
            .map(|(k, v)| format!("{k}\t{v}\n"))
            .collect()
        }
        b"wchs" => {
            let (watching, paths, total) = ctx.watches.stats();
            format!("{watching} connections watching {paths} paths\nTotal watches:{total}\n")
        }
        b"cons" => {
            let mut out = String::new();
            for c in &open {
                out.push_str(&format!(
                    " /{}[1](queued=0,recved={},sent={},sid=0x{:x})\n",
                    c.peer,
                    c.received.load(Ordering::Relaxed),
                    c.sent.load(Ordering::Relaxed),
                    c.session.load(Ordering::Relaxed)
                ));
            }
            out.push('\n');
            out
        }
        _ => return None,
    })
}
