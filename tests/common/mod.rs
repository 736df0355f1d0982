//! Helpers shared by the workspace's integration tests.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Next candidate port. Ports come from below Linux's ephemeral range (32768 and up), so a
/// port handed out here is never taken meanwhile as the source port of some outgoing
/// connection (members dial each other and clients dial members while a cluster starts), and
/// one process never hands out the same port twice.
static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    // Processes start at different offsets, so test binaries running one after another
    // do not walk the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % 1_000 * 12,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = u16::try_from(20_000 + n % 12_000).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}
