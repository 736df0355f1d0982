//! Property tests: random sequences of append, read, truncate, purge and reopen against an
//! in-memory model of the log.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use quorumkv_wal::io::SimFs;
use quorumkv_wal::{Wal, WalOptions};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Truncate(u16),
    Purge(u16),
    PurgePastEnd(u8),
    Read(u16, u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(0usize..700, 1..12).prop_map(Op::Append),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => any::<u16>().prop_map(Op::Purge),
        1 => any::<u8>().prop_map(|n| Op::PurgePastEnd(n % 4)),
        2 => (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Op::Read(a, b)),
        1 => Just(Op::Reopen),
    ]
}

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 8 << 10,
        record_bytes_max: 1 << 10,
        batch_bytes_max: 2 << 10,
        batch_records_max: 7,
        preallocate: false,
        ..WalOptions::default()
    }
}

fn payload(index: u64, len: usize, salt: u64) -> Vec<u8> {
    (0..len)
        .map(|k| (index as usize * 31 + k + salt as usize) as u8)
        .collect()
}

fn open(fs: &SimFs) -> Wal {
    Wal::open_with_fs(Path::new("/sim/wal"), opts(), Arc::new(fs.clone())).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let fs = SimFs::new();
        let mut wal = open(&fs);
        // model[i] is the payload at index first + i.
        let mut first = 1u64;
        let mut model: Vec<Vec<u8>> = Vec::new();
        for (salt, op) in ops.into_iter().enumerate() {
            let salt = salt as u64 + 1;
            let last = first + model.len() as u64 - 1;
            match op {
                Op::Append(lens) => {
                    let recs: Vec<Vec<u8>> = lens
                        .iter()
                        .enumerate()
                        .map(|(k, &l)| payload(last + 1 + k as u64, l, salt))
                        .collect();
                    let t = wal.append(&recs).unwrap();
                    prop_assert_eq!(t.first_index(), last + 1);
                    t.wait().unwrap();
                    model.extend(recs);
                }
                Op::Truncate(x) => {
                    let from = first + u64::from(x) % (model.len() as u64 + 1);
                    wal.truncate_suffix(from).unwrap();
                    model.truncate((from - first) as usize);
                }
                Op::Purge(x) => {
                    if !model.is_empty() {
                        let up_to = first + u64::from(x) % model.len() as u64;
                        if up_to < last {
                            wal.purge_prefix(up_to).unwrap();
                            model.drain(..(up_to + 1 - first) as usize);
                            first = up_to + 1;
                        }
                    }
                }
                Op::PurgePastEnd(n) => {
                    let up_to = last + u64::from(n);
                    wal.purge_prefix(up_to).unwrap();
                    model.clear();
                    first = up_to + 1;
                }
                Op::Read(a, b) => {
                    if !model.is_empty() {
                        let lo = u64::from(a) % model.len() as u64;
                        let hi = lo + 1 + u64::from(b) % (model.len() as u64 - lo);
                        let got = wal.read(first + lo..first + hi).unwrap();
                        prop_assert_eq!(&got[..], &model[lo as usize..hi as usize]);
                    }
                }
                Op::Reopen => {
                    drop(wal);
                    wal = open(&fs);
                    let f = wal.first_index();
                    prop_assert!(f <= first, "first index {} moved past {}", f, first);
                    // Records from a partly purged segment may reappear; they must be the
                    // old ones, and the model's first index stays what the caller purged to.
                    prop_assert_eq!(wal.last_index(), first + model.len() as u64 - 1);
                    if f < first {
                        wal.purge_prefix(first - 1).unwrap();
                    }
                }
            }
            prop_assert_eq!(wal.first_index(), first);
            prop_assert_eq!(wal.last_index(), first + model.len() as u64 - 1);
            prop_assert_eq!(wal.durable_index(), wal.last_index());
        }
        if !model.is_empty() {
            let got = wal.read(first..first + model.len() as u64).unwrap();
            prop_assert_eq!(got, model);
        }
    }
}
