//! What the tests of libhakmem.so share: which library they test and how
//! it is built, and how their C and C++ programs are compiled.
//!
//! The library is built with `$CARGO build -p hakmem-preload` (the cargo
//! running the test) into `<target>/preload-tests/hakmem+<features>`: a
//! target directory of its own, so it never waits on the outer cargo's
//! lock, and one per feature combination (the TLS model included). The
//! features are the test's own (`cargo test -p hakmem-preload
//! --no-default-features --features fast-path` tests that combination).
//! `HAKMEM_PRELOAD_LIB=/path/to/libhakmem.so` tests a library built
//! elsewhere instead. The programs in `tests/c` are compiled into
//! `<target>/preload-tests/<build name>/programs`.
//!
//! Each test binary uses part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A cargo profile the library is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// What users load.
    Release,
    /// Overflow checks and debug assertions on.
    Dev,
}

/// The features the test was compiled with, as cargo arguments, and the
/// build name the library reports for them (the facade's `BUILD_NAME`).
pub fn features() -> (String, String) {
    let mut list = Vec::new();
    for (on, name) in [
        (cfg!(feature = "box-refactor"), "box-refactor"),
        (cfg!(feature = "fast-path"), "fast-path"),
        (cfg!(feature = "secure"), "secure"),
    ] {
        if on {
            list.push(name);
        }
    }
    let name = std::iter::once("hakmem")
        .chain(list.iter().copied())
        .collect::<Vec<_>>()
        .join("+");
    // Not part of the build's name: how thread-locals are reached.
    if cfg!(feature = "initial-exec-tls") {
        list.push("initial-exec-tls");
    }
    (list.join(","), name)
}

/// `<target>/preload-tests`.
pub fn target_dir() -> PathBuf {
    // <target>/debug/deps/<test>-<hash>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().join("preload-tests")
}

/// libhakmem.so of `profile`, built once per profile (or
/// `HAKMEM_PRELOAD_LIB`).
pub fn library_of(profile: Profile) -> &'static Path {
    static LIBS: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    LIBS[profile as usize].get_or_init(|| {
        if let Some(lib) = std::env::var_os("HAKMEM_PRELOAD_LIB") {
            let lib = PathBuf::from(lib);
            assert!(lib.exists(), "HAKMEM_PRELOAD_LIB={lib:?} does not exist");
            return lib;
        }
        let (features, _) = features();
        // (`cargo xtask test`'s C smoke test loads the default one from
        // `hakmem+box-refactor+fast-path+initial-exec-tls`.)
        let dir = target_dir().join(format!("hakmem+{}", features.replace(',', "+")));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "hakmem-preload",
            "--no-default-features",
        ]);
        if !features.is_empty() {
            cmd.args(["--features", &features]);
        }
        if profile == Profile::Release {
            cmd.arg("--release");
        }
        let status = cmd
            .arg("--target-dir")
            .arg(&dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building libhakmem.so failed");
        let sub = match profile {
            Profile::Release => "release",
            Profile::Dev => "debug",
        };
        let lib = dir.join(sub).join("libhakmem.so");
        assert!(lib.exists(), "{lib:?} was not built");
        lib
    })
}

/// libhakmem.so in the release profile.
pub fn library() -> &'static Path {
    library_of(Profile::Release)
}

/// True when `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Compiles `tests/c/<src>` with `compiler` at `-O1` and `extra`
/// arguments after the source, into the feature set's programs folder.
pub fn program(src: &str, compiler: &str, extra: &[&str]) -> PathBuf {
    let dir = target_dir().join(features().1).join("programs");
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
