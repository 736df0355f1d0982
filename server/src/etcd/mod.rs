//! The etcd v3 personality: everything etcd-specific about a member. The gRPC services and
//! their fast unary path, the JSON gateway, RBAC ([`rbac`]), etcd's error words and codes
//! ([`error`]), the applier of etcd's requests ([`apply`]), bbolt backups both ways
//! ([`backup`], [`restore`]), corruption checks, the compactor, etcd's metric names, and the
//! running member that serves them ([`KvServer`]).
//!
//! Builds on [`crate::member`], [`crate::node`] and [`crate::mvcc`]; none of those imports
//! anything from here.

pub mod apply;
pub mod auth;
pub mod authority;
pub mod backup;
pub mod bolt_format;
pub mod bolt_reader;
pub mod bolt_writer;
pub mod cert_user;
pub mod client_conn;
pub mod cluster;
pub mod compactor;
pub mod conn_limit;
pub mod corrupt;
pub mod error;
pub mod gateway;
pub mod internal;
pub mod kv;
pub mod lease;
pub mod local;
pub mod logins;
pub mod maintenance;
pub mod metrics;
mod port_config;
mod ports;
pub mod range;
pub mod rbac;
mod reconfig;
pub mod restore;
pub mod server;
pub mod unary;
pub mod watch;

pub use error::KvError;
pub use port_config::ClientPortConfig;
pub(crate) use ports::{as_grpc_go_status, is_grpc, pass_token, requires_leader, token, token_in};
pub use ports::{serve, serve_calls};
pub use server::{Applied, KvConfig, KvServer, Shared, node_error, open_db};
