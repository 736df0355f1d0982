//! The ZooKeeper personality: ZooKeeper 3.8's client protocol on the member core, beside
//! etcd's. So far: its wire format (the jute codec [`jute`], the protocol's records
//! [`records`] and its numbers [`codes`]), where znodes live in the key space ([`znode`]),
//! the log entry of a write ([`txn`]) and the applier of writes ([`apply`]). Not served yet:
//! the client port, reads, watches and session expiry are still to come.
//!
//! Like every client API it may build on `member/` and below, never on `etcd/`.

pub mod apply;
pub mod codes;
pub mod jute;
pub mod records;
pub mod txn;
pub mod znode;
