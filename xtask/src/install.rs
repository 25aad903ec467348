//! `cargo xtask install --prefix DIR`: hakmem for C programs, installed as
//!
//! - `DIR/lib/libhakmem.so` and `DIR/lib/libhakmem.a` (the release build of
//!   `crates/hakmem-preload`, a `cdylib` and a `staticlib`),
//! - `DIR/include/hakmem.h` (the workspace's `include/hakmem.h`),
//! - `DIR/lib/pkgconfig/hakmem.pc`, with `DIR` as its prefix and, as
//!   `Libs.private`, the system libraries the static library needs: what
//!   rustc says for this very build (`--print native-static-libs`), less
//!   `-lgcc_s`, which the C compiler's driver links itself (libgcc_s, or
//!   libgcc_eh with `-static`, where `-lgcc_s` would fail).
//!
//! Each file is written beside its place and renamed over it, so a program
//! running on an installed libhakmem.so keeps its copy.
//!
//! [`check`] is `cargo xtask test`'s step: an install into a folder of the
//! target directory, then `crates/hakmem-preload/tests/c/linked.c`
//! compiled against the installed header and linked with the flags
//! `pkg-config` gives (or, without `pkg-config`, the `.pc` file read here)
//! three ways: fully static (`-static`, `--static`), with the archive and
//! the C library shared, and against the shared library; each binary is
//! run and its statistics checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;

use crate::{cargo, workspace_root};

/// Options of `cargo xtask install`.
#[derive(Args)]
pub struct InstallArgs {
    /// Where to install: DIR/lib, DIR/include and DIR/lib/pkgconfig.
    #[arg(long, value_name = "DIR")]
    prefix: PathBuf,
    /// Features of hakmem-preload to build with, beside its defaults (for
    /// example `secure`, the hardened build).
    #[arg(long)]
    features: Option<String>,
}

/// The installed files.
struct Installed {
    /// The prefix, absolute.
    prefix: PathBuf,
    /// `hakmem.pc`.
    pc: PathBuf,
}

/// `cargo xtask install`; true on success.
pub fn run(args: &InstallArgs) -> bool {
    match install(&args.prefix, args.features.as_deref()) {
        Ok(done) => {
            eprintln!(
                "==> installed hakmem under {} (pkg-config: PKG_CONFIG_PATH={})",
                done.prefix.display(),
                done.pc.parent().unwrap_or(&done.prefix).display()
            );
            true
        }
        Err(e) => {
            eprintln!("==> install: {e}");
            false
        }
    }
}

/// Builds the release libraries and installs them, the header and the
/// `.pc` file under `prefix`.
fn install(prefix: &Path, features: Option<&str>) -> Result<Installed, String> {
    std::fs::create_dir_all(prefix)
        .map_err(|e| format!("cannot create {}: {e}", prefix.display()))?;
    let prefix = std::fs::canonicalize(prefix)
        .map_err(|e| format!("cannot resolve {}: {e}", prefix.display()))?;
    let native = build(features)?;
    let release = crate::bench::target_dir()?.join("release");
    let lib = prefix.join("lib");
    let pc = lib.join("pkgconfig").join("hakmem.pc");
    for (from, to) in [
        (release.join("libhakmem.so"), lib.join("libhakmem.so")),
        (release.join("libhakmem.a"), lib.join("libhakmem.a")),
        (
            workspace_root().join("include/hakmem.h"),
            prefix.join("include/hakmem.h"),
        ),
    ] {
        put(&to, |tmp| std::fs::copy(&from, tmp).map(drop))?;
    }
    let text = pc_file(&prefix, &native);
    put(&pc, |tmp| std::fs::write(tmp, &text))?;
    Ok(Installed { prefix, pc })
}

/// `cargo rustc --release -p hakmem-preload --lib -- --print
/// native-static-libs`: builds libhakmem.so and libhakmem.a (their output
/// echoed) and returns what rustc printed as the static library's system
/// libraries (cargo replays the note when nothing needed rebuilding).
fn build(features: Option<&str>) -> Result<String, String> {
    let mut cmd = cargo();
    cmd.args(["rustc", "--release", "-p", "hakmem-preload", "--lib"]);
    if let Some(f) = features {
        cmd.args(["--features", f]);
    }
    cmd.args(["--", "--print", "native-static-libs"]);
    eprintln!("\n==> build libhakmem.so and libhakmem.a (release)\n    $ {cmd:?}");
    let out = cmd
        .current_dir(workspace_root())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    if !out.status.success() {
        return Err("the build of hakmem-preload failed".into());
    }
    stderr
        .lines()
        .find_map(|l| l.split_once("native-static-libs:"))
        .map(|(_, libs)| libs.trim().to_owned())
        .ok_or_else(|| "rustc printed no native-static-libs for libhakmem.a".into())
}

/// The text of `hakmem.pc` for `prefix`, from rustc's list of the static
/// library's system libraries.
fn pc_file(prefix: &Path, native: &str) -> String {
    let private: Vec<&str> = native
        .split_whitespace()
        .filter(|l| *l != "-lgcc_s")
        .collect();
    // Both inherit [workspace.package]'s version.
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "# hakmem {version}, installed by `cargo xtask install`.\n\
         prefix={prefix}\n\
         libdir=${{prefix}}/lib\n\
         includedir=${{prefix}}/include\n\
         \n\
         Name: hakmem\n\
         Description: hakmem, a general-purpose memory allocator: malloc, free, operator new and delete, hakmem_* statistics\n\
         Version: {version}\n\
         Cflags: -I${{includedir}}\n\
         Libs: -L${{libdir}} -lhakmem\n\
         # What libhakmem.a needs (rustc --print native-static-libs), less -lgcc_s:\n\
         # the compiler driver links libgcc_s itself, or libgcc_eh with -static.\n\
         Libs.private: {}\n",
        private.join(" "),
        prefix = prefix.display(),
    )
}

/// Makes `path` with `write` (a copy keeps the file's mode, so the shared
/// library stays executable) into a temporary file beside it, then a
/// rename, creating the folders on the way.
fn put(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), String> {
    let dir = path.parent().ok_or("a path without a folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = path.file_name().ok_or("a path without a name")?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    write(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("    {}", path.display());
    Ok(())
}

/// A `.pc` file's fields with its variables substituted: what `pkg-config`
/// gives for `--cflags` and for `--libs` (with `--static`: and
/// `Libs.private`). Used where there is no `pkg-config`.
fn pc_flags(pc: &str, static_link: bool) -> (Vec<String>, Vec<String>) {
    let mut vars: Vec<(String, String)> = Vec::new();
    let expand = |text: &str, vars: &[(String, String)]| {
        let mut out = text.to_owned();
        // Later variables refer to earlier ones: substitute until stable.
        for _ in 0..8 {
            let before = out.clone();
            for (k, v) in vars {
                out = out.replace(&format!("${{{k}}}"), v);
            }
            if out == before {
                break;
            }
        }
        out
    };
    let (mut cflags, mut libs, mut private) = (Vec::new(), Vec::new(), Vec::new());
    for line in pc.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        // `name=value` defines a variable, `Name: value` is a field:
        // whichever of the two characters comes first.
        let Some(at) = line.find([':', '=']) else {
            continue;
        };
        let (key, value) = (line[..at].trim(), &line[at + 1..]);
        if line.as_bytes()[at] == b'=' {
            let value = expand(value.trim(), &vars);
            vars.push((key.to_owned(), value));
            continue;
        }
        let words: Vec<String> = expand(value, &vars)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        match key {
            "Cflags" => cflags = words,
            "Libs" => libs = words,
            "Libs.private" => private = words,
            _ => {}
        }
    }
    if static_link {
        libs.extend(private);
    }
    (cflags, libs)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The flags for hakmem: `pkg-config --cflags` and `--libs` (`--static`
/// too for a static link), looking in the install's `lib/pkgconfig`; or
/// the `.pc` file read here when there is no `pkg-config`.
fn flags(done: &Installed, static_link: bool) -> Result<(Vec<String>, Vec<String>), String> {
    if !have("pkg-config") {
        let pc = std::fs::read_to_string(&done.pc)
            .map_err(|e| format!("cannot read {}: {e}", done.pc.display()))?;
        return Ok(pc_flags(&pc, static_link));
    }
    let query = |args: &[&str]| -> Result<Vec<String>, String> {
        let out = Command::new("pkg-config")
            .args(args)
            .arg("hakmem")
            .env("PKG_CONFIG_PATH", done.pc.parent().unwrap_or(&done.prefix))
            .output()
            .map_err(|e| format!("cannot run pkg-config: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pkg-config {args:?} hakmem: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    };
    let libs: &[&str] = if static_link {
        &["--static", "--libs"]
    } else {
        &["--libs"]
    };
    Ok((query(&["--cflags"])?, query(libs)?))
}

/// `cargo xtask test`'s check of `cargo xtask install`; true when it
/// passed, else says why.
pub fn check() -> bool {
    match check_inner() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("==> install check: {e}");
            false
        }
    }
}

fn check_inner() -> Result<(), String> {
    if !have("cc") {
        eprintln!("note: no cc: the install check is skipped");
        return Ok(());
    }
    let dir = crate::bench::target_dir()?.join("xtask-install");
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot empty {}: {e}", dir.display()))
        }
        _ => {}
    }
    let done = install(&dir.join("prefix"), None)?;
    let pc = std::fs::read_to_string(&done.pc).map_err(|e| e.to_string())?;
    let want = format!("prefix={}\n", done.prefix.display());
    if !pc.contains(&want) {
        return Err(format!("hakmem.pc has no `{}`:\n{pc}", want.trim()));
    }
    if !have("pkg-config") {
        eprintln!("note: no pkg-config: the flags come from reading hakmem.pc");
    }
    header_in_cxx(&done)?;
    let src = workspace_root().join("crates/hakmem-preload/tests/c/linked.c");
    for link in [Link::Static, Link::Archive, Link::Shared] {
        let (cflags, libs) = flags(&done, link != Link::Shared)?;
        let exe = dir.join(format!("linked-{link:?}").to_lowercase());
        let mut cc = Command::new("cc");
        cc.args(["-O1", "-Wall", "-Wextra", "-Werror"])
            .args(&cflags)
            .arg(&src)
            .arg("-o")
            .arg(&exe);
        match link {
            Link::Static => {
                cc.arg("-static").args(&libs);
            }
            // The archive by its path, then the system libraries of
            // `--libs --static` (docs/C_ABI.md's recipe).
            Link::Archive => {
                cc.arg(done.prefix.join("lib/libhakmem.a")).args(
                    libs.iter()
                        .filter(|l| l.starts_with("-l") && *l != "-lhakmem"),
                );
            }
            Link::Shared => {
                cc.arg(format!("-Wl,-rpath,{}", done.prefix.join("lib").display()))
                    .args(&libs);
            }
        }
        eprintln!("    $ {cc:?}");
        let status = cc.status().map_err(|e| format!("cannot run cc: {e}"))?;
        if !status.success() {
            return Err(format!("compiling and linking {}", exe.display()));
        }
        linked_against(&exe, &done, link)?;
        run_linked(&exe)?;
        eprintln!("    {}: ok", exe.display());
    }
    Ok(())
}

/// How `linked.c` is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// `-static`: hakmem and the C library inside the binary.
    Static,
    /// `libhakmem.a` inside, the C library shared.
    Archive,
    /// Against `libhakmem.so`.
    Shared,
}

/// The header in C++ too, before and after `<malloc.h>` (no clash with
/// glibc's declarations), where there is a `c++`.
fn header_in_cxx(done: &Installed) -> Result<(), String> {
    if !have("c++") {
        eprintln!("note: no c++: hakmem.h is not checked as C++");
        return Ok(());
    }
    for text in [
        "#include <hakmem.h>\n#include <malloc.h>\n#include <cstdlib>\n",
        "#include <malloc.h>\n#include <cstdlib>\n#include <hakmem.h>\n",
    ] {
        let src = format!(
            "{text}int main() {{ struct hakmem_stats s; return int(hakmem_stats(&s, sizeof s) + mallinfo2().arena); }}\n"
        );
        let mut child = Command::new("c++")
            .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only"])
            .arg("-I")
            .arg(done.prefix.join("include"))
            .args(["-x", "c++", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run c++: {e}"))?;
        use std::io::Write;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(src.as_bytes())
            .map_err(|e| e.to_string())?;
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("hakmem.h as C++ fails:\n{src}"));
        }
    }
    Ok(())
}

/// The binary holds hakmem (`hakmem_stats` defined in it, and, fully
/// static, no glibc allocator) when linked with the archive, and needs the
/// installed libhakmem.so when not.
fn linked_against(exe: &Path, done: &Installed, link: Link) -> Result<(), String> {
    let static_link = link != Link::Shared;
    // The shared libraries it names (`DT_NEEDED`): none when static.
    let needs_so = if have("readelf") {
        let out = Command::new("readelf")
            .args(["-d", "-W"])
            .arg(exe)
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains("(NEEDED)") && l.contains("[libhakmem.so]"))
    } else {
        let bytes = std::fs::read(exe).map_err(|e| e.to_string())?;
        bytes.windows(12).any(|w| w == b"libhakmem.so")
    };
    if needs_so == static_link {
        return Err(format!(
            "{}: libhakmem.so {}",
            exe.display(),
            if static_link {
                "named in a static link"
            } else {
                "not needed"
            }
        ));
    }
    if have("nm") && static_link {
        let out = Command::new("nm")
            .arg(exe)
            .output()
            .map_err(|e| e.to_string())?;
        let syms = String::from_utf8_lossy(&out.stdout);
        let defines = |name: &str| syms.lines().any(|l| l.ends_with(&format!(" T {name}")));
        let glibc_allocator = link == Link::Static && syms.contains(" _int_malloc");
        if !defines("hakmem_stats") || !defines("malloc") || glibc_allocator {
            return Err(format!(
                "{}: not hakmem's malloc and hakmem_stats (or glibc's allocator linked too)",
                exe.display()
            ));
        }
    }
    if have("ldd") && !static_link {
        let out = Command::new("ldd")
            .arg(exe)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let lib = done.prefix.join("lib/libhakmem.so");
        if !text.contains(&lib.display().to_string()) {
            return Err(format!(
                "{}: not linked to {}: {text}",
                exe.display(),
                lib.display()
            ));
        }
    }
    Ok(())
}

/// Runs `linked.c`'s binary with `HAKMEM_STATS=1` and an option it checks;
/// its own checks pass, and its statistics are hakmem's.
fn run_linked(exe: &Path) -> Result<(), String> {
    let mut cmd = Command::new(exe);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("HAKMEM_") {
            cmd.env_remove(var);
        }
    }
    let out = cmd
        .env_remove("LD_PRELOAD")
        .env("HAKMEM_STATS", "1")
        .env("HAKMEM_PURGE_DELAY_MS", "250")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let build = "build hakmem+box-refactor+fast-path\n";
    let ok = out.status.success()
        && stdout.contains("linked ok")
        && stdout.contains(build)
        // hakmem_print_stats(1), and the exit summary on stderr.
        && stdout.contains("hakmem: stats: mapped_bytes=")
        && stderr.contains("hakmem: stats: mapped_bytes=")
        && stderr.contains(" invalid_frees=0 ")
        && stderr.contains(" huge_in_use=0");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{}: {:?}\n{stdout}\n{stderr}",
            exe.display(),
            out.status
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{pc_file, pc_flags};
    use std::path::Path;

    #[test]
    fn the_pc_file_reads_as_pkg_config_would() {
        let pc = pc_file(
            Path::new("/opt/hakmem"),
            "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc",
        );
        assert!(pc.contains("\nLibs.private: -lutil -lrt -lpthread -lm -ldl -lc\n"));
        let (cflags, libs) = pc_flags(&pc, false);
        assert_eq!(cflags, ["-I/opt/hakmem/include"]);
        let (cflags, _) = pc_flags("a=/x:y\nb=${a}/z\nCflags: -I${b} -DA=1\n", false);
        assert_eq!(cflags, ["-I/x:y/z", "-DA=1"]);
        assert_eq!(libs, ["-L/opt/hakmem/lib", "-lhakmem"]);
        let (_, libs) = pc_flags(&pc, true);
        assert_eq!(
            libs,
            [
                "-L/opt/hakmem/lib",
                "-lhakmem",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc"
            ]
        );
    }
}
