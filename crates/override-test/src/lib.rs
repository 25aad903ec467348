//! The `hakmem` crate's `override` feature under test: the scenario that
//! this package's two binaries run (one with `#[global_allocator]` =
//! `hakmem::HakMem`, one with std's default allocator), against the C
//! library `build.rs` compiles with `cc` (and the C++ one, with `c++`).
//!
//! With the feature, the binary itself exports hakmem's C ABI, so the C
//! side's `malloc`, `free` and `operator new` — and those of the shared
//! libraries the binary loads, `libc.so.6`'s own `strdup` among them — are
//! hakmem's. [`run`] checks it block by block: memory allocated in C is
//! freed in Rust through `libc::free` and the other way round, hakmem
//! knows every C block (`hakmem::usable_size`), the C side sees its huge
//! block in `hakmem_stats` and Rust in `hakmem::stats()`, and the dynamic
//! linker resolves `malloc`, `free` and `operator new` to the binary's.
//! `tests/override.rs` runs both binaries with `HAKMEM_STATS=1`.

use std::ffi::{c_char, c_void, CStr};

// The C side (c/c_side.c).
extern "C" {
    fn c_alloc(n: usize, fill: u8) -> *mut c_void;
    fn c_calloc_realloc(n: usize, m: usize) -> *mut c_void;
    fn c_aligned(align: usize, n: usize) -> *mut c_void;
    fn c_strdup(s: *const c_char) -> *mut c_char;
    fn c_free(p: *mut c_void);
    fn c_check(p: *const c_void, n: usize, fill: u8) -> i32;
    fn c_usable_size(p: *mut c_void) -> usize;
    fn c_huge_blocks() -> usize;
    fn c_build() -> *const c_char;
}

// The C++ side (c/cxx_side.cpp).
#[cfg(have_cxx)]
extern "C" {
    fn cxx_new_array(n: usize, fill: u8) -> *mut c_void;
    fn cxx_sized_delete(p: *mut c_void, n: usize);
    fn cxx_operator_new() -> *mut c_void;
    fn cxx_operator_new_file() -> *const c_char;
    /// `operator new(size_t)`: the binary's own, hakmem's.
    fn _Znwm(n: usize) -> *mut c_void;
}

/// Sizes from every kind of block: small classes, large runs, huge
/// mappings.
const SIZES: [usize; 12] = [
    1,
    8,
    24,
    100,
    1000,
    4096,
    16 << 10,
    20_000,
    100 << 10,
    1 << 20,
    (1 << 20) + 1,
    4 << 20,
];

/// A failed check: what was expected.
type Check = Result<(), String>;

/// A named check of [`run`].
type Named = (&'static str, fn() -> Check);

fn check(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// Blocks of C's `malloc`, `calloc`/`realloc` and `posix_memalign`, known
/// to hakmem and freed by Rust with `libc::free`.
fn c_to_rust() -> Check {
    for (i, &n) in SIZES.iter().enumerate() {
        let fill = 0x11 * (i as u8 + 1);
        // SAFETY: plain C calls on blocks of their own.
        let p = unsafe { c_alloc(n, fill) };
        check(!p.is_null(), || format!("c_alloc({n}) gave null"))?;
        // SAFETY: `p` is a live block of `n` bytes from C's malloc.
        let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) };
        check(bytes.iter().all(|&b| b == fill), || {
            format!("c_alloc({n}): contents")
        })?;
        let usable = hakmem::usable_size(p.cast());
        check(usable >= n, || {
            format!("c_alloc({n}): hakmem::usable_size {usable}: not hakmem's block")
        })?;
        // SAFETY: a live block of the C side's malloc, not used again.
        unsafe { libc::free(p) };

        // SAFETY: as above.
        let q = unsafe { c_calloc_realloc(n, 2 * n + 1) };
        check(
            !q.is_null() && hakmem::usable_size(q.cast()) > 2 * n,
            || format!("c_calloc_realloc({n}): not hakmem's block"),
        )?;
        // SAFETY: the first `n` bytes of a live block were zeroed by calloc
        // and kept by realloc, the rest filled with 0x5a.
        let ok = unsafe {
            c_check(q, n, 0) == 1 && c_check(q.cast::<u8>().add(n).cast(), n + 1, 0x5a) == 1
        };
        check(ok, || format!("c_calloc_realloc({n}): contents"))?;
        // SAFETY: a live block of C's realloc, not used again.
        unsafe { libc::free(q) };

        let align = 64 << (i % 6);
        // SAFETY: as above.
        let a = unsafe { c_aligned(align, n) };
        check(
            !a.is_null()
                && (a as usize).is_multiple_of(align)
                && hakmem::usable_size(a.cast()) >= n,
            || format!("c_aligned({align}, {n})"),
        )?;
        // SAFETY: a live block of C's posix_memalign, not used again.
        unsafe { libc::free(a) };
    }
    Ok(())
}

/// Blocks Rust allocates (`libc::malloc`, and the global allocator's
/// `Box`) freed by the C side's `free`.
fn rust_to_c() -> Check {
    for &n in &SIZES {
        // SAFETY: a plain malloc.
        let p = unsafe { libc::malloc(n) };
        check(!p.is_null() && hakmem::usable_size(p.cast()) >= n, || {
            format!("libc::malloc({n}) from Rust: not hakmem's block")
        })?;
        // SAFETY: `n` writable bytes.
        unsafe { p.cast::<u8>().write_bytes(0x77, n) };
        // SAFETY: as above: C reads them.
        let same = unsafe { c_check(p, n, 0x77) } == 1;
        check(same, || format!("libc::malloc({n}): contents in C"))?;
        // SAFETY: a live block of malloc, not used again.
        unsafe { c_free(p) };

        // The global allocator's block (hakmem's, or malloc's, which is
        // hakmem's too) given to C, which frees it with free().
        let boxed: Box<[u8]> = vec![0x33u8; n].into_boxed_slice();
        let raw = Box::into_raw(boxed).cast::<c_void>();
        // SAFETY: the box's `n` bytes, alive until the free below.
        let usable = unsafe { c_usable_size(raw) };
        // SAFETY: as above.
        let same = unsafe { c_check(raw, n, 0x33) } == 1;
        check(usable >= n && same, || {
            format!("Box<[u8; {n}]> in C: usable {usable}, contents kept {same}")
        })?;
        // SAFETY: a live block of hakmem's, which free takes whatever
        // layout it had; the box is not used again.
        unsafe { c_free(raw) };
    }
    Ok(())
}

/// The C side's huge block, seen by both sides' statistics.
fn huge_block_in_the_stats() -> Check {
    let before = hakmem::stats().superslab.huge_in_use;
    // SAFETY: a plain C call.
    let c_before = unsafe { c_huge_blocks() };
    check(c_before == before, || {
        format!("hakmem_stats in C: {c_before} huge blocks, hakmem::stats {before}")
    })?;
    // SAFETY: as above.
    let p = unsafe { c_alloc(8 << 20, 1) };
    check(!p.is_null(), || "c_alloc(8 MiB) gave null".into())?;
    let during = hakmem::stats().superslab.huge_in_use;
    // SAFETY: a plain C call.
    let c_during = unsafe { c_huge_blocks() };
    check(during == before + 1 && c_during == during, || {
        format!("C's 8 MiB block: huge blocks {before} -> {during} (C: {c_during})")
    })?;
    // SAFETY: the live block, not used again.
    unsafe { libc::free(p) };
    let after = hakmem::stats().superslab.huge_in_use;
    check(after == before, || {
        format!("C's 8 MiB block freed by Rust: huge blocks {after}, was {before}")
    })
}

/// Blocks that C allocates, freed by other Rust threads (remote frees).
fn across_threads() -> Check {
    let blocks: Vec<usize> = (0..4000)
        // SAFETY: plain C calls.
        .map(|i| unsafe { c_alloc(16 + i % 512, 0x42) } as usize)
        .collect();
    check(blocks.iter().all(|&p| p != 0), || {
        "c_alloc gave null".into()
    })?;
    let halves: Vec<Vec<usize>> = blocks.chunks(2000).map(<[usize]>::to_vec).collect();
    let threads: Vec<_> = halves
        .into_iter()
        .map(|half| {
            std::thread::spawn(move || {
                for p in half {
                    // SAFETY: live blocks of the C side's malloc, each
                    // freed once, here.
                    unsafe { libc::free(p as *mut c_void) };
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| "a freeing thread panicked".to_string())?;
    }
    Ok(())
}

/// The shared libraries' calls: `libc.so.6`'s own `strdup`, and what the
/// dynamic linker gives for `malloc` and friends (which every shared
/// library's calls bind to): the binary's, hakmem's.
fn shared_libraries() -> Check {
    // SAFETY: a NUL-terminated string.
    let s = unsafe { libc::strdup(c"copied by libc.so.6".as_ptr()) };
    check(!s.is_null() && hakmem::usable_size(s.cast()) > 0, || {
        "libc.so.6's strdup: not hakmem's block".into()
    })?;
    // SAFETY: strdup's block, not used again.
    unsafe { libc::free(s.cast()) };
    // SAFETY: as above (the C side's strdup, from the archive).
    let s = unsafe { c_strdup(c"copied in C".as_ptr()) };
    // SAFETY: a NUL-terminated copy.
    let copy = unsafe { CStr::from_ptr(s) };
    check(
        copy == c"copied in C" && hakmem::usable_size(s.cast()) > 0,
        || "C's strdup: not hakmem's block".into(),
    )?;
    // SAFETY: as above.
    unsafe { c_free(s.cast()) };
    let ours: [(&CStr, usize); 7] = [
        (c"malloc", libc::malloc as *const () as usize),
        (c"free", libc::free as *const () as usize),
        (c"calloc", libc::calloc as *const () as usize),
        (c"realloc", libc::realloc as *const () as usize),
        (
            c"posix_memalign",
            libc::posix_memalign as *const () as usize,
        ),
        (c"aligned_alloc", libc::aligned_alloc as *const () as usize),
        (
            c"malloc_usable_size",
            libc::malloc_usable_size as *const () as usize,
        ),
    ];
    for (name, addr) in ours {
        // SAFETY: a lookup by a NUL-terminated name.
        let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
        check(found == addr, || {
            format!("the dynamic linker's {name:?} is {found:#x}, the binary's {addr:#x}")
        })?;
    }
    Ok(())
}

/// The C++ side: `new[]` freed by Rust, a sized delete of Rust's block,
/// and `operator new` the binary's (hakmem's) for C++ code and for the
/// dynamic linker (libstdc++'s own calls).
#[cfg(have_cxx)]
fn cxx() -> Check {
    // SAFETY: plain C++ calls.
    let p = unsafe { cxx_new_array(1000, 0x66) };
    check(
        !p.is_null() && hakmem::usable_size(p.cast()) >= 1000,
        || "new char[1000]: not hakmem's block".into(),
    )?;
    // SAFETY: new[] of char is hakmem's malloc here; not used again.
    unsafe { libc::free(p) };
    // SAFETY: a block of malloc(48), given to the sized delete.
    unsafe { cxx_sized_delete(libc::malloc(48), 48) };
    let ours = _Znwm as *const () as usize;
    // SAFETY: plain C calls.
    let in_cxx = unsafe { cxx_operator_new() } as usize;
    // SAFETY: a lookup by a NUL-terminated name.
    let dynamic = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_Znwm".as_ptr()) } as usize;
    // SAFETY: a static or dladdr's string.
    let file = unsafe { CStr::from_ptr(cxx_operator_new_file()) }.to_string_lossy();
    check(
        in_cxx == ours && dynamic == ours && !file.contains("libstdc++"),
        || {
            format!(
                "operator new: C++ {in_cxx:#x}, dynamic {dynamic:#x}, hakmem's {ours:#x} ({file})"
            )
        },
    )
}

/// Runs every check, printing one line each; the binary's exit status.
pub fn run(label: &str) -> std::process::ExitCode {
    // SAFETY: a static string of the C side.
    let build = unsafe { CStr::from_ptr(c_build()) }
        .to_string_lossy()
        .into_owned();
    let mut checks: Vec<Named> = vec![
        ("c-to-rust", c_to_rust),
        ("rust-to-c", rust_to_c),
        ("huge-block-in-the-stats", huge_block_in_the_stats),
        ("across-threads", across_threads),
        ("shared-libraries", shared_libraries),
    ];
    #[cfg(have_cxx)]
    checks.push(("cxx", cxx));
    let mut failed = 0;
    if build != hakmem::BUILD_NAME {
        println!("FAILED build: C sees {build}, Rust {}", hakmem::BUILD_NAME);
        failed += 1;
    }
    for (name, f) in checks {
        match f() {
            Ok(()) => println!("ok {name}"),
            Err(e) => {
                println!("FAILED {name}: {e}");
                failed += 1;
            }
        }
    }
    let invalid = hakmem::stats().invalid_frees;
    if invalid != 0 {
        println!("FAILED: {invalid} invalid frees");
        failed += 1;
    }
    if failed > 0 {
        return std::process::ExitCode::FAILURE;
    }
    println!(
        "override ok ({label}, {build}, C++ {})",
        if cfg!(have_cxx) {
            "tested"
        } else {
            "not built"
        }
    );
    std::process::ExitCode::SUCCESS
}
