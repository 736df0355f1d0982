//! Errors returned by the log. Owns the error vocabulary; never decides policy.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the write-ahead log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An IO call failed outside the append path (open, read, purge, truncate).
    #[error("wal io error during {op}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Data on disk failed validation somewhere that cannot be a torn tail.
    #[error("wal corruption in {path}: {detail}")]
    Corruption {
        /// The file that failed validation.
        path: PathBuf,
        /// What was wrong, and where.
        detail: String,
    },
    /// A write or fdatasync failed earlier; the log refuses all further appends (fail-stop).
    #[error("wal stopped after a failed {op}: {message}; no further appends are accepted")]
    Stopped {
        /// The operation that failed (`write` or `fdatasync`).
        op: &'static str,
        /// The error text of the failure.
        message: String,
    },
    /// The log is shutting down.
    #[error("wal is closed")]
    Closed,
    /// A record is larger than `record_bytes_max`.
    #[error("wal record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Size of the rejected record.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// `try_append` found the queue full.
    #[error("wal append queue is full ({queued_bytes} bytes queued)")]
    QueueFull {
        /// Bytes waiting to be written.
        queued_bytes: usize,
    },
    /// A read or truncation named indexes outside `first_index..=last_index`.
    #[error("wal index {index} is outside the log ({first}..={last})")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// First readable index.
        first: u64,
        /// Last appended index.
        last: u64,
    },
    /// Options that cannot work together.
    #[error("invalid wal options: {0}")]
    InvalidOptions(String),
}

/// Result alias for the log.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}
