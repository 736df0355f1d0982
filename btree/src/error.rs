//! Errors of the tree.

use std::io;

/// Everything that can go wrong in the tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An IO call failed.
    #[error("btree io error during {op}: {source}")]
    Io {
        /// What the tree was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A page or meta slot failed validation.
    #[error("btree corruption: {0}")]
    Corruption(String),
    /// A key is larger than `key_bytes_max` (or empty).
    #[error("key of {len} bytes is outside the allowed 1..={max} bytes")]
    KeySize {
        /// Size of the key.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value is larger than `value_bytes_max`.
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Size of the value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A commit failed earlier; the database refuses writes until reopened.
    #[error("btree stopped after a failed {op}; reopen to recover the last committed state")]
    Stopped {
        /// The failed operation.
        op: &'static str,
    },
    /// Options that cannot work.
    #[error("invalid btree options: {0}")]
    InvalidOptions(String),
}

/// Result alias of the tree.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}
