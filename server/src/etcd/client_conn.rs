//! One accepted client-port connection, plaintext or TLS, and who its client is: its address
//! and the common name its certificate proved (etcd takes that name as the user when
//! authentication is on). Only carries bytes; never decides anything about them.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::conn_limit::Counted;

/// A client connection.
#[derive(Debug)]
pub enum ClientConn {
    /// Plain TCP.
    Plain(Counted<TcpStream>),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<Counted<TcpStream>>>),
}

/// Who is at the other end, as requests see it (in their extensions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client's address.
    pub remote: Option<SocketAddr>,
    /// The common name of the certificate it presented, if any.
    pub common_name: Option<String>,
}

impl ClientConn {
    fn identity(&self) -> ClientIdentity {
        match self {
            ClientConn::Plain(s) => ClientIdentity {
                remote: s.get_ref().peer_addr().ok(),
                common_name: None,
            },
            ClientConn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                ClientIdentity {
                    remote: tcp.get_ref().peer_addr().ok(),
                    common_name: session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(crate::tls::common_name),
                }
            }
        }
    }
}

impl tonic::transport::server::Connected for ClientConn {
    type ConnectInfo = ClientIdentity;

    fn connect_info(&self) -> ClientIdentity {
        self.identity()
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientConn::Plain(s) => s.is_write_vectored(),
            ClientConn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
