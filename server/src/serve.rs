//! `quorumkv serve`: one member of a cluster configured with etcd's flags, serving the etcd
//! v3 API on its client URLs and peers on its peer URL until told to stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quorumkv_wal::{Backend, WalOptions};

use crate::etcd::compactor::Retention;
use crate::etcd::{KvConfig, KvServer};
use crate::member::data_dir::DataDirIdentity;
use crate::member::identity as cluster;
use crate::member::identity::Member;
use crate::node::{NodeConfig, NodeError, ProtocolKind};

/// How often the leader checkpoints leases' remaining TTLs by default (etcd's
/// `--experimental-lease-checkpoint-interval`).
pub const DEFAULT_LEASE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);

/// Free disk space a member keeps by default before refusing new data: one log segment
/// (its next one may need the room) and 16 MiB for the tree and snapshots.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = (64 << 20) + (16 << 20);
use crate::transport::peer_auth::{DEFAULT_CLUSTER_TOKEN, PeerSecret};
use crate::transport::security::{PeerSecurity, PeerTlsOptions};
use quorumkv_replication::ProposeError;

/// Everything `serve` takes, with etcd's defaults.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Member name.
    pub name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Dedicated directory for the write-ahead log (etcd's `--wal-dir`); `None`: inside the
    /// data directory.
    pub wal_dir: Option<PathBuf>,
    /// URLs to serve clients on.
    pub listen_client_urls: Vec<String>,
    /// Client URLs advertised to the cluster.
    pub advertise_client_urls: Vec<String>,
    /// URL to listen for peers on.
    pub listen_peer_urls: Vec<String>,
    /// This member's peer URLs as the others reach them.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=url,...` of every initial member.
    pub initial_cluster: String,
    /// Cluster token (distinguishes clusters).
    pub initial_cluster_token: String,
    /// Join a running cluster (etcd `--initial-cluster-state existing`): the member must have
    /// been added with `etcdctl member add`; its id, the cluster id and the other members
    /// come from the running members.
    pub join_existing: bool,
    /// Raft or ZAB.
    pub protocol: ProtocolKind,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout.
    pub election_timeout: Duration,
    /// Start a restarted member's election clock most of the way through (etcd's
    /// `--initial-election-tick-advance`).
    pub initial_election_tick_advance: bool,
    /// Largest client request.
    pub max_request_bytes: usize,
    /// Largest Range response served, bytes of keys and values.
    pub max_range_response_bytes: usize,
    /// Watchers a member holds at once.
    pub max_watchers: usize,
    /// Client connections a member holds at once.
    pub max_client_connections: usize,
    /// NOSPACE alarm threshold (0: etcd's default of 2 GiB).
    pub quota_backend_bytes: u64,
    /// Most operations per transaction branch.
    pub max_txn_ops: usize,
    /// Refuse membership changes that could cost the cluster its quorum.
    pub strict_reconfig_check: bool,
    /// How long a simple token lives after its last use.
    pub auth_token_ttl: Duration,
    /// bcrypt cost of stored password hashes.
    pub bcrypt_cost: u32,
    /// Applied entries between log compactions.
    pub snapshot_count: u64,
    /// Entries kept behind the durable point at compaction for slow followers.
    pub snapshot_catchup_entries: u64,
    /// Most time between durable commits of the backend (etcd `--backend-batch-interval`).
    pub backend_batch_interval: Duration,
    /// Most applied entries between durable commits of the backend
    /// (etcd `--backend-batch-limit`).
    pub backend_batch_limit: u64,
    /// WAL options.
    pub wal: WalOptions,
    /// WAL io backend.
    pub backend: Backend,
    /// URLs to serve `/metrics` and `/health` on.
    pub listen_metrics_urls: Vec<String>,
    /// History compacted automatically (etcd's `--auto-compaction-*`); `None`: none.
    pub auto_compaction: Option<Retention>,
    /// The client port's connections and streams.
    pub client_port: crate::etcd::ClientPortConfig,
    /// Corruption checks between members.
    pub corrupt_check: crate::etcd::corrupt::CorruptCheckConfig,
    /// How often the leader checkpoints leases' remaining TTLs; `None`: never.
    pub lease_checkpoint_interval: Option<Duration>,
    /// Free disk bytes kept before new data is refused (NOSPACE); 0: not checked.
    pub disk_reserve_bytes: u64,
    /// The TLS of `https://` client URLs.
    pub client_tls: Option<crate::tls::TlsOptions>,
    /// The TLS of `https://` peer URLs.
    pub peer_tls: Option<PeerTlsOptions>,
    /// A file holding the peer secret members prove membership with; `None`: derived from
    /// `initial_cluster_token`.
    pub peer_secret_file: Option<PathBuf>,
    /// Addresses (`host:port`) to serve ZooKeeper clients on; none: not served.
    pub listen_zookeeper_urls: Vec<String>,
    /// The ZooKeeper addresses are a default, not asked for: one that cannot be bound (a
    /// ZooKeeper already serving there) is skipped with a warning instead of failing start.
    pub zookeeper_port_optional: bool,
    /// ZooKeeper's settings.
    pub zookeeper: crate::zk::session::ZkConfig,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            name: "default".into(),
            data_dir: PathBuf::from("quorumkv-data"),
            wal_dir: None,
            listen_client_urls: vec!["http://127.0.0.1:2379".into()],
            advertise_client_urls: vec!["http://127.0.0.1:2379".into()],
            listen_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_advertise_peer_urls: vec!["http://127.0.0.1:2380".into()],
            initial_cluster: String::new(),
            initial_cluster_token: DEFAULT_CLUSTER_TOKEN.into(),
            join_existing: false,
            protocol: ProtocolKind::Raft,
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            initial_election_tick_advance: true,
            max_request_bytes: 1536 * 1024,
            max_range_response_bytes: 1 << 30,
            max_watchers: 100_000,
            max_client_connections: 10_000,
            quota_backend_bytes: 0,
            max_txn_ops: 128,
            strict_reconfig_check: true,
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            backend_batch_interval: Duration::from_millis(100),
            backend_batch_limit: 10_000,
            wal: WalOptions::default(),
            backend: Backend::default(),
            listen_metrics_urls: Vec::new(),
            auto_compaction: None,
            client_port: crate::etcd::ClientPortConfig::default(),
            corrupt_check: crate::etcd::corrupt::CorruptCheckConfig::default(),
            lease_checkpoint_interval: Some(DEFAULT_LEASE_CHECKPOINT_INTERVAL),
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            listen_zookeeper_urls: Vec::new(),
            client_tls: None,
            peer_tls: None,
            peer_secret_file: None,
            zookeeper_port_optional: false,
            zookeeper: crate::zk::session::ZkConfig::default(),
        }
    }
}

/// A member built from options, before it runs.
pub struct Prepared {
    /// The member.
    pub server: Arc<KvServer>,
    /// Bound client listeners (std, non-blocking), with their URLs and, for `https://` ones,
    /// their TLS.
    pub client_listeners: Vec<(
        String,
        std::net::TcpListener,
        Option<Arc<crate::tls::ServerTls>>,
    )>,
    /// Bound metrics listeners.
    pub metrics_listeners: Vec<(
        String,
        std::net::TcpListener,
        Option<Arc<crate::tls::ServerTls>>,
    )>,
    /// Bound ZooKeeper listeners, with their TLS for `tls://` ones.
    pub zookeeper_listeners: Vec<(
        String,
        std::net::TcpListener,
        Option<Arc<crate::tls::ServerTls>>,
    )>,
    /// ZooKeeper's settings.
    pub zookeeper: crate::zk::session::ZkConfig,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").finish_non_exhaustive()
    }
}

fn bind(url: &str, what: &str) -> Result<std::net::TcpListener, String> {
    let addr = cluster::parse_url(url).map_err(|e| format!("{what}: {e}"))?;
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen for {what} on {url}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

/// Validates the options, binds every listener and starts the member.
pub fn prepare(o: &ServeOptions) -> Result<Prepared, String> {
    if o.heartbeat.is_zero() || o.election_timeout < o.heartbeat * 5 {
        return Err(format!(
            "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms)",
            o.election_timeout.as_millis(),
            o.heartbeat.as_millis()
        ));
    }
    if o.max_request_bytes == 0 || o.max_request_bytes > 64 << 20 {
        return Err("--max-request-bytes must be in 1..=64 MiB".into());
    }
    let initial = if o.initial_cluster.is_empty() {
        format!(
            "{}={}",
            o.name,
            o.initial_advertise_peer_urls.join(&format!(",{}=", o.name))
        )
    } else {
        o.initial_cluster.clone()
    };
    let members = cluster::parse_initial_cluster(&initial, &o.initial_cluster_token)?;
    let me = members.iter().find(|m| m.name == o.name).ok_or_else(|| {
        format!(
            "--initial-cluster has no member named {:?} (--name); it lists {}",
            o.name,
            members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let mut mine = o.initial_advertise_peer_urls.clone();
    mine.sort();
    let mut listed = me.peer_urls.clone();
    listed.sort();
    if mine != listed {
        return Err(format!(
            "--initial-advertise-peer-urls {:?} do not match --initial-cluster's {:?} for {}",
            o.initial_advertise_peer_urls, me.peer_urls, o.name
        ));
    }
    let peer_security = Arc::new(peer_security(o, &members)?);
    let recorded = DataDirIdentity::read(&o.data_dir)?;
    let (members, me_id, cluster_id) = match recorded {
        // A member that joined restarts from its data: the record says who it is and whom it
        // started with, whatever members are up now (etcd ignores the flag on a restart too).
        Some(r) if o.join_existing && !r.members.is_empty() => {
            tracing::info!(
                member = format_args!("{:016x}", r.member),
                "restarting from the data directory; --initial-cluster-state existing is ignored"
            );
            (named(r.members, &members), r.member, r.cluster)
        }
        _ if o.join_existing => join(&members, me, &peer_security)?,
        _ => {
            let cluster_id = cluster::cluster_id(&members, &o.initial_cluster_token);
            let id = me.id;
            (members, id, cluster_id)
        }
    };
    let identity = DataDirIdentity {
        cluster: cluster_id,
        member: me_id,
        members: members.clone(),
    };
    identity.claim(&o.data_dir)?;
    if let Some(w) = &o.wal_dir {
        identity.claim(w).map_err(|e| format!("--wal-dir: {e}"))?;
    }
    let peer_listener = bind(
        o.listen_peer_urls
            .first()
            .ok_or("--listen-peer-urls is empty")?,
        "peers",
    )?;
    peer_listener
        .set_nonblocking(false)
        .map_err(|e| e.to_string())?;
    let client_tls = match &o.client_tls {
        Some(t) => Some(Arc::new(crate::tls::ServerTls::new(t.clone())?)),
        None => None,
    };
    let mut client_listeners = Vec::new();
    for u in &o.listen_client_urls {
        let tls = match u.strip_prefix("https://") {
            Some(rest) => {
                let tls = client_tls.clone().ok_or_else(|| {
                    format!("{u}: an https:// client URL needs --cert-file and --key-file, or --auto-tls")
                })?;
                let plain = format!("http://{rest}");
                client_listeners.push((u.clone(), bind(&plain, "clients")?, Some(tls)));
                continue;
            }
            None => None,
        };
        client_listeners.push((u.clone(), bind(u, "clients")?, tls));
    }
    let mut metrics_listeners = Vec::new();
    for u in &o.listen_metrics_urls {
        // https:// metrics URLs are served with the client port's certificate, as etcd does.
        match u.strip_prefix("https://") {
            Some(rest) => {
                let tls = client_tls.clone().ok_or_else(|| {
                    format!("{u}: an https:// metrics URL needs --cert-file and --key-file, or --auto-tls")
                })?;
                let plain = format!("http://{rest}");
                metrics_listeners.push((u.clone(), bind(&plain, "metrics")?, Some(tls)));
            }
            None => metrics_listeners.push((u.clone(), bind(u, "metrics")?, None)),
        }
    }
    let mut zookeeper_listeners = Vec::new();
    for u in &o.listen_zookeeper_urls {
        // ZooKeeper addresses are `host:port` (or `tls://host:port`, ZooKeeper's
        // secureClientPort, with the client port's certificate); the parser takes them as URLs.
        let (hostport, tls) = match u.strip_prefix("tls://") {
            Some(rest) => {
                let tls = client_tls.clone().ok_or_else(|| {
                    format!("{u}: a tls:// ZooKeeper address needs --cert-file and --key-file, or --auto-tls")
                })?;
                (rest, Some(tls))
            }
            None => (u.strip_prefix("tcp://").unwrap_or(u), None),
        };
        let url = format!("http://{hostport}");
        match bind(&url, "ZooKeeper clients") {
            Ok(l) => zookeeper_listeners.push((u.clone(), l, tls)),
            Err(e) if o.zookeeper_port_optional => {
                tracing::warn!(
                    error = %e,
                    "ZooKeeper clients are not served on {u} (pass --listen-zookeeper-urls to choose an address); etcd clients are"
                );
            }
            Err(e) => return Err(e),
        }
    }
    let mut peers = BTreeMap::new();
    for m in &members {
        let url = m.peer_urls.first().expect("a member has a URL");
        peers.insert(m.id, cluster::parse_url(url)?);
    }
    let mut node = NodeConfig::new(me_id, peers, o.data_dir.join("member"));
    node.peer_security = peer_security;
    node.wal_dir = o.wal_dir.clone();
    node.learners = members
        .iter()
        .filter(|m| m.is_learner)
        .map(|m| m.id)
        .collect();
    node.protocol = o.protocol;
    node.tick = o.heartbeat;
    node.election_ticks = (o.election_timeout.as_millis() / o.heartbeat.as_millis()).max(5) as u32;
    node.election_tick_advance = o.initial_election_tick_advance;
    node.wal = o.wal.clone();
    node.backend = o.backend;
    node.cluster_id = cluster_id;
    node.snapshot_count = o.snapshot_count;
    node.snapshot_catchup_entries = o.snapshot_catchup_entries;
    let mut kv = KvConfig::new(node, o.name.clone());
    kv.members = members.clone();
    kv.client_urls = o.advertise_client_urls.clone();
    kv.cluster_token = o.initial_cluster_token.clone();
    kv.max_request_bytes = o.max_request_bytes;
    kv.max_range_response_bytes = o.max_range_response_bytes;
    kv.max_watchers = o.max_watchers;
    kv.max_client_connections = o.max_client_connections;
    if o.quota_backend_bytes > 0 {
        kv.quota_backend_bytes = o.quota_backend_bytes;
    }
    kv.max_txn_ops = o.max_txn_ops;
    kv.strict_reconfig_check = o.strict_reconfig_check;
    kv.auth_token_ttl = o.auth_token_ttl;
    kv.bcrypt_cost = o.bcrypt_cost;
    kv.auto_compaction = o.auto_compaction;
    kv.client_port = o.client_port;
    kv.corrupt_check = o.corrupt_check;
    kv.lease_checkpoint_interval = o.lease_checkpoint_interval;
    kv.disk_reserve_bytes = o.disk_reserve_bytes;
    kv.checkpoint_entries = o.backend_batch_limit.max(1);
    kv.checkpoint_interval = o.backend_batch_interval.max(Duration::from_millis(1));
    let server = KvServer::start(kv, peer_listener)?;
    Ok(Prepared {
        server,
        client_listeners,
        metrics_listeners,
        zookeeper_listeners,
        zookeeper: o.zookeeper.clone(),
    })
}

/// How this member's peer connections are secured: TLS when its peer URLs are `https://`
/// (every peer URL must share one scheme), and the membership proof keyed by the secret of
/// `--peer-secret-file` or else of the cluster token.
fn peer_security(o: &ServeOptions, members: &[Member]) -> Result<PeerSecurity, String> {
    let listen = o
        .listen_peer_urls
        .first()
        .ok_or("--listen-peer-urls is empty")?;
    let https = listen.starts_with("https://");
    let urls = o
        .listen_peer_urls
        .iter()
        .chain(&o.initial_advertise_peer_urls)
        .chain(members.iter().flat_map(|m| &m.peer_urls));
    for u in urls {
        if u.starts_with("https://") != https {
            return Err(format!(
                "peer URLs mix http:// and https:// ({listen} and {u}): a cluster's peers are                  all TLS or all plain"
            ));
        }
    }
    let secret = match &o.peer_secret_file {
        Some(path) => PeerSecret::from_file(path)?,
        None => {
            if members.len() > 1 && o.initial_cluster_token == DEFAULT_CLUSTER_TOKEN {
                tracing::warn!(
                    "peers prove membership with a secret derived from the default cluster \
                     token, which anyone knows: give every member an unguessable \
                     --initial-cluster-token or a --peer-secret-file"
                );
            }
            PeerSecret::from_token(&o.initial_cluster_token)
        }
    };
    match (&o.peer_tls, https) {
        (Some(t), true) => PeerSecurity::tls(secret, t.clone()),
        (None, true) => Err(format!(
            "{listen}: https:// peer URLs need --peer-cert-file and --peer-key-file, or              --peer-auto-tls"
        )),
        (Some(_), false) => {
            tracing::warn!(
                "peer TLS flags are set but the peer URLs are http://: peers speak plain TCP"
            );
            Ok(PeerSecurity::plain(secret))
        }
        (None, false) => Ok(PeerSecurity::plain(secret)),
    }
}

/// Learns from the running members (listed in `--initial-cluster` besides this one) the
/// cluster id, the membership in effect and this member's id (the one added with these peer
/// URLs).
fn join(
    listed: &[Member],
    me: &Member,
    security: &PeerSecurity,
) -> Result<(Vec<Member>, u64, u64), String> {
    let others: Vec<String> = listed
        .iter()
        .filter(|m| m.name != me.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (cluster_id, members) = cluster::fetch_info(security, &others, deadline)?;
    let sorted = |urls: &[String]| {
        let mut u = urls.to_vec();
        u.sort();
        u
    };
    let mine = sorted(&me.peer_urls);
    let id = members
        .iter()
        .find(|m| sorted(&m.peer_urls) == mine)
        .map(|m| m.id)
        .ok_or_else(|| {
            format!(
                "the running cluster has no member with peer URLs {:?}; add it first with \
                 `etcdctl member add {} --peer-urls={}`",
                me.peer_urls,
                me.name,
                me.peer_urls.join(",")
            )
        })?;
    Ok((named(members, listed), id, cluster_id))
}

/// `members`, each given the name `listed` (the flags) gives its peer URLs.
fn named(mut members: Vec<Member>, listed: &[Member]) -> Vec<Member> {
    let sorted = |urls: &[String]| {
        let mut u = urls.to_vec();
        u.sort();
        u
    };
    for m in &mut members {
        if let Some(named) = listed
            .iter()
            .find(|x| sorted(&x.peer_urls) == sorted(&m.peer_urls))
        {
            m.name = named.name.clone();
        }
    }
    members
}

/// Resolves once this member learns it was removed from the cluster: when its own membership
/// no longer lists it, or it has had no leader for a while, a majority of the other members
/// answer and none of them lists it. Its own membership alone is not enough: a member that
/// just joined may install a snapshot taken before it was added, and learns of its addition
/// only from the entries after.
async fn removed(server: Arc<KvServer>) {
    let mut leaderless_secs = 0u32;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let st = server.node().state();
        if st.leader() != 0 {
            leaderless_secs = 0;
        } else {
            leaderless_secs += 1;
        }
        if !st.removed() && leaderless_secs < 3 {
            continue;
        }
        let (me, cluster) = (server.member_id(), server.cluster_id());
        let urls: Vec<String> = server
            .members()
            .into_iter()
            .filter(|m| m.id != me)
            .flat_map(|m| m.peer_urls)
            .collect();
        let asked = urls.len();
        let security = Arc::clone(server.node().outbound().security());
        let mut answers = Vec::new();
        for u in &urls {
            let Ok(addr) = cluster::parse_url(u) else {
                continue;
            };
            let query =
                crate::transport::tcp::query_info(&security, addr, Duration::from_secs(1), 1 << 20);
            if let Some((c, ms)) = query.await.ok().and_then(|b| cluster::decode_info(&b).ok()) {
                if c == cluster {
                    answers.push((c, ms));
                }
            }
        }
        // A majority of the others must answer, and none may list this member (one that lags
        // may not know it joined yet).
        if answers.len() * 2 > asked && answers.iter().all(|(_, ms)| !ms.iter().any(|m| m.id == me))
        {
            return;
        }
    }
}

/// etcd's leadership transfer on shutdown: a Raft leader with other voters hands leadership to
/// the voter that holds the most of its log (among those heard from within an election
/// timeout) and waits, bounded, for it to take over, so clients find a leader at once instead
/// of after an election timeout. ZAB has no transfer (neither has ZooKeeper); a single voter
/// has no one to hand over to.
async fn hand_over_leadership(server: &KvServer) {
    let node = server.node();
    if !node.state().is_leader() || node.state().removed() {
        return;
    }
    let voters: Vec<u64> = server
        .members()
        .iter()
        .filter(|m| !m.is_learner && m.id != server.member_id())
        .map(|m| m.id)
        .collect();
    let timeout = server.election_timeout();
    let Ok((_, peers)) = node.peers().await else {
        return;
    };
    let Some(target) = peers
        .iter()
        .filter(|p| voters.contains(&p.id) && p.heard_ago.is_some_and(|a| a < timeout))
        .max_by_key(|p| (p.matched.unwrap_or(0), std::cmp::Reverse(p.heard_ago)))
        .map(|p| p.id)
    else {
        return;
    };
    match node.transfer_leader(target).await {
        Ok(()) => {}
        Err(NodeError::Propose(ProposeError::Unsupported(_))) => return,
        Err(e) => {
            tracing::warn!(to = %format!("{target:016x}"), error = %e, "leadership transfer on shutdown failed");
            return;
        }
    }
    let deadline = tokio::time::Instant::now() + timeout * 2;
    while tokio::time::Instant::now() < deadline {
        let leader = node.state().leader();
        if leader != 0 && leader != server.member_id() {
            tracing::info!(to = %format!("{leader:016x}"), "transferred leadership on shutdown");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(to = %format!("{target:016x}"), "leadership transfer on shutdown timed out");
}

/// Runs a prepared member until `shutdown` resolves.
pub fn run(
    p: Prepared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let handle = p.server.node().handle();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let _guard = handle.enter();
    // As etcd: peers are served and the protocol runs, but no client is served until the key
    // space matches the peers'.
    if p.server.config().corrupt_check.initial {
        handle.block_on(crate::etcd::corrupt::initial_check(&p.server))?;
    }
    for (url, l, tls) in p.client_listeners {
        let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
        let mut rx = stop_rx.clone();
        let server = Arc::clone(&p.server);
        tracing::info!(%url, "serving clients");
        tasks.push(handle.spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::etcd::serve(server, l, tls, stop).await {
                tracing::error!(error = %e, "client server failed");
            }
        }));
    }
    let every = p.server.config().corrupt_check.interval;
    if !every.is_zero() {
        let mut rx = stop_rx.clone();
        let server = Arc::clone(&p.server);
        tasks.push(handle.spawn(async move {
            tokio::select! {
                () = crate::etcd::corrupt::periodic(server, every) => {}
                _ = rx.wait_for(|s| *s) => {}
            }
        }));
    }
    for (url, l, tls) in p.metrics_listeners {
        let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
        let mut rx = stop_rx.clone();
        let server = Arc::clone(&p.server);
        tracing::info!(%url, "serving metrics");
        tasks.push(handle.spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            crate::etcd::metrics::serve(server, l, tls, stop).await;
        }));
    }
    let zk = Arc::new(p.server.zk_context(p.zookeeper.clone()));
    {
        // Every member runs the reaper; only the leader's proposes.
        let (zk, reapable) = (Arc::clone(&zk), Arc::clone(p.server.zk_reapable()));
        let mut rx = stop_rx.clone();
        let every = zk.cfg.reap_interval;
        tasks.push(handle.spawn(async move {
            tokio::select! {
                () = crate::zk::reaper::run(zk, reapable, every) => {}
                _ = rx.wait_for(|s| *s) => {}
            }
        }));
    }
    if !p.zookeeper_listeners.is_empty() {
        let relay = Arc::new(crate::etcd::internal::TouchRelayClient {
            server: Arc::downgrade(&p.server),
        });
        let zk = Arc::clone(&zk);
        let mut rx = stop_rx.clone();
        tasks.push(handle.spawn(async move {
            tokio::select! {
                () = crate::zk::session::relay_touches(zk, relay) => {}
                _ = rx.wait_for(|s| *s) => {}
            }
        }));
    }
    for (url, l, tls) in p.zookeeper_listeners {
        let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
        let mut rx = stop_rx.clone();
        let ctx = Arc::clone(&zk);
        tracing::info!(%url, "serving ZooKeeper clients");
        tasks.push(handle.spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            crate::zk::port::serve(ctx, l, tls, stop).await;
        }));
    }
    let gone = removed(Arc::clone(&p.server));
    let was_removed = handle.block_on(async {
        tokio::select! {
            () = shutdown => false,
            () = gone => true,
        }
    });
    if !was_removed {
        handle.block_on(hand_over_leadership(&p.server));
    }
    let _ = stop_tx.send(true);
    handle.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    });
    if was_removed {
        return Err("this member was removed from the cluster; it stops".into());
    }
    Ok(())
}
