//! Segment files that are wrong yet carry valid checksums — what a hostile or buggy writer
//! could produce: headers with resealed CRCs naming other sequences, indexes or flags; frames
//! with resealed CRCs claiming other lengths, types or indexes; and random files under valid
//! names. Opening and reading such a log gives errors or well-formed records, never a panic or
//! an allocation sized by a corrupt length.

mod common;

use common::segments;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use quorumkv_wal::{Backend, Wal, WalOptions};

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 16 << 10,
        record_bytes_max: 2 << 10,
        batch_bytes_max: 8 << 10,
        ..WalOptions::default()
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    files: Vec<(String, Vec<u8>)>,
    work: PathBuf,
}

fn fixture() -> &'static std::sync::Mutex<Fixture> {
    static F: std::sync::OnceLock<std::sync::Mutex<Fixture>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let clean = tmp.path().join("clean");
        let wal = Wal::open(&clean, opts(), Backend::Pwrite).unwrap();
        for i in 0..120u64 {
            let rec = vec![i as u8; 50 + (i as usize * 13) % 400];
            wal.append([rec]).unwrap().wait().unwrap();
        }
        drop(wal);
        let files = segments(&clean)
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(p).unwrap())
            })
            .collect();
        let work = tmp.path().join("work");
        std::sync::Mutex::new(Fixture {
            _tmp: tmp,
            files,
            work,
        })
    })
}

fn reseal_header(seg: &mut [u8]) {
    let crc = crc32c::crc32c(&seg[..60]);
    seg[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Offsets of the frames in a clean segment.
fn frames(seg: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 64;
    while off + 16 <= seg.len() && seg[off..off + 16].iter().any(|&b| b != 0) {
        out.push(off);
        let len =
            (u32::from_le_bytes(seg[off + 4..off + 8].try_into().unwrap()) & 0xff_ffff) as usize;
        off += (16 + len).div_ceil(8) * 8;
    }
    out
}

/// Recomputes the CRC of the frame at `off`, trusting whatever length it now claims (clamped
/// to the file).
fn reseal_frame(seg: &mut [u8], off: usize) {
    let salt = &seg[12..16].to_vec();
    let len = (u32::from_le_bytes(seg[off + 4..off + 8].try_into().unwrap()) & 0xff_ffff) as usize;
    let end = (off + 16 + len).min(seg.len());
    let mut h = crc32c::crc32c(salt);
    h = crc32c::crc32c_append(h, &seg[off + 4..off + 16]);
    h = crc32c::crc32c_append(h, &seg[off + 16..end]);
    seg[off..off + 4].copy_from_slice(&h.to_le_bytes());
}

fn exercise(dir: &Path) -> Result<(), String> {
    let dir = dir.to_path_buf();
    std::panic::catch_unwind(move || {
        let Ok(wal) = Wal::open(&dir, opts(), Backend::Pwrite) else {
            return;
        };
        let (first, last) = (wal.first_index(), wal.last_index());
        if last >= first {
            let _ = wal.read(first..last + 1);
        }
        let _ = wal.append([b"after".to_vec()]).and_then(|t| t.wait());
    })
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn write_log(work: &Path, files: &[(String, Vec<u8>)]) {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).unwrap();
    for (name, bytes) in files {
        std::fs::write(work.join(name), bytes).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn resealed_header_edits_never_panic(
        which in any::<usize>(),
        edits in proptest::collection::vec((0usize..60, any::<u8>()), 1..6),
    ) {
        let f = fixture().lock().unwrap();
        let mut files = f.files.clone();
        let k = which % files.len();
        for &(pos, val) in &edits {
            files[k].1[pos] = val;
        }
        reseal_header(&mut files[k].1);
        write_log(&f.work, &files);
        let r = exercise(&f.work);
        prop_assert!(r.is_ok(), "segment {} edits {:?}: panic {:?}", k, edits, r);
    }

    #[test]
    fn resealed_frame_edits_never_panic(
        which in any::<usize>(),
        frame_pick in any::<usize>(),
        edits in proptest::collection::vec((4usize..16, any::<u8>()), 1..4),
    ) {
        let f = fixture().lock().unwrap();
        let mut files = f.files.clone();
        let k = which % files.len();
        let offs = frames(&files[k].1);
        prop_assume!(!offs.is_empty());
        let off = offs[frame_pick % offs.len()];
        for &(pos, val) in &edits {
            files[k].1[off + pos] = val;
        }
        reseal_frame(&mut files[k].1, off);
        write_log(&f.work, &files);
        let r = exercise(&f.work);
        prop_assert!(r.is_ok(), "segment {} frame at {} edits {:?}: panic {:?}", k, off, edits, r);
    }

    #[test]
    fn random_files_under_valid_names_never_panic(
        which in any::<usize>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..20_000),
    ) {
        let f = fixture().lock().unwrap();
        let mut files = f.files.clone();
        let k = which % files.len();
        files[k].1 = bytes;
        write_log(&f.work, &files);
        let r = exercise(&f.work);
        prop_assert!(r.is_ok(), "panic {:?}", r);
    }
}

#[test]
fn resealing_reproduces_the_real_checksums() {
    // Otherwise the edits above would all be caught by checksums and prove nothing.
    let f = fixture().lock().unwrap();
    for (name, clean) in &f.files {
        let mut copy = clean.clone();
        reseal_header(&mut copy);
        let offs = frames(clean);
        assert!(!offs.is_empty(), "{name} has frames");
        for &off in &offs {
            reseal_frame(&mut copy, off);
        }
        assert_eq!(&copy, clean, "{name}");
    }
}
