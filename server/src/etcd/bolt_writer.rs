//! Writes a bbolt database file (the format of etcd's backend, and so of etcd's snapshot
//! files) from buckets whose keys arrive in order, streaming: leaves are written as they
//! fill, and only one branch entry per node stays in memory.
//!
//! Layout written: pages 0 and 1 are the two meta pages (transactions 0 and 1, both naming
//! the same state), page 2 an empty freelist, then every bucket's tree bottom-up (leaves in
//! key order, then each branch level), then the root bucket's leaf, which names each bucket's
//! root page. A node larger than a page (a large value) spans contiguous pages, as bbolt's
//! overflow does. Every page from 0 to the high-water mark is reachable, so `bbolt check`
//! (and `etcdctl snapshot status`, which runs it) finds nothing unreachable or unfreed.

use std::io::{Seek, SeekFrom, Write};

use super::bolt_format::{
    BRANCH_FLAG, BUCKET_HEADER_BYTES, BUCKET_LEAF_FLAG, ELEMENT_BYTES, FREELIST_FLAG, LEAF_FLAG,
    MAGIC, META_CHECKSUMMED_BYTES, META_FLAG, PAGE_HEADER_BYTES, VERSION, fnv1a64,
};

/// bbolt's page size used here (etcd's default on x86-64 Linux).
pub const PAGE_BYTES: usize = 4096;
const FREELIST_PAGE: u64 = 2;
const FIRST_NODE_PAGE: u64 = 3;
/// Largest key bbolt accepts.
pub const KEY_BYTES_MAX: usize = 32_768;

/// A bbolt file under construction.
#[derive(Debug)]
pub struct BoltWriter<W: Write + Seek> {
    out: W,
    next_page: u64,
    /// Finished buckets: name and root page.
    buckets: Vec<(Vec<u8>, u64)>,
    /// The bucket being written: its name, the pending leaf's entries and their encoded size,
    /// the (first key, page) of every node of its bottom level written so far, and its last
    /// key.
    open: Option<OpenBucket>,
}

#[derive(Debug)]
struct OpenBucket {
    name: Vec<u8>,
    leaf: Vec<(Vec<u8>, Vec<u8>)>,
    leaf_bytes: usize,
    nodes: Vec<(Vec<u8>, u64)>,
    last_key: Option<Vec<u8>>,
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

fn page_header(out: &mut Vec<u8>, id: u64, flags: u16, count: usize, overflow: u64) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(
        &u16::try_from(count)
            .expect("node entries fit u16")
            .to_le_bytes(),
    );
    out.extend_from_slice(
        &u32::try_from(overflow)
            .expect("node pages fit u32")
            .to_le_bytes(),
    );
}

impl<W: Write + Seek> BoltWriter<W> {
    /// Starts a file at the current position of `out` (which must be its start).
    pub fn new(mut out: W) -> std::io::Result<BoltWriter<W>> {
        // Metas and the freelist are written last; reserve their pages.
        out.write_all(&[0u8; PAGE_BYTES * FIRST_NODE_PAGE as usize])?;
        Ok(BoltWriter {
            out,
            next_page: FIRST_NODE_PAGE,
            buckets: Vec::new(),
            open: None,
        })
    }

    /// Starts the next bucket; names must come in increasing byte order.
    pub fn bucket(&mut self, name: &[u8]) -> std::io::Result<()> {
        self.end_bucket()?;
        if name.is_empty()
            || self
                .buckets
                .last()
                .is_some_and(|(n, _)| n.as_slice() >= name)
        {
            return Err(invalid(format!(
                "bucket {:?} out of order or empty",
                String::from_utf8_lossy(name)
            )));
        }
        self.open = Some(OpenBucket {
            name: name.to_vec(),
            leaf: Vec::new(),
            leaf_bytes: PAGE_HEADER_BYTES,
            nodes: Vec::new(),
            last_key: None,
        });
        Ok(())
    }

    /// Adds a key to the open bucket; keys must come in increasing byte order.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        let Some(b) = self.open.as_mut() else {
            return Err(invalid("put outside a bucket".into()));
        };
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(invalid(format!("key of {} bytes", key.len())));
        }
        if b.last_key.as_deref().is_some_and(|l| l >= key) {
            return Err(invalid("keys out of order".into()));
        }
        b.last_key = Some(key.to_vec());
        let bytes = ELEMENT_BYTES + key.len() + value.len();
        if !b.leaf.is_empty() && b.leaf_bytes + bytes > PAGE_BYTES {
            self.flush_leaf()?;
        }
        let b = self.open.as_mut().expect("checked above");
        b.leaf.push((key.to_vec(), value.to_vec()));
        b.leaf_bytes += bytes;
        Ok(())
    }

    /// Writes one node (a leaf or a branch) at the next free page; returns its page.
    fn write_node(&mut self, flags: u16, elements: &[(&[u8], &[u8], u64)]) -> std::io::Result<u64> {
        let id = self.next_page;
        let data: usize = elements.iter().map(|(k, v, _)| k.len() + v.len()).sum();
        let size = PAGE_HEADER_BYTES + ELEMENT_BYTES * elements.len() + data;
        let pages = size.div_ceil(PAGE_BYTES) as u64;
        let mut buf = Vec::with_capacity(pages as usize * PAGE_BYTES);
        page_header(&mut buf, id, flags, elements.len(), pages - 1);
        // Each element's `pos` counts from the element itself to its key.
        let mut data_at = PAGE_HEADER_BYTES + ELEMENT_BYTES * elements.len();
        for (i, (k, v, child)) in elements.iter().enumerate() {
            let elem_at = PAGE_HEADER_BYTES + ELEMENT_BYTES * i;
            let pos = u32::try_from(data_at - elem_at).expect("node fits u32");
            let klen = u32::try_from(k.len()).expect("key fits u32");
            if flags == BRANCH_FLAG {
                buf.extend_from_slice(&pos.to_le_bytes());
                buf.extend_from_slice(&klen.to_le_bytes());
                buf.extend_from_slice(&child.to_le_bytes());
            } else {
                // A leaf's `child` carries the element flags.
                buf.extend_from_slice(&u32::try_from(*child).expect("flags").to_le_bytes());
                buf.extend_from_slice(&pos.to_le_bytes());
                buf.extend_from_slice(&klen.to_le_bytes());
                buf.extend_from_slice(
                    &u32::try_from(v.len())
                        .map_err(|_| invalid("value too large".into()))?
                        .to_le_bytes(),
                );
            }
            data_at += k.len() + v.len();
        }
        for (k, v, _) in elements {
            buf.extend_from_slice(k);
            buf.extend_from_slice(v);
        }
        debug_assert_eq!(buf.len(), size);
        buf.resize(pages as usize * PAGE_BYTES, 0);
        self.out.write_all(&buf)?;
        self.next_page += pages;
        Ok(id)
    }

    fn flush_leaf(&mut self) -> std::io::Result<()> {
        let b = self.open.as_mut().expect("a bucket is open");
        let leaf = std::mem::take(&mut b.leaf);
        b.leaf_bytes = PAGE_HEADER_BYTES;
        let elements: Vec<(&[u8], &[u8], u64)> = leaf
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice(), 0))
            .collect();
        let id = self.write_node(LEAF_FLAG, &elements)?;
        let first = leaf.first().map(|(k, _)| k.clone()).unwrap_or_default();
        self.open
            .as_mut()
            .expect("a bucket is open")
            .nodes
            .push((first, id));
        Ok(())
    }

    /// Finishes the open bucket, if any: its last leaf, then its branch levels.
    fn end_bucket(&mut self) -> std::io::Result<()> {
        let Some(b) = self.open.as_ref() else {
            return Ok(());
        };
        if !b.leaf.is_empty() || b.nodes.is_empty() {
            // An empty bucket still gets its (empty) root leaf.
            self.flush_leaf()?;
        }
        let b = self.open.take().expect("checked above");
        let mut level = b.nodes;
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut start = 0;
            while start < level.len() {
                let mut end = start;
                let mut bytes = PAGE_HEADER_BYTES;
                while end < level.len()
                    && (end == start || bytes + ELEMENT_BYTES + level[end].0.len() <= PAGE_BYTES)
                {
                    bytes += ELEMENT_BYTES + level[end].0.len();
                    end += 1;
                }
                // A branch of one child would add a level without narrowing anything.
                if end - start == 1 && end < level.len() {
                    end += 1;
                }
                let elements: Vec<(&[u8], &[u8], u64)> = level[start..end]
                    .iter()
                    .map(|(k, id)| (k.as_slice(), &[][..], *id))
                    .collect();
                let id = self.write_node(BRANCH_FLAG, &elements)?;
                next.push((level[start].0.clone(), id));
                start = end;
            }
            level = next;
        }
        self.buckets.push((b.name, level[0].1));
        Ok(())
    }

    /// Writes the root bucket, the freelist and both meta pages; returns the writer and the
    /// file's length in bytes.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.end_bucket()?;
        let values: Vec<[u8; BUCKET_HEADER_BYTES]> = self
            .buckets
            .iter()
            .map(|(_, root)| {
                // bucket header: root page, sequence.
                let mut v = [0u8; BUCKET_HEADER_BYTES];
                v[..8].copy_from_slice(&root.to_le_bytes());
                v
            })
            .collect();
        let names = std::mem::take(&mut self.buckets);
        let elements: Vec<(&[u8], &[u8], u64)> = names
            .iter()
            .zip(&values)
            .map(|((n, _), v)| (n.as_slice(), &v[..], u64::from(BUCKET_LEAF_FLAG)))
            .collect();
        let root = self.write_node(LEAF_FLAG, &elements)?;
        let high_water = self.next_page;
        let mut head = Vec::with_capacity(PAGE_BYTES * 3);
        for txid in 0..2u64 {
            let start = head.len();
            page_header(&mut head, txid, META_FLAG, 0, 0);
            let meta_at = head.len();
            head.extend_from_slice(&MAGIC.to_le_bytes());
            head.extend_from_slice(&VERSION.to_le_bytes());
            head.extend_from_slice(&(PAGE_BYTES as u32).to_le_bytes());
            head.extend_from_slice(&0u32.to_le_bytes()); // flags
            head.extend_from_slice(&root.to_le_bytes()); // root bucket: root page
            head.extend_from_slice(&0u64.to_le_bytes()); // root bucket: sequence
            head.extend_from_slice(&FREELIST_PAGE.to_le_bytes());
            head.extend_from_slice(&high_water.to_le_bytes());
            head.extend_from_slice(&txid.to_le_bytes());
            debug_assert_eq!(head.len() - meta_at, META_CHECKSUMMED_BYTES);
            let sum = fnv1a64(&head[meta_at..]);
            head.extend_from_slice(&sum.to_le_bytes());
            head.resize(start + PAGE_BYTES, 0);
        }
        page_header(&mut head, FREELIST_PAGE, FREELIST_FLAG, 0, 0);
        head.resize(PAGE_BYTES * 3, 0);
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&head)?;
        self.out
            .seek(SeekFrom::Start(high_water * PAGE_BYTES as u64))?;
        Ok((self.out, high_water * PAGE_BYTES as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn u16_at(b: &[u8], at: usize) -> usize {
        usize::from(u16::from_le_bytes(b[at..at + 2].try_into().unwrap()))
    }
    fn u32_at(b: &[u8], at: usize) -> usize {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Reads every (key, value) of the tree rooted at `page`, in order, as bbolt's cursor
    /// would; counts each page it visits in `seen`.
    fn walk(f: &[u8], page: u64, seen: &mut Vec<u64>, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        let p = &f[page as usize * PAGE_BYTES..];
        assert_eq!(u64_at(p, 0), page, "page id");
        let flags = u16_at(p, 8) as u16;
        let count = u16_at(p, 10);
        for i in 0..=u32_at(p, 12) as u64 {
            seen.push(page + i);
        }
        for i in 0..count {
            let e = PAGE_HEADER_BYTES + ELEMENT_BYTES * i;
            if flags == BRANCH_FLAG {
                let (pos, klen) = (u32_at(p, e), u32_at(p, e + 4));
                assert!(klen > 0 || i == 0);
                let _ = &p[e + pos..e + pos + klen];
                walk(f, u64_at(p, e + 8), seen, out);
            } else {
                assert_eq!(flags, LEAF_FLAG);
                let (pos, klen, vlen) = (u32_at(p, e + 4), u32_at(p, e + 8), u32_at(p, e + 12));
                let k = p[e + pos..e + pos + klen].to_vec();
                let v = p[e + pos + klen..e + pos + klen + vlen].to_vec();
                out.push((k, v));
            }
        }
    }

    #[test]
    fn buckets_read_back_in_order_and_every_page_is_reachable() {
        let mut w = BoltWriter::new(Cursor::new(Vec::new())).unwrap();
        w.bucket(b"empty").unwrap();
        w.bucket(b"key").unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>)> = (0..3000u32)
            .map(|i| {
                let v = if i % 500 == 7 {
                    vec![7u8; 9000]
                } else {
                    vec![i as u8; 40]
                };
                (format!("k{i:06}").into_bytes(), v)
            })
            .collect();
        for (k, v) in &want {
            w.put(k, v).unwrap();
        }
        assert!(w.put(b"k000000", b"again").is_err(), "keys must ascend");
        assert!(w.bucket(b"a").is_err(), "buckets must ascend");
        w.bucket(b"meta").unwrap();
        w.put(b"consistent_index", &9u64.to_be_bytes()).unwrap();
        let (c, len) = w.finish().unwrap();
        let f = c.into_inner();
        assert_eq!(f.len() as u64, len);
        assert_eq!(len % PAGE_BYTES as u64, 0);
        let high_water = len / PAGE_BYTES as u64;
        // Both metas valid, with their checksums.
        for txid in 0..2u64 {
            let m = &f[txid as usize * PAGE_BYTES + PAGE_HEADER_BYTES..];
            assert_eq!(u32_at(m, 0) as u32, MAGIC);
            assert_eq!(u32_at(m, 4), 2);
            assert_eq!(u32_at(m, 8), PAGE_BYTES);
            assert_eq!(u64_at(m, 32), FREELIST_PAGE);
            assert_eq!(u64_at(m, 40), high_water);
            assert_eq!(u64_at(m, 48), txid);
            assert_eq!(u64_at(m, 56), fnv1a64(&m[..META_CHECKSUMMED_BYTES]));
        }
        let root = u64_at(&f[PAGE_HEADER_BYTES..], 16);
        let mut seen = vec![0, 1, FREELIST_PAGE];
        let mut names = Vec::new();
        walk(&f, root, &mut seen, &mut names);
        let names: Vec<&[u8]> = names.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, [&b"empty"[..], b"key", b"meta"]);
        let mut buckets = Vec::new();
        walk(&f, root, &mut Vec::new(), &mut buckets);
        let mut contents = Vec::new();
        for (_, header) in &buckets {
            let mut kvs = Vec::new();
            walk(&f, u64_at(header, 0), &mut seen, &mut kvs);
            contents.push(kvs);
        }
        assert!(contents[0].is_empty());
        assert_eq!(contents[1], want);
        assert_eq!(contents[2].len(), 1);
        seen.sort_unstable();
        let all: Vec<u64> = (0..high_water).collect();
        assert_eq!(seen, all, "each page referenced exactly once");
    }
}
