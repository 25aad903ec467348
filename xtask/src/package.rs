//! `cargo xtask test`'s packaging check, so that the crates stay ready to
//! publish: every workspace member without `publish = false` is packaged
//! and built from its `.crate` file, as `cargo publish` would upload and
//! verify it, and what crates.io and docs.rs show of it is checked:
//!
//! - the manifest has a description, a license, a readme, documentation,
//!   keywords, categories and `[package.metadata.docs.rs]`, and no
//!   placeholder `repository`;
//! - the package holds `LICENSE-MIT` and `LICENSE-APACHE`, the same as the
//!   workspace root's (each crate links to them), and its README;
//! - the README's first `rust` block is `examples/readme.rs` without the
//!   example's leading `//!` lines, so the example on crates.io is one that
//!   `cargo test` compiles.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{cargo, run_step, workspace_root};

/// The license files every published crate carries, at the workspace root
/// and (as links to them) in each crate's folder.
const LICENSE_FILES: [&str; 2] = ["LICENSE-MIT", "LICENSE-APACHE"];

/// The example that each published crate's README shows.
const README_EXAMPLE: &str = "examples/readme.rs";

/// A workspace member that may be published.
struct Crate {
    /// Its package name.
    name: String,
    /// Its version.
    version: String,
    /// Its folder.
    dir: PathBuf,
    /// Its entry in `cargo metadata`'s packages.
    meta: serde_json::Value,
}

/// The workspace members without `publish = false`, in the workspace's
/// order (which is the order of their dependencies), and the workspace's
/// target folder.
fn publishable() -> Result<(Vec<Crate>, PathBuf), String> {
    let out = cargo()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err("cargo metadata failed".into());
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let packages = meta["packages"]
        .as_array()
        .ok_or("cargo metadata gave no packages")?;
    let mut crates = Vec::new();
    for p in packages {
        // `publish = false` reads as an empty list of registries.
        if p["publish"].as_array().is_some_and(|r| r.is_empty()) {
            continue;
        }
        let name = p["name"].as_str().ok_or("a package without a name")?;
        let version = p["version"]
            .as_str()
            .ok_or_else(|| format!("{name}: no version"))?;
        let manifest = p["manifest_path"]
            .as_str()
            .ok_or_else(|| format!("{name}: no manifest path"))?;
        let dir = Path::new(manifest)
            .parent()
            .ok_or_else(|| format!("{name}: manifest {manifest} has no folder"))?;
        crates.push(Crate {
            name: name.into(),
            version: version.into(),
            dir: dir.to_path_buf(),
            meta: p.clone(),
        });
    }
    if crates.is_empty() {
        return Err("no workspace member may be published".into());
    }
    let target = meta["target_directory"]
        .as_str()
        .ok_or("cargo metadata gave no target_directory")?;
    Ok((crates, target.into()))
}

/// The whole check: `cargo package` with verification of every crate that
/// may be published, from a clean slate (see [`clean_slate`]), then
/// [`check_contents`]; true when both passed.
pub fn check() -> bool {
    let (crates, target) = match publishable() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("\n==> packaging: {e}");
            return false;
        }
    };
    let target = target.join("xtask-package");
    if let Err(e) = clean_slate(&crates, &target) {
        eprintln!("\n==> packaging: {e}");
        return false;
    }
    let names: Vec<&str> = crates.iter().map(|c| c.name.as_str()).collect();
    let verified = run_step(
        &format!("packaging, verified: {}", names.join(", ")),
        &mut verify_command(&crates, &target),
    );
    eprintln!("\n==> packages: manifests, license files, README examples");
    let contents = check_contents(&crates);
    verified && contents
}

/// `cargo package` of all of `crates` at once, with verification: each is
/// built from its `.crate` file, in dependency order, against a temporary
/// local registry of the others' `.crate` files (none of them needs to be
/// on crates.io yet). `--allow-dirty`: the working tree is what is checked.
/// `--offline`: the test steps before it fetched every dependency, and the
/// packages' lock files keep the workspace lock's versions. The `.crate`
/// files are left in `target/xtask-package/package/`.
fn verify_command(crates: &[Crate], target: &Path) -> Command {
    let mut cmd = cargo();
    cmd.args(["package", "--offline", "--allow-dirty", "--target-dir"])
        .arg(target);
    for c in crates {
        cmd.args(["-p", &c.name]);
    }
    cmd
}

/// Makes the verification build what the working tree holds now. Cargo
/// takes a crate of a registry, the temporary one included, to be the same
/// whenever its name and version are: it unpacks `hakmem-superslab 0.1.0`
/// into `$CARGO_HOME/registry/src/-<hash>/` once (a local registry has no
/// host name, hence the leading `-`; the hash is of the registry's path,
/// the same on every run) and never rebuilds what it compiled from there.
/// A second run would then build the dependents against the first run's
/// sources of their dependencies: failures that are not there, and passes
/// that are not earned. So the verification gets a target folder of its
/// own, emptied first (a cold build of the four crates and their few
/// dependencies: seconds), and the unpacked copies of these crates go.
fn clean_slate(crates: &[Crate], target: &Path) -> Result<(), String> {
    remove_dir(target)?;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let sources = home.join("registry/src");
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return Ok(()); // nothing unpacked yet
    };
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for c in crates {
            remove_dir(&registry.path().join(format!("{}-{}", c.name, c.version)))?;
        }
    }
    Ok(())
}

/// Removes a folder and all it holds; Ok when there was none.
fn remove_dir(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
    }
}

/// Checks each crate's manifest, package listing, license files and README
/// example; true when all is well, else says what is wrong.
fn check_contents(crates: &[Crate]) -> bool {
    let mut ok = true;
    for c in crates {
        let problems = problems_of(c);
        for p in &problems {
            eprintln!("==> {}: {p}", c.name);
        }
        ok &= problems.is_empty();
    }
    ok
}

/// What is wrong with one crate's manifest, package or README (nothing:
/// an empty list).
fn problems_of(c: &Crate) -> Vec<String> {
    let mut problems = Vec::new();
    let text = |key: &str| c.meta[key].as_str().filter(|s| !s.trim().is_empty());
    for key in ["description", "license", "readme", "documentation"] {
        if text(key).is_none() {
            problems.push(format!("the manifest has no `{key}`"));
        }
    }
    for key in ["keywords", "categories"] {
        if c.meta[key].as_array().is_none_or(|a| a.is_empty()) {
            problems.push(format!("the manifest has no `{key}`"));
        }
    }
    if c.meta["metadata"]["docs"]["rs"].is_null() {
        problems.push("the manifest has no [package.metadata.docs.rs]".into());
    }
    if let Some(repo) = text("repository").filter(|r| is_placeholder(r)) {
        problems.push(format!("`repository` is a placeholder: {repo}"));
    }
    let readme = text("readme").unwrap_or("README.md");
    match listing(&c.name) {
        Ok(files) => {
            for f in LICENSE_FILES
                .iter()
                .copied()
                .chain([readme, README_EXAMPLE])
            {
                if !files.iter().any(|l| l == f) {
                    problems.push(format!("the package does not hold {f}"));
                }
            }
        }
        Err(e) => problems.push(e),
    }
    let root = workspace_root();
    for f in LICENSE_FILES {
        match (std::fs::read(root.join(f)), std::fs::read(c.dir.join(f))) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(_), Ok(_)) => problems.push(format!("{f} differs from the workspace root's")),
            (Err(e), _) => problems.push(format!("cannot read {f} at the workspace root: {e}")),
            (_, Err(e)) => problems.push(format!("cannot read {f}: {e}")),
        }
    }
    if let Err(e) = readme_example_agrees(&c.dir.join(readme), &c.dir.join(README_EXAMPLE)) {
        problems.push(e);
    }
    problems
}

/// True when `url`'s host is one of the names reserved for examples and
/// tests (RFC 2606): `example.com`, `.org`, `.net`, or a name under
/// `.example`, `.invalid`, `.test` or `localhost`.
fn is_placeholder(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    ["example.com", "example.org", "example.net"]
        .iter()
        .chain(&["example", "invalid", "test", "localhost"])
        .any(|d| under(d))
}

/// The files `cargo package` would put in the package `name`.
fn listing(name: &str) -> Result<Vec<String>, String> {
    let out = cargo()
        .args([
            "package",
            "--list",
            "--offline",
            "--allow-dirty",
            "-p",
            name,
        ])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo package --list: {e}"))?;
    if !out.status.success() {
        return Err("cargo package --list failed".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Ok when the README's first `rust` block is the example's text after its
/// leading `//!` lines and the blank lines after them.
fn readme_example_agrees(readme: &Path, example: &Path) -> Result<(), String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (readme_text, example_text) = (read(readme)?, read(example)?);
    let block = first_rust_block(&readme_text);
    if block.is_empty() {
        return Err(format!("{} has no ```rust block", readme.display()));
    }
    if block == example_code(&example_text) {
        Ok(())
    } else {
        Err(format!(
            "the first ```rust block of {} is not {} (without its `//!` lines)",
            readme.display(),
            example.display()
        ))
    }
}

/// The lines of the first ```` ```rust ```` block of a Markdown text,
/// without blank lines at its end (none when there is no such block).
fn first_rust_block(markdown: &str) -> Vec<&str> {
    without_trailing_blanks(
        markdown
            .lines()
            .skip_while(|l| l.trim_end() != "```rust")
            .skip(1)
            .take_while(|l| l.trim_end() != "```")
            .collect(),
    )
}

/// The lines of an example after its leading `//!` lines and the blank
/// lines after them, without blank lines at its end.
fn example_code(source: &str) -> Vec<&str> {
    without_trailing_blanks(
        source
            .lines()
            .skip_while(|l| l.starts_with("//!"))
            .skip_while(|l| l.trim().is_empty())
            .collect(),
    )
}

fn without_trailing_blanks(mut lines: Vec<&str>) -> Vec<&str> {
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::{example_code, first_rust_block, is_placeholder};

    #[test]
    fn reserved_hosts_are_placeholders() {
        assert!(is_placeholder("https://example.invalid/hakmem"));
        assert!(is_placeholder("https://www.example.com/hakmem"));
        assert!(is_placeholder("http://localhost:8080/hakmem"));
        assert!(is_placeholder("https://hakmem.test"));
        assert!(!is_placeholder("https://github.com/someone/hakmem"));
        assert!(!is_placeholder("https://github.com/someone/example.com"));
        assert!(!is_placeholder("https://examples.org/hakmem"));
    }

    #[test]
    fn the_readme_block_is_the_example_without_its_crate_doc() {
        let readme = "# x\n\n```toml\nx = \"1\"\n```\n\n```rust\nfn main() {}\n\n```\n\n```rust\nlater\n```\n";
        let example = "//! The README's example.\n//! More.\n\nfn main() {}\n";
        assert_eq!(first_rust_block(readme), ["fn main() {}"]);
        assert_eq!(example_code(example), ["fn main() {}"]);
        assert!(first_rust_block("no code here").is_empty());
        assert_ne!(example_code("fn main() { 1; }\n"), first_rust_block(readme));
    }
}
