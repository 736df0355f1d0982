//! Reads a bbolt database file (etcd's backend and snapshot format) held in memory: the newest
//! valid meta page, the root bucket's buckets, and each bucket's keys in order, including
//! buckets stored inline in their parent. The file is hostile until proven otherwise: every
//! offset is bounds-checked, each page is visited at most once per walk (no cycles, no
//! exponential sharing), depth is limited, and a malformed structure is an error, never a
//! panic.

use super::bolt_format::{
    BRANCH_FLAG, BUCKET_HEADER_BYTES, BUCKET_LEAF_FLAG, ELEMENT_BYTES, LEAF_FLAG, MAGIC,
    META_CHECKSUMMED_BYTES, META_FLAG, PAGE_HEADER_BYTES, VERSION, fnv1a64,
};

/// Deepest tree the reader walks; deeper means a corrupt (cyclic) structure.
const DEPTH_MAX: usize = 64;

/// Where a bucket's tree lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketRoot<'a> {
    /// A tree rooted at a page.
    Page(u64),
    /// A single leaf stored in the parent's value.
    Inline(&'a [u8]),
}

/// An open bbolt file.
#[derive(Debug)]
pub struct BoltReader<'a> {
    data: &'a [u8],
    page_bytes: usize,
    /// Pages below this belong to the state the meta names.
    high_water: u64,
    root: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A decoded node: its flags and raw bytes (header included).
struct Node<'a> {
    flags: u16,
    count: usize,
    bytes: &'a [u8],
}

impl<'a> Node<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Node<'a>, String> {
        let flags = u16_at(bytes, 8).ok_or("truncated page header")?;
        let count = usize::from(u16_at(bytes, 10).ok_or("truncated page header")?);
        if PAGE_HEADER_BYTES + count * ELEMENT_BYTES > bytes.len() {
            return Err(format!("{count} elements overrun their page"));
        }
        Ok(Node {
            flags,
            count,
            bytes,
        })
    }

    /// A slice of `len` bytes `pos` past element `i`'s own offset.
    fn at(&self, i: usize, pos: u32, len: u32) -> Result<&'a [u8], String> {
        let start = (PAGE_HEADER_BYTES + i * ELEMENT_BYTES)
            .checked_add(pos as usize)
            .ok_or("element offset overflows")?;
        let end = start
            .checked_add(len as usize)
            .ok_or("element length overflows")?;
        self.bytes
            .get(start..end)
            .ok_or_else(|| format!("element {i} points outside its node"))
    }

    fn leaf(&self, i: usize) -> Result<(u32, &'a [u8], &'a [u8]), String> {
        let e = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
        let get = |o| u32_at(self.bytes, e + o).ok_or("truncated element");
        let (flags, pos, ksize, vsize) = (get(0)?, get(4)?, get(8)?, get(12)?);
        let kv = self.at(i, pos, ksize.checked_add(vsize).ok_or("element too large")?)?;
        let (k, v) = kv.split_at(ksize as usize);
        Ok((flags, k, v))
    }

    fn child(&self, i: usize) -> Result<u64, String> {
        let e = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
        u64_at(self.bytes, e + 8).ok_or_else(|| "truncated element".into())
    }
}

impl<'a> BoltReader<'a> {
    /// Opens the file's bytes: picks the newest meta page that checks out.
    pub fn open(data: &'a [u8]) -> Result<BoltReader<'a>, String> {
        let meta = |page_at: usize| -> Option<(u64, BoltReader<'a>)> {
            let m = data.get(page_at + PAGE_HEADER_BYTES..page_at + PAGE_HEADER_BYTES + 64)?;
            if u16_at(data, page_at + 8)? & META_FLAG == 0
                || u32_at(m, 0)? != MAGIC
                || u32_at(m, 4)? != VERSION
                || u64_at(m, META_CHECKSUMMED_BYTES)? != fnv1a64(&m[..META_CHECKSUMMED_BYTES])
            {
                return None;
            }
            let page_bytes = u32_at(m, 8)? as usize;
            if !(512..=65_536).contains(&page_bytes) || !page_bytes.is_power_of_two() {
                return None;
            }
            let high_water = u64_at(m, 40)?;
            if high_water.checked_mul(page_bytes as u64)? > data.len() as u64 {
                return None;
            }
            Some((
                u64_at(m, 48)?,
                BoltReader {
                    data,
                    page_bytes,
                    high_water,
                    root: u64_at(m, 16)?,
                },
            ))
        };
        let first = meta(0);
        // The second meta page sits one page in; its size is whatever the first says, or
        // one of the usual sizes when the first is damaged.
        let second = first
            .as_ref()
            .map(|(_, r)| r.page_bytes)
            .into_iter()
            .chain([4096, 8192, 16_384, 65_536])
            .find_map(|ps| meta(ps).filter(|(_, r)| r.page_bytes == ps));
        [first, second]
            .into_iter()
            .flatten()
            .max_by_key(|(txid, _)| *txid)
            .map(|(_, r)| r)
            .ok_or_else(|| "not a bbolt database (no valid meta page)".into())
    }

    fn node(
        &self,
        page: u64,
        seen: &mut std::collections::HashSet<u64>,
    ) -> Result<Node<'a>, String> {
        if page < 2 || page >= self.high_water {
            return Err(format!("page {page} outside the database"));
        }
        let at = usize::try_from(page).map_err(|e| e.to_string())? * self.page_bytes;
        let header = self
            .data
            .get(at..at + PAGE_HEADER_BYTES)
            .ok_or("page outside the file")?;
        let overflow = u64::from(u32_at(header, 12).ok_or("truncated page header")?);
        let pages = overflow + 1;
        if page
            .checked_add(pages)
            .is_none_or(|end| end > self.high_water)
        {
            return Err(format!("page {page} runs past the database"));
        }
        for p in page..page + pages {
            if !seen.insert(p) {
                return Err(format!("page {p} is referenced twice"));
            }
        }
        let len = usize::try_from(pages).map_err(|e| e.to_string())? * self.page_bytes;
        let node = Node::parse(&self.data[at..at + len])?;
        if u64_at(node.bytes, 0) != Some(page) {
            return Err(format!("page {page} holds another page's id"));
        }
        Ok(node)
    }

    /// The root bucket's buckets, in key order.
    pub fn buckets(&self) -> Result<Vec<(&'a [u8], BucketRoot<'a>)>, String> {
        let mut out = Vec::new();
        self.walk(BucketRoot::Page(self.root), &mut |flags, k, v| {
            if flags & BUCKET_LEAF_FLAG == 0 {
                return Err(format!(
                    "root bucket holds a plain key {:?}",
                    String::from_utf8_lossy(k)
                ));
            }
            out.push((k, bucket_root(v)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with each key and value of a bucket, in order; nested buckets are refused.
    pub fn for_each(
        &self,
        root: BucketRoot<'a>,
        f: &mut dyn FnMut(&'a [u8], &'a [u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        self.walk(root, &mut |flags, k, v| {
            if flags & BUCKET_LEAF_FLAG != 0 {
                return Err("nested buckets are not part of etcd's schema".into());
            }
            f(k, v)
        })
    }

    fn walk(
        &self,
        root: BucketRoot<'a>,
        f: &mut dyn FnMut(u32, &'a [u8], &'a [u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        let mut last: Option<&[u8]> = None;
        match root {
            BucketRoot::Inline(page) => {
                let node = Node::parse(page)?;
                if node.flags & LEAF_FLAG == 0 {
                    return Err("an inline bucket must be a leaf".into());
                }
                self.leaf_entries(&node, &mut last, f)
            }
            BucketRoot::Page(p) => self.walk_page(p, 0, &mut seen, &mut last, f),
        }
    }

    fn leaf_entries(
        &self,
        node: &Node<'a>,
        last: &mut Option<&'a [u8]>,
        f: &mut dyn FnMut(u32, &'a [u8], &'a [u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        for i in 0..node.count {
            let (flags, k, v) = node.leaf(i)?;
            if last.is_some_and(|l| l >= k) {
                return Err("keys out of order".into());
            }
            *last = Some(k);
            f(flags, k, v)?;
        }
        Ok(())
    }

    fn walk_page(
        &self,
        page: u64,
        depth: usize,
        seen: &mut std::collections::HashSet<u64>,
        last: &mut Option<&'a [u8]>,
        f: &mut dyn FnMut(u32, &'a [u8], &'a [u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if depth > DEPTH_MAX {
            return Err("tree deeper than any valid tree".into());
        }
        let node = self.node(page, seen)?;
        if node.flags & LEAF_FLAG != 0 {
            return self.leaf_entries(&node, last, f);
        }
        if node.flags & BRANCH_FLAG == 0 {
            return Err(format!("page {page} is neither a branch nor a leaf"));
        }
        for i in 0..node.count {
            self.walk_page(node.child(i)?, depth + 1, seen, last, f)?;
        }
        Ok(())
    }
}

fn bucket_root(v: &[u8]) -> Result<BucketRoot<'_>, String> {
    let root = u64_at(v, 0).ok_or("truncated bucket header")?;
    if root == 0 {
        Ok(BucketRoot::Inline(&v[BUCKET_HEADER_BYTES..]))
    } else {
        Ok(BucketRoot::Page(root))
    }
}

#[cfg(test)]
mod tests {
    use super::super::bolt_writer::BoltWriter;
    use super::*;
    use std::io::Cursor;

    fn sample() -> Vec<u8> {
        let mut w = BoltWriter::new(Cursor::new(Vec::new())).unwrap();
        w.bucket(b"a").unwrap();
        w.bucket(b"key").unwrap();
        for i in 0..2000u32 {
            let v = if i % 400 == 3 {
                vec![1u8; 10_000]
            } else {
                vec![2u8; 30]
            };
            w.put(format!("{i:08}").as_bytes(), &v).unwrap();
        }
        w.bucket(b"meta").unwrap();
        w.put(b"x", b"y").unwrap();
        w.finish().unwrap().0.into_inner()
    }

    fn read_all(f: &[u8]) -> Result<Vec<(Vec<u8>, usize)>, String> {
        let r = BoltReader::open(f)?;
        let mut out = Vec::new();
        for (name, root) in r.buckets()? {
            out.push((name.to_vec(), 0));
            r.for_each(root, &mut |k, v| {
                out.push((k.to_vec(), v.len()));
                Ok(())
            })?;
        }
        Ok(out)
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let all = read_all(&sample()).unwrap();
        assert_eq!(all.len(), 3 + 2000 + 1);
        assert_eq!(all[0].0, b"a");
        assert_eq!(all[1].0, b"key");
        assert_eq!(all[2], (b"00000000".to_vec(), 30));
        assert_eq!(all[5], (b"00000003".to_vec(), 10_000));
    }

    #[test]
    fn inline_buckets_are_read() {
        // A root bucket leaf whose one bucket is stored inline, as bbolt does for small ones.
        let mut inline = vec![0u8; 16];
        let mut page = vec![0u8; 16];
        page[8..10].copy_from_slice(&LEAF_FLAG.to_le_bytes());
        page[10..12].copy_from_slice(&1u16.to_le_bytes());
        page.extend_from_slice(&0u32.to_le_bytes());
        page.extend_from_slice(&16u32.to_le_bytes());
        page.extend_from_slice(&1u32.to_le_bytes());
        page.extend_from_slice(&2u32.to_le_bytes());
        page.extend_from_slice(b"kvv");
        inline.extend_from_slice(&page);
        assert_eq!(bucket_root(&inline).unwrap(), BucketRoot::Inline(&page[..]));
        let r = BoltReader {
            data: &[],
            page_bytes: 4096,
            high_water: 0,
            root: 0,
        };
        let mut got = Vec::new();
        r.for_each(BucketRoot::Inline(&page), &mut |k, v| {
            got.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [(b"k".to_vec(), b"vv".to_vec())]);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let good = sample();
        assert!(read_all(&good[..4096 * 3]).is_err());
        assert!(read_all(&[]).is_err());
        assert!(read_all(&vec![0u8; 3 * 4096]).is_err());
        // Flip bytes all over the file: each read either succeeds or fails cleanly.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..300 {
            let mut f = good.clone();
            for _ in 0..8 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = (rng % f.len() as u64) as usize;
                f[at] ^= (rng >> 32) as u8 | 1;
            }
            let _ = read_all(&f);
        }
        // A meta checksum mismatch on both pages is refused.
        let mut f = good.clone();
        f[PAGE_HEADER_BYTES + 20] ^= 1;
        f[4096 + PAGE_HEADER_BYTES + 20] ^= 1;
        assert!(BoltReader::open(&f).is_err());
    }
}
