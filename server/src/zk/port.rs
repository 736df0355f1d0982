//! The ZooKeeper client port: accepts connections (at most `connections_max`, and
//! `connections_per_address_max` per client address, as `maxClientCnxns`), over TLS on a
//! secure port (ZooKeeper's `secureClientPort`), answers the four-letter words, and hands
//! every other connection to [`super::conn`].
//!
//! Never lets one connection's failure reach another, and never holds a connection past the
//! limits: one over them is closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::four_letter::{self, Connections};
use super::session::ZkContext;

/// Connections open, by client address.
#[derive(Debug, Default)]
struct Open {
    by_address: HashMap<IpAddr, usize>,
    total: usize,
}

/// Takes a connection from `address` if the limits allow; released when dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

impl Slot {
    fn take(open: &Arc<Mutex<Open>>, address: IpAddr, ctx: &ZkContext) -> Option<Slot> {
        let mut o = open.lock();
        let mine = o.by_address.get(&address).copied().unwrap_or(0);
        // 0 per address is no limit there, as ZooKeeper's maxClientCnxns=0.
        let per_address = ctx.cfg.connections_per_address_max;
        if o.total >= ctx.cfg.connections_max || (per_address != 0 && mine >= per_address) {
            return None;
        }
        o.total += 1;
        *o.by_address.entry(address).or_default() += 1;
        Some(Slot {
            open: Arc::clone(open),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock();
        o.total -= 1;
        if let Some(n) = o.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                o.by_address.remove(&self.address);
            }
        }
    }
}

/// How long a client has for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves ZooKeeper clients on `listener` (over TLS with `tls`) until `stop` resolves.
pub async fn serve(
    ctx: Arc<ZkContext>,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::ServerTls>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let conns = Arc::new(Connections::default());
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a ZooKeeper client");
                    continue;
                }
            },
        };
        let Some(slot) = Slot::take(&open, peer.ip(), &ctx) else {
            tracing::debug!(%peer, "ZooKeeper connection over the limits closed");
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let conns = Arc::clone(&conns);
        let tls = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let Some(acceptor) = tls else {
                return handle(stream, peer, ctx, conns).await;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => handle(s, peer, ctx, conns).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "ZooKeeper TLS handshake"),
                Err(_) => tracing::debug!(%peer, "ZooKeeper TLS handshake timed out"),
            }
        });
    }
}

/// One accepted connection: a four-letter word, or a client session.
async fn handle<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    peer: std::net::SocketAddr,
    ctx: Arc<ZkContext>,
    conns: Arc<Connections>,
) {
    let mut head = [0u8; 4];
    if stream.read_exact(&mut head).await.is_err() {
        return;
    }
    if let Some(text) = four_letter::answer(&head, &ctx, &conns) {
        let _ = stream.write_all(text.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let registered = conns.register(peer);
    let stats = Arc::clone(&registered.stats);
    if let Err(e) = super::conn::serve(ctx, stream, stats, u32::from_be_bytes(head)).await {
        tracing::debug!(%peer, error = %e, "ZooKeeper connection ended");
    }
}
