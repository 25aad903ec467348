//! libhakmem.so under real programs.
//!
//! ## Which library is tested
//! The library is built by this test with `$CARGO build -p hakmem-preload`
//! (the cargo running the test) into `<target>/preload-tests/<features>`: a
//! target directory of its own, so it never waits on the outer cargo's
//! lock, and one per feature combination. The features are this test's own
//! (`cargo test -p hakmem-preload --no-default-features --features
//! fast-path` tests that combination), and the `build=` name in the exit
//! statistics is checked against them. Two profiles are built: `release`
//! (what users load; every test) and `dev` (overflow checks and debug
//! assertions on; the ABI edge cases, misuse and threads run there too).
//! `HAKMEM_PRELOAD_LIB=/path/to/libhakmem.so` tests a library built
//! elsewhere instead (both profiles, no `build=` check).
//!
//! The C and C++ programs in `tests/c` are compiled there with `cc`/`c++`.
//! Each program runs under `LD_PRELOAD` with `HAKMEM_STATS=1`, and the
//! `hakmem: stats:` lines it prints at exit prove that hakmem served it.
//! A test whose tool (python3, git, gcc, cc, c++, nm) is missing prints a note
//! and passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{features, have, library_of, program, target_dir, Profile};

fn run(cmd: &mut Command, preload: bool) -> Output {
    run_with(cmd, preload.then_some(Profile::Release))
}

/// Runs `cmd` without hakmem (`None`) or under the library of a profile,
/// with `HAKMEM_STATS=1`.
///
/// Options (`HAKMEM_*`) of the environment the test runs in are not passed
/// on; those set on `cmd` are.
fn run_with(cmd: &mut Command, lib: Option<Profile>) -> Output {
    let set: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("HAKMEM_") && !set.contains(&var) {
            cmd.env_remove(var);
        }
    }
    cmd.env_remove("LD_PRELOAD");
    if let Some(profile) = lib {
        cmd.env("LD_PRELOAD", library_of(profile))
            .env("HAKMEM_STATS", "1");
    }
    cmd.output().unwrap()
}

/// Asserts the run succeeded under hakmem and returns its stdout.
fn served(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} under hakmem: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("hakmem: stats: mapped_bytes="),
        "{what}: hakmem did not serve it (no stats line): {stderr}"
    );
    if std::env::var_os("HAKMEM_PRELOAD_LIB").is_none() {
        let build = format!(" build={}\n", features().1);
        assert!(
            stderr.contains(&build),
            "{what}: not the library of this feature set ({build:?}): {stderr}"
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn same_output(name: &str, mut make: impl FnMut() -> Command) {
    let plain = run(&mut make(), false);
    assert!(plain.status.success(), "{name} without hakmem failed");
    let with = run(&mut make(), true);
    let out = served(&with, name);
    assert_eq!(
        out,
        String::from_utf8_lossy(&plain.stdout),
        "{name}: output differs"
    );
}

#[test]
fn python_with_threads_runs_the_same() {
    if !have("python3") {
        eprintln!("python3 not found: skipped");
        return;
    }
    let script = r#"
import threading, json, hashlib
results = {}
def work(t):
    d = {}
    for i in range(30000):
        d[i] = [str(i) * (i % 7), {"k": i, "v": bytes(i % 300)}]
        if i % 3 == 0:
            del d[i - i // 2]
    s = json.dumps(sorted((k, len(v[0])) for k, v in d.items()))
    results[t] = hashlib.sha256(s.encode()).hexdigest()
ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in ts: t.start()
for t in ts: t.join()
print(sorted(results.values()))
"#;
    same_output("python3", || {
        let mut c = Command::new("python3");
        c.args(["-c", script]);
        c
    });
}

#[test]
fn sort_of_a_large_file_runs_the_same() {
    let dir = target_dir().join("sort");
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("input.txt");
    let mut text = String::with_capacity(8 << 20);
    let mut s = 88172645463325252u64;
    for _ in 0..200_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        text.push_str(&format!("{:x} {}\n", s, s % 1000));
    }
    std::fs::write(&input, text).unwrap();
    same_output("sort", || {
        let mut c = Command::new("sort");
        c.arg("-k2,2n").arg("-k1,1").arg(&input).env("LC_ALL", "C");
        c
    });
}

#[test]
fn git_on_this_repository_runs_the_same() {
    if !have("git") {
        eprintln!("git not found: skipped");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for args in [
        &["log", "--oneline", "-n", "50"][..],
        &["ls-files"],
        &["rev-list", "--count", "HEAD"],
        &["log", "-p", "-n", "5", "--no-color", "--", "crates"],
        // Limited to this crate: other engineers edit the rest of the tree
        // while tests run. No optional locks: never contend for the index.
        &[
            "--no-optional-locks",
            "status",
            "--porcelain=v1",
            "--",
            "crates/hakmem-preload",
        ],
    ] {
        same_output("git", || {
            let mut c = Command::new("git");
            c.arg("-C").arg(&repo).args(args).env("GIT_PAGER", "cat");
            c
        });
    }
}

#[test]
fn gcc_compiles_a_program_the_same() {
    if !have("gcc") {
        eprintln!("gcc not found: skipped");
        return;
    }
    let dir = target_dir().join("gcc");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("hello.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nstatic int fib(int n){return n<2?n:fib(n-1)+fib(n-2);}\n\
         int main(void){printf(\"fib=%d\\n\", fib(20));return 0;}\n",
    )
    .unwrap();
    for (preload, name) in [(false, "plain"), (true, "hakmem")] {
        let exe = dir.join(name);
        let out = run(
            Command::new("gcc").arg("-O2").arg("-o").arg(&exe).arg(&src),
            preload,
        );
        if preload {
            served(&out, "gcc");
        } else {
            assert!(out.status.success());
        }
        let ran = Command::new(&exe).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "fib=6765\n");
    }
}

#[test]
fn c_abi_edge_cases() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let exe = program(
        "abi_edges.c",
        "cc",
        &["-Wno-alloc-size-larger-than", "-ldl"],
    );
    for profile in [Profile::Release, Profile::Dev] {
        let out = run_with(&mut Command::new(&exe), Some(profile));
        let out = served(&out, &format!("abi_edges ({profile:?})"));
        assert!(out.contains("abi-edges ok"), "{out}");
    }
}

#[test]
fn threaded_c_program_with_cross_thread_frees() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let exe = program("threads.c", "cc", &["-pthread"]);
    for profile in [Profile::Release, Profile::Dev] {
        let out = run_with(&mut Command::new(&exe), Some(profile));
        let stdout = served(&out, &format!("threads.c ({profile:?})"));
        assert!(stdout.contains("threads ok"), "{stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("heaps_created="), "{stderr}");
    }
}

#[test]
fn cpp_new_and_delete_go_through_hakmem() {
    if !have("c++") {
        eprintln!("c++ not found: skipped");
        return;
    }
    let exe = program("newdelete.cpp", "c++", &["-pthread", "-std=c++17"]);
    let run = run(&mut Command::new(exe), true);
    let out = served(&run, "newdelete");
    assert!(out.contains("newdelete ok 1"), "{out}");
    // new char[40 MiB] was one huge mapping of hakmem's, and delete[] gave
    // it back through hakmem's free. (libstdc++'s emergency exception pool,
    // some 70 KiB allocated at start and never freed, is a run of slabs in
    // the default build and a mapping of its own in the hardened one.)
    let stderr = String::from_utf8_lossy(&run.stderr);
    let kept = if cfg!(feature = "secure") { 1 } else { 0 };
    assert!(stderr.contains(&format!(" huge_in_use={kept}")), "{stderr}");
    assert!(!stderr.contains(" huge_mapped=0 "), "{stderr}");
}

/// The C++ operators libhakmem.so exports (Itanium ABI names).
const CXX_OPERATORS: [&str; 20] = [
    "_Znwm",
    "_Znam",
    "_ZnwmRKSt9nothrow_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t",
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

/// `nm <args> <file>`'s symbol names (None without nm).
fn nm(args: &[&str], file: &Path) -> Option<Vec<String>> {
    if !have("nm") {
        eprintln!("nm not found: symbol check skipped");
        return None;
    }
    let out = Command::new("nm").args(args).arg(file).output().unwrap();
    assert!(out.status.success(), "nm {args:?} {file:?}");
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(|s| s.split('@').next().unwrap().to_owned())
            .collect(),
    )
}

#[test]
fn cpp_operators_are_hakmems_own() {
    if !have("c++") {
        eprintln!("c++ not found: skipped");
        return;
    }
    for profile in [Profile::Release, Profile::Dev] {
        if let Some(defined) = nm(&["-D", "--defined-only"], library_of(profile)) {
            for name in CXX_OPERATORS
                .iter()
                .chain(&["free_sized", "free_aligned_sized"])
            {
                assert!(
                    defined.iter().any(|d| d == name),
                    "{name} is not exported ({profile:?})"
                );
            }
        }
    }
    let exe = program(
        "operators.cpp",
        "c++",
        &["-std=c++17", "-fsized-deallocation", "-ldl"],
    );
    // The program calls every operator (so each is bound to some library).
    if let Some(undefined) = nm(&["-u"], &exe) {
        for name in CXX_OPERATORS {
            assert!(
                undefined.iter().any(|u| u == name),
                "operators.cpp: no {name}"
            );
        }
    }
    // Without hakmem, the operators are libstdc++'s: the check fails.
    let plain = run(&mut Command::new(&exe), false);
    assert!(
        !plain.status.success()
            && String::from_utf8_lossy(&plain.stderr).contains("an operator is not libhakmem.so's"),
        "operators.cpp without hakmem: {plain:?}"
    );
    for profile in [Profile::Release, Profile::Dev] {
        let what = format!("operators.cpp ({profile:?})");
        let out = run_with(&mut Command::new(&exe), Some(profile));
        let stdout = served(&out, &what);
        // 4 throwing and 4 nothrow forms each called the throwing handler
        // once; each of 4 forms freed the reserve once and retried.
        let want = if stdout.contains("note: RLIMIT_AS") {
            "operators ok (handler calls 8, reserve frees 0)"
        } else {
            "operators ok (handler calls 8, reserve frees 4)"
        };
        assert!(stdout.contains(want), "{what}: {stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Every block went back (libstdc++'s emergency pool aside: a huge
        // mapping of its own in hardened builds), none was misfreed, and
        // the failures were hakmem's.
        let kept = if cfg!(feature = "secure") { 1 } else { 0 };
        assert!(
            stderr.contains(&format!(" huge_in_use={kept}")),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(" invalid_frees=0 "), "{what}: {stderr}");
        assert!(!stderr.contains(" out_of_memory=0"), "{what}: {stderr}");
        assert!(!stderr.contains(" huge_mapped=0 "), "{what}: {stderr}");
    }
    // A sized delete twice: the free mark still reports it.
    for profile in [Profile::Release, Profile::Dev] {
        misuse_case(&exe, "double-delete", "already free (double free)", profile);
    }
}

/// The operators in a C program: libstdc++ is not loaded, so their weak
/// references to it are null; a failing throwing `new` aborts.
#[test]
fn cpp_operators_without_libstdcxx() {
    use std::os::unix::process::ExitStatusExt;
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let exe = program("cxx_from_c.c", "cc", &[]);
    for profile in [Profile::Release, Profile::Dev] {
        let what = format!("cxx_from_c.c ({profile:?})");
        let out = run_with(&mut Command::new(&exe), Some(profile));
        let stdout = served(&out, &what);
        assert!(stdout.contains("cxx-from-c ok"), "{what}: {stdout}");
        let out = run_with(Command::new(&exe).arg("throwing"), Some(profile));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout.contains("reached") && !stdout.contains("survived"),
            "{what}: {stdout}"
        );
        assert!(
            stderr.contains("hakmem: out of memory in operator new"),
            "{what}: {stderr}"
        );
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{what}");
    }
}

#[test]
fn c23_free_sized_and_free_aligned_sized() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let exe = program("free_sized.c", "cc", &[]);
    for profile in [Profile::Release, Profile::Dev] {
        let what = format!("free_sized.c ({profile:?})");
        let out = run_with(&mut Command::new(&exe), Some(profile));
        let stdout = served(&out, &what);
        assert!(stdout.contains("free-sized ok"), "{what}: {stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(" invalid_frees=0 "), "{what}: {stderr}");
        assert!(stderr.contains(" runs_in_use=0 "), "{what}: {stderr}");
        assert!(!stderr.contains(" huge_mapped=0 "), "{what}: {stderr}");
        if !cfg!(feature = "secure") {
            assert!(stderr.contains(" huge_in_use=0"), "{what}: {stderr}");
        }
    }
    let freed = "not the start of a live hakmem block|not allocated by hakmem";
    for (case, why) in [
        ("double-small", "already free (double free)"),
        ("double-large", freed),
        ("double-huge", freed),
    ] {
        for profile in [Profile::Release, Profile::Dev] {
            misuse_case(&exe, case, why, profile);
        }
    }
}

/// libhakmem.so loaded with `dlopen` after start-up, into a program whose
/// threads then allocate through it (one started before the load): with
/// `initial-exec-tls` its TLS segment must fit glibc's static surplus
/// (the per-thread caches are memory of the library's own, not TLS, for
/// that), and without the feature it is general-dynamic TLS. Both profiles.
#[test]
fn dlopen_after_start_up() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let exe = program("dlopen.c", "cc", &["-pthread", "-ldl"]);
    for profile in [Profile::Release, Profile::Dev] {
        let lib = library_of(profile);
        let out = run_with(Command::new(&exe).arg(lib), None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("dlopen ok"),
            "dlopen of {lib:?} ({profile:?}): {:?}\n{stderr}",
            out.status
        );
    }
}

#[test]
fn fork_from_a_multithreaded_parent() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let exe = program("fork.c", "cc", &["-pthread"]);
    let out = served(&run(&mut Command::new(exe), true), "fork");
    assert!(out.contains("fork ok"), "{out}");
}

#[test]
fn invalid_and_double_frees_are_reported() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    // -O0 -fno-builtin: gcc would otherwise delete a malloc/free pair.
    let exe = program("misuse.c", "cc", &["-O0", "-fno-builtin"]);
    for (case, why) in [
        ("stack", "not allocated by hakmem"),
        ("static", "not allocated by hakmem"),
        ("mmap", "not allocated by hakmem"),
        ("interior", "inside a block"),
        ("double-large", "not the start of a live hakmem block"),
        // Unmapped at once, or (hardened builds) quarantined first.
        (
            "double-huge",
            "not allocated by hakmem|not the start of a live hakmem block",
        ),
        ("double-small", "already free (double free)"),
        ("double-cached-huge", "not the start of a live hakmem block"),
    ] {
        for profile in [Profile::Release, Profile::Dev] {
            misuse_case(&exe, case, why, profile);
        }
    }
}

/// Runs `misuse <case>` under the library of `profile`: reported with its
/// address and aborted by default; reported, counted and survived with
/// `HAKMEM_INVALID_FREE=ignore`.
fn misuse_case(exe: &Path, case: &str, why: &str, profile: Profile) {
    use std::os::unix::process::ExitStatusExt;
    let what = format!("{case} ({profile:?})");
    let out = run_with(Command::new(exe).arg(case), Some(profile));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let addr = stdout
        .lines()
        .find_map(|l| l.strip_prefix("misuse-address "))
        .unwrap_or_else(|| panic!("{what}: {stdout}"));
    let addr = usize::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
    let report = format!("hakmem: invalid free({addr:#018x}): ");
    assert!(
        stderr.contains(&report),
        "{what}: no `{report}` in {stderr}"
    );
    assert!(
        why.split('|').any(|w| stderr.contains(w)),
        "{what}: {stderr}"
    );
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{what}");
    assert!(!stdout.contains("survived"), "{what}");

    let mut cmd = Command::new(exe);
    cmd.arg(case).env("HAKMEM_INVALID_FREE", "ignore");
    let out = run_with(&mut cmd, Some(profile));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} ignored: {:?}", out.status);
    assert!(stdout.contains("survived"), "{what}");
    assert!(
        stderr.contains("hakmem: invalid free(0x"),
        "{what}: {stderr}"
    );
    assert!(stderr.contains("; ignored"), "{what}: {stderr}");
    assert!(stderr.contains(" invalid_frees=1 "), "{what}: {stderr}");
}

/// What one run of the misuse catalogue (`tests/c/catalogue.c`) showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Stopped by a signal after the misuse: caught (`report` says whether
    /// hakmem's report named the address).
    Caught { report: bool },
    /// The program's own verdict (see catalogue.c).
    Verdict(&'static str),
    /// Died before reaching the misuse, or printed nothing it should.
    Broken,
    /// Still running after the time limit (a cycle in a free list, say).
    Hung,
}

/// Runs `cmd` to its end, or kills it after `limit` (None then).
fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Option<Output> {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The catalogue's cases, by class; the sizes each runs at.
const CATALOGUE: &[(&str, &[usize])] = &[
    ("double-immediate", &ALL_SIZES),
    ("double-delayed", &ALL_SIZES),
    ("double-interleaved", &ALL_SIZES),
    ("double-after-reuse", &ALL_SIZES),
    ("invalid-stack", &[32]),
    ("invalid-alloca", &[32, 4096]),
    ("invalid-static", &[32]),
    ("invalid-interior-aligned", &ALL_SIZES),
    ("invalid-interior-unaligned", &ALL_SIZES),
    ("invalid-just-below", &ALL_SIZES),
    ("invalid-just-above", &ALL_SIZES),
    ("invalid-far-away", &ALL_SIZES),
    ("overflow-1-store", &ALL_SIZES),
    ("overflow-32-memcpy", &ALL_SIZES),
    ("underflow-1-store", &ALL_SIZES),
    ("underflow-32-memset", &ALL_SIZES),
    ("overflow-1mib", &ALL_SIZES),
    ("write-after-free", &ALL_SIZES),
    ("write-after-free-reuse", &ALL_SIZES),
    ("read-after-free", &ALL_SIZES),
    ("reuse-malloc", &ALL_SIZES),
    ("reuse-realloc", &ALL_SIZES),
    ("zero-size-write", &[0]),
    ("zero-size-read", &[0]),
    ("impossible-size", &[0]),
];

/// Small, medium, large (a run of slabs) and huge (a mapping the huge
/// cache keeps).
const ALL_SIZES: [usize; 4] = [32, 4096, 256 << 10, 4 << 20];

/// Runs `catalogue CASE SIZE` with `preload` (None: glibc).
fn catalogue_run(exe: &Path, case: &str, size: usize, preload: Option<&Path>) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = Command::new(exe);
    cmd.arg(case).arg(size.to_string());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("HAKMEM_") {
            cmd.env_remove(var);
        }
    }
    cmd.env_remove("LD_PRELOAD");
    if let Some(lib) = preload {
        cmd.env("LD_PRELOAD", lib);
    }
    let Some(out) = output_within(&mut cmd, std::time::Duration::from_secs(20)) else {
        return Outcome::Hung;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stdout.contains("reached") {
        return Outcome::Broken;
    }
    if out.status.signal().is_some() {
        let addr = stdout
            .lines()
            .find_map(|l| l.strip_prefix("misuse-address "))
            .and_then(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16).ok());
        let report = addr
            .is_some_and(|a| stderr.contains(&format!("hakmem: invalid free({a:#018x})")))
            || stderr.contains("hakmem: heap corruption detected");
        return Outcome::Caught { report };
    }
    const WORDS: [&str; 7] = [
        "undetected",
        "stale",
        "clean",
        "reused",
        "delayed",
        "enomem",
        "bad",
    ];
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("verdict: "))
        .and_then(|v| WORDS.iter().find(|w| **w == v.trim()))
        .map_or(Outcome::Broken, |w| Outcome::Verdict(w))
}

/// What a build must do with a case.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Exactly this outcome.
    Is(Outcome),
    /// Stopped, by a report or by a fault at the misuse.
    Caught,
}

impl Want {
    fn accepts(self, got: Outcome) -> bool {
        match self {
            Want::Is(want) => got == want,
            Want::Caught => matches!(got, Outcome::Caught { .. }),
        }
    }
}

/// What this build must do with each case (None: whatever it does is
/// recorded in RELIABILITY.md, not required here). Every build: each
/// double free while the block waits freed, each invalid free, reported;
/// impossible sizes NULL and ENOMEM. Hardened builds: the whole catalogue
/// but what no hardened allocator can see (an underflow of a small block
/// into a neighbour that is not checked, a write 1 MiB past a small block
/// into some other memory).
fn catalogue_expectation(case: &str, size: usize) -> Option<Want> {
    let report = Want::Is(Outcome::Caught { report: true });
    let small = size <= 16 << 10;
    let secure = cfg!(feature = "secure");
    match case {
        // The block was handed out again: the second free frees the new
        // owner's block, which nothing can tell from a valid free; only
        // the hardened build's quarantine keeps it from being handed out.
        "double-after-reuse" => secure.then_some(report),
        // So is a freed run whose first slab the next small slab took
        // (the delaying allocations need one): see RELIABILITY.md.
        "double-delayed" if !secure && !small && size <= 1 << 20 => None,
        c if c.starts_with("double-") || c.starts_with("invalid-") => Some(report),
        "impossible-size" => Some(Want::Is(Outcome::Verdict("enomem"))),
        _ if !secure => None,
        "overflow-1-store" | "overflow-32-memcpy" if small => Some(report),
        "underflow-1-store" | "underflow-32-memset" | "overflow-1mib" if small => None,
        "read-after-free" if small => Some(Want::Is(Outcome::Verdict("clean"))),
        "reuse-malloc" | "reuse-realloc" => Some(Want::Is(Outcome::Verdict("delayed"))),
        _ => Some(Want::Caught),
    }
}

/// The misuse catalogue under this build's libhakmem.so, held to
/// [`catalogue_expectation`].
#[test]
fn misuse_catalogue() {
    if !have("cc") {
        eprintln!("note: no cc, catalogue skipped");
        return;
    }
    let exe = program("catalogue.c", "cc", &["-O0", "-fno-builtin"]);
    let lib = library_of(Profile::Release);
    let mut wrong = Vec::new();
    for (case, sizes) in CATALOGUE {
        for &size in *sizes {
            let got = catalogue_run(&exe, case, size, Some(lib));
            if got == Outcome::Broken {
                wrong.push(format!("{case} {size}: broken run"));
            }
            if let Some(want) = catalogue_expectation(case, size) {
                if !want.accepts(got) {
                    wrong.push(format!("{case} {size}: {got:?}, want {want:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "catalogue:\n{}", wrong.join("\n"));
}

/// Prints the catalogue as a markdown table for the allocators in
/// `HAKMEM_CATALOGUE_LIBS` (`name=path,name=path`; `glibc=` for none):
/// how RELIABILITY.md's table is made. `cargo test -p hakmem-preload
/// --release --test preload -- --ignored catalogue_table --nocapture`.
#[test]
#[ignore]
fn catalogue_table() {
    let exe = program("catalogue.c", "cc", &["-O0", "-fno-builtin"]);
    let libs = std::env::var("HAKMEM_CATALOGUE_LIBS").unwrap_or_default();
    let libs: Vec<(&str, Option<PathBuf>)> = libs
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, path) = s.split_once('=').unwrap();
            (name, (!path.is_empty()).then(|| PathBuf::from(path)))
        })
        .collect();
    let cell = |o: Outcome| match o {
        Outcome::Caught { report: true } => "**caught** (report)".to_string(),
        Outcome::Caught { report: false } => "**caught** (signal)".to_string(),
        Outcome::Verdict("undetected") => "not detected".to_string(),
        Outcome::Verdict(w) => w.to_string(),
        Outcome::Broken => "crash before".to_string(),
        Outcome::Hung => "hangs".to_string(),
    };
    let names: Vec<&str> = libs.iter().map(|l| l.0).collect();
    println!("| misuse | size | {} |", names.join(" | "));
    println!("|---|---:|{}", "---|".repeat(libs.len()));
    for (case, sizes) in CATALOGUE {
        for &size in *sizes {
            let cells: Vec<String> = libs
                .iter()
                .map(|(_, lib)| cell(catalogue_run(&exe, case, size, lib.as_deref())))
                .collect();
            println!("| {case} | {size} | {} |", cells.join(" | "));
        }
    }
}

/// Named figures of a program's output.
type Figures = Vec<(String, usize)>;

/// The `name=value` numbers of the first line of `text` that starts
/// with `prefix`.
fn numbers_after(text: &str, prefix: &str) -> Figures {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}` in {text}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

fn field(fields: &[(String, usize)], name: &str) -> usize {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
        .1
}

/// One element of `malloc_info`'s XML, one a line: its name, whether it
/// closes (`</name>`) or is empty (`<name .../>`), its attributes.
struct Tag {
    name: String,
    closing: bool,
    empty: bool,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn parse(line: &str) -> Tag {
        let inner = line
            .trim()
            .strip_prefix('<')
            .and_then(|l| l.strip_suffix('>'))
            .unwrap_or_else(|| panic!("not a tag: {line:?}"));
        let (closing, inner) = match inner.strip_prefix('/') {
            Some(rest) => (true, rest),
            None => (false, inner),
        };
        let (empty, inner) = match inner.strip_suffix('/') {
            Some(rest) => (true, rest),
            None => (false, inner),
        };
        let (name, mut rest) = inner.split_once(' ').unwrap_or((inner, ""));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase()),
            "tag name in {line:?}"
        );
        let mut attrs = Vec::new();
        while !rest.is_empty() {
            let (key, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("attribute in {line:?}"));
            let (value, after) = after
                .split_once('"')
                .unwrap_or_else(|| panic!("attribute value in {line:?}"));
            attrs.push((key.trim().to_owned(), value.to_owned()));
            rest = after.trim_start();
        }
        assert!(!(closing && (empty || !attrs.is_empty())), "{line:?}");
        Tag {
            name: name.to_owned(),
            closing,
            empty,
            attrs,
        }
    }

    fn attr(&self, key: &str) -> &str {
        &self
            .attrs
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("<{}> has no {key}", self.name))
            .1
    }

    fn num(&self, key: &str) -> usize {
        self.attr(key).parse().unwrap_or_else(|_| {
            panic!("<{}> {key}={:?} is not a number", self.name, self.attr(key))
        })
    }
}

/// Checks `malloc_info`'s document in glibc's shape: `<malloc
/// version="1">` holding one `<heap nr="0">` (`<sizes>` of `<size>`s, the
/// fast and rest totals, system and aspace sizes), then the totals with
/// `mmap`'s, every tag balanced and every figure a number; the sizes add
/// up to the heap's fast and rest totals. Returns the mmap total's count.
fn check_malloc_info(xml: &str) -> usize {
    let mut stack: Vec<String> = Vec::new();
    let mut path_seen: Vec<String> = Vec::new();
    let (mut sizes_count, mut sizes_total) = (0, 0);
    let (mut heap_count, mut heap_total) = (0, 0);
    let mut mmap_count = None;
    for line in xml.lines() {
        let tag = Tag::parse(line);
        if tag.closing {
            assert_eq!(stack.pop().as_deref(), Some(tag.name.as_str()), "{line}");
            continue;
        }
        let path = format!("{}/{}", stack.join("/"), tag.name);
        match path.as_str() {
            "/malloc" => assert_eq!(tag.attr("version"), "1"),
            "malloc/heap" => assert_eq!(tag.attr("nr"), "0"),
            "malloc/heap/sizes" => {}
            "malloc/heap/sizes/size" => {
                assert!(tag.num("from") <= tag.num("to"), "{line}");
                assert!(tag.num("count") > 0, "{line}");
                assert!(
                    tag.num("total") >= tag.num("count") * tag.num("from")
                        && tag.num("total") <= tag.num("count") * tag.num("to"),
                    "{line}"
                );
                sizes_count += tag.num("count");
                sizes_total += tag.num("total");
            }
            "malloc/heap/total" | "malloc/total" => {
                let kind = tag.attr("type");
                let (count, size) = (tag.num("count"), tag.num("size"));
                if path == "malloc/heap/total" {
                    assert!(kind == "fast" || kind == "rest", "{line}");
                    heap_count += count;
                    heap_total += size;
                } else if kind == "mmap" {
                    mmap_count = Some(count);
                } else {
                    assert!(kind == "fast" || kind == "rest", "{line}");
                }
            }
            "malloc/heap/system" | "malloc/system" => {
                let kind = tag.attr("type");
                assert!(kind == "current" || kind == "max", "{line}");
                tag.num("size");
            }
            "malloc/heap/aspace" | "malloc/aspace" => {
                let kind = tag.attr("type");
                assert!(kind == "total" || kind == "mprotect", "{line}");
                tag.num("size");
            }
            other => panic!("unexpected element {other} in malloc_info: {line}"),
        }
        path_seen.push(path);
        if !tag.empty {
            stack.push(tag.name);
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
    for want in [
        "/malloc",
        "malloc/heap",
        "malloc/heap/sizes",
        "malloc/heap/total",
        "malloc/heap/system",
        "malloc/heap/aspace",
        "malloc/total",
        "malloc/system",
        "malloc/aspace",
    ] {
        assert!(path_seen.iter().any(|p| p == want), "no {want} in {xml}");
    }
    assert_eq!(path_seen[0], "/malloc", "{xml}");
    assert_eq!(
        path_seen.iter().filter(|p| *p == "malloc/heap").count(),
        1,
        "{xml}"
    );
    assert_eq!(
        (sizes_count, sizes_total),
        (heap_count, heap_total),
        "the sizes add up to the fast and rest totals: {xml}"
    );
    mmap_count.expect("an mmap total")
}

/// The `name = value` rows of `malloc_stats`' summary in `stderr`: its
/// arena's and its total's.
fn malloc_stats_rows(stderr: &str) -> (Figures, Figures) {
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "Arena 0:")
        .unwrap_or_else(|| panic!("no `Arena 0:` in {stderr}"));
    let row = |l: &str| {
        let (k, v) = l
            .split_once(" = ")
            .unwrap_or_else(|| panic!("not a malloc_stats row: {l:?}"));
        (k.trim_end().to_owned(), v.trim_start().parse().unwrap())
    };
    assert_eq!(lines[at + 3], "Total (incl. mmap):", "{stderr}");
    let arena = lines[at + 1..at + 3].iter().map(|l| row(l)).collect();
    let total = lines[at + 4..at + 8].iter().map(|l| row(l)).collect();
    (arena, total)
}

/// glibc's `<malloc.h>` extensions: `mallinfo2`, `mallinfo`,
/// `malloc_stats`, `malloc_info` and `mallopt` against blocks of known
/// live bytes (`tests/c/mallinfo.c` checks the figures against the blocks;
/// here `malloc_stats` against `mallinfo2`, and `malloc_info`'s shape),
/// and `mallopt(M_TRIM_THRESHOLD)` taking effect.
#[test]
fn glibc_extension_api() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    for profile in [Profile::Release, Profile::Dev] {
        if let Some(defined) = nm(&["-D", "--defined-only"], library_of(profile)) {
            for name in [
                "mallinfo2",
                "mallinfo",
                "malloc_stats",
                "malloc_info",
                "mallopt",
                "malloc_trim",
            ] {
                assert!(
                    defined.iter().any(|d| d == name),
                    "{name} is not exported ({profile:?})"
                );
            }
        }
    }
    let exe = program(
        "mallinfo.c",
        "cc",
        &["-pthread", "-Wno-deprecated-declarations"],
    );
    for profile in [Profile::Release, Profile::Dev] {
        let what = format!("mallinfo.c ({profile:?})");
        let mut cmd = Command::new(&exe);
        cmd.arg("check");
        if cfg!(feature = "secure") {
            cmd.arg("secure");
        }
        // No decay pass while it runs: the cached huge mappings it counts
        // stay cached.
        cmd.env("HAKMEM_PURGE_DELAY_MS", "3600000");
        let out = run_with(&mut cmd, Some(profile));
        let stdout = served(&out, &what);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.contains("mallinfo ok"), "{what}: {stdout}\n{stderr}");

        let info = numbers_after(&stdout, "mallinfo2");
        let (arena, total) = malloc_stats_rows(&stderr);
        let near = |a: usize, b: usize| a.abs_diff(b) <= 64 << 10;
        let (system, in_use) = (field(&arena, "system bytes"), field(&arena, "in use bytes"));
        assert!(near(system, field(&info, "arena")), "{what}: {stderr}");
        assert!(near(in_use, field(&info, "uordblks")), "{what}: {stderr}");
        let hblkhd = field(&info, "hblkhd");
        assert_eq!(field(&total, "system bytes"), system + hblkhd, "{what}");
        assert_eq!(field(&total, "in use bytes"), in_use + hblkhd, "{what}");
        assert!(
            field(&total, "max mmap regions") >= field(&info, "hblks"),
            "{what}"
        );
        assert!(field(&total, "max mmap bytes") >= hblkhd, "{what}");

        let xml = stdout
            .split_once("--- xml\n")
            .and_then(|(_, rest)| rest.split_once("--- end\n"))
            .unwrap_or_else(|| panic!("{what}: no XML in {stdout}"))
            .0;
        assert_eq!(check_malloc_info(xml), field(&info, "hblks"), "{what}");
    }
    // mallopt(M_TRIM_THRESHOLD, 0): every slab given back is purged at
    // once; without it (and no decay pass due), none is.
    for profile in [Profile::Release, Profile::Dev] {
        let mut purged = [0; 2];
        for (i, mode) in ["off", "on"].into_iter().enumerate() {
            let what = format!("mallinfo.c trim-threshold {mode} ({profile:?})");
            let mut cmd = Command::new(&exe);
            cmd.args(["trim-threshold", mode])
                .env("HAKMEM_PURGE_DELAY_MS", "3600000");
            let out = run_with(&mut cmd, Some(profile));
            let stdout = served(&out, &what);
            assert!(stdout.contains("trim-threshold ok"), "{what}: {stdout}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            purged[i] = field(
                &numbers_after(&stderr, "hakmem: stats: slabs_purged="),
                "slabs_purged",
            );
        }
        assert_eq!(purged[0], 0, "{profile:?}: purged without mallopt");
        assert!(
            purged[1] >= 16,
            "{profile:?}: {} slabs purged with M_TRIM_THRESHOLD 0",
            purged[1]
        );
    }
}
