//! The file system mounted for real: programs' ordinary calls (write, fsync, rename, fsync of
//! a directory) decide what a power cut leaves.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use quorumkv_lossyfs::{Cut, Disk};

fn sync_dir(p: &std::path::Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

#[test]
fn a_power_cut_keeps_exactly_what_fsyncs_covered() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("disk");
    fs::create_dir(&root).unwrap();
    let mut disk = Disk::mount(&root).expect("mount lossyfs (needs root and /dev/fuse)");

    // Durable: written, fsynced, named by a synced directory.
    let dir = root.join("member");
    fs::create_dir(&dir).unwrap();
    sync_dir(&root);
    let mut kept = File::create(dir.join("kept")).unwrap();
    kept.write_all(b"synced").unwrap();
    kept.sync_data().unwrap();
    sync_dir(&dir);
    // Written after the fsync: lost.
    kept.write_all(b" and more").unwrap();
    drop(kept);
    // A rename with the directory synced after it holds; the one after that does not.
    fs::write(dir.join("a.tmp"), b"renamed").unwrap();
    File::open(dir.join("a.tmp")).unwrap().sync_all().unwrap();
    fs::rename(dir.join("a.tmp"), dir.join("a")).unwrap();
    sync_dir(&dir);
    // Preallocated and sparse reads of zeros.
    let big = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join("segment"))
        .unwrap();
    big.set_len(64 << 20).unwrap();
    big.write_all_at(b"frame", 1 << 20).unwrap();
    big.sync_data().unwrap();
    sync_dir(&dir);
    drop(big);
    assert!(disk.stored_bytes() < 1 << 20, "zeros are holes");
    fs::rename(dir.join("a"), dir.join("b")).unwrap();
    // Never named durably: gone, the fsync of its data notwithstanding.
    let mut orphan = File::create(dir.join("orphan")).unwrap();
    orphan.write_all(b"x").unwrap();
    orphan.sync_all().unwrap();
    drop(orphan);

    let report = disk.power_cut(Cut::DropAll).unwrap();
    assert!(report.pages_lost >= 1, "{report:?}");

    assert_eq!(fs::read(dir.join("kept")).unwrap(), b"synced");
    assert!(!dir.join("orphan").exists());
    assert_eq!(fs::read(dir.join("a")).unwrap(), b"renamed");
    assert!(!dir.join("b").exists());
    let seg = File::open(dir.join("segment")).unwrap();
    assert_eq!(seg.metadata().unwrap().len(), 64 << 20);
    let mut b = [0u8; 5];
    seg.read_exact_at(&mut b, 1 << 20).unwrap();
    assert_eq!(&b, b"frame");
    seg.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, [0u8; 5]);
    drop(seg);

    // Reads through a shared mapping see what writes put there, as the tree's reads do.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("kept"))
        .unwrap();
    f.write_all_at(b"SYNCED", 0).unwrap();
    assert_eq!(mapped(&f, 6), b"SYNCED");
    drop(f);

    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "kept", "segment"]);
}

/// The first `len` bytes of `f` read through mmap(2).
fn mapped(f: &File, len: usize) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: a read-only shared mapping of an open file, copied out and unmapped before
    // returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let out = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        out
    }
}
