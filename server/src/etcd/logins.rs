//! Password logins' guards on the member that checks them: failed attempts counted per user,
//! so a guesser is slowed to a few tries per window, and the decoy hash an unknown user's
//! password is checked against, so a login costs the same whether the user exists or not.
//! Holds no password and decides nothing about a correct one.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failed logins one user may have in a window before further attempts wait for its end.
pub const FAILED_LOGINS_PER_WINDOW_MAX: u32 = 5;
/// The window failed logins are counted in.
pub const FAILED_LOGIN_WINDOW: Duration = Duration::from_secs(10);
/// Users whose failures are remembered at once (the oldest windows go first).
const USERS_TRACKED_MAX: usize = 10_000;

/// Failed logins by user, and the decoy hash.
#[derive(Debug, Default)]
pub struct Logins {
    failures: Mutex<HashMap<String, (Instant, u32)>>,
    decoy: Arc<OnceLock<String>>,
}

impl Logins {
    /// Whether `user` may try a password now.
    pub fn may_try(&self, user: &str) -> bool {
        let now = Instant::now();
        self.failures.lock().get(user).is_none_or(|(since, n)| {
            *n < FAILED_LOGINS_PER_WINDOW_MAX || now.duration_since(*since) >= FAILED_LOGIN_WINDOW
        })
    }

    /// Counts a failed login of `user`.
    pub fn failed(&self, user: &str) {
        let now = Instant::now();
        let mut f = self.failures.lock();
        if f.len() >= USERS_TRACKED_MAX && !f.contains_key(user) {
            f.retain(|_, (since, _)| now.duration_since(*since) < FAILED_LOGIN_WINDOW);
            if f.len() >= USERS_TRACKED_MAX {
                return;
            }
        }
        let entry = f.entry(user.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILED_LOGIN_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    /// The hash an unknown user's password is checked against: made once, at `cost`, off the
    /// async workers (call it from a blocking task).
    pub fn decoy(&self) -> Arc<OnceLock<String>> {
        Arc::clone(&self.decoy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_slowed_after_repeated_failures_and_others_are_not() {
        let l = Logins::default();
        for _ in 0..FAILED_LOGINS_PER_WINDOW_MAX {
            assert!(l.may_try("mallory"));
            l.failed("mallory");
        }
        assert!(!l.may_try("mallory"));
        assert!(l.may_try("alice"));
    }
}
