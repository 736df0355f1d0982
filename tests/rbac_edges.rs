//! etcd's RBAC edges (3.4/3.5 behaviour) with etcdctl and the JSON gateway against one
//! member: a lease's keys are shown only to a caller who may read them all; attaching a lease
//! needs write access to every key already on it; passwords past bcrypt's 72 bytes are
//! refused; a user's failed logins are slowed; the log never holds a token in clear.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::OneMember;

fn etcdctl(ep: &str, user: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .arg("--command-timeout=10s");
    if let Some(u) = user {
        c.arg(format!("--user={u}"));
    }
    c.args(args)
        .output()
        .expect("etcdctl is missing (scripts/test.sh installs it)")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn refused(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "allowed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const ROOT: Option<&str> = Some("root:rootpw");
const ALICE: Option<&str> = Some("alice:alicepw");

/// A member with auth on: root, and alice who may read and write `a*` only.
fn start(dir: &std::path::Path) -> OneMember {
    let m = OneMember::start(dir, "r1");
    let ep = m.client.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etcdctl(&ep, None, &["put", "ready", "1"]).status.success() {
        assert!(Instant::now() < deadline, "the member never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "r"],
        &[
            "role",
            "grant-permission",
            "r",
            "--prefix=true",
            "readwrite",
            "a",
        ],
        &["user", "add", "alice:alicepw"],
        &["user", "grant-role", "alice", "r"],
        &["auth", "enable"],
    ] {
        ok(&etcdctl(&ep, None, args));
    }
    m
}

fn lease_id(grant: &str) -> String {
    grant.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn a_leases_keys_are_guarded_like_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path());
    let ep = &m.client;
    let lease = lease_id(&ok(&etcdctl(ep, ROOT, &["lease", "grant", "600"])));
    ok(&etcdctl(
        ep,
        ROOT,
        &["put", "secret", "s", "--lease", &lease],
    ));
    // Its keys need read access to each (etcd #15656); its TTL alone does not.
    let e = refused(&etcdctl(
        ep,
        ALICE,
        &["lease", "timetolive", &lease, "--keys"],
    ));
    assert!(e.contains("permission denied"), "{e}");
    assert!(ok(&etcdctl(ep, ALICE, &["lease", "timetolive", &lease])).contains("remaining"));
    // Attaching the lease to a key she may write needs write access to `secret` too.
    let e = refused(&etcdctl(ep, ALICE, &["put", "a1", "v", "--lease", &lease]));
    assert!(e.contains("permission denied"), "{e}");
    let txn = format!("\n\nput a2 v --lease={lease}\n\n");
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([&format!("--endpoints={ep}"), "--user=alice:alicepw", "txn"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(txn.as_bytes())
        .unwrap();
    let e = refused(&child.wait_with_output().unwrap());
    assert!(e.contains("permission denied"), "{e}");
    // The checks bite only where they should: her own lease goes on her own keys.
    let own = lease_id(&ok(&etcdctl(ep, ROOT, &["lease", "grant", "600"])));
    ok(&etcdctl(ep, ALICE, &["put", "a1", "v", "--lease", &own]));
    let keys = ok(&etcdctl(
        ep,
        ALICE,
        &["lease", "timetolive", &own, "--keys"],
    ));
    assert!(keys.contains("attached keys([a1])"), "{keys}");
}

#[test]
fn passwords_and_logins() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path());
    let ep = &m.client;
    let long = format!("bob:{}", "x".repeat(73));
    let e = refused(&etcdctl(ep, ROOT, &["user", "add", &long]));
    assert!(e.contains("longer than 72 bytes"), "{e}");
    assert!(
        ok(&etcdctl(
            ep,
            ROOT,
            &["user", "add", &format!("bob:{}", "x".repeat(72))]
        ))
        .contains("User bob created")
    );
    // Unknown users and wrong passwords fail alike.
    let e = refused(&etcdctl(ep, Some("nobody:pw"), &["get", "a"]));
    assert!(e.contains("authentication failed"), "{e}");
    // Five wrong passwords, then even the right one waits for the window to pass.
    for _ in 0..5 {
        let e = refused(&etcdctl(ep, Some("alice:wrong"), &["get", "a"]));
        assert!(e.contains("authentication failed"), "{e}");
    }
    let e = refused(&etcdctl(ep, ALICE, &["get", "a"]));
    assert!(e.contains("too many requests"), "{e}");
    // Others are not slowed.
    ok(&etcdctl(ep, ROOT, &["get", "a"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl(ep, ALICE, &["get", "a"]).status.success() {
        assert!(Instant::now() < deadline, "alice was never let in again");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn tokens_never_reach_the_log_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let m = start(dir.path());
    let out = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            &format!("http://{}/v3/auth/authenticate", m.client),
            "-d",
            r#"{"name":"alice","password":"alicepw"}"#,
        ])
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = body["token"].as_str().expect("a token").to_string();
    // The token works…
    let get = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: {token}"),
            &format!("http://{}/v3/kv/range", m.client),
            "-d",
            r#"{"key":"YQ=="}"#,
        ])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&get.stdout);
    assert!(reply.contains("header"), "{reply}");
    // A client naming a certificate user it has not proved is nobody.
    let forged = Command::new("curl")
        .args([
            "-s",
            "-X",
            "POST",
            "-H",
            "x-quorumkv-certificate-user: root",
        ])
        .arg(format!("http://{}/v3/kv/range", m.client))
        .args(["-d", r#"{"key":"YQ=="}"#])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&forged.stdout);
    assert!(reply.contains("user name is empty"), "{reply}");
    let forged_grpc = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", m.client))
        .args(["user", "list"])
        .output()
        .unwrap();
    assert!(!forged_grpc.status.success());
    // …and no file of the member holds it; the log holds its digest.
    let digest = quorumkv_server::etcd::rbac::token_digest(&token);
    let (mut clear, mut hashed) = (false, false);
    let mut todo = vec![dir.path().join("data")];
    while let Some(p) = todo.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
                clear |= has(&token);
                hashed |= has(&digest);
            }
        }
    }
    assert!(!clear, "the token is on disk in clear");
    assert!(hashed, "the check bites: the log holds the token's digest");
}
