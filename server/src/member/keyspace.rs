//! How client APIs share the one replicated key space: etcd's keys all lie below
//! [`RESERVED_START`]; from there up, each other API keeps its rows under a prefix of its own,
//! where etcd's clients can neither read, write nor watch. Snapshots, backups, compaction and
//! the members' hash comparisons cover the whole space alike.

/// The first key etcd's clients may not use.
pub const RESERVED_START: &[u8] = &[0xff, 0xff];

/// Whether `key` lies in the reserved part.
pub fn is_reserved(key: &[u8]) -> bool {
    key >= RESERVED_START
}

/// The end of etcd's range `[key, end)` (an empty `end`: the key alone; `"\0"`: every key from
/// `key` on) cut at [`RESERVED_START`]; `None` when the range lies wholly in the reserved part.
pub fn clamp_end<'a>(key: &[u8], end: &'a [u8]) -> Option<&'a [u8]> {
    if is_reserved(key) {
        return None;
    }
    if end == [0] || end > RESERVED_START {
        return Some(RESERVED_START);
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stop_below_the_reserved_part() {
        assert_eq!(clamp_end(b"a", b""), Some(&b""[..]));
        assert_eq!(clamp_end(b"a", b"b"), Some(&b"b"[..]));
        assert_eq!(clamp_end(&[0], &[0]), Some(RESERVED_START));
        assert_eq!(clamp_end(b"a", &[0xff, 0xff, 1]), Some(RESERVED_START));
        assert_eq!(clamp_end(b"a", &[0xff, 0xfe]), Some(&[0xff, 0xfe][..]));
        assert_eq!(clamp_end(&[0xff, 0xff], b""), None);
        assert_eq!(clamp_end(&[0xff, 0xff, b'z'], &[0]), None);
        assert!(is_reserved(&[0xff, 0xff]) && !is_reserved(&[0xff, 0xfe, 0xff]));
    }
}
