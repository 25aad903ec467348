//! libhakmem.so under real programs.
//!
//! The library is built once per test run with `cargo build --release` into
//! `<target>/preload-tests` (a target directory of its own, so it never
//! waits on the outer cargo's lock); the C and C++ programs in `tests/c`
//! are compiled there with `cc`/`c++`. Each program runs under
//! `LD_PRELOAD` with `HAKMEM_STATS=1`, and the `hakmem: stats:` lines it
//! prints at exit prove that hakmem served it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn target_dir() -> PathBuf {
    // <target>/debug/deps/preload-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("preload-tests")
}

/// Builds libhakmem.so (once) and returns its path.
fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "hakmem-preload",
                "--target-dir",
            ])
            .arg(&dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building libhakmem.so failed");
        let lib = dir.join("release/libhakmem.so");
        assert!(lib.exists());
        lib
    })
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compiles `tests/c/<src>` with `compiler` (once per name).
fn program(src: &str, compiler: &str, extra: &[&str]) -> PathBuf {
    let dir = target_dir().join("programs");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(src.replace('.', "_"));
    let status = Command::new(compiler)
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/c")
                .join(src),
        )
        .args(extra)
        .status()
        .expect("the compiler runs");
    assert!(status.success(), "compiling {src} failed");
    out
}

fn run(cmd: &mut Command, preload: bool) -> Output {
    cmd.env_remove("LD_PRELOAD")
        .env_remove("HAKMEM_INVALID_FREE");
    if preload {
        cmd.env("LD_PRELOAD", library()).env("HAKMEM_STATS", "1");
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
    let out = served(&run(&mut Command::new(exe), true), "abi_edges");
    assert!(out.contains("abi-edges ok"), "{out}");
}

#[test]
fn threaded_c_program_with_cross_thread_frees() {
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    let exe = program("threads.c", "cc", &["-pthread"]);
    let out = run(&mut Command::new(exe), true);
    let stdout = served(&out, "threads.c");
    assert!(stdout.contains("threads ok"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("heaps_created="), "{stderr}");
}

#[test]
fn cpp_new_and_delete_go_through_hakmem() {
    if !have("c++") {
        eprintln!("c++ not found: skipped");
        return;
    }
    let exe = program("newdelete.cpp", "c++", &["-pthread", "-std=c++17"]);
    let out = served(&run(&mut Command::new(exe), true), "newdelete");
    assert!(out.contains("newdelete ok 1"), "{out}");
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
    use std::os::unix::process::ExitStatusExt;
    if !have("cc") {
        eprintln!("cc not found: skipped");
        return;
    }
    // -O0 -fno-builtin: gcc would otherwise delete a malloc/free pair.
    let exe = program("misuse.c", "cc", &["-O0", "-fno-builtin"]);
    for (case, why) in [
        ("stack", "not allocated by hakmem"),
        ("interior", "inside a block"),
        ("double-large", "not the start of a live hakmem block"),
        ("double-huge", "not allocated by hakmem"),
    ] {
        let out = run(Command::new(&exe).arg(case), true);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let addr = stdout
            .lines()
            .find_map(|l| l.strip_prefix("misuse-address "))
            .unwrap_or_else(|| panic!("{case}: {stdout}"));
        let addr = usize::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        let report = format!("hakmem: invalid free({addr:#018x}): ");
        assert!(
            stderr.contains(&report),
            "{case}: no `{report}` in {stderr}"
        );
        assert!(stderr.contains(why), "{case}: {stderr}");
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{case}");
        assert!(!stdout.contains("survived"));

        let mut cmd = Command::new(&exe);
        cmd.arg(case)
            .env("LD_PRELOAD", library())
            .env("HAKMEM_INVALID_FREE", "ignore");
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{case} ignored: {:?}", out.status);
        assert!(stdout.contains("survived"), "{case}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("; ignored"),
            "{case}"
        );
    }
}
