//! Memory returned while the process is idle (`HAKMEM_BACKGROUND_PURGE`),
//! measured as a new user would: a C program under `LD_PRELOAD`
//! (`tests/c/idle_purge.c`), its RSS read from `/proc/self/statm` and its
//! threads from `/proc/self/status`, with nothing but system calls after
//! its last `free`.
//!
//! - With the option on, a program whose main thread allocates 512 MiB in
//!   small, large and huge blocks, frees them all and then only sleeps is
//!   back within a few MiB of its RSS before the first allocation within
//!   two purge delays.
//! - With it off, no thread is ever created; with it on, a program that
//!   ends quickly gets none either.
//! - A `fork` while the purge thread works leaves a child with one thread
//!   that allocates, frees, gets a purge thread of its own and exits.
//! - A seccomp filter that refuses `clone`: one failed attempt, no thread,
//!   the program runs on.
//!
//! The library is built as `preload.rs` builds it (its own target
//! directory per feature set, release profile); the programs run one at a
//! time (a lock), since the figures are timings on a shared machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{have, library};

/// The purge delay the programs run with (the default).
const DELAY_MS: u64 = 100;
/// "Within a few MiB" of the RSS before the first allocation.
const BOUND_KIB: i64 = 4 << 10;
/// Scheduling slack on a loaded machine, on top of two purge delays.
const SLACK_MS: u64 = 150;

/// One program at a time: they time themselves.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `tests/c/idle_purge.c`, compiled once.
fn program() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| common::program("idle_purge.c", "cc", &["-pthread"]))
}

/// Runs the program under the library with `HAKMEM_STATS=1`, the options
/// given and no others; kills it after `limit`.
fn run(args: &[&str], options: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(program());
    cmd.args(args);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("HAKMEM_") {
            cmd.env_remove(var);
        }
    }
    cmd.env("LD_PRELOAD", library())
        .env("HAKMEM_STATS", "1")
        .envs(options.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the program starts");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "idle_purge {args:?} ran past {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "idle_purge {args:?}: {:?}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `name=value` pairs of a line.
fn fields(line: &str) -> Vec<(&str, i64)> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
        .collect()
}

fn field(line: &str, name: &str) -> i64 {
    fields(line)
        .into_iter()
        .find(|(k, _)| *k == name)
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .1
}

/// The purge-thread counters of the exit statistics.
fn purge_stats(stderr: &str) -> (i64, i64, i64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("purge_threads="))
        .unwrap_or_else(|| panic!("no purge_threads in the statistics: {stderr}"));
    (
        field(line, "purge_threads"),
        field(line, "purge_thread_failures"),
        field(line, "purge_passes"),
    )
}

/// One burst and its watch: the burst's line and the samples (ms, KiB,
/// threads).
struct Watch {
    burst: String,
    samples: Vec<(i64, i64, i64)>,
}

fn watches(stdout: &str) -> Vec<Watch> {
    let mut out: Vec<Watch> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("before_kib=") {
            out.push(Watch {
                burst: line.to_owned(),
                samples: Vec::new(),
            });
        } else if line.starts_with("at_ms=") {
            let w = out.last_mut().expect("a burst before the samples");
            w.samples.push((
                field(line, "at_ms"),
                field(line, "rss_kib"),
                field(line, "threads"),
            ));
        }
    }
    out
}

#[test]
fn with_the_option_on_an_idle_process_gives_its_memory_back_within_two_delays() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let _serial = serial();
    let delay = DELAY_MS.to_string();
    // 256 MiB of 64 B blocks, 192 MiB of 256 KiB blocks, 64 MiB of 4 MiB
    // blocks; the last allocated freed first; a second of sleep.
    let out = run(
        &["idle", "256", "192", "64", "seq", "1000"],
        &[
            ("HAKMEM_BACKGROUND_PURGE", "1"),
            ("HAKMEM_PURGE_DELAY_MS", &delay),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let w = watches(&stdout).pop().expect("a burst");
    let before = field(&w.burst, "before_kib");
    let peak = field(&w.burst, "peak_kib");
    let freed = field(&w.burst, "freed_kib");
    let back = w
        .samples
        .iter()
        .find(|s| s.1 <= before + BOUND_KIB)
        .copied();
    let last = *w.samples.last().expect("samples");
    let (threads, failures, passes) = purge_stats(&stderr);
    eprintln!(
        "idle process, option on: RSS {before} KiB before the first allocation, {peak} KiB \
         at the peak, {freed} KiB right after the last free; back within {BOUND_KIB} KiB \
         at {:?} ms; {} KiB after {} ms ({} threads); purge threads {threads}, failures \
         {failures}, passes {passes}",
        back.map(|s| s.0),
        last.1,
        last.0,
        last.2
    );
    assert!(
        peak >= before + (400 << 10),
        "the burst was smaller than meant"
    );
    let (at, _, _) = back.unwrap_or_else(|| panic!("RSS never came back:\n{stdout}"));
    assert!(
        at as u64 <= 2 * DELAY_MS + SLACK_MS,
        "RSS came back only after {at} ms:\n{stdout}"
    );
    assert!(last.1 <= before + BOUND_KIB, "RSS grew again:\n{stdout}");
    assert_eq!(last.2, 2, "the program's thread and the purge thread");
    assert_eq!((threads, failures), (1, 0));
}

#[test]
fn with_the_option_off_no_thread_is_ever_created() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let _serial = serial();
    let out = run(
        &["idle", "256", "192", "64", "seq", "400"],
        &[],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let w = watches(&stdout).pop().expect("a burst");
    assert_eq!(field(&w.burst, "threads"), 1, "{stdout}");
    assert!(
        w.samples.iter().all(|s| s.2 == 1),
        "a thread appeared:\n{stdout}"
    );
    let last = w.samples.last().expect("samples");
    eprintln!(
        "idle process, option off: RSS {} KiB before, {} KiB {} ms after the last free \
         (one thread all along)",
        field(&w.burst, "before_kib"),
        last.1,
        last.0
    );
    assert_eq!(
        purge_stats(&String::from_utf8_lossy(&out.stderr)),
        (0, 0, 0)
    );
}

#[test]
fn a_program_that_ends_quickly_gets_no_thread() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let _serial = serial();
    let out = run(
        &["short"],
        &[("HAKMEM_BACKGROUND_PURGE", "1")],
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("short threads=1"), "{stdout}");
    assert_eq!(purge_stats(&String::from_utf8_lossy(&out.stderr)).0, 0);
}

#[test]
fn fork_while_the_purge_thread_works() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let _serial = serial();
    // A short delay, so that the parent's thread is in a pass most of the
    // time and forks land in the middle of passes; 16 forks, each child
    // (and its own child, a daemon's second fork) with 2 s to see its own
    // thread and its RSS back.
    let out = run(
        &["fork", "64", "64", "32", "16", "2000"],
        &[
            ("HAKMEM_BACKGROUND_PURGE", "1"),
            ("HAKMEM_PURGE_DELAY_MS", "20"),
        ],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("fork ok"), "{stdout}\n{stderr}");
    let (threads, failures, passes) = purge_stats(&stderr);
    assert_eq!((threads, failures), (1, 0), "{stderr}");
    assert!(passes > 10, "the parent's thread ran {passes} passes");
}

#[test]
fn a_sandbox_that_refuses_threads_gets_one_attempt_and_no_thread() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let _serial = serial();
    let out = run(
        &["seccomp", "64", "64", "16", "3", "300"],
        &[("HAKMEM_BACKGROUND_PURGE", "1")],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.contains("seccomp unavailable") {
        eprintln!("seccomp filters unavailable here: skipped");
        return;
    }
    let all = watches(&stdout);
    assert_eq!(all.len(), 3, "{stdout}");
    assert!(
        all.iter().all(|w| w.samples.iter().all(|s| s.2 == 1)),
        "a thread appeared:\n{stdout}"
    );
    let (threads, failures, passes) = purge_stats(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        (threads, failures, passes),
        (0, 1, 0),
        "tried more than once"
    );
}
