//! Election safety: at most one leader per term (Raft §5.2) — for ZAB, at most one established
//! leader per epoch.

use std::collections::BTreeMap;

use crate::types::NodeId;

/// Remembers the leader of every term seen.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<u64, NodeId>,
}

impl ElectionSafety {
    /// `node` is leader in `term`.
    pub fn observe(&mut self, term: u64, node: NodeId) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(prev) if prev != node => Err(format!(
                "election safety: term {term} has leaders {prev} and {node}"
            )),
            _ => Ok(()),
        }
    }
    /// Distinct leaderships seen.
    pub fn leaderships(&self) -> usize {
        self.leaders.len()
    }
}
