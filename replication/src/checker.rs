//! A linearizability checker for histories of registers with put, get and compare-and-set.
//!
//! Histories are split by key (linearizability is compositional) and each key's history is
//! searched Wing & Gong style with Lowe's memoization of (linearized set, state), as porcupine
//! does. Operations whose outcome is unknown (the client timed out) may take effect at any
//! point after their invocation, or never. A search that exceeds its step budget reports
//! [`Outcome::Unknown`] — never a pass.
//!
//! Memory stays bounded whatever the history: the memo holds a 128-bit Zobrist hash of each
//! (linearized set, state) pair, kept up to date in O(1) per step, never the set itself, and
//! at most [`MEMO_ENTRIES_MAX`] of them; past that the search goes on without remembering new
//! pairs and the step budget ends it. A hash collision can only prune a branch that was never
//! searched, so it could report a violation that is not one (odds about n²/2¹²⁸), never hide
//! one.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// The most memo entries one key's search keeps (16 bytes each, about 0.5 GiB at most with the
/// table's slack).
pub const MEMO_ENTRIES_MAX: usize = 1 << 24;

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Write a value.
    Put(u64),
    /// Read (result: the value, 0 when absent).
    Get,
    /// Compare-and-set.
    Cas {
        /// Expected value.
        expect: u64,
        /// New value.
        new: u64,
    },
}

/// What it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// A put completed.
    Done,
    /// A get returned this value.
    Value(u64),
    /// A CAS returned whether it swapped.
    Swapped(bool),
    /// Unknown: the client gave up waiting.
    Unknown,
}

/// One operation of a history, times in any monotonic unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// Client that issued it.
    pub client: u64,
    /// Register.
    pub key: u8,
    /// What it did.
    pub kind: OpKind,
    /// What it returned.
    pub result: OpResult,
    /// Invocation time.
    pub invoke: u64,
    /// Completion time (ignored for unknown results).
    pub complete: u64,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Linearizable.
    Ok,
    /// Not linearizable: the key and a description.
    Violation(String),
    /// The search exceeded its budget on this key.
    Unknown(u8),
}

fn step(state: u64, op: &Op) -> Option<u64> {
    match (op.kind, op.result) {
        (OpKind::Put(v), _) => Some(v),
        (OpKind::Get, OpResult::Value(v)) => (state == v).then_some(state),
        (OpKind::Get, _) => Some(state),
        (OpKind::Cas { expect, new }, OpResult::Swapped(true)) => (state == expect).then_some(new),
        (OpKind::Cas { expect, .. }, OpResult::Swapped(false)) => {
            (state != expect).then_some(state)
        }
        (OpKind::Cas { expect, new }, _) => Some(if state == expect { new } else { state }),
    }
}

/// Checks a whole history; `budget` bounds the search steps per key.
pub fn check(history: &[Op], budget: u64) -> Outcome {
    let mut by_key: BTreeMap<u8, Vec<Op>> = BTreeMap::new();
    for op in history {
        // A read that never returned constrains nothing.
        if op.kind == OpKind::Get && op.result == OpResult::Unknown {
            continue;
        }
        by_key.entry(op.key).or_default().push(*op);
    }
    for (key, ops) in by_key {
        match check_key(&ops, budget) {
            Some(true) => {}
            Some(false) => {
                return Outcome::Violation(format!(
                    "key {key}: no linearization of its {} operations",
                    ops.len()
                ));
            }
            None => return Outcome::Unknown(key),
        }
    }
    Outcome::Ok
}

const NIL: usize = usize::MAX;

/// splitmix64: a fixed, well-spread 64-bit value per input.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The Zobrist key of operation `i` being linearized.
fn op_key(i: usize) -> u128 {
    let i = i as u64;
    (u128::from(splitmix(2 * i)) << 64) | u128::from(splitmix(2 * i + 1))
}

/// The key of the register's state, from a stream apart from the operations'.
fn state_key(state: u64) -> u128 {
    let a = splitmix(state ^ 0x5851_f42d_4c95_7f2d);
    (u128::from(splitmix(a)) << 64) | u128::from(a)
}

/// The memo's keys are already uniform hashes: use their low bits as they are.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Memo = HashSet<u128, BuildHasherDefault<PreHashed>>;

/// `Some(true)`: linearizable; `Some(false)`: not; `None`: budget exceeded.
fn check_key(ops: &[Op], budget: u64) -> Option<bool> {
    check_key_within(ops, budget, MEMO_ENTRIES_MAX)
}

fn check_key_within(ops: &[Op], budget: u64, memo_max: usize) -> Option<bool> {
    let n = ops.len();
    // Entries: 2i is the call of op i, 2i+1 its return.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        let ret = if op.result == OpResult::Unknown {
            u64::MAX
        } else {
            op.complete.max(op.invoke)
        };
        events.push((op.invoke, false, 2 * i));
        events.push((ret, true, 2 * i + 1));
    }
    // At equal times, calls come first: touching operations are concurrent.
    events.sort_by_key(|&(t, is_ret, id)| (t, is_ret, id));
    let mut next = vec![NIL; 2 * n];
    let mut prev = vec![NIL; 2 * n];
    let mut head = NIL;
    let mut last = NIL;
    for &(_, _, id) in &events {
        if last == NIL {
            head = id;
        } else {
            next[last] = id;
            prev[id] = last;
        }
        last = id;
    }
    // The Zobrist hash of the linearized set: the XOR of its operations' keys.
    let mut linearized = 0u128;
    let mut memo = Memo::default();
    let mut stack: Vec<(usize, u64)> = Vec::new();
    let mut state = 0u64;
    let mut cur = head;
    let mut steps = 0u64;
    let unlink = |id: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, head: &mut usize| {
        let (p, nx) = (prev[id], next[id]);
        if p == NIL {
            *head = nx
        } else {
            next[p] = nx
        }
        if nx != NIL {
            prev[nx] = p;
        }
    };
    let relink = |id: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>, head: &mut usize| {
        let (p, nx) = (prev[id], next[id]);
        if p == NIL {
            *head = id
        } else {
            next[p] = id
        }
        if nx != NIL {
            prev[nx] = id;
        }
    };
    while head != NIL {
        steps += 1;
        if steps > budget {
            return None;
        }
        // A return of an op not yet linearized (or no candidate left): the last choice was
        // wrong. Undo it and try the next candidate after it.
        if cur == NIL || cur % 2 == 1 {
            let Some((call, s)) = stack.pop() else {
                return Some(false);
            };
            linearized ^= op_key(call / 2);
            state = s;
            relink(call + 1, &mut next, &mut prev, &mut head);
            relink(call, &mut next, &mut prev, &mut head);
            cur = next[call];
            continue;
        }
        {
            let op = cur / 2;
            if let Some(ns) = step(state, &ops[op]) {
                let with = linearized ^ op_key(op);
                let pair = with ^ state_key(ns);
                let new = if memo.len() < memo_max {
                    memo.insert(pair)
                } else {
                    !memo.contains(&pair)
                };
                if new {
                    stack.push((cur, state));
                    linearized = with;
                    state = ns;
                    unlink(cur, &mut next, &mut prev, &mut head);
                    unlink(cur + 1, &mut next, &mut prev, &mut head);
                    cur = head;
                    continue;
                }
            }
            cur = next[cur];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, kind: OpKind, result: OpResult, invoke: u64, complete: u64) -> Op {
        Op {
            client,
            key: 1,
            kind,
            result,
            invoke,
            complete,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            op(1, OpKind::Put(5), OpResult::Done, 0, 1),
            op(2, OpKind::Get, OpResult::Value(5), 2, 3),
            op(
                1,
                OpKind::Cas { expect: 5, new: 6 },
                OpResult::Swapped(true),
                4,
                5,
            ),
            op(2, OpKind::Get, OpResult::Value(6), 6, 7),
        ];
        assert_eq!(check(&h, 1_000_000), Outcome::Ok);
    }

    #[test]
    fn stale_read_is_caught() {
        let h = [
            op(1, OpKind::Put(5), OpResult::Done, 0, 1),
            op(1, OpKind::Put(6), OpResult::Done, 2, 3),
            op(2, OpKind::Get, OpResult::Value(5), 4, 5),
        ];
        assert!(matches!(check(&h, 1_000_000), Outcome::Violation(_)));
    }

    #[test]
    fn concurrent_ops_may_reorder() {
        let h = [
            op(1, OpKind::Put(5), OpResult::Done, 0, 10),
            op(2, OpKind::Get, OpResult::Value(0), 1, 2),
            op(3, OpKind::Get, OpResult::Value(5), 3, 4),
            op(4, OpKind::Get, OpResult::Value(5), 5, 6),
        ];
        assert_eq!(check(&h, 1_000_000), Outcome::Ok);
        // ...but not back in time once observed.
        let h2 = [
            op(1, OpKind::Put(5), OpResult::Done, 0, 10),
            op(3, OpKind::Get, OpResult::Value(5), 1, 2),
            op(4, OpKind::Get, OpResult::Value(0), 3, 4),
        ];
        assert!(matches!(check(&h2, 1_000_000), Outcome::Violation(_)));
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        let h = [
            op(1, OpKind::Put(7), OpResult::Unknown, 0, 0),
            op(2, OpKind::Get, OpResult::Value(0), 5, 6),
            op(2, OpKind::Get, OpResult::Value(7), 7, 8),
        ];
        assert_eq!(check(&h, 1_000_000), Outcome::Ok);
        let never = [
            op(1, OpKind::Put(7), OpResult::Unknown, 0, 0),
            op(2, OpKind::Get, OpResult::Value(0), 5, 6),
        ];
        assert_eq!(check(&never, 1_000_000), Outcome::Ok);
    }

    #[test]
    fn failed_cas_must_see_another_value() {
        let h = [
            op(1, OpKind::Put(1), OpResult::Done, 0, 1),
            op(
                2,
                OpKind::Cas { expect: 1, new: 2 },
                OpResult::Swapped(false),
                2,
                3,
            ),
        ];
        assert!(matches!(check(&h, 1_000_000), Outcome::Violation(_)));
    }

    #[test]
    fn budget_exhaustion_is_unknown_not_ok() {
        let mut h = Vec::new();
        for c in 0..40u64 {
            h.push(op(c, OpKind::Put(c + 1), OpResult::Done, 0, 100));
        }
        h.push(op(99, OpKind::Get, OpResult::Value(999), 101, 102));
        assert_eq!(check(&h, 50), Outcome::Unknown(1));
    }

    /// The verdict of `h` with the memo at full size, and with it held to 0 and 1 entries
    /// (the search then goes on without remembering): all three must agree.
    fn verdicts(h: &[Op]) -> Vec<Option<bool>> {
        [MEMO_ENTRIES_MAX, 0, 1]
            .iter()
            .map(|&m| check_key_within(h, 1_000_000, m))
            .collect()
    }

    #[test]
    fn a_full_memo_changes_no_verdict() {
        let ok = [
            op(1, OpKind::Put(5), OpResult::Done, 0, 10),
            op(2, OpKind::Get, OpResult::Value(0), 1, 2),
            op(3, OpKind::Get, OpResult::Value(5), 3, 4),
            op(4, OpKind::Put(7), OpResult::Unknown, 0, 0),
            op(5, OpKind::Get, OpResult::Value(7), 11, 12),
        ];
        assert_eq!(verdicts(&ok), vec![Some(true); 3]);
        let bad = [
            op(1, OpKind::Put(5), OpResult::Done, 0, 10),
            op(3, OpKind::Get, OpResult::Value(5), 1, 2),
            op(4, OpKind::Get, OpResult::Value(0), 3, 4),
        ];
        assert_eq!(verdicts(&bad), vec![Some(false); 3]);
    }

    /// Whether some order of `ops` (each unknown one taken or left out) respects real time
    /// and the register's rules: the definition, by brute force.
    fn linearizable_by_brute_force(ops: &[Op]) -> bool {
        fn extend(ops: &[Op], done: &mut Vec<bool>, state: u64) -> bool {
            let pending: Vec<usize> = (0..ops.len())
                .filter(|&i| !done[i] && ops[i].result != OpResult::Unknown)
                .collect();
            if pending.is_empty() {
                return true;
            }
            for i in 0..ops.len() {
                if done[i] {
                    continue;
                }
                // i may go next only if no pending known op returned before i was invoked.
                let blocked = pending
                    .iter()
                    .any(|&j| j != i && ops[j].complete < ops[i].invoke);
                if blocked {
                    continue;
                }
                if let Some(ns) = step(state, &ops[i]) {
                    done[i] = true;
                    let found = extend(ops, done, ns);
                    done[i] = false;
                    if found {
                        return true;
                    }
                }
            }
            false
        }
        extend(ops, &mut vec![false; ops.len()], 0)
    }

    fn arb_op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        (0u64..3, 0u64..3, 0u64..20, 0u64..6, 0u8..4).prop_map(|(a, b, invoke, len, kind)| {
            let complete = invoke + len;
            let (kind, result) = match kind {
                0 => (OpKind::Put(a + 1), OpResult::Done),
                1 => (OpKind::Get, OpResult::Value(a)),
                2 => (
                    OpKind::Cas {
                        expect: a,
                        new: b + 1,
                    },
                    OpResult::Swapped(a != b),
                ),
                _ => (OpKind::Put(a + 1), OpResult::Unknown),
            };
            op(0, kind, result, invoke, complete)
        })
    }

    proptest::proptest! {
        #[test]
        fn the_search_agrees_with_brute_force(h in proptest::collection::vec(arb_op(), 1..7)) {
            let want = linearizable_by_brute_force(&h);
            for got in verdicts(&h) {
                proptest::prop_assert_eq!(got, Some(want));
            }
        }
    }

    #[test]
    fn a_long_history_with_lost_writes_checks_in_bounded_memory() {
        // 200,000 operations on one register; every 50th write is lost (unknown) and stays
        // concurrent with everything after it, as after a crash. A memo of whole bitsets would
        // hold gigabytes here; the hashed memo holds 16 bytes per entry and stops at its cap.
        let mut h = Vec::new();
        let mut value = 0;
        for i in 0..200_000u64 {
            let t = 10 * i;
            if i % 50 == 25 {
                h.push(op(i, OpKind::Put(1_000_000 + i), OpResult::Unknown, t, 0));
            } else if i % 2 == 0 {
                value = i + 1;
                h.push(op(i, OpKind::Put(value), OpResult::Done, t, t + 5));
            } else {
                h.push(op(i, OpKind::Get, OpResult::Value(value), t, t + 5));
            }
        }
        assert_eq!(check_key_within(&h, 50_000_000, 1 << 16), Some(true));
    }
}
