//! Log matching (Raft §5.3): if two logs contain an entry with the same index and term, the
//! entries are identical and so are all entries before them. Checked inductively: every
//! (index, term) ever seen maps to one payload and one predecessor term.

use std::collections::BTreeMap;

use super::digest;
use crate::types::Entry;

/// (index, term) -> (payload digest, term of the entry before).
#[derive(Debug, Default)]
pub struct LogMatching {
    seen: BTreeMap<(u64, u64), (u32, Option<u64>)>,
}

impl LogMatching {
    /// A node's log holds `entries` (dense); `prev_term` is the term before the first.
    pub fn observe(
        &mut self,
        node: u64,
        prev_term: Option<u64>,
        entries: &[Entry],
    ) -> Result<(), String> {
        let mut before = prev_term;
        for e in entries {
            let d = digest(&e.data);
            match self.seen.get(&(e.index, e.term)) {
                Some(&(pd, pb)) => {
                    if pd != d {
                        return Err(format!(
                            "log matching: node {node} holds a different entry at ({}, {})",
                            e.index, e.term
                        ));
                    }
                    if let (Some(a), Some(b)) = (pb, before)
                        && a != b
                    {
                        return Err(format!(
                            "log matching: node {node}: entries before ({}, {}) differ (terms {a} and {b})",
                            e.index, e.term
                        ));
                    }
                }
                None => {
                    self.seen.insert((e.index, e.term), (d, before));
                }
            }
            before = Some(e.term);
        }
        Ok(())
    }
}
