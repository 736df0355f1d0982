//! Segment files: naming and the 64-byte header at the start of each.
//!
//! ```text
//! 0   [u8; 8] magic "QKVWALSG"
//! 8   u32     format version (1)
//! 12  u32     salt: seeds every frame CRC of this segment, so bytes from any other segment
//!             (or an earlier use of the same blocks) never validate here
//! 16  u64     sequence number of the segment (1, 2, ...; consecutive)
//! 24  u64     index of the first record in the segment
//! 32  u32     flags: bit 0 = RESTART (the log restarts here; every earlier segment is obsolete)
//! 36  [u8;24] reserved, zero
//! 60  u32     crc32c of bytes 0..60
//! ```
//! File name: `{seq:016x}-{first_index:016x}.wal`; the name must agree with the header.

/// Magic bytes at the start of every segment.
pub const MAGIC: [u8; 8] = *b"QKVWALSG";
/// The on-disk format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the segment header; the first frame starts here.
pub const HEADER_BYTES: usize = 64;

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Seeds the frame CRCs of this segment.
    pub salt: u32,
    /// Segment sequence number.
    pub seq: u64,
    /// Index of the first record.
    pub first_index: u64,
    /// Header flags ([`FLAG_RESTART`]).
    pub flags: u32,
}

/// The log restarts at this segment (after purging past its end); earlier segments are
/// obsolete and recovery deletes them.
pub const FLAG_RESTART: u32 = 1;

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.salt.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header from untrusted bytes.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, &'static str> {
        if b.len() < HEADER_BYTES {
            return Err("file shorter than a segment header");
        }
        let b = &b[..HEADER_BYTES];
        if b[0..8] != MAGIC {
            return Err("bad magic");
        }
        let crc = u32::from_le_bytes(b[60..64].try_into().expect("4 bytes"));
        if crc32c::crc32c(&b[0..60]) != crc {
            return Err("header crc mismatch");
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err("unsupported format version");
        }
        let flags = u32::from_le_bytes(b[32..36].try_into().expect("4 bytes"));
        if flags & !FLAG_RESTART != 0 {
            return Err("unknown header flags");
        }
        if b[36..60].iter().any(|&x| x != 0) {
            return Err("reserved header bytes are not zero");
        }
        Ok(SegmentHeader {
            salt: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
            seq: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            first_index: u64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
            flags,
        })
    }
}

/// The file name of a segment.
pub fn file_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// Parses a segment file name into `(seq, first_index)`.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, first) = stem.split_once('-')?;
    if seq.len() != 16 || first.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(first, 16).ok()?,
    ))
}

/// Suffix of files being preallocated; they are removed on open.
pub const TMP_SUFFIX: &str = ".wal.tmp";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_flips() {
        let h = SegmentHeader {
            salt: 0xdead_beef,
            seq: 3,
            first_index: 1000,
            flags: FLAG_RESTART,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..HEADER_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn names() {
        let n = file_name(1, 0x10);
        assert_eq!(n, "0000000000000001-0000000000000010.wal");
        assert_eq!(parse_file_name(&n), Some((1, 0x10)));
        assert_eq!(parse_file_name("x.wal"), None);
        assert_eq!(
            parse_file_name("000000000000000g-0000000000000010.wal"),
            None
        );
    }
}
