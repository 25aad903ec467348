//! `cargo xtask heap-profile FILE [--base EARLIER] [--out DIR] [--top N]`:
//! reads a heap profile that hakmem wrote (`HAKMEM_PROF=1`; the format is
//! in docs/PROFILING.md), symbolises its raw return addresses through the
//! process's mappings, prints the top allocation sites by live bytes with
//! file:line, and writes folded stacks (`a;b;c N`) and SVG flame graphs of
//! the live bytes and of the bytes allocated since the start. With
//! `--base`, what grew since an earlier profile of the same program: how
//! leaks are found.
//!
//! Symbols come from binutils' `addr2line` (`-f -C -i`, one run per object
//! file), and the flame graphs are drawn here: the crates one would use
//! (`addr2line`/`object`, `inferno`) are not in this offline workspace's
//! registry. An address maps to its object through the profile's
//! `/proc/self/maps` lines, and from a file offset to the object's own
//! addresses through its ELF program headers (`PT_LOAD`), read here.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;

/// Options of `cargo xtask heap-profile`.
#[derive(Args)]
pub struct HeapProfileArgs {
    /// A profile written by hakmem (`HAKMEM_PROF=1`).
    file: PathBuf,
    /// An earlier profile of the same program: report the live bytes that
    /// grew since (leaks).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Where the folded stacks and flame graphs go (default: FILE.d).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How many sites to list.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Keep the allocator's own frames at the tips of the stacks.
    #[arg(long)]
    keep_allocator_frames: bool,
}

/// One stack of a profile: estimates (bytes, allocations) live now and
/// allocated since the start, the samples behind them, and the return
/// addresses, innermost first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StackRecord {
    pub live_bytes: u64,
    pub live_count: u64,
    pub alloc_bytes: u64,
    pub alloc_count: u64,
    pub live_samples: u64,
    pub alloc_samples: u64,
    pub frames: Vec<u64>,
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub exec: bool,
    pub path: String,
}

/// A parsed profile.
#[derive(Debug, Default)]
pub struct Profile {
    pub header: BTreeMap<String, String>,
    pub stacks: Vec<StackRecord>,
    pub maps: Vec<Mapping>,
}

impl Profile {
    /// A header field as a number (0 when absent).
    pub fn number(&self, key: &str) -> u64 {
        self.header
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses a profile's text.
pub fn parse(text: &str) -> Result<Profile, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some("hakmem-heap-profile 1") => {}
        other => return Err(format!("not a hakmem heap profile (first line {other:?})")),
    }
    let mut p = Profile::default();
    let mut in_maps = false;
    let mut ended = false;
    for (n, l) in lines.enumerate() {
        let at = |e: String| format!("line {}: {e}", n + 2);
        if in_maps {
            if l == "end" {
                ended = true;
                break;
            }
            if let Some(m) = parse_map(l) {
                p.maps.push(m);
            }
        } else if l == "maps" {
            in_maps = true;
        } else if let Some((nums, frames)) = l.split_once(" |") {
            let n: Vec<u64> = nums
                .split_whitespace()
                .map(|w| w.parse::<u64>().map_err(|e| at(e.to_string())))
                .collect::<Result<_, _>>()?;
            let [live_bytes, live_count, alloc_bytes, alloc_count, live_samples, alloc_samples] =
                n[..]
            else {
                return Err(at(format!("{} numbers, expected 6", n.len())));
            };
            p.stacks.push(StackRecord {
                live_bytes,
                live_count,
                alloc_bytes,
                alloc_count,
                live_samples,
                alloc_samples,
                frames: frames
                    .split_whitespace()
                    .map(hex)
                    .collect::<Result<_, _>>()
                    .map_err(at)?,
            });
        } else if let Some((k, v)) = l.split_once(' ') {
            p.header.insert(k.to_string(), v.to_string());
        } else {
            return Err(at(format!("unexpected {l:?}")));
        }
    }
    if !ended {
        return Err("the profile is cut short (no `end`)".into());
    }
    if p.number("stacks") as usize != p.stacks.len() {
        return Err(format!(
            "{} stacks, the header says {}",
            p.stacks.len(),
            p.number("stacks")
        ));
    }
    Ok(p)
}

/// `start-end perms offset dev inode [path]`.
fn parse_map(l: &str) -> Option<Mapping> {
    let mut w = l.split_whitespace();
    let (start, end) = w.next()?.split_once('-')?;
    let perms = w.next()?;
    let offset = w.next()?;
    let _dev = w.next()?;
    let _inode = w.next()?;
    let path = w.collect::<Vec<_>>().join(" ");
    Some(Mapping {
        start: hex(start).ok()?,
        end: hex(end).ok()?,
        offset: hex(offset).ok()?,
        exec: perms.contains('x'),
        path,
    })
}

/// The loadable segments of an ELF file: (file offset, address, file size).
pub fn load_segments(elf: &[u8]) -> Option<Vec<(u64, u64, u64)>> {
    // 64-bit little-endian only (x86-64 Linux, what hakmem runs on).
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    let mut out = Vec::new();
    for i in 0..phnum {
        let h = phoff + i * phentsize;
        if u32_at(h)? == 1 {
            // PT_LOAD
            out.push((u64_at(h + 8)?, u64_at(h + 16)?, u64_at(h + 32)?));
        }
    }
    Some(out)
}

/// The object's own address of a file offset (what addr2line takes).
pub fn file_offset_to_address(segments: &[(u64, u64, u64)], off: u64) -> Option<u64> {
    segments
        .iter()
        .find(|&&(o, _, size)| off >= o && off < o + size)
        .map(|&(o, vaddr, _)| off - o + vaddr)
}

/// One function of a symbolised return address (an address gives several
/// when calls were inlined into it: the innermost first).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub function: String,
    /// `file:line`, or `??` when the object has no line table.
    pub location: String,
    /// The object the address lies in.
    pub object: String,
}

/// Where an address lies: (object path, object address), None outside any
/// file mapping.
fn locate(maps: &[Mapping], addr: u64) -> Option<(&Mapping, u64)> {
    let m = maps
        .iter()
        .find(|m| addr >= m.start && addr < m.end && !m.path.is_empty())?;
    Some((m, addr - m.start + m.offset))
}

/// Symbolises every frame of `p` with `addr2line`: address -> functions,
/// innermost first. Addresses in no file (or in a file that cannot be
/// read) get their raw address as the function's name.
pub fn symbolise(p: &Profile) -> HashMap<u64, Vec<Frame>> {
    let mut by_object: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut out = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for s in &p.stacks {
        for &a in &s.frames {
            if !seen.insert(a) {
                continue;
            }
            match locate(&p.maps, a) {
                // A return address: the call is the byte before.
                Some((m, off)) if m.path.starts_with('/') => by_object
                    .entry(m.path.clone())
                    .or_default()
                    .push((a, off.saturating_sub(1))),
                other => {
                    let object = other.map(|(m, _)| m.path.clone()).unwrap_or_default();
                    out.insert(a, vec![unknown(a, &object)]);
                }
            }
        }
    }
    for (object, addrs) in by_object {
        let segments = std::fs::read(&object).ok().and_then(|b| load_segments(&b));
        let vaddrs: Vec<(u64, Option<u64>)> = addrs
            .iter()
            .map(|&(a, off)| {
                (
                    a,
                    segments
                        .as_deref()
                        .and_then(|s| file_offset_to_address(s, off)),
                )
            })
            .collect();
        let wanted: Vec<u64> = vaddrs.iter().filter_map(|&(_, v)| v).collect();
        let mut found = if wanted.is_empty() {
            HashMap::new()
        } else {
            addr2line(&object, &wanted)
        };
        for (a, v) in vaddrs {
            let frames = v
                .and_then(|v| found.remove(&v))
                .unwrap_or_else(|| vec![unknown(a, &object)]);
            out.insert(a, frames);
        }
    }
    out
}

fn unknown(a: u64, object: &str) -> Frame {
    let name = Path::new(object)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Frame {
        function: if name.is_empty() {
            format!("{a:#x}")
        } else {
            format!("{a:#x} ({name})")
        },
        location: "??".into(),
        object: object.into(),
    }
}

/// Runs `addr2line -a -f -C -i -e OBJECT ADDRS...` (in chunks) and reads
/// its answer: for each address, `0x...`, then a function line and a
/// `file:line` line per function, innermost first.
fn addr2line(object: &str, addrs: &[u64]) -> HashMap<u64, Vec<Frame>> {
    let mut out = HashMap::new();
    for chunk in addrs.chunks(2000) {
        let run = Command::new("addr2line")
            .args(["-a", "-f", "-C", "-i", "-e", object])
            .args(chunk.iter().map(|a| format!("{a:#x}")))
            .output();
        let Ok(run) = run else {
            eprintln!("heap-profile: addr2line (binutils) could not run: addresses stay raw");
            return out;
        };
        out.extend(parse_addr2line(
            &String::from_utf8_lossy(&run.stdout),
            object,
        ));
    }
    out
}

/// The answer of `addr2line -a -f -i` for one object.
pub fn parse_addr2line(text: &str, object: &str) -> HashMap<u64, Vec<Frame>> {
    let mut out: HashMap<u64, Vec<Frame>> = HashMap::new();
    let mut current: Option<u64> = None;
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(h) = l.strip_prefix("0x") {
            if let Ok(a) = u64::from_str_radix(h, 16) {
                current = Some(a);
                out.entry(a).or_default();
                continue;
            }
        }
        let Some(a) = current else { continue };
        let location = lines.next().unwrap_or("??:0");
        let location = location
            .split(" (discriminator")
            .next()
            .unwrap_or(location)
            .to_string();
        out.entry(a).or_default().push(Frame {
            function: l.to_string(),
            location: if location.starts_with("??") {
                "??".into()
            } else {
                location
            },
            object: object.into(),
        });
    }
    out
}

/// True for a frame of the allocator itself (hakmem, Rust's allocation
/// shims, the C allocation calls, the unwinder): cut off the stacks' tips.
pub fn is_allocator(f: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "hakmem::",
        "<hakmem::",
        "hakmem_",
        "<hakmem_",
        "facade::",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_dealloc",
        "__rustc::__rust_",
        "__rdl_",
        "alloc::alloc::",
        "<alloc::alloc::Global",
        "_Unwind_",
        "malloc",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "operator new",
    ];
    let in_crates = [
        "/crates/hakmem",
        "/crates/fastcache/",
        "/crates/tiny-box/",
        "/crates/superslab/",
    ];
    PREFIXES.iter().any(|p| f.function.starts_with(p))
        || f.object.ends_with("/libhakmem.so")
        || in_crates.iter().any(|c| f.location.contains(c))
}

/// True for a frame of a language's library (Rust's `alloc`, `core` and
/// `std`, the C and C++ runtimes): a stack's site is the first frame past
/// these, from the tip.
pub fn is_library(f: &Frame) -> bool {
    const PREFIXES: &[&str] = &[
        "alloc::", "<alloc::", "core::", "<core::", "std::", "<std::",
    ];
    f.location.starts_with("/rustc/")
        || ["/library/alloc/", "/library/core/", "/library/std/"]
            .iter()
            .any(|d| f.location.contains(d))
        || PREFIXES.iter().any(|p| f.function.starts_with(p))
        || ["/libc.so", "/libstdc++.so", "/libgcc_s.so", "/ld-linux"]
            .iter()
            .any(|o| f.object.contains(o))
}

/// A `file:line` without the long prefixes of cargo's registry
/// (`.../registry/src/index.crates.io-HASH/`) and rustc's sources
/// (`/rustc/HASH/`), and relative to the current folder when inside it.
pub fn short_location(l: &str) -> String {
    if let Some((_, rest)) = l.split_once("/registry/src/") {
        if let Some((_, krate)) = rest.split_once('/') {
            return krate.to_string();
        }
    }
    if let Some(rest) = l.strip_prefix("/rustc/") {
        if let Some((_, lib)) = rest.split_once('/') {
            return lib.to_string();
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(rel) = Path::new(l)
            .strip_prefix(&cwd)
            .ok()
            .and_then(|p| p.to_str())
        {
            return rel.to_string();
        }
    }
    l.to_string()
}

/// One stack, symbolised: names root first, its site, and its estimates.
#[derive(Clone, Debug, PartialEq)]
pub struct Folded {
    pub names: Vec<String>,
    /// `function (file:line)` of the first frame past the allocator and
    /// the languages' libraries, from the tip.
    pub site: String,
    pub live_bytes: u64,
    pub live_count: u64,
    pub alloc_bytes: u64,
    pub alloc_count: u64,
}

/// Symbolised stacks, the allocator's own frames cut off their tips unless
/// `keep_allocator`.
pub fn fold(p: &Profile, syms: &HashMap<u64, Vec<Frame>>, keep_allocator: bool) -> Vec<Folded> {
    let mut out = Vec::new();
    for s in &p.stacks {
        // Innermost first.
        let mut frames: Vec<Frame> = Vec::new();
        for a in &s.frames {
            match syms.get(a) {
                Some(fs) if !fs.is_empty() => frames.extend(fs.iter().cloned()),
                _ => frames.push(unknown(*a, "")),
            }
        }
        if !keep_allocator {
            let cut = frames.iter().take_while(|f| is_allocator(f)).count();
            // A stack of nothing but the allocator (a sample taken inside
            // it) keeps its outermost frame.
            frames.drain(..cut.min(frames.len().saturating_sub(1)));
        }
        let site = frames
            .iter()
            .find(|f| !is_allocator(f) && !is_library(f))
            .or(frames.first())
            .map(|f| format!("{} ({})", f.function, short_location(&f.location)))
            .unwrap_or_else(|| "[no stack]".into());
        let mut names: Vec<String> = frames.iter().rev().map(|f| f.function.clone()).collect();
        if names.is_empty() {
            names.push("[no stack]".into());
        }
        out.push(Folded {
            names,
            site,
            live_bytes: s.live_bytes,
            live_count: s.live_count,
            alloc_bytes: s.alloc_bytes,
            alloc_count: s.alloc_count,
        });
    }
    out
}

/// Folded-stack lines (`root;...;tip value`), merged, zero values left out,
/// sorted by stack.
pub fn folded_lines(stacks: &[Folded], value: impl Fn(&Folded) -> i64) -> Vec<(String, i64)> {
    let mut merged: BTreeMap<String, i64> = BTreeMap::new();
    for s in stacks {
        // `;` separates frames and the value follows the last space.
        let key = s
            .names
            .iter()
            .map(|n| n.replace(';', ":"))
            .collect::<Vec<_>>()
            .join(";");
        *merged.entry(key).or_default() += value(s);
    }
    merged.into_iter().filter(|&(_, v)| v != 0).collect()
}

/// `now - base` per folded stack (live bytes), zero differences left out.
pub fn diff(now: &[(String, i64)], base: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut m: BTreeMap<String, i64> = BTreeMap::new();
    for (k, v) in now {
        *m.entry(k.clone()).or_default() += v;
    }
    for (k, v) in base {
        *m.entry(k.clone()).or_default() -= v;
    }
    m.into_iter().filter(|&(_, v)| v != 0).collect()
}

/// Per site: (live bytes, live count, allocated bytes, allocated count).
fn by_site(stacks: &[Folded]) -> Vec<(String, [u64; 4])> {
    let mut m: HashMap<&str, [u64; 4]> = HashMap::new();
    for s in stacks {
        let e = m.entry(&s.site).or_default();
        e[0] += s.live_bytes;
        e[1] += s.live_count;
        e[2] += s.alloc_bytes;
        e[3] += s.alloc_count;
    }
    let mut v: Vec<(String, [u64; 4])> = m.into_iter().map(|(k, e)| (k.to_string(), e)).collect();
    v.sort_by(|a, b| {
        b.1[0]
            .cmp(&a.1[0])
            .then(b.1[2].cmp(&a.1[2]))
            .then(a.0.cmp(&b.0))
    });
    v
}

fn mib(b: f64) -> String {
    format!("{:.2}", b / (1u64 << 20) as f64)
}

fn pct(part: f64, whole: f64) -> String {
    if whole == 0.0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * part / whole)
    }
}

/// The report printed: totals, then the top sites by live bytes.
pub fn report(p: &Profile, stacks: &[Folded], top: usize) -> String {
    let mut o = String::new();
    let live = p.number("live_bytes") as f64;
    let alloc = p.number("alloc_bytes") as f64;
    let _ = writeln!(
        o,
        "heap profile of pid {} ({}), dump {}: one sample per {} bytes on average",
        p.header.get("pid").map_or("?", |s| s.as_str()),
        p.header.get("build").map_or("?", |s| s.as_str()),
        p.header.get("dump").map_or("?", |s| s.as_str()),
        p.number("sample_bytes"),
    );
    let _ = writeln!(
        o,
        "live: {} MiB in {} blocks (estimated from {} samples); allocated since start: {} MiB in {} blocks",
        mib(live),
        p.number("live_count"),
        p.number("live_samples"),
        mib(alloc),
        p.number("alloc_count"),
    );
    if p.number("dropped_samples") > 0 {
        let _ = writeln!(
            o,
            "warning: {} samples were dropped",
            p.number("dropped_samples")
        );
    }
    let _ = writeln!(o, "\ntop sites by live bytes:");
    let _ = writeln!(
        o,
        "{:>10} {:>7} {:>10} | {:>10} {:>10} | site",
        "live MiB", "live %", "blocks", "alloc MiB", "blocks"
    );
    for (site, e) in by_site(stacks).iter().take(top) {
        let _ = writeln!(
            o,
            "{:>10} {:>7} {:>10} | {:>10} {:>10} | {site}",
            mib(e[0] as f64),
            pct(e[0] as f64, live),
            e[1],
            mib(e[2] as f64),
            e[3]
        );
    }
    o
}

/// The sites whose live bytes grew most since `base` (and what shrank).
fn report_growth(now: &[Folded], base: &[Folded], top: usize) -> String {
    let mut m: HashMap<&str, i64> = HashMap::new();
    for s in now {
        *m.entry(&s.site).or_default() += s.live_bytes as i64;
    }
    for s in base {
        *m.entry(&s.site).or_default() -= s.live_bytes as i64;
    }
    let mut v: Vec<(&str, i64)> = m.into_iter().filter(|&(_, d)| d != 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let grew: i64 = v.iter().filter(|e| e.1 > 0).map(|e| e.1).sum();
    let shrank: i64 = v.iter().filter(|e| e.1 < 0).map(|e| -e.1).sum();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nsince the base profile: +{} MiB live at growing sites, -{} MiB at shrinking ones",
        mib(grew as f64),
        mib(shrank as f64)
    );
    let _ = writeln!(o, "{:>12} | site (live bytes grown)", "MiB");
    for (site, d) in v.iter().filter(|e| e.1 > 0).take(top) {
        let _ = writeln!(o, "{:>+12.2} | {site}", *d as f64 / (1u64 << 20) as f64);
    }
    o
}

// ---------------------------------------------------------------------------
// Flame graphs

#[derive(Default)]
struct Node {
    value: u64,
    children: BTreeMap<String, Node>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A colour from the name: the warm palette of flame graphs, the same for
/// a name in every graph.
fn colour(name: &str) -> String {
    let mut h: u32 = 2166136261;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    let r = 205 + (h % 50);
    let g = (h >> 8) % 230;
    let b = (h >> 16) % 55;
    format!("rgb({r},{g},{b})")
}

const WIDTH: f64 = 1200.0;
const ROW: f64 = 16.0;
const PAD: f64 = 10.0;
const HEADER: f64 = 44.0;

/// An SVG flame graph of folded stacks with positive values (`unit` names
/// the values in the titles): the root at the bottom, each frame as wide
/// as its share, siblings in name order; hovering shows each frame's name,
/// bytes and share.
pub fn flame_graph(title: &str, subtitle: &str, folded: &[(String, i64)], unit: &str) -> String {
    let mut root = Node::default();
    let mut depth = 0;
    for (stack, v) in folded {
        if *v <= 0 {
            continue;
        }
        let v = *v as u64;
        root.value += v;
        let mut n = &mut root;
        let names: Vec<&str> = stack.split(';').collect();
        depth = depth.max(names.len());
        for name in names {
            n = n.children.entry(name.to_string()).or_default();
            n.value += v;
        }
    }
    let height = HEADER + (depth as f64 + 1.0) * ROW + PAD + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">
<style>text {{ font-family: Verdana, sans-serif; font-size: 11px; fill: rgb(0,0,0); }} .t {{ font-size: 17px; }} rect:hover {{ stroke: black; stroke-width: 0.5; }}</style>
<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="rgb(248,248,248)"/>
<text class="t" x="{}" y="24" text-anchor="middle">{}</text>
<text x="{}" y="40" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title),
        WIDTH / 2.0,
        escape(subtitle),
    );
    if root.value > 0 {
        let total = root.value as f64;
        let scale = (WIDTH - 2.0 * PAD) / total;
        // The root ("all") on the bottom row, then each level above.
        draw(
            &mut svg,
            "all",
            &root,
            PAD,
            height - PAD - 20.0 - ROW,
            scale,
            total,
            unit,
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{PAD}" y="{}">hakmem heap profile ({unit}); frames narrower than 0.1 px are left out</text>"#,
        height - PAD
    );
    svg.push_str("</svg>\n");
    svg
}

#[allow(clippy::too_many_arguments)]
fn draw(
    svg: &mut String,
    name: &str,
    n: &Node,
    x: f64,
    y: f64,
    scale: f64,
    total: f64,
    unit: &str,
) {
    let w = n.value as f64 * scale;
    if w < 0.1 {
        return;
    }
    let shown = (w / 7.0) as usize;
    let label = if shown < 3 {
        String::new()
    } else if name.chars().count() <= shown {
        name.to_string()
    } else {
        let cut: String = name.chars().take(shown.saturating_sub(2)).collect();
        format!("{cut}..")
    };
    let _ = writeln!(
        svg,
        r#"<g><title>{} ({} {unit}, {})</title><rect x="{x:.2}" y="{y:.2}" width="{:.2}" height="{:.2}" fill="{}" rx="2" ry="2"/><text x="{:.2}" y="{:.2}">{}</text></g>"#,
        escape(name),
        n.value,
        pct(n.value as f64, total),
        w,
        ROW - 1.0,
        colour(name),
        x + 3.0,
        y + ROW - 4.5,
        escape(&label),
    );
    let mut cx = x;
    for (child, c) in &n.children {
        draw(svg, child, c, cx, y - ROW, scale, total, unit);
        cx += c.value as f64 * scale;
    }
}

// ---------------------------------------------------------------------------

fn write(path: &Path, text: &str) -> bool {
    match std::fs::write(path, text) {
        Ok(()) => {
            eprintln!("heap-profile: wrote {}", path.display());
            true
        }
        Err(e) => {
            eprintln!("heap-profile: {}: {e}", path.display());
            false
        }
    }
}

fn folded_text(lines: &[(String, i64)]) -> String {
    lines.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
}

fn load(path: &Path, keep: bool) -> Option<(Profile, Vec<Folded>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("heap-profile: {}: {e}", path.display());
            return None;
        }
    };
    let p = match parse(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("heap-profile: {}: {e}", path.display());
            return None;
        }
    };
    let syms = symbolise(&p);
    let stacks = fold(&p, &syms, keep);
    Some((p, stacks))
}

/// `cargo xtask heap-profile`.
pub fn run(args: &HeapProfileArgs) -> bool {
    let Some((p, stacks)) = load(&args.file, args.keep_allocator_frames) else {
        return false;
    };
    print!("{}", report(&p, &stacks, args.top));
    let out = args.out.clone().unwrap_or_else(|| {
        let mut d = args.file.clone().into_os_string();
        d.push(".d");
        PathBuf::from(d)
    });
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("heap-profile: {}: {e}", out.display());
        return false;
    }
    let name = args
        .file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let live = folded_lines(&stacks, |s| s.live_bytes as i64);
    let alloc = folded_lines(&stacks, |s| s.alloc_bytes as i64);
    let sub = format!(
        "{name}: {} MiB live, {} MiB allocated since start, 1 sample / {} bytes",
        mib(p.number("live_bytes") as f64),
        mib(p.number("alloc_bytes") as f64),
        p.number("sample_bytes")
    );
    let mut ok = write(&out.join("live.folded"), &folded_text(&live))
        && write(&out.join("alloc.folded"), &folded_text(&alloc))
        && write(
            &out.join("live.svg"),
            &flame_graph("Live heap bytes by allocation stack", &sub, &live, "bytes"),
        )
        && write(
            &out.join("alloc.svg"),
            &flame_graph(
                "Bytes allocated since start, by stack",
                &sub,
                &alloc,
                "bytes",
            ),
        );
    if let Some(base) = &args.base {
        let Some((_, base_stacks)) = load(base, args.keep_allocator_frames) else {
            return false;
        };
        print!("{}", report_growth(&stacks, &base_stacks, args.top));
        let grown = diff(&live, &folded_lines(&base_stacks, |s| s.live_bytes as i64));
        let sub = format!("{name} against {}", base.display());
        ok &= write(&out.join("growth.folded"), &folded_text(&grown))
            && write(
                &out.join("growth.svg"),
                &flame_graph(
                    "Live heap bytes grown since the base profile",
                    &sub,
                    &grown,
                    "bytes grown",
                ),
            );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "hakmem-heap-profile 1
pid 42
build hakmem+box-refactor+fast-path
sample_bytes 524288
max_depth 64
dump 0
live_samples 3
dropped_samples 0
live_bytes 3000
live_count 30
alloc_bytes 9000
alloc_count 90
stacks 2
2000 20 2000 20 2 2 | 0x1010 0x2020 0x3030
1000 10 7000 70 1 5 | 0x1010 0x4040
maps
00001000-00002000 r-xp 00000000 08:01 7 /usr/lib/libhakmem.so
00002000-00005000 r-xp 00010000 08:01 8 /opt/app
7ffc0000-7ffc1000 rw-p 00000000 00:00 0 [stack]
end
";

    fn frame(function: &str, object: &str) -> Frame {
        Frame {
            function: function.into(),
            location: format!("/src/{function}.rs:1"),
            object: object.into(),
        }
    }

    fn symbols() -> HashMap<u64, Vec<Frame>> {
        HashMap::from([
            (
                0x1010,
                vec![frame("hakmem::prof::take_small", "/usr/lib/libhakmem.so")],
            ),
            (
                0x2020,
                vec![
                    frame("alloc::vec::Vec::with_capacity", "/opt/app"),
                    frame("app::parse", "/opt/app"),
                ],
            ),
            (0x3030, vec![frame("main", "/opt/app")]),
            (0x4040, vec![frame("app::cache", "/opt/app")]),
        ])
    }

    #[test]
    fn parses_a_profile() {
        let p = parse(PROFILE).unwrap();
        assert_eq!(p.number("sample_bytes"), 524288);
        assert_eq!(p.stacks.len(), 2);
        assert_eq!(p.stacks[0].frames, [0x1010, 0x2020, 0x3030]);
        assert_eq!(p.stacks[1].alloc_samples, 5);
        assert_eq!(p.maps.len(), 3);
        assert_eq!(p.maps[1].offset, 0x10000);
        assert!(p.maps[1].exec && !p.maps[2].exec);
        assert_eq!(locate(&p.maps, 0x2100).unwrap().1, 0x10100);
        assert!(
            parse(&PROFILE.replace("end\n", "")).is_err(),
            "a cut profile"
        );
        assert!(parse(&PROFILE.replace("stacks 2", "stacks 3")).is_err());
        assert!(parse("hello\n").is_err());
    }

    #[test]
    fn file_offsets_become_object_addresses() {
        // Text at file offset 0x1000 loaded at 0x2000 (lld's layout).
        let segs = [(0, 0, 0x800), (0x1000, 0x2000, 0x3000)];
        assert_eq!(file_offset_to_address(&segs, 0x1234), Some(0x2234));
        assert_eq!(file_offset_to_address(&segs, 0x10), Some(0x10));
        assert_eq!(file_offset_to_address(&segs, 0x900), None);
        // This test binary's own program headers.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let own = load_segments(&me).unwrap();
        assert!(own.iter().any(|&(o, _, _)| o == 0));
        assert!(
            load_segments(b"not an elf file at all, no, not at all, ........ ........").is_none()
        );
    }

    #[test]
    fn reads_addr2lines_answer_with_inlined_frames() {
        let text = "0x0000000000001234\ninner\n/src/a.rs:3 (discriminator 2)\nouter\n/src/b.rs:9\n0x0000000000005678\n??\n??:0\n";
        let m = parse_addr2line(text, "/opt/app");
        assert_eq!(m[&0x1234].len(), 2);
        assert_eq!(m[&0x1234][0].function, "inner");
        assert_eq!(m[&0x1234][0].location, "/src/a.rs:3");
        assert_eq!(m[&0x1234][1].location, "/src/b.rs:9");
        assert_eq!(m[&0x5678][0].location, "??");
        assert_eq!(
            short_location(
                "/root/.cargo/registry/src/index.crates.io-1949cf/serde_json-1.0.154/src/map.rs:7"
            ),
            "serde_json-1.0.154/src/map.rs:7"
        );
        assert_eq!(
            short_location("/rustc/5980761/library/alloc/src/vec/mod.rs:9"),
            "library/alloc/src/vec/mod.rs:9"
        );
    }

    #[test]
    fn folds_stacks_root_first_without_the_allocator() {
        let p = parse(PROFILE).unwrap();
        let stacks = fold(&p, &symbols(), false);
        assert_eq!(
            stacks[0].names,
            ["main", "app::parse", "alloc::vec::Vec::with_capacity"]
        );
        // The site skips the language's library frames.
        assert_eq!(stacks[0].site, "app::parse (/src/app::parse.rs:1)");
        assert_eq!(stacks[1].names, ["app::cache"]);
        let kept = fold(&p, &symbols(), true);
        assert_eq!(kept[1].names, ["app::cache", "hakmem::prof::take_small"]);
        let live = folded_lines(&stacks, |s| s.live_bytes as i64);
        assert_eq!(
            live,
            [
                ("app::cache".to_string(), 1000),
                (
                    "main;app::parse;alloc::vec::Vec::with_capacity".to_string(),
                    2000
                )
            ]
        );
        let r = report(&p, &stacks, 10);
        assert!(r.contains("66.7%") && r.contains("app::parse"), "{r}");
        // Unknown addresses keep their raw value.
        let raw = fold(&p, &HashMap::new(), false);
        assert_eq!(raw[1].names, ["0x4040", "0x1010"]);
    }

    #[test]
    fn diffs_two_profiles_by_stack() {
        let base = vec![("a;b".to_string(), 100), ("a;c".to_string(), 50)];
        let now = vec![("a;b".to_string(), 400), ("a;d".to_string(), 10)];
        assert_eq!(
            diff(&now, &base),
            [
                ("a;b".to_string(), 300),
                ("a;c".to_string(), -50),
                ("a;d".to_string(), 10)
            ]
        );
        let p = parse(PROFILE).unwrap();
        let stacks = fold(&p, &symbols(), false);
        let mut grown = stacks.clone();
        grown[1].live_bytes += 5 << 20;
        let r = report_growth(&grown, &stacks, 5);
        assert!(r.contains("+5.00 | app::cache"), "{r}");
    }

    #[test]
    fn draws_a_flame_graph() {
        let folded = vec![
            ("main;parse<&str>".to_string(), 300),
            ("main;cache".to_string(), 100),
            ("other".to_string(), -5),
        ];
        let svg = flame_graph("T", "sub & more", &folded, "bytes");
        // all, main, parse, cache: four frames; the negative one is left out.
        assert_eq!(svg.matches("<g><title>").count(), 4, "{svg}");
        assert!(svg.contains("parse&lt;&amp;str&gt; (300 bytes, 75.0%)"));
        assert!(svg.contains("sub &amp; more"));
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        // main spans all of the width inside the margins.
        assert!(svg.contains(r#"<rect x="10.00""#));
        assert!(svg.contains(r#"width="1180.00""#));
    }
}
