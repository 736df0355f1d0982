//! The ZooKeeper personality: ZooKeeper 3.8's client protocol on the member core, beside
//! etcd's. Its wire format (the jute codec [`jute`], the protocol's records [`records`], its
//! numbers [`codes`], typed operations and multi bodies [`ops`]); where znodes live in the key
//! space ([`znode`]); the log entry of a write ([`txn`]) and its applier ([`apply`]); access
//! control ([`acl`]); reads ([`read`]); sessions ([`session`]); watches ([`watches`]); the
//! reaper of containers and TTL nodes ([`reaper`]); and the client port ([`port`], [`conn`],
//! [`pipeline`], [`outbox`], [`request`], [`four_letter`]).
//!
//! Like every client API it may build on `member/` and below, never on `etcd/`.

pub mod acl;
pub mod apply;
pub mod codes;
pub mod conn;
pub mod four_letter;
pub mod jute;
pub mod ops;
pub mod outbox;
pub mod pipeline;
pub mod port;
pub mod read;
pub mod reaper;
pub mod records;
pub mod request;
pub mod session;
pub mod txn;
pub mod watches;
pub mod znode;
