//! Running one benchmark binary: its output, its exit status and its peak
//! resident set size, as the kernel accounted it (`wait4`'s `rusage`).

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What one run of a binary measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    /// Throughput the binary printed (`<N> ops/s`).
    pub ops_per_sec: f64,
    /// The child's peak RSS in bytes: the `peak_rss_kib=` it printed (its
    /// own `VmHWM`) or, when it printed none, `wait4`'s `ru_maxrss`.
    pub peak_rss_bytes: u64,
    /// Whether `peak_rss_bytes` is the child's own figure. `ru_maxrss`
    /// never reads below the RSS of the process that forked the child.
    pub peak_rss_from_child: bool,
    /// Threads created, for the Larson binaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_created: Option<u64>,
    /// Wall-clock seconds of the whole process.
    pub wall_seconds: f64,
    /// The result line the binary printed.
    pub line: String,
}

/// Runs `bin args` with `env` added (and no `LD_PRELOAD` but one in
/// `env`), killing it after `timeout`. Returns the sample and the child's
/// stderr; an error says why there is no sample (start failure, signal,
/// non-zero exit, no `ops/s` line), with the child's stderr.
pub fn run(
    bin: &Path,
    args: &[String],
    env: &[(&str, OsString)],
    timeout: Duration,
) -> Result<(Sample, String), String> {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("LD_PRELOAD")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });

    let mut timed_out = false;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data; all-zero is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if timed_out { 0 } else { libc::WNOHANG };
        // SAFETY: `pid` is our child, not yet reaped (std's `Child` never
        // waits for it: we reap it here); the out-pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("wait4 failed: {e}"));
        }
        if start.elapsed() > timeout {
            // SAFETY: sending a signal to our own, unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            timed_out = true;
            continue;
        }
        thread::sleep(Duration::from_millis(5));
    };
    let wall_seconds = start.elapsed().as_secs_f64();
    drop(child);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let tail = |s: &str| {
        s.trim()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ")
    };

    if timed_out {
        return Err(format!("killed after {} s (timeout)", timeout.as_secs()));
    }
    if libc::WIFSIGNALED(status) {
        return Err(format!(
            "killed by signal {}; stderr: {}",
            libc::WTERMSIG(status),
            tail(&stderr)
        ));
    }
    if libc::WEXITSTATUS(status) != 0 {
        return Err(format!(
            "exit status {}; stderr: {}",
            libc::WEXITSTATUS(status),
            tail(&stderr)
        ));
    }
    let line = stdout
        .lines()
        .find(|l| l.contains(" ops/s"))
        .ok_or_else(|| format!("no `ops/s` line in the output: {}", tail(&stdout)))?;
    let ops_per_sec = number_before(line, " ops/s")
        .ok_or_else(|| format!("cannot read the throughput of {line:?}"))?;
    let threads_created = number_after(line, "threads created=");
    let own_peak_kib = number_after(line, "peak_rss_kib=");
    let peak_rss_from_child = own_peak_kib.is_some();
    let peak_rss_bytes =
        own_peak_kib.unwrap_or_else(|| u64::try_from(usage.ru_maxrss).unwrap_or(0)) * 1024;
    let sample = Sample {
        ops_per_sec,
        peak_rss_bytes,
        peak_rss_from_child,
        threads_created,
        wall_seconds,
        line: line.trim().to_string(),
    };
    Ok((sample, stderr))
}

/// The whole number right after `marker` in `line`.
fn number_after(line: &str, marker: &str) -> Option<u64> {
    let rest = line.split(marker).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The number right before `marker` in `line`.
fn number_before(line: &str, marker: &str) -> Option<f64> {
    let head = &line[..line.find(marker)?];
    head.rsplit(|c: char| c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::{number_after, number_before};

    #[test]
    fn reads_the_figure_before_ops_per_second() {
        let line = "larson: system: 1234567 ops/s (2469134 ops in 2.000 s), threads created=7";
        assert_eq!(number_before(line, " ops/s"), Some(1_234_567.0));
        assert_eq!(number_before("nothing here", " ops/s"), None);
    }

    #[test]
    fn reads_the_figures_after_their_keys() {
        let line = "larson: mimalloc: 5 ops/s (10 ops in 2.000 s), threads created=7 joined=7 \
                    ops/thread=1, peak_rss_kib=20480";
        assert_eq!(number_after(line, "threads created="), Some(7));
        assert_eq!(number_after(line, "peak_rss_kib="), Some(20480));
        assert_eq!(number_after(line, "absent="), None);
        assert_eq!(number_after("peak_rss_kib=", "peak_rss_kib="), None);
    }
}
