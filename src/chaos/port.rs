//! Loopback ports for members started by the fault tests and the test suites (which include
//! this file by path, so both hand out ports the same way).
//!
//! Never hands out a port from the ephemeral range, nor the same port twice in one process.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// First port handed out, and how many. They lie below Linux's ephemeral range (32768 and
/// up), so a port handed out is never taken meanwhile as the source port of an outgoing
/// connection (members and clients dial each other while a cluster starts), and one process
/// never hands out the same port twice.
const PORT_FIRST: u32 = 20_000;
const PORTS: u32 = 12_000;
static NEXT_PORT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A loopback port free at the time of asking.
pub fn free_port() -> Result<SocketAddr, String> {
    // Processes start at different offsets, so runs one after another do not walk the same
    // ports.
    let _ = NEXT_PORT.compare_exchange(
        u32::MAX,
        std::process::id() % 1_000 * 12,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..PORTS {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(PORT_FIRST + n % PORTS).expect("below the ephemeral range");
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().map_err(|e| e.to_string());
        }
    }
    Err(format!(
        "no free port in {PORT_FIRST}..{}",
        PORT_FIRST + PORTS
    ))
}
