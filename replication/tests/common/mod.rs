//! Helpers shared by the replication crate's integration tests.

use quorumkv_wal::WalOptions;

/// Small segments and batches, so a few hundred entries span several segments.
pub fn small() -> WalOptions {
    WalOptions {
        segment_bytes: 16 << 10,
        record_bytes_max: 1 << 10,
        batch_bytes_max: 4 << 10,
        ..WalOptions::default()
    }
}
