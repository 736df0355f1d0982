//! A ZooKeeper write as the replicated log carries it, and what applying it answers.
//!
//! The entry keeps the client's own request record (jute bytes, decoded again by every
//! member's applier) with the session that sent it; session creation carries what the
//! proposer chose. Entries are the bytes of envelope field 40 (see `member::envelope`).

use prost::Message;

use super::acl::AuthId;
use super::records::Stat;

/// One ZooKeeper write in the log.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct ZkTxn {
    /// The session making it.
    #[prost(int64, tag = "1")]
    pub session: i64,
    /// Its operation code (`codes::op`).
    #[prost(int32, tag = "2")]
    pub op: i32,
    /// The request record as the client sent it (jute).
    #[prost(bytes = "vec", tag = "3")]
    pub body: Vec<u8>,
    /// createSession: the negotiated timeout, ms.
    #[prost(int32, tag = "4")]
    pub timeout_ms: i32,
    /// createSession: the password a reconnect must present.
    #[prost(bytes = "vec", tag = "5")]
    pub password: Vec<u8>,
    /// Who the connection that sent it is: ACLs are checked against these.
    #[prost(message, repeated, tag = "6")]
    pub auth: Vec<AuthId>,
}

/// What a write did, for its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZkDone {
    /// A node was created at this path (sequential names resolved).
    Created {
        /// Its path.
        path: String,
        /// Its Stat.
        stat: Stat,
    },
    /// A node's data or ACL was set.
    Set(Stat),
    /// A node was deleted, a version checked, a session created or closed.
    Done,
    /// A multi's results, one per operation. When one failed, nothing was applied: the ones
    /// before it say OK (0), it says its error, the ones after RUNTIME_INCONSISTENCY.
    Multi(Vec<OpResult>),
}

/// One operation's result inside a multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpResult {
    /// Its operation code.
    pub op: i32,
    /// What it did, or its error code.
    pub result: Result<ZkDone, i32>,
}

/// A write's answer: what it did or ZooKeeper's error code, and the revision (zxid) after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkAnswer {
    /// The result.
    pub result: Result<ZkDone, i32>,
    /// The key space's revision after it.
    pub zxid: i64,
}
