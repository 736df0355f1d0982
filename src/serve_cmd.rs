//! `quorumkv serve`: flags named and defaulted as etcd's, mapped onto the server's options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use quorumkv::server::etcd::ClientPortConfig;
use quorumkv::server::etcd::compactor::Retention;
use quorumkv::server::etcd::corrupt::CorruptCheckConfig;
use quorumkv::server::node::ProtocolKind;
use quorumkv::server::serve::{self, ServeOptions};
use quorumkv::server::zk::session::ZkConfig;
use quorumkv::wal::Backend;

/// Replication protocol choice.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Replication {
    /// Raft.
    Raft,
    /// ZooKeeper Atomic Broadcast.
    Zab,
}

/// WAL io backend choice.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum WalBackend {
    /// pwrite + fdatasync.
    Pwrite,
    /// io_uring with linked write and fdatasync.
    Uring,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Where ZooKeeper clients are served unless `--listen-zookeeper-urls` says otherwise.
pub(crate) const DEFAULT_ZOOKEEPER_URL: &str = "127.0.0.1:2181";

/// `serve` flags. Each can also be set as an `ETCD_<FLAG>` environment variable, or in a
/// configuration file (see `serve_settings`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Path to an etcd-style YAML configuration file; when given, other flags and ETCD_*
    /// variables are ignored.
    #[arg(long)]
    pub(crate) config_file: Option<PathBuf>,
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    pub(crate) name: String,
    /// Path to the data directory.
    #[arg(long, default_value = "quorumkv-data")]
    pub(crate) data_dir: PathBuf,
    /// Path to a dedicated write-ahead log directory (default: inside --data-dir).
    #[arg(long)]
    pub(crate) wal_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic (comma-separated).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub(crate) listen_client_urls: String,
    /// Client URLs advertised to the rest of the cluster.
    #[arg(long)]
    pub(crate) advertise_client_urls: Option<String>,
    /// URL to listen on for peer traffic.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    pub(crate) listen_peer_urls: String,
    /// This member's peer URLs as advertised to the rest of the cluster.
    #[arg(long)]
    pub(crate) initial_advertise_peer_urls: Option<String>,
    /// Initial cluster configuration: name=peer-url,...
    #[arg(long, default_value = "")]
    pub(crate) initial_cluster: String,
    /// Initial cluster token.
    #[arg(long, default_value = "etcd-cluster")]
    pub(crate) initial_cluster_token: String,
    /// Initial cluster state (new or existing; the data directory decides on restart).
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    pub(crate) initial_cluster_state: String,
    /// Replication protocol.
    #[arg(long, value_enum, default_value = "raft")]
    pub(crate) replication: Replication,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub(crate) heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub(crate) election_timeout: u64,
    /// Whether to fast-forward initial election ticks on boot for faster election (Raft).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) initial_election_tick_advance: bool,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024)]
    pub(crate) max_request_bytes: usize,
    /// Largest Range response served, in bytes of keys and values; a larger one is refused
    /// with an error naming this flag.
    #[arg(long, default_value_t = 1 << 30)]
    pub(crate) max_range_response_bytes: usize,
    /// Most watchers this member holds at once; a watch past it is canceled at creation.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) max_watchers: usize,
    /// Most connections each client URL holds at once; one past it is closed.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_client_connections: usize,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB).
    #[arg(long, default_value_t = 0)]
    pub(crate) quota_backend_bytes: u64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    pub(crate) max_txn_ops: usize,
    /// Reject reconfiguration requests that would cause quorum loss.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) strict_reconfig_check: bool,
    /// Auth token type: `simple` (the only kind served; etcd's `jwt` is refused).
    #[arg(long, default_value = "simple", value_parser = auth_token_kind)]
    pub(crate) auth_token: String,
    /// Time (in seconds) a simple token lives after its last use.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) auth_token_ttl: u64,
    /// bcrypt cost for hashing auth passwords (4 to 31).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub(crate) bcrypt_cost: u32,
    /// Applied entries between log compactions.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) snapshot_count: u64,
    /// Entries kept in the log behind a compaction, so slightly slow followers catch up from
    /// the log instead of a snapshot.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) experimental_snapshot_catchup_entries: u64,
    /// Most time (milliseconds) between durable commits of the backend.
    #[arg(long, default_value_t = 100)]
    pub(crate) backend_batch_interval: u64,
    /// Most applied entries between durable commits of the backend.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) backend_batch_limit: u64,
    /// URLs to serve /metrics and /health on (comma-separated).
    #[arg(long, default_value = "")]
    pub(crate) listen_metrics_urls: String,
    /// Addresses (host:port, comma-separated) to serve ZooKeeper clients on; empty: none.
    /// Unset: 127.0.0.1:2181, skipped with a warning when that port is taken. A
    /// tls://host:port address is served over TLS with the client port's certificate.
    #[arg(long)]
    pub(crate) listen_zookeeper_urls: Option<String>,
    /// ZooKeeper's tickTime, in ms.
    #[arg(long, default_value_t = 2000)]
    pub(crate) zookeeper_tick_ms: u64,
    /// Shortest ZooKeeper session timeout granted, in ms (minSessionTimeout); 0: 2 ticks.
    #[arg(long, default_value_t = 0)]
    pub(crate) zookeeper_min_session_timeout_ms: u64,
    /// Longest ZooKeeper session timeout granted, in ms (maxSessionTimeout); 0: 20 ticks.
    #[arg(long, default_value_t = 0)]
    pub(crate) zookeeper_max_session_timeout_ms: u64,
    /// Most ZooKeeper sessions the cluster holds; a client asking for one more is refused.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) zookeeper_max_sessions: usize,
    /// The ZooKeeper super-user's digest, `super:<base64 sha1 of super:password>`
    /// (zookeeper.DigestAuthenticationProvider.superDigest).
    #[arg(long)]
    pub(crate) zookeeper_super_digest: Option<String>,
    /// Four-letter words answered, comma-separated (ZooKeeper's 4lw.commands.whitelist, whose
    /// default since 3.5.3 is srvr alone); `*`: all.
    #[arg(long, default_value = "srvr")]
    pub(crate) zookeeper_4lw_commands_whitelist: String,
    /// How often the leader deletes emptied containers and expired TTL nodes, in ms
    /// (znode.container.checkIntervalMs).
    #[arg(long, default_value_t = 60_000)]
    pub(crate) zookeeper_container_check_interval_ms: u64,
    /// Largest ZooKeeper frame taken, in bytes (jute.maxbuffer).
    #[arg(long, default_value_t = 0xfffff)]
    pub(crate) zookeeper_max_buffer: usize,
    /// ZooKeeper connections one client address may hold (maxClientCnxns; 0: no limit).
    #[arg(long, default_value_t = 60)]
    pub(crate) zookeeper_max_client_cnxns: usize,
    /// WAL io backend.
    #[arg(long, value_enum, default_value = "pwrite")]
    pub(crate) wal_backend: WalBackend,
    /// Most records one WAL group commit carries.
    #[arg(long)]
    pub(crate) wal_batch_records_max: Option<usize>,
    /// Extra time (microseconds) a WAL group commit waits for more appends.
    #[arg(long)]
    pub(crate) wal_commit_delay_us: Option<u64>,
    /// WAL batches written while the previous one syncs (1 disables pipelining).
    #[arg(long)]
    pub(crate) wal_pipeline_depth: Option<usize>,
    /// Preallocate WAL segments.
    #[arg(long)]
    pub(crate) wal_preallocate: Option<bool>,
    /// Skip every fdatasync and fsync of the log, the key space and the member state, as
    /// etcd's flag does: faster, and a power cut loses acknowledged writes. Never for data.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) unsafe_no_fsync: bool,
    /// Log leases' remaining TTLs now and then, so a leader change does not give every lease
    /// a full TTL again (etcd's flag; on by default here, where etcd's default is off).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) experimental_enable_lease_checkpoint: bool,
    /// How often the leader checkpoints leases (a Go duration).
    #[arg(long, default_value = "5m", value_parser = go_duration)]
    pub(crate) experimental_lease_checkpoint_interval: Duration,
    /// Free bytes kept on the data directory's file system: below them the member raises a
    /// NOSPACE alarm and refuses new data (reads, deletes and compaction go on) before the
    /// disk fills; free space, then `etcdctl alarm disarm`. 0 turns the check off.
    #[arg(long, default_value_t = quorumkv::server::serve::DEFAULT_DISK_RESERVE_BYTES)]
    pub(crate) disk_reserve_bytes: u64,
    /// Interpret --auto-compaction-retention as a period (`periodic`) or a revision count
    /// (`revision`).
    #[arg(long, default_value = "periodic", value_parser = ["periodic", "revision"])]
    pub(crate) auto_compaction_mode: String,
    /// History to keep when compacting automatically: hours or a duration such as `30m`
    /// (periodic), or revisions (revision). 0 turns automatic compaction off.
    #[arg(long, default_value = "0")]
    pub(crate) auto_compaction_retention: String,
    /// Duration of periodic watch progress notifications, for watchers that ask for them
    /// (a Go duration such as `10m` or `5s`).
    #[arg(long, default_value = "10m", value_parser = go_duration)]
    pub(crate) experimental_watch_progress_notify_interval: Duration,
    /// Frequency of server-to-client pings that check a connection is alive (a Go duration;
    /// 0 disables).
    #[arg(long, default_value = "2h", value_parser = go_duration)]
    pub(crate) grpc_keepalive_interval: Duration,
    /// Additional wait before closing a connection that does not answer a ping (0: tonic's
    /// 20 s).
    #[arg(long, default_value = "20s", value_parser = go_duration)]
    pub(crate) grpc_keepalive_timeout: Duration,
    /// Maximum concurrent streams each client connection may open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_concurrent_streams: u32,
    /// Log format: `capnslog` or `zap` (both write this server's one format).
    #[arg(long, default_value = "capnslog", value_parser = ["capnslog", "zap"])]
    pub(crate) logger: String,
    /// Where logs go: `default` or `stderr`, `stdout`, or a file path (appended to).
    #[arg(long, default_value = "default")]
    pub(crate) log_outputs: String,
    /// Metrics detail: `basic` or `extensive` (the same metrics, histograms included, either way).
    #[arg(long, default_value = "basic", value_parser = ["basic", "extensive"])]
    pub(crate) metrics: String,
    /// Accept etcd v2 requests: only the v3 API is served (a warning when true).
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) enable_v2: bool,
    /// Go runtime profiling endpoints: not served (a warning when true).
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) enable_pprof: bool,
    /// TLS settings of etcd's: the client port's are served; the peer port's are refused.
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
    /// Compare the key space with the peers' before serving clients, and refuse to start on a
    /// difference.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) experimental_initial_corrupt_check: bool,
    /// How often the leader compares the members' key spaces and raises a CORRUPT alarm on a
    /// difference (a Go duration; 0s never).
    #[arg(long, default_value = "0s", value_parser = go_duration)]
    pub(crate) experimental_corrupt_check_time: Duration,
    /// Log level: debug, info, warn, error, panic or fatal (`RUST_LOG` overrides it).
    #[arg(long, default_value = "info", value_parser = ["debug", "info", "warn", "error", "panic", "fatal"])]
    pub(crate) log_level: String,
}

/// etcd's TLS flags, the client port's (`https://` client URLs) and the peer port's
/// (`https://` peer URLs), and the secret peers prove membership with.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Certificate (chain) of https:// client URLs, PEM; read again when it changes.
    #[arg(long, default_value = "")]
    cert_file: String,
    /// Its private key, PEM.
    #[arg(long, default_value = "")]
    key_file: String,
    /// CAs client certificates must chain to, PEM.
    #[arg(long, default_value = "")]
    trusted_ca_file: String,
    /// Refuse clients without a certificate signed by --trusted-ca-file.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    client_cert_auth: bool,
    /// Serve https:// client URLs with a self-signed certificate made at start.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) auto_tls: bool,
    /// TLS 1.2 cipher suites allowed, comma-separated IANA names (empty: rustls' defaults).
    #[arg(long, default_value = "")]
    pub(crate) cipher_suites: String,
    /// Certificate (chain) of https:// peer URLs, PEM, also presented when dialing peers.
    #[arg(long, default_value = "")]
    pub(crate) peer_cert_file: String,
    /// Its private key, PEM.
    #[arg(long, default_value = "")]
    pub(crate) peer_key_file: String,
    /// CAs the other members' certificates must chain to, PEM (without it they are not
    /// verified, and the peer secret alone proves membership).
    #[arg(long, default_value = "")]
    peer_trusted_ca_file: String,
    /// Refuse peers without a certificate signed by --peer-trusted-ca-file.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub(crate) peer_client_cert_auth: bool,
    /// Serve https:// peer URLs with a self-signed certificate made at start.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    peer_auto_tls: bool,
    /// The only common name a peer's certificate may carry (needs --peer-client-cert-auth).
    #[arg(long, default_value = "")]
    pub(crate) peer_cert_allowed_cn: String,
    /// A file holding the secret (16 bytes or more) every member proves membership with on
    /// each peer connection; without it the secret is derived from --initial-cluster-token.
    #[arg(long, default_value = "")]
    peer_secret_file: String,
}

impl TlsArgs {
    /// The client port's TLS, if its flags ask for it.
    fn client(
        &self,
        advertised: &[String],
    ) -> Result<Option<quorumkv_server::tls::TlsOptions>, String> {
        let files = match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) => None,
            (false, false) => Some((self.cert_file.clone().into(), self.key_file.clone().into())),
            _ => return Err("--cert-file and --key-file go together".into()),
        };
        if files.is_none() && !self.auto_tls {
            if self.client_cert_auth || !self.trusted_ca_file.is_empty() {
                return Err("--client-cert-auth and --trusted-ca-file need --cert-file and --key-file, or --auto-tls".into());
            }
            return Ok(None);
        }
        Ok(Some(quorumkv_server::tls::TlsOptions {
            files,
            trusted_ca: Some(self.trusted_ca_file.clone())
                .filter(|f| !f.is_empty())
                .map(Into::into),
            client_cert_auth: self.client_cert_auth,
            cipher_suites: list(&self.cipher_suites),
            auto_names: auto_names(advertised),
        }))
    }

    /// The peer port's TLS, if its flags ask for it (used when the peer URLs are https://).
    fn peer(
        &self,
        advertised: &[String],
    ) -> Result<Option<quorumkv_server::transport::security::PeerTlsOptions>, String> {
        let files = match (
            self.peer_cert_file.is_empty(),
            self.peer_key_file.is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some((
                self.peer_cert_file.clone().into(),
                self.peer_key_file.clone().into(),
            )),
            _ => return Err("--peer-cert-file and --peer-key-file go together".into()),
        };
        if files.is_none() && !self.peer_auto_tls {
            if self.peer_client_cert_auth || !self.peer_trusted_ca_file.is_empty() {
                return Err("--peer-client-cert-auth and --peer-trusted-ca-file need \
                            --peer-cert-file and --peer-key-file, or --peer-auto-tls"
                    .into());
            }
            return Ok(None);
        }
        Ok(Some(quorumkv_server::transport::security::PeerTlsOptions {
            tls: quorumkv_server::tls::TlsOptions {
                files,
                trusted_ca: Some(self.peer_trusted_ca_file.clone())
                    .filter(|f| !f.is_empty())
                    .map(Into::into),
                client_cert_auth: self.peer_client_cert_auth,
                cipher_suites: list(&self.cipher_suites),
                auto_names: auto_names(advertised),
            },
            allowed_cn: Some(self.peer_cert_allowed_cn.clone()).filter(|c| !c.is_empty()),
        }))
    }

    /// The file `--peer-secret-file` names, if any.
    fn peer_secret_file(&self) -> Option<PathBuf> {
        Some(&self.peer_secret_file)
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
    }
}

/// What a generated certificate names: the hosts of the URLs a member advertises, and
/// loopback.
fn auto_names(advertised: &[String]) -> Vec<String> {
    advertised
        .iter()
        .filter_map(|u| u.split("://").nth(1))
        .filter_map(|hp| {
            hp.rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
        })
        .chain(["localhost".to_string(), "127.0.0.1".to_string()])
        .collect()
}

/// Where `--log-outputs` sends the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard error (etcd's `default` and `stderr`).
    Stderr,
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// A Go duration (`10m`, `1h30m`, `500ms`), as etcd's duration flags take.
fn go_duration(v: &str) -> Result<Duration, String> {
    quorumkv::server::etcd::compactor::parse_go_duration(v)
}

/// Accepts etcd's `--auth-token` values of the simple kind (`simple`, or `simple,...`).
fn auth_token_kind(v: &str) -> Result<String, String> {
    if v.split(',').next() == Some("simple") {
        Ok(v.to_string())
    } else {
        Err(format!(
            "auth token type {v:?} is not supported (only \"simple\" tokens are)"
        ))
    }
}

impl ServeArgs {
    /// The `tracing` filter directive for this process's own crates at `--log-level`.
    pub fn log_level(&self) -> &'static str {
        match self.log_level.as_str() {
            "debug" => "debug",
            "info" => "info",
            "warn" => "warn",
            _ => "error",
        }
    }

    /// Where the log goes (`--log-outputs`): one target, as etcd names them.
    pub fn log_output(&self) -> Result<LogOutput, String> {
        match self.log_outputs.as_str() {
            "default" | "stderr" => Ok(LogOutput::Stderr),
            "stdout" => Ok(LogOutput::Stdout),
            v if v.contains(',') => Err(format!(
                "--log-outputs {v:?}: one output is supported (stderr, stdout or a file)"
            )),
            v if v.starts_with("systemd") => Err(format!(
                "--log-outputs {v:?}: journald is not supported (stderr, stdout or a file)"
            )),
            v => Ok(LogOutput::File(PathBuf::from(v))),
        }
    }

    /// What the flags ask for that is accepted but does nothing here, for the log.
    pub fn ignored(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.enable_v2 {
            out.push("--enable-v2: the etcd v2 API is not served; v2 requests get 404".into());
        }
        if self.enable_pprof {
            out.push("--enable-pprof: no Go runtime profiling endpoints are served".into());
        }
        out
    }

    fn options(&self) -> Result<ServeOptions, String> {
        let mut o = ServeOptions {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            wal_dir: self.wal_dir.clone(),
            listen_client_urls: list(&self.listen_client_urls),
            listen_peer_urls: list(&self.listen_peer_urls),
            initial_cluster: self.initial_cluster.clone(),
            initial_cluster_token: self.initial_cluster_token.clone(),
            join_existing: self.initial_cluster_state == "existing",
            protocol: match self.replication {
                Replication::Raft => ProtocolKind::Raft,
                Replication::Zab => ProtocolKind::Zab,
            },
            heartbeat: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            initial_election_tick_advance: self.initial_election_tick_advance,
            max_request_bytes: self.max_request_bytes,
            max_range_response_bytes: self.max_range_response_bytes,
            max_watchers: self.max_watchers,
            max_client_connections: self.max_client_connections,
            quota_backend_bytes: self.quota_backend_bytes,
            max_txn_ops: self.max_txn_ops,
            strict_reconfig_check: self.strict_reconfig_check,
            auth_token_ttl: Duration::from_secs(self.auth_token_ttl),
            bcrypt_cost: self.bcrypt_cost,
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.experimental_snapshot_catchup_entries,
            backend_batch_interval: Duration::from_millis(self.backend_batch_interval),
            backend_batch_limit: self.backend_batch_limit,
            backend: match self.wal_backend {
                WalBackend::Pwrite => Backend::Pwrite,
                WalBackend::Uring => Backend::Uring,
            },
            listen_metrics_urls: list(&self.listen_metrics_urls),
            auto_compaction: Retention::parse(
                &self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )?,
            client_port: ClientPortConfig {
                watch_progress_notify_interval: self.experimental_watch_progress_notify_interval,
                grpc_keepalive_interval: self.grpc_keepalive_interval,
                grpc_keepalive_timeout: self.grpc_keepalive_timeout,
                max_concurrent_streams: self.max_concurrent_streams,
            },
            disk_reserve_bytes: self.disk_reserve_bytes,
            lease_checkpoint_interval: (self.experimental_enable_lease_checkpoint
                && !self.experimental_lease_checkpoint_interval.is_zero())
            .then_some(self.experimental_lease_checkpoint_interval),
            corrupt_check: CorruptCheckConfig {
                initial: self.experimental_initial_corrupt_check,
                interval: self.experimental_corrupt_check_time,
            },
            listen_zookeeper_urls: list(
                self.listen_zookeeper_urls
                    .as_deref()
                    .unwrap_or(DEFAULT_ZOOKEEPER_URL),
            ),
            zookeeper_port_optional: self.listen_zookeeper_urls.is_none(),
            zookeeper: {
                let tick = Duration::from_millis(self.zookeeper_tick_ms.max(1));
                let or_ticks = |ms: u64, ticks: u32| match ms {
                    0 => tick * ticks,
                    ms => Duration::from_millis(ms),
                };
                let session_timeout_min = or_ticks(self.zookeeper_min_session_timeout_ms, 2);
                ZkConfig {
                    tick,
                    session_timeout_min,
                    session_timeout_max: or_ticks(self.zookeeper_max_session_timeout_ms, 20)
                        .max(session_timeout_min),
                    frame_bytes_max: self.zookeeper_max_buffer,
                    connections_per_address_max: self.zookeeper_max_client_cnxns,
                    super_digest: self.zookeeper_super_digest.clone(),
                    sessions_max: self.zookeeper_max_sessions,
                    four_letter_words: list(&self.zookeeper_4lw_commands_whitelist),
                    reap_interval: Duration::from_millis(
                        self.zookeeper_container_check_interval_ms.max(10),
                    ),
                    ..ZkConfig::default()
                }
            },
            ..ServeOptions::default()
        };
        o.advertise_client_urls = self
            .advertise_client_urls
            .as_deref()
            .map_or_else(|| o.listen_client_urls.clone(), list);
        o.client_tls = self.tls.client(&o.advertise_client_urls)?;
        o.peer_tls = self.tls.peer(&o.initial_advertise_peer_urls)?;
        o.peer_secret_file = self.tls.peer_secret_file();
        o.initial_advertise_peer_urls = self
            .initial_advertise_peer_urls
            .as_deref()
            .map_or_else(|| o.listen_peer_urls.clone(), list);
        if let Some(v) = self.wal_batch_records_max {
            o.wal.batch_records_max = v;
        }
        if let Some(v) = self.wal_commit_delay_us {
            o.wal.commit_delay = Duration::from_micros(v);
        }
        if let Some(v) = self.wal_pipeline_depth {
            o.wal.pipeline_depth = v.max(1);
        }
        if let Some(v) = self.wal_preallocate {
            o.wal.preallocate = v;
        }
        o.wal.unsafe_no_fsync = self.unsafe_no_fsync;
        Ok(o)
    }
}

/// Runs `serve` until SIGINT or SIGTERM.
pub fn main(args: &ServeArgs) -> Result<(), String> {
    let opts = args.options()?;
    crate::failpoints::arm_from_env()?;
    // A panic anywhere is a crash of the whole member, never a task or thread quietly gone
    // while the rest serves on in a state nobody checked.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("quorumkv serve: a panic stops the member");
        std::process::abort();
    }));
    if opts.wal.unsafe_no_fsync {
        tracing::warn!(
            "--unsafe-no-fsync: nothing is fsynced; a power cut or a kernel crash loses \
             acknowledged writes and can corrupt this member. Never use it for data."
        );
        eprintln!(
            "quorumkv serve: WARNING: --unsafe-no-fsync: acknowledged writes are not durable"
        );
    }
    let prepared = serve::prepare(&opts)?;
    let id = prepared.server.member_id();
    eprintln!(
        "quorumkv serve: member {id:016x} ({}) of cluster {:016x}, {:?}, clients on {}",
        opts.name,
        prepared.server.cluster_id(),
        opts.protocol,
        opts.listen_client_urls.join(",")
    );
    serve::run(prepared, async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}
