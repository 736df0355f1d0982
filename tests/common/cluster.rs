//! A cluster of `quorumkv serve` processes on loopback for the integration tests: members
//! started, killed, stopped and added; etcdctl to ask them; one cluster at a time per test
//! binary ([`serial`]). Each member serves ZooKeeper clients on a port of its own.

use super::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Clusters run one at a time: several at once on two cores make elections flap.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=15s")
        .args(args)
        .output()
        .expect("etcdctl not found: run ./scripts/test.sh, which installs Debian's etcd-client")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "etcdctl failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Member {
    pub name: String,
    pub client: String,
    /// Its ZooKeeper client address.
    pub zk: String,
    pub peer: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// For a member added at runtime: the `--initial-cluster` it joins with.
    pub join: Option<String>,
    /// Environment variables of its process (FAILPOINTS arms storage failpoints; LD_PRELOAD
    /// and FAKETIME shift its clock).
    pub env: Vec<(String, String)>,
}

/// `etcdctl member list` rows as (id, name, is learner).
pub fn member_rows(ep: &str) -> Vec<(String, String, bool)> {
    ok(&etcdctl(ep, &["member", "list"]))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            (f.len() >= 6).then(|| (f[0].to_string(), f[2].to_string(), f[5] == "true"))
        })
        .collect()
}

/// Asks `child` to stop cleanly (SIGTERM).
pub fn sigterm(child: &Child) {
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
}

pub struct Cluster {
    pub members: Vec<Member>,
    pub initial: String,
    pub protocol: &'static str,
    pub extra: Vec<String>,
    /// `http` or `https` (peer TLS, whose flags are in `extra`).
    pub peer_scheme: &'static str,
    pub _tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn start(n: usize, protocol: &'static str) -> Cluster {
        Cluster::start_with(n, protocol, &[])
    }

    /// A cluster whose members get `extra` flags besides the usual ones.
    pub fn start_with(n: usize, protocol: &'static str, extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Cluster::start_with_peers(n, protocol, "http", &extra)
    }

    /// A cluster whose peer URLs have `scheme` (`https`: peer TLS, set up by `extra`).
    pub fn start_with_peers(
        n: usize,
        protocol: &'static str,
        scheme: &'static str,
        extra: &[String],
    ) -> Cluster {
        Cluster::launch(n, protocol, scheme, extra, &[])
    }

    /// A cluster whose members get `extra` flags and the environment variables `env`.
    pub fn start_with_env(
        n: usize,
        protocol: &'static str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Cluster::launch(n, protocol, "http", &extra, env)
    }

    fn launch(
        n: usize,
        protocol: &'static str,
        scheme: &'static str,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let members: Vec<Member> = (1..=n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("127.0.0.1:{}", free_port()),
                zk: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                dir: tmp.path().join(format!("m{i}")),
                child: None,
                join: None,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={scheme}://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            members,
            initial,
            protocol,
            extra: extra.to_vec(),
            peer_scheme: scheme,
            _tmp: tmp,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy();
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.with_extension("log"))
            .unwrap();
        let initial = m.join.as_deref().unwrap_or(&self.initial);
        let state = if m.join.is_some() { "existing" } else { "new" };
        let peer_url = format!("{}://{}", self.peer_scheme, m.peer);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorumkv"));
        cmd.envs(m.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .args([
                "serve",
                "--name",
                &m.name,
                "--data-dir",
                m.dir.to_str().unwrap(),
                "--listen-client-urls",
                &format!("http://{}", m.client),
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                initial,
                "--initial-cluster-state",
                state,
                "--replication",
                self.protocol,
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--listen-zookeeper-urls",
                &m.zk,
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = etcdctl(&self.endpoints(), &["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster never became healthy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Index of the member that leads, by asking every live member.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                let out = etcdctl(&m.client, &["endpoint", "status", "-w", "json"]);
                let text = String::from_utf8_lossy(&out.stdout);
                let v: serde_json::Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let st = &v[0]["Status"];
                if st["leader"] == st["header"]["member_id"] && st["leader"].as_u64() != Some(0) {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Adds a member with `etcdctl member add` through `via`, then starts it joining the
    /// running cluster; returns its index and id.
    pub fn add_member(&mut self, via: &str, learner: bool) -> (usize, String) {
        let i = self.members.len();
        let m = Member {
            name: format!("m{}", i + 1),
            client: format!("127.0.0.1:{}", free_port()),
            zk: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            dir: self._tmp.path().join(format!("m{}", i + 1)),
            child: None,
            join: None,
            env: Vec::new(),
        };
        let peer_url = format!("{}://{}", self.peer_scheme, m.peer);
        let mut args = vec!["member", "add", &m.name, "--peer-urls", &peer_url];
        if learner {
            args.push("--learner");
        }
        let out = ok(&etcdctl(via, &args));
        let id = out
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("member add said {out}"))
            .to_string();
        let join = out
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
            .unwrap_or_else(|| panic!("member add printed no initial cluster: {out}"))
            .trim_matches('"')
            .to_string();
        self.members.push(Member {
            join: Some(join),
            ..m
        });
        self.spawn(i);
        (i, id)
    }

    /// Hands the lead to member `i` (etcdctl move-leader through the current leader); returns
    /// its id (hex).
    pub fn move_leader(&self, i: usize) -> String {
        let via = &self.members[self.leader()].client;
        let id = member_rows(via)
            .into_iter()
            .find(|(_, name, _)| *name == self.members[i].name)
            .expect("the member is listed")
            .0;
        ok(&etcdctl(via, &["move-leader", &id]));
        assert_eq!(self.leader(), i, "leadership moved");
        id
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Stops member `i` with SIGTERM, as an operator would, and waits for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            sigterm(&c);
            assert!(
                c.wait().unwrap().success(),
                "member {i} failed to stop cleanly"
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// The member's `/metrics` page (served on its client port, as etcd serves it).
pub fn metrics_text(ep: &str) -> String {
    use std::io::{Read, Write as _};
    let mut s = std::net::TcpStream::connect(ep).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {ep}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
