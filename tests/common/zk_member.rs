//! A member serving ZooKeeper clients for the ZooKeeper tests, and the client programs they
//! drive it with: python (kazoo) and Debian's zkCli.sh.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{OneMember, four_letter, free_port};

/// The super-user's digest for the password `test` (ZooKeeper's documented example).
pub const SUPER_DIGEST: &str = "super:D/InIHSb7yEEbrWz8b9l71RjZJU=";

/// A member serving ZooKeeper clients on a port of its own, with a half-second tick (so
/// sessions may be as short as a second), containers reaped every 200 ms, and a super-user.
pub fn start(dir: &Path) -> (OneMember, String) {
    start_with(
        dir,
        &[
            "--zookeeper-tick-ms",
            "500",
            "--zookeeper-container-check-interval-ms",
            "200",
            "--zookeeper-super-digest",
            SUPER_DIGEST,
            "--zookeeper-4lw-commands-whitelist=*",
        ],
    )
}

/// A member serving ZooKeeper clients on a port of its own, with `extra` flags.
pub fn start_with(dir: &Path, extra: &[&str]) -> (OneMember, String) {
    start_with_env(dir, extra, &[])
}

/// A member serving ZooKeeper clients on a port of its own, with `extra` flags and `env`.
pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (OneMember, String) {
    std::fs::create_dir_all(dir).unwrap();
    let zk = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--listen-zookeeper-urls", zk.as_str()];
    args.extend_from_slice(extra);
    let node = OneMember::start_with_env(
        dir,
        "z1",
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        &args,
        env,
    );
    wait_ruok(&zk);
    (node, zk)
}

/// Waits for the ZooKeeper port to answer `srvr` (the one four-letter word on by default).
pub fn wait_ruok(zk: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !four_letter(zk, b"srvr").is_some_and(|s| s.starts_with("Zookeeper version")) {
        assert!(
            Instant::now() < deadline,
            "the ZooKeeper port {zk} never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 is missing");
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn zkcli(zk: &str, commands: &str) -> String {
    let mut child = Command::new("/usr/share/zookeeper/bin/zkCli.sh")
        .args(["-server", zk])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zkCli.sh is missing: install Debian's zookeeper (scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{commands}\nquit\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // zkCli.sh says some results ("Created ...") on stderr.
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// More of zkCli.sh's commands, on a fresh `/more` subtree of the member at `zk`: stat,
/// recursive ls, ephemerals, child counts, conditional deletes, ACL changes, TTL nodes, sync
/// and a data watch.
pub fn zkcli_reads_stats_acls_and_ttls(zk: &str) {
    let out = zkcli(
        zk,
        "create /more x\ncreate -e /more/e y\nstat /more\nls -R /more\ngetEphemerals /more\n\
         getAllChildrenNumber /more\ndelete -v 5 /more/e\ndelete -v 0 /more/e\n\
         create -t 100000 /more/ttl t\nsetAcl /more world:anyone:r\ngetAcl /more\n\
         set /more z\nsync /more\nget -w /more",
    );
    for want in [
        "Created /more\n",
        "Created /more/e",
        "dataLength = 1\nnumChildren = 1",
        "/more\n/more/e\n",
        "[/more/e]",
        "\n1\n",
        "version No is not valid : /more/e",
        "Created /more/ttl",
        "'world,'anyone\n: r",
        "Insufficient permission : /more",
        "Sync is OK",
        "\nx\n",
    ] {
        assert!(out.contains(want), "zkCli.sh printed no {want:?}:\n{out}");
    }
    let out = zkcli(zk, "ls /more\nstat /more");
    assert!(
        out.contains("[ttl]"),
        "the deleted ephemeral is gone: {out}"
    );
    assert!(
        out.contains("cversion = 3"),
        "two creates and a delete: {out}"
    );
}
