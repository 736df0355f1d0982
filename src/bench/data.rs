//! The data set the B+tree benchmarks share (the CLI bench and the criterion comparison with
//! redb), so both measure exactly the same keys in the same order.

/// A xorshift64 generator: cheap, seeded, and the same sequence everywhere.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Key `i` of the data set: 16 bytes, spread over the key space, unique per `i`.
pub fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}
