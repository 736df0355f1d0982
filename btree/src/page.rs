//! The byte layout of tree pages and the slotted-page operations on it.
//!
//! ```text
//! 0   u32 crc32c of bytes 4..page_size (of the whole run for an overflow run)
//! 4   u8  kind (1 leaf, 2 branch, 3 overflow, 4 freelist)
//! 5   u8  reserved
//! 6   u16 count of entries
//! 8   u64 txn that wrote the page
//! 16  u64 page id (guards against misdirected writes)
//! 24  u16 data_start: lowest offset used by entry bytes (entries grow down from the end)
//! 26  u16 garbage: bytes of dead entries between data_start and the end
//! 28  u32 pages in the run (overflow); 1 otherwise
//! 32  count x u16 slot offsets, in key order
//! ```
//! Leaf entry: `u16 key_len, u32 value_len (bit 31: overflow), key, value` where an overflow
//! value is `u64 page, u64 txn, u64 total_len`. Branch entry: `u16 key_len, u64 child page,
//! u64 child txn, key`; entry i's key is the lower bound of child i (entry 0's key is empty).

use std::cmp::Ordering;

/// Bytes of the page header.
pub const HEADER_BYTES: usize = 32;
/// Leaf page.
pub const KIND_LEAF: u8 = 1;
/// Branch page.
pub const KIND_BRANCH: u8 = 2;
/// First page of an overflow run.
pub const KIND_OVERFLOW: u8 = 3;
/// Freelist page.
pub const KIND_FREELIST: u8 = 4;

/// Bytes of a leaf entry before its key.
pub const LEAF_ENTRY_HEADER: usize = 6;
/// Bytes of a branch entry before its key.
pub const BRANCH_ENTRY_HEADER: usize = 18;
/// Bytes of an overflow reference stored as a leaf value.
pub const OVERFLOW_REF_BYTES: usize = 24;
const OVERFLOW_FLAG: u32 = 1 << 31;

#[inline]
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
#[inline]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[inline]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
#[inline]
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A reference from a parent (or the meta) to a page written by transaction `txn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PagePtr {
    /// Page id.
    pub page: u64,
    /// Transaction that wrote it.
    pub txn: u64,
}

/// A leaf value: inline bytes or a reference to an overflow run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// Stored in the leaf.
    Inline(&'a [u8]),
    /// Stored in an overflow run.
    Overflow {
        /// First page of the run.
        ptr: PagePtr,
        /// Length of the value.
        len: u64,
    },
}

/// Page kind.
#[inline]
pub fn kind(p: &[u8]) -> u8 {
    p[4]
}
/// Entry count.
#[inline]
pub fn count(p: &[u8]) -> usize {
    usize::from(u16_at(p, 6))
}
/// Writing transaction.
#[inline]
pub fn txn(p: &[u8]) -> u64 {
    u64_at(p, 8)
}
/// Page id stored in the header.
#[inline]
pub fn id(p: &[u8]) -> u64 {
    u64_at(p, 16)
}
#[inline]
fn data_start(p: &[u8]) -> usize {
    usize::from(u16_at(p, 24))
}
#[inline]
fn garbage(p: &[u8]) -> usize {
    usize::from(u16_at(p, 26))
}
/// Pages in an overflow run.
#[inline]
pub fn run_pages(p: &[u8]) -> u32 {
    u32_at(p, 28)
}
#[inline]
fn slot(p: &[u8], i: usize) -> usize {
    usize::from(u16_at(p, HEADER_BYTES + 2 * i))
}

/// Initialises an empty page of `kind` in `p`.
pub fn init(p: &mut [u8], kind: u8) {
    let size = p.len();
    p[..HEADER_BYTES].fill(0);
    p[4] = kind;
    put_u16(
        p,
        24,
        u16::try_from(size).expect("page size checked at open"),
    );
    put_u32(p, 28, 1);
}

/// Fills in the header fields and the checksum before a page is written.
pub fn seal(p: &mut [u8], page_id: u64, txn: u64) {
    put_u64(p, 8, txn);
    put_u64(p, 16, page_id);
    let c = crc32c::crc32c(&p[4..]);
    put_u32(p, 0, c);
}

/// Checks a page (or run) read back from disk: checksum, id, writer and kind.
pub fn verify(p: &[u8], page_id: u64, expect_txn: Option<u64>) -> Result<(), String> {
    if p.len() < HEADER_BYTES {
        return Err("short page".into());
    }
    if crc32c::crc32c(&p[4..]) != u32_at(p, 0) {
        return Err(format!("page {page_id}: checksum mismatch"));
    }
    if id(p) != page_id {
        return Err(format!("page {page_id}: header names page {}", id(p)));
    }
    if let Some(t) = expect_txn
        && txn(p) != t
    {
        return Err(format!(
            "page {page_id}: written by txn {} but referenced as txn {t}",
            txn(p)
        ));
    }
    if !matches!(
        kind(p),
        KIND_LEAF | KIND_BRANCH | KIND_OVERFLOW | KIND_FREELIST
    ) {
        return Err(format!("page {page_id}: unknown kind {}", kind(p)));
    }
    Ok(())
}

/// Checks that the slot directory and every entry lie inside the page, so later accessors
/// cannot index out of bounds on a page that passed its checksum but was written by a bug.
pub fn verify_layout(p: &[u8]) -> Result<(), String> {
    let n = count(p);
    let ds = data_start(p);
    if HEADER_BYTES + 2 * n > ds || ds > p.len() {
        return Err("slot directory overlaps entries".into());
    }
    let is_leaf = kind(p) == KIND_LEAF;
    for i in 0..n {
        let off = slot(p, i);
        let hdr = if is_leaf {
            LEAF_ENTRY_HEADER
        } else {
            BRANCH_ENTRY_HEADER
        };
        if off < ds || off + hdr > p.len() {
            return Err(format!("entry {i} outside the page"));
        }
        if entry_len(p, off, is_leaf) + off > p.len() {
            return Err(format!("entry {i} runs past the page"));
        }
    }
    Ok(())
}

fn entry_len(p: &[u8], off: usize, leaf: bool) -> usize {
    let klen = usize::from(u16_at(p, off));
    if leaf {
        let v = u32_at(p, off + 2);
        let vlen = if v & OVERFLOW_FLAG != 0 {
            OVERFLOW_REF_BYTES
        } else {
            v as usize
        };
        LEAF_ENTRY_HEADER + klen + vlen
    } else {
        BRANCH_ENTRY_HEADER + klen
    }
}

/// Key of entry `i`.
#[inline]
pub fn key(p: &[u8], i: usize) -> &[u8] {
    let off = slot(p, i);
    let klen = usize::from(u16_at(p, off));
    let hdr = if kind(p) == KIND_LEAF {
        LEAF_ENTRY_HEADER
    } else {
        BRANCH_ENTRY_HEADER
    };
    &p[off + hdr..off + hdr + klen]
}

/// Value of leaf entry `i`.
#[inline]
pub fn value(p: &[u8], i: usize) -> ValueRef<'_> {
    let off = slot(p, i);
    let klen = usize::from(u16_at(p, off));
    let v = u32_at(p, off + 2);
    let at = off + LEAF_ENTRY_HEADER + klen;
    if v & OVERFLOW_FLAG != 0 {
        ValueRef::Overflow {
            ptr: PagePtr {
                page: u64_at(p, at),
                txn: u64_at(p, at + 8),
            },
            len: u64_at(p, at + 16),
        }
    } else {
        ValueRef::Inline(&p[at..at + v as usize])
    }
}

/// Child pointer of branch entry `i`.
#[inline]
pub fn child(p: &[u8], i: usize) -> PagePtr {
    let off = slot(p, i);
    PagePtr {
        page: u64_at(p, off + 2),
        txn: u64_at(p, off + 10),
    }
}

/// Rewrites the child pointer of branch entry `i` in place.
pub fn set_child(p: &mut [u8], i: usize, c: PagePtr) {
    let off = slot(p, i);
    put_u64(p, off + 2, c.page);
    put_u64(p, off + 10, c.txn);
}

/// Binary search of the keys: `Ok(i)` if entry i holds `k`, else `Err(insertion point)`.
#[inline]
pub fn search(p: &[u8], k: &[u8]) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0usize, count(p));
    while lo < hi {
        let mid = (lo + hi) / 2;
        match key(p, mid).cmp(k) {
            Ordering::Less => lo = mid + 1,
            Ordering::Greater => hi = mid,
            Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

/// The child of a branch that covers `k`: the last entry whose key is <= `k`.
#[inline]
pub fn child_index(p: &[u8], k: &[u8]) -> usize {
    debug_assert_eq!(kind(p), KIND_BRANCH);
    // Entry 0 has the empty key and covers everything below entry 1.
    let (mut lo, mut hi) = (1usize, count(p));
    while lo < hi {
        let mid = (lo + hi) / 2;
        if key(p, mid) <= k {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo - 1
}

/// Bytes a leaf entry takes in a page, its slot included.
pub fn leaf_entry_bytes(klen: usize, stored_vlen: usize) -> usize {
    2 + LEAF_ENTRY_HEADER + klen + stored_vlen
}

/// Bytes a branch entry takes in a page, its slot included.
pub fn branch_entry_bytes(klen: usize) -> usize {
    2 + BRANCH_ENTRY_HEADER + klen
}

/// Bytes that live entries and slots take.
pub fn used_bytes(p: &[u8]) -> usize {
    HEADER_BYTES + 2 * count(p) + (p.len() - data_start(p)) - garbage(p)
}

/// Bytes entry `i` takes, its slot included.
pub fn entry_bytes(p: &[u8], i: usize) -> usize {
    2 + entry_len(p, slot(p, i), kind(p) == KIND_LEAF)
}

/// The raw bytes of entry `i` (without its slot).
pub fn entry_raw(p: &[u8], i: usize) -> &[u8] {
    let off = slot(p, i);
    &p[off..off + entry_len(p, off, kind(p) == KIND_LEAF)]
}

/// Whether an entry of `entry_bytes` (slot included) fits, possibly after compaction.
pub fn fits(p: &[u8], entry_bytes: usize) -> bool {
    used_bytes(p) + entry_bytes <= p.len()
}

/// Encodes a leaf entry.
pub fn encode_leaf_entry(out: &mut Vec<u8>, k: &[u8], v: LeafValue<'_>) {
    out.clear();
    out.extend_from_slice(
        &u16::try_from(k.len())
            .expect("key size checked")
            .to_le_bytes(),
    );
    match v {
        LeafValue::Inline(bytes) => {
            let l = u32::try_from(bytes.len()).expect("inline values are small");
            assert!(l & OVERFLOW_FLAG == 0);
            out.extend_from_slice(&l.to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(bytes);
        }
        LeafValue::Overflow { ptr, len } => {
            out.extend_from_slice(&OVERFLOW_FLAG.to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&ptr.page.to_le_bytes());
            out.extend_from_slice(&ptr.txn.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
    }
}

/// A value as it is about to be stored in a leaf.
#[derive(Debug, Clone, Copy)]
pub enum LeafValue<'a> {
    /// Inline bytes.
    Inline(&'a [u8]),
    /// Reference to an overflow run.
    Overflow {
        /// First page of the run.
        ptr: PagePtr,
        /// Length of the value.
        len: u64,
    },
}

/// Encodes a branch entry.
pub fn encode_branch_entry(out: &mut Vec<u8>, k: &[u8], c: PagePtr) {
    out.clear();
    out.extend_from_slice(
        &u16::try_from(k.len())
            .expect("key size checked")
            .to_le_bytes(),
    );
    out.extend_from_slice(&c.page.to_le_bytes());
    out.extend_from_slice(&c.txn.to_le_bytes());
    out.extend_from_slice(k);
}

/// Inserts raw entry bytes as entry `i`. The caller checked [`fits`].
pub fn insert_raw(p: &mut [u8], i: usize, entry: &[u8]) {
    let n = count(p);
    assert!(i <= n);
    let contiguous = data_start(p) - (HEADER_BYTES + 2 * n);
    if contiguous < entry.len() + 2 {
        compact(p);
    }
    let ds = data_start(p);
    assert!(
        ds - (HEADER_BYTES + 2 * n) >= entry.len() + 2,
        "caller checked the fit"
    );
    let off = ds - entry.len();
    p[off..ds].copy_from_slice(entry);
    put_u16(p, 24, u16::try_from(off).expect("offset fits"));
    let s = HEADER_BYTES + 2 * i;
    p.copy_within(s..HEADER_BYTES + 2 * n, s + 2);
    put_u16(p, s, u16::try_from(off).expect("offset fits"));
    put_u16(p, 6, u16::try_from(n + 1).expect("count fits"));
}

/// Appends raw entry bytes after the last entry (building a page in key order).
pub fn push_raw(p: &mut [u8], entry: &[u8]) {
    let n = count(p);
    insert_raw(p, n, entry);
}

/// Removes entry `i`; its bytes become garbage until the next compaction.
pub fn remove(p: &mut [u8], i: usize) {
    let n = count(p);
    assert!(i < n);
    let len = entry_len(p, slot(p, i), kind(p) == KIND_LEAF);
    let s = HEADER_BYTES + 2 * i;
    p.copy_within(s + 2..HEADER_BYTES + 2 * n, s);
    put_u16(p, 6, u16::try_from(n - 1).expect("count fits"));
    let g = garbage(p) + len;
    put_u16(p, 26, u16::try_from(g).expect("garbage fits"));
}

/// Rewrites the entries packed at the end of the page, dropping garbage.
pub fn compact(p: &mut [u8]) {
    if garbage(p) == 0 {
        return;
    }
    let n = count(p);
    let leaf = kind(p) == KIND_LEAF;
    let copy = p.to_vec();
    let mut end = p.len();
    for i in 0..n {
        let off = slot(&copy, i);
        let len = entry_len(&copy, off, leaf);
        end -= len;
        p[end..end + len].copy_from_slice(&copy[off..off + len]);
        put_u16(
            p,
            HEADER_BYTES + 2 * i,
            u16::try_from(end).expect("offset fits"),
        );
    }
    put_u16(p, 24, u16::try_from(end).expect("offset fits"));
    put_u16(p, 26, 0);
}

/// Marks a buffer as an overflow run of `pages` pages (the value follows the header).
pub fn init_overflow(run: &mut [u8], pages: u32) {
    run[..HEADER_BYTES].fill(0);
    run[4] = KIND_OVERFLOW;
    put_u32(run, 28, pages);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_with(keys: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        init(&mut p, KIND_LEAF);
        let mut e = Vec::new();
        for k in keys {
            encode_leaf_entry(&mut e, k, LeafValue::Inline(b"v"));
            let i = search(&p, k).unwrap_err();
            insert_raw(&mut p, i, &e);
        }
        p
    }

    #[test]
    fn insert_search_remove_compact() {
        let mut p = leaf_with(&[b"m", b"a", b"z", b"c"]);
        let keys: Vec<&[u8]> = (0..count(&p)).map(|i| key(&p, i)).collect();
        assert_eq!(keys, vec![&b"a"[..], b"c", b"m", b"z"]);
        assert_eq!(search(&p, b"m"), Ok(2));
        assert_eq!(search(&p, b"d"), Err(2));
        let used = used_bytes(&p);
        remove(&mut p, 1);
        assert!(used_bytes(&p) < used);
        compact(&mut p);
        assert_eq!(garbage(&p), 0);
        assert_eq!(key(&p, 1), b"m");
        assert_eq!(value(&p, 1), ValueRef::Inline(b"v"));
        verify_layout(&p).unwrap();
    }

    #[test]
    fn seal_and_verify_detect_flips() {
        let mut p = leaf_with(&[b"k1", b"k2"]);
        seal(&mut p, 7, 3);
        verify(&p, 7, Some(3)).unwrap();
        assert!(verify(&p, 8, Some(3)).is_err());
        assert!(verify(&p, 7, Some(4)).is_err());
        for bit in (0..4096 * 8).step_by(97) {
            let mut c = p.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(verify(&c, 7, Some(3)).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn branch_child_index() {
        let mut p = vec![0u8; 4096];
        init(&mut p, KIND_BRANCH);
        let mut e = Vec::new();
        for (k, c) in [(&b""[..], 10u64), (b"f", 11), (b"p", 12)] {
            encode_branch_entry(&mut e, k, PagePtr { page: c, txn: 1 });
            push_raw(&mut p, &e);
        }
        assert_eq!(child_index(&p, b"a"), 0);
        assert_eq!(child_index(&p, b"f"), 1);
        assert_eq!(child_index(&p, b"o"), 1);
        assert_eq!(child_index(&p, b"zz"), 2);
        assert_eq!(child(&p, 2).page, 12);
    }
}
