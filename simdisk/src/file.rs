//! One simulated file as the disk holds it: the durable bytes, and the writes and length
//! changes made since the last sync, in order. A crash keeps the durable bytes and, in
//! [`CrashMode::TornTail`], a random prefix of what was pending with the next write torn
//! mid-sector (whole sectors of it, then garbage over part of the next one), as a disk losing
//! power mid-write can leave it.

use std::sync::Arc;

use crate::Rng;

/// The unit a disk writes atomically, at best.
const SECTOR_BYTES: usize = 512;

/// What survives a simulated crash.
#[derive(Debug, Clone, Copy)]
pub enum CrashMode {
    /// Only synced bytes.
    DropUnsynced,
    /// A random prefix of the unsynced changes, the next write torn mid-sector with garbage.
    TornTail {
        /// Seed of the random choices.
        seed: u64,
    },
}

/// One change waiting for a sync.
#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Arc<[u8]>),
    /// A new length; `grow_only` never shrinks the file (allocate), else it may (truncate).
    SetLen(u64, bool),
}

fn apply(buf: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write(off, data) => write_into(buf, *off, data),
        Pending::SetLen(len, grow_only) => {
            let len = usize::try_from(*len).expect("length fits memory");
            if !grow_only || buf.len() < len {
                buf.resize(len, 0);
            }
        }
    }
}

fn write_into(buf: &mut Vec<u8>, off: u64, data: &[u8]) {
    let off = usize::try_from(off).expect("offset fits memory");
    if buf.len() < off + data.len() {
        buf.resize(off + data.len(), 0);
    }
    buf[off..off + data.len()].copy_from_slice(data);
}

/// Applies whole sectors of a write, then garbage over part of the next sector.
fn tear(buf: &mut Vec<u8>, off: u64, bytes: &[u8], rng: &mut Rng) {
    let sectors = bytes.len().div_ceil(SECTOR_BYTES);
    let whole = rng.below(sectors as u64) as usize;
    let end = (whole * SECTOR_BYTES).min(bytes.len());
    write_into(buf, off, &bytes[..end]);
    let torn_len = (bytes.len() - end).min(SECTOR_BYTES);
    let garbage_len = 1 + rng.below(torn_len as u64) as usize;
    let garbage = rng.bytes(garbage_len);
    write_into(buf, off + end as u64, &garbage);
}

/// One file: its bytes as the running system sees them (live), the bytes the disk holds
/// durably, and the changes waiting for the next sync.
#[derive(Debug, Clone, Default)]
pub struct SimFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

impl SimFile {
    /// A file that holds `durable` and has nothing pending (as found after a crash).
    pub fn from_durable(durable: Vec<u8>) -> SimFile {
        SimFile {
            live: durable.clone(),
            durable,
            pending: Vec::new(),
        }
    }

    /// A write: live at once, durable at the next sync.
    pub fn write(&mut self, offset: u64, data: Arc<[u8]>) {
        let p = Pending::Write(offset, data);
        apply(&mut self.live, &p);
        self.pending.push(p);
    }

    /// A length change: `grow_only` (allocate) never shrinks the file.
    pub fn set_len(&mut self, len: u64, grow_only: bool) {
        let p = Pending::SetLen(len, grow_only);
        apply(&mut self.live, &p);
        self.pending.push(p);
    }

    /// A sync: everything pending becomes durable.
    pub fn sync(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            apply(&mut self.durable, &p);
        }
        debug_assert_eq!(self.durable, self.live, "a synced file is what it shows");
    }

    /// The bytes as the running system sees them.
    pub fn live(&self) -> &[u8] {
        &self.live
    }

    /// The durable bytes.
    pub fn durable(&self) -> &[u8] {
        &self.durable
    }

    /// Flips bit `bit` of the live and the durable bytes, where they reach it (a medium
    /// error); whether any byte changed.
    pub fn flip_bit(&mut self, bit: u64) -> bool {
        let byte = usize::try_from(bit / 8).expect("fits memory");
        let mask = 1u8 << (bit % 8);
        let mut flipped = false;
        for image in [&mut self.live, &mut self.durable] {
            if let Some(b) = image.get_mut(byte) {
                *b ^= mask;
                flipped = true;
            }
        }
        flipped
    }

    /// The bytes found after power is lost now, the random choices drawn from `rng` (see
    /// [`CrashMode`]); `None` keeps only the durable bytes.
    pub fn after_crash(&self, rng: Option<&mut Rng>) -> Vec<u8> {
        let mut data = self.durable.clone();
        let Some(rng) = rng else { return data };
        if self.pending.is_empty() {
            return data;
        }
        let keep = rng.below(self.pending.len() as u64 + 1) as usize;
        for p in &self.pending[..keep] {
            apply(&mut data, p);
        }
        if let Some(Pending::Write(off, bytes)) = self.pending.get(keep) {
            tear(&mut data, *off, bytes, rng);
        }
        data
    }

    /// [`SimFile::after_crash`] for a crash `mode` of this file alone.
    pub fn crash(&self, mode: CrashMode) -> SimFile {
        let data = match mode {
            CrashMode::DropUnsynced => self.after_crash(None),
            CrashMode::TornTail { seed } => self.after_crash(Some(&mut Rng::new(seed))),
        };
        SimFile::from_durable(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: u8, n: usize) -> Arc<[u8]> {
        vec![b; n].into()
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_drops_the_rest() {
        let mut f = SimFile::default();
        f.write(0, bytes(1, 100));
        f.sync();
        f.write(100, bytes(2, 100));
        f.set_len(4096, true);
        assert_eq!(f.crash(CrashMode::DropUnsynced).durable(), &[1u8; 100][..]);
        f.sync();
        assert_eq!(f.durable().len(), 4096);
        assert_eq!(f.durable()[150], 2);
        f.set_len(10, false);
        f.sync();
        assert_eq!(f.durable(), &[1u8; 10][..]);
    }

    #[test]
    fn a_torn_tail_keeps_a_prefix_and_tears_at_most_one_write() {
        let mut synced = SimFile::default();
        synced.write(0, bytes(9, 2048));
        synced.sync();
        let mut seen_torn = false;
        for seed in 0..200 {
            let mut f = synced.clone();
            f.write(2048, bytes(1, 2048));
            f.write(4096, bytes(2, 2048));
            let after = f.crash(CrashMode::TornTail { seed });
            let d = after.durable();
            assert_eq!(&d[..2048], &[9u8; 2048][..], "synced bytes survive");
            // Whatever follows is the first write, whole or torn, then perhaps the second.
            let first_whole = d.len() >= 4096 && d[2048..4096].iter().all(|&b| b == 1);
            if !first_whole {
                seen_torn = true;
                assert!(d.len() <= 2048 + 2048, "nothing after a torn write");
            }
        }
        assert!(seen_torn, "200 seeds never tore the first write");
    }
}
