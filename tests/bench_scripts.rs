//! The load generator and the benchmark scripts: `quorumkv bench` accounts for every
//! request and rides out a restart; `benches/compare.sh` and `benches/scale.sh` run in
//! their quick modes.

mod common;
use common::cluster::*;
use common::etcd::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `quorumkv bench ARGS --json` and parses its last line.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("bench {args:?}: {e}: {stdout}"))
}

/// The load generator against one member: every request is accounted for, successes and
/// failures apart.
#[test]
fn bench_load_generator_counts_add_up() {
    let _serial = serial();
    let c = Cluster::start(1, "raft");
    let ep = c.members[0].client.as_str();
    let common = ["--endpoints", ep, "--conns", "2", "--clients", "8"];
    let run = |workload: &str, extra: &[&str]| {
        let mut args = vec![workload];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        bench_json(&args)
    };
    let put = run(
        "put",
        &[
            "--total",
            "2000",
            "--key-space-size",
            "500",
            "--sequential-keys",
        ],
    );
    assert_eq!(
        (put["ok"].as_u64(), put["failed"].as_u64()),
        (Some(2000), Some(0))
    );
    assert!(put["throughput_per_s"].as_f64().unwrap() > 0.0);
    assert!(put["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    let keys = ok(&etcdctl(ep, &["get", "00000", "--prefix", "--keys-only"]));
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 500);
    for consistency in ["l", "s"] {
        let r = run(
            "range",
            &[
                "--total",
                "1000",
                "--key-space-size",
                "500",
                "--consistency",
                consistency,
            ],
        );
        assert_eq!(
            (r["ok"].as_u64(), r["failed"].as_u64()),
            (Some(1000), Some(0))
        );
    }
    let t = run(
        "txn",
        &[
            "--total",
            "200",
            "--txn-ops",
            "3",
            "--read-percent",
            "50",
            "--key-space-size",
            "500",
        ],
    );
    assert_eq!(
        (t["ok"].as_u64(), t["failed"].as_u64()),
        (Some(200), Some(0))
    );
    let w = run("watch", &["--total", "100", "--watchers", "3"]);
    assert_eq!(w["ok"].as_u64(), Some(100));
    assert_eq!(w["events_expected"].as_u64(), Some(300));
    assert_eq!(w["events_delivered"].as_u64(), Some(300));
    let timed = run("put", &["--duration", "1s", "--rate", "200"]);
    let n = timed["ok"].as_u64().unwrap();
    assert!((50..=260).contains(&n), "rate-limited run did {n} puts");
    // Requests the server refuses are counted as failures, by code, not dropped.
    let big = run("put", &["--total", "5", "--val-size", "2000000"]);
    assert_eq!(
        (big["ok"].as_u64(), big["failed"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(big["errors"]["InvalidArgument"].as_u64(), Some(5));
}

/// The load generator rides out a member's restart: requests meanwhile fail and are counted,
/// and once the member is back the clients dial it again and their puts land.
#[test]
fn bench_load_generator_reconnects_after_a_restart() {
    let _serial = serial();
    let mut c = Cluster::start(1, "raft");
    let ep = c.members[0].client.clone();
    let bench = Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args(["bench", "put", "--endpoints", &ep, "--conns", "2"])
        .args(["--clients", "4", "--duration", "8s", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let before_kill = header_revision(&ep);
    c.kill(0);
    std::thread::sleep(Duration::from_millis(1000));
    c.spawn(0);
    c.wait_healthy();
    let restarted = header_revision(&ep);
    assert!(restarted >= before_kill, "{restarted} < {before_kill}");
    let out = bench.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let ended = header_revision(&ep);
    assert!(
        ended > restarted + 100,
        "no puts after the restart: revision {restarted} then {ended}: {stdout}"
    );
    let (ok, failed) = (r["ok"].as_u64().unwrap(), r["failed"].as_u64().unwrap());
    // Every acknowledged put is in the member's history (revision 1 is the empty store).
    assert!(
        ok > 0 && (ok as i64) < ended,
        "{ok} acknowledged, revision {ended}"
    );
    assert!(failed > 0, "the restart cost no request: {stdout}");
    assert!(
        r["errors"]["Unavailable"].as_u64().unwrap_or(0) > 0,
        "{stdout}"
    );
}

/// Runs `benches/compare.sh ARGS --out OUT` with this build and returns the table it wrote.
fn compare_script(args: &[&str], out: &Path) -> String {
    bench_script("compare.sh", args, out)
}

/// Runs `benches/<script>` with `args`, writing to `out`, on this build; returns `out`.
fn bench_script(script: &str, args: &[&str], out: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(script);
    let run = Command::new("bash")
        .arg(path)
        .args(args)
        .args(["--out", out.to_str().unwrap()])
        .env("QUORUMKV_BIN", env!("CARGO_BIN_EXE_quorumkv"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{script} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(out).unwrap()
}

/// `benches/compare.sh --quick`: etcd and quorumkv (Raft, ZAB) side by side with the same
/// workloads, a markdown table and charts out, every request answered.
#[test]
fn benchmark_comparison_quick_mode_runs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let table = compare_script(&["--quick"], &dir.path().join("quick.md"));
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| put") || l.starts_with("| range"))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    for r in rows {
        assert!(!r.contains("failed") && !r.contains("| - |"), "{r}");
        assert!(r.contains('×'), "no ratio to etcd: {r}");
    }
    for chart in ["throughput_vs_clients.png", "latency_percentiles.png"] {
        let png = std::fs::read(dir.path().join("quick-plots").join(chart)).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{chart}");
        assert!(
            table.contains(&format!("quick-plots/{chart}")),
            "{chart} not linked: {table}"
        );
    }
    let results = std::fs::read_to_string(dir.path().join("quick-plots/results.jsonl")).unwrap();
    assert_eq!(
        results.lines().count(),
        3 * 5,
        "three systems, five workloads"
    );
}

/// `benches/scale.sh` in a quick mode, one size, quorumkv and etcd: a row each, with every
/// figure measured (nothing failed, the database file found, a restart timed).
#[test]
fn scale_script_quick_mode_runs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let table = bench_script(
        "scale.sh",
        &["--quick", "--sizes", "3000", "--systems", "raft1 etcd1"],
        &dir.path().join("scale.md"),
    );
    let raw = std::fs::read_to_string(dir.path().join("scale.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{raw}");
    for r in &rows {
        assert_eq!(r["keys"], 3000, "{r}");
        assert_eq!(r["put_failed"], 0, "{r}");
        for figure in [
            "put_per_s",
            "db_bytes",
            "rss_bytes",
            "restart_s",
            "pause_ms",
        ] {
            assert!(r[figure].as_f64().unwrap() > 0.0, "{figure}: {r}");
        }
    }
    assert!(
        table.contains("| raft1 | 3,000 |") && table.contains("| etcd1 | 3,000 |"),
        "{table}"
    );
}

/// `benches/compare.sh --knobs --quick`: WAL flags swept on Raft and ZAB, a row per setting
/// with its ratio to the defaults and the puts each of the leader's fdatasyncs carried.
#[test]
fn knob_sweep_quick_mode_runs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let table = compare_script(&["--knobs", "--quick"], &dir.path().join("knobs.md"));
    let mut heading = "";
    let mut rows = 0;
    for line in table.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h;
            continue;
        }
        if !(line.starts_with("| defaults") || line.starts_with("| commit delay")) {
            continue;
        }
        rows += 1;
        let cells: Vec<&str> = line
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells.len(),
            7,
            "a setting and three cells per system: {line}"
        );
        assert!(!line.contains("failed"), "{line}");
        if line.starts_with("| commit delay") {
            assert!(line.contains("`--wal-commit-delay-us 200`"), "{line}");
            assert!(line.contains('×'), "no ratio to the defaults: {line}");
        }
        for per_sync in [cells[3], cells[6]] {
            let v: f64 = per_sync.parse().unwrap();
            if heading.starts_with("put 1 client") {
                // One client waits for each put: one fdatasync apiece.
                assert!((0.5..=1.5).contains(&v), "{heading}: {line}");
            } else {
                assert!(v > 1.0, "100 clients share fdatasyncs: {heading}: {line}");
            }
        }
    }
    assert_eq!(rows, 4, "two settings in each of two tables: {table}");
}
