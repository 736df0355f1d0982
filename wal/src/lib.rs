//! quorumkv's write-ahead log: segmented, CRC32C-framed, group-committed and pipelined, on
//! io_uring or pwrite.
//!
//! The log owns durability of an ordered sequence of records, each identified by a
//! monotonically increasing index. It knows nothing of what the records mean; Raft and ZAB
//! store their entries here through the replication layer. It must never acknowledge a record
//! before a fdatasync covering it has returned, and never return a record that fails its CRC.
//! Byte layouts are in `docs/format.md` at the repository root.

pub mod error;
pub mod frame;
pub mod io;
pub mod options;
mod prealloc;
pub mod recovery;
pub mod segment;
mod ticket;
mod wal;

pub use error::{Error, Result};
pub use io::Backend;
pub use options::WalOptions;
pub use recovery::{RecoveryReport, TornTail};
pub use ticket::Ticket;
pub use wal::{SLOW_SYNC, SYNC_BUCKET_BOUNDS_US, Wal, WalStats};
