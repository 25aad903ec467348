//! The results: medians, ratios, the A/B verdict, and their renderings as
//! a terminal table, Markdown, an SVG bar chart and JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::child::Sample;
use super::suite::{FAST_PATH, SHIP_RATIO};

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
    /// The git commit of the tree measured (and whether `crates/` had
    /// uncommitted changes).
    pub tree: String,
    /// What each allocator of the C set is (library, version, how built).
    pub allocator_notes: Vec<String>,
    /// Allocators skipped or replaced, and why.
    pub notes: Vec<String>,
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
    /// Its set: `rust` (a binary per allocator) or `c` (preloaded).
    pub set: String,
    /// The allocator of the first ratio column.
    pub baseline: String,
    /// The allocator of the second ratio column.
    pub reference: String,
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
    /// Median throughput over that of the workload's `baseline`
    /// (`hakmem+box-refactor` in the Rust set, `hakmem` in the C set).
    pub ratio_vs_baseline: Option<f64>,
    /// Median throughput over that of the workload's `reference`
    /// (mimalloc).
    pub ratio_vs_reference: Option<f64>,
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
        let (base, reference) = (of(&self.baseline), of(&self.reference));
        for a in &mut self.allocators {
            let m = a.median_ops_per_sec;
            a.ratio_vs_baseline = m.zip(base).map(|(m, b)| m / b);
            a.ratio_vs_reference = m.zip(reference).map(|(m, r)| m / r);
        }
    }

    /// The original's decision rule applied to this workload, if both
    /// sides of the A/B ran.
    pub fn verdict(&self) -> Option<String> {
        let fast = self.allocators.iter().find(|a| a.allocator == FAST_PATH)?;
        let r = fast.ratio_vs_baseline?;
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
             Fix #1 ({}) = {r:.2}x ({pct:+.0}%) -> {decision}",
            self.baseline
        ))
    }

    /// The C set's summary: the baseline (hakmem) against the reference
    /// (mimalloc) and against the fastest of jemalloc, tcmalloc and glibc,
    /// speed and peak RSS.
    pub fn comparison(&self) -> Option<String> {
        if self.set != "c" {
            return None;
        }
        let of = |name: &str| {
            self.allocators
                .iter()
                .find(|a| a.allocator == name)
                .filter(|a| a.median_ops_per_sec.is_some())
        };
        let base = of(&self.baseline)?;
        let (b, b_rss) = (base.median_ops_per_sec?, base.median_peak_rss_bytes?);
        let versus = |a: &AllocatorResult| {
            let o = a.median_ops_per_sec.unwrap_or(0.0);
            let r = a.median_peak_rss_bytes.unwrap_or(0);
            format!(
                "{:.2}x {} (peak RSS {} / {})",
                b / o,
                a.allocator,
                mib(b_rss),
                mib(r)
            )
        };
        let mut parts = Vec::new();
        if let Some(r) = of(&self.reference) {
            parts.push(versus(r));
        }
        let best = self
            .allocators
            .iter()
            .filter(|a| {
                ["jemalloc", "tcmalloc", "glibc"]
                    .iter()
                    .any(|p| a.allocator.starts_with(p))
            })
            .filter(|a| a.median_ops_per_sec.is_some())
            .max_by(|x, y| {
                let (a, b) = (x.median_ops_per_sec, y.median_ops_per_sec);
                a.unwrap_or(0.0).total_cmp(&b.unwrap_or(0.0))
            });
        if let Some(best) = best {
            parts.push(format!(
                "{} (the fastest of jemalloc, tcmalloc and glibc)",
                versus(best)
            ));
        }
        (!parts.is_empty()).then(|| format!("{}: {}", self.baseline, parts.join("; ")))
    }

    fn headers(&self) -> [String; 7] {
        [
            "allocator".into(),
            "Mops/s (median)".into(),
            "peak RSS (median)".into(),
            format!("vs {}", self.baseline),
            format!("vs {}", self.reference),
            "threads created".into(),
            "runs (Mops/s)".into(),
        ]
    }

    /// The lines printed under the table: the verdict or the comparison.
    fn summary(&self) -> Vec<String> {
        self.verdict()
            .into_iter()
            .chain(self.comparison())
            .collect()
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
                    a.ratio_vs_baseline.map_or("-".into(), ratio),
                    a.ratio_vs_reference.map_or("-".into(), ratio),
                    a.median_threads_created
                        .map_or("-".into(), |t| t.to_string()),
                    runs,
                ]
            })
            .collect()
    }
}

/// Millions of ops a second: two decimals, or below 1 as many as three
/// significant digits need (c-large's thousands of ops a second would all
/// read 0.01).
fn mops(x: f64) -> String {
    let m = x / 1e6;
    let decimals = if m >= 1.0 || m <= 0.0 {
        2
    } else {
        ((2.0 - m.log10().floor()) as usize).min(9)
    };
    format!("{m:.decimals$}")
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
        for n in self.allocator_notes.iter().chain(&self.notes) {
            let _ = writeln!(s, "- {n}");
        }
        for w in &self.workloads {
            let rows = w.rows(self.rss_floor_bytes);
            let headers = w.headers();
            let mut width = headers.clone().map(|h| h.len());
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
            let _ = writeln!(s, "{}", line(&headers));
            for r in &rows {
                let _ = writeln!(s, "{}", line(r));
            }
            for v in w.summary() {
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
            "- date: {}\n- command: `{}`\n- tree: {}\n- machine: {} CPU cores ({})\n- runs per \
             allocator: {} \
             (interleaved; medians shown)\n- peak RSS: each run's own `VmHWM`, printed by the \
             binary at its end (a binary that prints none: `wait4`'s `ru_maxrss`, where `<=` \
             marks values at or below the floor of that method, the RSS of the spawning \
             process, {})\n\n![throughput](results.svg)",
            self.date,
            self.command,
            self.tree,
            self.cores,
            self.cpu,
            self.runs,
            mib(self.rss_floor_bytes)
        );
        if !self.allocator_notes.is_empty() {
            let _ = writeln!(
                s,
                "\nThe C set's allocators (each run checked to have used its own):\n"
            );
            for n in &self.allocator_notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        for w in &self.workloads {
            let headers = w.headers();
            let _ = writeln!(s, "\n## {}\n\n{}  \n`{}`\n", w.workload, w.what, w.command);
            let _ = writeln!(s, "| {} |", headers.join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(headers.len() - 2) + "---|");
            for r in w.rows(self.rss_floor_bytes) {
                let _ = writeln!(s, "| {} |", r.join(" | "));
            }
            for v in w.summary() {
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
                    color = color(&w.set, &a.allocator),
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

fn color(set: &str, allocator: &str) -> &'static str {
    if set == "c" && allocator == "hakmem" {
        return "#d9480f";
    }
    match allocator {
        "hakmem+box-refactor+fast-path" => "#d9480f",
        "hakmem+box-refactor" => "#f76707",
        "hakmem+fast-path" => "#ffa94d",
        "hakmem" => "#ffd8a8",
        "hakmem+box-refactor+fast-path+bg-purge" => "#c92a2a",
        "system" => "#868e96",
        "mimalloc" => "#1c7ed6",
        "mimalloc+secure" => "#74c0fc",
        "jemalloc" => "#37b24d",
        "hakmem+secure" => "#ffa94d",
        "glibc" => "#868e96",
        "mimalloc-debian" => "#a5d8ff",
        "jemalloc-debian" => "#8ce99a",
        "tcmalloc-debian" => "#9c36b5",
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
    use super::{median, mops};

    #[test]
    fn rates_below_a_million_keep_three_significant_digits() {
        assert_eq!(mops(121_530_000.0), "121.53");
        assert_eq!(mops(1_000_000.0), "1.00");
        assert_eq!(mops(500_000.0), "0.500");
        assert_eq!(mops(8_204.0), "0.00820");
        assert_eq!(mops(0.0), "0.00");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
