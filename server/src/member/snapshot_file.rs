//! The snapshot file of the key space between members: a consistent copy of every row of the
//! tree, written for peers that fell behind the compacted log and restored in place by a member
//! installing one. (Clients get etcd's format instead: see `etcd::backup`.)
//!
//! Layout (see docs/format.md): the magic `QKVSNAP1`; each row as `u32 key length, key,
//! u32 value length, value` (little-endian) in key order; `u32::MAX`; the `u64` applied log
//! index; zero padding to a multiple of 512 bytes; the SHA-256 of everything before it (the
//! trailer etcd's tools check). A file is hostile until its digest and every length check out.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::mvcc::Mvcc;

/// First bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"QKVSNAP1";
const DIGEST_BYTES: u64 = 32;
/// Largest value a restored row may have.
const VALUE_BYTES_MAX: u32 = 256 << 20;

/// Writes a consistent snapshot of the whole tree to `path` and syncs it; returns the applied
/// index it holds and its size in bytes.
pub fn write(mvcc: &Mvcc, path: &Path) -> std::io::Result<(u64, u64)> {
    struct Hashing {
        w: BufWriter<std::fs::File>,
        h: Sha256,
        len: u64,
    }
    impl Hashing {
        fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
            self.h.update(b);
            self.len += b.len() as u64;
            self.w.write_all(b)
        }
    }
    let snap = mvcc.snapshot();
    let mut o = Hashing {
        w: BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?),
        h: Sha256::new(),
        len: 0,
    };
    o.put(SNAPSHOT_MAGIC)?;
    for item in snap.txn().iter() {
        let (k, v) = item.map_err(std::io::Error::other)?;
        o.put(&(k.len() as u32).to_le_bytes())?;
        o.put(k)?;
        o.put(&(v.len() as u32).to_le_bytes())?;
        o.put(v)?;
    }
    o.put(&u32::MAX.to_le_bytes())?;
    let applied = snap.applied_index();
    o.put(&applied.to_le_bytes())?;
    let pad = (512 - o.len % 512) % 512;
    o.put(&vec![0u8; pad as usize])?;
    let digest = o.h.finalize();
    o.w.write_all(&digest)?;
    let f = o.w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok((applied, f.metadata()?.len()))
}

fn bad(why: impl Into<String>) -> String {
    format!("invalid snapshot: {}", why.into())
}

/// Checks the file's length and digest without trusting anything in it; returns the length
/// of the part the digest covers.
pub fn verify(path: &Path) -> Result<u64, String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < 512 + DIGEST_BYTES || (len - DIGEST_BYTES) % 512 != 0 {
        return Err(bad(format!("{len} bytes is not a snapshot's length")));
    }
    let body = len - DIGEST_BYTES;
    let mut h = Sha256::new();
    let mut left = body;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = buf.len().min(left as usize);
        f.read_exact(&mut buf[..n]).map_err(|e| e.to_string())?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    let mut want = [0u8; DIGEST_BYTES as usize];
    f.read_exact(&mut want).map_err(|e| e.to_string())?;
    if h.finalize().as_slice() != want {
        return Err(bad("SHA-256 mismatch"));
    }
    Ok(body)
}

/// Replaces every row of the tree with the snapshot's, in one durable transaction, and the
/// key index with one for them; returns the applied index the tree now holds. On error the
/// tree is unchanged.
pub fn restore(mvcc: &Mvcc, path: &Path) -> Result<u64, String> {
    mvcc.replace(|db| rows(db, path))
}

/// The transaction that replaces every row of `db` with the snapshot's, and the applied
/// index it holds.
fn rows(db: &quorumkv_btree::Db, path: &Path) -> Result<(quorumkv_btree::WriteTxn, u64), String> {
    let body = verify(path)?;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 20, file).take(body);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| bad("truncated"))?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(bad("not a quorumkv snapshot"));
    }
    let key_max = db.key_bytes_max();
    let mut w = db.begin_write().map_err(|e| e.to_string())?;
    {
        let old = db.begin_read();
        for item in old.iter() {
            let (k, _) = item.map_err(|e| e.to_string())?;
            w.remove(k).map_err(|e| e.to_string())?;
        }
    }
    let u32_at = |r: &mut dyn Read| -> Result<u32, String> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|_| bad("truncated"))?;
        Ok(u32::from_le_bytes(b))
    };
    let mut prev: Option<Vec<u8>> = None;
    loop {
        let klen = u32_at(&mut r)?;
        if klen == u32::MAX {
            break;
        }
        if klen as usize > key_max || klen == 0 {
            return Err(bad(format!("key of {klen} bytes")));
        }
        let mut k = vec![0u8; klen as usize];
        r.read_exact(&mut k).map_err(|_| bad("truncated"))?;
        if prev.as_ref().is_some_and(|p| *p >= k) {
            return Err(bad("rows out of order"));
        }
        let vlen = u32_at(&mut r)?;
        if vlen > VALUE_BYTES_MAX {
            return Err(bad(format!("value of {vlen} bytes")));
        }
        let mut v = vec![0u8; vlen as usize];
        r.read_exact(&mut v).map_err(|_| bad("truncated"))?;
        w.insert(&k, &v).map_err(|e| bad(e.to_string()))?;
        prev = Some(k);
    }
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(|_| bad("truncated"))?;
    let applied = u64::from_le_bytes(b);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    if rest.len() >= 512 || rest.iter().any(|&x| x != 0) {
        return Err(bad("bad padding"));
    }
    w.set_user_value(applied);
    // Every row replaced in the transaction, nothing committed yet.
    fail::fail_point!("kv::snapshot_restore", |_| Err(
        "injected failure at kv::snapshot_restore".into()
    ));
    Ok((w, applied))
}
