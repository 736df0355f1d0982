//! The simulator's state machine: registers on a small key set, with put and compare-and-set,
//! and its command encoding.

use std::collections::BTreeMap;

/// A command in an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Set `key` to `value`.
    Put {
        /// Operation id (unique per history).
        op: u64,
        /// Key.
        key: u8,
        /// Value.
        value: u64,
    },
    /// Set `key` to `new` if it holds `expect` (0: absent).
    Cas {
        /// Operation id.
        op: u64,
        /// Key.
        key: u8,
        /// Expected value.
        expect: u64,
        /// New value.
        new: u64,
    },
}

impl Command {
    /// Entry data.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(26);
        match *self {
            Command::Put { op, key, value } => {
                b.push(1);
                b.extend_from_slice(&op.to_le_bytes());
                b.push(key);
                b.extend_from_slice(&value.to_le_bytes());
            }
            Command::Cas {
                op,
                key,
                expect,
                new,
            } => {
                b.push(2);
                b.extend_from_slice(&op.to_le_bytes());
                b.push(key);
                b.extend_from_slice(&expect.to_le_bytes());
                b.extend_from_slice(&new.to_le_bytes());
            }
        }
        b
    }
    /// Parses entry data.
    pub fn decode(b: &[u8]) -> Option<Command> {
        let u = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
        };
        match b.first()? {
            1 if b.len() == 18 => Some(Command::Put {
                op: u(1)?,
                key: b[9],
                value: u(10)?,
            }),
            2 if b.len() == 26 => Some(Command::Cas {
                op: u(1)?,
                key: b[9],
                expect: u(10)?,
                new: u(18)?,
            }),
            _ => None,
        }
    }
    /// The operation id.
    pub fn op(&self) -> u64 {
        match *self {
            Command::Put { op, .. } | Command::Cas { op, .. } => op,
        }
    }
}

/// Registers, plus how far the log has been applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kv {
    /// Key -> value.
    pub map: BTreeMap<u8, u64>,
    /// Last applied index.
    pub applied: u64,
}

impl Kv {
    /// Applies a command; returns whether it took effect (a CAS may not).
    pub fn apply(&mut self, c: &Command) -> bool {
        match *c {
            Command::Put { key, value, .. } => {
                self.map.insert(key, value);
                true
            }
            Command::Cas {
                key, expect, new, ..
            } => {
                if self.map.get(&key).copied().unwrap_or(0) == expect {
                    self.map.insert(key, new);
                    true
                } else {
                    false
                }
            }
        }
    }
    /// Serialized form (a snapshot).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.applied.to_le_bytes().to_vec();
        for (k, v) in &self.map {
            b.push(*k);
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }
    /// Parses a snapshot.
    pub fn decode(b: &[u8]) -> Option<Kv> {
        let applied = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let rest = &b[8..];
        if rest.len() % 9 != 0 {
            return None;
        }
        let map = rest
            .chunks(9)
            .map(|c| {
                (
                    c[0],
                    u64::from_le_bytes(c[1..9].try_into().expect("8 bytes")),
                )
            })
            .collect();
        Some(Kv { map, applied })
    }
}
