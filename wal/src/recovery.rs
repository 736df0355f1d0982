//! Recovery on open: scans segments in order, verifies every header and frame, tells a torn tail
//! (zeroed and reported) from corruption (refused with an error), and rebuilds the read index.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::{self, Decoded};
use crate::io::{FileSystem, LogFile};
use crate::options::WalOptions;
use crate::segment::{self, SegmentHeader};

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Whether the log was created empty by this open.
    pub created: bool,
    /// Segment files scanned.
    pub segments: usize,
    /// Records recovered.
    pub records: u64,
    /// First recovered index (equal to `last_index + 1` when empty).
    pub first_index: u64,
    /// Last recovered index.
    pub last_index: u64,
    /// The torn tail that was discarded, if any.
    pub torn_tail: Option<TornTail>,
    /// Leftover preallocation files removed.
    pub removed_tmp_files: usize,
    /// Segments before a restart point removed (an interrupted purge).
    pub removed_obsolete_segments: usize,
    /// Time recovery took.
    pub elapsed: Duration,
}

/// A torn tail found at the end of the last segment.
#[derive(Debug, Clone)]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Offset where valid data ended.
    pub offset: u64,
    /// Bytes zeroed after it.
    pub bytes_zeroed: u64,
    /// Why the frame at `offset` was rejected.
    pub reason: &'static str,
}

/// One recovered segment.
pub(crate) struct Recovered {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn LogFile>,
    pub(crate) header: SegmentHeader,
    /// Offset of each record's frame.
    pub(crate) offsets: Vec<u32>,
    /// Offset just past the last valid frame.
    pub(crate) end: u64,
}

fn corrupt(path: &Path, detail: String) -> Error {
    Error::Corruption {
        path: path.to_path_buf(),
        detail,
    }
}

struct Scan {
    offsets: Vec<u32>,
    end: usize,
    stop: Option<&'static str>,
}

fn scan(buf: &[u8], h: &SegmentHeader, payload_max: usize) -> Scan {
    let mut off = segment::HEADER_BYTES;
    let mut next = h.first_index;
    let mut offsets = Vec::new();
    loop {
        match frame::decode(&buf[off..], h.salt, payload_max) {
            Decoded::Record {
                index, frame_bytes, ..
            } => {
                if index != next {
                    return Scan {
                        offsets,
                        end: off,
                        stop: Some("unexpected record index"),
                    };
                }
                offsets.push(u32::try_from(off).expect("segments are below 4 GiB"));
                off += frame_bytes;
                next += 1;
            }
            Decoded::End => {
                return Scan {
                    offsets,
                    end: off,
                    stop: None,
                };
            }
            Decoded::Invalid(why) => {
                return Scan {
                    offsets,
                    end: off,
                    stop: Some(why),
                };
            }
        }
    }
}

/// The first offset after `from` holding a frame that validates against this segment.
fn next_valid_frame(buf: &[u8], from: usize, salt: u32, payload_max: usize) -> Option<usize> {
    let mut off = from + frame::ALIGN_BYTES;
    while off + frame::HEADER_BYTES <= buf.len() {
        if let Decoded::Record { .. } = frame::decode(&buf[off..], salt, payload_max) {
            return Some(off);
        }
        off += frame::ALIGN_BYTES;
    }
    None
}

/// Whether the invalid frame at `buf[at..]` is a written frame damaged afterwards rather than
/// a torn write: its header names the expected index and a believable length, the frame after
/// it is valid and next in sequence, and it holds no run of zeros a torn write leaves (the
/// unwritten part of a preallocated segment reads as zeros). The frames after such a frame
/// were written after it and may have been acknowledged, so the log must not be cut there.
fn damaged_in_place(buf: &[u8], at: usize, expected: u64, salt: u32, payload_max: usize) -> bool {
    const ZERO_RUN_BYTES: usize = 32;
    let Some(header) = buf.get(at..at + frame::HEADER_BYTES) else {
        return false;
    };
    let len_type = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let len = (len_type & 0x00ff_ffff) as usize;
    if (len_type >> 24) as u8 != frame::TYPE_RECORD || index != expected || len > payload_max {
        return false;
    }
    let end = at + frame::frame_bytes(len);
    let Some(body) = buf.get(at..end) else {
        return false;
    };
    let mut run = 0;
    for &b in body {
        run = if b == 0 { run + 1 } else { 0 };
        if run >= ZERO_RUN_BYTES {
            return false;
        }
    }
    matches!(
        frame::decode(&buf[end..], salt, payload_max),
        Decoded::Record { index, .. } if index == expected + 1
    )
}

/// Scans `dir` and returns its segments, oldest first, with a report.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    opts: &WalOptions,
) -> Result<(Vec<Recovered>, RecoveryReport)> {
    let started = std::time::Instant::now();
    let mut report = RecoveryReport::default();
    fs.create_dir_all(dir)
        .map_err(Error::io("create directory"))?;
    let mut names = Vec::new();
    for name in fs.list(dir).map_err(Error::io("list directory"))? {
        if name.ends_with(segment::TMP_SUFFIX) {
            fs.remove(&dir.join(&name))
                .map_err(Error::io("remove preallocation file"))?;
            report.removed_tmp_files += 1;
        } else if let Some((seq, first)) = segment::parse_file_name(&name) {
            names.push((seq, first, name));
        }
    }
    names.sort();
    // A RESTART segment makes every earlier one obsolete (a purge past the end that crashed
    // before deleting them): delete those first.
    let mut restart_at = 0;
    for (i, (_, _, name)) in names.iter().enumerate() {
        let path = dir.join(name);
        let file = fs.open(&path, false).map_err(Error::io("open segment"))?;
        let mut hb = [0u8; segment::HEADER_BYTES];
        let n = file
            .read_at(&mut hb, 0)
            .map_err(Error::io("read segment"))?;
        if let Ok(h) = SegmentHeader::decode(&hb[..n])
            && h.flags & segment::FLAG_RESTART != 0
        {
            restart_at = i;
        }
    }
    if restart_at > 0 {
        for (_, _, name) in names.drain(..restart_at) {
            fs.remove(&dir.join(&name))
                .map_err(Error::io("remove obsolete segment"))?;
            report.removed_obsolete_segments += 1;
        }
        fs.sync_dir(dir).map_err(Error::io("fsync directory"))?;
    }
    let mut out: Vec<Recovered> = Vec::with_capacity(names.len());
    let count = names.len();
    for (i, (seq, first, name)) in names.into_iter().enumerate() {
        let path = dir.join(&name);
        let last = i + 1 == count;
        let file = fs.open(&path, false).map_err(Error::io("open segment"))?;
        let len = file.len_bytes().map_err(Error::io("stat segment"))?;
        if len > u64::from(u32::MAX) {
            return Err(corrupt(
                &path,
                format!("segment of {len} bytes exceeds 4 GiB"),
            ));
        }
        let mut buf = vec![0u8; usize::try_from(len).expect("below 4 GiB")];
        let n = file
            .read_at(&mut buf, 0)
            .map_err(Error::io("read segment"))?;
        buf.truncate(n);
        let header = SegmentHeader::decode(&buf)
            .map_err(|e| corrupt(&path, format!("segment header: {e}")))?;
        if header.seq != seq || header.first_index != first {
            return Err(corrupt(
                &path,
                "file name disagrees with the segment header".into(),
            ));
        }
        if let Some(prev) = out.last() {
            let expected = prev.header.first_index + prev.offsets.len() as u64;
            if header.seq != prev.header.seq + 1 {
                return Err(corrupt(
                    &path,
                    format!("segment {} is missing", prev.header.seq + 1),
                ));
            }
            if header.first_index != expected {
                return Err(corrupt(
                    &path,
                    format!(
                        "segment starts at index {} but the previous one ends at {}",
                        header.first_index,
                        expected - 1
                    ),
                ));
            }
        }
        let s = scan(&buf, &header, opts.record_bytes_max);
        let dirty_end = buf.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        let later_valid = next_valid_frame(
            &buf[..dirty_end.max(s.end)],
            s.end,
            header.salt,
            opts.record_bytes_max,
        );
        let mut end = s.end as u64;
        if !last {
            if let Some(why) = s.stop {
                return Err(corrupt(
                    &path,
                    format!("invalid frame at offset {}: {why}", s.end),
                ));
            }
            if let Some(at) = later_valid {
                return Err(corrupt(
                    &path,
                    format!(
                        "valid frame at offset {at} after the end of data at {}",
                        s.end
                    ),
                ));
            }
        } else {
            if let Some(at) = later_valid
                && (at - s.end) as u64 > opts.torn_window_bytes()
            {
                return Err(corrupt(
                    &path,
                    format!(
                        "invalid data at offset {} is followed by a valid frame at {at}, beyond \
                         what a crash can tear",
                        s.end
                    ),
                ));
            }
            let expected = header.first_index + s.offsets.len() as u64;
            if let Some(why) = s.stop
                && damaged_in_place(&buf, s.end, expected, header.salt, opts.record_bytes_max)
            {
                return Err(corrupt(
                    &path,
                    format!(
                        "record {expected} at offset {} is damaged ({why}) and records after it \
                         are intact: not a torn write",
                        s.end
                    ),
                ));
            }
            if dirty_end > s.end {
                let zeros = vec![0u8; dirty_end - s.end];
                file.write_at(&zeros, end)
                    .and_then(|()| file.sync_data())
                    .map_err(Error::io("zero torn tail"))?;
                tracing::warn!(
                    path = %path.display(),
                    offset = s.end,
                    bytes = zeros.len(),
                    reason = s.stop.unwrap_or("non-zero bytes after the end of data"),
                    "wal: discarded torn tail"
                );
                report.torn_tail = Some(TornTail {
                    path: path.clone(),
                    offset: end,
                    bytes_zeroed: zeros.len() as u64,
                    reason: s.stop.unwrap_or("non-zero bytes after the end of data"),
                });
            }
        }
        end = end.max(segment::HEADER_BYTES as u64);
        report.records += s.offsets.len() as u64;
        out.push(Recovered {
            path,
            file,
            header,
            offsets: s.offsets,
            end,
        });
    }
    report.segments = out.len();
    if let (Some(f), Some(l)) = (out.first(), out.last()) {
        report.first_index = f.header.first_index;
        report.last_index = l.header.first_index + l.offsets.len() as u64 - 1;
    }
    report.elapsed = started.elapsed();
    Ok((out, report))
}
