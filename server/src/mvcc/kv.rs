//! The records of the MVCC key space and their encoding.

use super::index::{Meta, Revision};

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
    /// The version this change replaced, if the key was live and the writer had read it
    /// anyway; else a watcher that wants it reads it at [`Event::prev_rev`].
    pub prev: Option<KeyValue>,
    /// Where the version this change replaced is stored, if the key was live.
    pub prev_rev: Option<Revision>,
}

impl Event {
    /// Bytes this event holds, for memory accounting.
    pub fn size_bytes(&self) -> usize {
        let kv = |k: &KeyValue| 48 + k.key.len() + k.value.len();
        kv(&self.kv) + self.prev.as_ref().map_or(0, kv)
    }
}

const TOMBSTONE: u8 = 1;

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

/// The `i64` of a row's head at byte `at`.
fn head_field(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The create revision, version and lease in a row's first 33 bytes.
fn head_meta(b: &[u8]) -> Meta {
    debug_assert!(b.len() >= 33, "the caller checked the length");
    Meta {
        create_revision: head_field(b, 1),
        version: head_field(b, 17),
        lease: head_field(b, 25),
    }
}

/// The version of `key` a row's first 33 bytes describe, without its value.
fn decode_head(key: &[u8], b: &[u8]) -> KeyValue {
    let meta = head_meta(b);
    KeyValue {
        key: key.to_vec(),
        create_revision: meta.create_revision,
        mod_revision: head_field(b, 9),
        version: meta.version,
        lease: meta.lease,
        value: Vec::new(),
    }
}

/// Encodes a version as the legacy history rows held it (`tombstone` for a deletion): the
/// head, then the value, without the key.
pub fn encode(kv: &KeyValue, tombstone: bool) -> Vec<u8> {
    let mut b = encode_head(if tombstone { TOMBSTONE } else { 0 }, kv, kv.value.len());
    b.extend_from_slice(&kv.value);
    b
}

/// Decodes a legacy history row of `key`; `None` if the bytes are not one.
pub fn decode(key: &[u8], b: &[u8]) -> Option<(KeyValue, bool)> {
    if b.len() < 33 || b[0] > TOMBSTONE {
        return None;
    }
    let mut kv = decode_head(key, b);
    kv.value = b[33..].to_vec();
    Some((kv, b[0] == TOMBSTONE))
}

/// Tag of a stored version (a revision row); `+ TOMBSTONE` for a deletion.
const RECORD: u8 = 4;

/// Encodes the revision row of a version of `kv.key`: the head with tag [`RECORD`]
/// (`+ 1` for a deletion), `u32` key length (little-endian), the key, the value.
pub fn encode_record(kv: &KeyValue, tombstone: bool) -> Vec<u8> {
    let tag = RECORD + u8::from(tombstone);
    let mut b = encode_head(tag, kv, 4 + kv.key.len() + kv.value.len());
    b.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
    b.extend_from_slice(&kv.key);
    b.extend_from_slice(&kv.value);
    b
}

/// The key of a revision row, whether it is a deletion and the version's create revision,
/// version and lease, without copying the rest; `None` if the bytes are not a record.
pub fn record_meta(b: &[u8]) -> Option<(&[u8], bool, Meta)> {
    let (key, dead) = record_key(b)?;
    Some((key, dead, head_meta(b)))
}

/// The key of a revision row and whether it is a deletion, without copying the rest; `None`
/// if the bytes are not a record.
pub fn record_key(b: &[u8]) -> Option<(&[u8], bool)> {
    let tag = *b.first()?;
    if b.len() < 37 || !(RECORD..=RECORD + TOMBSTONE).contains(&tag) {
        return None;
    }
    let len = u32::from_le_bytes(b[33..37].try_into().expect("4 bytes")) as usize;
    let key = b.get(37..37usize.checked_add(len)?)?;
    Some((key, tag == RECORD + TOMBSTONE))
}

/// Decodes a revision row: the version and whether it is a deletion; `None` if the bytes are
/// not a record.
pub fn decode_record(b: &[u8]) -> Option<(KeyValue, bool)> {
    let (key, dead) = record_key(b)?;
    let mut kv = decode_head(key, b);
    kv.value = b[37 + key.len()..].to_vec();
    Some((kv, dead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let kv = KeyValue {
            key: b"k\0ey".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            value: b"value".to_vec(),
            lease: 7,
        };
        for dead in [false, true] {
            let b = encode_record(&kv, dead);
            assert_eq!(decode_record(&b), Some((kv.clone(), dead)));
            assert_eq!(record_key(&b), Some((&kv.key[..], dead)));
            let meta = Meta {
                create_revision: 3,
                version: 4,
                lease: 7,
            };
            assert_eq!(record_meta(&b), Some((&kv.key[..], dead, meta)));
            // Every truncation that cuts the key is refused; cutting the value only shortens it.
            for n in 0..37 + kv.key.len() {
                assert_eq!(decode_record(&b[..n]), None, "{n} bytes");
            }
        }
        // A legacy history row (value without key) is not a record.
        assert_eq!(decode_record(&encode(&kv, false)), None);
        let mut huge = encode_record(&kv, false);
        huge[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_record(&huge), None);
        assert_eq!(decode_record(&[RECORD + 2; 60]), None);
        assert_eq!(decode_record(&[]), None);
    }
}
