//! The C set of `cargo xtask bench`: the shared libraries preloaded into
//! the C and C++ programs (built or found), the programs themselves
//! (compiled with `cc`/`c++`), and the check that each run used the
//! allocator it names.
//!
//! Libraries live under `<target>/bench/preload/`:
//! - `hakmem/libhakmem.so`, `hakmem+secure/libhakmem.so`: copies of
//!   `cargo build --release -p hakmem-preload` (the hardened one built in
//!   a target directory of its own, `hakmem+secure-target/`), rebuilt by
//!   cargo's own freshness check on every bench run without `--no-build`;
//! - `<crate>-<version>/`: mimalloc and jemalloc built from the sources
//!   that `libmimalloc-sys` and `tikv-jemalloc-sys` ship (found through
//!   `cargo metadata`), built once and kept while the file exists.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::suite::{Library, Preload, Program, Workload, CXX_FLAGS, C_FLAGS, DEBIAN_JEMALLOC};
use crate::{cargo, run_step, workspace_root};

/// A C-set allocator ready to run: its library (none for glibc) and how to
/// recognise it.
pub struct Lib {
    /// The allocator's name.
    pub name: &'static str,
    /// The library to preload; `None` for glibc.
    pub path: Option<PathBuf>,
    /// The `build=` name hakmem's stats lines must show, for hakmem.
    pub hakmem_build: Option<&'static str>,
    /// What the library is, for the report.
    pub note: String,
}

impl Lib {
    /// The environment of a run: `LD_PRELOAD`, and `HAKMEM_STATS=1` for
    /// hakmem (its summary at exit proves it served the run; the counters
    /// are kept either way, so the option costs nothing until exit).
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut env = Vec::new();
        if let Some(p) = &self.path {
            env.push(("LD_PRELOAD", p.clone().into_os_string()));
        }
        if self.hakmem_build.is_some() {
            env.push(("HAKMEM_STATS", "1".into()));
        }
        env
    }
}

/// Makes every selected library ready (building what is missing, unless
/// `build` is false) and returns those available, in table order. Notes on
/// libraries skipped or replaced go to `notes`.
pub fn prepare(
    selected: &[&'static Preload],
    target: &Path,
    build: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<Lib>, String> {
    let dir = target.join("bench").join("preload");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut libs = Vec::new();
    let mut metadata = None;
    for p in selected {
        let lib = match &p.library {
            Library::Glibc => Some(Lib {
                name: p.name,
                path: None,
                hakmem_build: None,
                note: format!("glibc's malloc, no LD_PRELOAD ({})", glibc_version()),
            }),
            Library::Hakmem { features, build: b } => {
                Some(hakmem(p.name, features, b, target, &dir, build)?)
            }
            Library::MimallocCrate => {
                let meta = cached_metadata(&mut metadata)?;
                Some(mimalloc(p.name, meta, &dir)?)
            }
            Library::JemallocCrate => {
                let meta = cached_metadata(&mut metadata)?;
                jemalloc(p.name, meta, &dir, notes)
            }
            Library::Installed { path, package } => {
                if Path::new(path).exists() {
                    Some(Lib {
                        name: p.name,
                        path: Some(PathBuf::from(path)),
                        hakmem_build: None,
                        note: format!("{path} ({})", debian_version(package)),
                    })
                } else {
                    notes.push(format!(
                        "{}: skipped, {path} is not installed (`apt-get install {package}`)",
                        p.name
                    ));
                    None
                }
            }
        };
        libs.extend(lib);
    }
    Ok(libs)
}

/// libhakmem.so with `features` beyond the defaults, copied under `dir`.
fn hakmem(
    name: &'static str,
    features: &str,
    expect: &'static str,
    target: &Path,
    dir: &Path,
    build: bool,
) -> Result<Lib, String> {
    let copy = dir.join(name).join("libhakmem.so");
    // The default build goes to the target directory everyone uses (as
    // `cargo build --release` would put it); another feature set to one of
    // its own, so that target/release/libhakmem.so stays the default one.
    let cargo_target = if features.is_empty() {
        target.to_path_buf()
    } else {
        dir.join(format!("{name}-target"))
    };
    if build {
        let mut cmd = cargo();
        cmd.args(["build", "--release", "-p", "hakmem-preload"])
            .arg("--target-dir")
            .arg(&cargo_target);
        if !features.is_empty() {
            cmd.arg("--features").arg(features);
        }
        if !run_step(&format!("build libhakmem.so for {name}"), &mut cmd) {
            return Err(format!("the build of libhakmem.so for {name} failed"));
        }
        install(&cargo_target.join("release").join("libhakmem.so"), &copy)?;
    } else if !copy.exists() {
        return Err(format!(
            "{} is missing: run without --no-build once",
            copy.display()
        ));
    }
    let how = if features.is_empty() {
        "default features".to_string()
    } else {
        format!("--features {features}")
    };
    let from = if build {
        format!("tree at {}", tree_state())
    } else {
        "--no-build: the copy of an earlier build".to_string()
    };
    Ok(Lib {
        name,
        path: Some(copy),
        hakmem_build: Some(expect),
        note: format!(
            "libhakmem.so, `cargo build --release -p hakmem-preload` ({how}; build={expect}), \
             {from}"
        ),
    })
}

/// Copies `from` to `to` through a temporary name, so that `to` is never
/// half written.
fn install(from: &Path, to: &Path) -> Result<(), String> {
    let parent = to.parent().expect("an installed file has a folder");
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp)
        .and_then(|_| std::fs::rename(&tmp, to))
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    Ok(())
}

/// The commit the workspace is at, and whether `crates/` differs from it.
pub fn tree_state() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "an unknown commit (no git)".into();
    };
    let mut subject = git(&["log", "-1", "--format=%s"]).unwrap_or_default();
    if subject.chars().count() > 72 {
        subject = subject.chars().take(69).collect::<String>() + "...";
    }
    match git(&["status", "--porcelain", "--", "crates"]) {
        Some(s) if !s.is_empty() => {
            format!("commit {commit} (\"{subject}\") with uncommitted changes in crates/")
        }
        _ => format!("commit {commit} (\"{subject}\")"),
    }
}

/// `cargo metadata` of the workspace with every feature on (so that the
/// optional allocator crates of `hakmem-benches` are in the graph), for
/// this platform only.
fn cached_metadata(cache: &mut Option<serde_json::Value>) -> Result<&serde_json::Value, String> {
    if cache.is_none() {
        let out = cargo()
            .args([
                "metadata",
                "--format-version",
                "1",
                "--all-features",
                "--filter-platform",
            ])
            .arg(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
            .current_dir(workspace_root())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
        if !out.status.success() {
            return Err("cargo metadata failed".into());
        }
        let v = serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
        *cache = Some(v);
    }
    Ok(cache.as_ref().expect("just filled"))
}

/// The folder and version of the package `name` that `hakmem-benches`
/// depends on (directly or not), from `cargo metadata`'s resolve graph.
fn package_of_benches(meta: &serde_json::Value, name: &str) -> Result<(PathBuf, String), String> {
    let nodes = meta["resolve"]["nodes"]
        .as_array()
        .ok_or("cargo metadata gave no resolve graph")?;
    let packages = meta["packages"]
        .as_array()
        .ok_or("cargo metadata gave no packages")?;
    let package = |id: &str| packages.iter().find(|p| p["id"].as_str() == Some(id));
    let root = packages
        .iter()
        .find(|p| p["name"] == "hakmem-benches")
        .and_then(|p| p["id"].as_str())
        .ok_or("hakmem-benches is not in cargo metadata")?;
    let mut queue = vec![root.to_string()];
    let mut seen = Vec::new();
    while let Some(id) = queue.pop() {
        if seen.contains(&id) {
            continue;
        }
        if let Some(p) = package(&id).filter(|p| p["name"] == name) {
            let manifest = p["manifest_path"].as_str().ok_or("no manifest_path")?;
            let dir = Path::new(manifest)
                .parent()
                .ok_or("a manifest has a folder")?
                .to_path_buf();
            let version = p["version"].as_str().unwrap_or("?").to_string();
            return Ok((dir, version));
        }
        if let Some(node) = nodes.iter().find(|n| n["id"].as_str() == Some(&id)) {
            for d in node["deps"].as_array().into_iter().flatten() {
                if let Some(pkg) = d["pkg"].as_str() {
                    queue.push(pkg.to_string());
                }
            }
        }
        seen.push(id);
    }
    Err(format!("{name} is not a dependency of hakmem-benches"))
}

/// The compiler for C (`$CC`, else `cc`) or C++ (`$CXX`, else `c++`).
fn compiler(cxx: bool) -> OsString {
    let (var, default) = if cxx { ("CXX", "c++") } else { ("CC", "cc") };
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// mimalloc as an overriding shared library, from `libmimalloc-sys`'s
/// `c_src/mimalloc/v3` (the version the `mimalloc` crate builds by
/// default), with the defines its build script uses for a release build.
fn mimalloc(name: &'static str, meta: &serde_json::Value, dir: &Path) -> Result<Lib, String> {
    let (crate_dir, version) = package_of_benches(meta, "libmimalloc-sys")?;
    let src = crate_dir.join("c_src").join("mimalloc").join("v3");
    let mi_version = std::fs::read_to_string(src.join("include").join("mimalloc.h"))
        .ok()
        .and_then(|h| {
            h.lines()
                .find_map(|l| l.strip_prefix("#define MI_MALLOC_VERSION"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u32>().ok())
        })
        .map_or("v3".to_string(), |v| {
            format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
        });
    let out = dir
        .join(format!("libmimalloc-sys-{version}"))
        .join("libmimalloc.so");
    if !out.exists() {
        std::fs::create_dir_all(out.parent().expect("a folder"))
            .map_err(|e| format!("cannot create the folder of {}: {e}", out.display()))?;
        let tmp = out.with_extension("tmp");
        let mut cmd = Command::new(compiler(false));
        cmd.args([
            "-O3",
            "-fPIC",
            "-shared",
            "-DMI_MALLOC_OVERRIDE",
            "-DMI_DEBUG=0",
            "-DMI_BUILD_RELEASE",
            "-DNDEBUG",
            "-ftls-model=initial-exec",
            "-fno-builtin-malloc",
            "-Wno-error=date-time",
        ])
        .arg("-I")
        .arg(src.join("include"))
        .arg("-I")
        .arg(src.join("src"))
        .arg(src.join("src").join("static.c"))
        .arg("-o")
        .arg(&tmp)
        .arg("-lpthread");
        if !run_step(
            &format!("build mimalloc {mi_version} as a shared library"),
            &mut cmd,
        ) {
            return Err("building mimalloc failed".into());
        }
        std::fs::rename(&tmp, &out).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
    }
    Ok(Lib {
        name,
        path: Some(out),
        hakmem_build: None,
        note: format!(
            "mimalloc {mi_version}, libmimalloc-sys {version}'s c_src/mimalloc/v3 (the Rust \
             set's mimalloc) built as a shared library with MI_MALLOC_OVERRIDE, -O3"
        ),
    })
}

/// jemalloc as a shared library from `tikv-jemalloc-sys`'s sources and the
/// `configure` script it ships, configured as its build script does
/// (`--disable-stats`, its version string) but unprefixed and shared, with
/// its C++ operators. Falls back to Debian's library if that fails.
fn jemalloc(
    name: &'static str,
    meta: &serde_json::Value,
    dir: &Path,
    notes: &mut Vec<String>,
) -> Option<Lib> {
    let built = build_jemalloc(meta, dir);
    match built {
        Ok((path, note)) => Some(Lib {
            name,
            path: Some(path),
            hakmem_build: None,
            note,
        }),
        Err(e) if Path::new(DEBIAN_JEMALLOC).exists() => {
            let msg = format!(
                "jemalloc: {e}; using Debian's {DEBIAN_JEMALLOC} ({}) instead",
                debian_version("libjemalloc2")
            );
            eprintln!("==> {msg}");
            notes.push(msg.clone());
            Some(Lib {
                name,
                path: Some(PathBuf::from(DEBIAN_JEMALLOC)),
                hakmem_build: None,
                note: msg,
            })
        }
        Err(e) => {
            eprintln!("==> jemalloc skipped: {e}");
            notes.push(format!("jemalloc: skipped, {e}"));
            None
        }
    }
}

fn build_jemalloc(meta: &serde_json::Value, dir: &Path) -> Result<(PathBuf, String), String> {
    let (crate_dir, version) = package_of_benches(meta, "tikv-jemalloc-sys")?;
    let je_version = version
        .split_once('+')
        .map_or(version.as_str(), |(_, v)| v)
        .to_string();
    let short = je_version
        .split('-')
        .next()
        .unwrap_or(&je_version)
        .to_string();
    let home = dir.join(format!("tikv-jemalloc-sys-{}", version.replace('+', "_")));
    let out = home.join("libjemalloc.so.2");
    let note = format!(
        "jemalloc {short}, tikv-jemalloc-sys {version}'s sources (the Rust set's jemalloc) \
         built as a shared library: configure --disable-stats as its build script, \
         unprefixed, with its C++ operators"
    );
    if out.exists() {
        return Ok((out, note));
    }
    let build = home.join("build");
    let log_path = home.join("build.log");
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let logged = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let l1 = log.try_clone().map_err(|e| e.to_string())?;
        let l2 = log.try_clone().map_err(|e| e.to_string())?;
        let status = cmd
            .current_dir(&build)
            .stdout(Stdio::from(l1))
            .stderr(Stdio::from(l2))
            .status()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed ({status}); see {}",
                log_path.display()
            ))
        }
    };
    eprintln!(
        "\n==> build jemalloc {short} as a shared library (about a minute on 2 cores; log: {})",
        log_path.display()
    );
    let status = Command::new("cp")
        .arg("-R")
        .arg(crate_dir.join("jemalloc"))
        .arg(&build)
        .status()
        .map_err(|e| format!("cannot run cp: {e}"))?;
    if !status.success() {
        return Err("copying jemalloc's sources failed".into());
    }
    std::fs::copy(
        crate_dir.join("configure").join("configure"),
        build.join("configure"),
    )
    .map_err(|e| format!("tikv-jemalloc-sys ships no configure script: {e}"))?;
    logged(
        Command::new("sh")
            .arg("configure")
            .arg(format!("--with-version={je_version}"))
            .args(["--enable-doc=no", "--disable-static", "--disable-stats"])
            .env("CC", compiler(false))
            .env("CXX", compiler(true)),
        "jemalloc's configure",
    )?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    logged(
        Command::new("make")
            .arg(format!("-j{jobs}"))
            .arg("build_lib_shared"),
        "make (jemalloc)",
    )?;
    std::fs::rename(build.join("lib").join("libjemalloc.so.2"), &out)
        .map_err(|e| format!("jemalloc's build left no lib/libjemalloc.so.2: {e}"))?;
    let _ = std::fs::remove_dir_all(&build);
    Ok((out, note))
}

/// The installed version of a Debian package, or "Debian" when unknown.
fn debian_version(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
        .map_or_else(
            || format!("Debian's {package}"),
            |o| {
                format!(
                    "Debian's {package} {}",
                    String::from_utf8_lossy(&o.stdout).trim()
                )
            },
        )
}

/// glibc's version, from `ldd --version`.
fn glibc_version() -> String {
    Command::new("ldd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.rsplit(' ').next())
                .map(|v| format!("glibc {v}"))
        })
        .unwrap_or_else(|| "glibc".into())
}

/// Compiles the C set's programs of `workloads` (each binary once) into
/// `dir`.
pub fn compile(workloads: &[&Workload], dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let src = workspace_root().join("benches").join("c");
    let mut done: Vec<&str> = Vec::new();
    for w in workloads {
        let Program::C {
            binary,
            source,
            flags,
        } = &w.program
        else {
            continue;
        };
        if done.contains(binary) {
            continue;
        }
        done.push(binary);
        let cxx = source.ends_with(".cpp");
        let mut cmd = Command::new(compiler(cxx));
        cmd.args(if cxx { &CXX_FLAGS[..] } else { &C_FLAGS[..] })
            .args(*flags)
            .arg("-o")
            .arg(dir.join(binary))
            .arg(src.join(source))
            .arg("-ldl");
        if !run_step(&format!("compile {binary}"), &mut cmd) {
            return Err(format!("compiling {source} failed"));
        }
    }
    Ok(())
}

/// Checks that a run was served by `lib`: the `malloc_from=` the program
/// printed (the object defining its `malloc`) is the preloaded library
/// (glibc's libc for none), and for hakmem its exit statistics, with the
/// expected `build=`, are on stderr.
pub fn verify(lib: &Lib, line: &str, stderr: &str) -> Result<(), String> {
    let from = line
        .split("malloc_from=")
        .nth(1)
        .and_then(|r| r.split([',', ' ']).next())
        .filter(|f| !f.is_empty())
        .ok_or_else(|| format!("no malloc_from= in {line:?}"))?;
    let from_path = Path::new(from);
    match &lib.path {
        Some(want) => {
            let same = match (from_path.canonicalize(), want.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => from_path == want,
            };
            if !same {
                return Err(format!(
                    "malloc came from {from}, not the preloaded {}",
                    want.display()
                ));
            }
        }
        None => {
            let file = from_path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !file.starts_with("libc.so") && !file.starts_with("libc-") {
                return Err(format!("malloc came from {from}, not glibc's libc"));
            }
        }
    }
    if let Some(build) = lib.hakmem_build {
        let tail = format!(" build={build}");
        let stats = stderr
            .lines()
            .any(|l| l.starts_with("hakmem: stats: mapped_bytes="));
        let named = stderr
            .lines()
            .any(|l| l.starts_with("hakmem: stats:") && l.trim_end().ends_with(&tail));
        if !stats || !named {
            return Err(format!(
                "libhakmem.so's exit statistics (HAKMEM_STATS=1) with build={build} are \
                 missing from stderr: hakmem did not serve this run"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{verify, Lib};
    use std::path::PathBuf;

    fn lib(path: Option<&str>, build: Option<&'static str>) -> Lib {
        Lib {
            name: "x",
            path: path.map(PathBuf::from),
            hakmem_build: build,
            note: String::new(),
        }
    }

    #[test]
    fn a_run_must_name_the_library_it_was_given() {
        let line = "c-hot: libfoo.so: 5 ops/s (10 ops in 2.000 s), threads=1, \
                    malloc_from=/opt/x/libfoo.so, peak_rss_kib=20";
        assert!(verify(&lib(Some("/opt/x/libfoo.so"), None), line, "").is_ok());
        assert!(verify(&lib(Some("/opt/y/libbar.so"), None), line, "").is_err());
        assert!(verify(&lib(None, None), line, "").is_err());
        let glibc = "c-hot: libc.so.6: 5 ops/s, malloc_from=/lib/x86_64-linux-gnu/libc.so.6, \
                     peak_rss_kib=20";
        assert!(verify(&lib(None, None), glibc, "").is_ok());
        assert!(verify(&lib(None, None), "c-hot: 5 ops/s", "").is_err());
    }

    #[test]
    fn a_hakmem_run_must_print_its_statistics() {
        let line = "c-hot: libhakmem.so: 5 ops/s, malloc_from=/opt/libhakmem.so, peak_rss_kib=2";
        let l = lib(
            Some("/opt/libhakmem.so"),
            Some("hakmem+box-refactor+fast-path"),
        );
        let stats = "hakmem: stats: mapped_bytes=0 peak_mapped_bytes=0\n\
                     hakmem: stats: slabs in use by class (size:count): none \
                     build=hakmem+box-refactor+fast-path\n";
        assert!(verify(&l, line, stats).is_ok());
        assert!(verify(&l, line, "").is_err());
        let secure = stats.replace("fast-path\n", "fast-path+secure\n");
        assert!(verify(&l, line, &secure).is_err());
    }
}
