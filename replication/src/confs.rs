//! Membership as the log defines it: the configuration in effect at each point, for protocols
//! where a single-server change takes effect as soon as its entry is appended (Raft thesis 4.1)
//! and is undone if that entry is truncated.

use crate::types::{Conf, ConfChange, Entry, EntryKind, SnapshotMeta};

/// (index, configuration from that index on); the first is the snapshot's.
#[derive(Debug, Clone)]
pub struct ConfHistory {
    confs: Vec<(u64, Conf)>,
}

impl ConfHistory {
    /// Starts from the configuration at `index`.
    pub fn new(index: u64, conf: Conf) -> ConfHistory {
        ConfHistory {
            confs: vec![(index, conf)],
        }
    }

    /// The configuration in effect (the latest in the log).
    pub fn current(&self) -> &Conf {
        &self.confs.last().expect("always a configuration").1
    }

    /// The configuration in effect at `index` (the base one for anything before it).
    pub fn at(&self, index: u64) -> &Conf {
        &self
            .confs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .unwrap_or(&self.confs[0])
            .1
    }

    /// The snapshot point describing the applied state of `log` through `index` (its term and
    /// the membership then), if `index` is applied and still in the log.
    pub fn snapshot_meta(&self, log: &crate::log::MemLog, index: u64) -> Option<SnapshotMeta> {
        if index > log.applied {
            return None;
        }
        Some(SnapshotMeta {
            index,
            term: log.term(index)?,
            conf: self.at(index).clone(),
        })
    }

    /// Index of the newest change still in the log (0: none since the base).
    pub fn pending_index(&self) -> u64 {
        if self.confs.len() > 1 {
            self.confs.last().expect("non-empty").0
        } else {
            0
        }
    }

    /// Applies `e` if it is a membership change; returns whether the configuration changed.
    pub fn note_entry(&mut self, e: &Entry) -> bool {
        if e.kind != EntryKind::ConfChange {
            return false;
        }
        match ConfChange::decode(&e.data).map(|cc| self.current().apply(cc)) {
            Some(Ok(c)) => {
                self.confs.push((e.index, c));
                true
            }
            Some(Err(err)) => {
                tracing::warn!(index = e.index, %err, "ignoring membership change");
                false
            }
            None => {
                tracing::warn!(index = e.index, "malformed membership change");
                false
            }
        }
    }

    /// Forgets changes at and above `from` (their entries were truncated).
    pub fn truncate_from(&mut self, from: u64) {
        let base = self.confs[0].clone();
        self.confs.retain(|(i, _)| *i < from);
        if self.confs.is_empty() {
            self.confs.push(base);
        }
    }

    /// Restarts from a snapshot's configuration.
    pub fn reset(&mut self, snapshot: &SnapshotMeta) {
        self.confs = vec![(snapshot.index, snapshot.conf.clone())];
    }

    /// Collapses changes up to a snapshot into its configuration.
    pub fn compact(&mut self, snapshot: &SnapshotMeta) {
        let keep: Vec<(u64, Conf)> = self
            .confs
            .iter()
            .filter(|(i, _)| *i > snapshot.index)
            .cloned()
            .collect();
        self.confs = std::iter::once((snapshot.index, snapshot.conf.clone()))
            .chain(keep)
            .collect();
    }
}
