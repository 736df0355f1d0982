//! What the crash and fault tests share: one simulated file whose durable bytes are kept
//! apart from what is waiting for a sync ([`SimFile`]), the crash that drops or tears the
//! unsynced part ([`CrashMode`]), and the one seeded generator every test and the cluster
//! simulator use ([`Rng`]), so a failing case replays exactly from its seed.
//!
//! It models a disk, never a file system or a page cache: `wal`'s simulated file system and
//! `btree`'s simulated storage keep their own live images, names and traces around it.

mod file;
mod rng;

pub use file::{CrashMode, SimFile};
pub use rng::Rng;
