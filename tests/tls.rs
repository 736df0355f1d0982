//! TLS on the client port with etcd's flags: etcdctl, curl and python-etcd3 over TLS and
//! mutual TLS; refusals of a client without a certificate, with one from another CA, and of
//! plaintext to a TLS port; `--auto-tls`; http:// and https:// URLs served together; and a
//! certificate rotated while the member runs; and kazoo on ZooKeeper's secure client port.
//! Certificates are made here with rcgen.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::certs::Ca;
use common::{OneMember, free_port};

fn etcdctl(args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--command-timeout=5s", "--dial-timeout=2s"])
        .args(args)
        .output()
        .expect("etcdctl is missing (scripts/test.sh installs it)")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn member(dir: &Path, urls: &str, tls: &[&str]) -> OneMember {
    let peer = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["serve", "--name", "t1", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            urls,
            "--listen-peer-urls",
            &format!("http://{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://{peer}"),
            "--initial-cluster",
            &format!("t1=http://{peer}"),
            "--listen-zookeeper-urls=",
        ])
        .args(tls)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    OneMember {
        child,
        client: urls.split(',').next().unwrap().to_string(),
        peer,
    }
}

fn wait(args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = etcdctl(args);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never served: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn mutual_tls_serves_certified_clients_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other-ca");
    let (cert, key) = ca.issue("server", true);
    let (alice, alice_key) = ca.issue("alice", false);
    let (mallory, mallory_key) = other.issue("mallory", false);
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let _m = member(
        dir.path(),
        &url,
        &[
            "--cert-file",
            p(&cert),
            "--key-file",
            p(&key),
            "--trusted-ca-file",
            p(&ca.path()),
            "--client-cert-auth",
        ],
    );
    let ep = format!("--endpoints={url}");
    let ca_arg = format!("--cacert={}", p(&ca.path()));
    let as_alice = [
        ep.as_str(),
        &ca_arg,
        &format!("--cert={}", p(&alice)),
        &format!("--key={}", p(&alice_key)),
    ];
    let with = |extra: &[&str]| {
        let mut v: Vec<String> = as_alice.iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| etcdctl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait(
        &with(&["put", "k", "v"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let got = run(with(&["get", "k", "--print-value-only"]));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "v");
    // No client certificate; one from another CA; plaintext to the TLS port.
    for refused in [
        vec![ep.clone(), ca_arg.clone(), "get".into(), "k".into()],
        vec![
            ep.clone(),
            ca_arg.clone(),
            format!("--cert={}", p(&mallory)),
            format!("--key={}", p(&mallory_key)),
            "get".into(),
            "k".into(),
        ],
        vec![
            format!("--endpoints=http://127.0.0.1:{port}"),
            "get".into(),
            "k".into(),
        ],
    ] {
        let out = run(refused.clone());
        assert!(!out.status.success(), "{refused:?} was served");
    }
    // The JSON gateway and /health are served over the same TLS.
    let health = Command::new("curl")
        .args([
            "-sf",
            "--cacert",
            p(&ca.path()),
            "--cert",
            p(&alice),
            "--key",
            p(&alice_key),
        ])
        .arg(format!("{url}/health"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&health.stdout),
        r#"{"health":"true"}"#
    );
    // python-etcd3 over mutual TLS.
    let program = format!(
        "import etcd3\nc = etcd3.client(host='127.0.0.1', port={port}, ca_cert='{}', cert_key='{}', cert_cert='{}')\n\
         c.put('py', 'x')\nprint(c.get('py')[0].decode())\n",
        p(&ca.path()),
        p(&alice_key),
        p(&alice)
    );
    let py = Command::new("python3")
        .args(["-c", &program])
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "x",
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    // The Node.js etcd3 client over mutual TLS.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let js = format!(
        "const {{ Etcd3 }} = require('etcd3'); const fs = require('fs');\n\
         const c = new Etcd3({{ hosts: 'https://127.0.0.1:{port}', credentials: {{\n\
           rootCertificate: fs.readFileSync('{}'), privateKey: fs.readFileSync('{}'),\n\
           certChain: fs.readFileSync('{}') }} }});\n\
         (async () => {{ await c.put('js').value('y'); console.log(await c.get('js').string());\n\
           c.close(); }})().catch(e => {{ console.error(e); process.exit(1); }});\n",
        p(&ca.path()),
        p(&alice_key),
        p(&alice)
    );
    let node = Command::new("node")
        .args(["-e", &js])
        .env("NODE_PATH", root.join("target/node-clients/node_modules"))
        .output()
        .expect("node is missing (./scripts/test.sh installs it)");
    assert_eq!(
        String::from_utf8_lossy(&node.stdout).trim(),
        "y",
        "{}",
        String::from_utf8_lossy(&node.stderr)
    );
}

#[test]
fn auto_tls_and_plain_urls_together() {
    let dir = tempfile::tempdir().unwrap();
    let (tls_port, plain_port) = (free_port(), free_port());
    let urls = format!("https://127.0.0.1:{tls_port},http://127.0.0.1:{plain_port}");
    let metrics = format!("https://127.0.0.1:{}", free_port());
    let _m = member(
        dir.path(),
        &urls,
        &["--auto-tls", "--listen-metrics-urls", &metrics],
    );
    // etcdctl 3.4 skips verification only with --insecure-transport=false.
    wait(&[
        &format!("--endpoints=https://127.0.0.1:{tls_port}"),
        "--insecure-transport=false",
        "--insecure-skip-tls-verify",
        "put",
        "k",
        "v",
    ]);
    let out = etcdctl(&[
        &format!("--endpoints=http://127.0.0.1:{plain_port}"),
        "get",
        "k",
        "--print-value-only",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
    // The metrics URL is served over TLS too, with the same certificate.
    let scraped = Command::new("curl")
        .args(["-sfk", &format!("{metrics}/metrics")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&scraped.stdout).contains("etcd_server_has_leader 1"));
    let plain = Command::new("curl")
        .args([
            "-sf",
            &format!("{}/metrics", metrics.replace("https", "http")),
        ])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "plaintext served on the TLS metrics URL"
    );
    // Verification against the system's CAs fails: the certificate is self-signed.
    let out = etcdctl(&[
        &format!("--endpoints=https://127.0.0.1:{tls_port}"),
        "get",
        "k",
    ]);
    assert!(!out.status.success());
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new(dir.path(), "first");
    let (cert, key) = first.issue("server", true);
    let url = format!("https://127.0.0.1:{}", free_port());
    let _m = member(
        dir.path(),
        &url,
        &["--cert-file", p(&cert), "--key-file", p(&key)],
    );
    let trusting = |ca: &Ca| {
        etcdctl(&[
            &format!("--endpoints={url}"),
            &format!("--cacert={}", p(&ca.path())),
            "put",
            "k",
            "v",
        ])
    };
    wait(&[
        &format!("--endpoints={url}"),
        &format!("--cacert={}", p(&first.path())),
        "put",
        "k",
        "v",
    ]);
    // New files from a new CA, written over the old while the member runs.
    let staged = tempfile::tempdir_in(dir.path()).unwrap();
    let second = Ca::new(staged.path(), "second");
    let (new_cert, new_key) = second.issue("server", true);
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !trusting(&second).status.success() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !trusting(&first).status.success(),
        "the old certificate is still served"
    );
}

/// With authentication on, a verified client certificate's common name is the user when no
/// token is given (`etcdctl --cert root.crt` acts as root without a password), and a client
/// cannot name a user it has not proved.
#[test]
fn a_client_certificates_common_name_is_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.issue("server", true);
    let (root, root_key) = ca.issue("root", false);
    let (alice, alice_key) = ca.issue("alice", false);
    let url = format!("https://127.0.0.1:{}", free_port());
    let _m = member(
        dir.path(),
        &url,
        &[
            "--cert-file",
            p(&cert),
            "--key-file",
            p(&key),
            "--trusted-ca-file",
            p(&ca.path()),
            "--client-cert-auth",
        ],
    );
    let as_cert = |c: &Path, k: &Path, args: &[&str]| {
        let mut v = vec![
            format!("--endpoints={url}"),
            format!("--cacert={}", p(&ca.path())),
            format!("--cert={}", p(c)),
            format!("--key={}", p(k)),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        etcdctl(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !as_cert(&root, &root_key, &["put", "ready", "1"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "never served");
        std::thread::sleep(Duration::from_millis(200));
    }
    for args in [
        &["user", "add", "root:pw"][..],
        &["user", "add", "alice:pw"],
        &["role", "add", "r"],
        &[
            "role",
            "grant-permission",
            "r",
            "--prefix=true",
            "readwrite",
            "a",
        ],
        &["user", "grant-role", "alice", "r"],
        &["auth", "enable"],
    ] {
        let out = as_cert(&root, &root_key, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // root's certificate is root: the administrator's calls pass without a password.
    let users = as_cert(&root, &root_key, &["user", "list"]);
    assert!(String::from_utf8_lossy(&users.stdout).contains("alice"));
    assert!(
        as_cert(&root, &root_key, &["put", "secret", "s"])
            .status
            .success()
    );
    // alice's certificate is alice: her keys only.
    assert!(
        as_cert(&alice, &alice_key, &["put", "a1", "v"])
            .status
            .success()
    );
    let e = as_cert(&alice, &alice_key, &["get", "secret"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("permission denied"));
    // Naming another user in the certificate header gets her nothing more.
    let forged = Command::new("curl")
        .args([
            "-s",
            "--cacert",
            p(&ca.path()),
            "--cert",
            p(&alice),
            "--key",
            p(&alice_key),
        ])
        .args(["-H", "x-quorumkv-certificate-user: root", "-X", "POST"])
        .arg(format!("{url}/v3/kv/range"))
        .args(["-d", r#"{"key":"c2VjcmV0"}"#])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&forged.stdout);
    assert!(reply.contains("permission denied"), "{reply}");
    // A token still wins over the certificate, as in etcd.
    let token_user = as_cert(&alice, &alice_key, &["--user=root:pw", "get", "secret"]);
    assert!(token_user.status.success());
}

/// ZooKeeper's secure client port: a `tls://` ZooKeeper address served with the client
/// port's certificate, mutual with `--client-cert-auth`. kazoo with a certificate works;
/// kazoo without one, and kazoo in plaintext, are refused.
#[test]
fn kazoo_over_tls_on_the_zookeeper_port() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "zk-ca");
    let (server, server_key) = ca.issue("server", true);
    let (alice, alice_key) = ca.issue("alice", false);
    let (client, peer, zk) = (free_port(), free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["serve", "--name", "z1", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("z1=http://127.0.0.1:{peer}"),
            "--listen-zookeeper-urls",
            &format!("tls://127.0.0.1:{zk}"),
            "--cert-file",
            p(&server),
            "--key-file",
            p(&server_key),
            "--trusted-ca-file",
            p(&ca.path()),
            "--client-cert-auth",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _member = OneMember {
        child,
        client: format!("127.0.0.1:{client}"),
        peer: format!("127.0.0.1:{peer}"),
    };
    let program = r#"
import sys
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry
hosts, ca, cert, key = sys.argv[1:5]
def client(**tls):
    return KazooClient(hosts=hosts, timeout=5,
                       connection_retry=KazooRetry(max_tries=3, delay=0.2), **tls)
zk = client(use_ssl=True, ca=ca, certfile=cert, keyfile=key, verify_certs=True)
zk.start(timeout=20)
zk.create("/over-tls", b"sealed")
print("read", zk.get("/over-tls")[0].decode())
zk.stop()
for name, tls in [("no certificate", dict(use_ssl=True, ca=ca, verify_certs=True)),
                  ("plaintext", {})]:
    other = client(**tls)
    try:
        other.start(timeout=5)
        print("served", name)
        other.stop()
    except Exception:
        print("refused", name)
"#;
    let out = Command::new("python3")
        .args(["-c", program, &format!("127.0.0.1:{zk}")])
        .args([p(&ca.path()), p(&alice), p(&alice_key)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in ["read sealed", "refused no certificate", "refused plaintext"] {
        assert!(text.contains(want), "kazoo printed no {want:?}:\n{text}");
    }
}
