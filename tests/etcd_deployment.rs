//! How deployments written for etcd start a member: its flags, `ETCD_*` variables and
//! YAML config file, `--wal-dir`, `TOKIO_WORKER_THREADS`, and clear errors when a start
//! cannot go on.

mod common;
use common::cluster::*;
use common::etcd::*;
use common::free_port;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `--wal-dir`: the log and its hard state live in their own directory, writes in it survive
/// a kill, and a member refuses a log directory that is not the one its data was written
/// with.
#[test]
fn a_dedicated_wal_dir_holds_the_log() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let log = tmp.path().join("serve.log");
    let with = |wal: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "--data-dir".into(),
            data.clone().into(),
            "--wal-dir".into(),
            wal.into(),
        ]
    };
    let wait_up = || assert_serves(&ep, &log);
    let wal = tmp.path().join("wal");
    let mut child = serve_one(client, peer, &with(&wal), &log);
    wait_up();
    for i in 0..20 {
        ok(&etcdctl(
            &ep,
            &["put", &format!("w{i:02}"), &format!("v{i}")],
        ));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let segments = std::fs::read_dir(wal.join("wal")).unwrap().count();
    assert!(segments > 0, "no log segments in --wal-dir");
    assert!(wal.join("identity").exists());
    assert!(
        !data.join("member/wal").exists(),
        "the log went into the data dir"
    );

    let mut child = serve_one(client, peer, &with(&wal), &log);
    wait_up();
    let keys = ok(&etcdctl(&ep, &["get", "w", "--prefix", "--keys-only"]));
    assert_eq!(keys.split_whitespace().count(), 20, "{keys}");
    assert_eq!(
        ok(&etcdctl(&ep, &["get", "w19", "--print-value-only"])).trim(),
        "v19"
    );
    // SIGTERM: a clean stop, with the tree's applied index made durable.
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));

    // An empty log directory under a tree that applied entries: refused.
    let mut child = serve_one(client, peer, &with(&tmp.path().join("empty")), &log);
    assert_eq!(
        exits(&mut child),
        Some(false),
        "an empty --wal-dir was taken"
    );
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("applied index"), "{err}");

    // Another member's log directory: refused before anything is opened.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("identity"),
        "cluster=0000000000000001 member=0000000000000002\n",
    )
    .unwrap();
    let mut child = serve_one(client, peer, &with(&other), &log);
    assert_eq!(
        exits(&mut child),
        Some(false),
        "a foreign --wal-dir was taken"
    );
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        err.contains("--wal-dir") && err.contains("another cluster"),
        "{err}"
    );
}

#[test]
fn startup_errors_are_clear() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap();
    let used = port.local_addr().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_quorumkv"))
            .arg("serve")
            .args(["--data-dir", tmp.path().join("d").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--listen-client-urls", &format!("http://{used}")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen for clients"));
    let out = run(&["--no-such-flag"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = run(&["--auth-token", "jwt,pub-key=x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only \"simple\" tokens"));
    let out = run(&["--auto-compaction-retention", "1d"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit \"d\""));
    let out = run(&[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "10m",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a revision count"));
    let p = free_port();
    let out = run(&[
        "--initial-cluster",
        &format!("default=http://127.0.0.1:{p}"),
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{p}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{p}"),
        "--listen-client-urls",
        &format!("http://127.0.0.1:{}", free_port()),
        "--initial-cluster-token",
        "one",
        "--election-timeout",
        "10",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--election-timeout"));
    // A data dir made for one cluster is refused by another.
    std::fs::create_dir_all(tmp.path().join("d")).unwrap();
    std::fs::write(
        tmp.path().join("d/identity"),
        "cluster=0000000000000001 member=0000000000000002\n",
    )
    .unwrap();
    let out = run(&[
        "--listen-client-urls",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to another cluster"));
}

/// The member serves clients on `TOKIO_WORKER_THREADS` threads when that is set (as etcd
/// takes `GOMAXPROCS`), and refuses to start on a value that is not a positive number.
#[test]
fn tokio_worker_threads_sets_the_client_serving_threads() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("serve.log");
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), tmp.path().join("d").into()];
    let serve = |workers: &str| {
        let mut cmd = serve_one_cmd(client, peer, &args, &log_path);
        cmd.env("TOKIO_WORKER_THREADS", workers);
        cmd
    };
    let out = serve("none").output().unwrap();
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("TOKIO_WORKER_THREADS must be a positive number"),
        "{text}"
    );
    let mut child = serve("3").spawn().unwrap();
    assert_serves(&ep, &log_path);
    let workers = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.as_ref().unwrap().path().join("comm"));
            comm.is_ok_and(|c| c.starts_with("node-"))
        })
        .count();
    assert_eq!(workers, 3, "threads named node-*");
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
}

/// `serve` takes etcd's `ETCD_<FLAG>` environment variables and etcd's YAML `--config-file`,
/// as deployments written for etcd configure it: a member set up either way serves under the
/// name and URLs it was given, a flag given both on the command line and in the environment
/// is refused, and a config file overrides both.
#[test]
fn serve_takes_etcd_environment_variables_and_config_files() {
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let log_path = tmp.path().join("serve.log");
    let spawn = |args: &[&str], env: &[(&str, String)]| -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorumkv"));
        cmd.arg("serve").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap()
    };
    let log = || std::fs::read_to_string(&log_path).unwrap();
    let member_name = || {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&etcdctl(&ep, &["member", "list", "-w", "json"]))).unwrap();
        v["members"][0]["name"].as_str().unwrap().to_string()
    };
    let peer_url = format!("http://127.0.0.1:{peer}");

    // Environment variables only.
    let env = [
        ("ETCD_NAME", "from-env".to_string()),
        (
            "ETCD_DATA_DIR",
            tmp.path().join("env").display().to_string(),
        ),
        ("ETCD_LISTEN_CLIENT_URLS", format!("http://{ep}")),
        ("ETCD_LISTEN_PEER_URLS", peer_url.clone()),
        ("ETCD_INITIAL_CLUSTER", format!("from-env={peer_url}")),
        ("ETCD_REPLICATION", "zab".to_string()),
        ("ETCD_NOT_A_FLAG", "1".to_string()),
    ];
    let mut child = spawn(&[], &env);
    assert_serves(&ep, &log_path);
    assert_eq!(member_name(), "from-env");
    ok(&etcdctl(&ep, &["put", "k", "v"]));
    assert_eq!(
        ok(&etcdctl(&ep, &["get", "k", "--print-value-only"])).trim(),
        "v"
    );
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
    let text = log();
    assert!(
        text.contains("recognized and used environment variable ETCD_NAME=from-env"),
        "{text}"
    );
    assert!(
        text.contains("Zab"),
        "ETCD_REPLICATION was not used: {text}"
    );
    assert!(
        text.contains("unrecognized environment variable ETCD_NOT_A_FLAG=1"),
        "{text}"
    );

    // The same flag both ways: refused before anything starts, as etcd refuses it.
    let mut child = spawn(&["--name", "from-flag"], &env);
    assert_eq!(exits(&mut child), Some(false));
    assert!(
        log().contains("conflicting environment variable \"ETCD_NAME\""),
        "{}",
        log()
    );
    // A bad value names its variable.
    let mut child = spawn(&[], &[("ETCD_HEARTBEAT_INTERVAL", "soon".to_string())]);
    assert_eq!(exits(&mut child), Some(false));
    assert!(
        log().contains("invalid value \"soon\" for ETCD_HEARTBEAT_INTERVAL"),
        "{}",
        log()
    );

    // A config file is the whole configuration: flags and variables are ignored.
    let config = tmp.path().join("etcd.yml");
    std::fs::write(
        &config,
        format!(
            "name: 'from-file'\n\
             data-dir: {}\n\
             listen-client-urls: http://{ep}\n\
             listen-peer-urls: {peer_url}\n\
             initial-cluster: from-file={peer_url}\n\
             heartbeat-interval: 100\n\
             election-timeout: 1000\n\
             wal-dir:\n\
             logger: zap\n\
             enable-v2: true\n\
             proxy: 'off'\n",
            tmp.path().join("file").display()
        ),
    )
    .unwrap();
    let mut child = spawn(
        &[
            "--config-file",
            config.to_str().unwrap(),
            "--name",
            "ignored",
        ],
        &[("ETCD_DATA_DIR", "/nonexistent/ignored".to_string())],
    );
    assert_serves(&ep, &log_path);
    assert_eq!(member_name(), "from-file");
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));
    let text = log();
    assert!(text.contains("loading server configuration from"), "{text}");
    assert!(
        text.contains("config file setting \"proxy\" is not used"),
        "{text}"
    );
    assert!(tmp.path().join("file").exists());
}

/// etcd's deployment flags: a member started as orchestrators start etcd (`--logger=zap`,
/// `--log-outputs` to a file, `--metrics=extensive`, gRPC keepalive and stream limits) serves,
/// logs where it was told, and pings an idle connection at `--grpc-keepalive-interval` and
/// closes it when `--grpc-keepalive-timeout` passes without an answer. TLS, which is not
/// served, is refused at start with the flag named.
#[test]
fn etcd_deployment_flags_are_honoured_or_refused_by_name() {
    use std::io::Read;
    let _s = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let ep = format!("127.0.0.1:{client}");
    let stderr = tmp.path().join("stderr.log");
    let log_file = tmp.path().join("etcd.log");
    let args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        tmp.path().join("data").into(),
        "--logger=zap".into(),
        format!("--log-outputs={}", log_file.display()).into(),
        "--metrics=extensive".into(),
        "--grpc-keepalive-interval=1s".into(),
        "--grpc-keepalive-timeout=1s".into(),
        "--max-concurrent-streams=100".into(),
        "--enable-v2=false".into(),
    ];
    let mut child = serve_one(client, peer, &args, &stderr);
    assert_serves(&ep, &stderr);
    ok(&etcdctl(&ep, &["put", "k", "v"]));
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        logged.contains("quorumkv") && !logged.contains("\u{1b}["),
        "the log file holds no plain log lines: {logged:?}"
    );

    // An HTTP/2 connection that never answers pings: pinged after 1 s, closed 1 s later.
    let mut conn = std::net::TcpStream::connect(&ep).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the unanswering connection was not closed: {e}"),
        }
    }
    let closed_after = started.elapsed();
    let mut pinged = false;
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        pinged |= bytes[at + 3] == 0x6 && bytes[at + 4] & 0x1 == 0;
        at += 9 + len;
    }
    assert!(pinged, "no PING before the close: {bytes:?}");
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(8),
        "closed after {closed_after:?}"
    );
    ok(&etcdctl(&ep, &["get", "k"]));
    sigterm(&child);
    assert_eq!(exits(&mut child), Some(true));

    // Refused at start, naming the flag.
    for (flag, says) in [
        (
            "--cert-file=/etc/etcd/server.crt",
            "--cert-file and --key-file go together",
        ),
        (
            "--peer-client-cert-auth",
            "--peer-client-cert-auth and --peer-trusted-ca-file need --peer-cert-file",
        ),
        (
            "--peer-cert-file=/etc/etcd/peer.crt",
            "--peer-cert-file and --peer-key-file go together",
        ),
        ("--log-outputs=stderr,stdout", "one output is supported"),
    ] {
        let mut args: Vec<_> = args
            .iter()
            .filter(|a| a.to_string_lossy().split('=').next() != flag.split('=').next())
            .cloned()
            .collect();
        args.push(flag.into());
        let mut child = serve_one(client, peer, &args, &stderr);
        assert_eq!(exits(&mut child), Some(false), "{flag} was taken");
        let err = std::fs::read_to_string(&stderr).unwrap();
        assert!(err.contains(says), "{flag}: {err}");
    }
}
