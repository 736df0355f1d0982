//! Why the member core could not carry a request through: the refusals every client API
//! shares, whatever it speaks. Each API maps them to its own wire codes and words; what a
//! request itself was refused for (a missing key, a bad version) is that API's answer, never
//! one of these.

use quorumkv_replication::ProposeError;

use crate::node::NodeError;

/// Why a request did not get a result from the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Another member leads, and this request must be made there.
    #[error("not leader")]
    NotLeader,
    /// No leader is known.
    #[error("no leader")]
    NoLeader,
    /// Leadership changed while the request was in flight.
    #[error("leader changed")]
    LeaderChanged,
    /// The request did not commit in time; its fate is unknown.
    #[error("request timed out")]
    Timeout,
    /// The member stopped: shut down, its storage failed, or it was removed.
    #[error("member stopped")]
    Stopped,
    /// Too many requests wait for their results already.
    #[error("too many requests")]
    TooManyRequests,
    /// The log entry would be larger than a request may be.
    #[error("request too large")]
    RequestTooLarge,
    /// The replication protocol cannot do this.
    #[error("not capable")]
    NotCapable,
    /// A membership change is still in progress.
    #[error("unhealthy cluster")]
    Unhealthy,
    /// Anything else, with its description.
    #[error("{0}")]
    Other(String),
}

impl From<NodeError> for Error {
    fn from(e: NodeError) -> Error {
        match e {
            NodeError::Propose(ProposeError::NotLeader { leader: 0 }) => Error::NoLeader,
            NodeError::Propose(ProposeError::NotLeader { .. }) => Error::NotLeader,
            NodeError::Propose(ProposeError::Overloaded) => Error::TooManyRequests,
            NodeError::Propose(ProposeError::Transferring) => Error::LeaderChanged,
            NodeError::Propose(ProposeError::Unsupported(_)) => Error::NotCapable,
            NodeError::Propose(ProposeError::ConfChangePending) => Error::Unhealthy,
            NodeError::Propose(e) => Error::Other(e.to_string()),
            NodeError::Lost => Error::LeaderChanged,
            NodeError::Stopped(_) => Error::Stopped,
        }
    }
}
