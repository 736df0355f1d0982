//! Leader completeness (Raft §5.4): a leader's log holds every entry committed in earlier
//! terms.

use std::collections::BTreeMap;

use super::digest;
use crate::types::Entry;

/// Every entry known committed: index -> (term, digest).
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    committed: BTreeMap<u64, (u64, u32)>,
}

impl LeaderCompleteness {
    /// Entries a node reports committed.
    pub fn committed(&mut self, entries: &[Entry]) -> Result<(), String> {
        for e in entries {
            let v = (e.term, digest(&e.data));
            match self.committed.get(&e.index) {
                Some(&prev) if prev != v => {
                    return Err(format!(
                        "committed entry {} changed from term {} to {}",
                        e.index, prev.0, e.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(e.index, v);
                }
            }
        }
        Ok(())
    }

    /// `node` leads in `term` with `log` (entries from `first`, the rest compacted).
    pub fn leader(&self, node: u64, term: u64, first: u64, log: &[Entry]) -> Result<(), String> {
        for (&i, &(t, d)) in &self.committed {
            if t >= term || i < first {
                continue;
            }
            let held = log.get((i - first) as usize);
            if held.is_none_or(|e| e.index != i || e.term != t || digest(&e.data) != d) {
                return Err(format!(
                    "leader completeness: leader {node} of term {term} lacks committed entry {i} (term {t})"
                ));
            }
        }
        Ok(())
    }
}
