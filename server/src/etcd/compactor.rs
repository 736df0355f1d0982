//! Automatic compaction of the key space's history, as etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention` do it.
//!
//! This module owns the schedule: which revision to compact and when. The policy is a pure
//! state machine ([`AutoCompactor`]) fed with the time, the current revision and whether this
//! member leads; [`run`] drives it on the member's runtime and proposes each compaction
//! through the log like a client's `Compact`, so every member compacts at the same point.
//! Only the leader proposes, as in etcd, where followers pause their compactor.
//!
//! - **Periodic** (retention `T`): the revision is sampled every `min(T, 1 h) / 10`; once `T`
//!   has passed since the last compaction (or since start), the member compacts to the
//!   revision sampled `T` ago, then again every `min(T, 1 h)`. History younger than `T` stays.
//! - **Revision** (retention `N`): every 5 minutes the member compacts to the current revision
//!   minus `N`, unless the history is already compacted that far.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pb::etcdserverpb as pb;

use super::{KvError, KvServer};
use crate::pb::quorumkv::internal_request::Request;

/// The longest interval between periodic compactions (etcd compacts hourly at most).
const PERIODIC_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// Periodic samples per compaction interval.
const SAMPLES_PER_INTERVAL: u32 = 10;
/// How often revision mode looks at the revision (etcd's fixed five minutes).
const REVISION_INTERVAL: Duration = Duration::from_secs(300);

/// What history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep revisions younger than this (must be non-zero).
    Periodic(Duration),
    /// Keep this many revisions behind the current one (must be positive).
    Revision(i64),
}

impl Retention {
    /// Parses etcd's `--auto-compaction-mode` and `--auto-compaction-retention`. A bare
    /// integer is hours in periodic mode and a revision count in revision mode; periodic mode
    /// also takes a Go duration (`30m`, `1h30m`, `90s`). Zero turns compaction off (`None`).
    pub fn parse(mode: &str, retention: &str) -> Result<Option<Retention>, String> {
        let retention = retention.trim();
        let bare = retention.parse::<u64>().ok();
        match mode {
            "periodic" => {
                let period = match bare {
                    Some(hours) => hours
                        .checked_mul(3600)
                        .map(Duration::from_secs)
                        .ok_or_else(|| {
                            format!("--auto-compaction-retention {retention} hours is too long")
                        })?,
                    None => parse_go_duration(retention)
                        .map_err(|e| format!("--auto-compaction-retention {retention:?}: {e}"))?,
                };
                Ok((!period.is_zero()).then_some(Retention::Periodic(period)))
            }
            "revision" => match bare {
                Some(0) => Ok(None),
                Some(n) => i64::try_from(n)
                    .map(|n| Some(Retention::Revision(n)))
                    .map_err(|_| format!("--auto-compaction-retention {n} is too large")),
                None => Err(format!(
                    "--auto-compaction-retention {retention:?} must be a revision count in \
                     revision mode"
                )),
            },
            other => Err(format!(
                "--auto-compaction-mode {other:?} is not \"periodic\" or \"revision\""
            )),
        }
    }
}

/// Parses a Go `time.Duration` string: an optional sign, then one or more decimal numbers,
/// each followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is zero.
/// Negative durations are refused.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err("a negative duration".into());
    }
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err("not a duration (e.g. 1h, 30m, 1h30m)".into());
    }
    let mut total_ns: f64 = 0.0;
    let mut rest = body;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or("a number without a unit")?;
        let (num, tail) = rest.split_at(digits);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{num:?} is not a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale_ns = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("unknown unit {unit:?} (ns, us, ms, s, m or h)")),
        };
        total_ns += value * scale_ns;
        rest = next;
    }
    // Go durations are 64-bit nanoseconds.
    if total_ns > i64::MAX as f64 {
        return Err("too long".into());
    }
    Ok(Duration::from_nanos(total_ns as u64))
}

/// The compaction schedule: told the time, the current revision and leadership at each
/// [`poll_interval`](AutoCompactor::poll_interval), it names the revision to compact to.
#[derive(Debug)]
pub struct AutoCompactor {
    retention: Retention,
    /// Periodic: revisions sampled at each poll, oldest first, covering one retention period.
    samples: VecDeque<i64>,
    /// Periodic: when the last compaction succeeded (start, at first).
    last_done: Instant,
    /// Periodic: the time to wait after `last_done`; the retention until the first
    /// compaction, then the compaction interval.
    wait: Duration,
}

impl AutoCompactor {
    /// A schedule starting at `now`.
    pub fn new(retention: Retention, now: Instant) -> AutoCompactor {
        let wait = match retention {
            Retention::Periodic(p) => {
                assert!(!p.is_zero(), "a zero retention means no compaction");
                p
            }
            Retention::Revision(n) => {
                assert!(n > 0, "a zero retention means no compaction");
                REVISION_INTERVAL
            }
        };
        AutoCompactor {
            retention,
            samples: VecDeque::new(),
            last_done: now,
            wait,
        }
    }

    /// How often to call [`poll`](AutoCompactor::poll).
    pub fn poll_interval(&self) -> Duration {
        match self.retention {
            Retention::Periodic(p) => {
                (p.min(PERIODIC_INTERVAL_MAX) / SAMPLES_PER_INTERVAL).max(Duration::from_millis(1))
            }
            Retention::Revision(_) => REVISION_INTERVAL,
        }
    }

    /// Samples kept: one retention period's worth of polls, plus the one starting it.
    fn samples_max(&self) -> usize {
        match self.retention {
            Retention::Periodic(p) => {
                (p.as_nanos() / self.poll_interval().as_nanos()).min(1 << 20) as usize + 1
            }
            Retention::Revision(_) => 0,
        }
    }

    /// One poll: `revision` is the current revision and `compacted` the revision already
    /// compacted to. Returns the revision to compact to, if it is time; report the outcome
    /// with [`compacted`](AutoCompactor::compacted).
    pub fn poll(
        &mut self,
        now: Instant,
        revision: i64,
        compacted: i64,
        leader: bool,
    ) -> Option<i64> {
        match self.retention {
            Retention::Periodic(period) => {
                self.samples.push_back(revision);
                while self.samples.len() > self.samples_max() {
                    self.samples.pop_front();
                }
                if !leader || now.saturating_duration_since(self.last_done) < self.wait {
                    return None;
                }
                self.wait = period.min(PERIODIC_INTERVAL_MAX);
                let rev = *self.samples.front().expect("a sample was just taken");
                if rev <= compacted {
                    // Nothing new to drop: count it as done so the interval starts again.
                    self.last_done = now;
                    return None;
                }
                Some(rev)
            }
            Retention::Revision(keep) => {
                let rev = revision - keep;
                if !leader || rev <= 0 || rev <= compacted {
                    return None;
                }
                Some(rev)
            }
        }
    }

    /// Reports how the compaction [`poll`](AutoCompactor::poll) asked for ended: `done` when
    /// it committed (or the history was already compacted past it). Revision mode needs no
    /// report: the compacted revision it is given next tells it.
    pub fn compacted(&mut self, now: Instant, done: bool) {
        if done && matches!(self.retention, Retention::Periodic(_)) {
            self.last_done = now;
        }
    }
}

/// Runs the schedule for `server` until its node stops.
pub(crate) async fn run(server: Arc<KvServer>, retention: Retention) {
    let mut schedule = AutoCompactor::new(retention, Instant::now());
    let mut tick = tokio::time::interval(schedule.poll_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if server.node().state().stopped() {
            return;
        }
        let snap = server.shared().core.mvcc.snapshot();
        let (Ok(revision), Ok(compacted)) = (snap.revision(), snap.compact_revision()) else {
            continue;
        };
        drop(snap);
        let leader = server.node().state().is_leader();
        let Some(rev) = schedule.poll(Instant::now(), revision, compacted, leader) else {
            continue;
        };
        tracing::info!(?retention, revision = rev, "starting auto compaction");
        let r = server
            .propose(Request::Compaction(pb::CompactionRequest {
                revision: rev,
                physical: false,
            }))
            .await;
        let done = matches!(r, Ok(_) | Err(KvError::Compacted));
        match r {
            Ok(_) => tracing::info!(revision = rev, "completed auto compaction"),
            Err(KvError::Compacted) => {
                tracing::debug!(revision = rev, "auto compaction: already compacted")
            }
            Err(e) => tracing::warn!(revision = rev, error = %e, "auto compaction failed"),
        }
        schedule.compacted(Instant::now(), done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn retention_flags_parse_as_etcd_reads_them() {
        let p = |m, r| Retention::parse(m, r);
        assert_eq!(p("periodic", "0"), Ok(None));
        assert_eq!(
            p("periodic", "1"),
            Ok(Some(Retention::Periodic(secs(3600))))
        );
        assert_eq!(
            p("periodic", "72"),
            Ok(Some(Retention::Periodic(secs(72 * 3600))))
        );
        assert_eq!(
            p("periodic", "30m"),
            Ok(Some(Retention::Periodic(secs(1800))))
        );
        assert_eq!(
            p("periodic", "1h30m"),
            Ok(Some(Retention::Periodic(secs(5400))))
        );
        assert_eq!(
            p("periodic", "1.5s"),
            Ok(Some(Retention::Periodic(Duration::from_millis(1500))))
        );
        assert_eq!(p("revision", "1000"), Ok(Some(Retention::Revision(1000))));
        assert_eq!(p("revision", "0"), Ok(None));
        for (m, r) in [
            ("periodic", "-1h"),
            ("periodic", "1d"),
            ("periodic", "h"),
            ("periodic", "1..5s"),
            ("periodic", ""),
            ("revision", "10m"),
            ("revision", "-5"),
            ("hourly", "1"),
        ] {
            assert!(p(m, r).is_err(), "{m} {r:?} parsed");
        }
        assert_eq!(
            parse_go_duration("2h45m10s"),
            Ok(secs(2 * 3600 + 45 * 60 + 10))
        );
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("1us"), Ok(Duration::from_micros(1)));
        assert!(parse_go_duration("9999999999h").is_err());
    }

    #[test]
    fn periodic_compacts_to_the_revision_one_period_old_then_every_period() {
        let t0 = Instant::now();
        let mut c = AutoCompactor::new(Retention::Periodic(secs(100)), t0);
        let step = c.poll_interval();
        assert_eq!(step, secs(10));
        // Revision 10 * i at poll i; nothing happens before the period has passed.
        for i in 1..10u64 {
            assert_eq!(c.poll(t0 + step * i as u32, 10 * i as i64, 0, true), None);
        }
        // At 100 s the oldest sample kept is the one from 10 s (the window is one period).
        let rev = c.poll(t0 + secs(100), 100, 0, true);
        assert_eq!(rev, Some(10));
        c.compacted(t0 + secs(100), true);
        for i in 11..20u64 {
            assert_eq!(c.poll(t0 + step * i as u32, 10 * i as i64, 10, true), None);
        }
        // One interval later, the revision from 100 s before.
        assert_eq!(c.poll(t0 + secs(200), 200, 10, true), Some(100));
    }

    #[test]
    fn periodic_waits_while_following_and_retries_a_failure() {
        let t0 = Instant::now();
        let mut c = AutoCompactor::new(Retention::Periodic(secs(10)), t0);
        for i in 1..=30u32 {
            assert_eq!(c.poll(t0 + secs(1) * i, i64::from(i), 0, false), None);
        }
        // Leading now: the window still holds exactly one period of samples.
        assert_eq!(c.poll(t0 + secs(31), 31, 0, true), Some(21));
        c.compacted(t0 + secs(31), false);
        assert_eq!(c.poll(t0 + secs(32), 32, 0, true), Some(22));
        c.compacted(t0 + secs(32), true);
        assert_eq!(c.poll(t0 + secs(33), 33, 22, true), None);
    }

    #[test]
    fn periodic_with_a_long_retention_compacts_hourly_and_keeps_the_whole_period() {
        let t0 = Instant::now();
        let mut c = AutoCompactor::new(Retention::Periodic(secs(3 * 3600)), t0);
        assert_eq!(c.poll_interval(), secs(360));
        let mut got = Vec::new();
        for i in 1..=60u32 {
            let now = t0 + secs(360) * i;
            let rev = i64::from(i);
            if let Some(r) = c.poll(now, rev, 0, true) {
                c.compacted(now, true);
                got.push((i, r));
            }
        }
        // First at 3 h (poll 30) back to the first sample; then hourly, always 3 h back.
        assert_eq!(got, vec![(30, 1), (40, 10), (50, 20), (60, 30)]);
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions() {
        let t0 = Instant::now();
        let mut c = AutoCompactor::new(Retention::Revision(100), t0);
        assert_eq!(c.poll_interval(), secs(300));
        assert_eq!(c.poll(t0, 50, 0, true), None);
        assert_eq!(c.poll(t0, 250, 0, false), None);
        assert_eq!(c.poll(t0, 250, 0, true), Some(150));
        c.compacted(t0, true);
        assert_eq!(c.poll(t0, 250, 150, true), None);
        assert_eq!(c.poll(t0, 251, 150, true), Some(151));
    }
}
