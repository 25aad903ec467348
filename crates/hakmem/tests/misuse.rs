//! Misuse is reported with the address and stops the process (or is
//! ignored by option). Each case runs in a child process: this test binary
//! re-executes itself with `HAKMEM_MISUSE_CASE` set.

use std::process::Command;

const CASE_ENV: &str = "HAKMEM_MISUSE_CASE";

fn run_case(case: &str) -> *mut u8 {
    match case {
        "foreign" => {
            let on_stack = [0u8; 64];
            on_stack.as_ptr() as *mut u8
        }
        "libc" => {
            // SAFETY: plain libc allocation, deliberately handed to hakmem.
            unsafe { libc::malloc(64) }.cast()
        }
        "interior" => {
            let p = hakmem::malloc(256);
            // SAFETY: inside the block.
            unsafe { p.add(16) }
        }
        "metadata" => {
            let p = hakmem::malloc(256);
            (p as usize & !(hakmem_superslab::CHUNK_SIZE - 1)) as *mut u8
        }
        "double_large" => {
            let p = hakmem::malloc(200 << 10);
            // SAFETY: a live block, freed once here; the test frees it again.
            unsafe { hakmem::free(p) };
            p
        }
        "double_huge" => {
            let p = hakmem::malloc(40 << 20);
            // SAFETY: as above.
            unsafe { hakmem::free(p) };
            p
        }
        other => panic!("unknown case {other}"),
    }
}

/// The child side: when the environment names a case, commit the misuse.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE_ENV) else {
        return;
    };
    let p = run_case(&case);
    println!("misuse-address {:#018x}", p as usize);
    // SAFETY: deliberately invalid; hakmem must detect it without touching
    // the memory.
    unsafe { hakmem::free(p) };
    assert_eq!(hakmem::stats().invalid_frees, 1);
    println!("survived");
}

fn spawn(case: &str, ignore: bool) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CASE_ENV, case);
    if ignore {
        cmd.env("HAKMEM_INVALID_FREE", "ignore");
    } else {
        cmd.env_remove("HAKMEM_INVALID_FREE");
    }
    cmd.output().unwrap()
}

fn check(case: &str, why: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = spawn(case, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let addr = stdout
        .lines()
        .find_map(|l| l.split("misuse-address ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{case}: child printed no address: {stdout} {stderr}"));
    let report = format!("hakmem: invalid free({addr}): ");
    assert!(
        stderr.contains(&report),
        "{case}: no report `{report}` in {stderr}"
    );
    assert!(
        stderr.contains(why),
        "{case}: report does not say `{why}`: {stderr}"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{case}: {:?}",
        out.status
    );
    assert!(!stdout.contains("survived"));

    let out = spawn(case, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{case} ignored: {:?} {stderr}",
        out.status
    );
    assert!(stdout.contains("survived"));
    assert!(stderr.contains("ignored"), "{case}: {stderr}");
}

#[test]
fn free_of_a_stack_pointer_is_reported() {
    check("foreign", "not allocated by hakmem");
}

#[test]
fn free_of_another_allocators_pointer_is_reported() {
    check("libc", "not allocated by hakmem");
}

#[test]
fn free_of_an_interior_pointer_is_reported() {
    check("interior", "inside a block");
}

#[test]
fn free_into_region_metadata_is_reported() {
    check("metadata", "not the start of a live hakmem block");
}

#[test]
fn double_free_of_a_large_block_is_reported() {
    check("double_large", "not the start of a live hakmem block");
}

#[test]
fn double_free_of_a_huge_block_is_reported() {
    check("double_huge", "not allocated by hakmem");
}
