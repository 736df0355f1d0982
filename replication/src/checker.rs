//! A linearizability checker for histories of registers with put, get and compare-and-set.
//!
//! Histories are split by key (linearizability is compositional) and each key's history is
//! searched Wing & Gong style with Lowe's memoization of (linearized set, state), as porcupine
//! does. Operations whose outcome is unknown (the client timed out) may take effect at any
//! point after their invocation, or never. A search that exceeds its step budget reports
//! [`Outcome::Unknown`] — never a pass.

use std::collections::{BTreeMap, HashSet};

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

/// `Some(true)`: linearizable; `Some(false)`: not; `None`: budget exceeded.
fn check_key(ops: &[Op], budget: u64) -> Option<bool> {
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
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u64)> = HashSet::new();
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
            let op = call / 2;
            linearized[op / 64] &= !(1 << (op % 64));
            state = s;
            relink(call + 1, &mut next, &mut prev, &mut head);
            relink(call, &mut next, &mut prev, &mut head);
            cur = next[call];
            continue;
        }
        {
            let op = cur / 2;
            if let Some(ns) = step(state, &ops[op]) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), ns)) {
                    stack.push((cur, state));
                    state = ns;
                    unlink(cur, &mut next, &mut prev, &mut head);
                    unlink(cur + 1, &mut next, &mut prev, &mut head);
                    cur = head;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
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
}
