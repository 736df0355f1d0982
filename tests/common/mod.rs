//! Helpers shared by the workspace's integration tests.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

#[path = "../../src/chaos/port.rs"]
mod port;

pub mod certs;
pub mod cluster;
pub mod etcd;
pub mod zk_member;
pub mod zk_raw;
pub mod zookeeper;

/// A loopback port free at the time of asking, from below the ephemeral range and never the
/// same twice in one process (the fault tests' own, [`port::free_port`]).
pub fn free_port() -> u16 {
    port::free_port().expect("a free loopback port").port()
}

/// A four-letter word's answer from the ZooKeeper port at `addr` (`None`: no answer).
pub fn four_letter(addr: &str, word: &[u8; 4]) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(word).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A one-member `quorumkv serve` process on loopback; killed when dropped.
pub struct OneMember {
    /// The process.
    pub child: std::process::Child,
    /// Its client address (`host:port`).
    pub client: String,
    /// Its peer address (`host:port`).
    pub peer: String,
}

impl OneMember {
    /// Starts member `name` with its data in `dir/data` and its log in `dir/node.log`.
    pub fn start(dir: &std::path::Path, name: &str) -> OneMember {
        let (client, peer) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        OneMember::start_on(dir, name, client, peer)
    }

    /// Starts member `name` as [`OneMember::start`] does, on the given addresses (the same
    /// ones again restart a member on its data).
    pub fn start_on(dir: &std::path::Path, name: &str, client: String, peer: String) -> OneMember {
        OneMember::start_with(dir, name, client, peer, &[])
    }

    /// Starts member `name` as [`OneMember::start_on`] does, with `extra` flags.
    pub fn start_with(
        dir: &std::path::Path,
        name: &str,
        client: String,
        peer: String,
        extra: &[&str],
    ) -> OneMember {
        OneMember::start_with_env(dir, name, client, peer, extra, &[])
    }

    /// Starts member `name` as [`OneMember::start_with`] does, with `env` set for it.
    pub fn start_with_env(
        dir: &std::path::Path,
        name: &str,
        client: String,
        peer: String,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> OneMember {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_quorumkv"))
            .envs(env.iter().copied())
            .args(["serve", "--name", name, "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &format!("http://{client}"),
                "--advertise-client-urls",
                &format!("http://{client}"),
                "--listen-peer-urls",
                &format!("http://{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://{peer}"),
                "--initial-cluster",
                &format!("{name}=http://{peer}"),
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        OneMember {
            child,
            client,
            peer,
        }
    }
}

impl Drop for OneMember {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
