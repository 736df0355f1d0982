//! Tuning knobs and limits of the log, with their defaults.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::{frame, segment};

/// How the log is shaped and bounded.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Size each segment file is preallocated to (default 64 MiB).
    pub segment_bytes: u64,
    /// Largest record payload accepted (default 8 MiB).
    pub record_bytes_max: usize,
    /// Most records written and synced as one batch (default 4096).
    pub batch_records_max: usize,
    /// Most bytes written and synced as one batch (default 4 MiB).
    pub batch_bytes_max: usize,
    /// Most bytes waiting to be written; appends beyond it block (default 64 MiB).
    pub queued_bytes_max: usize,
    /// Extra time the writer waits for a batch to fill before writing it (default 0).
    pub commit_delay: Duration,
    /// Most time the writer waits for a batch to grow to the size of the group the last sync
    /// completed (appenders woken together come back together); 0 turns it off (default
    /// 50 µs). Under light load that group is small, so this costs no latency.
    pub batch_linger: Duration,
    /// Batches that may be written but not yet synced: 1 turns pipelining off (each batch is
    /// written and synced before the next is written), 2 lets batch N+1 be written while batch N
    /// syncs (default 2).
    pub pipeline_depth: usize,
    /// While a sync is in flight, a batch is written ahead only once it holds this many bytes
    /// (default 64 KiB): large records overlap their write with the previous sync, small ones
    /// gather into one batch for the next (default 64 KiB).
    pub pipeline_bytes_min: usize,
    /// Preallocate and zero-fill the next segment in the background so a steady-state fdatasync
    /// flushes data only (default true).
    pub preallocate: bool,
    /// Index of the first record of a new, empty log (default 1).
    pub first_index: u64,
    /// Skip every fsync (default false). Appends are acknowledged once written, so a power
    /// cut loses them: for benchmarks of everything but the disk, never for data.
    pub unsafe_no_fsync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            record_bytes_max: 8 << 20,
            batch_records_max: 4096,
            batch_bytes_max: 4 << 20,
            queued_bytes_max: 64 << 20,
            commit_delay: Duration::ZERO,
            batch_linger: Duration::from_micros(50),
            pipeline_depth: 2,
            pipeline_bytes_min: 64 << 10,
            preallocate: true,
            first_index: 1,
            unsafe_no_fsync: false,
        }
    }
}

impl WalOptions {
    /// Rejects combinations that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidOptions(m));
        if self.segment_bytes > u64::from(u32::MAX) {
            return bad(format!("segment_bytes {} above 4 GiB", self.segment_bytes));
        }
        let frame_max = frame::frame_bytes(self.record_bytes_max) as u64;
        if frame::frame_bytes(self.record_bytes_max) > frame::PAYLOAD_BYTES_MAX + 32 {
            return bad(format!(
                "record_bytes_max {} above the frame limit {}",
                self.record_bytes_max,
                frame::PAYLOAD_BYTES_MAX
            ));
        }
        if self.record_bytes_max > frame::PAYLOAD_BYTES_MAX {
            return bad(format!(
                "record_bytes_max {} above the frame limit {}",
                self.record_bytes_max,
                frame::PAYLOAD_BYTES_MAX
            ));
        }
        if segment::HEADER_BYTES as u64 + frame_max > self.segment_bytes {
            return bad(format!(
                "a record of record_bytes_max {} does not fit a segment of {} bytes",
                self.record_bytes_max, self.segment_bytes
            ));
        }
        if self.batch_records_max == 0 || self.batch_bytes_max == 0 {
            return bad("batch caps must be positive".into());
        }
        if self.pipeline_depth == 0 {
            return bad("pipeline_depth must be at least 1".into());
        }
        if self.queued_bytes_max < self.batch_bytes_max {
            return bad("queued_bytes_max must be at least batch_bytes_max".into());
        }
        if self.first_index == 0 {
            return bad("first_index must be at least 1".into());
        }
        Ok(())
    }

    /// Bytes at the end of the last segment that a crash can leave torn: everything written
    /// after the last completed fdatasync. Invalid data further back is corruption.
    pub(crate) fn torn_window_bytes(&self) -> u64 {
        (self.batch_bytes_max as u64 + frame::frame_bytes(self.record_bytes_max) as u64)
            * self.pipeline_depth as u64
            + 4096
    }
}
