//! The in-memory log a protocol works on: entries since the last snapshot, what is committed,
//! what the driver made durable and applied, and what has not yet been handed out for
//! persistence. Shared by Raft and ZAB; it performs no IO.

use std::collections::VecDeque;

use crate::types::{Entry, SnapshotMeta};

/// Entries after a snapshot point, plus the indexes that move along them.
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    /// Index and term of the last entry covered by the snapshot.
    snap_index: u64,
    snap_term: u64,
    entries: VecDeque<Entry>,
    /// Highest index known committed.
    pub committed: u64,
    /// Highest index the driver reported durable.
    pub persisted: u64,
    /// Highest index handed out for applying.
    pub applying: u64,
    /// Highest index the driver reported applied.
    pub applied: u64,
    /// First index not yet handed out for persistence.
    unstable_from: u64,
    /// Lowest index truncated since the last hand-out.
    truncated_from: Option<u64>,
}

impl MemLog {
    /// A log restored from durable storage.
    pub fn restore(snapshot: &SnapshotMeta, entries: Vec<Entry>, applied: u64) -> MemLog {
        let mut log = MemLog {
            snap_index: snapshot.index,
            snap_term: snapshot.term,
            entries: VecDeque::new(),
            ..MemLog::default()
        };
        for (k, e) in entries.into_iter().enumerate() {
            assert_eq!(
                e.index,
                snapshot.index + 1 + k as u64,
                "restored entries are dense"
            );
            log.entries.push_back(e);
        }
        let last = log.last_index();
        log.persisted = last;
        log.unstable_from = last + 1;
        let applied = applied.max(snapshot.index).min(last);
        log.committed = applied;
        log.applying = applied;
        log.applied = applied;
        log
    }

    /// Index of the first entry held (snapshot index + 1).
    pub fn first_index(&self) -> u64 {
        self.snap_index + 1
    }

    /// Index of the last entry.
    pub fn last_index(&self) -> u64 {
        self.snap_index + self.entries.len() as u64
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.entries.back().map_or(self.snap_term, |e| e.term)
    }

    /// The snapshot point.
    pub fn snapshot_point(&self) -> (u64, u64) {
        (self.snap_index, self.snap_term)
    }

    /// Term of entry `i`, if known (compacted entries are not).
    pub fn term(&self, i: u64) -> Option<u64> {
        if i == self.snap_index {
            return Some(self.snap_term);
        }
        if i < self.snap_index || i > self.last_index() {
            return None;
        }
        Some(self.entries[(i - self.snap_index - 1) as usize].term)
    }

    /// Whether entry `i` has term `t`.
    pub fn match_term(&self, i: u64, t: u64) -> bool {
        self.term(i) == Some(t)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as ours.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entry `i`.
    pub fn entry(&self, i: u64) -> Option<&Entry> {
        if i <= self.snap_index || i > self.last_index() {
            return None;
        }
        self.entries.get((i - self.snap_index - 1) as usize)
    }

    /// Entries from `lo` through `hi` (inclusive), at most `bytes_max` bytes (at least one).
    pub fn slice(&self, lo: u64, hi: u64, bytes_max: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut i = lo.max(self.first_index());
        while i <= hi.min(self.last_index()) {
            let e = self.entry(i).expect("in range");
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Bytes (as flow control counts them) of the entries `lo..=hi` still held.
    pub fn bytes_between(&self, lo: u64, hi: u64) -> usize {
        (lo.max(self.first_index())..=hi.min(self.last_index()))
            .filter_map(|i| self.entry(i))
            .map(Entry::size_bytes)
            .sum()
    }

    /// Appends one entry at the end.
    pub fn push(&mut self, e: Entry) {
        assert_eq!(e.index, self.last_index() + 1, "entries are dense");
        self.entries.push_back(e);
    }

    /// Removes entries from `i` on. Committed entries are never removed.
    pub fn truncate_from(&mut self, i: u64) {
        assert!(
            i > self.committed,
            "truncating committed entry {i} (commit {})",
            self.committed
        );
        if i > self.last_index() {
            return;
        }
        let keep = (i - self.snap_index - 1) as usize;
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(i - 1);
        self.unstable_from = self.unstable_from.min(i);
        self.truncated_from = Some(self.truncated_from.map_or(i, |t| t.min(i)));
    }

    /// Appends `entries` after `prev` (already matched), truncating the first conflict.
    /// Returns the index of the first conflicting entry if a truncation happened.
    pub fn append_after(&mut self, entries: &[Entry]) -> Option<u64> {
        let mut conflict = None;
        for e in entries {
            match self.term(e.index) {
                Some(t) if t == e.term => {}
                Some(_) => {
                    conflict = Some(e.index);
                    self.truncate_from(e.index);
                    self.push(e.clone());
                }
                None if e.index == self.last_index() + 1 => self.push(e.clone()),
                None => {
                    // Below the snapshot: already covered.
                    debug_assert!(e.index <= self.snap_index, "gap in appended entries");
                }
            }
        }
        conflict
    }

    /// Raises the commit index (never lowers it).
    pub fn commit_to(&mut self, i: u64) -> bool {
        let i = i.min(self.last_index());
        if i > self.committed {
            self.committed = i;
            true
        } else {
            false
        }
    }

    /// Records that the driver made the log durable through (`i`, `t`); stale reports (for
    /// entries since truncated) are ignored.
    pub fn persisted_to(&mut self, i: u64, t: u64) -> bool {
        if i > self.persisted && i < self.unstable_from && self.match_term(i, t) {
            self.persisted = i;
            true
        } else {
            false
        }
    }

    /// Entries not yet handed out for persistence, and the truncation point before them.
    pub fn take_unstable(&mut self) -> (Option<u64>, Vec<Entry>) {
        let lo = self.unstable_from;
        let es = self.slice(lo, self.last_index(), usize::MAX);
        self.unstable_from = self.last_index() + 1;
        (self.truncated_from.take(), es)
    }

    /// Whether anything waits to be handed out for persistence.
    pub fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index() || self.truncated_from.is_some()
    }

    /// Committed, locally durable entries not yet handed out for applying.
    pub fn take_committed(&mut self, bytes_max: usize) -> Vec<Entry> {
        let hi = self.committed.min(self.persisted);
        if hi <= self.applying {
            return Vec::new();
        }
        let es = self.slice(self.applying + 1, hi, bytes_max);
        if let Some(e) = es.last() {
            self.applying = e.index;
        }
        es
    }

    /// Whether committed entries wait to be applied.
    pub fn has_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applying
    }

    /// Drops entries up to `i` (the state machine holds a snapshot through it).
    pub fn compact(&mut self, i: u64, term: u64) {
        if i <= self.snap_index || i > self.applied {
            return;
        }
        let n = (i - self.snap_index) as usize;
        self.entries.drain(..n.min(self.entries.len()));
        self.snap_index = i;
        self.snap_term = term;
    }

    /// Replaces everything with a snapshot point (a follower installing a snapshot).
    pub fn reset_to_snapshot(&mut self, i: u64, term: u64) {
        self.entries.clear();
        self.snap_index = i;
        self.snap_term = term;
        self.committed = i;
        self.persisted = i;
        self.applying = i;
        self.applied = i;
        self.unstable_from = i + 1;
        self.truncated_from = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    #[test]
    fn append_truncates_conflicts_only() {
        let mut log = MemLog::default();
        for i in 1..=5 {
            log.push(e(i, 1));
        }
        assert_eq!(log.append_after(&[e(3, 1), e(4, 1)]), None);
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.append_after(&[e(4, 2), e(5, 2), e(6, 2)]), Some(4));
        assert_eq!((log.last_index(), log.last_term()), (6, 2));
        let (trunc, es) = log.take_unstable();
        assert_eq!(trunc, Some(4));
        assert_eq!(es.first().map(|e| e.index), Some(1));
    }

    #[test]
    fn persisted_reports_for_truncated_entries_are_ignored() {
        let mut log = MemLog::default();
        for i in 1..=3 {
            log.push(e(i, 1));
        }
        let _ = log.take_unstable();
        log.append_after(&[e(2, 2)]);
        assert!(
            !log.persisted_to(3, 1),
            "entry 3 of term 1 no longer exists"
        );
        assert!(!log.persisted_to(2, 2), "not handed out yet");
        let _ = log.take_unstable();
        assert!(log.persisted_to(2, 2));
        log.commit_to(2);
        assert_eq!(log.take_committed(usize::MAX).len(), 2);
    }
}
