//! The sampled heap profiler (`HAKMEM_PROF=1`, docs/PROFILING.md) in a
//! Rust program with hakmem as its global allocator: a child process (this
//! test binary, re-run with `HEAP_PROFILE_CHILD` set) allocates from sites
//! whose bytes it knows, dumps a profile through `hakmem::prof_dump`, and
//! prints the truth and its sites' addresses. The parent reads the profile
//! (raw return addresses) and the sites' extents from the symbol table
//! (`nm -S`), and checks the estimates: live bytes by site within 10%,
//! the site that freed everything at zero live bytes and found by its
//! total allocated, the whole live estimate within 10%; and that dumps
//! while four threads allocate (and `SIGUSR2` profiles) neither deadlock
//! nor lose samples.
//!
//! The mean sampling interval is 8 KiB here (512 KiB by default), for
//! thousands of samples: the estimates' spread is then a few percent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

const CHILD_ENV: &str = "HEAP_PROFILE_CHILD";
const SAMPLE: usize = 8 << 10;

/// Bytes the profile counts for a block of `size` requested bytes: small
/// blocks their size class's (the slack canary's bytes included in
/// hardened builds), large ones what was asked for.
fn counted(size: usize) -> usize {
    let tail = hakmem::SMALL_MAX - hakmem::SMALL_REQUEST_MAX;
    if size <= hakmem::SMALL_REQUEST_MAX {
        hakmem_tiny_box::class_size(hakmem_tiny_box::size_to_class(size + tail))
    } else {
        size
    }
}

/// Allocates `n` blocks of `size` bytes onto `out` (reserved by the
/// caller, so that no allocation of the vector's own lands here).
#[inline(never)]
fn fill(out: &mut Vec<Vec<u8>>, n: usize, size: usize) -> usize {
    let mut truth = 0;
    for i in 0..n {
        let mut v = Vec::with_capacity(size);
        v.push(i as u8);
        out.push(std::hint::black_box(v));
        truth += counted(size);
    }
    truth
}

/// Keeps 80% of the live bytes: small blocks of 1000 B and large ones of
/// 200 KiB.
#[no_mangle]
#[inline(never)]
pub fn hp_site_keep80(out: &mut Vec<Vec<u8>>) -> usize {
    let t = fill(out, 40 << 10, 1000) + fill(out, 40, 200 << 10);
    std::hint::black_box(t)
}

/// Keeps 20%: small blocks of 250 B.
#[no_mangle]
#[inline(never)]
pub fn hp_site_keep20(out: &mut Vec<Vec<u8>>) -> usize {
    let t = fill(out, 48 << 10, 250);
    std::hint::black_box(t)
}

/// Allocates a lot and frees all of it: small blocks of 500 B and large
/// ones of 96 KiB, twice over.
#[no_mangle]
#[inline(never)]
pub fn hp_site_churn(scratch: &mut Vec<Vec<u8>>) -> usize {
    let mut t = 0;
    for _ in 0..2 {
        t += fill(scratch, 64 << 10, 500) + fill(scratch, 256, 96 << 10);
        scratch.clear();
    }
    std::hint::black_box(t)
}

/// Allocates and frees as it goes: a ring of 8 blocks of 300 B, the oldest
/// freed for each new one. The frees feed the fast cache's list, which the
/// sampling countdown must charge for the allocations they serve.
#[no_mangle]
#[inline(never)]
pub fn hp_site_pairs() -> usize {
    let mut ring: [Option<Vec<u8>>; 8] = Default::default();
    let mut t = 0;
    for i in 0..(256 << 10) {
        let mut v = Vec::with_capacity(300);
        v.push(i as u8);
        ring[i % 8] = Some(std::hint::black_box(v));
        t += counted(300);
    }
    drop(ring);
    std::hint::black_box(t)
}

/// Each of the threads' allocations: 128 B blocks, kept.
#[no_mangle]
#[inline(never)]
pub fn hp_site_thread(out: &mut Vec<Vec<u8>>, n: usize) -> usize {
    let t = fill(out, n, 128);
    std::hint::black_box(t)
}

fn dump(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert!(hakmem::prof_dump(&c), "dump to {path:?} failed");
}

fn print_site(name: &str, f: usize) {
    println!("site {name} {f:#x}");
}

fn child_sites(dir: &Path) {
    assert!(
        hakmem::prof_enabled(),
        "HAKMEM_PROF=1 did not turn the profiler on"
    );
    let mut keep80 = Vec::with_capacity(1 << 17);
    let mut keep20 = Vec::with_capacity(1 << 17);
    let mut scratch = Vec::with_capacity(1 << 17);
    let t80 = hp_site_keep80(&mut keep80);
    let tc = hp_site_churn(&mut scratch);
    let tp = hp_site_pairs();
    let t20 = hp_site_keep20(&mut keep20);
    drop(scratch);
    // Hardened builds: blocks wait in the thread's quarantine before their
    // free reaches their slab (and the profile); trim lets them go.
    if cfg!(feature = "secure") {
        hakmem::trim();
    }
    dump(&dir.join("sites.heap"));
    // The two holders are live too (large blocks, counted as asked for).
    let holders = (keep80.capacity() + keep20.capacity()) * std::mem::size_of::<Vec<u8>>();
    println!("truth keep80 {t80} keep20 {t20} churn {tc} pairs {tp} holders {holders}");
    print_site("hp_site_pairs", hp_site_pairs as fn() -> usize as usize);
    print_site(
        "hp_site_keep80",
        hp_site_keep80 as fn(&mut Vec<Vec<u8>>) -> usize as usize,
    );
    print_site(
        "hp_site_keep20",
        hp_site_keep20 as fn(&mut Vec<Vec<u8>>) -> usize as usize,
    );
    print_site(
        "hp_site_churn",
        hp_site_churn as fn(&mut Vec<Vec<u8>>) -> usize as usize,
    );
    std::hint::black_box((&keep80, &keep20));
}

fn child_threads(dir: &Path) {
    assert!(hakmem::prof_enabled());
    const THREADS: usize = 4;
    const ROUNDS: usize = 64;
    const PER_ROUND: usize = 1024;
    let done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            thread::spawn(move || {
                let mut kept = Vec::with_capacity(ROUNDS * PER_ROUND);
                let mut truth = 0;
                for _ in 0..ROUNDS {
                    truth += hp_site_thread(&mut kept, PER_ROUND);
                    // Some churn besides, freed at once.
                    let junk: Vec<Vec<u8>> = (0..256).map(|_| vec![1u8; 64]).collect();
                    drop(std::hint::black_box(junk));
                }
                (kept, truth)
            })
        })
        .collect();
    let dumper = {
        let done = done.clone();
        let dir = dir.to_path_buf();
        thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) || n < 4 {
                dump(&dir.join(format!("during.{n}.heap")));
                if n % 2 == 0 {
                    // A SIGUSR2 profile too, on whichever thread gets it.
                    // SAFETY: kill of our own process with a signal the
                    // profiler handles (HAKMEM_PROF_SIGNAL=1).
                    unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
                }
                n += 1;
                thread::sleep(std::time::Duration::from_millis(2));
            }
            n
        })
    };
    let mut kept = Vec::new();
    let mut truth = 0;
    for w in workers {
        let (k, t) = w.join().unwrap();
        kept.push(k);
        truth += t;
    }
    done.store(true, Ordering::Relaxed);
    let dumps = dumper.join().unwrap();
    dump(&dir.join("after.heap"));
    println!("truth thread {truth}");
    println!("dumps {dumps}");
    print_site(
        "hp_site_thread",
        hp_site_thread as fn(&mut Vec<Vec<u8>>, usize) -> usize as usize,
    );
    std::hint::black_box(&kept);
}

/// One stack of a profile.
#[derive(Debug)]
struct Stack {
    live_bytes: u64,
    alloc_bytes: u64,
    live_samples: u64,
    alloc_samples: u64,
    frames: Vec<usize>,
}

struct Profile {
    header: HashMap<String, String>,
    stacks: Vec<Stack>,
    maps: Vec<String>,
}

fn parse(path: &Path) -> Profile {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("hakmem-heap-profile 1"), "{path:?}");
    let mut header = HashMap::new();
    let mut stacks = Vec::new();
    let mut maps = Vec::new();
    let mut in_maps = false;
    let mut ended = false;
    for l in lines {
        if in_maps {
            if l == "end" {
                ended = true;
                break;
            }
            maps.push(l.to_string());
        } else if l == "maps" {
            in_maps = true;
        } else if let Some((nums, frames)) = l.split_once(" |") {
            let n: Vec<u64> = nums.split(' ').map(|w| w.parse().unwrap()).collect();
            assert_eq!(n.len(), 6, "{l}");
            stacks.push(Stack {
                live_bytes: n[0],
                alloc_bytes: n[2],
                live_samples: n[4],
                alloc_samples: n[5],
                frames: frames
                    .split_whitespace()
                    .map(|f| usize::from_str_radix(f.trim_start_matches("0x"), 16).unwrap())
                    .collect(),
            });
        } else {
            let (k, v) = l.split_once(' ').unwrap();
            header.insert(k.to_string(), v.to_string());
        }
    }
    assert!(ended, "{path:?} is cut short");
    assert_eq!(header["stacks"].parse::<usize>().unwrap(), stacks.len());
    Profile {
        header,
        stacks,
        maps,
    }
}

/// Each site's runtime extent: start from the child, size from `nm -S`.
fn sites(exe: &Path, stdout: &str) -> HashMap<String, (usize, usize)> {
    let nm = Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(exe)
        .output()
        .expect("nm (binutils) runs");
    let table = String::from_utf8_lossy(&nm.stdout);
    let mut out = HashMap::new();
    for l in stdout.lines() {
        // (The harness's "test ... " may start the line.)
        let Some(rest) = l.split("site ").nth(1) else {
            continue;
        };
        let (name, at) = rest.split_once(' ').unwrap();
        let at = usize::from_str_radix(at.trim_start_matches("0x"), 16).unwrap();
        let size = table
            .lines()
            .find_map(|t| {
                let w: Vec<&str> = t.split_whitespace().collect();
                (w.len() == 4 && w[3] == name).then(|| usize::from_str_radix(w[1], 16).unwrap())
            })
            .unwrap_or_else(|| panic!("{name} not in the symbol table"));
        out.insert(name.to_string(), (at, size));
    }
    out
}

/// The stacks through `site` (a return address inside it).
fn through(p: &Profile, site: (usize, usize)) -> impl Iterator<Item = &Stack> {
    p.stacks.iter().filter(move |s| {
        s.frames
            .iter()
            .any(|&f| f > site.0 && f - 1 < site.0 + site.1)
    })
}

fn truth(stdout: &str, name: &str) -> u64 {
    let l = stdout
        .lines()
        .find_map(|l| l.split("truth ").nth(1))
        .unwrap();
    let w: Vec<&str> = l.split_whitespace().collect();
    let i = w.iter().position(|&x| x == name).unwrap();
    w[i + 1].parse().unwrap()
}

fn within(est: u64, truth: u64, what: &str) {
    let err = (est as f64 - truth as f64).abs() / truth as f64;
    assert!(
        err <= 0.10,
        "{what}: estimated {est}, truth {truth} ({:.1}% off)",
        err * 100.0
    );
    println!(
        "{what}: estimated {est}, truth {truth} ({:+.1}%)",
        (est as f64 / truth as f64 - 1.0) * 100.0
    );
}

fn run_child(case: &str, test: &str, dir: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, case)
        .env("HEAP_PROFILE_DIR", dir)
        .env("HAKMEM_PROF", "1")
        .env("HAKMEM_PROF_SAMPLE", SAMPLE.to_string())
        .env("HAKMEM_PROF_SIGNAL", "1")
        .env("HAKMEM_PROF_FILE", dir.join("exit.%p.%n.heap"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child died: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("hakmem-heap-profile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The profile of the process's exit (`HAKMEM_PROF_FILE`), one file.
fn exit_profile(dir: &Path) -> Profile {
    let exits: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("exit.")
        })
        .collect();
    assert!(!exits.is_empty(), "no profile written at exit in {dir:?}");
    // The last one written (signals may have written others before).
    let last = exits
        .iter()
        .max_by_key(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            name.split('.').nth(2).unwrap().parse::<u64>().unwrap()
        })
        .unwrap();
    parse(last)
}

#[test]
fn live_bytes_by_site_and_total_allocated() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("sites") {
        return child_sites(Path::new(&std::env::var("HEAP_PROFILE_DIR").unwrap()));
    }
    if !hakmem::prof::SUPPORTED {
        println!(
            "skipped: {} cannot profile (no box backend)",
            hakmem::BUILD_NAME
        );
        return;
    }
    let dir = scratch_dir("sites");
    let stdout = run_child("sites", "live_bytes_by_site_and_total_allocated", &dir);
    let p = parse(&dir.join("sites.heap"));
    assert_eq!(p.header["sample_bytes"], SAMPLE.to_string());
    assert_eq!(p.header["build"], hakmem::BUILD_NAME);
    assert!(
        p.maps.iter().any(|m| m.contains("heap_profile")),
        "the maps name the executable"
    );
    let sites = sites(&std::env::current_exe().unwrap(), &stdout);
    let live = |site: &str| -> u64 { through(&p, sites[site]).map(|s| s.live_bytes).sum() };
    let alloc = |site: &str| -> u64 { through(&p, sites[site]).map(|s| s.alloc_bytes).sum() };
    let (t80, t20, tc) = (
        truth(&stdout, "keep80"),
        truth(&stdout, "keep20"),
        truth(&stdout, "churn"),
    );
    within(live("hp_site_keep80"), t80, "live bytes of the 80% site");
    within(live("hp_site_keep20"), t20, "live bytes of the 20% site");
    assert_eq!(
        live("hp_site_churn"),
        0,
        "the site that freed everything has live bytes"
    );
    let live_samples: u64 = through(&p, sites["hp_site_churn"])
        .map(|s| s.live_samples)
        .sum();
    assert_eq!(live_samples, 0);
    within(
        alloc("hp_site_churn"),
        tc,
        "total allocated by the freeing site",
    );
    // Freed as it went: nothing live, its allocations all counted.
    assert_eq!(
        live("hp_site_pairs"),
        0,
        "the alloc/free site has live bytes"
    );
    within(
        alloc("hp_site_pairs"),
        truth(&stdout, "pairs"),
        "total allocated by the alloc/free site",
    );
    // The freeing site leads the total-allocated view, by site.
    for other in ["hp_site_keep80", "hp_site_keep20", "hp_site_pairs"] {
        assert!(
            alloc("hp_site_churn") > alloc(other),
            "{other} allocated more than the freeing site"
        );
    }
    let total: u64 = p.header["live_bytes"].parse().unwrap();
    within(
        total,
        t80 + t20 + truth(&stdout, "holders"),
        "all live bytes",
    );
    let summed: u64 = p.stacks.iter().map(|s| s.live_bytes).sum();
    assert_eq!(summed, total);
    // The exit profile: written, whole, with at least as much allocated.
    let e = exit_profile(&dir);
    assert!(
        e.header["alloc_bytes"].parse::<u64>().unwrap()
            >= p.header["alloc_bytes"].parse::<u64>().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dumps_while_threads_allocate_lose_nothing() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("threads") {
        return child_threads(Path::new(&std::env::var("HEAP_PROFILE_DIR").unwrap()));
    }
    if !hakmem::prof::SUPPORTED {
        println!(
            "skipped: {} cannot profile (no box backend)",
            hakmem::BUILD_NAME
        );
        return;
    }
    let dir = scratch_dir("threads");
    let stdout = run_child("threads", "dumps_while_threads_allocate_lose_nothing", &dir);
    let sites = sites(&std::env::current_exe().unwrap(), &stdout);
    let site = sites["hp_site_thread"];
    let dumps: usize = stdout
        .lines()
        .find_map(|l| l.split("dumps ").nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dumps >= 4);
    let after = parse(&dir.join("after.heap"));
    let samples = |p: &Profile| -> (u64, u64) {
        through(p, site).fold((0, 0), |(l, a), s| {
            (l + s.live_samples, a + s.alloc_samples)
        })
    };
    // Nothing of the site was freed: every sample taken is live.
    let (live, taken) = samples(&after);
    assert_eq!(live, taken, "samples of blocks never freed went missing");
    assert!(taken > 1000, "only {taken} samples");
    let est: u64 = through(&after, site).map(|s| s.live_bytes).sum();
    within(est, truth(&stdout, "thread"), "live bytes of four threads");
    // Each profile written while they ran holds no more than the last,
    // and the samples it had are all still there.
    let mut last = 0;
    for n in 0..dumps {
        let p = parse(&dir.join(format!("during.{n}.heap")));
        let (l, a) = samples(&p);
        assert_eq!(l, a);
        assert!(
            a >= last && a <= taken,
            "dump {n}: {a} samples after {last}, {taken} at the end"
        );
        last = a;
    }
    // The signal's profiles and the exit's parse whole.
    let e = exit_profile(&dir);
    assert!(e.header["live_samples"].parse::<u64>().is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
