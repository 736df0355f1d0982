//! `quorumkv bench plot`: PNG charts of a comparison's results (`benches/compare.sh` keeps
//! them as JSON lines: system, workload, repeat, and the `bench ... --json` object). Two
//! charts: put throughput against the number of clients (every put workload with the default
//! 256 B values), one line per system; and latency percentiles (p50, p90, p99, p99.9) per
//! system for one workload. Values are medians over the repeats.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;

/// `bench plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Results written by benches/compare.sh (one JSON object per line).
    #[arg(long)]
    input: PathBuf,
    /// Directory for the PNG files.
    #[arg(long, default_value = "benches/plots")]
    out_dir: PathBuf,
    /// Workload whose latency percentiles to chart (default: the put workload with the most
    /// clients outside the sweep).
    #[arg(long)]
    latency_workload: Option<String>,
    /// TrueType font for the labels (default: the first usual system font found).
    #[arg(long)]
    font: Option<PathBuf>,
    /// The workload kind the throughput chart compares (`put`, or `zk-create`, `zk-set`,
    /// `zk-get` for ZooKeeper's protocol).
    #[arg(long, default_value = "put")]
    bench: String,
}

/// Fonts tried in order when `--font` is not given.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Values of the puts the throughput chart compares (the load generator's default).
const CHART_VALUE_BYTES: u64 = 256;

/// One measured run.
#[derive(Debug, Clone)]
struct Run {
    system: String,
    workload: String,
    bench: String,
    val_size: u64,
    clients: u64,
    throughput: f64,
    /// p50, p90, p99, p99.9 in ms.
    latency_ms: [f64; 4],
}

impl Run {
    /// Whether the throughput chart of `bench` shows it.
    fn is_charted(&self, bench: &str) -> bool {
        self.bench == bench && self.val_size == CHART_VALUE_BYTES
    }
}

fn parse(text: &str) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let field = |p: &str| {
            v.pointer(p)
                .ok_or_else(|| format!("line {}: no {p}", n + 1))
        };
        let ms = |q: &str| -> Result<f64, String> {
            let p = format!("/result/latency/{q}");
            field(&p)?
                .as_f64()
                .map(|us| us / 1000.0)
                .ok_or_else(|| format!("line {}: {p} is not a number", n + 1))
        };
        runs.push(Run {
            system: field("/system")?.as_str().unwrap_or_default().to_string(),
            workload: field("/workload")?.as_str().unwrap_or_default().to_string(),
            bench: field("/result/bench")?
                .as_str()
                .unwrap_or_default()
                .to_string(),
            val_size: field("/result/val_size")?.as_u64().unwrap_or(0),
            clients: field("/result/clients")?.as_u64().unwrap_or(0),
            throughput: field("/result/throughput_per_s")?.as_f64().unwrap_or(0.0),
            latency_ms: [ms("p50_us")?, ms("p90_us")?, ms("p99_us")?, ms("p999_us")?],
        });
    }
    Ok(runs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Systems in the order they first appear.
fn systems(runs: &[Run]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs {
        if !out.contains(&r.system) {
            out.push(r.system.clone());
        }
    }
    out
}

fn load_font(path: Option<&Path>) -> Result<(), String> {
    let candidates: Vec<PathBuf> = match path {
        Some(p) => vec![p.to_path_buf()],
        None => FONTS.iter().map(PathBuf::from).collect(),
    };
    let (p, bytes) = candidates
        .iter()
        .find_map(|p| std::fs::read(p).ok().map(|b| (p, b)))
        .ok_or("no TrueType font found for the labels; install fonts-dejavu-core or pass --font")?;
    // The plotting library keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{} is not a usable font", p.display()))
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing: {e}")
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(0x44, 0x44, 0x44),
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
    ];
    C[i % C.len()]
}

/// Draws the legend and writes the file.
fn finish<'a, X: Ranged, Y: Ranged>(
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
) -> Result<bool, String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(true)
}

/// A system's line: its colour index, its name and its (clients, requests/s) points.
type Line<'a> = (usize, &'a str, Vec<(u64, f64)>);

/// `bench`'s throughput against clients, one line per system.
fn throughput_chart(runs: &[Run], bench: &str, out: &Path) -> Result<bool, String> {
    let mut points: BTreeMap<&str, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.is_charted(bench)) {
        points
            .entry(&r.system)
            .or_default()
            .entry(r.clients.max(1))
            .or_default()
            .push(r.throughput);
    }
    if points.is_empty() {
        return Ok(false);
    }
    let lines: Vec<Line<'_>> = systems(runs)
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let p = points.get(s.as_str())?;
            let name = points.get_key_value(s.as_str())?.0;
            Some((
                i,
                *name,
                p.iter().map(|(c, v)| (*c, median(v.clone()))).collect(),
            ))
        })
        .collect();
    let x_max = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.0))
        .max()
        .unwrap_or(1);
    let y_max = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let root = BitMapBackend::new(out, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{bench} throughput by client count (medians)"),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((1u64..x_max.max(2)).log_scale(), 0.0..y_max * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("requests/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for (i, name, pts) in &lines {
        let c = color(*i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    finish(chart, &root)
}

/// Latency percentiles of `workload`, a group of bars per system.
fn latency_chart(runs: &[Run], workload: &str, out: &Path) -> Result<bool, String> {
    let names = systems(runs);
    let groups: Vec<(String, [f64; 4])> = names
        .iter()
        .filter_map(|s| {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| &r.system == s && r.workload == workload)
                .collect();
            if mine.is_empty() {
                return None;
            }
            let q = |k: usize| median(mine.iter().map(|r| r.latency_ms[k]).collect());
            Some((s.clone(), [q(0), q(1), q(2), q(3)]))
        })
        .collect();
    if groups.is_empty() {
        return Ok(false);
    }
    const SLOTS: usize = 5;
    let y_max = groups.iter().flat_map(|g| g.1).fold(0.01, f64::max);
    let y_min = groups
        .iter()
        .flat_map(|g| g.1)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(y_max)
        / 2.0;
    let root = BitMapBackend::new(out, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("latency percentiles: {workload} (medians)"),
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0..groups.len() * SLOTS).into_segmented(),
            (y_min..y_max * 2.0).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(groups.len() * SLOTS)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if i % SLOTS == 1 => {
                labels.get(i / SLOTS).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .y_desc("ms (log scale)")
        .y_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(err)?;
    const QUANTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];
    for (k, q) in QUANTILES.iter().enumerate() {
        let c = color(k + 1);
        chart
            .draw_series(groups.iter().enumerate().map(|(g, (_, v))| {
                let slot = g * SLOTS + k;
                Rectangle::new(
                    [
                        (SegmentValue::Exact(slot), y_min),
                        (SegmentValue::Exact(slot + 1), v[k].max(y_min)),
                    ],
                    c.filled(),
                )
            }))
            .map_err(err)?
            .label(*q)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    finish(chart, &root)
}

/// The `bench` workload (256 B values) with the most clients.
fn default_latency_workload(runs: &[Run], bench: &str) -> Option<String> {
    runs.iter()
        .filter(|r| r.is_charted(bench))
        .min_by_key(|r| std::cmp::Reverse(r.clients))
        .or_else(|| runs.first())
        .map(|r| r.workload.clone())
}

/// Draws the charts; prints the files written.
pub fn run(a: &PlotArgs) -> Result<(), String> {
    let text =
        std::fs::read_to_string(&a.input).map_err(|e| format!("{}: {e}", a.input.display()))?;
    let runs = parse(&text)?;
    if runs.is_empty() {
        return Err(format!("{} holds no results", a.input.display()));
    }
    load_font(a.font.as_deref())?;
    std::fs::create_dir_all(&a.out_dir).map_err(|e| format!("{}: {e}", a.out_dir.display()))?;
    let tput = a.out_dir.join("throughput_vs_clients.png");
    if throughput_chart(&runs, &a.bench, &tput)? {
        println!("{}", tput.display());
    }
    let workload = a
        .latency_workload
        .clone()
        .or_else(|| default_latency_workload(&runs, &a.bench))
        .unwrap_or_default();
    let lat = a.out_dir.join("latency_percentiles.png");
    if latency_chart(&runs, &workload, &lat)? {
        println!("{}", lat.display());
    } else {
        return Err(format!("no results for workload {workload:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(system: &str, workload: &str, clients: u64, tput: f64, p99_us: f64) -> String {
        bench_line("put", system, workload, clients, tput, p99_us)
    }

    fn bench_line(
        bench: &str,
        system: &str,
        workload: &str,
        clients: u64,
        tput: f64,
        p99_us: f64,
    ) -> String {
        serde_json::json!({
            "system": system, "workload": workload, "repeat": 1,
            "result": {
                "bench": bench, "val_size": 256,
                "clients": clients, "throughput_per_s": tput,
                "latency": {"p50_us": p99_us / 4.0, "p90_us": p99_us / 2.0,
                            "p99_us": p99_us, "p999_us": p99_us * 2.0}
            }
        })
        .to_string()
    }

    #[test]
    fn charts_are_drawn_from_results() {
        let mut lines = Vec::new();
        for (s, k) in [("etcd1", 1.0), ("raft1", 1.5), ("zab1", 1.4)] {
            for c in [1u64, 10, 100, 1000] {
                lines.push(line(
                    s,
                    &format!("sweep put {c} clients"),
                    c,
                    k * 100.0 * (c as f64).sqrt(),
                    900.0,
                ));
            }
            lines.push(line(
                s,
                "put 100 conns 1000 clients",
                1000,
                k * 3000.0,
                8000.0 / k,
            ));
        }
        drawn(&lines, "put");
    }

    /// Draws `bench`'s charts from `lines`; both must be PNGs with content.
    fn drawn(lines: &[String], bench: &str) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("results.jsonl");
        std::fs::write(&input, lines.join("\n")).unwrap();
        let out_dir = dir.path().join("plots");
        run(&PlotArgs {
            input,
            out_dir: out_dir.clone(),
            latency_workload: None,
            font: None,
            bench: bench.into(),
        })
        .unwrap();
        for f in ["throughput_vs_clients.png", "latency_percentiles.png"] {
            let b = std::fs::read(out_dir.join(f)).unwrap();
            assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{f} is a PNG");
            assert!(b.len() > 10_000, "{f} has content ({} bytes)", b.len());
        }
    }

    /// ZooKeeper's workloads chart by their bench name, ZooKeeper's own line beside.
    #[test]
    fn zookeeper_workloads_chart_by_their_bench() {
        let mut lines = Vec::new();
        for (s, k) in [("zk1", 1.0), ("raft1", 1.6)] {
            lines.push(bench_line(
                "zk-set",
                s,
                "set 1 session 1 client",
                1,
                k * 2000.0,
                900.0,
            ));
            lines.push(bench_line(
                "zk-set",
                s,
                "set 100 sessions 1000 clients",
                1000,
                k * 35000.0,
                60000.0 / k,
            ));
        }
        drawn(&lines, "zk-set");
    }

    #[test]
    fn bad_results_are_clear_errors() {
        assert!(parse("{\"system\": 1").unwrap_err().contains("line 1"));
        assert!(
            parse("{\"system\":\"a\",\"workload\":\"w\"}")
                .unwrap_err()
                .contains("no /result")
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
