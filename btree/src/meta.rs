//! The two meta slots (pages 0 and 1). Transaction `t` commits by writing slot `t % 2`; open
//! takes the newest slot whose checksum holds and whose transaction's pages verify.
//!
//! ```text
//! 0   [u8;8] magic "QKVBTREE"
//! 8   u32    format version (1)
//! 12  u32    page size
//! 16  u64    txn
//! 24  u64    root page (0: empty tree)      32  u64 root txn
//! 40  u64    freelist head (0: none)        48  u64 freelist txn
//! 56  u64    page count (pages [0, count) are allocated or free; the rest is unused)
//! 64  u64    user value (the server's applied log index)
//! 72  u64    number of keys
//! 80  u64    base: the previous durable txn; pages written by txns after it (txns committed
//!            without sync, then this one) are what opening must verify
//! 88  [u8;36] reserved, zero
//! 124 u32    crc32c of bytes 0..124
//! ```

use crate::page::{PagePtr, u32_at, u64_at};

/// Magic bytes of a meta slot.
pub const MAGIC: [u8; 8] = *b"QKVBTREE";
/// Format version.
pub const VERSION: u32 = 1;
/// Bytes of a meta slot that are used.
pub const META_BYTES: usize = 128;

/// A decoded meta slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// Page size of the file.
    pub page_size: u32,
    /// Transaction id.
    pub txn: u64,
    /// Root of the tree (`page == 0`: empty).
    pub root: PagePtr,
    /// Head of the freelist chain (`page == 0`: none).
    pub freelist: PagePtr,
    /// Pages in use or free; the file past them is unused.
    pub page_count: u64,
    /// Caller's value committed with the transaction.
    pub user: u64,
    /// Number of keys.
    pub entries: u64,
    /// The durable transaction before this one.
    pub base: u64,
}

impl Meta {
    /// Encodes the slot.
    pub fn encode(&self) -> [u8; META_BYTES] {
        let mut b = [0u8; META_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.page_size.to_le_bytes());
        for (at, v) in [
            (16, self.txn),
            (24, self.root.page),
            (32, self.root.txn),
            (40, self.freelist.page),
            (48, self.freelist.txn),
            (56, self.page_count),
            (64, self.user),
            (72, self.entries),
            (80, self.base),
        ] {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let c = crc32c::crc32c(&b[..124]);
        b[124..128].copy_from_slice(&c.to_le_bytes());
        b
    }

    /// Decodes a slot from untrusted bytes; `None` if it is not a valid slot.
    pub fn decode(b: &[u8]) -> Option<Meta> {
        if b.len() < META_BYTES || b[0..8] != MAGIC {
            return None;
        }
        if crc32c::crc32c(&b[..124]) != u32_at(b, 124) || u32_at(b, 8) != VERSION {
            return None;
        }
        if b[88..124].iter().any(|&x| x != 0) {
            return None;
        }
        Some(Meta {
            page_size: u32_at(b, 12),
            txn: u64_at(b, 16),
            root: PagePtr {
                page: u64_at(b, 24),
                txn: u64_at(b, 32),
            },
            freelist: PagePtr {
                page: u64_at(b, 40),
                txn: u64_at(b, 48),
            },
            page_count: u64_at(b, 56),
            user: u64_at(b, 64),
            entries: u64_at(b, 72),
            base: u64_at(b, 80),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_rejected() {
        let m = Meta {
            page_size: 4096,
            txn: 9,
            root: PagePtr { page: 5, txn: 9 },
            freelist: PagePtr { page: 7, txn: 9 },
            page_count: 12,
            user: 77,
            entries: 3,
            base: 8,
        };
        let b = m.encode();
        assert_eq!(Meta::decode(&b), Some(m));
        for bit in 0..META_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Meta::decode(&c), None, "bit {bit}");
        }
    }
}
