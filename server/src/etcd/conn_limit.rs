//! The client port's bound on connections: each accepted connection holds a slot until it
//! closes, and one arriving when every slot is taken is closed at once (with a warning at
//! most once a minute). Owns the count only; never reads or writes a connection's bytes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often a refusal is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The slots of one port.
#[derive(Debug)]
pub struct ConnLimit {
    open: Arc<AtomicUsize>,
    max: usize,
    warned: Mutex<Option<Instant>>,
}

impl ConnLimit {
    /// A port holding at most `max` connections.
    pub fn new(max: usize) -> ConnLimit {
        ConnLimit {
            open: Arc::new(AtomicUsize::new(0)),
            max,
            warned: Mutex::new(None),
        }
    }

    /// `conn` with a slot, or None (and `conn` dropped, so closed) when all are taken.
    pub fn admit<S>(&self, conn: S) -> Option<Counted<S>> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            let mut warned = self.warned.lock();
            if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                *warned = Some(Instant::now());
                tracing::warn!(
                    max = self.max,
                    "client connections refused: --max-client-connections reached"
                );
            }
            return None;
        }
        Some(Counted {
            inner: conn,
            open: Arc::clone(&self.open),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// A connection holding a slot, given back when it is dropped.
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    open: Arc<AtomicUsize>,
}

impl<S> Counted<S> {
    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Counted<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_and_given_back() {
        let l = ConnLimit::new(2);
        let a = l.admit(());
        let b = l.admit(());
        assert!(a.is_some() && b.is_some());
        assert!(l.admit(()).is_none(), "a third past the limit");
        drop(a);
        let c = l.admit(());
        assert!(c.is_some());
        assert_eq!(l.open(), 2);
        drop((b, c));
        assert_eq!(l.open(), 0);
    }
}
