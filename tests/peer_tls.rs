//! Peers that prove who they are. Three members with mutual TLS on their peer URLs (etcd's
//! `--peer-*` flags, one CA, an allowed common name) replicate on Raft and on ZAB: writes on
//! one member are read on the others, a member added at runtime joins over TLS, and a member
//! that fell behind the compacted log catches up from a snapshot streamed over TLS. Three
//! members with `--peer-auto-tls` rely on the peer secret alone. The refusals: plaintext to a
//! TLS peer port, a dialer without a certificate, with one from another CA, with another
//! common name, or without the peer secret; and, on plain peer URLs, a dialer with the token
//! but not the `--peer-secret-file` secret. Each refusal sits beside a dial that succeeds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::Ca;
use common::cluster::{Cluster, etcdctl, ok, serial};
use common::free_port;
use quorumkv_server::tls::TlsOptions;
use quorumkv_server::transport::peer_auth::PeerSecret;
use quorumkv_server::transport::security::{PeerSecurity, PeerTlsOptions};
use quorumkv_server::transport::tcp;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The flags of a member with the shared peer certificate of `ca`, mutual and CN-checked.
fn mtls_flags(ca: &Ca, cert: &(PathBuf, PathBuf)) -> Vec<String> {
    vec![
        "--peer-cert-file".into(),
        s(&cert.0),
        "--peer-key-file".into(),
        s(&cert.1),
        "--peer-trusted-ca-file".into(),
        s(&ca.path()),
        "--peer-client-cert-auth".into(),
        "--peer-cert-allowed-cn".into(),
        "member".into(),
    ]
}

fn three_members_replicate_over_peer_mtls(protocol: &'static str) {
    let _serial = serial();
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path(), "peer-ca");
    let cert = ca.issue_peer("member");
    let mut flags = mtls_flags(&ca, &cert);
    flags.extend(
        [
            "--snapshot-count",
            "200",
            "--experimental-snapshot-catchup-entries",
            "10",
        ]
        .map(String::from),
    );
    let mut c = Cluster::start_with_peers(3, protocol, "https", &flags);
    let leader = c.leader();
    let follower = (leader + 1) % 3;
    ok(&etcdctl(&c.members[leader].client, &["put", "/tls/a", "1"]));
    // A linearizable read on a follower asks the leader over a call connection.
    let got = ok(&etcdctl(
        &c.members[follower].client,
        &["get", "/tls/a", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "1");

    // A member that misses enough writes is sent a snapshot, over TLS.
    let behind = (leader + 2) % 3;
    c.kill(behind);
    let bench = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["bench", "put", "--endpoints"])
        .arg(&c.members[leader].client)
        .args([
            "--clients",
            "20",
            "--total",
            "2000",
            "--key-space-size",
            "50",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(bench.success());
    ok(&etcdctl(
        &c.members[leader].client,
        &["put", "/tls/last", "z"],
    ));
    // The backend commits (and the log is compacted) every 100 ms at most.
    std::thread::sleep(Duration::from_secs(1));
    c.spawn(behind);
    wait_local_value(
        &c.members[behind].client,
        "/tls/last",
        "z",
        "the member never caught up",
    );
    let log = std::fs::read_to_string(c.members[behind].dir.with_extension("log")).unwrap();
    assert!(
        log.contains("snapshot installed"),
        "the member caught up without a snapshot; the test did not test one"
    );

    // A member added at runtime learns the cluster over TLS and joins.
    let endpoints = c.endpoints();
    let (i, _) = c.add_member(&c.members[leader].client.clone(), false);
    wait_local_value(
        &c.members[i].client,
        "/tls/a",
        "1",
        "the added member never served",
    );
    let list = ok(&etcdctl(&endpoints, &["member", "list"]));
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.contains("https://"), "{list}");
}

/// Waits up to 30 s for the member at `client` to read `want` at `key` on its own
/// (serializable), panicking with `what` if it never does.
fn wait_local_value(client: &str, key: &str, want: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(
            client,
            &["get", key, "--consistency=s", "--print-value-only"],
        );
        if String::from_utf8_lossy(&out.stdout).trim() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_members_replicate_over_peer_mtls_on_raft() {
    three_members_replicate_over_peer_mtls("raft");
}

#[test]
fn three_members_replicate_over_peer_mtls_on_zab() {
    three_members_replicate_over_peer_mtls("zab");
}

#[test]
fn three_members_replicate_over_peer_auto_tls() {
    let _serial = serial();
    let c = Cluster::start_with_peers(3, "raft", "https", &["--peer-auto-tls".to_string()]);
    let leader = c.leader();
    ok(&etcdctl(&c.members[leader].client, &["put", "k", "v"]));
    let other = (leader + 1) % 3;
    let got = ok(&etcdctl(
        &c.members[other].client,
        &["get", "k", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "v");
}

/// A one-member cluster (token `etcd-cluster`) with `flags`, serving peers on `scheme`;
/// returns the process, its peer address and its cluster id.
fn one_member(
    dir: &Path,
    scheme: &str,
    flags: &[String],
) -> (common::OneMember, std::net::SocketAddr, u64) {
    let (client, peer) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["serve", "--name", "p1", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &format!("http://{client}"),
            "--listen-peer-urls",
            &format!("{scheme}://{peer}"),
            "--initial-advertise-peer-urls",
            &format!("{scheme}://{peer}"),
            "--initial-cluster",
            &format!("p1={scheme}://{peer}"),
            "--listen-zookeeper-urls=",
        ])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let member = common::OneMember {
        child,
        client: client.clone(),
        peer: peer.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let out = etcdctl(&client, &["endpoint", "status", "-w", "json"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "the member never served");
        std::thread::sleep(Duration::from_millis(200));
    };
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let cluster = v[0]["Status"]["header"]["cluster_id"].as_u64().unwrap();
    (member, peer.parse().unwrap(), cluster)
}

fn tls_dialer(secret: PeerSecret, files: Option<(PathBuf, PathBuf)>, ca: &Ca) -> PeerSecurity {
    PeerSecurity::tls(
        secret,
        PeerTlsOptions {
            tls: TlsOptions {
                files,
                trusted_ca: Some(ca.path()),
                client_cert_auth: false,
                cipher_suites: Vec::new(),
                auto_names: Vec::new(),
            },
            allowed_cn: None,
        },
    )
    .unwrap()
}

fn token() -> PeerSecret {
    PeerSecret::from_token("etcd-cluster")
}

#[test]
fn a_tls_peer_port_refuses_dialers_that_prove_too_little() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "peer-ca");
    let cert = ca.issue_peer("member");
    let (_m, peer, cluster) = one_member(dir.path(), "https", &mtls_flags(&ca, &cert));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The right certificate, common name and secret: a call connection is acknowledged.
        let member = tls_dialer(token(), Some(cert.clone()), &ca);
        tcp::dial_calls(&member, peer, cluster, 1).await.unwrap();

        let plain = PeerSecurity::plain(token());
        let no_cert = tls_dialer(token(), None, &ca);
        // Its own directory: its "member" files must not replace the member's own.
        let elsewhere = tempfile::tempdir().unwrap();
        let other_ca = Ca::new(elsewhere.path(), "other-ca");
        let foreign = tls_dialer(token(), Some(other_ca.issue_peer("member")), &ca);
        let intruder = tls_dialer(token(), Some(ca.issue_peer("intruder")), &ca);
        let no_secret = tls_dialer(PeerSecret::from_token("guess"), Some(cert.clone()), &ca);
        for (what, dialer) in [
            ("plaintext", plain),
            ("no client certificate", no_cert),
            ("a certificate from another CA", foreign),
            ("another common name", intruder),
            ("no peer secret", no_secret),
        ] {
            let r = tcp::dial_calls(&dialer, peer, cluster, 1).await;
            assert!(r.is_err(), "{what}: a call connection was acknowledged");
            let info = tcp::query_info(&dialer, peer, Duration::from_secs(5), 1 << 20).await;
            assert!(info.is_err(), "{what}: the info query answered");
        }
    });
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    assert!(log.contains("is not the allowed"), "{log}");
    assert!(log.contains("UnknownIssuer"), "{log}");
}

#[test]
fn a_peer_secret_file_replaces_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("peer.secret");
    std::fs::write(&file, "a long and random peer secret\n").unwrap();
    let flags = ["--peer-secret-file".to_string(), s(&file)];
    let (_m, peer, cluster) = one_member(dir.path(), "http", &flags);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let member = PeerSecurity::plain(PeerSecret::from_file(&file).unwrap());
        tcp::dial_calls(&member, peer, cluster, 1).await.unwrap();
        let token_only = PeerSecurity::plain(token());
        let r = tcp::dial_calls(&token_only, peer, cluster, 1).await;
        assert_eq!(
            r.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied,
            "the token alone opened a call connection"
        );
    });
    // A secret too short to be one is refused at start.
    std::fs::write(&file, "short").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("other"))
        .args(["--peer-secret-file", &s(&file), "--listen-zookeeper-urls="])
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least 16"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
