//! How the MVCC key space maps onto the B+tree's flat, ordered keys.
//!
//! ```text
//! r <main><sub>                    -> Record     every stored version (and deletion), in
//!                                                 revision order: each put appends
//! m rev | m compact                -> u64        revision at the last compaction; compacted
//!                                                 revision
//! ```
//! The current revision is the newest `r` row's main revision, or `m rev` where compaction
//! removed that row (a deleted key's tombstone), whichever is larger: `m rev` is written only
//! by compactions (and restores), so a put touches no row but its own. Older trees wrote it
//! with every change, which the same rule reads.
//! Which revisions hold which key lives in memory (`index.rs`), rebuilt from the `r` rows
//! when the tree opens. Revisions are big-endian so byte order is numeric order.
//!
//! An older layout kept every version under its user key instead (`k <esc(key)> 00 01
//! <main><sub>` -> version without key) beside a current row per live key (`c <esc(key)>`)
//! and `r` rows holding only the key; `esc` maps 0x00 to 0x00 0xFF and `00 01` ends the key.
//! A tree in that layout is converted when it opens (see `Mvcc::open`).

/// Prefix of the legacy current rows.
pub const CURRENT: u8 = b'c';
/// Prefix of the legacy version history.
pub const HISTORY: u8 = b'k';
/// Prefix of the stored versions, by revision.
pub const REVISIONS: u8 = b'r';
/// Key of the revision recorded at the last compaction (see the module docs).
pub const META_REV: &[u8] = b"mrev";
/// Key of the compacted revision.
pub const META_COMPACT: &[u8] = b"mcompact";

fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
}

/// `k <esc(key)> 00 01`: the legacy prefix of every version of `key`.
pub fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 20);
    v.push(HISTORY);
    escape_into(&mut v, key);
    v.extend_from_slice(&[0, 1]);
    v
}

/// `k <esc(key)> 00 01 <main><sub>`: a legacy history row.
pub fn history(key: &[u8], main: u64, sub: u64) -> Vec<u8> {
    let mut v = history_prefix(key);
    v.extend_from_slice(&main.to_be_bytes());
    v.extend_from_slice(&sub.to_be_bytes());
    v
}

/// `r <main><sub>`: the row of the version stored at a revision.
pub fn revision(main: u64, sub: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(REVISIONS);
    v.extend_from_slice(&main.to_be_bytes());
    v.extend_from_slice(&sub.to_be_bytes());
    v
}

/// Splits a revision-log key into its main and sub revision.
pub fn parse_revision(k: &[u8]) -> Option<(u64, u64)> {
    if k.len() != 17 || k[0] != REVISIONS {
        return None;
    }
    Some((
        u64::from_be_bytes(k[1..9].try_into().ok()?),
        u64::from_be_bytes(k[9..17].try_into().ok()?),
    ))
}

/// Splits a history key into the user key and its revision.
pub fn parse_history(k: &[u8]) -> Option<(Vec<u8>, u64, u64)> {
    if k.first() != Some(&HISTORY) || k.len() < 19 {
        return None;
    }
    let (body, rev) = k[1..].split_at(k.len() - 17);
    let main = u64::from_be_bytes(rev[..8].try_into().ok()?);
    let sub = u64::from_be_bytes(rev[8..].try_into().ok()?);
    let body = body.strip_suffix(&[0, 1])?;
    Some((unescape(body)?, main, sub))
}

fn unescape(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        out.push(b[i]);
        if b[i] == 0 {
            if b.get(i + 1) != Some(&0xff) {
                return None;
            }
            i += 1;
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoding_keeps_order(a in proptest::collection::vec(any::<u8>(), 0..8), b in proptest::collection::vec(any::<u8>(), 0..8), r1 in any::<u64>(), r2 in any::<u64>()) {
            if a != b {
                prop_assert_eq!(a.cmp(&b), history(&a, r1, 0).cmp(&history(&b, r2, 0)));
            } else {
                prop_assert_eq!(r1.cmp(&r2), history(&a, r1, 0).cmp(&history(&b, r2, 0)));
            }
            prop_assert_eq!(parse_history(&history(&a, r1, 7)), Some((a.clone(), r1, 7)));
            prop_assert_eq!(parse_revision(&revision(r1, r2)), Some((r1, r2)));
            prop_assert_eq!(r1.cmp(&r2), revision(r1, 0).cmp(&revision(r2, 0)));
        }
    }
}
