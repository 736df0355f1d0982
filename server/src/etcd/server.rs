//! The running member that serves etcd's model (KV, leases, watches, auth, membership) on
//! the replicated key space: it checks and prepares etcd's requests (alarms, quota, secrets)
//! before the member core's [`Proposer`] carries them through the log, hands requests that
//! need the leader (passwords to check or hash) to it over a member-to-member call, and starts
//! the core's lease clock (revoking through etcd's requests) and roster tasks.
//!
//! Requests that change state are proposed as log entries ([`InternalRequest`]) tagged with a
//! random per-process id; the apply thread applies committed entries in order to the MVCC
//! store in the B+tree (one write transaction per batch, without fsync; a durable checkpoint
//! every `checkpoint_entries` entries or `checkpoint_interval`, so a restart replays only the
//! log tail) and hands each result to the waiting proposer. Linearizable reads wait for a read
//! index from the protocol and for apply to reach it; serializable reads read the local tree.
//!
//! The leader also runs the lease clock (expired leases are revoked through the log) and, when
//! configured, the automatic compactor ([`super::compactor`]). It never applies a request
//! itself: the apply thread does, through [`super::apply`].

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message;
use quorumkv_replication::NodeId;

use super::error::KvError;
use super::rbac::{AuthStore, Caller};
use super::{apply, compactor, corrupt};
use crate::member::core::{Core, CoreLimits};
use crate::member::envelope::now_ms;
use crate::member::identity::Member;
use crate::member::machine;
pub use crate::member::open_db;
use crate::member::pending::Answer;
use crate::member::proposer::{Failed, Proposer};
use crate::member::{lease_clock, roster};
use crate::zk::apply::ZkApplier;
use crate::zk::watches::Watches;

use crate::mvcc::Mvcc;
use crate::node::{Node, NodeConfig, NodeError, StartOptions};
use crate::pb::etcdserverpb as pb;
use crate::pb::quorumkv::{InternalRequest, internal_request::Request};

/// What applying one request produced.
#[derive(Debug, Clone)]
pub enum Applied {
    /// A put.
    Put(pb::PutResponse),
    /// A delete.
    DeleteRange(pb::DeleteRangeResponse),
    /// A transaction.
    Txn(pb::TxnResponse),
    /// A compaction; the revision then.
    Compact(i64),
    /// A lease grant: id and TTL.
    LeaseGrant(i64, i64),
    /// Anything without a payload.
    Done,
}

/// What the apply thread answers an etcd request with: its result and the revision after it.
pub type EtcdAnswer = Result<(Applied, i64), KvError>;

/// State shared by etcd's services, its applier and the lease clock.
pub struct Shared {
    /// What every client API of the member shares.
    pub core: Arc<Core>,
    /// Raised alarms: (member, alarm type).
    pub alarms: Mutex<BTreeSet<(u64, i32)>>,
    /// Users, roles and this member's tokens.
    pub auth: AuthStore,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether `key` is within the longest key the store takes: the tree's key limit less
    /// 19 bytes, counting each zero byte twice.
    pub fn key_fits(&self, key: &[u8]) -> bool {
        let escaped = key.len() + key.iter().filter(|b| **b == 0).count();
        escaped + 19 <= self.core.mvcc.db().key_bytes_max()
    }
}

/// How the key space is set up.
#[derive(Debug, Clone)]
pub struct KvConfig {
    /// The node underneath (its data dir holds the log; the tree goes in `data_dir/db`).
    pub node: NodeConfig,
    /// This member's name.
    pub name: String,
    /// Initial members (id, name, peer URLs).
    pub members: Vec<Member>,
    /// This member's advertised client URLs.
    pub client_urls: Vec<String>,
    /// The cluster token (etcd `--initial-cluster-token`), salted into new member ids.
    pub cluster_token: String,
    /// Largest request accepted (etcd `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Largest Range response served, keys and values (`--max-range-response-bytes`).
    pub max_range_response_bytes: usize,
    /// Watchers this member holds at once (`--max-watchers`).
    pub max_watchers: usize,
    /// Client connections this member holds at once (`--max-client-connections`).
    pub max_client_connections: usize,
    /// Backend size at which the NOSPACE alarm is raised (etcd `--quota-backend-bytes`).
    pub quota_backend_bytes: u64,
    /// Most operations per transaction branch (etcd `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// Durable checkpoint of the tree every this many applied entries...
    pub checkpoint_entries: u64,
    /// ... or this often.
    pub checkpoint_interval: Duration,
    /// Bytes of recent events kept in memory for watchers.
    pub watch_ring_bytes: usize,
    /// Watchers allowed on one stream.
    pub watchers_per_stream_max: usize,
    /// Requests waiting for apply before new ones are refused.
    pub pending_max: usize,
    /// How long a request may wait for commit and apply.
    pub request_timeout: Duration,
    /// Refuse membership changes that could cost the cluster its quorum (etcd's
    /// `--strict-reconfig-check`).
    pub strict_reconfig_check: bool,
    /// How long a simple token lives after its last use (etcd's `--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// bcrypt cost of stored password hashes (etcd's `--bcrypt-cost`).
    pub bcrypt_cost: u32,
    /// History the leader compacts away on its own (etcd's `--auto-compaction-mode` and
    /// `--auto-compaction-retention`); `None` leaves compaction to clients.
    pub auto_compaction: Option<compactor::Retention>,
    /// The client port's connections and streams (keepalive pings, stream limits, watch
    /// progress notifications).
    pub client_port: crate::etcd::ClientPortConfig,
    /// etcd's corruption checks between members.
    pub corrupt_check: corrupt::CorruptCheckConfig,
    /// How often the leader logs leases' remaining TTLs, so a leader change does not give
    /// every lease a full TTL again (etcd's lease checkpoints); `None`: never.
    pub lease_checkpoint_interval: Option<Duration>,
    /// Free bytes under the data directory below which new data is refused with a NOSPACE
    /// alarm, before the disk itself fills; 0: no such check.
    pub disk_reserve_bytes: u64,
}

impl KvConfig {
    /// etcd's defaults around `node`.
    pub fn new(node: NodeConfig, name: String) -> KvConfig {
        KvConfig {
            node,
            name,
            members: Vec::new(),
            client_urls: Vec::new(),
            cluster_token: "etcd-cluster".into(),
            max_request_bytes: 1536 * 1024,
            max_range_response_bytes: 1 << 30,
            max_watchers: 100_000,
            max_client_connections: 10_000,
            quota_backend_bytes: 2 << 30,
            max_txn_ops: 128,
            checkpoint_entries: 10_000,
            checkpoint_interval: Duration::from_millis(100),
            watch_ring_bytes: 64 << 20,
            watchers_per_stream_max: 10_000,
            pending_max: 65_536,
            request_timeout: Duration::from_secs(7),
            strict_reconfig_check: true,
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: bcrypt::DEFAULT_COST,
            auto_compaction: None,
            client_port: crate::etcd::ClientPortConfig::default(),
            corrupt_check: corrupt::CorruptCheckConfig::default(),
            lease_checkpoint_interval: Some(crate::serve::DEFAULT_LEASE_CHECKPOINT_INTERVAL),
            disk_reserve_bytes: crate::serve::DEFAULT_DISK_RESERVE_BYTES,
        }
    }
}

/// Member-to-member call connections accepted but not yet taken up by the call server.
const CALL_CONNECTIONS_QUEUED: usize = 64;

/// A running member of the replicated key space.
pub struct KvServer {
    proposer: Arc<Proposer>,
    /// ZooKeeper's watches, fired by its applier.
    zk_watches: Arc<Watches>,
    zk_reapable: Arc<crate::zk::reaper::Reapable>,
    shared: Arc<Shared>,
    cfg: KvConfig,
    cluster_id: u64,
    channels: Mutex<HashMap<u64, tonic::transport::Channel>>,
    metrics: Arc<crate::etcd::metrics::Metrics>,
    /// Password hashings and checks allowed at once (bcrypt is slow on purpose).
    bcrypt_slots: tokio::sync::Semaphore,
    /// Failed logins per user, and the decoy hash of unknown users.
    logins: super::logins::Logins,
    /// Free space under the data directory, against `cfg.disk_reserve_bytes`.
    disk: Arc<crate::member::disk_space::DiskSpace>,
}

impl std::fmt::Debug for KvServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvServer")
            .field("id", &self.cfg.node.id)
            .finish_non_exhaustive()
    }
}

impl KvServer {
    /// Opens the tree, starts the apply thread and the node, and (once a leader is known)
    /// publishes this member's client URLs through the log.
    pub fn start(
        cfg: KvConfig,
        peer_listener: std::net::TcpListener,
    ) -> Result<Arc<KvServer>, String> {
        let db_path: PathBuf = cfg.node.data_dir.join("db");
        quorumkv_wal::io::create_dir_all_durable(&cfg.node.data_dir)
            .map_err(|e| format!("data dir {}: {e}", cfg.node.data_dir.display()))?;
        let db = crate::member::open_db_with(&db_path, cfg.node.wal.unsafe_no_fsync)
            .map_err(|e| format!("opening {}: {e}", db_path.display()))?;
        let mvcc = Mvcc::open(db).map_err(|e| format!("opening {}: {e}", db_path.display()))?;
        // etcd's minimum lease TTL: one and a half election timeouts, rounded up to seconds.
        let election = cfg.node.tick * cfg.node.election_ticks;
        let min_ttl = ((election.as_millis() as u64 * 3 / 2).div_ceil(1000)) as i64;
        let limits = CoreLimits {
            lease_ttl_min_secs: min_ttl,
            watch_ring_bytes: cfg.watch_ring_bytes,
            pending_max: cfg.pending_max,
        };
        let core = Core::open(mvcc, &cfg.members, limits)
            .map_err(|e| format!("loading the key space: {e}"))?;
        let applied = core.applied();
        let shared = Arc::new(Shared {
            core: Arc::new(core),
            alarms: Mutex::new(BTreeSet::new()),
            auth: AuthStore::new(cfg.auth_token_ttl),
        });
        apply::load(&shared).map_err(|e| format!("loading the key space: {e}"))?;
        let zk_reapable = Arc::new(crate::zk::reaper::Reapable::default());
        ZkApplier::load(&shared.core, &zk_reapable)
            .map_err(|e| format!("loading ZooKeeper's sessions: {e}"))?;
        let revision = shared
            .core
            .mvcc
            .snapshot()
            .revision()
            .map_err(|e| e.to_string())?;
        let zk_watches = Arc::new(Watches::new(revision));
        let appliers = machine::Appliers {
            base: Box::new(apply::EtcdApplier::new(Arc::clone(&shared))),
            zookeeper: Box::new(ZkApplier::new(
                Arc::clone(&shared.core),
                Arc::clone(&zk_watches),
                Arc::clone(&zk_reapable),
            )),
        };
        let machine = machine::KvMachine::start(
            Arc::clone(&shared.core),
            appliers,
            cfg.checkpoint_entries,
            cfg.checkpoint_interval,
            format!("apply-{}", cfg.node.id),
        )?;
        let cluster_id = cfg.node.cluster_id;
        let info_roster = Arc::clone(&shared.core.roster);
        // Member-to-member calls arrive on the peer port, identified by its handshake.
        let (calls_tx, calls_rx) = tokio::sync::mpsc::channel(CALL_CONNECTIONS_QUEUED);
        let node = Node::start_with(
            cfg.node.clone(),
            peer_listener,
            StartOptions {
                applied,
                machine: Some(Arc::new(machine)),
                info: Some(Arc::new(move |conf: &quorumkv_replication::Conf| {
                    let members = info_roster.current(conf);
                    crate::member::identity::encode_info(cluster_id, &members)
                })),
                calls: Some(calls_tx),
            },
        )?;
        let seed = now_ms() ^ (u64::from(std::process::id()) << 32) ^ cfg.node.id.rotate_left(17);
        let proposer = Arc::new(Proposer::new(
            node,
            Arc::clone(&shared.core.pending),
            seed,
            cfg.request_timeout,
            cfg.node.tick * cfg.node.election_ticks,
            // Room for the envelope around a request of the largest size taken.
            cfg.max_request_bytes + 4096,
        ));
        let disk = Arc::new(crate::member::disk_space::DiskSpace::new(
            &cfg.node.data_dir,
            cfg.disk_reserve_bytes,
        ));
        let server = Arc::new(KvServer {
            disk,
            proposer,
            zk_watches,
            zk_reapable,
            shared,
            cfg,
            cluster_id,
            channels: Mutex::new(HashMap::new()),
            metrics: Arc::default(),
            bcrypt_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            logins: Default::default(),
        });
        let handle = server.node().handle();
        handle.spawn(crate::etcd::serve_calls(Arc::clone(&server), calls_rx));
        let s = Arc::clone(&server);
        handle.spawn(async move {
            let (name, urls) = (s.cfg.name.clone(), s.cfg.client_urls.clone());
            roster::publish_own(
                &s.proposer,
                &s.shared.core.roster,
                s.member_id(),
                name,
                urls,
            )
            .await;
        });
        let s = Arc::clone(&server);
        handle.spawn(async move {
            roster::sync_peers(s.node(), Arc::clone(&s.shared.core.roster)).await
        });
        let s = Arc::downgrade(&server);
        let checkpointer = Arc::downgrade(&server);
        handle.spawn(lease_clock::run(
            Arc::clone(server.node().state()),
            Arc::clone(&server.shared.core),
            move |id| {
                let Some(s) = s.upgrade() else { return };
                // A ZooKeeper session closes through ZooKeeper's applier, ephemerals and all.
                if crate::zk::session::stored(&s.shared.core, id).is_some() {
                    let ctx = s.zk_context(crate::zk::session::ZkConfig::default());
                    tokio::spawn(async move {
                        if let Err(e) = crate::zk::session::close(&ctx, id).await {
                            tracing::debug!(session = id, error = %e, "expiring a session");
                        }
                    });
                    return;
                }
                tokio::spawn(async move {
                    // Only a leader a quorum still follows revokes (etcd #12528): a leader cut
                    // off may have missed the keep-alives its successor answered.
                    if let Err(e) = s.read_barrier().await {
                        tracing::debug!(lease = id, error = %e, "not revoking: leadership unconfirmed");
                        return;
                    }
                    if !s.node().state().is_leader() {
                        return;
                    }
                    let r = s
                        .propose(Request::LeaseRevoke(pb::LeaseRevokeRequest { id }))
                        .await;
                    if let Err(e) = r
                        && e != KvError::LeaseNotFound
                    {
                        tracing::debug!(lease = id, error = %e, "revoking an expired lease");
                    }
                });
            },
            server.cfg.lease_checkpoint_interval,
            move |batch, order| {
                let Some(s) = checkpointer.upgrade() else {
                    return;
                };
                // ZooKeeper sessions are renewed by their own pings, which clear nothing:
                // they keep a full timeout across leader changes, as in ZooKeeper.
                let checkpoints = batch
                    .into_iter()
                    .filter(|&(id, _)| crate::zk::session::stored(&s.shared.core, id).is_none())
                    .map(|(id, remaining_ttl)| pb::LeaseCheckpoint { id, remaining_ttl })
                    .collect::<Vec<_>>();
                if checkpoints.is_empty() {
                    return;
                }
                tokio::spawn(async move {
                    // Test builds: `return(ms)` holds the batch back that long before it is
                    // handed over, `return` drops it.
                    if crate::FAILPOINTS_COMPILED
                        && let Some(hold) = fail::eval("lease::checkpoint_handover", |ms| {
                            ms.and_then(|ms| ms.parse::<u64>().ok())
                        })
                    {
                        let Some(ms) = hold else { return };
                        tracing::warn!(hold_ms = ms, "failpoint: lease checkpoints held back");
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    let r = s
                        .propose_in_order(
                            Request::LeaseCheckpoint(pb::LeaseCheckpointRequest { checkpoints }),
                            order,
                        )
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "checkpointing leases");
                    }
                });
            },
        ));
        if let Some(retention) = server.cfg.auto_compaction {
            handle.spawn(compactor::run(Arc::clone(&server), retention));
        }
        Ok(server)
    }

    /// What a ZooKeeper port needs of this member.
    pub fn zk_context(&self, cfg: crate::zk::session::ZkConfig) -> crate::zk::session::ZkContext {
        crate::zk::session::ZkContext {
            proposer: Arc::clone(&self.proposer),
            core: Arc::clone(&self.shared.core),
            watches: Arc::clone(&self.zk_watches),
            cfg,
            member_id: self.member_id(),
            touched: Default::default(),
            may_add_data: self.may_add_data(),
        }
    }

    /// Whether a write that adds data may go ahead now: the disk keeps its reserve and no
    /// NOSPACE alarm is raised (what the ZooKeeper port asks; etcd's writes also raise the
    /// alarm).
    fn may_add_data(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let disk = Arc::clone(&self.disk);
        let alarms = Arc::clone(&self.shared);
        Arc::new(move || {
            let raised = alarms
                .alarms
                .lock()
                .iter()
                .any(|(_, a)| *a == pb::AlarmType::Nospace as i32);
            !raised && !disk.short()
        })
    }

    /// The containers and TTL nodes ZooKeeper's applier keeps for the reaper.
    pub fn zk_reapable(&self) -> &Arc<crate::zk::reaper::Reapable> {
        &self.zk_reapable
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &Arc<crate::etcd::metrics::Metrics> {
        &self.metrics
    }

    /// The node underneath.
    pub fn node(&self) -> &Node {
        self.proposer.node()
    }

    /// The member core's proposer.
    pub fn proposer(&self) -> &Arc<Proposer> {
        &self.proposer
    }

    /// Shared state (key space, leases, hub, members).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The configuration.
    pub fn config(&self) -> &KvConfig {
        &self.cfg
    }

    /// This member's id.
    pub fn member_id(&self) -> NodeId {
        self.cfg.node.id
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.cfg.node.id,
            revision,
            raft_term: self.node().state().term(),
        }
    }

    /// What a raised alarm refuses a request with, looked up under one lock: CORRUPT refuses
    /// every data request, NOSPACE the writes that add data.
    fn alarm_refusal(&self, data: bool, writes: bool) -> Option<KvError> {
        if !data {
            return None;
        }
        let alarms = self.shared.alarms.lock();
        let raised = |kind: pb::AlarmType| alarms.iter().any(|(_, a)| *a == kind as i32);
        if raised(pb::AlarmType::Corrupt) {
            Some(KvError::Corrupt)
        } else if writes && raised(pb::AlarmType::Nospace) {
            Some(KvError::NoSpace)
        } else {
            None
        }
    }

    /// Whether a CORRUPT alarm is raised: the members' key spaces differ, and data requests
    /// are refused until an operator disarms it (etcd's corrupt applier).
    pub fn corrupt(&self) -> bool {
        self.alarm_refusal(true, false).is_some()
    }

    /// Whether this member has stopped for good: its storage failed (fail-stop) or it was
    /// removed from the cluster.
    pub fn stopped(&self) -> bool {
        self.node().state().stopped() || self.shared.core.pending.stopped()
    }

    /// Physical size of the tree file.
    pub fn db_size_bytes(&self) -> u64 {
        self.shared.core.mvcc.db().stats().file_bytes
    }

    /// Bytes of the tree in use (pages not free).
    pub fn db_in_use_bytes(&self) -> u64 {
        let s = self.shared.core.mvcc.db().stats();
        (s.page_count.saturating_sub(s.free_pages)) * s.page_size as u64
    }

    /// Proposes the members' own request `req` (no user) and waits for its result; on a
    /// follower the request goes to the leader.
    pub async fn propose(&self, req: Request) -> Result<(Applied, i64), KvError> {
        self.propose_as(req, &Caller::default()).await
    }

    /// Proposes `req` for `caller`, whose permissions were checked, and waits for its result;
    /// on a follower the request goes to the leader with the caller's token.
    pub async fn propose_as(
        &self,
        req: Request,
        caller: &Caller,
    ) -> Result<(Applied, i64), KvError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        let mut req = req;
        let r = loop {
            match self.propose_local(req, caller).await {
                Err((KvError::NotLeader, Some(back))) => {
                    match self.forward(back.clone(), caller).await {
                        // The old leader is gone and the request never reached it: wait for the
                        // next leader and go again (safe: nothing was sent).
                        Err(KvError::Forwarded { code, message })
                            if refused_unsent(code, &message) && Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            req = back;
                        }
                        r => break r,
                    }
                }
                // No leader yet (an election is on), or the leader it was handed to never
                // proposed it: nothing will commit, so wait for one and go again.
                Err((KvError::NoLeader | KvError::LeaderChanged, Some(back)))
                    if self.wait_for_leader(deadline) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    req = back;
                }
                Err((e, _)) => break Err(e),
                Ok(r) => break Ok(r),
            }
        };
        if r.is_err() {
            self.metrics
                .proposals_failed
                .fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The protocol's election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.proposer.election_timeout()
    }

    /// Whether this member has known no leader for three election timeouts (see
    /// [`Proposer::leader_lost`]).
    pub fn leader_lost(&self) -> bool {
        self.proposer.leader_lost()
    }

    fn wait_for_leader(&self, deadline: Instant) -> bool {
        self.proposer.wait_for_leader(deadline)
    }

    /// Hands `req` to the leader's `Internal.Propose`, with the caller's token.
    async fn forward(&self, req: Request, caller: &Caller) -> Result<(Applied, i64), KvError> {
        use crate::pb::quorumkv::forward_response::Result as Fr;
        let channel = self.await_leader_channel().await?;
        let mut client = crate::pb::quorumkv::internal_client::InternalClient::new(channel)
            .max_decoding_message_size(self.cfg.max_request_bytes * 4 + (1 << 20));
        let msg = InternalRequest {
            id: 0,
            time_ms: now_ms(),
            request: Some(req),
            ..InternalRequest::default()
        };
        let mut request = tonic::Request::new(msg);
        request.set_timeout(self.cfg.request_timeout);
        crate::etcd::pass_token(caller, request.metadata_mut());
        let resp = client.propose(request).await?.into_inner();
        let applied = match resp.result {
            Some(Fr::Put(p)) => Applied::Put(p),
            Some(Fr::DeleteRange(d)) => Applied::DeleteRange(d),
            Some(Fr::Txn(t)) => Applied::Txn(t),
            Some(Fr::LeaseGrant(g)) => Applied::LeaseGrant(g.id, g.ttl),
            Some(Fr::Done(_)) | None => Applied::Done,
        };
        Ok((applied, resp.revision))
    }

    /// A channel to the leader, waiting (bounded by the request timeout) while no leader is
    /// known or its client URLs have not reached this member yet.
    pub async fn await_leader_channel(&self) -> Result<tonic::transport::Channel, KvError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        loop {
            match self.leader_channel() {
                Err(KvError::NoLeader) if self.wait_for_leader(deadline) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                r => return r,
            }
        }
    }

    /// etcd's HashKV: a hash of every stored version up to `revision` (0: the current one),
    /// with the compaction point it starts from.
    pub fn hash_kv(&self, revision: i64) -> Result<pb::HashKvResponse, KvError> {
        let snap = self.shared.core.mvcc.snapshot();
        let (hash, compact_revision, hash_revision) = snap.hash(revision)?;
        Ok(pb::HashKvResponse {
            header: Some(self.header(snap.revision()?)),
            hash,
            compact_revision,
            hash_revision,
        })
    }

    /// [`KvServer::hash_kv`] on a blocking thread: the hash reads the whole history, which
    /// must not hold up a runtime worker.
    pub async fn hash_kv_blocking(
        self: &Arc<Self>,
        revision: i64,
    ) -> Result<pb::HashKvResponse, KvError> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.hash_kv(revision))
            .await
            .map_err(|e| KvError::Other(format!("hashing the key space: {e}")))?
    }

    /// A gRPC channel to member `id` over member-to-member call connections on its peer port
    /// (never its client URLs: those are whatever its member row says), made once and kept.
    /// The other end serves the calls of [`crate::etcd::serve_calls`].
    pub fn channel_to_member(&self, id: u64) -> tonic::transport::Channel {
        let mut cache = self.channels.lock();
        if let Some(c) = cache.get(&id) {
            return c.clone();
        }
        let outbound = Arc::clone(self.node().outbound());
        let connector = tower::service_fn(move |_: http::Uri| {
            let outbound = Arc::clone(&outbound);
            async move {
                let stream = outbound.dial_calls(id).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        let ch = tonic::transport::Endpoint::from_static("http://member.calls")
            .connect_timeout(Duration::from_secs(2))
            .connect_with_connector_lazy(connector);
        cache.insert(id, ch.clone());
        ch
    }

    /// A gRPC channel to the current leader (see [`KvServer::channel_to_member`]).
    pub fn leader_channel(&self) -> Result<tonic::transport::Channel, KvError> {
        match self.node().state().leader() {
            0 => Err(KvError::NoLeader),
            leader => Ok(self.channel_to_member(leader)),
        }
    }

    /// Proposes `req` on this member only; `NotLeader` (with the request handed back) when
    /// another member leads.
    pub async fn propose_local(
        &self,
        req: Request,
        caller: &Caller,
    ) -> Result<(Applied, i64), (KvError, Option<Request>)> {
        if let Request::MemberAttributes(_) = req {
            // Recorded only by the member core (see `roster::publish`).
            return Err((
                KvError::Other("member attributes are not a client request".into()),
                None,
            ));
        }
        let req = self.prepare_secret(req).await?;
        let writes = matches!(
            req,
            Request::Put(_) | Request::Txn(_) | Request::LeaseGrant(_)
        );
        let data = writes
            || matches!(
                req,
                Request::DeleteRange(_) | Request::Compaction(_) | Request::LeaseRevoke(_)
            );
        if let Some(e) = self.alarm_refusal(data, writes) {
            return Err((e, None));
        }
        let full = writes && self.disk.short();
        if full {
            tracing::warn!(
                dir = %self.cfg.node.data_dir.display(),
                reserve_bytes = self.disk.reserve_bytes(),
                "free disk space below the reserve: raising NOSPACE and refusing new data"
            );
        }
        if full || writes && self.db_in_use_bytes() > self.cfg.quota_backend_bytes {
            // Raise the alarm for everyone, then refuse.
            let alarm = pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Activate as i32,
                member_id: self.member_id(),
                alarm: pb::AlarmType::Nospace as i32,
            };
            let _ = Box::pin(self.propose(Request::Alarm(alarm))).await;
            return Err((KvError::NoSpace, None));
        }
        let (id, entry, req) = self.entry(req, caller);
        let r = match self.proposer.submit(id, entry).await {
            Ok(ticket) => self.proposer.wait(ticket).await,
            Err(f) => Err(f),
        };
        Self::answer(r).map_err(|(e, never_applied)| (e, req.filter(|_| never_applied)))
    }

    /// Hands `req` to the log while `order` is held, then releases it and waits for the
    /// result: entries handed over under one lock enter the log in the order they took it.
    /// No retries: a member that stopped leading fails the request.
    pub(crate) async fn propose_in_order(
        &self,
        req: Request,
        order: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<(Applied, i64), KvError> {
        let (id, entry, _) = self.entry(req, &Caller::default());
        let submitted = self.proposer.submit(id, entry).await;
        drop(order);
        let r = match submitted {
            Ok(ticket) => self.proposer.wait(ticket).await,
            Err(f) => Err(f),
        };
        Self::answer(r).map_err(|(e, _)| e)
    }

    /// A fresh request id and the log entry carrying `req` for `caller`; `req` comes back,
    /// to be retried elsewhere if it never applies.
    fn entry(&self, req: Request, caller: &Caller) -> (u64, Vec<u8>, Option<Request>) {
        let id = self.proposer.fresh_id();
        let mut msg = InternalRequest {
            id,
            time_ms: now_ms(),
            request: Some(req),
            username: caller.user.clone(),
            auth_revision: caller.revision,
        };
        let entry = msg.encode_to_vec();
        (id, entry, msg.request.take())
    }

    /// The result an entry's answer carries; an error says whether the entry never applied.
    fn answer(r: Result<Answer, Failed>) -> Result<(Applied, i64), (KvError, bool)> {
        match r {
            Ok(answer) => match answer.downcast::<EtcdAnswer>() {
                Ok(answer) => answer.map_err(|e| (e, false)),
                Err(_) => unreachable!("etcd's entries are answered by etcd's applier"),
            },
            Err(Failed {
                error,
                never_applied,
            }) => Err((error.into(), never_applied)),
        }
    }

    /// Keeps passwords out of the log: on the leader, an `Authenticate` has its password
    /// checked against the stored hash and cleared, and a new password is hashed (bcrypt, off
    /// the async workers). A member that does not lead hands the request back untouched, to go
    /// to the leader.
    async fn prepare_secret(&self, req: Request) -> Result<Request, (KvError, Option<Request>)> {
        let secret = match &req {
            // Always checked here, so no path proposes a token without its password.
            Request::Authenticate(_) => true,
            Request::UserAdd(u) => u.hashed_password.is_empty(),
            Request::UserChangePassword(c) => c.hashed_password.is_empty(),
            _ => false,
        };
        if !secret {
            return Ok(req);
        }
        let state = self.node().state();
        if !state.is_leader() {
            let e = if state.leader() == 0 {
                KvError::NoLeader
            } else {
                KvError::NotLeader
            };
            return Err((e, Some(req)));
        }
        let _slot = self
            .bcrypt_slots
            .acquire()
            .await
            .map_err(|_| (KvError::Stopped, None))?;
        let cost = self.cfg.bcrypt_cost;
        let hash_of = |password: String| async move {
            tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
                .await
                .map_err(|e| KvError::Other(e.to_string()))?
                .map_err(|e| KvError::Other(format!("hashing the password: {e}")))
        };
        let prepared = match req {
            Request::Authenticate(mut a) => {
                if !self.shared.auth.state().enabled() {
                    return Err((KvError::AuthNotEnabled, None));
                }
                if !self.logins.may_try(&a.name) {
                    return Err((KvError::TooManyRequests, None));
                }
                let password = std::mem::take(&mut a.password);
                // An unknown user costs one bcrypt check too, so timing tells nobody which
                // names exist; a password past bcrypt's 72 bytes never matches.
                let known = self.shared.auth.password_hash(&a.name);
                let matches = known.is_some()
                    && !a.simple_token.is_empty()
                    && password.len() <= BCRYPT_PASSWORD_BYTES_MAX;
                let decoy = self.logins.decoy();
                let verified = tokio::task::spawn_blocking(move || {
                    let hash = match known {
                        Some(h) => h,
                        None => decoy
                            .get_or_init(|| bcrypt::hash("decoy", cost).unwrap_or_default())
                            .clone(),
                    };
                    bcrypt::verify(password, &hash)
                })
                .await
                .map_err(|e| (KvError::Other(e.to_string()), None))?
                .unwrap_or(false);
                if !(matches && verified) {
                    self.logins.failed(&a.name);
                    return Err((KvError::AuthFailed, None));
                }
                // The log carries the token's digest: whoever reads it cannot use the token.
                a.simple_token = super::rbac::token_digest(&a.simple_token);
                Request::Authenticate(a)
            }
            Request::UserAdd(u) if u.password.len() > BCRYPT_PASSWORD_BYTES_MAX => {
                return Err((KvError::PasswordTooLong, None));
            }
            Request::UserChangePassword(c) if c.password.len() > BCRYPT_PASSWORD_BYTES_MAX => {
                return Err((KvError::PasswordTooLong, None));
            }
            Request::UserAdd(mut u) => {
                if !u.options.as_ref().is_some_and(|o| o.no_password) {
                    u.hashed_password = hash_of(std::mem::take(&mut u.password))
                        .await
                        .map_err(|e| (e, None))?;
                }
                u.password.clear();
                Request::UserAdd(u)
            }
            Request::UserChangePassword(mut c) => {
                c.hashed_password = hash_of(std::mem::take(&mut c.password))
                    .await
                    .map_err(|e| (e, None))?;
                Request::UserChangePassword(c)
            }
            other => other,
        };
        Ok(prepared)
    }

    /// Who presents `token` (see [`AuthStore::caller`]).
    pub fn caller(&self, token: Option<&str>) -> Result<Caller, KvError> {
        self.shared.auth.caller(token)
    }

    /// Checks the caller presenting `token` may make `req`, and returns it stamped with the
    /// auth revision it was checked at. A lease revoke, and a put attaching a lease, also need
    /// write access to every key already attached to that lease (etcd's `checkLeasePuts`).
    pub fn authorize(&self, token: Option<&str>, req: &Request) -> Result<Caller, KvError> {
        let mut caller = self.caller(token)?;
        let auth = self.shared.auth.state();
        auth.check_request(&caller.user, req)?;
        if auth.enabled() {
            for lease in leases_written(req) {
                let keys = self.shared.core.lessor.lock().keys(lease);
                for k in keys {
                    auth.check(&caller.user, &k, &[], super::rbac::Access::Write)?;
                }
            }
        }
        caller.revision = auth.revision();
        Ok(caller)
    }

    /// Checks the caller presenting `token` may read `[key, end)`.
    pub fn authorize_read(
        &self,
        token: Option<&str>,
        key: &[u8],
        end: &[u8],
    ) -> Result<(), KvError> {
        let caller = self.caller(token)?;
        self.shared
            .auth
            .state()
            .check(&caller.user, key, end, super::rbac::Access::Read)
    }

    /// Checks the caller presenting `token` is the administrator.
    pub fn authorize_admin(&self, token: Option<&str>) -> Result<Caller, KvError> {
        let mut caller = self.caller(token)?;
        let auth = self.shared.auth.state();
        auth.check_admin(&caller.user)?;
        caller.revision = auth.revision();
        Ok(caller)
    }

    /// Waits until everything committed before the call is applied here (linearizable read
    /// point).
    pub async fn read_barrier(&self) -> Result<(), KvError> {
        Ok(self.proposer.read_barrier().await?)
    }

    /// Waits until apply reaches `index`; fails at once when apply stopped short of it.
    pub async fn wait_applied(&self, index: u64) -> Result<(), KvError> {
        Ok(self.proposer.wait_applied(index).await?)
    }

    /// A fresh lease id no live lease has.
    pub fn new_lease_id(&self) -> i64 {
        loop {
            let id = (self.proposer.fresh_id().wrapping_mul(0x2545_f491_4f6c_dd1d) >> 1) as i64;
            if id > 0 && !self.shared.core.lessor.lock().contains(id) {
                return id;
            }
        }
    }

    /// Members, in id order.
    pub fn members(&self) -> Vec<Member> {
        self.shared.core.roster.current(&self.node().state().conf())
    }
}

/// Whether a forwarded request failed before any leader could have proposed it: the
/// connection was never made, or the member reached no longer (or not yet) leads.
fn refused_unsent(code: i32, message: &str) -> bool {
    let unavailable = code == tonic::Code::Unavailable as i32;
    (unavailable && (message.contains("connect") || message == KvError::NoLeader.to_string()))
        || (code == tonic::Code::FailedPrecondition as i32
            && message == KvError::NotLeader.to_string())
}

/// Maps a node refusal to what a client sees.
pub fn node_error(e: NodeError) -> KvError {
    crate::member::error::Error::from(e).into()
}

/// The most bytes of a password bcrypt reads; a longer one is refused, not cut short.
const BCRYPT_PASSWORD_BYTES_MAX: usize = 72;

/// The leases whose keys `req` needs write access to: a revoke's, and those its puts attach.
fn leases_written(req: &Request) -> Vec<i64> {
    fn ops(t: &pb::TxnRequest, out: &mut Vec<i64>) {
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(pb::request_op::Request::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
                Some(pb::request_op::Request::RequestTxn(t)) => ops(t, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    match req {
        Request::LeaseRevoke(r) => out.push(r.id),
        Request::Put(p) if p.lease != 0 => out.push(p.lease),
        Request::Txn(t) => ops(t, &mut out),
        _ => {}
    }
    out.sort_unstable();
    out.dedup();
    out
}
