//! Safety invariants, one module each, checked continuously by the simulator against what the
//! nodes report. Each returns a description of the first violation it sees.

mod election_safety;
mod leader_completeness;
mod log_matching;
mod state_machine_safety;

pub use election_safety::ElectionSafety;
pub use leader_completeness::LeaderCompleteness;
pub use log_matching::LogMatching;
pub use state_machine_safety::StateMachineSafety;

/// A cheap fingerprint of entry data.
pub(crate) fn digest(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}
