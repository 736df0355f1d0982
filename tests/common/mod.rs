//! Helpers shared by the workspace's integration tests.

/// A loopback port free at the time of asking, from below the ephemeral range and never the
/// same twice in one process (see `quorumkv::chaos::free_port`).
pub fn free_port() -> u16 {
    quorumkv::chaos::free_port()
        .expect("a free loopback port")
        .port()
}
