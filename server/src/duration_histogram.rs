//! A latency histogram for `/metrics`: lock-free cumulative-ready buckets with etcd's bounds
//! for its disk histograms (1 ms doubling to 8.192 s), a sum and a count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: Prometheus `ExponentialBuckets(0.001, 2, 14)`, as
/// etcd uses for `etcd_disk_backend_commit_duration_seconds`.
const BOUNDS_SECONDS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// Durations counted by bucket (one more bucket for anything slower than the last bound).
#[derive(Debug, Default)]
pub struct DurationHistogram {
    buckets: [AtomicU64; BOUNDS_SECONDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// Counts one observation.
    pub fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BOUNDS_SECONDS.partition_point(|b| *b < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Appends the Prometheus text exposition of the histogram as `name`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let sum_seconds = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        render_histogram(out, name, help, &BOUNDS_SECONDS, &counts, sum_seconds);
    }
}

/// Appends the Prometheus text exposition of a histogram as `name`: `counts` per bucket, one
/// more bucket than `bounds_seconds` (for anything slower than the last bound), and the sum
/// of the observations. The count is the buckets' total, so it always equals `+Inf`'s.
pub fn render_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds_seconds: &[f64],
    counts: &[u64],
    sum_seconds: f64,
) {
    assert_eq!(
        counts.len(),
        bounds_seconds.len() + 1,
        "one bucket per bound, plus +Inf"
    );
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in bounds_seconds.iter().zip(counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += counts[bounds_seconds.len()];
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {sum_seconds}\n{name}_count {cumulative}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = DurationHistogram::default();
        h.record(Duration::from_micros(500));
        h.record(Duration::from_millis(1));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(20));
        assert_eq!(h.count(), 4);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "X.");
        assert!(out.starts_with("# HELP x_seconds X.\n# TYPE x_seconds histogram\n"));
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.002\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.004\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"8.192\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_count 4\n"), "{out}");
        assert!(out.contains("x_seconds_sum 20.0045\n"), "{out}");
    }
}
