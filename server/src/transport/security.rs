//! How peer connections are opened and admitted: TCP, then TLS when the peer URLs are
//! `https://` (etcd's `--peer-*` certificate flags, mutual when `--peer-client-cert-auth`),
//! then the membership proof of [`super::peer_auth`] on every connection, TLS or not. A
//! connection is handed on only once both ends proved they belong to the cluster.
//!
//! Owns the peer TLS configurations and the peer secret; never reads or writes what a
//! connection carries after its handshake.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::frame;
use super::peer_auth::{self, Hello, PeerSecret};
use super::peer_stream::PeerStream;
use super::tcp::{DIAL_TIMEOUT, HANDSHAKE_TIMEOUT, tune};
use crate::tls::{ClientTlsOptions, ServerTls, TlsOptions};

/// Peer TLS as etcd's `--peer-*` flags describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsOptions {
    /// The listener's side, whose certificate is also presented when dialing (a generated
    /// one, `--peer-auto-tls`, is presented to no one). Without `trusted_ca` the other
    /// members' certificates are not verified, and membership rests on the peer secret alone.
    pub tls: TlsOptions,
    /// The only common name a dialing member's certificate may carry.
    pub allowed_cn: Option<String>,
}

/// The security of one member's peer connections.
#[derive(Debug)]
pub struct PeerSecurity {
    secret: PeerSecret,
    tls: Option<PeerTls>,
}

#[derive(Debug)]
struct PeerTls {
    options: PeerTlsOptions,
    server: ServerTls,
}

impl PeerSecurity {
    /// Plain TCP connections, proven by `secret`.
    pub fn plain(secret: PeerSecret) -> PeerSecurity {
        PeerSecurity { secret, tls: None }
    }

    /// TLS connections as `options` say, proven by `secret` as well; an error names the
    /// file or flag at fault.
    pub fn tls(secret: PeerSecret, options: PeerTlsOptions) -> Result<PeerSecurity, String> {
        let t = &options.tls;
        if t.client_cert_auth && t.trusted_ca.is_none() {
            return Err("--peer-client-cert-auth needs --peer-trusted-ca-file".into());
        }
        if options.allowed_cn.is_some() && !t.client_cert_auth {
            return Err("--peer-cert-allowed-cn needs --peer-client-cert-auth".into());
        }
        let server = ServerTls::new(t.clone()).map_err(|e| format!("peer TLS: {e}"))?;
        if t.trusted_ca.is_none() && t.files.is_some() {
            tracing::warn!(
                "peer certificates are not verified (no --peer-trusted-ca-file): the peer \
                 secret alone proves membership"
            );
        }
        let tls = PeerTls { options, server };
        // Fail at start, not at the first dial, if the client side does not load.
        tls.client_config()?;
        Ok(PeerSecurity {
            secret,
            tls: Some(tls),
        })
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Dials `addr` and opens the connection `hello` describes, once both ends proved
    /// membership (and, with TLS, the other end's certificate checked out).
    pub async fn dial(&self, addr: SocketAddr, hello: Hello) -> std::io::Result<PeerStream> {
        let timed_out =
            |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string());
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("dialing the member timed out"))??;
        tune(&tcp);
        let handshake = async {
            let mut stream = match &self.tls {
                None => PeerStream::Plain(tcp),
                Some(t) => {
                    let connector = tokio_rustls::TlsConnector::from(
                        t.client_config().map_err(std::io::Error::other)?,
                    );
                    let name = ServerName::IpAddress(addr.ip().into());
                    let s = connector.connect(name, tcp).await?;
                    PeerStream::Tls(Box::new(tokio_rustls::TlsStream::Client(s)))
                }
            };
            let binding = stream.binding().map_err(std::io::Error::other)?;
            peer_auth::prove(&mut stream, &self.secret, &binding, hello).await?;
            Ok(stream)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| timed_out("the member did not finish the handshake in time"))?
    }

    /// Admits an accepted connection: its TLS handshake (and allowed common name), then its
    /// membership proof. `dec` keeps what the peer sent after the proof.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        dec: &mut frame::Decoder,
    ) -> Result<(PeerStream, Hello), String> {
        tune(&tcp);
        let mut stream = match &self.tls {
            None => PeerStream::Plain(tcp),
            Some(t) => {
                let s = t
                    .server
                    .acceptor()
                    .accept(tcp)
                    .await
                    .map_err(|e| format!("peer TLS handshake: {e}"))?;
                let s = PeerStream::Tls(Box::new(tokio_rustls::TlsStream::Server(s)));
                if let Some(allowed) = &t.options.allowed_cn {
                    let cn = s.common_name();
                    if cn.as_deref() != Some(allowed.as_str()) {
                        return Err(format!(
                            "peer certificate's common name {cn:?} is not the allowed {allowed:?} \
                             (--peer-cert-allowed-cn)"
                        ));
                    }
                }
                s
            }
        };
        let binding = stream.binding()?;
        let hello = peer_auth::check(&mut stream, &self.secret, &binding, dec).await?;
        Ok((stream, hello))
    }
}

impl PeerTls {
    /// The dialing side's configuration, read from the files at each dial (dials are rare:
    /// a reconnect, a snapshot, a call channel), so a rotation applies at the next one.
    fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let o = &self.options.tls;
        crate::tls::client_config(&ClientTlsOptions {
            trusted_ca: o.trusted_ca.clone(),
            files: o.files.clone(),
            cipher_suites: o.cipher_suites.clone(),
            alpn: Vec::new(),
        })
    }
}
