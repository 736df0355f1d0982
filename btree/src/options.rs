//! Sizes and limits of a tree, with their defaults.

use crate::error::{Error, Result};
use crate::page;

/// How a tree is shaped and bounded.
#[derive(Debug, Clone)]
pub struct BTreeOptions {
    /// Page size of a new file: 4096, 8192, 16384 or 32768 (default 4096). An existing file
    /// keeps the page size it was created with.
    pub page_size: usize,
    /// Address space reserved for the read mapping; the file cannot grow past it
    /// (default 64 GiB).
    pub reserved_bytes: u64,
    /// Largest key (default: a quarter page minus entry overhead, 1000 bytes at 4 KiB).
    pub key_bytes_max: Option<usize>,
    /// Largest value (default 64 MiB). A value goes to overflow pages when its leaf entry
    /// (key and value) would take more than half a page.
    pub value_bytes_max: usize,
    /// The file grows by at least this much at a time (default 4 MiB), so commits rarely
    /// change its size.
    pub grow_bytes_min: u64,
    /// Skip the fsync of every commit (default false): a power cut loses commits that were
    /// reported done. For benchmarks of everything but the disk, never for data.
    pub unsafe_no_fsync: bool,
}

impl Default for BTreeOptions {
    fn default() -> Self {
        BTreeOptions {
            page_size: 4096,
            reserved_bytes: 64 << 30,
            key_bytes_max: None,
            value_bytes_max: 64 << 20,
            grow_bytes_min: 4 << 20,
            unsafe_no_fsync: false,
        }
    }
}

/// The limits derived from options and the file's page size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) page_size: usize,
    pub(crate) key_bytes_max: usize,
    pub(crate) value_bytes_max: usize,
    /// Leaf entries whose key and value together exceed this keep the value in overflow
    /// pages, so every entry takes at most half a page and a split always succeeds.
    pub(crate) inline_entry_bytes_max: usize,
    pub(crate) grow_bytes_min: u64,
}

pub(crate) fn check_page_size(page_size: usize) -> Result<()> {
    if ![4096, 8192, 16384, 32768].contains(&page_size) {
        return Err(Error::InvalidOptions(format!(
            "page size {page_size} (expected 4096, 8192, 16384 or 32768)"
        )));
    }
    Ok(())
}

impl BTreeOptions {
    pub(crate) fn limits(&self, page_size: usize) -> Result<Limits> {
        check_page_size(page_size)?;
        let quarter = page_size / 4;
        // A leaf entry with a maximal key and an overflow reference, and a branch entry with a
        // maximal key, take at most a quarter page; inline leaf entries at most half a page.
        // With every entry at most half a page, a split always succeeds.
        let default_key = quarter - page::LEAF_ENTRY_HEADER - page::OVERFLOW_REF_BYTES - 2;
        let key_bytes_max = self.key_bytes_max.unwrap_or(default_key);
        if key_bytes_max == 0 || key_bytes_max > default_key {
            return Err(Error::InvalidOptions(format!(
                "key_bytes_max {key_bytes_max} must be in 1..={default_key} for {page_size}-byte pages"
            )));
        }
        if self.reserved_bytes < 2 * page_size as u64 {
            return Err(Error::InvalidOptions(
                "reserved_bytes below two pages".into(),
            ));
        }
        Ok(Limits {
            page_size,
            key_bytes_max,
            value_bytes_max: self.value_bytes_max,
            inline_entry_bytes_max: (page_size - page::HEADER_BYTES) / 2
                - 2
                - page::LEAF_ENTRY_HEADER,
            grow_bytes_min: self.grow_bytes_min.max(page_size as u64),
        })
    }
}
