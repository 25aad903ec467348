//! The results: medians, ratios, the A/B verdict, and their renderings as
//! a terminal table, Markdown, an SVG bar chart and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::child::Sample;
use super::suite::{BASELINE, FAST_PATH, REFERENCE, SHIP_RATIO};

/// Everything one `cargo xtask bench` measured.
#[derive(Serialize)]
pub struct Report {
    /// When the run started (UTC, from `date -u`).
    pub date: String,
    /// The command line that produced it.
    pub command: String,
    /// CPU cores available to the benchmarks.
    pub cores: usize,
    /// The CPU model, from `/proc/cpuinfo` where readable.
    pub cpu: String,
    /// Runs per allocator and workload.
    pub runs: usize,
    /// The peak RSS of the process that started the runs (its `VmHWM`). `wait4`'s
    /// `ru_maxrss` of a child counts the memory of the process it was
    /// forked from until its `exec`, so no child reads below this: values
    /// at or under it are shown as `<=` it.
    pub rss_floor_bytes: u64,
    /// One entry per workload, in the order run.
    pub workloads: Vec<WorkloadResult>,
}

/// The results of one workload.
#[derive(Serialize)]
pub struct WorkloadResult {
    /// The workload (binary) name.
    pub workload: String,
    /// What it measures.
    pub what: String,
    /// The binary and arguments, as run (`<workload> args...`).
    pub command: String,
    /// One entry per allocator, in table order.
    pub allocators: Vec<AllocatorResult>,
}

/// The results of one allocator on one workload.
#[derive(Serialize)]
pub struct AllocatorResult {
    /// The allocator's name.
    pub allocator: String,
    /// Every successful run, in the order run.
    pub runs: Vec<Sample>,
    /// Why runs failed, if any did.
    pub failures: Vec<String>,
    /// Median throughput over the runs.
    pub median_ops_per_sec: Option<f64>,
    /// Median peak RSS over the runs, in bytes.
    pub median_peak_rss_bytes: Option<u64>,
    /// Whether every run reported its own peak RSS (its `VmHWM`); if not,
    /// the median may be `wait4`'s figure, which has a floor.
    pub peak_rss_from_child: bool,
    /// Median threads created (Larson binaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_threads_created: Option<u64>,
    /// Median throughput over that of `hakmem+box-refactor`.
    pub ratio_vs_box_refactor: Option<f64>,
    /// Median throughput over that of mimalloc.
    pub ratio_vs_mimalloc: Option<f64>,
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

impl WorkloadResult {
    /// Fills in medians and ratios once every run is in.
    pub fn finish(&mut self) {
        for a in &mut self.allocators {
            let ops: Vec<f64> = a.runs.iter().map(|r| r.ops_per_sec).collect();
            let rss: Vec<f64> = a.runs.iter().map(|r| r.peak_rss_bytes as f64).collect();
            let threads: Vec<f64> = a
                .runs
                .iter()
                .filter_map(|r| r.threads_created.map(|t| t as f64))
                .collect();
            a.median_ops_per_sec = median(&ops);
            a.median_peak_rss_bytes = median(&rss).map(|x| x as u64);
            a.peak_rss_from_child = a.runs.iter().all(|r| r.peak_rss_from_child);
            a.median_threads_created = median(&threads).map(|x| x as u64);
        }
        let of = |name: &str| {
            self.allocators
                .iter()
                .find(|a| a.allocator == name)
                .and_then(|a| a.median_ops_per_sec)
        };
        let (base, reference) = (of(BASELINE), of(REFERENCE));
        for a in &mut self.allocators {
            let m = a.median_ops_per_sec;
            a.ratio_vs_box_refactor = m.zip(base).map(|(m, b)| m / b);
            a.ratio_vs_mimalloc = m.zip(reference).map(|(m, r)| m / r);
        }
    }

    /// The original's decision rule applied to this workload, if both
    /// sides of the A/B ran.
    pub fn verdict(&self) -> Option<String> {
        let fast = self.allocators.iter().find(|a| a.allocator == FAST_PATH)?;
        let r = fast.ratio_vs_box_refactor?;
        let pct = (r - 1.0) * 100.0;
        let decision = if r >= SHIP_RATIO {
            "SHIP the fast path"
        } else if r > 1.0 {
            "DON'T SHIP: faster, but short of the promised 1.2x"
        } else {
            "DON'T SHIP: the fast path is not faster"
        };
        Some(format!(
            "A/B (the original's rule: does the fast path beat the box path by the 20-40% it \
             promised? Fix #2 > Fix #1 by >= {SHIP_RATIO}x -> ship): Fix #2 ({FAST_PATH}) / \
             Fix #1 ({BASELINE}) = {r:.2}x ({pct:+.0}%) -> {decision}"
        ))
    }

    fn rows(&self, floor: u64) -> Vec<[String; 7]> {
        self.allocators
            .iter()
            .map(|a| {
                let runs = a
                    .runs
                    .iter()
                    .map(|r| mops(r.ops_per_sec))
                    .chain(a.failures.iter().map(|_| "FAIL".to_string()))
                    .collect::<Vec<_>>()
                    .join(" ");
                [
                    a.allocator.clone(),
                    a.median_ops_per_sec.map_or("-".into(), mops),
                    a.median_peak_rss_bytes.map_or("-".into(), |b| {
                        rss(b, if a.peak_rss_from_child { 0 } else { floor })
                    }),
                    a.ratio_vs_box_refactor.map_or("-".into(), ratio),
                    a.ratio_vs_mimalloc.map_or("-".into(), ratio),
                    a.median_threads_created
                        .map_or("-".into(), |t| t.to_string()),
                    runs,
                ]
            })
            .collect()
    }
}

const HEADERS: [&str; 7] = [
    "allocator",
    "Mops/s (median)",
    "peak RSS (median)",
    "vs hakmem+box-refactor",
    "vs mimalloc",
    "threads created",
    "runs (Mops/s)",
];

fn mops(x: f64) -> String {
    format!("{:.2}", x / 1e6)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// A peak RSS, or `<=` the floor when it does not rise above it.
fn rss(bytes: u64, floor: u64) -> String {
    if bytes <= floor {
        format!("<={}", mib(floor))
    } else {
        mib(bytes)
    }
}

fn ratio(r: f64) -> String {
    format!("{r:.2}x")
}

impl Report {
    /// The plain-text tables printed at the end of a run.
    pub fn text(&self) -> String {
        let mut s = format!(
            "peak RSS: each run's own VmHWM as it printed it (else wait4's ru_maxrss; `<=` \
             marks such values at or below its floor, the spawning process's own RSS, {})\n",
            mib(self.rss_floor_bytes)
        );
        for w in &self.workloads {
            let rows = w.rows(self.rss_floor_bytes);
            let mut width = HEADERS.map(str::len);
            for r in &rows {
                for (i, c) in r.iter().enumerate() {
                    width[i] = width[i].max(c.chars().count());
                }
            }
            let _ = writeln!(s, "\n{}: {}\n$ {}", w.workload, w.what, w.command);
            let line = |cells: &[String]| {
                let mut l = String::new();
                for (i, c) in cells.iter().enumerate() {
                    let pad = width[i] - c.chars().count();
                    if i == 0 || i == cells.len() - 1 {
                        let _ = write!(l, "{c}{}  ", " ".repeat(pad));
                    } else {
                        let _ = write!(l, "{}{c}  ", " ".repeat(pad));
                    }
                }
                l.trim_end().to_string()
            };
            let _ = writeln!(s, "{}", line(&HEADERS.map(String::from)));
            for r in &rows {
                let _ = writeln!(s, "{}", line(r));
            }
            if let Some(v) = w.verdict() {
                let _ = writeln!(s, "{v}");
            }
        }
        s
    }

    /// The Markdown page (`results.md`).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# hakmem benchmark results\n");
        let _ = writeln!(
            s,
            "- date: {}\n- command: `{}`\n- machine: {} CPU cores ({})\n- runs per allocator: {} \
             (interleaved; medians shown)\n- peak RSS: each run's own `VmHWM`, printed by the \
             binary at its end (a binary that prints none: `wait4`'s `ru_maxrss`, where `<=` \
             marks values at or below the floor of that method, the RSS of the spawning \
             process, {})\n\n![throughput](results.svg)",
            self.date,
            self.command,
            self.cores,
            self.cpu,
            self.runs,
            mib(self.rss_floor_bytes)
        );
        for w in &self.workloads {
            let _ = writeln!(s, "\n## {}\n\n{}  \n`{}`\n", w.workload, w.what, w.command);
            let _ = writeln!(s, "| {} |", HEADERS.join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(HEADERS.len() - 2) + "---|");
            for r in w.rows(self.rss_floor_bytes) {
                let _ = writeln!(s, "| {} |", r.join(" | "));
            }
            if let Some(v) = w.verdict() {
                let _ = writeln!(s, "\n{v}");
            }
        }
        s
    }

    /// A horizontal bar chart of median throughput, one panel per workload.
    pub fn svg(&self) -> String {
        const WIDTH: f64 = 960.0;
        const LABEL: f64 = 240.0;
        const BAR_MAX: f64 = 480.0;
        const ROW: f64 = 24.0;
        let mut body = String::new();
        let mut y = 40.0;
        for w in &self.workloads {
            let _ = writeln!(
                body,
                r#"<text x="10" y="{y}" font-weight="bold">{} — {}</text>"#,
                xml(&w.workload),
                xml(&w.command)
            );
            y += 12.0;
            let max = w
                .allocators
                .iter()
                .filter_map(|a| a.median_ops_per_sec)
                .fold(0.0, f64::max);
            for a in &w.allocators {
                let v = a.median_ops_per_sec.unwrap_or(0.0);
                let len = if max > 0.0 { v / max * BAR_MAX } else { 0.0 };
                let floor = if a.peak_rss_from_child {
                    0
                } else {
                    self.rss_floor_bytes
                };
                let label = match (a.median_ops_per_sec, a.median_peak_rss_bytes) {
                    (Some(o), Some(r)) => format!("{} Mops/s, {}", mops(o), rss(r, floor)),
                    _ => "failed".into(),
                };
                let _ = writeln!(
                    body,
                    r#"<text x="{lx}" y="{ty}" text-anchor="end">{name}</text><rect x="{LABEL}" y="{y}" width="{len:.1}" height="{h}" fill="{color}"/><text x="{vx:.1}" y="{ty}">{label}</text>"#,
                    lx = LABEL - 8.0,
                    ty = y + 15.0,
                    name = xml(&a.allocator),
                    h = ROW - 6.0,
                    color = color(&a.allocator),
                    vx = LABEL + len + 6.0,
                    label = xml(&label),
                );
                y += ROW;
            }
            y += 28.0;
        }
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="15" font-weight="bold">hakmem: median throughput (longer is better); {cores} CPU cores, {runs} runs each, {date}</text>
{body}</svg>
"#,
            h = y,
            cores = self.cores,
            runs = self.runs,
            date = xml(&self.date),
        )
    }
}

fn color(allocator: &str) -> &'static str {
    match allocator {
        "hakmem+box-refactor+fast-path" => "#d9480f",
        "hakmem+box-refactor" => "#f76707",
        "hakmem+fast-path" => "#ffa94d",
        "hakmem" => "#ffd8a8",
        "system" => "#868e96",
        "mimalloc" => "#1c7ed6",
        "mimalloc+secure" => "#74c0fc",
        "jemalloc" => "#37b24d",
        _ => "#495057",
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
