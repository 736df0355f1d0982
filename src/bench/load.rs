//! `quorumkv bench put|range|txn|watch`: a load generator that speaks the etcd v3 gRPC API, so
//! it drives quorumkv and etcd alike. Clients share `--conns` connections (spread over the
//! endpoints), issue requests back to back or at `--rate`, and record latencies in HDR
//! histograms. Failed requests are counted by gRPC code and kept out of the latency figures;
//! they are reported, never hidden.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use quorumkv_server::pb::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
    WatchCreateRequest, WatchRequest, request_op, watch_client::WatchClient, watch_request,
};
use rand::Rng;
use tonic::transport::{Channel, Endpoint};

use super::grpc::GrpcConn;

/// Where etcd's clients connect unless told otherwise.
const ETCD_ENDPOINT: &str = "127.0.0.1:2379";

const PUT: &str = "/etcdserverpb.KV/Put";
const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";

/// Flags every workload shares (named as etcd's `benchmark` tool names them).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Client URLs or host:port pairs, comma-separated (default: 127.0.0.1:2379 for the etcd
    /// API, 127.0.0.1:2181 for ZooKeeper's).
    #[arg(long, value_delimiter = ',')]
    pub(super) endpoints: Vec<String>,
    /// gRPC connections, spread over the endpoints.
    #[arg(long, default_value_t = 1)]
    pub(super) conns: usize,
    /// Concurrent clients, spread over the connections.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests in all (10,000 unless --duration is given).
    #[arg(long)]
    total: Option<u64>,
    /// Run for this long instead (e.g. 10s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Most requests per second over all clients (0: as fast as they go).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bytes per key.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Distinct keys used.
    #[arg(long, default_value_t = 1)]
    pub(super) key_space_size: u64,
    /// Walk the key space in order instead of at random.
    #[arg(long)]
    sequential_keys: bool,
    /// Where the walk of --sequential-keys starts (a fill can go on where another stopped).
    #[arg(long, default_value_t = 0)]
    key_offset: u64,
    /// Key names: `plain` (the number, zero-padded to --key-size) or `k8s`, as Kubernetes
    /// names its objects: `/registry/pods/ns-<i mod 100>/pod-<i>`, the number padded to
    /// --key-size (keys sharing long prefixes, 100 of them).
    #[arg(long, default_value = "plain", value_parser = ["plain", "k8s"])]
    key_shape: String,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// CA certificate(s) of https:// endpoints, PEM.
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate for https:// endpoints, PEM (with --key).
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// Its private key, PEM.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Do not verify https:// endpoints' certificates.
    #[arg(long)]
    insecure_skip_tls_verify: bool,
}

/// `bench put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    load: LoadArgs,
}

/// `bench range`.
#[derive(Debug, clap::Args)]
pub struct RangeArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Linearizable (l) or serializable (s) reads.
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    consistency: String,
    /// Keys each read returns: 1 reads one key; more scan from the request's key to the end
    /// of the key space, at most this many.
    #[arg(long, default_value_t = 1)]
    range_keys: i64,
}

/// `bench txn`.
#[derive(Debug, clap::Args)]
pub struct TxnArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Puts per transaction.
    #[arg(long, default_value_t = 1)]
    txn_ops: usize,
    /// Percent of transactions that only read (a range per op) instead of putting.
    #[arg(long, default_value_t = 0)]
    read_percent: u8,
}

/// `bench watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Watchers, each on its own stream, over the whole key space.
    #[arg(long, default_value_t = 10)]
    watchers: usize,
}

/// Parses a duration such as `10s`, `500ms` or `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl LoadArgs {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.conns == 0 || self.clients == 0 {
            return Err("--conns and --clients must not be 0".into());
        }
        if self.key_space_size == 0 || self.key_size == 0 {
            return Err("--key-space-size and --key-size must be at least 1".into());
        }
        Ok(())
    }

    /// `--endpoints`, or `default` when none is given.
    pub(super) fn with_default_endpoint(mut self, default: &str) -> LoadArgs {
        if self.endpoints.is_empty() {
            self.endpoints = vec![default.to_string()];
        }
        self
    }

    fn total(&self) -> Option<u64> {
        match (self.total, self.duration) {
            (Some(t), _) => Some(t),
            (None, Some(_)) => None,
            (None, None) => Some(10_000),
        }
    }

    /// Where in the key space the `n`th request goes.
    pub(super) fn key_index(&self, n: u64) -> u64 {
        if self.sequential_keys {
            self.key_offset.wrapping_add(n) % self.key_space_size
        } else {
            rand::rng().random_range(0..self.key_space_size)
        }
    }

    /// Key number `i`, in the --key-shape.
    fn key_at(&self, i: u64) -> Vec<u8> {
        let width = self.key_size;
        match self.key_shape.as_str() {
            "k8s" => format!("/registry/pods/ns-{:02}/pod-{i:0width$}", i % 100),
            _ => format!("{i:0width$}"),
        }
        .into_bytes()
    }

    /// The key of the `n`th request.
    fn key(&self, n: u64) -> Vec<u8> {
        self.key_at(self.key_index(n))
    }

    pub(super) fn value(&self) -> Vec<u8> {
        vec![b'v'; self.val_size]
    }

    /// The URL of connection `i`: connections go round the endpoints.
    fn url(&self, i: usize) -> String {
        let ep = &self.endpoints[i % self.endpoints.len()];
        if ep.contains("://") {
            ep.clone()
        } else {
            format!("http://{ep}")
        }
    }

    /// The TLS settings of https:// endpoints (ALPN h2), if any endpoint is one.
    fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
        if !self.endpoints.iter().any(|e| e.starts_with("https://")) {
            return Ok(None);
        }
        if self.cacert.is_none() && !self.insecure_skip_tls_verify {
            return Err("https:// endpoints need --cacert or --insecure-skip-tls-verify".into());
        }
        let options = quorumkv_server::tls::ClientTlsOptions {
            trusted_ca: self.cacert.clone(),
            files: self.cert.clone().zip(self.key.clone()),
            cipher_suites: Vec::new(),
            alpn: vec![b"h2".to_vec()],
        };
        quorumkv_server::tls::client_config(&options).map(Some)
    }

    /// `--conns` HTTP/2 connections for unary calls.
    async fn connect_unary(&self) -> Result<Vec<GrpcConn>, String> {
        let tls = self.tls()?;
        let mut conns = Vec::with_capacity(self.conns);
        for i in 0..self.conns {
            conns.push(GrpcConn::connect(&self.url(i), tls.clone()).await?);
        }
        Ok(conns)
    }

    /// `n` tonic channels, for streaming calls.
    async fn connect_streaming(&self, n: usize) -> Result<Vec<Channel>, String> {
        let tls = self.tls()?;
        let mut chans = Vec::with_capacity(n);
        for i in 0..n {
            let url = self.url(i);
            let plain = url.replacen("https://", "http://", 1);
            let ep = Endpoint::from_shared(plain)
                .map_err(|e| format!("{url}: {e}"))?
                .connect_timeout(Duration::from_secs(5));
            let connected = match (&tls, url.starts_with("https://")) {
                (Some(config), true) => {
                    let config = Arc::clone(config);
                    let host = url
                        .trim_start_matches("https://")
                        .rsplit_once(':')
                        .map_or(url.as_str(), |(h, _)| h)
                        .trim_matches(['[', ']'])
                        .to_string();
                    let name = rustls_pki_types::ServerName::try_from(host)
                        .map_err(|e| format!("{url}: {e}"))?;
                    let authority = url.trim_start_matches("https://").to_string();
                    let connector = tower::service_fn(move |_: http::Uri| {
                        let (config, name, authority) =
                            (Arc::clone(&config), name.clone(), authority.clone());
                        async move {
                            let tcp = tokio::net::TcpStream::connect(authority).await?;
                            let s = tokio_rustls::TlsConnector::from(config)
                                .connect(name, tcp)
                                .await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                        }
                    });
                    ep.connect_with_connector(connector).await
                }
                _ => ep.connect().await,
            };
            chans.push(connected.map_err(|e| format!("cannot connect to {url}: {e}"))?);
        }
        Ok(chans)
    }
}

/// What the clients measured.
pub(super) struct Outcome {
    latency_ns: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            latency_ns: Histogram::new(3).expect("histogram"),
            ok: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, o: Outcome) {
        self.latency_ns.add(&o.latency_ns).expect("same bounds");
        self.ok += o.ok;
        for (code, n) in o.errors {
            *self.errors.entry(code).or_default() += n;
        }
    }

    fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn progress(total: Option<u64>, duration: Option<Duration>, json: bool) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match (total, duration) {
        (Some(t), _) => indicatif::ProgressBar::new(t),
        (None, Some(d)) => indicatif::ProgressBar::new(d.as_secs().max(1)),
        (None, None) => indicatif::ProgressBar::no_length(),
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed_precise}")
            .expect("template"),
    );
    pb
}

/// Outcomes recorded by whichever runtime thread a client runs on: one shard per thread, so
/// recording touches a histogram that stays in that core's cache (a histogram per client, at
/// 1,000 clients, is hundreds of megabytes of counters the cache cannot hold). A shard's lock
/// is only ever contended while the shards are merged.
struct Shards {
    shards: Vec<parking_lot::Mutex<Outcome>>,
}

impl Shards {
    const COUNT: usize = 64;

    fn new() -> Shards {
        Shards {
            shards: (0..Self::COUNT)
                .map(|_| parking_lot::Mutex::new(Outcome::new()))
                .collect(),
        }
    }

    /// The shard of the calling thread.
    fn local(&self) -> parking_lot::MutexGuard<'_, Outcome> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        thread_local! {
            static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) as usize;
        }
        self.shards[SLOT.with(|s| *s) % Self::COUNT].lock()
    }

    fn merge(self) -> Outcome {
        let mut all = Outcome::new();
        for s in self.shards {
            all.merge(s.into_inner());
        }
        all
    }
}

/// A failed request, counted under its name.
pub(super) trait Failure {
    /// How the report names it.
    fn name(&self) -> String;
}

impl Failure for tonic::Status {
    fn name(&self) -> String {
        format!("{:?}", self.code())
    }
}

/// Runs `op` from every client until the total is issued or the time is up.
pub(super) async fn drive<C, E, F, Fut>(args: &LoadArgs, chans: Vec<C>, op: F) -> Outcome
where
    C: Clone + Send + Sync + 'static,
    E: Failure,
    F: Fn(C, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
{
    let total = args.total();
    let deadline = args.duration.map(|d| Instant::now() + d);
    let issued = Arc::new(AtomicU64::new(0));
    let shards = Arc::new(Shards::new());
    let pb = progress(total, args.duration, args.json);
    let started = Instant::now();
    let per_client_gap =
        (args.rate > 0).then(|| Duration::from_secs_f64(args.clients as f64 / args.rate as f64));
    // The clients sharing a connection run in one task. Answers read together then wake one
    // task, whose clients all queue their next requests before the connection's task runs
    // again and writes them together, as grpc-go's writer batches a connection's frames. With
    // a task per client, each request was written on its own.
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); chans.len().min(args.clients)];
    for c in 0..args.clients {
        groups[c % chans.len()].push(c);
    }
    let mut tasks = Vec::with_capacity(groups.len());
    for (g, members) in groups.into_iter().enumerate() {
        let chan = chans[g].clone();
        let clients: futures::stream::FuturesUnordered<_> = members
            .into_iter()
            .map(|_| {
                let chan = chan.clone();
                let (issued, op, pb) = (Arc::clone(&issued), op.clone(), pb.clone());
                let shards = Arc::clone(&shards);
                async move {
                    let mut pace = per_client_gap.map(tokio::time::interval);
                    loop {
                        let n = issued.fetch_add(1, Ordering::Relaxed);
                        if total.is_some_and(|t| n >= t)
                            || deadline.is_some_and(|d| Instant::now() >= d)
                        {
                            break;
                        }
                        if let Some(p) = pace.as_mut() {
                            p.tick().await;
                        }
                        let t0 = Instant::now();
                        let result = op(chan.clone(), n).await;
                        let mut out = shards.local();
                        match result {
                            Ok(()) => {
                                out.ok += 1;
                                let _ = out.latency_ns.record(t0.elapsed().as_nanos() as u64);
                            }
                            Err(e) => *out.errors.entry(e.name()).or_default() += 1,
                        }
                        drop(out);
                        if total.is_some() {
                            pb.inc(1);
                        } else {
                            pb.set_position(started.elapsed().as_secs());
                        }
                    }
                }
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            futures::StreamExt::collect::<Vec<()>>(clients).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    pb.finish_and_clear();
    let mut all = Arc::into_inner(shards)
        .expect("every client has finished")
        .merge();
    all.elapsed = elapsed;
    all
}

/// Prints a line; a closed stdout (say, piped into `head`) is not an error worth a panic.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

pub(super) fn report(name: &str, args: &LoadArgs, o: &Outcome, extra: serde_json::Value) {
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let h = &o.latency_ns;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
    say!(
        "{name}: {} ok, {} failed in {:.2} s: {:.0} requests/s",
        o.ok,
        o.error_total(),
        secs,
        o.ok as f64 / secs
    );
    if o.ok > 0 {
        say!(
            "latency ms: mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            h.mean() / 1e6,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1e6
        );
    }
    for (code, n) in &o.errors {
        say!("errors: {n} x {code}");
    }
    if args.json {
        let mut v = serde_json::json!({
            "bench": name,
            "endpoints": args.endpoints,
            "conns": args.conns,
            "clients": args.clients,
            "key_size": args.key_size,
            "val_size": args.val_size,
            "key_space_size": args.key_space_size,
            "requests": o.ok + o.error_total(),
            "ok": o.ok,
            "failed": o.error_total(),
            "errors": o.errors,
            "elapsed_s": secs,
            "throughput_per_s": o.ok as f64 / secs,
            "latency": super::percentiles_us(h),
        });
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        say!("{v}");
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Connects, runs `op` (made from the arguments) from every client, and reports.
fn run_kv<F, Fut>(
    name: &str,
    args: &LoadArgs,
    extra: serde_json::Value,
    make_op: impl FnOnce(Arc<LoadArgs>) -> F,
) -> Result<(), String>
where
    F: Fn(GrpcConn, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let args = &args.clone().with_default_endpoint(ETCD_ENDPOINT);
    args.check()?;
    let op = make_op(Arc::new(args.clone()));
    let o = runtime()?.block_on(async {
        let chans = args.connect_unary().await?;
        Ok::<_, String>(drive(args, chans, op).await)
    })?;
    report(name, args, &o, extra);
    Ok(())
}

/// `bench put`: one key per request.
pub fn put(a: &PutArgs) -> Result<(), String> {
    run_kv("put", &a.load, serde_json::json!({}), |la| {
        let value = la.value();
        move |ch, n| {
            let req = PutRequest {
                key: la.key(n),
                value: value.clone(),
                ..PutRequest::default()
            };
            put_one(ch, req)
        }
    })
}

async fn put_one(ch: GrpcConn, req: PutRequest) -> Result<(), tonic::Status> {
    ch.unary::<_, PutResponse>(PUT, &req).await.map(drop)
}

/// `bench range`: one key read per request.
pub fn range(a: &RangeArgs) -> Result<(), String> {
    let serializable = a.consistency == "s";
    if a.range_keys < 1 {
        return Err("--range-keys must be at least 1".into());
    }
    let scan = a.range_keys > 1;
    let limit = if scan { a.range_keys } else { 0 };
    let extra = serde_json::json!({ "consistency": a.consistency, "range_keys": a.range_keys });
    run_kv("range", &a.load, extra, |la| {
        move |ch, n| {
            let req = RangeRequest {
                key: la.key(n),
                // From the key to the end of the key space.
                range_end: if scan { vec![0] } else { Vec::new() },
                limit,
                serializable,
                ..RangeRequest::default()
            };
            async move { ch.unary::<_, RangeResponse>(RANGE, &req).await.map(drop) }
        }
    })
}

/// `bench txn`: transactions of `--txn-ops` puts (or, for `--read-percent` of them, ranges).
pub fn txn(a: &TxnArgs) -> Result<(), String> {
    if a.txn_ops == 0 || a.read_percent > 100 {
        return Err("--txn-ops must be at least 1 and --read-percent at most 100".into());
    }
    if a.load.key_space_size < a.txn_ops as u64 {
        // etcd refuses a transaction that puts one key twice.
        return Err("--key-space-size must be at least --txn-ops".into());
    }
    let (ops, read_percent) = (a.txn_ops, a.read_percent);
    let extra = serde_json::json!({ "txn_ops": ops, "read_percent": read_percent });
    run_kv("txn", &a.load, extra, |la| {
        let value = la.value();
        move |ch, n| {
            let read = rand::rng().random_range(0..100u8) < read_percent;
            // Consecutive keys from the request's place: distinct within the transaction.
            let base = la.key_index(n.wrapping_mul(ops as u64));
            let success = (0..ops)
                .map(|i| {
                    let key = la.key_at((base + i as u64) % la.key_space_size);
                    let request = if read {
                        request_op::Request::RequestRange(RangeRequest {
                            key,
                            ..RangeRequest::default()
                        })
                    } else {
                        request_op::Request::RequestPut(PutRequest {
                            key,
                            value: value.clone(),
                            ..PutRequest::default()
                        })
                    };
                    RequestOp {
                        request: Some(request),
                    }
                })
                .collect();
            let req = TxnRequest {
                success,
                ..TxnRequest::default()
            };
            async move { ch.unary::<_, TxnResponse>(TXN, &req).await.map(drop) }
        }
    })
}

/// `bench watch`: `--watchers` streams watch the whole key space while the clients put keys;
/// measures put throughput and the delay from sending a put to each watcher seeing it.
pub fn watch(a: &WatchArgs) -> Result<(), String> {
    let mut args = a.load.clone().with_default_endpoint(ETCD_ENDPOINT);
    args.check()?;
    // Every put gets its own key, so each event names the put it reports.
    args.sequential_keys = true;
    args.key_space_size = u64::MAX;
    let watchers = a.watchers;
    let rt = runtime()?;
    let (puts, delivery, expected, delivered) = rt.block_on(async {
        // The watch streams get connections of their own, up to `--conns` of them.
        let chans = args.connect_streaming(args.conns.min(watchers)).await?;
        let sent: Arc<Mutex<HashMap<Vec<u8>, Instant>>> = Arc::default();
        let mut streams = Vec::new();
        for w in 0..watchers {
            let mut client = WatchClient::new(chans[w % chans.len()].clone());
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: vec![0],
                        range_end: vec![0],
                        ..WatchCreateRequest::default()
                    },
                )),
            })
            .await
            .map_err(|e| e.to_string())?;
            let mut events = client
                .watch(tokio_stream_from(rx))
                .await
                .map_err(|e| format!("watch: {e}"))?
                .into_inner();
            // The created response comes first.
            events
                .message()
                .await
                .map_err(|e| format!("watch: {e}"))?
                .ok_or("watch stream closed")?;
            let sent = Arc::clone(&sent);
            streams.push(tokio::spawn(async move {
                let _keep_open = tx;
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                let mut seen = 0u64;
                loop {
                    let next = tokio::time::timeout(Duration::from_secs(5), events.message());
                    let Ok(Ok(Some(resp))) = next.await else {
                        break;
                    };
                    let now = Instant::now();
                    for ev in resp.events {
                        let key = ev.kv.map(|kv| kv.key).unwrap_or_default();
                        if let Some(t0) = sent.lock().expect("not poisoned").get(&key) {
                            let _ = h.record(now.duration_since(*t0).as_nanos() as u64);
                            seen += 1;
                        }
                    }
                }
                (h, seen)
            }));
        }
        let (la, value, s) = (Arc::new(args.clone()), args.value(), Arc::clone(&sent));
        let conns = args.connect_unary().await?;
        let puts = drive(&args, conns, move |ch, n| {
            let key = la.key(n);
            s.lock()
                .expect("not poisoned")
                .insert(key.clone(), Instant::now());
            let req = PutRequest {
                key,
                value: value.clone(),
                ..PutRequest::default()
            };
            put_one(ch, req)
        })
        .await;
        let mut delivery = Histogram::<u64>::new(3).expect("histogram");
        let mut delivered = 0;
        for s in streams {
            if let Ok((h, n)) = s.await {
                delivery.add(&h).expect("same bounds");
                delivered += n;
            }
        }
        let expected = puts.ok * watchers as u64;
        Ok::<_, String>((puts, delivery, expected, delivered))
    })?;
    report(
        "watch",
        &args,
        &puts,
        serde_json::json!({
            "watchers": watchers,
            "events_expected": expected,
            "events_delivered": delivered,
            "delivery": super::percentiles_us(&delivery),
        }),
    );
    if !args.json {
        say!(
            "watch events: {delivered} of {expected} delivered; delay ms p50 {:.3} p99 {:.3}",
            delivery.value_at_quantile(0.5) as f64 / 1e6,
            delivery.value_at_quantile(0.99) as f64 / 1e6
        );
    }
    Ok(())
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
