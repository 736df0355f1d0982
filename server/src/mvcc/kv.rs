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

/// Encodes a stored version (`tombstone` for a deletion).
pub fn encode(kv: &KeyValue, tombstone: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(33 + kv.value.len());
    b.push(if tombstone { TOMBSTONE } else { 0 });
    for v in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&kv.value);
    b
}

/// Decodes a stored version of `key`; `None` if the bytes are not a record.
pub fn decode(key: &[u8], b: &[u8]) -> Option<(KeyValue, bool)> {
    if b.len() < 33 || b[0] > TOMBSTONE {
        return None;
    }
    let n = |at: usize| i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    Some((
        KeyValue {
            key: key.to_vec(),
            create_revision: n(1),
            mod_revision: n(9),
            version: n(17),
            lease: n(25),
            value: b[33..].to_vec(),
        },
        b[0] == TOMBSTONE,
    ))
}
