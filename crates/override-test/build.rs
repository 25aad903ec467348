//! Builds the C library (`c/c_side.c`) and, where a `c++` is found, the C++
//! one (`c/cxx_side.cpp`) that this package's binaries link: `cc -c` (and
//! `c++ -c`), then `ar`, into one static archive, `libhakmem_override_c.a`
//! in `OUT_DIR`. The C side includes the workspace's `include/hakmem.h`.
//! With the C++ side, `cfg(have_cxx)` is set and libstdc++ is linked.
//!
//! Plain commands rather than the `cc` crate: two files and one archive
//! need no compiler detection, and this keeps the workspace's
//! dependencies as they are (`CC`, `CXX`, `AR` and `CFLAGS` are honoured).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let include = dir.join("../../include");
    println!("cargo::rerun-if-changed=c");
    println!("cargo::rerun-if-changed=../../include/hakmem.h");
    for var in ["CC", "CXX", "AR", "CFLAGS"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(have_cxx)");

    let tool = |var: &str, default: &str| env::var(var).unwrap_or_else(|_| default.into());
    let cflags: Vec<String> = env::var("CFLAGS")
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut objects = vec![out.join("c_side.o")];
    compile(
        &tool("CC", "cc"),
        &dir.join("c/c_side.c"),
        &objects[0],
        &include,
        &[
            &["-std=c11"][..],
            &cflags.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
    let cxx = tool("CXX", "c++");
    let have_cxx = Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if have_cxx {
        objects.push(out.join("cxx_side.o"));
        compile(
            &cxx,
            &dir.join("c/cxx_side.cpp"),
            &objects[1],
            &include,
            &["-std=c++17"],
        );
        println!("cargo::rustc-cfg=have_cxx");
    } else {
        println!("cargo::warning=no {cxx}: the C++ side is not built or tested");
    }

    let archive = out.join("libhakmem_override_c.a");
    // `ar r` adds to an archive: start from none.
    let _ = std::fs::remove_file(&archive);
    let status = Command::new(tool("AR", "ar"))
        .arg("rcs")
        .arg(&archive)
        .args(&objects)
        .status()
        .expect("ar runs");
    assert!(status.success(), "ar failed");
    println!("cargo::rustc-link-search=native={}", out.display());
    println!("cargo::rustc-link-lib=static=hakmem_override_c");
    if have_cxx {
        println!("cargo::rustc-link-lib=dylib=stdc++");
    }
}

/// `compiler -c src -o obj`, position-independent (the binaries are PIE),
/// warnings as errors.
fn compile(compiler: &str, src: &Path, obj: &Path, include: &Path, flags: &[&str]) {
    let status = Command::new(compiler)
        .args(["-c", "-O1", "-fPIC", "-Wall", "-Wextra", "-Werror"])
        .args(flags)
        .arg("-I")
        .arg(include)
        .arg("-o")
        .arg(obj)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(status.success(), "{compiler} failed on {}", src.display());
}
