//! `HAKMEM_THP`: which fresh mappings are advised to get transparent huge
//! pages, read back from the kernel's own account (`/proc/self/smaps`: the
//! `hg` flag of `MADV_HUGEPAGE`, `nh` of `MADV_NOHUGEPAGE`).
//!
//! Options are read once a process, so each value runs in a child: this
//! test binary run again on one test, with the variable set. (`system`,
//! the default, advises nothing: the kernel's own mode decides.)

use std::process::Command;

use hakmem_superslab::os::{self, SystemThp};
use hakmem_superslab::{huge, pool};

/// The child's marker: which option value it was started with.
const CHILD: &str = "HAKMEM_THP_TEST_CHILD";

/// The `VmFlags` of the mapping holding `addr`.
fn vm_flags(addr: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(str::to_owned).collect();
            }
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// The flags of a fresh huge block's mapping and of a fresh region's.
fn fresh_flags() -> (Vec<String>, Vec<String>) {
    // Fresh: nothing cached from before.
    huge::release_cached();
    let b = huge::alloc(8 << 20, 16).unwrap().block;
    let huge_flags = vm_flags(b.ptr() as usize);
    // SAFETY: live, freed once.
    unsafe { huge::free(b) }.unwrap();
    huge::release_cached();
    // A region is fresh when none had room; this process has none before
    // (the child runs this test alone), so the first slab maps one.
    let g = pool::alloc_slab().unwrap();
    let region_flags = vm_flags(g.slab.base() as usize);
    (huge_flags, region_flags)
}

/// What each option value must show under this system's mode.
fn check(option: &str, huge_flags: &[String], region_flags: &[String]) {
    let has = |flags: &[String], f: &str| flags.iter().any(|x| x == f);
    let mode = os::system_thp();
    let (huge_want, region_want) = match option {
        "system" | "off" => (false, false),
        "all" => (true, true),
        _ => (true, false),
    };
    match mode {
        SystemThp::Madvise => {
            assert_eq!(
                has(huge_flags, "hg"),
                huge_want,
                "{option}: huge {huge_flags:?}"
            );
            assert_eq!(
                has(region_flags, "hg"),
                region_want,
                "{option}: region {region_flags:?}"
            );
        }
        SystemThp::Always => {
            // Nothing asked but a refusal under `off`.
            let refuse = option == "off";
            assert_eq!(
                has(huge_flags, "nh"),
                refuse,
                "{option}: huge {huge_flags:?}"
            );
            assert_eq!(
                has(region_flags, "nh"),
                refuse,
                "{option}: region {region_flags:?}"
            );
            assert!(!has(huge_flags, "hg") && !has(region_flags, "hg"));
        }
        SystemThp::Never => {
            for f in [huge_flags, region_flags] {
                assert!(!has(f, "hg") && !has(f, "nh"), "{option}: {f:?}");
            }
        }
    }
}

/// The child's body; does nothing in a plain run.
#[test]
fn child_reports_fresh_mappings() {
    let Ok(option) = std::env::var(CHILD) else {
        return;
    };
    let (huge_flags, region_flags) = fresh_flags();
    check(&option, &huge_flags, &region_flags);
    println!("checked HAKMEM_THP={option} under {:?}", os::system_thp());
}

#[test]
fn every_option_value_advises_what_it_names() {
    let me = std::env::current_exe().unwrap();
    // Unset is the default, `huge`; a bad value warns and keeps it.
    for (value, option) in [
        (None, "system"),
        (Some("huge"), "huge"),
        (Some("off"), "off"),
        (Some("all"), "all"),
        (Some("sometimes"), "system"),
        (Some("system"), "system"),
    ] {
        let mut cmd = Command::new(&me);
        cmd.args([
            "--exact",
            "child_reports_fresh_mappings",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, option)
        .env_remove("HAKMEM_THP");
        if let Some(v) = value {
            cmd.env("HAKMEM_THP", v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "HAKMEM_THP={value:?}:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains(&format!("checked HAKMEM_THP={option}")),
            "the child did not run its check: {stdout}"
        );
        assert_eq!(
            stderr.contains("hakmem: ignoring HAKMEM_THP"),
            value == Some("sometimes"),
            "{stderr}"
        );
    }
}
