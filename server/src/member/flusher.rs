//! Background flushing of the tree's written pages. Commits without sync leave their pages in
//! the page cache, so the durable checkpoint's fsync would flush everything written since the
//! previous one while the apply thread — and every request behind it — waits. The flusher
//! syncs those pages ahead of time on its own thread, so the checkpoint finds little left.
//! A failed flush is final: the fate of the pages is unknown (a later fsync may succeed
//! although the kernel dropped them), so the apply thread stops at its next checkpoint.

use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::Mutex;
use quorumkv_btree::Db;

/// A thread that flushes the tree's written pages on request.
#[derive(Debug)]
pub struct Flusher {
    tx: mpsc::SyncSender<()>,
    failed: Arc<Mutex<Option<String>>>,
}

impl Flusher {
    /// Starts the thread for `db`.
    pub fn start(db: Db, name: String) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let failed = Arc::new(Mutex::new(None));
        let mark = Arc::clone(&failed);
        std::thread::Builder::new().name(name).spawn(move || {
            while rx.recv().is_ok() {
                if let Err(e) = db.flush() {
                    tracing::error!(error = %e, "flushing the key space failed");
                    *mark.lock() = Some(e.to_string());
                    return;
                }
            }
        })?;
        Ok(Flusher { tx, failed })
    }

    /// Asks for a flush; a request already waiting covers this one.
    pub fn request(&self) {
        let _ = self.tx.try_send(());
    }

    /// Why flushing failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }
}
