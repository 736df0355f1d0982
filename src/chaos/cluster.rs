//! The cluster under test: real `quorumkv serve` processes on loopback, each behind its own
//! peer proxy, started, killed (-9), paused (SIGSTOP/SIGCONT), restarted and replaced.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use quorumkv_lossyfs::{Cut, CutReport, Disk};
use quorumkv_server::pb::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberRemoveRequest, StatusRequest,
    cluster_client::ClusterClient, maintenance_client::MaintenanceClient,
};
use tonic::transport::{Channel, Endpoint};

use super::port::free_port;
use super::proxy::{Ids, Pids};

/// One member.
#[derive(Debug)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its id (changes when it is replaced).
    pub id: u64,
    /// Client API address.
    pub client: SocketAddr,
    /// The real peer listener.
    pub peer: SocketAddr,
    /// The proxy in front of it: its advertised peer URL.
    pub proxy: SocketAddr,
    /// ZooKeeper client address.
    pub zk: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    joining: bool,
    /// Channel for requests (with a request timeout).
    pub channel: Channel,
    /// Channel for watch streams (no request timeout).
    pub stream_channel: Channel,
}

/// The members and how to start them.
#[derive(Debug)]
pub struct Cluster {
    exe: PathBuf,
    protocol: String,
    token: String,
    extra: Vec<String>,
    /// Members by index.
    pub members: Vec<Member>,
    ids: Ids,
    pids: Pids,
    /// `http`, or `https` when the members speak TLS to each other.
    scheme: &'static str,
    /// Each member's data directory as a lossy file system, for power cuts (empty when the
    /// run cuts no power).
    disks: Vec<Disk>,
    /// FAILPOINTS every member starts with, unless a fault arms its own.
    failpoints: Option<String>,
    /// Whether members run under libfaketime, their wall clocks set by a file each.
    fake_clocks: bool,
}

/// Where Debian's libfaketime (package `faketime`) lives; its multithreaded variant.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn channel(addr: SocketAddr, timeout: Option<Duration>) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    let ep = match timeout {
        Some(t) => ep.timeout(t),
        None => ep,
    };
    Ok(ep.connect_lazy())
}

impl Cluster {
    /// Lays out `n` members under `dir` whose proxies listen on `proxies`; nothing runs yet.
    pub fn new(
        dir: &Path,
        protocol: &str,
        seed: u64,
        proxies: &[SocketAddr],
        extra: Vec<String>,
        scheme: &'static str,
        request_timeout: Duration,
    ) -> Result<Cluster, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let token = format!("chaos-{seed}");
        let mut members = Vec::new();
        let ids: Ids = Arc::new(RwLock::new(HashMap::new()));
        for (i, &proxy) in proxies.iter().enumerate() {
            let client = free_port()?;
            let id = quorumkv_server::member::identity::member_id(
                &[format!("{scheme}://{proxy}")],
                &token,
            );
            ids.write().insert(id, i);
            members.push(Member {
                name: format!("n{i}"),
                id,
                client,
                peer: free_port()?,
                proxy,
                zk: free_port()?,
                dir: dir.join(format!("n{i}")),
                child: None,
                paused: false,
                joining: false,
                channel: channel(client, Some(request_timeout))?,
                stream_channel: channel(client, None)?,
            });
        }
        Ok(Cluster {
            exe,
            protocol: protocol.to_string(),
            token,
            extra,
            members,
            ids,
            pids: Arc::default(),
            scheme,
            disks: Vec::new(),
            failpoints: None,
            fake_clocks: false,
        })
    }

    /// Mounts a lossy file system on every member's data directory, so its power can be cut.
    pub fn use_lossy_disks(&mut self) -> Result<(), String> {
        for m in &self.members {
            std::fs::create_dir_all(&m.dir).map_err(|e| format!("{}: {e}", m.dir.display()))?;
            self.disks
                .push(Disk::mount(&m.dir).map_err(|e| format!("lossyfs: {e}"))?);
        }
        Ok(())
    }

    /// Cuts member `i`'s power: kills it, and its data directory keeps only what it fsynced
    /// (`torn`: and a random part of the rest). It stays down until started.
    pub fn power_cut(&mut self, i: usize, cut: Cut) -> Result<CutReport, String> {
        self.kill(i);
        let disk = self
            .disks
            .get_mut(i)
            .ok_or("power cuts need the members on lossy disks")?;
        disk.power_cut(cut)
            .map_err(|e| format!("power cut of {}: {e}", self.members[i].name))
    }

    /// `http`, or `https` when the members speak TLS to each other.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The id table the proxies read.
    pub fn ids(&self) -> Ids {
        Arc::clone(&self.ids)
    }

    /// The process table the proxies read (who dialed, when they cannot read a handshake).
    pub fn pids(&self) -> Pids {
        Arc::clone(&self.pids)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}://{}", m.name, self.scheme, m.proxy))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs every member under libfaketime from its next start, its wall clock offset by what
    /// [`Cluster::set_clock_offset`] says (monotonic time is left real, as a stepped system
    /// clock leaves it).
    pub fn use_fake_clocks(&mut self) -> Result<(), String> {
        if !Path::new(LIBFAKETIME).exists() {
            return Err(format!(
                "clock jumps need libfaketime ({LIBFAKETIME}; Debian package faketime)"
            ));
        }
        self.fake_clocks = true;
        for i in 0..self.members.len() {
            self.set_clock_offset(i, 0)?;
        }
        Ok(())
    }

    /// Steps member `i`'s wall clock to `secs` from real time (libfaketime reads it within
    /// a second).
    pub fn set_clock_offset(&self, i: usize, secs: i64) -> Result<(), String> {
        let file = self.members[i].dir.with_extension("faketime");
        write_atomically(&file, &format!("{secs:+}\n"))
    }

    /// Arms failpoints in running member `i` (`name=action;...`; empty disarms them all); it
    /// reads them within 100 ms (needs a build with failpoints).
    pub fn arm(&self, i: usize, spec: &str) -> Result<(), String> {
        write_atomically(&self.failpoints_file(i), spec)
    }

    fn failpoints_file(&self, i: usize) -> PathBuf {
        self.members[i].dir.with_extension("failpoints")
    }

    /// The highest term (Raft) or epoch (ZAB) any answering member reports.
    pub async fn term(&self) -> u64 {
        let mut term = 0;
        for m in &self.members {
            if m.child.is_none() || m.paused {
                continue;
            }
            let mut c = MaintenanceClient::new(m.channel.clone());
            if let Ok(r) = c.status(StatusRequest {}).await {
                term = term.max(r.into_inner().raft_term);
            }
        }
        term
    }

    /// Sets the FAILPOINTS every member starts with from now on.
    pub fn set_failpoints(&mut self, spec: Option<String>) {
        self.failpoints = spec;
    }

    /// Starts member `i` (again) on its data directory.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        self.start_with(i, None)
    }

    /// Starts member `i` with the given FAILPOINTS (needs a build with failpoints).
    pub fn start_with(&mut self, i: usize, failpoints: Option<&str>) -> Result<(), String> {
        let initial = self.initial_cluster();
        let m = &mut self.members[i];
        if m.child.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(m.dir.parent().unwrap_or(Path::new(".")))
            .map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.with_extension("log"))
            .map_err(|e| format!("{}: {e}", m.dir.display()))?;
        let state = if m.joining { "existing" } else { "new" };
        let mut cmd = Command::new(&self.exe);
        match failpoints.or(self.failpoints.as_deref()) {
            Some(spec) => cmd.env("FAILPOINTS", spec),
            None => cmd.env_remove("FAILPOINTS"),
        };
        if quorumkv_server::FAILPOINTS_COMPILED {
            cmd.env("FAILPOINTS_FILE", m.dir.with_extension("failpoints"));
        }
        if self.fake_clocks {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", m.dir.with_extension("faketime"))
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd
            .args(["serve", "--name", &m.name, "--data-dir"])
            .arg(&m.dir)
            .args([
                "--listen-client-urls",
                &format!("http://{}", m.client),
                "--listen-peer-urls",
                &format!("{}://{}", self.scheme, m.peer),
                "--initial-advertise-peer-urls",
                &format!("{}://{}", self.scheme, m.proxy),
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                &self.token,
                "--replication",
                &self.protocol,
                "--listen-zookeeper-urls",
                &m.zk.to_string(),
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        {
            let mut pids = self.pids.write();
            pids.retain(|_, member| *member != i);
            pids.insert(child.id(), i);
        }
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    /// Whether member `i` runs (paused or not).
    pub fn running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.members[i].paused = false;
    }

    fn signal(&mut self, i: usize, sig: libc::c_int) {
        if let Some(c) = &self.members[i].child {
            let pid = libc::pid_t::try_from(c.id()).expect("pids fit pid_t");
            // SAFETY: kill(2) on our own child's pid with a valid signal number.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Stops member `i` with SIGSTOP.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.members[i].paused = true;
    }

    /// Resumes member `i` with SIGCONT.
    pub fn resume(&mut self, i: usize) {
        if self.members[i].paused {
            self.signal(i, libc::SIGCONT);
            self.members[i].paused = false;
        }
    }

    /// Whether member `i` exited by itself; reaps it if so.
    pub fn exited(&mut self, i: usize) -> bool {
        let gone = match &mut self.members[i].child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => false,
        };
        if gone {
            self.members[i].child = None;
        }
        gone
    }

    /// Resumes paused members and restarts stopped ones.
    pub fn heal(&mut self) -> Result<(), String> {
        for i in 0..self.members.len() {
            if quorumkv_server::FAILPOINTS_COMPILED {
                self.arm(i, "")?;
            }
            if self.fake_clocks {
                self.set_clock_offset(i, 0)?;
            }
            self.exited(i);
            self.resume(i);
            self.start(i)?;
        }
        Ok(())
    }

    /// Kills every member.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.resume(i);
            self.kill(i);
        }
    }

    /// The index of the member every answering member names as leader, if they agree.
    pub async fn leader(&self) -> Option<usize> {
        let mut named = None;
        for m in &self.members {
            if m.child.is_none() || m.paused {
                continue;
            }
            let mut c = MaintenanceClient::new(m.channel.clone());
            let Ok(r) = c.status(StatusRequest {}).await else {
                continue;
            };
            let leader = r.into_inner().leader;
            if leader == 0 || named.is_some_and(|l| l != leader) {
                return None;
            }
            named = Some(leader);
        }
        let id = named?;
        self.members.iter().position(|m| m.id == id)
    }

    /// Replaces member `i`: removes it through another member, waits for it to exit, wipes its
    /// data, adds it back under a new id and starts it joining the running cluster.
    pub async fn replace(&mut self, i: usize, via: usize) -> Result<(), String> {
        self.replace_tending(i, via, None).await.map(|_| ())
    }

    /// [`Cluster::replace`], restarting member `tend` (armed to crash) whenever it has exited
    /// while the add waits: a voter down makes every add refused. Answers whether it did.
    pub async fn replace_tending(
        &mut self,
        i: usize,
        via: usize,
        tend: Option<usize>,
    ) -> Result<bool, String> {
        let c = ClusterClient::new(self.members[via].channel.clone());
        let old = self.members[i].id;
        // The strict reconfiguration check refuses while a member is unreachable; retry.
        retry("member remove", RECONFIG_RETRY, || {
            let mut c = c.clone();
            async move {
                match c.member_remove(MemberRemoveRequest { id: old }).await {
                    // An earlier attempt whose answer was lost did it.
                    Err(e) if e.message().contains("member not found") => {
                        Ok(tonic::Response::new(Default::default()))
                    }
                    r => r,
                }
            }
        })
        .await?;
        // A removed member stops by itself; give it a while, then make sure.
        for _ in 0..100 {
            if self.exited(i) || !self.running(i) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.resume(i);
        self.kill(i);
        wipe(&self.members[i].dir)?;
        let url = format!("{}://{}", self.scheme, self.members[i].proxy);
        // Adding a voter needs every voter heard from lately (etcd's strict check), which
        // network faults running beside this one can deny for a while. An attempt whose answer
        // was lost may have added the member already (and then, not started, it keeps the
        // check failing): each attempt looks for it first. A removed member not added back
        // would leave the cluster short for good, so the add waits longer than the removal.
        let deadline = tokio::time::Instant::now() + MEMBER_ADD_RETRY;
        let mut restarted = false;
        let added = loop {
            if let Some(t) = tend
                && self.exited(t)
            {
                self.start(t)?;
                restarted = true;
            }
            let mut c = c.clone();
            let attempt = async {
                let list = c.member_list(MemberListRequest::default()).await?;
                if let Some(m) = list
                    .into_inner()
                    .members
                    .into_iter()
                    .find(|m| m.peer_ur_ls.contains(&url))
                {
                    return Ok(MemberAddResponse {
                        member: Some(m),
                        ..Default::default()
                    });
                }
                c.member_add(MemberAddRequest {
                    peer_ur_ls: vec![url.clone()],
                    is_learner: false,
                })
                .await
                .map(tonic::Response::into_inner)
            };
            match attempt.await {
                Ok(a) => break a,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!("member add: {}", e.message()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        let id = added
            .member
            .map(|m| m.id)
            .ok_or("member add named no member")?;
        {
            let mut ids = self.ids.write();
            ids.remove(&old);
            ids.insert(id, i);
        }
        self.members[i].id = id;
        self.members[i].joining = true;
        self.start(i)?;
        Ok(restarted)
    }
}

/// The index of the member that every member answering on `channels` within a second names
/// as leader, if they agree (`ids` maps member ids to indexes).
pub async fn agreed_leader(channels: &[Channel], ids: &Ids) -> Option<usize> {
    let mut named = None;
    for ch in channels {
        let mut c = MaintenanceClient::new(ch.clone());
        let asked = tokio::time::timeout(Duration::from_secs(1), c.status(StatusRequest {}));
        let Ok(Ok(r)) = asked.await else {
            continue;
        };
        let leader = r.into_inner().leader;
        if leader == 0 || named.is_some_and(|l| l != leader) {
            return None;
        }
        named = Some(leader);
    }
    ids.read().get(&named?).copied()
}

/// Replaces `path`'s contents in one step (a reader sees the old text or the new).
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Removes everything in `dir`, keeping `dir` itself (it may be a mount point).
fn wipe(dir: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    for e in entries {
        let e = e.map_err(err)?;
        let path = e.path();
        if e.file_type().map_err(err)?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .map_err(err)?;
    }
    // Made durable, as an operator's wipe would be before the member starts again.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

/// How long a membership change is tried again while the cluster refuses it.
const RECONFIG_RETRY: Duration = Duration::from_secs(30);
/// How long adding a replaced member back is tried again.
const MEMBER_ADD_RETRY: Duration = Duration::from_secs(120);

/// Calls `f` until it succeeds, for up to `within`.
async fn retry<T, F, Fut>(what: &str, within: Duration, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match f().await {
            Ok(r) => return Ok(r.into_inner()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{what}: {}", e.message()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
