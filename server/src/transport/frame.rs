//! Peer frames on a TCP stream: `u32 length, u32 crc32c(payload), payload`, little-endian,
//! with a bound on the length. The decoder treats the stream as hostile: a length above the
//! bound or a checksum mismatch is an error (the connection is closed with that reason), and
//! nothing is allocated for a frame before its length has been checked.

/// Bytes of a frame header.
pub const HEADER_BYTES: usize = 8;

/// Why a stream cannot be decoded further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared length exceeds the limit.
    #[error("peer frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The payload does not match its checksum.
    #[error("peer frame checksum mismatch")]
    Checksum,
}

/// Appends one frame holding `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frames are below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reassembles frames from stream chunks.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
}

impl Decoder {
    /// A decoder accepting payloads up to `max` bytes.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes(avail[0..4].try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if avail.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(avail[4..8].try_into().expect("4 bytes"));
        let payload = &avail[HEADER_BYTES..HEADER_BYTES + len];
        if crc32c::crc32c(payload) != crc {
            return Err(FrameError::Checksum);
        }
        let out = payload.to_vec();
        self.start += HEADER_BYTES + len;
        if self.start > 1 << 20 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(out))
    }

    /// Changes the largest payload accepted from here on (a connection accepts only a small
    /// handshake until it has identified itself).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes the bytes buffered but not yet returned (a stream that leaves framing after its
    /// handshake goes on with these).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_split_anywhere_reassemble() {
        let payloads: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; i * 37]).collect();
        let mut wire = Vec::new();
        for p in &payloads {
            encode(&mut wire, p);
        }
        for chunk in [1usize, 3, 7, 64, 4096] {
            let mut d = Decoder::new(1 << 20);
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, payloads);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversize_and_corrupt_frames_are_errors() {
        let mut d = Decoder::new(16);
        d.push(&100u32.to_le_bytes());
        d.push(&[0; 4]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 100, max: 16 })
        );
        let mut wire = Vec::new();
        encode(&mut wire, b"hello");
        wire[9] ^= 1;
        let mut d = Decoder::new(16);
        d.push(&wire);
        assert_eq!(d.next_frame(), Err(FrameError::Checksum));
    }

    proptest! {
        #[test]
        fn hostile_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut d = Decoder::new(1024);
            d.push(&bytes);
            for _ in 0..64 {
                match d.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
