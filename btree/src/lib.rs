//! quorumkv's persistent copy-on-write B+tree.
//!
//! Owns the page file, the tree and its one-fsync commits: ordered byte-string keys and
//! values, one writer and many snapshot readers, pages read through a mapping reserved up
//! front and written with pwrite, two checksummed meta slots, page checksums, overflow values
//! and space reuse through a freelist. It never talks to the network and never depends on the
//! write-ahead log: the server checkpoints the log into it. It must never modify a committed
//! page in place and never return a page whose checksum fails. Byte layouts are in
//! `docs/format.md` at the repository root.

mod db;
pub mod error;
pub mod meta;
pub mod options;
pub mod page;
mod read;
pub mod sim;
pub mod storage;
mod write;

pub use db::{Db, DbStats, OpenReport};
pub use error::{Error, Result};
pub use options::BTreeOptions;
pub use read::{Range, ReadTxn};
pub use sim::{CrashMode, SimOp, SimReplay, SimStorage};
pub use storage::{FileStorage, Storage};
pub use write::WriteTxn;
