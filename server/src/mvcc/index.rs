//! The in-memory index of the key space: for every key, the revisions of its stored versions
//! (deletions included) in revision order, as etcd's `treeIndex` keeps them.
//!
//! The tree stores versions by revision, so a put appends; this index answers "which version
//! of which keys does revision R see" without touching the tree, and is rebuilt from the
//! tree's revision rows when the tree opens. Readers filter by revision, so versions a write
//! transaction adds before it commits (always above every reader's revision) stay invisible.
//!
//! Compaction is three steps. [`KeyIndex::compact`] raises [`KeyIndex::compacted`] at once:
//! readers below it get `Compacted`, and no reader at or above it can see a version the
//! compaction drops. [`KeyIndex::sweep`] then drops those versions from the index a slice of
//! keys at a time, so no write waits for a pass over millions of keys, and keeps their
//! revisions as orphans. Once the pass is through, [`KeyIndex::take_orphans`] hands them out
//! in revision order, a slice at a time, for their tree rows to go: consecutive revisions
//! share a leaf, so each leaf is rewritten about once, where removing each key's versions in
//! key order rewrote a leaf per version. Until the sweep is through, versions no reader can
//! see may stay in the index and the tree; nothing may tell them apart from kept ones but
//! [`KeyIndex::kept`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::index_key::{IndexKey, KeyView, Probe};

/// A revision: the main revision of a modifying request and the sub revision of one of its
/// operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// Main revision.
    pub main: u64,
    /// Sub revision.
    pub sub: u64,
}

/// What a put needs of the version it replaces, kept in the index so that a put does not read
/// the tree (etcd's `keyIndex` keeps the same per generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// Revision of the put that created the key's current generation.
    pub create_revision: i64,
    /// Changes since creation (1 on create).
    pub version: i64,
    /// Attached lease (0: none).
    pub lease: i64,
}

/// One stored version of a key, as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// Where the version is stored.
    pub rev: Revision,
    /// A deletion.
    pub dead: bool,
    /// The version's create revision, version and lease (all 0 for a deletion).
    pub meta: Meta,
}

/// The versions of a key before a change, kept to undo it.
pub type Saved = Vec<(Vec<u8>, Vec<Version>)>;

/// Where a compaction's sweep stands: `None` swept through, `Some(None)` starts at the first
/// key, `Some(Some(k))` goes on after key `k`.
pub type SweepAt = Option<Option<Box<[u8]>>>;

/// What one slice of a sweep did, and what to put back if the transaction carrying it does
/// not commit.
#[derive(Debug, Default)]
pub struct Swept {
    /// Revisions the slice dropped (now orphans), in order.
    pub dropped: Vec<Revision>,
    /// The lists it changed, as they were.
    pub saved: Saved,
    /// Where the sweep stood before.
    pub was_at: SweepAt,
}

/// Key → versions, in key order.
#[derive(Debug, Default)]
pub struct KeyIndex {
    keys: BTreeMap<IndexKey, Vec<Version>>,
    compacted: u64,
    sweep: SweepAt,
    /// Revisions the sweep dropped whose tree rows are still to be removed.
    orphans: BTreeSet<Revision>,
}

/// How many versions of `list` compaction at `rev` drops: all at or below `rev` but the
/// newest, and that one too if it is a deletion. They are the list's first ones.
fn droppable(list: &[Version], rev: u64) -> usize {
    let n = list.partition_point(|v| v.rev.main <= rev);
    if n > 0 && !list[n - 1].dead { n - 1 } else { n }
}

/// The live version in `list` that revision `rev` sees.
fn visible(list: &[Version], rev: u64) -> Option<Revision> {
    let n = list.partition_point(|v| v.rev.main <= rev);
    let v = list[..n].last()?;
    (!v.dead).then_some(v.rev)
}

/// Bounds of a range of keys.
type KeyBounds<'a> = (Bound<Probe<'a>>, Bound<Probe<'a>>);

/// The map bounds of etcd's `key` / `range_end`: empty `range_end` is `key` alone, `"\0"` is
/// every key from `key` on, anything else `[key, range_end)`; `None` for an empty range.
fn bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<KeyBounds<'a>> {
    let (k, end) = (Probe::new(key), Probe::new(range_end));
    if range_end.is_empty() {
        Some((Bound::Included(k), Bound::Included(k)))
    } else if range_end == [0] {
        Some((Bound::Included(k), Bound::Unbounded))
    } else if range_end <= key {
        None
    } else {
        Some((Bound::Included(k), Bound::Excluded(end)))
    }
}

/// `b` as the map's range takes it.
fn view<'p, 'a>(b: &'p Bound<Probe<'a>>) -> Bound<&'p (dyn KeyView + 'a)> {
    match b {
        Bound::Included(p) => Bound::Included(p),
        Bound::Excluded(p) => Bound::Excluded(p),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl KeyIndex {
    /// An empty index of a tree compacted at `compacted`.
    pub fn new(compacted: u64) -> KeyIndex {
        KeyIndex {
            keys: BTreeMap::new(),
            compacted,
            sweep: None,
            orphans: BTreeSet::new(),
        }
    }

    /// The index of `versions` (a key's revisions all distinct): one sort and a bulk build,
    /// rather than a lookup among millions of keys per version.
    pub(crate) fn from_versions(
        compacted: u64,
        mut versions: Vec<(IndexKey, Version)>,
    ) -> KeyIndex {
        // In place, by key and then revision (a stable sort's scratch copies of these 96-byte
        // pairs were a fifth of the time to open four million keys).
        versions.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.rev.cmp(&b.1.rev)));
        let mut grouped: Vec<(IndexKey, Vec<Version>)> = Vec::new();
        for (k, v) in versions {
            match grouped.last_mut() {
                Some((last, list)) if *last == k => {
                    assert!(
                        list.last().is_none_or(|l| l.rev < v.rev),
                        "a key has one version per revision"
                    );
                    list.push(v);
                }
                _ => grouped.push((k, vec![v])),
            }
        }
        let garbage = grouped.iter().any(|(_, l)| droppable(l, compacted) > 0);
        KeyIndex {
            // Sorted input: the map is built bottom-up.
            keys: grouped.into_iter().collect(),
            compacted,
            // A compaction whose sweep a restart cut short sweeps again.
            sweep: garbage.then_some(None),
            orphans: BTreeSet::new(),
        }
    }

    /// The compacted revision: readers below it get `Compacted`.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// How many keys have a version.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key has a version.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Records a version of `key`, newer than every version it has.
    pub fn push(&mut self, key: &[u8], v: Version) {
        let list = match self.keys.get_mut(&Probe::new(key) as &dyn KeyView) {
            Some(l) => l,
            None => self.keys.entry(IndexKey::new(key)).or_default(),
        };
        assert!(
            list.last().is_none_or(|last| last.rev < v.rev),
            "versions of a key are pushed in revision order"
        );
        list.push(v);
    }

    /// Records a version of `key` that `make` builds from the key's current live version
    /// (`None` if it has none), in one lookup; the version must be newer than every version
    /// the key has. Returns that current version. If `make` fails, nothing changes.
    pub fn push_with<E>(
        &mut self,
        key: &[u8],
        make: impl FnOnce(Option<Version>) -> Result<Version, E>,
    ) -> Result<Option<Version>, E> {
        use std::collections::btree_map::Entry;
        match self.keys.entry(IndexKey::new(key)) {
            Entry::Occupied(mut o) => {
                let list = o.get_mut();
                let last = *list.last().expect("an indexed key has a version");
                let current = (!last.dead).then_some(last);
                let v = make(current)?;
                assert!(
                    last.rev < v.rev,
                    "versions of a key are pushed in revision order"
                );
                list.push(v);
                Ok(current)
            }
            Entry::Vacant(e) => {
                e.insert(vec![make(None)?]);
                Ok(None)
            }
        }
    }

    /// Undoes the last [`KeyIndex::push`] or [`KeyIndex::push_with`] of `key`.
    pub fn pop(&mut self, key: &[u8]) {
        let probe = Probe::new(key);
        let list = self
            .keys
            .get_mut(&probe as &dyn KeyView)
            .expect("popped key was pushed");
        list.pop();
        if list.is_empty() {
            self.keys.remove(&probe as &dyn KeyView);
        }
    }

    /// The versions of `key`.
    fn list(&self, key: &[u8]) -> Option<&Vec<Version>> {
        self.keys.get(&Probe::new(key) as &dyn KeyView)
    }

    /// The live version of `key` that revision `rev` sees.
    pub fn get(&self, key: &[u8], rev: u64) -> Option<Revision> {
        visible(self.list(key)?, rev)
    }

    /// The version of `key` just before `rev` (live or not), if the index holds one.
    pub fn before(&self, key: &[u8], rev: Revision) -> Option<Version> {
        let list = self.list(key)?;
        let n = list.partition_point(|v| v.rev < rev);
        list[..n].last().copied()
    }

    /// The newest version of `key` if it is live: the version a put at the head replaces.
    pub fn current(&self, key: &[u8]) -> Option<Version> {
        self.last(key).filter(|v| !v.dead)
    }

    /// The newest version of `key`, live or not.
    pub fn last(&self, key: &[u8]) -> Option<Version> {
        self.list(key)?.last().copied()
    }

    /// Calls `f` with every key in etcd's `key` / `range_end` that has a live version at
    /// `rev`, in key order, until it returns `false`.
    pub fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        rev: u64,
        mut f: impl FnMut(&[u8], Revision) -> bool,
    ) {
        let Some(b) = bounds(key, range_end) else {
            return;
        };
        for (k, list) in self.keys.range::<dyn KeyView, _>((view(&b.0), view(&b.1))) {
            if let Some(r) = visible(list, rev)
                && !f(k.bytes(), r)
            {
                return;
            }
        }
    }

    /// Calls `f` with every key that has a live version at `rev`, and that version, in key
    /// order.
    pub fn for_each_live(&self, rev: u64, mut f: impl FnMut(&[u8], &Version)) {
        for (k, list) in &self.keys {
            let n = list.partition_point(|v| v.rev.main <= rev);
            if let Some(v) = list[..n].last().filter(|v| !v.dead) {
                f(k.bytes(), v);
            }
        }
    }

    /// Compacts at `rev`: readers below it get `Compacted` from now on, and a sweep from the
    /// first key drops what no later revision sees (restarting one under way: keys it passed
    /// kept versions the new point drops). Returns the compacted revision and sweep before,
    /// for [`KeyIndex::restore`].
    pub fn compact(&mut self, rev: u64) -> (u64, SweepAt) {
        assert!(rev >= self.compacted, "compaction moves forward");
        let before = (self.compacted, self.sweep.take());
        self.compacted = rev;
        self.sweep = Some(None);
        before
    }

    /// Whether a compaction's sweep is under way: versions still to drop from the index, or
    /// orphans whose rows are still to be removed.
    pub fn sweeping(&self) -> bool {
        self.sweep.is_some() || !self.orphans.is_empty()
    }

    /// Whether the pass over the index is under way (orphans wait for it to end).
    pub fn sweeping_keys(&self) -> bool {
        self.sweep.is_some()
    }

    /// Sweeps on through at most `keys_max` keys, or until `drops_max` versions are dropped;
    /// what it drops becomes orphans. Nothing to do: an empty [`Swept`].
    pub fn sweep(&mut self, keys_max: usize, drops_max: usize) -> Swept {
        let Some(at) = self.sweep.clone() else {
            return Swept::default();
        };
        let rev = self.compacted;
        let mut out = Swept {
            was_at: Some(at.clone()),
            ..Swept::default()
        };
        let from = match &at {
            None => Bound::Unbounded,
            Some(k) => Bound::Excluded(Probe::new(k)),
        };
        let mut emptied = Vec::new();
        let mut last: Option<&IndexKey> = None;
        let mut more = false;
        let slice = self
            .keys
            .range_mut::<dyn KeyView, _>((view(&from), Bound::Unbounded));
        for (seen, (k, list)) in slice.enumerate() {
            if seen == keys_max || out.dropped.len() >= drops_max {
                more = true;
                break;
            }
            last = Some(k);
            let cut = droppable(list, rev);
            if cut == 0 {
                continue;
            }
            out.saved.push((k.bytes().to_vec(), list.clone()));
            out.dropped.extend(list.drain(..cut).map(|v| v.rev));
            if list.is_empty() {
                emptied.push(k.clone());
            }
        }
        let resume: Option<Box<[u8]>> = last.map(|k| k.bytes().into());
        for k in emptied {
            self.keys.remove(&k);
        }
        self.sweep = if more { Some(resume) } else { None };
        out.dropped.sort_unstable();
        for &r in &out.dropped {
            let new = self.orphans.insert(r);
            assert!(new, "a version is dropped once");
        }
        out
    }

    /// Puts back what a [`KeyIndex::sweep`] slice changed.
    pub fn unsweep(&mut self, swept: Swept) {
        for r in &swept.dropped {
            self.orphans.remove(r);
        }
        for (k, list) in swept.saved {
            self.keys.insert(IndexKey::new(&k), list);
        }
        self.sweep = swept.was_at;
    }

    /// The `n` oldest orphans, in revision order, for their rows to be removed; none while
    /// the pass over the index is under way, so that each run of rows goes in one slice.
    pub fn take_orphans(&mut self, n: usize) -> Vec<Revision> {
        if self.sweep.is_some() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(n.min(self.orphans.len()));
        while out.len() < n {
            let Some(r) = self.orphans.pop_first() else {
                break;
            };
            out.push(r);
        }
        out
    }

    /// Puts back orphans a [`KeyIndex::take_orphans`] handed out.
    pub fn untake_orphans(&mut self, taken: Vec<Revision>) {
        self.orphans.extend(taken);
    }

    /// Puts back the compacted revision and sweep from before a [`KeyIndex::compact`].
    pub fn restore(&mut self, (compacted, sweep): (u64, SweepAt)) {
        self.compacted = compacted;
        self.sweep = sweep;
    }

    /// Whether version `rev` of `key` is one a compaction at `compacted` keeps: every version
    /// above it, and at or below it the newest if live.
    pub fn kept(&self, key: &[u8], rev: Revision, compacted: u64) -> bool {
        rev.main > compacted || self.get(key, compacted) == Some(rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(main: u64, dead: bool) -> Version {
        Version {
            rev: Revision { main, sub: 0 },
            dead,
            meta: Meta::default(),
        }
    }

    fn live(ix: &KeyIndex, key: &[u8], end: &[u8], rev: u64) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        ix.range(key, end, rev, |k, r| {
            out.push((k.to_vec(), r.main));
            true
        });
        out
    }

    #[test]
    fn revisions_see_the_versions_of_their_time() {
        let mut ix = KeyIndex::default();
        ix.push(b"a", v(2, false));
        ix.push(b"b", v(3, false));
        ix.push(b"a", v(4, true));
        ix.push(b"a", v(5, false));
        assert_eq!(ix.get(b"a", 1), None);
        assert_eq!(ix.get(b"a", 3).map(|r| r.main), Some(2));
        assert_eq!(ix.get(b"a", 4), None);
        assert_eq!(ix.get(b"a", u64::MAX).map(|r| r.main), Some(5));
        assert_eq!(live(&ix, b"a", b"\0", 4), vec![(b"b".to_vec(), 3)]);
        assert_eq!(live(&ix, b"a", b"b", 9), vec![(b"a".to_vec(), 5)]);
        assert_eq!(live(&ix, b"b", b"", 9), vec![(b"b".to_vec(), 3)]);
        assert_eq!(live(&ix, b"b", b"a", 9), vec![]);
        assert_eq!(
            ix.before(b"a", Revision { main: 5, sub: 0 }),
            Some(v(4, true))
        );
        assert_eq!(ix.before(b"a", Revision { main: 2, sub: 0 }), None);
        ix.pop(b"a");
        assert_eq!(ix.get(b"a", u64::MAX), None);
        // Building on the current version: none after a deletion, the live one otherwise;
        // a failed build changes nothing.
        assert_eq!(
            ix.push_with(b"a", |cur| Ok::<_, ()>(
                cur.map_or(v(6, false), |_| v(0, false))
            )),
            Ok(None)
        );
        assert_eq!(
            ix.push_with(b"a", |cur| Ok::<_, ()>(v(cur.unwrap().rev.main + 1, false))),
            Ok(Some(v(6, false)))
        );
        assert_eq!(ix.push_with(b"a", |_| Err(())), Err(()));
        assert_eq!(ix.push_with(b"new", |_| Err(())), Err(()));
        assert_eq!(ix.last(b"a"), Some(v(7, false)));
        assert_eq!(ix.get(b"new", u64::MAX), None);
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn compaction_keeps_what_later_revisions_see_and_undoes() {
        let mut ix = KeyIndex::default();
        ix.push(b"a", v(2, false));
        ix.push(b"a", v(3, false));
        ix.push(b"b", v(4, false));
        ix.push(b"b", v(5, true));
        ix.push(b"c", v(6, false));
        let before = ix.compact(5);
        assert_eq!(ix.compacted(), 5);
        assert!(ix.sweeping());
        // Before the sweep, only kept versions count as kept.
        let r = |main| Revision { main, sub: 0 };
        assert!(!ix.kept(b"a", r(2), 5) && ix.kept(b"a", r(3), 5));
        assert!(!ix.kept(b"b", r(4), 5) && !ix.kept(b"b", r(5), 5));
        assert!(ix.kept(b"c", r(6), 5));
        // One key per slice: a, then b, then c, then nothing left.
        let first = ix.sweep(1, 100);
        assert_eq!(first.dropped, vec![r(2)]);
        assert!(ix.sweeping());
        assert!(ix.take_orphans(10).is_empty(), "orphans wait for the pass");
        let second = ix.sweep(1, 100);
        assert_eq!(second.dropped, vec![r(4), r(5)]);
        assert_eq!(ix.len(), 2);
        // Undone in reverse order, the index is as it was.
        ix.unsweep(second);
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.get(b"b", 4).map(|r| r.main), Some(4));
        let again = ix.sweep(1, 100);
        assert_eq!(again.dropped, vec![r(4), r(5)]);
        assert!(ix.sweeping(), "c is still to be looked at");
        assert!(ix.sweep(1, 100).dropped.is_empty());
        assert!(!ix.sweeping_keys());
        assert!(ix.sweeping(), "the dropped versions' rows are still to go");
        // Their rows go oldest first; a take that is undone comes back.
        let taken = ix.take_orphans(2);
        assert_eq!(taken, vec![r(2), r(4)]);
        ix.untake_orphans(taken);
        assert_eq!(ix.take_orphans(2), vec![r(2), r(4)]);
        assert_eq!(ix.take_orphans(2), vec![r(5)]);
        assert!(!ix.sweeping());
        assert_eq!(ix.get(b"a", 5).map(|r| r.main), Some(3));
        assert_eq!(ix.len(), 2);
        ix.restore(before);
        assert_eq!(ix.compacted(), 0);
        assert!(!ix.sweeping());
    }

    #[test]
    fn a_slice_stops_at_its_drop_limit_and_a_rebuilt_index_sweeps_again() {
        let mut ix = KeyIndex::default();
        for main in 1..=10 {
            ix.push(b"k", v(main, false));
            ix.push(b"l", v(100 + main, false));
        }
        ix.compact(200);
        let s = ix.sweep(100, 3);
        assert_eq!(s.dropped.len(), 9, "a key's versions go together");
        assert!(ix.sweeping());
        assert_eq!(ix.sweep(100, 3).dropped.len(), 9);
        assert!(!ix.sweeping_keys());
        assert_eq!(ix.take_orphans(100).len(), 18);
        assert!(!ix.sweeping());

        let rows = |ix_rows: &[(&[u8], u64)]| {
            ix_rows
                .iter()
                .map(|&(k, m)| (IndexKey::new(k), v(m, false)))
                .collect::<Vec<_>>()
        };
        let clean = KeyIndex::from_versions(5, rows(&[(b"a", 1), (b"b", 6), (b"a", 7)]));
        assert!(!clean.sweeping());
        assert_eq!(clean.get(b"a", 9).map(|r| r.main), Some(7));
        let mut left = KeyIndex::from_versions(5, rows(&[(b"a", 1), (b"b", 2), (b"a", 3)]));
        assert!(left.sweeping(), "a's version 1 is below the compaction");
        assert_eq!(
            left.sweep(10, 10).dropped,
            vec![Revision { main: 1, sub: 0 }]
        );
    }
}
