//! How the MVCC key space maps onto the B+tree's flat, ordered keys.
//!
//! ```text
//! c <esc(key)>                     -> Current    every live key's current version, without
//!                                                 its value (read from its history row)
//! k <esc(key)> 00 01 <main><sub>   -> Record     every version (and deletion) of a key
//! r <main><sub>                    -> <key>      which key changed at a revision
//! m rev | m compact                -> u64        current and compacted revision
//! ```
//! `esc` maps 0x00 to 0x00 0xFF, and `00 01` ends the key: the encoding keeps user-key order
//! (a key sorts before every longer key it prefixes) and lets a key's versions sit together in
//! revision order. Revisions are big-endian so byte order is numeric order.

/// Prefix of current versions.
pub const CURRENT: u8 = b'c';
/// Prefix of the version history.
pub const HISTORY: u8 = b'k';
/// Prefix of the revision log.
pub const REVISIONS: u8 = b'r';
/// Key of the current revision.
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

/// `c <esc(key)>`.
pub fn current(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 3);
    v.push(CURRENT);
    escape_into(&mut v, key);
    v
}

/// `k <esc(key)> 00 01`: the prefix of every version of `key`.
pub fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 20);
    v.push(HISTORY);
    escape_into(&mut v, key);
    v.extend_from_slice(&[0, 1]);
    v
}

/// `k <esc(key)> 00 01 <main><sub>`.
pub fn history(key: &[u8], main: u64, sub: u64) -> Vec<u8> {
    let mut v = history_prefix(key);
    v.extend_from_slice(&main.to_be_bytes());
    v.extend_from_slice(&sub.to_be_bytes());
    v
}

/// `r <main><sub>`.
pub fn revision(main: u64, sub: u64) -> Vec<u8> {
    let mut v = vec![REVISIONS];
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

/// Splits a current-version key into the user key.
pub fn parse_current(k: &[u8]) -> Option<Vec<u8>> {
    if k.first() != Some(&CURRENT) {
        return None;
    }
    unescape(&k[1..])
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

/// The B+tree bounds `[start, end)` in `prefix`-space for etcd's `key` / `range_end`:
/// empty `range_end` is the single key, `"\0"` is every key from `key` on, anything else is
/// `[key, range_end)`.
pub fn range_bounds(prefix: u8, key: &[u8], range_end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let enc = |k: &[u8]| {
        let mut v = vec![prefix];
        escape_into(&mut v, k);
        v
    };
    let start = enc(key);
    let end = if range_end.is_empty() {
        // Just `key`: everything that starts with its escaped form and a terminator.
        let mut e = enc(key);
        e.extend_from_slice(&[0, 2]);
        e
    } else if range_end == [0] {
        vec![prefix + 1]
    } else {
        enc(range_end)
    };
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoding_keeps_order(a in proptest::collection::vec(any::<u8>(), 0..8), b in proptest::collection::vec(any::<u8>(), 0..8), r1 in any::<u64>(), r2 in any::<u64>()) {
            prop_assert_eq!(a.cmp(&b), current(&a).cmp(&current(&b)));
            if a != b {
                prop_assert_eq!(a.cmp(&b), history(&a, r1, 0).cmp(&history(&b, r2, 0)));
            } else {
                prop_assert_eq!(r1.cmp(&r2), history(&a, r1, 0).cmp(&history(&b, r2, 0)));
            }
            prop_assert_eq!(parse_history(&history(&a, r1, 7)), Some((a.clone(), r1, 7)));
            prop_assert_eq!(parse_current(&current(&a)), Some(a));
        }
    }
}
