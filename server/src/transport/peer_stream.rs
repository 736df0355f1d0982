//! One peer connection, plain TCP or TLS (either end of it), as the transport and the
//! member-to-member calls read and write it. Only carries bytes; what the other end proved
//! is decided by the transport's security before a stream is handed on.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Label of the keying material a TLS peer connection exports for the membership proof.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-quorumkv-peer-v1";
const EXPORTER_BYTES: usize = 32;

/// A peer connection.
#[derive(Debug)]
pub enum PeerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (dialed or accepted).
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl PeerStream {
    /// Keying material exported from the TLS channel (RFC 5705), which the membership proof
    /// covers; empty on plain TCP.
    pub fn binding(&self) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; EXPORTER_BYTES];
        let exported = match self {
            PeerStream::Plain(_) => return Ok(Vec::new()),
            PeerStream::Tls(s) => match s.as_ref() {
                tokio_rustls::TlsStream::Client(c) => {
                    c.get_ref()
                        .1
                        .export_keying_material(&mut out, EXPORTER_LABEL, None)
                }
                tokio_rustls::TlsStream::Server(c) => {
                    c.get_ref()
                        .1
                        .export_keying_material(&mut out, EXPORTER_LABEL, None)
                }
            },
        };
        exported.map_err(|e| format!("TLS keying material: {e}"))?;
        Ok(out)
    }

    /// The common name of the certificate the other end presented, if any.
    pub fn common_name(&self) -> Option<String> {
        match self {
            PeerStream::Plain(_) => None,
            PeerStream::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(crate::tls::common_name),
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerStream::Plain(s) => s.is_write_vectored(),
            PeerStream::Tls(s) => s.is_write_vectored(),
        }
    }
}
