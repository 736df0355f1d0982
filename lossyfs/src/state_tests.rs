//! The model alone: what survives a cut and what does not.

use std::ffi::OsStr;

use super::*;

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A file `f` in the root, durably named, with `bytes` written and synced.
fn synced_file(s: &mut State, bytes: &[u8]) -> u64 {
    let f = s.create(ROOT_INODE, name("f"), Kind::File, 0o644).unwrap();
    s.write(f, 0, bytes).unwrap();
    s.sync(f).unwrap();
    s.sync(ROOT_INODE).unwrap();
    f
}

#[test]
fn synced_data_survives_and_unsynced_data_does_not() {
    let mut s = State::default();
    let f = synced_file(&mut s, b"hello");
    s.write(f, 5, b" world").unwrap();
    s.write(f, 0, b"J").unwrap();
    assert_eq!(s.read(f, 0, 100).unwrap(), b"Jello world");
    let r = s.power_cut(Cut::DropAll);
    assert_eq!(r.pages_lost, 1);
    assert_eq!(s.read(f, 0, 100).unwrap(), b"hello");
    assert_eq!(s.attr(f).unwrap().len_bytes, 5);
}

#[test]
fn a_name_needs_its_directory_synced() {
    let mut s = State::default();
    let f = s
        .create(ROOT_INODE, name("new"), Kind::File, 0o644)
        .unwrap();
    s.write(f, 0, b"data").unwrap();
    s.sync(f).unwrap();
    let r = s.power_cut(Cut::DropAll);
    assert_eq!(r.inodes_lost, 1);
    assert_eq!(s.lookup(ROOT_INODE, name("new")), Err(libc::ENOENT));

    let f = s
        .create(ROOT_INODE, name("new"), Kind::File, 0o644)
        .unwrap();
    s.write(f, 0, b"data").unwrap();
    s.sync(ROOT_INODE).unwrap();
    s.power_cut(Cut::DropAll);
    let f = s.lookup(ROOT_INODE, name("new")).unwrap();
    assert_eq!(
        s.read(f, 0, 10).unwrap(),
        b"",
        "named but never synced: empty"
    );
}

#[test]
fn a_rename_is_undone_without_a_directory_sync() {
    let mut s = State::default();
    let f = synced_file(&mut s, b"old");
    let tmp = s
        .create(ROOT_INODE, name("f.tmp"), Kind::File, 0o644)
        .unwrap();
    s.write(tmp, 0, b"new").unwrap();
    s.sync(tmp).unwrap();
    s.rename(ROOT_INODE, name("f.tmp"), ROOT_INODE, name("f"), false)
        .unwrap();
    s.power_cut(Cut::DropAll);
    assert_eq!(s.lookup(ROOT_INODE, name("f")), Ok(f));
    assert_eq!(s.read(f, 0, 10).unwrap(), b"old");
    assert_eq!(s.lookup(ROOT_INODE, name("f.tmp")), Err(libc::ENOENT));

    let tmp = s
        .create(ROOT_INODE, name("f.tmp"), Kind::File, 0o644)
        .unwrap();
    s.write(tmp, 0, b"new").unwrap();
    s.sync(tmp).unwrap();
    s.rename(ROOT_INODE, name("f.tmp"), ROOT_INODE, name("f"), false)
        .unwrap();
    s.sync(ROOT_INODE).unwrap();
    s.power_cut(Cut::DropAll);
    let f = s.lookup(ROOT_INODE, name("f")).unwrap();
    assert_eq!(s.read(f, 0, 10).unwrap(), b"new");
}

#[test]
fn an_unlink_is_undone_without_a_directory_sync() {
    let mut s = State::default();
    let f = synced_file(&mut s, b"kept");
    s.remove(ROOT_INODE, name("f"), Kind::File).unwrap();
    assert_eq!(s.lookup(ROOT_INODE, name("f")), Err(libc::ENOENT));
    s.power_cut(Cut::DropAll);
    assert_eq!(
        s.read(s.lookup(ROOT_INODE, name("f")).unwrap(), 0, 9),
        Ok(b"kept".to_vec())
    );
    assert_eq!(s.lookup(ROOT_INODE, name("f")), Ok(f));
}

#[test]
fn a_new_directory_and_everything_in_it_vanish_unless_its_parent_is_synced() {
    let mut s = State::default();
    let d = s.create(ROOT_INODE, name("d"), Kind::Dir, 0o755).unwrap();
    let f = s.create(d, name("f"), Kind::File, 0o644).unwrap();
    s.write(f, 0, b"x").unwrap();
    s.sync(f).unwrap();
    s.sync(d).unwrap();
    let r = s.power_cut(Cut::DropAll);
    assert_eq!(r.inodes_lost, 2);
    assert_eq!(s.lookup(ROOT_INODE, name("d")), Err(libc::ENOENT));
}

#[test]
fn truncation_is_durable_only_once_synced_and_regrowth_reads_zeros() {
    let mut s = State::default();
    let f = synced_file(&mut s, &[7u8; 3 * PAGE_BYTES]);
    s.set_len(f, 10).unwrap();
    s.power_cut(Cut::DropAll);
    assert_eq!(s.attr(f).unwrap().len_bytes, 3 * PAGE_BYTES as u64);

    s.set_len(f, 10).unwrap();
    s.write(f, 2 * PAGE_BYTES as u64, b"z").unwrap();
    s.sync(f).unwrap();
    s.power_cut(Cut::DropAll);
    let all = s.read(f, 0, 3 * PAGE_BYTES).unwrap();
    assert_eq!(all.len(), 2 * PAGE_BYTES + 1);
    assert!(all[..10].iter().all(|b| *b == 7));
    assert!(all[10..2 * PAGE_BYTES].iter().all(|b| *b == 0));
    assert_eq!(all[2 * PAGE_BYTES], b'z');
}

#[test]
fn a_torn_cut_keeps_some_unsynced_pages_and_loses_others() {
    let mut s = State::default();
    let f = synced_file(&mut s, b"");
    let pages = 64u8;
    for p in 0..pages {
        s.write(f, u64::from(p) * PAGE_BYTES as u64, &[p + 1; PAGE_BYTES])
            .unwrap();
    }
    let r = s.power_cut(Cut::Torn(3));
    assert_eq!(r.pages_kept + r.pages_lost, u64::from(pages));
    assert!(r.pages_kept > 0 && r.pages_lost > 0, "{r:?}");
    let all = s.read(f, 0, usize::from(pages) * PAGE_BYTES).unwrap();
    let kept = all
        .chunks(PAGE_BYTES)
        .enumerate()
        .filter(|(i, c)| c.iter().all(|b| usize::from(*b) == i + 1))
        .count();
    assert_eq!(kept as u64, r.pages_kept);
    assert!(
        all.chunks(PAGE_BYTES)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| usize::from(*b) == i + 1 || *b == 0)),
        "a page is whole or absent"
    );
}

#[test]
fn zero_pages_cost_nothing() {
    let mut s = State::default();
    let f = synced_file(&mut s, &vec![0u8; 64 * PAGE_BYTES]);
    assert_eq!(s.stored_bytes(), 0);
    assert_eq!(s.attr(f).unwrap().len_bytes, 64 * PAGE_BYTES as u64);
    s.write(f, 5, b"x").unwrap();
    assert_eq!(s.stored_bytes(), PAGE_BYTES as u64);
}

#[test]
fn an_open_unlinked_file_stays_readable_until_closed() {
    let mut s = State::default();
    let f = synced_file(&mut s, b"open");
    s.open(f).unwrap();
    s.remove(ROOT_INODE, name("f"), Kind::File).unwrap();
    s.sync(ROOT_INODE).unwrap();
    assert_eq!(s.read(f, 0, 9).unwrap(), b"open");
    s.release(f);
    assert_eq!(s.read(f, 0, 9), Err(libc::ENOENT));
}

#[test]
fn renames_check_what_they_replace() {
    let mut s = State::default();
    let d = s.create(ROOT_INODE, name("d"), Kind::Dir, 0o755).unwrap();
    s.create(d, name("x"), Kind::File, 0o644).unwrap();
    s.create(ROOT_INODE, name("f"), Kind::File, 0o644).unwrap();
    assert_eq!(
        s.rename(ROOT_INODE, name("f"), ROOT_INODE, name("d"), false),
        Err(libc::EISDIR)
    );
    assert_eq!(
        s.rename(ROOT_INODE, name("d"), d, name("inside"), false),
        Err(libc::EINVAL)
    );
    assert_eq!(
        s.rename(ROOT_INODE, name("f"), d, name("x"), true),
        Err(libc::EEXIST)
    );
    assert_eq!(
        s.remove(ROOT_INODE, name("d"), Kind::Dir),
        Err(libc::ENOTEMPTY)
    );
}
