//! A real ZooKeeper 3.8 (Debian's jars) standalone on loopback, for tests that hold quorumkv's
//! ZooKeeper port to what ZooKeeper itself answers. Killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running ZooKeeper server.
pub struct RealZooKeeper {
    child: Child,
    /// Its client address (`host:port`).
    pub addr: String,
}

impl RealZooKeeper {
    /// Starts one with its data and log under `dir`; waits until it answers `ruok`.
    pub fn start(dir: &Path) -> RealZooKeeper {
        assert!(
            Path::new("/usr/share/java/zookeeper.jar").exists(),
            "ZooKeeper is missing: install Debian's zookeeper (scripts/test.sh does)"
        );
        let port = free_port();
        let data = dir.join("zk-data");
        std::fs::create_dir_all(&data).unwrap();
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok\n",
                data.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("zookeeper.log")).unwrap();
        let child = Command::new("java")
            .args([
                "-cp",
                "/usr/share/java/zookeeper.jar:/usr/share/java/*",
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("java is missing: install a JDK (scripts/test.sh does)");
        let zk = RealZooKeeper {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while super::four_letter(&zk.addr, b"ruok").as_deref() != Some("imok") {
            assert!(Instant::now() < deadline, "ZooKeeper never answered ruok");
            std::thread::sleep(Duration::from_millis(100));
        }
        zk
    }
}

impl Drop for RealZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
