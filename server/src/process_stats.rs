//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, open and maximum file descriptors, start time), read from
//! `/proc/self` as etcd's Go process collector reports them. Tools such as
//! `etcdctl check datascale` read them from `/metrics`.

use std::fmt::Write as _;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub resident_bytes: u64,
    /// Virtual memory size.
    pub virtual_bytes: u64,
    /// Start time since the Unix epoch.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
}

impl ProcessStats {
    /// Reads the current figures; `None` where `/proc` is unavailable or unreadable.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_seconds = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
        // SAFETY: sysconf only reads configuration values.
        let (ticks_per_second, page_bytes) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = u64::try_from(ticks_per_second).ok().filter(|&t| t > 0)? as f64;
        let page_bytes = u64::try_from(page_bytes).ok()?;
        let f = parse_stat(&stat)?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit through a valid pointer.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        Some(ProcessStats {
            cpu_seconds: (f.utime_ticks + f.stime_ticks) as f64 / ticks,
            resident_bytes: f.rss_pages.saturating_mul(page_bytes),
            virtual_bytes: f.vsize_bytes,
            start_time_seconds: boot_seconds as f64 + f.start_ticks as f64 / ticks,
            open_fds,
            max_fds,
        })
    }

    /// Appends the Prometheus text exposition.
    pub fn render_into(&self, o: &mut String) {
        let rows: [(&str, &str, &str, f64); 6] = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                self.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                "gauge",
                self.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                self.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                self.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                "gauge",
                self.max_fds as f64,
            ),
        ];
        for (name, help, kind, v) in rows {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    }
}

/// The fields of `/proc/<pid>/stat` the metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatFields {
    utime_ticks: u64,
    stime_ticks: u64,
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself
/// hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(s: &str) -> Option<StatFields> {
    let rest = &s[s.rfind(')')? + 1..];
    // Fields from 3 (state) on; field n is at index n - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime_ticks: num(14)?,
        stime_ticks: num(15)?,
        start_ticks: num(22)?,
        vsize_bytes: num(23)?,
        rss_pages: num(24)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15 16 17 18 333 \
                    4096000 250 18446744073709551615 1 2 3";
        assert_eq!(
            parse_stat(line),
            Some(StatFields {
                utime_ticks: 111,
                stime_ticks: 222,
                start_ticks: 333,
                vsize_bytes: 4_096_000,
                rss_pages: 250,
            })
        );
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn this_process_reports_memory_and_descriptors() {
        let s = ProcessStats::read().expect("/proc is mounted");
        assert!(s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes);
        assert!(s.open_fds >= 3 && s.max_fds >= s.open_fds);
        let mut o = String::new();
        s.render_into(&mut o);
        assert!(o.contains("\nprocess_resident_memory_bytes "));
    }
}
