//! `bench zk-create|zk-set|zk-get`: ZooKeeper-protocol load with the shape of `bench put`.
//! `--conns` sessions (spread over `--endpoints`), `--clients` requests in flight (spread over
//! the sessions, pipelined on each as ZooKeeper's clients pipeline), the same totals,
//! percentiles, progress bar and `--json` line. Speaks to quorumkv or to ZooKeeper alike.
//!
//! One session is a connection with a writer task (which numbers requests, coalesces what is
//! queued into one write, and pings when idle) and a reader task (which answers requests in
//! order: a session's replies come in the order of its requests).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quorumkv_server::zk::jute::{Buffer, Data, Jute, Reader};
use quorumkv_server::zk::records::{
    Acl, ConnectRequest, ConnectResponse, CreateRequest, GetDataRequest, Id, ReplyHeader,
    RequestHeader, SetDataRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::load::{Failure, LoadArgs, drive, report, runtime};

/// Where ZooKeeper's clients connect unless told otherwise.
const ZK_ENDPOINT: &str = "127.0.0.1:2181";
/// The session timeout asked for.
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// Largest reply read (ZooKeeper's default jute.maxbuffer).
const REPLY_BYTES_MAX: usize = 1 << 20;
/// The znode under which the benchmark's znodes live.
const ROOT: &str = "/quorumkv-bench";

const OP_CREATE: i32 = 1;
const OP_GET_DATA: i32 = 4;
const OP_SET_DATA: i32 = 5;
const OP_PING: i32 = 11;
const XID_PING: i32 = -2;
const XID_WATCH: i32 = -1;
const NODE_EXISTS: i32 = -110;
const PERMS_ALL: i32 = 31;

/// `bench zk-create`, `zk-set` or `zk-get`.
#[derive(Debug, clap::Args)]
pub struct ZkArgs {
    #[command(flatten)]
    load: LoadArgs,
}

/// Why a request failed.
#[derive(Debug)]
pub enum ZkFailure {
    /// The server answered with an error code.
    Code(i32),
    /// The session's connection ended before the answer.
    Lost,
}

impl Failure for ZkFailure {
    fn name(&self) -> String {
        match self {
            ZkFailure::Code(c) => format!("zk error {c}"),
            ZkFailure::Lost => "connection lost".into(),
        }
    }
}

type Responder = oneshot::Sender<Result<(), ZkFailure>>;

/// One session; clones share it.
#[derive(Clone)]
struct ZkConn {
    requests: mpsc::Sender<(i32, Vec<u8>, Responder)>,
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    if len > REPLY_BYTES_MAX {
        return Err(std::io::Error::other(format!(
            "a reply of {len} bytes is past {REPLY_BYTES_MAX}"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

impl ZkConn {
    /// Opens a session at `addr` and starts its tasks.
    async fn connect(addr: &str) -> Result<ZkConn, String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot connect to {addr}: {e}");
        let connecting = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr));
        let mut tcp = connecting
            .await
            .map_err(|_| fail(&"timed out"))?
            .map_err(|e| fail(&e))?;
        tcp.set_nodelay(true).map_err(|e| fail(&e))?;
        let hello = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            time_out: SESSION_TIMEOUT_MS,
            session_id: 0,
            passwd: Buffer(vec![0; 16]),
        };
        let mut body = hello.to_bytes();
        body.push(0); // not read-only
        tcp.write_all(&framed(&body)).await.map_err(|e| fail(&e))?;
        let answer = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut tcp))
            .await
            .map_err(|_| fail(&"no answer to the handshake"))?
            .map_err(|e| fail(&e))?;
        let accepted = ConnectResponse::read(&mut Reader::new(&answer)).map_err(|e| fail(&e))?;
        if accepted.session_id == 0 || accepted.time_out <= 0 {
            return Err(fail(&"the server refused the session"));
        }
        let ping_every = Duration::from_millis(accepted.time_out as u64 / 3);
        let (rd, wr) = tcp.into_split();
        let waiting: Arc<Mutex<VecDeque<Responder>>> = Arc::default();
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(write_loop(wr, rx, Arc::clone(&waiting), ping_every));
        tokio::spawn(read_loop(rd, waiting));
        Ok(ZkConn { requests: tx })
    }

    /// Sends request `kind` with `body` and waits for its answer.
    async fn call(&self, kind: i32, body: Vec<u8>) -> Result<(), ZkFailure> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send((kind, body, tx))
            .await
            .map_err(|_| ZkFailure::Lost)?;
        rx.await.map_err(|_| ZkFailure::Lost)?
    }
}

/// Numbers the session's requests and writes whatever is queued in one write; pings when
/// nothing was sent for a third of the session timeout.
async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<(i32, Vec<u8>, Responder)>,
    waiting: Arc<Mutex<VecDeque<Responder>>>,
    ping_every: Duration,
) {
    let mut xid = 0i32;
    let mut batch = Vec::new();
    loop {
        batch.clear();
        let first = tokio::time::timeout(ping_every, rx.recv()).await;
        let mut next = match first {
            Ok(Some(r)) => Some(r),
            Ok(None) => return,
            Err(_) => {
                let ping = RequestHeader {
                    xid: XID_PING,
                    kind: OP_PING,
                };
                batch.extend(framed(&ping.to_bytes()));
                None
            }
        };
        while let Some((kind, body, responder)) = next.take() {
            xid = xid.wrapping_add(1).max(1);
            let mut msg = RequestHeader { xid, kind }.to_bytes();
            msg.extend_from_slice(&body);
            batch.extend(framed(&msg));
            // Queued before it is written, so the reader finds it when the answer comes.
            waiting.lock().push_back(responder);
            if batch.len() < 1 << 20 {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&batch).await.is_err() {
            return;
        }
    }
}

/// Answers the session's requests in order, skipping pings and notifications.
async fn read_loop(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    waiting: Arc<Mutex<VecDeque<Responder>>>,
) {
    while let Ok(reply) = read_frame(&mut rd).await {
        let Ok(header) = ReplyHeader::read(&mut Reader::new(&reply)) else {
            break;
        };
        if header.xid == XID_PING || header.xid == XID_WATCH {
            continue;
        }
        let Some(responder) = waiting.lock().pop_front() else {
            break;
        };
        let result = match header.err {
            0 => Ok(()),
            code => Err(ZkFailure::Code(code)),
        };
        let _ = responder.send(result);
    }
    // Whatever still waits fails as lost when its responder is dropped.
    waiting.lock().clear();
}

fn create_body(path: String, data: Vec<u8>) -> Vec<u8> {
    CreateRequest {
        path,
        data: Data::of(data),
        acl: vec![Acl {
            perms: PERMS_ALL,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }],
        flags: 0,
    }
    .to_bytes()
}

/// Creates `path` unless it exists.
async fn ensure(conn: &ZkConn, path: &str, data: &[u8]) -> Result<(), String> {
    match conn
        .call(OP_CREATE, create_body(path.to_string(), data.to_vec()))
        .await
    {
        Ok(()) | Err(ZkFailure::Code(NODE_EXISTS)) => Ok(()),
        Err(e) => Err(format!("creating {path}: {}", e.name())),
    }
}

/// Which ZooKeeper workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A new persistent znode per request.
    Create,
    /// setData on a znode of the key space.
    Set,
    /// getData of a znode of the key space.
    Get,
}

/// Runs one ZooKeeper workload and reports it.
pub fn run(workload: Workload, a: &ZkArgs) -> Result<(), String> {
    let args = a.load.clone().with_default_endpoint(ZK_ENDPOINT);
    args.check()?;
    let name = match workload {
        Workload::Create => "zk-create",
        Workload::Set => "zk-set",
        Workload::Get => "zk-get",
    };
    let value = args.value();
    let o = runtime()?.block_on(async {
        let mut conns = Vec::with_capacity(args.conns);
        for i in 0..args.conns {
            let ep = &args.endpoints[i % args.endpoints.len()];
            conns.push(ZkConn::connect(ep.trim_start_matches("tcp://")).await?);
        }
        ensure(&conns[0], ROOT, b"").await?;
        // Creates go under a parent of their own, so runs never collide.
        let run_root = format!("{ROOT}/run-{:016x}", rand::random::<u64>());
        let parent = match workload {
            Workload::Create => run_root,
            Workload::Set | Workload::Get => format!("{ROOT}/keys"),
        };
        ensure(&conns[0], &parent, b"").await?;
        if workload != Workload::Create {
            for k in 0..args.key_space_size {
                ensure(&conns[0], &format!("{parent}/k{k:012}"), &value).await?;
            }
        }
        let parent = Arc::new(parent);
        let (args_op, value) = (Arc::new(args.clone()), Arc::new(value));
        let op = move |conn: ZkConn, n: u64| {
            let (parent, args, value) = (
                Arc::clone(&parent),
                Arc::clone(&args_op),
                Arc::clone(&value),
            );
            async move {
                match workload {
                    Workload::Create => {
                        let body = create_body(format!("{parent}/c{n:012}"), value.to_vec());
                        conn.call(OP_CREATE, body).await
                    }
                    Workload::Set => {
                        let body = SetDataRequest {
                            path: format!("{parent}/k{:012}", args.key_index(n)),
                            data: Data::of(value.to_vec()),
                            version: -1,
                        };
                        conn.call(OP_SET_DATA, body.to_bytes()).await
                    }
                    Workload::Get => {
                        let body = GetDataRequest {
                            path: format!("{parent}/k{:012}", args.key_index(n)),
                            watch: false,
                        };
                        conn.call(OP_GET_DATA, body.to_bytes()).await
                    }
                }
            }
        };
        Ok::<_, String>(drive(&args, conns, op).await)
    })?;
    report(name, &args, &o, serde_json::json!({}));
    Ok(())
}
