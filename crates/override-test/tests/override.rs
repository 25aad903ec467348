//! The `override` feature: this package's binaries run with
//! `HAKMEM_STATS=1` (the scenario of `src/lib.rs`: memory crossing between
//! C and Rust both ways, and the exit statistics showing hakmem served
//! the C side), their symbol tables (the whole C ABI defined in the
//! binary; what the C library and libstdc++ also define exported to the
//! shared libraries), and, in this test binary (which has the feature
//! too), `hakmem_option_get` against docs/OPTIONS.md and
//! `hakmem_stats` against include/hakmem.h.

use std::ffi::{c_char, c_int, CString};
use std::path::Path;
use std::process::{Command, Output};

extern "C" {
    fn hakmem_option_get(name: *const c_char, value: *mut usize) -> c_int;
    fn hakmem_stats(out: *mut u8, size: usize) -> usize;
}

/// Every function of hakmem's C ABI (`crates/hakmem/src/c_abi`).
const C_ABI: [&str; 46] = [
    "malloc",
    "free",
    "free_sized",
    "free_aligned_sized",
    "cfree",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "malloc_trim",
    "mallinfo2",
    "mallinfo",
    "malloc_stats",
    "malloc_info",
    "mallopt",
    "hakmem_stats",
    "hakmem_trim",
    "hakmem_print_stats",
    "hakmem_prof_dump",
    "hakmem_option_get",
    "hakmem_build",
    "_Znwm",
    "_Znam",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvm",
    "_ZdaPvm",
    "_ZdlPvSt11align_val_t",
    "_ZdaPvSt11align_val_t",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
];

/// Of those, what glibc's `libc.so.6` defines too, and which the linker
/// therefore exports from the binary to every shared library.
const GLIBC_DEFINES: [&str; 17] = [
    "malloc",
    "free",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "malloc_trim",
    "mallinfo2",
    "mallinfo",
    "malloc_stats",
    "malloc_info",
    "mallopt",
];

/// Runs `bin` with `HAKMEM_STATS=1` (and no other `HAKMEM_*` option of
/// the caller's environment); asserts it passed and hakmem served it,
/// and returns its output.
fn run(bin: &str, want: &str) -> Output {
    let mut cmd = Command::new(bin);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("HAKMEM_") {
            cmd.env_remove(var);
        }
    }
    let out = cmd
        .env("HAKMEM_STATS", "1")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(want),
        "{bin}: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("hakmem: stats: mapped_bytes=")
            && stderr.contains(" invalid_frees=0 ")
            && stderr.contains(&format!(" build={}\n", hakmem::BUILD_NAME)),
        "{bin}: no exit statistics of hakmem's, or invalid frees: {stderr}"
    );
    out
}

/// The `name=value` figure `name` of the exit statistics.
fn figure(stderr: &str, name: &str) -> usize {
    let key = format!(" {name}=");
    let at = stderr
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {stderr}"))
        + key.len();
    stderr[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {stderr}"))
}

/// The C side's blocks in the exit statistics: its huge blocks (of
/// `malloc`, `realloc` and `posix_memalign`, 1 MiB and more), all given
/// back by Rust's `libc::free`, and the 4000 blocks of its that other
/// threads freed.
fn c_side_in_the_exit_stats(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(figure(&stderr, "huge_mapped") >= 1, "{stderr}");
    assert_eq!(figure(&stderr, "huge_in_use"), 0, "{stderr}");
    assert!(figure(&stderr, "remote_frees") >= 4000, "{stderr}");
}

#[test]
fn c_and_rust_share_hakmem_with_a_global_allocator() {
    let out = run(
        env!("CARGO_BIN_EXE_override-with-global-allocator"),
        "override ok (with #[global_allocator]",
    );
    c_side_in_the_exit_stats(&out);
}

#[test]
fn c_and_rust_share_hakmem_without_a_global_allocator() {
    let out = run(
        env!("CARGO_BIN_EXE_override-without-global-allocator"),
        "override ok (without #[global_allocator]",
    );
    c_side_in_the_exit_stats(&out);
}

#[test]
fn shared_libraries_get_hakmem_without_a_c_archive() {
    run(
        env!("CARGO_BIN_EXE_override-shared-libraries-only"),
        "override ok (shared libraries only)",
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `nm <args> <file>`'s symbol names.
fn nm(args: &[&str], file: &str) -> Vec<String> {
    let out = Command::new("nm").args(args).arg(file).output().unwrap();
    assert!(out.status.success(), "nm {args:?} {file}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap().to_owned())
        .collect()
}

#[test]
fn the_binaries_define_the_whole_c_abi() {
    if !have("nm") {
        eprintln!("nm not found: skipped");
        return;
    }
    for (bin, cxx) in [
        (env!("CARGO_BIN_EXE_override-with-global-allocator"), true),
        (
            env!("CARGO_BIN_EXE_override-without-global-allocator"),
            true,
        ),
        (env!("CARGO_BIN_EXE_override-shared-libraries-only"), false),
    ] {
        let defined = nm(&["--defined-only"], bin);
        for name in C_ABI {
            assert!(defined.iter().any(|d| d == name), "{bin}: no {name}");
        }
        let exported = nm(&["-D", "--defined-only"], bin);
        for name in GLIBC_DEFINES {
            assert!(
                exported.iter().any(|d| d == name),
                "{bin}: {name} is not exported to the shared libraries"
            );
        }
        // With libstdc++ linked, the operators are exported over its own.
        if cxx && cfg!(have_cxx) {
            for name in C_ABI.iter().filter(|n| n.starts_with("_Z")) {
                assert!(exported.iter().any(|d| d == name), "{bin}: {name}");
            }
        }
        // Nothing else of Rust's is exported.
        for name in &exported {
            assert!(
                C_ABI.contains(&name.as_str()) || !name.starts_with("_ZN"),
                "{bin}: exports {name}"
            );
        }
    }
}

/// `hakmem_option_get` knows every option of docs/OPTIONS.md's table, and
/// no other name.
#[test]
fn hakmem_option_get_knows_every_documented_option() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/OPTIONS.md");
    let doc = std::fs::read_to_string(doc).unwrap();
    let names: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("HAKMEM_"))
        .collect();
    assert!(names.len() >= 9, "{names:?}");
    for name in names.iter().copied().chain(["NO_SUCH_OPTION"]) {
        let c = CString::new(name).unwrap();
        let mut value = usize::MAX;
        // SAFETY: a NUL-terminated name and a place for the value.
        let r = unsafe { hakmem_option_get(c.as_ptr(), &mut value) };
        if name.starts_with("HAKMEM_") {
            assert_eq!(r, 0, "{name}");
            assert_ne!(value, usize::MAX, "{name}");
        } else {
            assert_eq!(r, -1, "{name}");
        }
    }
    let mut value = 0;
    // SAFETY: as above.
    let r = unsafe { hakmem_option_get(c"HAKMEM_FAST_MAX_BATCH".as_ptr(), &mut value) };
    assert_eq!((r, value), (0, hakmem::options::get().fast_max_batch));
}

/// `struct hakmem_stats` of include/hakmem.h is the library's: as many
/// `size_t` fields as `hakmem_stats` says it fills, and filled in order
/// (its first two are `mapped_bytes` and `peak_mapped_bytes`).
#[test]
fn hakmem_stats_is_the_headers_struct() {
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/hakmem.h");
    let header = std::fs::read_to_string(header).unwrap();
    let body = header
        .split_once("struct hakmem_stats {")
        .and_then(|(_, rest)| rest.split_once("};"))
        .expect("struct hakmem_stats in hakmem.h")
        .0;
    let fields: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("size_t "))
        .collect();
    assert!(
        body.lines()
            .map(str::trim)
            .all(|l| l.is_empty() || l.starts_with("size_t ") || l.starts_with("/*")),
        "every field of struct hakmem_stats is a size_t: {body}"
    );
    let size = std::mem::size_of::<usize>();
    // SAFETY: a null `out` only returns the size.
    let known = unsafe { hakmem_stats(std::ptr::null_mut(), 0) };
    assert_eq!(known, fields.len() * size, "{fields:?}");
    assert!(fields[0].starts_with("size_t mapped_bytes;"), "{fields:?}");
    let _keep = vec![0u8; 100_000];
    let mut buf = vec![0usize; fields.len() + 1];
    buf[fields.len()] = usize::MAX;
    // SAFETY: `buf` has room for one field more than the library fills;
    // that one is zeroed.
    let r = unsafe { hakmem_stats(buf.as_mut_ptr().cast(), buf.len() * size) };
    assert_eq!(r, known);
    assert_eq!(buf[fields.len()], 0);
    let s = hakmem::stats().superslab;
    assert!(buf[0] > 0 && buf[1] >= buf[0] && buf[1] <= s.peak_mapped_bytes);
}
