//! TLS for a member's listeners: a server configuration made from PEM files (etcd's
//! `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, `--cipher-suites`)
//! or from a certificate generated at start (`--auto-tls`), read again when its files change
//! so a rotation needs no restart; the identity (common name) a client certificate proves;
//! and a dialing side's configuration (peers, the load generator). rustls only, with the
//! ring provider: no OpenSSL.
//!
//! Never serves a handshake with a configuration that failed to load: a rotation caught
//! half-written keeps the last good one (and says so) until the files are whole again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// How often the files are looked at for a change, at most.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Where a listener's certificate comes from, and whom it asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// Certificate chain and key files; None: generated at start (`--auto-tls`).
    pub files: Option<(PathBuf, PathBuf)>,
    /// CAs a client certificate must chain to.
    pub trusted_ca: Option<PathBuf>,
    /// Whether a client must present a certificate signed by `trusted_ca`.
    pub client_cert_auth: bool,
    /// Cipher suites allowed, by IANA name (empty: rustls' defaults).
    pub cipher_suites: Vec<String>,
    /// Names the generated certificate is for (with `files` None).
    pub auto_names: Vec<String>,
}

/// A listener's TLS: its current configuration, reloaded when its files change.
#[derive(Debug)]
pub struct ServerTls {
    options: TlsOptions,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<SystemTime>>,
    checked: Instant,
}

pub(crate) fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

// ring's provider (no post-quantum key exchange, which is why rustls marks it deprecated):
// aws-lc-rs would need cmake and a C toolchain in the build, and every client here speaks
// classic ECDHE.
#[allow(deprecated)]
pub(crate) fn provider(suites: &[String]) -> Result<Arc<rustls::crypto::CryptoProvider>, String> {
    let mut p = rustls::crypto::CryptoProvider {
        cipher_suites: rustls::crypto::ring::DEFAULT_CIPHER_SUITES.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    if !suites.is_empty() {
        let all = p.cipher_suites.clone();
        let mut chosen = Vec::new();
        for name in suites {
            let found = all
                .iter()
                .find(|s| format!("{:?}", s.suite()) == *name)
                .ok_or_else(|| format!("--cipher-suites: {name} is not a cipher suite served"))?;
            chosen.push(*found);
        }
        // TLS 1.3's suites are not named by etcd's flag; they stay.
        for s in all.iter().filter(|s| s.tls13().is_some()) {
            if !chosen.iter().any(|c| c.suite() == s.suite()) {
                chosen.push(*s);
            }
        }
        p.cipher_suites = chosen;
    }
    Ok(Arc::new(p))
}

impl ServerTls {
    /// Loads `options` (generating the certificate if asked); an error names the file.
    pub fn new(options: TlsOptions) -> Result<ServerTls, String> {
        let (config, stamps) = Self::load(&options)?;
        Ok(ServerTls {
            options,
            state: Mutex::new(State {
                config,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    fn paths(options: &TlsOptions) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some((c, k)) = &options.files {
            paths.push(c.clone());
            paths.push(k.clone());
        }
        paths.extend(options.trusted_ca.iter().cloned());
        paths
    }

    fn stamps(options: &TlsOptions) -> Vec<Option<SystemTime>> {
        Self::paths(options)
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    fn load(options: &TlsOptions) -> Result<(Arc<ServerConfig>, Vec<Option<SystemTime>>), String> {
        let stamps = Self::stamps(options);
        let (chain, key) = match &options.files {
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: {e}", key.display()))?;
                (chain, key)
            }
            None => {
                let names = if options.auto_names.is_empty() {
                    vec!["localhost".to_string(), "127.0.0.1".to_string()]
                } else {
                    options.auto_names.clone()
                };
                let made = rcgen::generate_simple_self_signed(names)
                    .map_err(|e| format!("--auto-tls: {e}"))?;
                let key = PrivateKeyDer::try_from(made.key_pair.serialize_der())
                    .map_err(|e| format!("--auto-tls: {e}"))?;
                (vec![made.cert.der().clone()], key)
            }
        };
        let builder = ServerConfig::builder_with_provider(provider(&options.cipher_suites)?)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match (&options.trusted_ca, options.client_cert_auth) {
            (Some(ca), true) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(&options.cipher_suites)?,
                )
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            (None, true) => {
                return Err("--client-cert-auth needs --trusted-ca-file".into());
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("the certificate and its key: {e}"))?;
        // gRPC over HTTP/2, and HTTP/1.1 for the JSON gateway and probes.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((Arc::new(config), stamps))
    }

    /// The configuration for the next handshake: read again first if a file changed since
    /// the last look (at most once a second).
    pub fn config(&self) -> Arc<ServerConfig> {
        let mut s = self.state.lock();
        if s.checked.elapsed() >= RELOAD_CHECK_EVERY && self.options.files.is_some() {
            s.checked = Instant::now();
            let now = Self::stamps(&self.options);
            if now != s.stamps {
                match Self::load(&self.options) {
                    Ok((config, stamps)) => {
                        tracing::info!("TLS certificate files changed: reloaded");
                        s.config = config;
                        s.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificate files changed but do not load; the previous ones stay");
                        s.stamps = now;
                    }
                }
            }
        }
        Arc::clone(&s.config)
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config())
    }
}

/// What a dialing side trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsOptions {
    /// CAs the server's certificate must chain to (checked against the dialed address);
    /// None: it is not verified.
    pub trusted_ca: Option<PathBuf>,
    /// The certificate chain and key presented, if any.
    pub files: Option<(PathBuf, PathBuf)>,
    /// TLS 1.2 cipher suites offered, by IANA name (empty: rustls' defaults).
    pub cipher_suites: Vec<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<Vec<u8>>,
}

/// A dialing side's configuration, read from its files now; an error names the file.
pub fn client_config(o: &ClientTlsOptions) -> Result<Arc<ClientConfig>, String> {
    let provider = provider(&o.cipher_suites)?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &o.trusted_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider))),
    };
    let mut config = match &o.files {
        Some((cert, key)) => {
            let chain = read_certs(cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the certificate and its key: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = o.alpn.clone();
    Ok(Arc::new(config))
}

/// Accepts any server certificate (no CA to check it against), still checking the
/// handshake's signatures. Whoever uses it authenticates the other end some other way (the
/// peer membership proof), or asked not to (a benchmark's `--insecure-skip-tls-verify`).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The common name of a certificate's subject, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A listener whose connections arrive through a TLS handshake (made in a task of their own,
/// each bounded by `handshake_timeout`), for servers that take any listener (axum's).
#[derive(Debug)]
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener` with `tls`.
    pub fn new(
        listener: tokio::net::TcpListener,
        tls: Arc<ServerTls>,
        handshake_timeout: Duration,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (acceptor, tx) = (tls.acceptor(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                    {
                        let _ = tx.send((s, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener {
            rx,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
