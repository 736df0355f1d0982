//! The API-neutral member core: what every client API of a member shares, whatever it
//! speaks. It owns the apply thread and its durable checkpoints ([`machine`]), background
//! flushes of the tree ([`flusher`]), snapshots of the key space ([`snapshot_file`]), the
//! watch hub ([`watch_hub`]), the lessor ([`lessor`]) and who the members are
//! ([`identity`]).
//!
//! It must never import a client API's code, its RPC framework or its wire types
//! (`server/tests/layering.rs` checks it). A client API plugs in through
//! [`machine::Applier`], which applies its committed requests.

pub mod flusher;
pub mod identity;
pub mod lessor;
pub mod machine;
pub mod snapshot_file;
pub mod watch_hub;

use quorumkv_btree::{BTreeOptions, Db};

/// Opens (or creates) a member's key-space tree at `path`.
pub fn open_db(path: &std::path::Path) -> quorumkv_btree::Result<Db> {
    // 8 KiB pages keep entries up to 4 KiB inline (etcd's typical values are well below),
    // so a put does not cost an overflow page per stored version, while a copied-on-write
    // leaf stays small. 4 KiB pages measured no faster for 256 B keys and 1 KiB values.
    Db::open(
        path,
        BTreeOptions {
            page_size: 8 << 10,
            ..BTreeOptions::default()
        },
    )
}
