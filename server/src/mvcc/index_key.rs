//! The key type of the in-memory key index: the key's first eight bytes inline beside the
//! pointer to the whole key, so a lookup among many keys decides most comparisons without
//! following pointers (each one a likely cache miss). It orders exactly as the bytes do, and
//! lookups borrow it as a [`KeyView`] so they need no allocation.

use std::borrow::Borrow;
use std::cmp::Ordering;

/// The first eight bytes of `key`, zero-padded, as a big-endian number: where two keys'
/// heads differ, they order as their bytes do (a shorter key's padding is below any byte it
/// lacks, unless that byte is 0, and then the heads are equal).
fn head(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// A key as the index stores it.
#[derive(Debug, Clone)]
pub(crate) struct IndexKey {
    head: u64,
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
    head: u64,
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
    fn head(&self) -> u64;
    /// The key's bytes.
    fn bytes(&self) -> &[u8];
}

impl KeyView for IndexKey {
    fn head(&self) -> u64 {
        self.head
    }
    fn bytes(&self) -> &[u8] {
        &self.key
    }
}

impl KeyView for Probe<'_> {
    fn head(&self) -> u64 {
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
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8), any::<u8>()], 0..12),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8), any::<u8>()], 0..12),
        ) {
            let want = a.cmp(&b);
            prop_assert_eq!(IndexKey::new(&a).cmp(&IndexKey::new(&b)), want);
            let (pa, pb) = (Probe::new(&a), Probe::new(&b));
            prop_assert_eq!((&pa as &dyn KeyView).cmp(&pb as &dyn KeyView), want);
            let ka = IndexKey::new(&a);
            prop_assert_eq!(Borrow::<dyn KeyView>::borrow(&ka).cmp(&pb as &dyn KeyView), want);
        }
    }

    #[test]
    fn padding_and_zero_bytes_order_as_bytes() {
        let keys: [&[u8]; 6] = [b"", b"\0", b"a", b"a\0", b"a\0\0\0\0\0\0\0\0", b"a\x01"];
        for w in keys.windows(2) {
            assert!(IndexKey::new(w[0]) < IndexKey::new(w[1]), "{w:?}");
        }
    }
}
