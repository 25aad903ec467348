//! The heap profiler under `LD_PRELOAD`: a C program
//! (`tests/c/heap_profile.c`) with three sites of known bytes, one keeping
//! 80% of the live bytes, one 20%, one allocating a lot and freeing all of
//! it, runs under libhakmem.so with `HAKMEM_PROF=1`. It raises `SIGUSR2`
//! (`HAKMEM_PROF_SIGNAL=1`), which writes the profile checked here, and
//! exits, which writes another (`HAKMEM_PROF_FILE`). The sites' frames are
//! found from their addresses (printed by the program) and sizes (`nm -S`).
//!
//! The library is built as `preload.rs` builds it (its own target
//! directory per feature set, release profile).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{have, library, program, target_dir};

/// The mean sampling interval of the run (512 KiB by default): thousands
/// of samples, so that the estimates' spread is a few percent.
const SAMPLE: usize = 8 << 10;

/// The block size hakmem gives a small request (its size class; hardened
/// builds add the slack canary's bytes first): what the profile counts.
/// Large requests count as asked.
fn counted(size: usize) -> usize {
    let tail = facade::SMALL_MAX - facade::SMALL_REQUEST_MAX;
    if size > facade::SMALL_REQUEST_MAX {
        return size;
    }
    let size = (size + tail).max(16);
    if size <= 128 {
        return size.div_ceil(16) * 16;
    }
    // Eight classes per doubling above 128 B.
    let mut base = 128;
    loop {
        let step = base / 8;
        if size <= 2 * base {
            return base + (size - base).div_ceil(step) * step;
        }
        base *= 2;
    }
}

struct Stack {
    live_bytes: u64,
    alloc_bytes: u64,
    live_samples: u64,
    frames: Vec<usize>,
}

fn parse(path: &Path) -> (HashMap<String, String>, Vec<Stack>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("hakmem-heap-profile 1"));
    let mut header = HashMap::new();
    let mut stacks = Vec::new();
    let mut ended = false;
    let mut in_maps = false;
    for l in lines {
        if in_maps {
            ended |= l == "end";
            continue;
        }
        if l == "maps" {
            in_maps = true;
        } else if let Some((nums, frames)) = l.split_once(" |") {
            let n: Vec<u64> = nums.split(' ').map(|w| w.parse().unwrap()).collect();
            stacks.push(Stack {
                live_bytes: n[0],
                alloc_bytes: n[2],
                live_samples: n[4],
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
    (header, stacks)
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

#[test]
fn a_c_program_profiled_under_ld_preload() {
    if !facade::prof::SUPPORTED {
        println!("skipped: this build cannot profile (no box backend)");
        return;
    }
    if !have("cc") || !have("nm") {
        eprintln!("cc or nm not found: skipped");
        return;
    }
    let dir = target_dir().join(format!("heap-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = program("heap_profile.c", "cc", &["-g"]);
    let out = Command::new(&exe)
        .env("LD_PRELOAD", library())
        .env("HAKMEM_PROF", "1")
        .env("HAKMEM_PROF_SAMPLE", SAMPLE.to_string())
        .env("HAKMEM_PROF_SIGNAL", "1")
        .env("HAKMEM_PROF_FILE", dir.join("c.%n.heap"))
        .env("HP_DUMP_PATH", dir.join("api.heap"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The truth, by site, and each site's extent.
    let mut truth: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for l in stdout.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w[..] {
            ["alloc", site, n, size] => {
                let bytes = n.parse::<u64>().unwrap() * counted(size.parse().unwrap()) as u64;
                let t = truth.entry(site).or_default();
                t.1 += bytes;
                if site != "churn" {
                    t.0 += bytes;
                }
            }
            ["site", name, addr] => {
                at.insert(
                    name,
                    usize::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap(),
                );
            }
            _ => {}
        }
    }
    let nm = Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(&exe)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&nm.stdout);
    let extent = |name: &str| -> (usize, usize) {
        let size = table
            .lines()
            .find_map(|t| {
                let w: Vec<&str> = t.split_whitespace().collect();
                (w.len() == 4 && w[3] == name).then(|| usize::from_str_radix(w[1], 16).unwrap())
            })
            .unwrap_or_else(|| panic!("{name} not in the symbol table"));
        (at[name], size)
    };
    // Written by the signal (the first profile), then at exit.
    let (header, stacks) = parse(&dir.join("c.0.heap"));
    assert_eq!(header["sample_bytes"], SAMPLE.to_string());
    let by_site = |site: &str| -> (u64, u64, u64) {
        let (start, len) = extent(site);
        stacks
            .iter()
            .filter(|s| s.frames.iter().any(|&f| f > start && f - 1 < start + len))
            .fold((0, 0, 0), |(l, a, n), s| {
                (l + s.live_bytes, a + s.alloc_bytes, n + s.live_samples)
            })
    };
    let (l80, _, _) = by_site("hp_site_keep80");
    let (l20, _, _) = by_site("hp_site_keep20");
    let (lc, ac, nc) = by_site("hp_site_churn");
    within(l80, truth["keep80"].0, "live bytes of the 80% site");
    within(l20, truth["keep20"].0, "live bytes of the 20% site");
    assert_eq!(
        (lc, nc),
        (0, 0),
        "the site that freed everything has live bytes"
    );
    within(ac, truth["churn"].1, "total allocated by the freeing site");
    let total: u64 = header["live_bytes"].parse().unwrap();
    within(
        total,
        truth["keep80"].0 + truth["keep20"].0,
        "all live bytes",
    );
    // Then hakmem_prof_dump, at once (nothing allocated in between), to
    // the path it was given; it takes profile number 1.
    let (api, _) = parse(&dir.join("api.heap"));
    within(
        api["live_bytes"].parse().unwrap(),
        header["live_bytes"].parse().unwrap(),
        "live bytes in hakmem_prof_dump's profile",
    );
    let (exit, _) = parse(&dir.join("c.2.heap"));
    assert!(exit["alloc_bytes"].parse::<u64>().unwrap() >= header["alloc_bytes"].parse().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
