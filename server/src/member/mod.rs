//! The API-neutral member core: what every client API of a member shares, whatever it
//! speaks. It owns proposing a request and waiting for its result ([`proposer`], one waiter
//! per request in [`pending`]), the read barrier, the refusals every API shares ([`error`]),
//! the log envelope ([`envelope`]), the apply thread and its durable checkpoints
//! ([`machine`]), background flushes of the tree ([`flusher`]), snapshots of the key space
//! ([`snapshot_file`]), the watch hub ([`watch_hub`]), the lessor and its clock ([`lessor`],
//! [`lease_clock`]), who the members are ([`roster`], [`identity`]), and the state these
//! share with the APIs ([`core`]).
//!
//! It must never import a client API's code, its RPC framework or its wire types
//! (`server/tests/layering.rs` checks it). A client API plugs in through
//! [`machine::Applier`], which applies its committed requests, and proposes through
//! [`proposer::Proposer`].

mod apply_thread;
pub mod core;
pub mod data_dir;
pub mod disk_space;
pub mod envelope;
pub mod error;
pub mod flusher;
pub mod identity;
pub mod keyspace;
pub mod lease_clock;
pub mod lessor;
pub mod machine;
pub mod pending;
pub mod proposer;
pub mod roster;
pub mod snapshot_file;
pub mod watch_hub;

use quorumkv_btree::{BTreeOptions, Db};

/// Opens (or creates) a member's key-space tree at `path`.
pub fn open_db(path: &std::path::Path) -> quorumkv_btree::Result<Db> {
    open_db_with(path, false)
}

/// [`open_db`], with every commit's fsync skipped when `unsafe_no_fsync` (`--unsafe-no-fsync`).
pub fn open_db_with(path: &std::path::Path, unsafe_no_fsync: bool) -> quorumkv_btree::Result<Db> {
    // 8 KiB pages keep entries up to 4 KiB inline (etcd's typical values are well below),
    // so a put does not cost an overflow page per stored version, while a copied-on-write
    // leaf stays small. 4 KiB pages measured no faster for 256 B keys and 1 KiB values.
    Db::open(
        path,
        BTreeOptions {
            page_size: 8 << 10,
            unsafe_no_fsync,
            ..BTreeOptions::default()
        },
    )
}
