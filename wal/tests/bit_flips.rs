//! Bit flips at random offsets of real segment files are always detected: recovery refuses
//! the log with a corruption error, or discards a torn tail and says so; a flipped record is
//! never returned. Reads of a record corrupted under an open log fail too.

mod common;

use common::segments;
use quorumkv_simdisk::Rng;
use std::path::Path;

use quorumkv_wal::{Backend, Error, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 64 << 10,
        record_bytes_max: 4 << 10,
        batch_bytes_max: 16 << 10,
        ..WalOptions::default()
    }
}

fn rec(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..(i % 200)).map(|j| (i ^ j) as u8));
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for p in segments(from) {
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn random_bit_flips_are_all_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    const N: u64 = 1500;
    {
        let wal = Wal::open(&clean, opts(), Backend::Pwrite).unwrap();
        for chunk in (1..=N).collect::<Vec<_>>().chunks(10) {
            wal.append(chunk.iter().map(|&i| rec(i)))
                .unwrap()
                .wait()
                .unwrap();
        }
    }
    let files = segments(&clean);
    assert!(files.len() >= 3);
    let mut rng = Rng::new(0x1234_5678);
    let (mut refused, mut torn) = (0, 0);
    const TRIALS: usize = 400;
    for trial in 0..TRIALS {
        let work = tmp.path().join(format!("t{trial}"));
        copy_dir(&clean, &work);
        let target = &segments(&work)[rng.next_u64() as usize % files.len()];
        let mut bytes = std::fs::read(target).unwrap();
        let data_end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
        let bit = rng.next_u64() as usize % (data_end * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(target, &bytes).unwrap();
        match Wal::open(&work, opts(), Backend::Pwrite) {
            Err(Error::Corruption { .. }) => refused += 1,
            Err(e) => panic!("trial {trial}: unexpected error {e}"),
            Ok(wal) => {
                let report = wal.recovery_report().clone();
                let last = wal.last_index();
                let got = wal.read(1..last + 1).unwrap();
                for (k, r) in got.iter().enumerate() {
                    assert_eq!(
                        r,
                        &rec(k as u64 + 1),
                        "trial {trial}: corrupt record returned"
                    );
                }
                assert!(
                    report.torn_tail.is_some() && last < N,
                    "trial {trial}: flip of bit {bit} in {} went unnoticed",
                    target.display()
                );
                torn += 1;
            }
        }
        std::fs::remove_dir_all(&work).unwrap();
    }
    println!(
        "bit flips: {TRIALS} trials, {refused} refused as corruption, {torn} discarded as a torn tail, 0 undetected"
    );
    assert_eq!(refused + torn, TRIALS);
}

#[test]
fn corruption_under_an_open_log_fails_the_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::open(&dir, opts(), Backend::Pwrite).unwrap();
    wal.append((1..=20).map(rec)).unwrap().wait().unwrap();
    let seg = &segments(&dir)[0];
    let mut bytes = std::fs::read(seg).unwrap();
    // Flip a payload byte of some record in the middle of the segment.
    bytes[64 + 16 * 5 + 3] ^= 0x10;
    std::fs::write(seg, &bytes).unwrap();
    let mut failed = false;
    for i in 1..=20 {
        match wal.read(i..i + 1) {
            Ok(r) => assert_eq!(r, vec![rec(i)], "record {i} returned corrupt"),
            Err(Error::Corruption { detail, .. }) => {
                assert!(
                    detail.contains("crc") || detail.contains("padding"),
                    "{detail}"
                );
                failed = true;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(failed, "the corrupted record was read without error");
}

#[test]
fn a_damaged_record_with_intact_records_after_it_is_refused_not_cut() {
    // A torn write leaves unwritten (zero) bytes; a record damaged after it was written, with
    // intact, possibly acknowledged records after it, is corruption: cutting the log there
    // would drop those records.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = Wal::open(&dir, opts(), Backend::Pwrite).unwrap();
        for i in 1..=40 {
            wal.append([rec(i)]).unwrap().wait().unwrap();
        }
    }
    let seg = segments(&dir).pop().unwrap();
    let clean = std::fs::read(&seg).unwrap();
    // Record 20's frame: a 28-byte payload (`rec`), so 4 bytes of padding.
    let at = (64..clean.len() - 24)
        .step_by(8)
        .find(|&o| {
            clean[o + 4..o + 8] == [28, 0, 0, 1] && clean[o + 8..o + 16] == 20u64.to_le_bytes()
        })
        .expect("record 20's frame");
    for (what, offset) in [
        ("payload", at + 16 + 10),
        ("crc", at + 1),
        ("padding", at + 16 + 28 + 1),
    ] {
        let mut bytes = clean.clone();
        bytes[offset] ^= 0x04;
        std::fs::write(&seg, &bytes).unwrap();
        match Wal::open(&dir, opts(), Backend::Pwrite) {
            Err(Error::Corruption { detail, .. }) => assert!(
                detail.contains("record 20") && detail.contains("not a torn write"),
                "{what}: {detail}"
            ),
            Err(e) => panic!("{what}: unexpected error {e}"),
            Ok(wal) => panic!(
                "{what}: the log was opened, cut to {} records",
                wal.last_index()
            ),
        }
    }
    // Record 40 damaged, with nothing after it, is what a torn last write looks like.
    std::fs::write(&seg, &clean).unwrap();
    let last = (64..clean.len() - 24)
        .step_by(8)
        .find(|&o| clean[o + 8..o + 16] == 40u64.to_le_bytes() && clean[o + 7] == 1)
        .expect("record 40's frame");
    let mut bytes = clean.clone();
    bytes[last + 16 + 12] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    let wal = Wal::open(&dir, opts(), Backend::Pwrite).unwrap();
    assert_eq!(wal.last_index(), 39);
    assert!(wal.recovery_report().torn_tail.is_some());
}
