//! The errors a client of the key space can get, worded and coded as etcd's `rpctypes` word
//! and code them, so etcd clients retry, fail over and report as they do against etcd.

use tonic::{Code, Status};

use crate::member::error::Error as MemberError;
use crate::mvcc::MvccError;

/// Why a key-space request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// Empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// The key is longer than the store's keys may be.
    #[error("etcdserver: key is too large")]
    KeyTooLarge,
    /// `ignore_value`/`ignore_lease` on a missing key.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// Too many operations in a transaction.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A transaction writes one key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The revision was compacted.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The revision does not exist yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The backend quota is exhausted (NOSPACE alarm).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// Unknown lease.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The lease id is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// TTL above the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// Unknown member.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// Member id taken.
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// Peer URL taken.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// No peer URL given, or one that is not a URL this member can dial.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// The member is not a learner.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// The learner has not caught up with the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// Too few voters have started for the change to keep a quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// Leadership cannot move there.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// The key lies in the part of the key space other client APIs keep (see
    /// `member::keyspace`).
    #[error("etcdserver: key is reserved for another client API")]
    ReservedKey,
    /// The request exceeds `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// No leader is known.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// This member is not the leader.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// The leader changed while the request was in flight; its fate is unknown.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request did not finish in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// Too many requests are queued.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// The server stopped (shut down, or its storage failed).
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The cluster cannot take the request now: a membership change is still in progress, or
    /// members the change depends on are unreachable.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// The operation is not supported by this replication protocol or server.
    #[error("etcdserver: not capable")]
    NotCapable,
    /// Stored data failed validation.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// Enabling authentication without a `root` user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// Enabling authentication while `root` lacks the `root` role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// The user exists.
    #[error("etcdserver: user name already exists")]
    UserExists,
    /// No user given: no token while authentication is on, or an empty name.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// Unknown user.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// The role exists.
    #[error("etcdserver: role name already exists")]
    RoleExists,
    /// Unknown role.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// Empty role name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Wrong user or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The user may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// Revoking a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// Revoking a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Granting no permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// Authentication is off.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// The token is unknown or expired.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A range whose response would pass `--max-range-response-bytes`.
    #[error(
        "etcdserver: range response is larger than --max-range-response-bytes ({0} bytes); ask for fewer keys (a limit, a narrower range, or keys only)"
    )]
    ResponseTooLarge(usize),
    /// A password bcrypt would cut short (it reads at most 72 bytes).
    #[error("etcdserver: password is longer than 72 bytes")]
    PasswordTooLong,
    /// A change that would lock the administrator out (deleting `root`, say).
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// An error the leader returned for a forwarded request.
    #[error("{message}")]
    Forwarded {
        /// gRPC code.
        code: i32,
        /// Message.
        message: String,
    },
    /// The storage failed; apply stops.
    #[error("etcdserver: storage: {0}")]
    Storage(String),
    /// Anything else, with its description.
    #[error("etcdserver: {0}")]
    Other(String),
}

impl KvError {
    /// The gRPC code etcd uses for this error.
    pub fn code(&self) -> Code {
        use KvError::*;
        match self {
            EmptyKey | KeyTooLarge | ReservedKey | KeyNotFound | ValueProvided | LeaseProvided
            | TooManyOps | DuplicateKey | RequestTooLarge | UserEmpty | RoleEmpty | AuthFailed
            | MemberBadUrls | PermissionNotGiven | InvalidAuthMgmt | PasswordTooLong => {
                Code::InvalidArgument
            }
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests | ResponseTooLarge(_) => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            LeaseExists
            | MemberExists
            | PeerUrlExists
            | NotLearner
            | LearnerNotReady
            | NotEnoughStartedMembers
            | BadLeaderTransferee
            | NotLeader
            | RootUserNotExist
            | RootRoleNotExist
            | UserExists
            | UserNotFound
            | RoleExists
            | RoleNotFound
            | RoleNotGranted
            | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
            NoLeader | LeaderChanged | Timeout | Stopped | NotCapable | Unhealthy => {
                Code::Unavailable
            }
            Corrupt => Code::DataLoss,
            Storage(_) => Code::Internal,
            Forwarded { code, .. } => Code::from(*code),
            Other(_) => Code::Unknown,
        }
    }
}

impl From<KvError> for Status {
    fn from(e: KvError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<MvccError> for KvError {
    fn from(e: MvccError) -> KvError {
        match e {
            MvccError::Compacted => KvError::Compacted,
            MvccError::FutureRevision => KvError::FutureRevision,
            MvccError::Corrupt(_) => KvError::Corrupt,
            MvccError::Storage(e) => KvError::Storage(e.to_string()),
            MvccError::TooLarge(limit) => KvError::ResponseTooLarge(limit),
        }
    }
}

impl From<MemberError> for KvError {
    fn from(e: MemberError) -> KvError {
        match e {
            MemberError::NotLeader => KvError::NotLeader,
            MemberError::NoLeader => KvError::NoLeader,
            MemberError::LeaderChanged => KvError::LeaderChanged,
            MemberError::Timeout => KvError::Timeout,
            MemberError::Stopped => KvError::Stopped,
            MemberError::TooManyRequests => KvError::TooManyRequests,
            MemberError::RequestTooLarge => KvError::RequestTooLarge,
            MemberError::NotCapable => KvError::NotCapable,
            MemberError::Unhealthy => KvError::Unhealthy,
            MemberError::Other(m) => KvError::Other(m),
        }
    }
}

impl From<Status> for KvError {
    fn from(s: Status) -> KvError {
        KvError::Forwarded {
            code: s.code() as i32,
            message: s.message().to_string(),
        }
    }
}
