//! The ZooKeeper personality: ZooKeeper 3.8's client protocol on the member core, beside
//! etcd's. So far: its wire format (the jute codec [`jute`], the protocol's records
//! [`records`] and its numbers [`codes`]), where znodes live in the key space ([`znode`]),
//! the log entry of a write ([`txn`]), the applier of writes ([`apply`]), reads ([`read`]),
//! sessions ([`session`]), one-shot watches ([`watches`]) and the client port ([`port`],
//! [`conn`]), served when `--listen-zookeeper-urls` names an address. Still to come:
//! persistent watches and setWatches, multi, ACL enforcement and auth, and session touches
//! heard by followers.
//!
//! Like every client API it may build on `member/` and below, never on `etcd/`.

pub mod acl;
pub mod apply;
pub mod codes;
pub mod conn;
pub mod jute;
pub mod ops;
pub mod port;
pub mod read;
pub mod reaper;
pub mod records;
pub mod request;
pub mod session;
pub mod txn;
pub mod watches;
pub mod znode;
