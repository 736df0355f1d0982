//! Record frames: the byte layout of one record inside a segment, and its hostile-input decoder.
//!
//! ```text
//! 0   u32 crc32c   over bytes 4..16 and the payload, seeded with the segment salt
//! 4   u32 len_type low 24 bits: payload length; high 8 bits: record type (1 = record)
//! 8   u64 index    the record's log index
//! 16  payload, then zero padding to the next multiple of 8
//! ```
//! All integers little-endian. A header of 16 zero bytes marks the clean end of a segment.

/// Bytes of a frame header.
pub const HEADER_BYTES: usize = 16;
/// Frames start and end on multiples of this.
pub const ALIGN_BYTES: usize = 8;
/// The largest payload a frame can describe (24-bit length).
pub const PAYLOAD_BYTES_MAX: usize = (1 << 24) - 1;
/// Record type of a user record.
pub const TYPE_RECORD: u8 = 1;

/// Total bytes a frame with `payload_len` bytes of payload occupies.
pub const fn frame_bytes(payload_len: usize) -> usize {
    (HEADER_BYTES + payload_len).div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// Appends a frame for `payload` to `buf` with its CRC left zero; [`seal`] fills it in once the
/// segment (and so the salt) is known.
pub fn encode_unsealed(buf: &mut Vec<u8>, index: u64, payload: &[u8]) {
    assert!(
        payload.len() <= PAYLOAD_BYTES_MAX,
        "caller checks record size"
    );
    debug_assert_eq!(buf.len() % ALIGN_BYTES, 0);
    let len_type =
        u32::try_from(payload.len()).expect("24-bit length") | (u32::from(TYPE_RECORD) << 24);
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.extend_from_slice(&len_type.to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
    let padded = buf.len().div_ceil(ALIGN_BYTES) * ALIGN_BYTES;
    buf.resize(padded, 0);
}

fn crc(salt: u32, frame_after_crc: &[u8]) -> u32 {
    let seed = crc32c::crc32c(&salt.to_le_bytes());
    crc32c::crc32c_append(seed, frame_after_crc)
}

/// Fills in the CRC of the frame at the start of `frame` (which holds exactly that frame).
pub fn seal(frame: &mut [u8], salt: u32) {
    let payload_len = (u32_at(frame, 4) & 0x00ff_ffff) as usize;
    let end = HEADER_BYTES + payload_len;
    let c = crc(salt, &frame[4..end]);
    frame[0..4].copy_from_slice(&c.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What a decoder found at one position.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid frame.
    Record {
        /// Its index.
        index: u64,
        /// Its payload.
        payload: &'a [u8],
        /// Bytes the frame occupies, padding included.
        frame_bytes: usize,
    },
    /// Sixteen zero bytes, or not enough bytes left for a header: the clean end of data.
    End,
    /// Anything else: a torn or corrupt frame.
    Invalid(&'static str),
}

/// Decodes the frame at the start of `buf`. Never panics and never allocates, whatever `buf`
/// holds; `payload_max` bounds the length it will believe.
pub fn decode(buf: &[u8], salt: u32, payload_max: usize) -> Decoded<'_> {
    if buf.len() < HEADER_BYTES {
        return if buf.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid("truncated frame header")
        };
    }
    let header = &buf[..HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let len_type = u32_at(header, 4);
    if (len_type >> 24) as u8 != TYPE_RECORD {
        return Decoded::Invalid("unknown record type");
    }
    let len = (len_type & 0x00ff_ffff) as usize;
    if len > payload_max {
        return Decoded::Invalid("length above the record limit");
    }
    let total = frame_bytes(len);
    if total > buf.len() {
        return Decoded::Invalid("frame runs past the end of the segment");
    }
    if crc(salt, &buf[4..HEADER_BYTES + len]) != u32_at(header, 0) {
        return Decoded::Invalid("crc mismatch");
    }
    if buf[HEADER_BYTES + len..total].iter().any(|&b| b != 0) {
        return Decoded::Invalid("non-zero padding");
    }
    Decoded::Record {
        index: u64_at(header, 8),
        payload: &buf[HEADER_BYTES..HEADER_BYTES + len],
        frame_bytes: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(index: u64, payload: &[u8], salt: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_unsealed(&mut buf, index, payload);
        seal(&mut buf, salt);
        buf
    }

    #[test]
    fn round_trip_and_alignment() {
        for len in [0usize, 1, 7, 8, 9, 255, 256, 4093] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let buf = sealed(42, &payload, 7);
            assert_eq!(buf.len() % ALIGN_BYTES, 0);
            assert_eq!(buf.len(), frame_bytes(len));
            assert_eq!(
                decode(&buf, 7, 1 << 20),
                Decoded::Record {
                    index: 42,
                    payload: &payload,
                    frame_bytes: buf.len()
                }
            );
        }
    }

    #[test]
    fn wrong_salt_is_invalid() {
        let buf = sealed(1, b"hello", 1);
        assert_eq!(decode(&buf, 2, 1 << 20), Decoded::Invalid("crc mismatch"));
    }

    #[test]
    fn zeros_are_the_end() {
        assert_eq!(decode(&[0u8; 64], 1, 1 << 20), Decoded::End);
        assert_eq!(decode(&[0u8; 3], 1, 1 << 20), Decoded::End);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let buf = sealed(9, b"some payload bytes", 3);
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            match decode(&b, 3, 1 << 20) {
                Decoded::Record { index, payload, .. } => {
                    panic!("flip of bit {bit} decoded as record {index} {payload:?}")
                }
                Decoded::End | Decoded::Invalid(_) => {}
            }
        }
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), salt in any::<u32>()) {
            let _ = decode(&bytes, salt, 1 << 20);
        }

        #[test]
        fn mutated_frames_never_decode_wrong(payload in proptest::collection::vec(any::<u8>(), 0..300), pos in any::<usize>(), val in any::<u8>()) {
            let mut buf = sealed(5, &payload, 11);
            let at = pos % buf.len();
            let changed = buf[at] != val;
            buf[at] = val;
            if let Decoded::Record { index, payload: p, .. } = decode(&buf, 11, 1 << 20) {
                prop_assert!(!changed || at >= HEADER_BYTES + payload.len(), "corrupt frame accepted");
                prop_assert_eq!(index, 5);
                prop_assert_eq!(p, &payload[..]);
            }
        }
    }
}
