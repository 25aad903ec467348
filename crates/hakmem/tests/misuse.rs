//! Misuse is reported with the address and stops the process (or is
//! ignored by option, and then nothing is handed out twice). Each case runs
//! in a child process: this test binary re-executes itself with
//! `HAKMEM_MISUSE_CASE` set.
//!
//! Double frees are tried at every boundary of every place a freed block
//! can wait: each small class (the thread's cache, and the slab's free list
//! once the cache has drained), a one-slab and a multi-slab large run, a
//! huge block that the huge cache keeps and one too big for it; each
//! immediately, after allocations of other sizes, interleaved with a free
//! of another block of its size, after the thread's cache was flushed, and
//! after a first free by another thread, exited (the remote list) or still
//! running (its outgoing list), after the block grew by `realloc`, on a
//! fast-cache list that grew past its first bound, when the first free was
//! `realloc`'s own (the block moved: a huge mapping by `mremap`), and when
//! a longer request took the cached mapping and moved it away; a free
//! where a split cached mapping's tail begins; and
//! all of it again while the heap profiler samples (its detached slabs and
//! the blocks it keeps aside) and while the purge thread purges beside it.

use std::process::Command;
use std::sync::{mpsc, Mutex};
use std::thread;

use hakmem_tiny_box::{class_size, NUM_CLASSES};

const CASE_ENV: &str = "HAKMEM_MISUSE_CASE";

/// Sizes past the small classes: a one-slab run, a multi-slab run, the
/// largest run, a huge block the huge cache keeps, one it does not.
const LARGE_SIZES: [usize; 5] = [64 << 10, 200 << 10, 1 << 20, 4 << 20, 40 << 20];

/// Every size whose double free is tried: each small class's own size,
/// then [`LARGE_SIZES`].
fn double_free_sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (1..NUM_CLASSES).map(class_size).collect();
    sizes.extend(LARGE_SIZES);
    sizes
}

/// What happens between the first and the second free.
#[derive(Clone, Copy, Debug)]
enum Between {
    /// Nothing.
    Nothing,
    /// Allocations (kept live) of sizes other than the block's.
    OtherAllocations,
    /// Another block of the same size is freed (the "fastbin dup" shape).
    AnotherFree,
    /// The thread's cache is flushed: a small block waits on its slab's
    /// free list (the slab stays in use: another block of it is live).
    Flushed,
    /// The first free is another thread's, which exits: a small block
    /// went back to its slab through the remote list.
    FreedElsewhere,
    /// The first free is another thread's, which stays alive until the
    /// second free is done: a small block of this thread's slab waits on
    /// that thread's outgoing list (fast path) or on the slab's remote
    /// list.
    FreedByLiveThread,
    /// The first free finds the class's cache list full, so a small block
    /// goes straight back to its slab's free list (fast path).
    PastAFullList,
    /// Before the first free the block grew by `realloc` (by a quarter:
    /// in place where there is room, a huge block's mapping resized or
    /// moved), and the block `realloc` returned is the one freed twice.
    Resized,
    /// The first free lands on a fast-cache list that grew past its first
    /// bound (the class's list overflowed and ran empty between refills,
    /// again and again, first), with room left on it.
    OnAGrownList,
    /// The first free is `realloc`'s, which moved the block: a small block
    /// to a larger class, a run to a huge block, a huge block's mapping
    /// moved with its pages by `mremap` (the address after it taken, so
    /// that it cannot grow where it lies). The stale pointer, the one
    /// passed to `realloc`, is freed again.
    FreedByRealloc,
    /// Huge blocks: the first free caches the mapping, which a longer
    /// request then takes, grown and moved by `mremap` (the address after
    /// it taken). The stale pointer points where the mapping was. (Other
    /// sizes: as `Nothing`.)
    CachedMappingMoved,
}

const BETWEEN: [Between; 11] = [
    Between::Nothing,
    Between::OtherAllocations,
    Between::AnotherFree,
    Between::Flushed,
    Between::FreedElsewhere,
    Between::FreedByLiveThread,
    Between::PastAFullList,
    Between::Resized,
    Between::OnAGrownList,
    Between::FreedByRealloc,
    Between::CachedMappingMoved,
];

/// The kernel's page size.
fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Whether the page at `addr` is mapped (`msync` refuses unmapped ones).
fn mapped(addr: usize) -> bool {
    // SAFETY: msync only inspects the mapping; MS_ASYNC writes nothing.
    unsafe { libc::msync(addr as *mut libc::c_void, page(), libc::MS_ASYNC) == 0 }
}

/// Maps an inaccessible page at `addr` (a huge mapping's end) so that the
/// mapping cannot grow where it lies. False when something is mapped
/// there already (which blocks it as well).
fn block_address(addr: usize) -> bool {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let got = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            page(),
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    got as usize == addr
}

/// Where the mapping of the huge block `p` (page-offset, from `malloc`)
/// starts and ends.
fn huge_mapping(p: *mut u8) -> (usize, usize) {
    let base = p as usize - page();
    (base, p as usize + hakmem::usable_size(p))
}

/// The thread of a `FreedByLiveThread` first free, kept alive (it waits for
/// its sender to drop) until [`let_the_freer_go`].
static LIVE_FREER: Mutex<Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>> = Mutex::new(None);

/// Ends the thread a `FreedByLiveThread` first free left alive, if any.
fn let_the_freer_go() {
    if let Some((done, freer)) = LIVE_FREER.lock().unwrap().take() {
        drop(done);
        freer.join().unwrap();
    }
}

/// Commits the first half of a double free of a `size`-byte block; returns
/// the block, freed once, for the second free.
fn first_free(size: usize, between: Between) -> *mut u8 {
    let mut p = hakmem::malloc(size);
    let q = hakmem::malloc(size);
    assert!(!p.is_null() && !q.is_null());
    // SAFETY: live blocks; touched within their size.
    unsafe {
        p.write_bytes(0xa5, size);
        q.write_bytes(0x5a, size);
    }
    if let Between::Resized = between {
        let grown = size + size / 4;
        // SAFETY: p is live; realloc gives it up for the block returned.
        p = unsafe { hakmem::realloc(p, grown) };
        assert!(!p.is_null());
        // SAFETY: live, `grown` bytes.
        unsafe { p.write_bytes(0xa6, grown) };
    }
    if let Between::FreedByRealloc = between {
        let target = if size <= hakmem::SMALL_REQUEST_MAX {
            2 * size + 1
        } else if size <= hakmem::LARGE_MAX {
            // (A run could grow in place into free slabs after it.)
            hakmem::LARGE_MAX + 1
        } else {
            let (_, end) = huge_mapping(p);
            block_address(end);
            2 * size
        };
        // SAFETY: p is live; realloc frees it when it moves the block.
        let moved = unsafe { hakmem::realloc(p, target) };
        assert!(
            !moved.is_null() && moved != p,
            "size {size}: realloc to {target} did not move the block"
        );
        // (Hardened builds copy into a guarded block, and so does a
        // realloc while the heap profiler runs.)
        if size > hakmem::LARGE_MAX && !cfg!(feature = "secure") && !hakmem::prof_enabled() {
            // The mapping moved: its old first page is not ours any more.
            assert!(
                !mapped(p as usize - page()),
                "size {size}: old mapping kept"
            );
        }
        return p;
    }
    if let Between::FreedElsewhere = between {
        let addr = p as usize;
        // SAFETY: live, freed once, by another thread.
        thread::spawn(move || unsafe { hakmem::free(addr as *mut u8) })
            .join()
            .unwrap();
        return p;
    }
    if let Between::FreedByLiveThread = between {
        let addr = p as usize;
        let (freed, freed_here) = mpsc::channel();
        let (done, wait_for_done) = mpsc::channel::<()>();
        let freer = thread::spawn(move || {
            // SAFETY: live, freed once, by this thread.
            unsafe { hakmem::free(addr as *mut u8) };
            freed.send(()).unwrap();
            let _ = wait_for_done.recv();
        });
        freed_here.recv().unwrap();
        *LIVE_FREER.lock().unwrap() = Some((done, freer));
        return p;
    }
    // (Large and huge blocks have no list: for them this is `Nothing`.)
    if matches!(between, Between::PastAFullList) && size <= hakmem::SMALL_REQUEST_MAX {
        // More blocks of the size than a list holds (at most 128, grown
        // or not), freed first: the list is full when p comes.
        let others: Vec<*mut u8> = (0..300).map(|_| hakmem::malloc(size)).collect();
        for o in others {
            // SAFETY: live blocks, freed once.
            unsafe { hakmem::free(o) };
        }
    }
    if matches!(between, Between::OnAGrownList) && size <= hakmem::SMALL_REQUEST_MAX {
        // Swings of more blocks than any list holds: each overflows the
        // list and the next empties it, so its bound grows to its cap.
        for _ in 0..4 {
            let swing: Vec<*mut u8> = (0..300).map(|_| hakmem::malloc(size)).collect();
            for o in swing {
                // SAFETY: live blocks, freed once.
                unsafe { hakmem::free(o) };
            }
        }
        // A few blocks taken back off the full list (kept live), so that
        // p finds room on it.
        for _ in 0..4 {
            std::hint::black_box(hakmem::malloc(size));
        }
    }
    let huge = size > hakmem::LARGE_MAX;
    if huge && matches!(between, Between::CachedMappingMoved) {
        // Only this block's mapping in the cache once it is freed.
        hakmem::trim();
    }
    // SAFETY: live, freed once here.
    unsafe { hakmem::free(p) };
    if huge && matches!(between, Between::CachedMappingMoved) {
        let (base, end) = huge_mapping_of_freed(p, size);
        if mapped(base) {
            // Cached: a request longer than the mapping and at most four
            // times it grows it; it cannot grow where it lies.
            block_address(end);
            let longer = hakmem::malloc(2 * size);
            assert!(!longer.is_null());
            if !cfg!(feature = "secure") {
                assert!(
                    !mapped(base),
                    "size {size}: the cached mapping was not moved"
                );
            }
        }
    }
    match between {
        Between::Nothing
        | Between::FreedElsewhere
        | Between::FreedByLiveThread
        | Between::PastAFullList
        | Between::OnAGrownList
        | Between::FreedByRealloc
        | Between::CachedMappingMoved
        | Between::Resized => {}
        Between::Flushed => hakmem::trim(),
        Between::OtherAllocations => {
            // Sizes that cannot reuse the freed block's memory (that
            // would make the second free a free of someone else's live
            // block, which no allocator can tell): for a large run, huge
            // blocks (their own mappings); else small blocks of other
            // classes.
            if size > hakmem::SMALL_REQUEST_MAX && size <= hakmem::LARGE_MAX {
                for _ in 0..2 {
                    std::hint::black_box(hakmem::malloc(48 << 20));
                }
                return p;
            }
            let own_class = hakmem::usable_size(q);
            let others = [24, 100, 3000, 9000, 48, 200]
                .into_iter()
                .filter(|&o| {
                    let b = hakmem::malloc(o);
                    let same = hakmem::usable_size(b) == own_class;
                    // SAFETY: live, freed once.
                    unsafe { hakmem::free(b) };
                    !same
                })
                .collect::<Vec<_>>();
            for i in 0..200 {
                std::hint::black_box(hakmem::malloc(others[i % others.len()]));
            }
        }
        // SAFETY: q is live, freed once.
        Between::AnotherFree => unsafe { hakmem::free(q) },
    }
    p
}

/// [`huge_mapping`] of a huge block of `size` bytes at `p`, freed: its
/// usable size can no longer be asked, and is the mapping's (whole 2 MiB
/// chunks) less its first page.
fn huge_mapping_of_freed(p: *mut u8, size: usize) -> (usize, usize) {
    let base = p as usize - page();
    let chunk = hakmem_superslab::CHUNK_SIZE;
    (base, base + (size + page()).div_ceil(chunk) * chunk)
}

/// With the second free ignored, the allocator must still hand each block
/// to one caller: two live blocks of the size never share an address.
fn nothing_handed_out_twice(size: usize) {
    let a = hakmem::malloc(size);
    let b = hakmem::malloc(size);
    let c = hakmem::malloc(size);
    assert!(
        a != b && b != c && a != c,
        "size {size}: one block handed out twice: {a:p} {b:p} {c:p}"
    );
}

fn run_case(case: &str) -> *mut u8 {
    if let Some(spec) = case.strip_prefix("double:") {
        let (size, between) = spec.split_once(':').unwrap();
        let between = BETWEEN[between.parse::<usize>().unwrap()];
        return first_free(size.parse().unwrap(), between);
    }
    if let Some(offset) = case.strip_prefix("interior-known:") {
        return interior_of_a_known_slab(offset.parse().unwrap());
    }
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
        "split-tail" => {
            // A freed 5 MiB block's 6 MiB mapping, cached, is split for a
            // 1.5 MiB request (its first 2 MiB); the rest is cached on its
            // own, a header where the old block had bytes. A free of the
            // address where that tail's block would start is a stale
            // interior pointer of the old block.
            hakmem::trim();
            let old = hakmem::malloc(5 << 20);
            // SAFETY: live, freed once.
            unsafe { hakmem::free(old) };
            let head = hakmem::malloc(3 << 19);
            if !cfg!(feature = "secure") {
                assert_eq!(head, old, "the cached mapping was not split");
            }
            // SAFETY: inside the old block's mapping (6 MiB).
            unsafe { old.add(hakmem_superslab::CHUNK_SIZE) }
        }
        "tail-known" => {
            // The first class whose blocks do not fill their slab: the
            // address where one more block would start lies in the
            // slab's tail, in the slab's own 64 KiB, past its capacity.
            let class = (1..NUM_CLASSES)
                .find(|&c| !hakmem_superslab::SLAB_SIZE.is_multiple_of(class_size(c)))
                .unwrap();
            let size = class_size(class);
            let p = hakmem::malloc(size);
            let q = hakmem::malloc(size);
            // SAFETY: live, freed once: its slab, this thread's, enters
            // the thread's table (where the C door's free looks first).
            unsafe { hakmem::free(q) };
            let base = p as usize & !(hakmem_superslab::SLAB_SIZE - 1);
            let capacity = hakmem_superslab::SLAB_SIZE / size;
            (base + capacity * size) as *mut u8
        }
        "metadata" => {
            let p = hakmem::malloc(256);
            (p as usize & !(hakmem_superslab::CHUNK_SIZE - 1)) as *mut u8
        }
        other => panic!("unknown case {other}"),
    }
}

/// A pointer `offset` bytes into a live 256-byte block whose slab the
/// thread's table of its own slabs knows (another block of it was freed),
/// so that the free meets the table first.
fn interior_of_a_known_slab(offset: usize) -> *mut u8 {
    let p = hakmem::malloc(256);
    let q = hakmem::malloc(256);
    assert!(!p.is_null() && !q.is_null());
    // SAFETY: live, freed once.
    unsafe { hakmem::free(q) };
    // SAFETY: inside the block (offset < 256) or just past it.
    unsafe { p.add(offset) }
}

/// The child side: when the environment names a case, commit the misuse.
#[test]
fn child() {
    let Ok(case) = std::env::var(CASE_ENV) else {
        return;
    };
    let p = run_case(&case);
    println!("misuse-address {:#018x}", p as usize);
    // SAFETY: deliberately invalid; hakmem must detect it.
    unsafe { hakmem::free(p) };
    let_the_freer_go();
    assert_eq!(hakmem::stats().invalid_frees, 1);
    if let Some(size) = case
        .strip_prefix("double:")
        .and_then(|s| s.split(':').next())
    {
        let size: usize = size.parse().unwrap();
        nothing_handed_out_twice(size);
        nothing_handed_out_twice(size + size / 4);
    }
    println!("survived");
}

/// Every double free of [`double_free_sizes`] and [`BETWEEN`] in one child
/// with `HAKMEM_INVALID_FREE=ignore`: each is counted, and no block is
/// handed out twice afterwards.
#[test]
fn child_all_ignored() {
    if std::env::var_os("HAKMEM_MISUSE_ALL").is_none() {
        return;
    }
    let mut expected = 0;
    for size in double_free_sizes() {
        for between in BETWEEN {
            let p = first_free(size, between);
            // SAFETY: a second free, deliberately; ignored by option.
            unsafe { hakmem::free(p) };
            let_the_freer_go();
            expected += 1;
            assert_eq!(
                hakmem::stats().invalid_frees,
                expected,
                "size {size} {between:?}: the second free was not caught"
            );
            nothing_handed_out_twice(size);
            nothing_handed_out_twice(size + size / 4);
        }
    }
    println!("survived {expected}");
    let purging = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "hakmem-purge")
        });
    println!(
        "purge thread {}",
        if purging { "running" } else { "absent" }
    );
}

fn spawn(case: &str, ignore: bool, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CASE_ENV, case)
        .envs(env.iter().copied());
    if ignore {
        cmd.env("HAKMEM_INVALID_FREE", "ignore");
    } else {
        cmd.env_remove("HAKMEM_INVALID_FREE");
    }
    cmd.output().unwrap()
}

/// Runs `case` in a child: reported with its address (saying one of
/// `why`) and aborted by default; with `HAKMEM_INVALID_FREE=ignore`
/// reported, survived and (for a double free) nothing handed out twice.
fn check(case: &str, why: &[&str]) {
    check_with(case, why, &[]);
}

/// [`check`] with `env` set in the child.
fn check_with(case: &str, why: &[&str], env: &[(&str, &str)]) {
    use std::os::unix::process::ExitStatusExt;
    let out = spawn(case, false, env);
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
        why.iter().any(|w| stderr.contains(w)),
        "{case}: report says none of {why:?}: {stderr}"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{case}: {:?}",
        out.status
    );
    assert!(!stdout.contains("survived"));

    let out = spawn(case, true, env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{case} ignored: {:?} {stdout} {stderr}",
        out.status
    );
    assert!(stdout.contains("survived"));
    assert!(stderr.contains("ignored"), "{case}: {stderr}");
}

#[test]
fn free_of_a_stack_pointer_is_reported() {
    check("foreign", &["not allocated by hakmem"]);
}

#[test]
fn free_of_another_allocators_pointer_is_reported() {
    check("libc", &["not allocated by hakmem"]);
}

#[test]
fn free_of_an_interior_pointer_is_reported() {
    check("interior", &["inside a block"]);
}

/// As above, where the block's slab is in the thread's table of its own
/// slabs: aligned and unaligned offsets, the last byte.
#[test]
fn free_of_an_interior_pointer_into_a_known_slab_is_reported() {
    for offset in [1, 7, 8, 16, 100, 255] {
        check(&format!("interior-known:{offset}"), &["inside a block"]);
    }
}

/// The address where one more block would start, in a slab's tail: no
/// block's start, though the stride says so.
#[test]
fn free_in_a_slabs_tail_past_its_last_block_is_reported() {
    check("tail-known", &["inside a block", "not the start of a live"]);
}

#[test]
fn free_where_a_split_cached_mappings_tail_begins_is_reported() {
    check(
        "split-tail",
        &[
            "not the start of a live hakmem block",
            "not allocated by hakmem",
        ],
    );
}

#[test]
fn free_into_region_metadata_is_reported() {
    check("metadata", &["not the start of a live hakmem block"]);
}

/// What the report of a double free of a `size`-byte block says: small
/// blocks carry the free mark; a freed run or cached huge block is no live
/// block's start; an uncached huge block's mapping is gone.
fn double_free_reasons(size: usize) -> &'static [&'static str] {
    double_free_reasons_after(size, 0)
}

/// [`double_free_reasons`] for the block of `size` bytes that the
/// [`BETWEEN`] case `between` frees twice (a `Resized` block grew).
fn double_free_reasons_after(size: usize, between: usize) -> &'static [&'static str] {
    let freed = match BETWEEN[between] {
        Between::Resized => size + size / 4,
        _ => size,
    };
    if freed <= hakmem::SMALL_REQUEST_MAX {
        &["already free (double free)"]
    } else {
        &[
            "not the start of a live hakmem block",
            "not allocated by hakmem",
        ]
    }
}

#[test]
fn double_free_of_every_small_class_is_reported() {
    for size in (1..NUM_CLASSES).map(class_size) {
        for (i, _) in BETWEEN.iter().enumerate() {
            check(
                &format!("double:{size}:{i}"),
                double_free_reasons_after(size, i),
            );
        }
    }
}

#[test]
fn double_free_of_large_runs_and_huge_blocks_is_reported() {
    for size in LARGE_SIZES {
        for (i, _) in BETWEEN.iter().enumerate() {
            check(
                &format!("double:{size}:{i}"),
                double_free_reasons_after(size, i),
            );
        }
    }
}

/// The huge cache's own boundary: a freed 4 MiB block is cached (its
/// mapping stays), and a second free of it must not cache it twice.
#[test]
fn double_free_of_a_cached_huge_block_never_gives_two_callers_one_mapping() {
    check("double:4194304:0", double_free_reasons(4 << 20));
}

/// Runs [`child_all_ignored`] with `env` set: every double free counted,
/// nothing handed out twice.
fn all_ignored_with(env: &[(&str, &str)]) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_all_ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HAKMEM_MISUSE_ALL", "1")
        .env("HAKMEM_INVALID_FREE", "ignore")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = double_free_sizes().len() * BETWEEN.len();
    assert!(
        out.status.success() && stdout.contains(&format!("survived {expected}")),
        "{env:?}: {:?}\n{stdout}\n{}",
        out.status,
        &stderr[stderr.len().saturating_sub(3000)..]
    );
    stdout.into_owned()
}

#[test]
fn every_ignored_double_free_is_counted_and_nothing_is_handed_out_twice() {
    let _ = all_ignored_with(&[]);
}

/// A folder of this test's own for the profiles the profiler writes at
/// exit (not the current folder).
fn profile_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("hakmem-misuse-prof-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The heap profiler keeps freed blocks in places of its own: a sampled
/// small block lives on a detached slab, and while a thread samples, its
/// frees past the sample point wait aside (`kept`) for the next refill.
/// A double free is caught there too, whatever the sample interval: one
/// allocation in about 4 KiB sampled (the stash and the lists both in
/// play), and every allocation sampled (every small block detached).
#[test]
fn double_frees_while_the_heap_profiler_samples_are_caught() {
    for (name, sample) in [("4k", "4096"), ("every", "1")] {
        let dir = profile_dir(name);
        let file = dir.join("exit.%p.%n.heap");
        let file = file.to_str().unwrap();
        let env = [
            ("HAKMEM_PROF", "1"),
            ("HAKMEM_PROF_SAMPLE", sample),
            ("HAKMEM_PROF_FILE", file),
        ];
        let _ = all_ignored_with(&env);
        // The profiler was on: it wrote the exit profile (box backend
        // only; the legacy toggles warn and do not profile, and the cases
        // are plain double frees there).
        let written = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0));
        assert!(
            written || !cfg!(feature = "box-refactor"),
            "sample {sample}: no profile written: was it on?"
        );
        for size in [16, 64, 1024, 16 << 10, 64 << 10, 4 << 20] {
            for i in [0, 2, 3, 7] {
                // A sampled block's detached slab goes back once its
                // blocks have (trim), so the second free may find no live
                // block there rather than the free mark.
                let mut why = double_free_reasons_after(size, i).to_vec();
                why.push("not the start of a live hakmem block");
                check_with(&format!("double:{size}:{i}"), &why, &env);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The purge thread returns what waits unused (free slabs, empty regions,
/// cached huge mappings) on its own, between the program's calls: with a
/// purge delay of 1 ms it runs while the cases do, so a double free meets
/// a slab or a cached mapping the thread is purging or has just given
/// back. Each is still reported, and ignored, nothing goes out twice.
#[test]
fn double_frees_while_the_purge_thread_purges_are_caught() {
    let env = [
        ("HAKMEM_BACKGROUND_PURGE", "1"),
        ("HAKMEM_PURGE_DELAY_MS", "1"),
    ];
    let stdout = all_ignored_with(&env);
    assert!(
        stdout.contains("purge thread running"),
        "the purge thread never ran: {stdout}"
    );
    for size in [16, 1024, 64 << 10, 1 << 20, 4 << 20, 40 << 20] {
        for i in [0, 1, 3, 4, 7] {
            check_with(
                &format!("double:{size}:{i}"),
                double_free_reasons_after(size, i),
                &env,
            );
        }
    }
}
