//! The records of the MVCC key space and their encoding.

/// One version of a key, as etcd's `mvccpb.KeyValue` has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the put that created the key (its current generation).
    pub create_revision: i64,
    /// Revision of the last change.
    pub mod_revision: i64,
    /// Changes since creation (1 on create).
    pub version: i64,
    /// The value.
    pub value: Vec<u8>,
    /// Attached lease (0: none).
    pub lease: i64,
}

/// A change at a revision, for watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// A deletion (else a put).
    pub delete: bool,
    /// The new version; for a deletion, the key with `mod_revision` set to the deleting
    /// revision.
    pub kv: KeyValue,
    /// The version this change replaced, if the key was live.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// Bytes this event holds, for memory accounting.
    pub fn size_bytes(&self) -> usize {
        let kv = |k: &KeyValue| 48 + k.key.len() + k.value.len();
        kv(&self.kv) + self.prev.as_ref().map_or(0, kv)
    }
}

const TOMBSTONE: u8 = 1;
/// Tag of a current row that refers to its version's history row for the value.
const CURRENT_REF: u8 = 2;
const CURRENT_REF_BYTES: usize = 41;

/// The tag and the four revision fields every row starts with (33 bytes), with room for
/// `rest` more.
fn encode_head(tag: u8, kv: &KeyValue, rest: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(33 + rest);
    b.push(tag);
    for v in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// The version of `key` a row's first 33 bytes describe, without its value.
fn decode_head(key: &[u8], b: &[u8]) -> KeyValue {
    debug_assert!(b.len() >= 33, "the caller checked the length");
    let n = |at: usize| i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    KeyValue {
        key: key.to_vec(),
        create_revision: n(1),
        mod_revision: n(9),
        version: n(17),
        lease: n(25),
        value: Vec::new(),
    }
}

/// Encodes a stored version (`tombstone` for a deletion).
pub fn encode(kv: &KeyValue, tombstone: bool) -> Vec<u8> {
    let mut b = encode_head(if tombstone { TOMBSTONE } else { 0 }, kv, kv.value.len());
    b.extend_from_slice(&kv.value);
    b
}

/// Decodes a stored version of `key`; `None` if the bytes are not a record.
pub fn decode(key: &[u8], b: &[u8]) -> Option<(KeyValue, bool)> {
    if b.len() < 33 || b[0] > TOMBSTONE {
        return None;
    }
    let mut kv = decode_head(key, b);
    kv.value = b[33..].to_vec();
    Some((kv, b[0] == TOMBSTONE))
}

/// Encodes the current row of a live key: its metadata and the sub revision of its version,
/// whose value stays only in the history row (so a put stores its value once).
pub fn encode_current(kv: &KeyValue, sub: u64) -> Vec<u8> {
    let mut b = encode_head(CURRENT_REF, kv, 8);
    b.extend_from_slice(&sub.to_le_bytes());
    debug_assert_eq!(b.len(), CURRENT_REF_BYTES);
    b
}

/// Decodes the current row of `key`: the version without its value and the sub revision of
/// the history row that holds it, or (for a row holding its value itself) the whole version
/// and `None`. `None` overall if the bytes are neither.
pub fn decode_current(key: &[u8], b: &[u8]) -> Option<(KeyValue, Option<u64>)> {
    if b.first() == Some(&CURRENT_REF) {
        if b.len() != CURRENT_REF_BYTES {
            return None;
        }
        let sub = u64::from_le_bytes(b[33..41].try_into().expect("8 bytes"));
        return Some((decode_head(key, b), Some(sub)));
    }
    match decode(key, b)? {
        (kv, false) => Some((kv, None)),
        (_, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_rows_round_trip_and_refuse_garbage() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            value: b"v".to_vec(),
            lease: 7,
        };
        let (got, sub) = decode_current(b"k", &encode_current(&kv, 2)).unwrap();
        assert_eq!(sub, Some(2));
        assert_eq!(
            got,
            KeyValue {
                value: Vec::new(),
                ..kv.clone()
            }
        );
        // A row holding its value itself still reads.
        assert_eq!(
            decode_current(b"k", &encode(&kv, false)),
            Some((kv.clone(), None))
        );
        assert_eq!(decode_current(b"k", &encode(&kv, true)), None);
        assert_eq!(decode_current(b"k", &[CURRENT_REF, 1, 2]), None);
        assert_eq!(decode_current(b"k", &[9; 50]), None);
        assert_eq!(decode_current(b"k", &[]), None);
    }
}
