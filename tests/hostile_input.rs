//! Hostile input against a real `quorumkv serve` process: garbage and forged frames on the
//! peer port, garbage bytes and undecodable protobuf bodies on the client port, and floods of
//! oversized requests. Each gets an error (or a closed connection) of its own; the node keeps
//! serving a well-behaved client throughout, keeps its memory bounded, and loses nothing.

mod common;

use common::OneMember;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use quorumkv_server::pb::etcdserverpb::{PutRequest, RangeRequest, kv_client::KvClient};
use quorumkv_server::transport::peer_auth::{Hello, PeerSecret};
use quorumkv_server::transport::security::PeerSecurity;
use quorumkv_server::transport::{frame, tcp};

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(&mut out, payload);
    out
}

fn hello(magic: &[u8; 8], cluster: u64, from: u64) -> Vec<u8> {
    let mut p = magic.to_vec();
    p.extend_from_slice(&cluster.to_le_bytes());
    p.extend_from_slice(&from.to_le_bytes());
    frame_of(&p)
}

/// Sends `bytes` to `addr` and waits for the server to close the connection.
fn closed_after(addr: &str, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                );
            }
        }
    }
}

struct Lcg(u64);
impl Lcg {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (self.0 >> 33) as u8
            })
            .collect()
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn wait_ready(kv: &mut KvClient<tonic::transport::Channel>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while kv
        .put(PutRequest {
            key: b"ready".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the node never took a write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn python_malformed(endpoint: &str) {
    let program = r#"
import grpc, os, sys
ch = grpc.insecure_channel(sys.argv[1])
methods = ['/etcdserverpb.KV/Put', '/etcdserverpb.KV/Range', '/etcdserverpb.KV/Txn',
           '/etcdserverpb.KV/DeleteRange', '/etcdserverpb.KV/Compact',
           '/etcdserverpb.Lease/LeaseGrant', '/etcdserverpb.Lease/LeaseRevoke',
           '/etcdserverpb.Maintenance/HashKV', '/etcdserverpb.Maintenance/Alarm']
payloads = [os.urandom(n) for n in (1, 3, 17, 100, 1000, 20000)]
payloads += [b'\x0a\xff\xff\xff\xff\x0f', b'\x12\x05ab', b'\x08' + b'\xff' * 10, b'\x1a\x80\x80\x80\x80\x08']
errors = 0
for m in methods:
    call = ch.unary_unary(m)
    for p in payloads:
        try:
            call(p, timeout=10)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                sys.exit('%s: the server went away: %s' % (m, e))
            errors += 1
for i in range(400):
    try:
        ch.unary_unary('/invented.Service%d/Method%d' % (i, i))(b'', timeout=10)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            sys.exit('invented path: %s' % e)
        errors += 1
watch = ch.stream_stream('/etcdserverpb.Watch/Watch')
try:
    for _ in watch(iter(payloads), timeout=10):
        pass
except grpc.RpcError as e:
    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        sys.exit('watch: the server went away: %s' % e)
    errors += 1
print(errors)
"#;
    let out = Command::new("python3")
        .args(["-c", program, endpoint])
        .output()
        .expect("python3 not found: run ./scripts/test.sh");
    assert!(
        out.status.success(),
        "malformed requests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(errors > 420, "most garbage bodies are refused ({errors})");
}

/// A plain HTTP/1.1 request to the client port: the status line and the whole response.
fn http1(endpoint: &str, method: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(endpoint).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    (body.lines().next().unwrap_or("").to_string(), body)
}

/// The `grpc_server_handled_total` lines of the member's `/metrics`.
fn grpc_metric_lines(endpoint: &str) -> Vec<String> {
    let (status, body) = http1(endpoint, "GET", "/metrics");
    assert!(status.starts_with("HTTP/1.1 200"), "{body}");
    body.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total{"))
        .map(str::to_string)
        .collect()
}

#[test]
fn hostile_peers_and_clients_get_errors_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = OneMember::start(dir.path(), "h1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{}", node.client))
            .unwrap()
            .connect_lazy()
    });
    let mut kv = KvClient::new(channel.clone());
    rt.block_on(wait_ready(&mut kv));

    // The peer port: an info query from a member answers; everything forged or garbled is cut
    // off, before the membership proof and after it.
    let member = || PeerSecurity::plain(PeerSecret::from_token("etcd-cluster"));
    let peer: std::net::SocketAddr = node.peer.parse().unwrap();
    let info = rt
        .block_on(tcp::query_info(
            &member(),
            peer,
            Duration::from_secs(5),
            1 << 20,
        ))
        .unwrap();
    let (cluster, _) = quorumkv_server::member::identity::decode_info(&info).unwrap();
    let mut rng = Lcg(42);
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", rng.bytes(70_000)),
        (
            "a 4 GiB frame header",
            [u32::MAX.to_le_bytes(), [0; 4]].concat(),
        ),
        ("a frame failing its checksum", {
            let mut f = frame_of(b"QKVPEER1 something");
            f[6] ^= 1;
            f
        }),
        (
            "a hello that proves nothing (the previous handshake)",
            hello(b"QKVPEER1", cluster, 7),
        ),
        ("an oversized hello", frame_of(&rng.bytes(65))),
        ("a hello with a forged proof", {
            let mut h = b"QKVPEER1".to_vec();
            h.extend_from_slice(&cluster.to_le_bytes());
            h.extend_from_slice(&7u64.to_le_bytes());
            h.extend_from_slice(&rng.bytes(16));
            [frame_of(&h), frame_of(&rng.bytes(32))].concat()
        }),
    ];
    for (what, bytes) in &attacks {
        assert!(
            closed_after(&node.peer, bytes),
            "{what}: connection left open"
        );
    }
    let mut forged = Vec::new();
    for n in [1, 9, 100, 5000] {
        forged.extend(frame_of(&rng.bytes(n)));
    }
    let mut snap = frame_of(&[&[1u8][..], &rng.bytes(100_000)].concat());
    snap.extend(frame_of(&[9u8, 9, 9]));
    let proven: [(&str, &[u8; 8], u64, Vec<u8>); 4] = [
        ("a foreign cluster", b"QKVPEER1", cluster ^ 1, Vec::new()),
        ("an unknown stream kind", b"QKVNOPE1", cluster, Vec::new()),
        ("undecodable messages", b"QKVPEER1", cluster, forged),
        (
            "a snapshot stream with an unknown frame",
            b"QKVSTRM1",
            cluster,
            snap,
        ),
    ];
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (what, magic, cluster, bytes) in proven {
            let hello = Hello {
                magic: *magic,
                cluster,
                from: 7,
            };
            let mut s = member().dial(peer, hello).await.unwrap();
            let _ = s.write_all(&bytes).await;
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest));
            assert!(
                read.await.is_ok(),
                "{what} after the membership proof: connection left open"
            );
        }
    });
    let snap_dir = dir.path().join("data/member/snap");
    let leftovers: Vec<_> = std::fs::read_dir(&snap_dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "partial snapshots left behind: {leftovers:?}"
    );

    // The client port: raw garbage is cut off, undecodable bodies get errors.
    assert!(closed_after(&node.client, &rng.bytes(50_000)));
    python_malformed(&node.client);
    // Plain HTTP to nowhere gets etcd's answers; gRPC to nowhere got "unimplemented" above.
    let (status, _) = http1(&node.client, "GET", "/no/such/page");
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _) = http1(&node.client, "GET", "/v3/kv/range");
    assert!(status.starts_with("HTTP/1.1 405"), "{status}");
    // 400 invented method paths: counted, but the table of names stays bounded.
    let lines = grpc_metric_lines(&node.client);
    assert!(lines.len() <= 300, "{} gRPC metric lines", lines.len());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("grpc_service=\"unknown\"")
                && l.contains("grpc_code=\"Unimplemented\"")),
        "paths past the bound are counted together"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("grpc_method=\"Put\"") && l.contains("grpc_code=\"OK\"")),
        "real methods are still counted by name"
    );

    // Floods of oversized requests, next to a client doing real work.
    rt.block_on(async {
        let mut floods = Vec::new();
        for i in 0..120usize {
            let mut kv = KvClient::new(channel.clone());
            // Over --max-request-bytes (1.5 MiB) but inside the transport limit: etcd's error;
            // over the transport limit (2 MiB): refused from the length prefix alone.
            let size = if i % 3 == 0 { 3 << 20 } else { 1_700_000 };
            floods.push(tokio::spawn(async move {
                kv.put(PutRequest {
                    key: format!("big{i}").into_bytes(),
                    value: vec![b'x'; size],
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|s| (size, s.code(), s.message().to_string()))
            }));
        }
        let mut worker = KvClient::new(channel.clone());
        for i in 0..200 {
            worker
                .put(PutRequest {
                    key: format!("small{i:03}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .expect("a well-behaved client is served during the flood");
        }
        for f in floods {
            let (size, code, msg) = f.await.unwrap().expect_err("oversized puts are refused");
            if size < 2 << 20 {
                assert_eq!(msg, "etcdserver: request is too large", "{code:?}");
            } else {
                // grpc-go's code and words, which etcd's clients see from etcd.
                assert_eq!(code, tonic::Code::ResourceExhausted, "{msg}");
                assert!(
                    msg.starts_with("grpc: received message larger than max (31457")
                        && msg.ends_with(" vs. 2097152)"),
                    "{msg}"
                );
            }
        }
        let got = worker
            .range(RangeRequest {
                key: b"small".to_vec(),
                range_end: b"smalm".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.count, 200, "every small put is there");
        let big = worker
            .range(RangeRequest {
                key: b"big".to_vec(),
                range_end: b"bih".to_vec(),
                count_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(big.count, 0, "no oversized put got in");
    });
    let peak_mib = peak_rss_kib(node.child.id()) / 1024;
    assert!(
        peak_mib < 1024,
        "peak memory {peak_mib} MiB after ~250 MB of refused requests"
    );
}
