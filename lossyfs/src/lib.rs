//! A test-only file system that loses what a power cut loses.
//!
//! A [`Disk`] is a FUSE mount whose contents live in this process's memory, kept twice: what
//! programs see and what a disk would hold after a power cut (see [`state`] for the model:
//! data by file fsync, names by directory fsync, optional torn pages). [`Disk::power_cut`]
//! unmounts, throws away everything no fsync covered, and mounts the survivors again with
//! the kernel's caches empty, as after a reboot. Chaos runs put each member's data directory
//! on one, kill the member and cut its power.
//!
//! It owns the mounts and the model, and must never be used for data anyone keeps: everything
//! is gone when the process exits. Mounting needs root (or `fusermount3`) and `/dev/fuse`.

mod fuse;
pub mod state;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption};
use parking_lot::Mutex;

pub use state::{Cut, CutReport, State};

/// How long an unmount may take to let go of its session before the cut is refused.
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// A mounted lossy file system.
pub struct Disk {
    state: Arc<Mutex<State>>,
    at: PathBuf,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("at", &self.at)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

fn mount(state: &Arc<Mutex<State>>, at: &Path) -> io::Result<BackgroundSession> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("lossyfs".into()),
        MountOption::Subtype("lossyfs".into()),
    ];
    let fs = fuse::Fs {
        state: Arc::clone(state),
    };
    fuser::spawn_mount(fs, at, &config)
        .map_err(|e| io::Error::new(e.kind(), format!("mount lossyfs on {}: {e}", at.display())))
}

impl Disk {
    /// Mounts an empty lossy file system on the directory `at`. Its root counts as durable.
    pub fn mount(at: &Path) -> io::Result<Disk> {
        let state = Arc::new(Mutex::new(State::default()));
        let session = mount(&state, at)?;
        Ok(Disk {
            state,
            at: at.to_path_buf(),
            session: Some(session),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }

    /// Bytes of file data held in memory.
    pub fn stored_bytes(&self) -> u64 {
        self.state.lock().stored_bytes()
    }

    /// Cuts the power: unmounts, keeps only what fsyncs made durable (and, with
    /// [`Cut::Torn`], a random part of the rest), and mounts that again. Every program with
    /// a file open here must be dead first, or the unmount cannot finish.
    pub fn power_cut(&mut self, cut: Cut) -> io::Result<CutReport> {
        self.unmount()?;
        let report = self.state.lock().power_cut(cut);
        self.session = Some(mount(&self.state, &self.at)?);
        Ok(report)
    }

    fn unmount(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // The session's thread ends once the kernel lets go of the file system; wait for it
        // so no request is still applying while the model is cut.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(session.umount_and_join());
        });
        match rx.recv_timeout(UNMOUNT_TIMEOUT) {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} is still in use {UNMOUNT_TIMEOUT:?} after its unmount",
                    self.at.display()
                ),
            )),
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}
