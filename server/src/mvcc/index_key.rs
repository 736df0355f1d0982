//! The key type of the in-memory key index: the key's first 32 bytes inline beside the
//! pointer to the whole key, so a lookup among many keys decides most comparisons without
//! following pointers (each one a likely cache miss). Keys in a real key space share long
//! prefixes (`/registry/pods/<namespace>/`, `/etcdctl-check-perf/`), so a head shorter than the
//! prefix would decide nothing. It orders exactly as the bytes do, and lookups borrow it as a
//! [`KeyView`] so they need no allocation.

use std::borrow::Borrow;
use std::cmp::Ordering;

/// Bytes of a key held inline.
const HEAD_BYTES: usize = 32;

/// The first [`HEAD_BYTES`] bytes of a key, zero-padded, as two big-endian numbers.
type Head = (u128, u128);

/// The head of `key`: where two keys' heads differ, they order as their bytes do (a shorter
/// key's padding is below any byte it lacks, unless that byte is 0, and then the heads are
/// equal and the bytes decide).
fn head(key: &[u8]) -> Head {
    let mut b = [0u8; HEAD_BYTES];
    let n = key.len().min(HEAD_BYTES);
    b[..n].copy_from_slice(&key[..n]);
    let (hi, lo) = b.split_at(HEAD_BYTES / 2);
    let word = |s: &[u8]| u128::from_be_bytes(s.try_into().expect("half of the head"));
    (word(hi), word(lo))
}

/// A key as the index stores it.
#[derive(Debug, Clone)]
pub(crate) struct IndexKey {
    head: Head,
    key: Box<[u8]>,
}

impl IndexKey {
    pub(crate) fn new(key: &[u8]) -> IndexKey {
        IndexKey {
            head: head(key),
            key: key.into(),
        }
    }
}

/// A key borrowed for a lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe<'a> {
    head: Head,
    key: &'a [u8],
}

impl<'a> Probe<'a> {
    pub(crate) fn new(key: &'a [u8]) -> Probe<'a> {
        Probe {
            head: head(key),
            key,
        }
    }
}

/// What the index compares: a stored key or a probe.
pub(crate) trait KeyView {
    /// [`head`] of the key.
    fn head(&self) -> Head;
    /// The key's bytes.
    fn bytes(&self) -> &[u8];
}

impl KeyView for IndexKey {
    fn head(&self) -> Head {
        self.head
    }
    fn bytes(&self) -> &[u8] {
        &self.key
    }
}

impl KeyView for Probe<'_> {
    fn head(&self) -> Head {
        self.head
    }
    fn bytes(&self) -> &[u8] {
        self.key
    }
}

fn compare(a: &dyn KeyView, b: &dyn KeyView) -> Ordering {
    a.head()
        .cmp(&b.head())
        .then_with(|| a.bytes().cmp(b.bytes()))
}

impl<'a> Borrow<dyn KeyView + 'a> for IndexKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        compare(self, other).is_eq()
    }
}

impl Eq for dyn KeyView + '_ {}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        compare(self, other).is_eq()
    }
}

impl Eq for IndexKey {}

impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keys_order_as_their_bytes(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8), any::<u8>()], 0..40),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8), any::<u8>()], 0..40),
        ) {
            let want = a.cmp(&b);
            prop_assert_eq!(IndexKey::new(&a).cmp(&IndexKey::new(&b)), want);
            let (pa, pb) = (Probe::new(&a), Probe::new(&b));
            prop_assert_eq!((&pa as &dyn KeyView).cmp(&pb as &dyn KeyView), want);
            let ka = IndexKey::new(&a);
            prop_assert_eq!(Borrow::<dyn KeyView>::borrow(&ka).cmp(&pb as &dyn KeyView), want);
        }
    }

    proptest! {
        #[test]
        fn keys_with_a_shared_prefix_order_as_their_bytes(
            prefix_len in 0usize..48,
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(255u8), any::<u8>()], 0..12),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(255u8), any::<u8>()], 0..12),
        ) {
            let prefix = &b"/registry/pods/kube-system/coredns-5d78c9869d-"[..prefix_len.min(46)];
            let (a, b) = ([prefix, &a].concat(), [prefix, &b].concat());
            let want = a.cmp(&b);
            prop_assert_eq!(IndexKey::new(&a).cmp(&IndexKey::new(&b)), want);
            let ka = IndexKey::new(&a);
            let pb = Probe::new(&b);
            prop_assert_eq!(Borrow::<dyn KeyView>::borrow(&ka).cmp(&pb as &dyn KeyView), want);
        }
    }

    #[test]
    fn padding_and_zero_bytes_order_as_bytes() {
        let zeros = [0u8; 40];
        let mut a_zeros = b"a".to_vec();
        a_zeros.extend_from_slice(&zeros);
        let keys: [&[u8]; 7] = [b"", b"\0", &zeros, b"a", b"a\0", &a_zeros, b"a\x01"];
        for w in keys.windows(2) {
            assert!(IndexKey::new(w[0]) < IndexKey::new(w[1]), "{w:?}");
        }
    }
}
