//! State machine safety (Raft §5.4.3): no two nodes apply different entries at one index.

use std::collections::BTreeMap;

use super::digest;
use crate::types::Entry;

/// index -> (term, digest) of what was applied there.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    applied: BTreeMap<u64, (u64, u32)>,
}

impl StateMachineSafety {
    /// `node` applied `e`.
    pub fn applied(&mut self, node: u64, e: &Entry) -> Result<(), String> {
        let v = (e.term, digest(&e.data));
        match self.applied.insert(e.index, v) {
            Some(prev) if prev != v => Err(format!(
                "state machine safety: node {node} applied ({}, {}) where another applied term {}",
                e.index, e.term, prev.0
            )),
            _ => Ok(()),
        }
    }
    /// Highest index applied anywhere.
    pub fn max_index(&self) -> u64 {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }
}
