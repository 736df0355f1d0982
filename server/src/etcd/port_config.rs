//! How the client port treats its connections and streams: etcd's flags for server pings,
//! per-connection stream limits and watch progress notifications, with etcd's defaults.

use std::time::Duration;

/// Settings of the client port's connections and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPortConfig {
    /// How often watchers that asked for progress notifications get one when idle (etcd's
    /// `--experimental-watch-progress-notify-interval`).
    pub watch_progress_notify_interval: Duration,
    /// How often the port pings an idle connection (etcd's `--grpc-keepalive-interval`;
    /// zero: never).
    pub grpc_keepalive_interval: Duration,
    /// How long such a ping may go unanswered before the connection closes (etcd's
    /// `--grpc-keepalive-timeout`; zero: tonic's default).
    pub grpc_keepalive_timeout: Duration,
    /// Streams one connection may have open at once (etcd's `--max-concurrent-streams`,
    /// which etcd leaves unbounded; every queue here has a bound).
    pub max_concurrent_streams: u32,
}

impl Default for ClientPortConfig {
    /// etcd's defaults: progress every 10 minutes, pings every 2 hours answered within 20 s;
    /// 10,000 streams per connection.
    fn default() -> Self {
        ClientPortConfig {
            watch_progress_notify_interval: Duration::from_secs(600),
            grpc_keepalive_interval: Duration::from_secs(2 * 3600),
            grpc_keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 10_000,
        }
    }
}
