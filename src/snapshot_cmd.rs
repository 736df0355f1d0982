//! `quorumkv snapshot restore`: a new member data directory from an etcd snapshot file.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Snapshot file commands.
#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Builds a data directory from a snapshot saved with `etcdctl snapshot save` (from etcd
    /// or from quorumkv); start `quorumkv serve --data-dir` on it. Restore the same file for
    /// every member of a new cluster.
    Restore(RestoreArgs),
}

/// `quorumkv snapshot restore` flags (etcd's names).
#[derive(Args)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// The data directory to create (must not exist, or be empty).
    #[arg(long, default_value = "quorumkv-data")]
    pub data_dir: PathBuf,
    /// Restore a file without its SHA-256 trailer (a copied `member/snap/db`), or whose
    /// trailer does not match.
    #[arg(long)]
    pub skip_hash_check: bool,
}

/// Runs a snapshot command.
pub fn main(cmd: &SnapshotCmd) -> Result<(), String> {
    match cmd {
        SnapshotCmd::Restore(a) => {
            let r =
                quorumkv_server::etcd::restore::restore(&a.file, &a.data_dir, a.skip_hash_check)
                    .map_err(|e| format!("restoring {}: {e}", a.file.display()))?;
            println!(
                "restored {} into {}: revision {}, compacted {}, {} keys, {} versions, {} leases, {} users, {} roles",
                a.file.display(),
                a.data_dir.display(),
                r.revision,
                r.compact_revision,
                r.keys,
                r.versions,
                r.leases,
                r.users,
                r.roles
            );
            Ok(())
        }
    }
}
