//! The bbolt on-disk layout both `bolt_writer` and `bolt_reader` follow (bbolt 1.3, as etcd
//! uses it): page header, element sizes, page and element flags, the meta page's magic,
//! version and checksum.
//!
//! A page starts with `u64 id, u16 flags, u16 count, u32 overflow` (extra pages the node
//! spans). A leaf element is `u32 flags, u32 pos, u32 ksize, u32 vsize` and a branch element
//! `u32 pos, u32 ksize, u64 child`, where `pos` counts from the element to its key. A meta
//! page holds `u32 magic, u32 version, u32 page size, u32 flags, u64 root bucket page, u64
//! sequence, u64 freelist page, u64 high-water page, u64 txid`, then the FNV-1a of those 56
//! bytes. A bucket's value in its parent is `u64 root page, u64 sequence`, followed by the
//! bucket's only (leaf) page when the root is 0 (an inline bucket).

/// Bytes of a page header.
pub const PAGE_HEADER_BYTES: usize = 16;
/// Bytes of a leaf or branch element.
pub const ELEMENT_BYTES: usize = 16;
/// Page flag: a branch node.
pub const BRANCH_FLAG: u16 = 0x01;
/// Page flag: a leaf node.
pub const LEAF_FLAG: u16 = 0x02;
/// Page flag: a meta page.
pub const META_FLAG: u16 = 0x04;
/// Page flag: the freelist.
pub const FREELIST_FLAG: u16 = 0x10;
/// Leaf element flag: the value is a nested bucket.
pub const BUCKET_LEAF_FLAG: u32 = 0x01;
/// Bytes of a bucket header (root page, sequence).
pub const BUCKET_HEADER_BYTES: usize = 16;
/// The meta page's magic number.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The file format version.
pub const VERSION: u32 = 2;
/// Meta bytes the checksum covers (everything before it).
pub const META_CHECKSUMMED_BYTES: usize = 56;

/// FNV-1a, 64 bits: the meta page's checksum.
pub fn fnv1a64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
