//! # The C ABI: hakmem as the C allocator
//!
//! The `malloc` family with glibc's signatures and semantics, glibc's
//! `<malloc.h>` extensions, C++ `operator new`/`delete` and hakmem's own
//! `hakmem_*` calls (`include/hakmem.h`), each forwarding to the facade.
//! Like snmalloc's `override/`, it is the one implementation of the C ABI,
//! serving both places it is exported from:
//!
//! - **libhakmem.so and libhakmem.a** (`crates/hakmem-preload`, a
//!   `cdylib` and `staticlib` whose library name is `hakmem`), which
//!   compiles this folder as a module of its own (`#[path]`);
//! - **a Rust binary** whose `hakmem` dependency has the `override`
//!   feature: the module is then part of the `hakmem` crate, and the C
//!   and C++ code linked into the binary allocates from hakmem too.
//!
//! The facade is reached as `facade` in both (the cdylib's name for its
//! `hakmem` dependency; `extern crate self as facade` in the facade).
//! The library does not turn the `override` feature on: Cargo unifies a
//! dependency's features over every package of one build, so every test
//! binary of `cargo test` would then export `malloc`, and a test's own
//! call of `libc::malloc` (for a pointer hakmem does not own) would get
//! one of hakmem's.
//!
//! ## Invariants
//! - Every function here is `extern "C"`, allocates nothing through any
//!   other allocator, and cannot unwind: a panic inside aborts (the release
//!   profile has `panic = "abort"`, and Rust aborts on a panic that would
//!   leave an `extern "C"` function anyway).
//! - Failures set `errno` as glibc does: `ENOMEM` for memory that cannot be
//!   had (or a size that overflows), `EINVAL` for a bad alignment.
//! - No initialisation is required before the first call: the loader, a
//!   constructor before `main`, or a thread created by C code may call
//!   `malloc` first. The facade's constructor and destructor (its
//!   `lifecycle` module, linked wherever the facade is) register the fork
//!   handlers and print the optional exit reports.
//! - Nothing here uses `std` (both crates are `#![no_std]`), and there is
//!   no `#[panic_handler]` here: the layers below use `std::thread_local!`
//!   and so link `std`, whose handler (abort, in a `panic = "abort"`
//!   build) is the one in force. A panic is a bug: the message std formats
//!   may allocate, re-entering hakmem.
//! - Every exported function is named in [`EXPORTS`], a `#[used]` table,
//!   so that a Rust binary links them all even when nothing in it calls
//!   one before the linker reads the facade's archive (a C library is
//!   often read after it).
//!
//! ## Modules
//! - `cxx`: C++ `operator new` / `operator delete`, every variant (their
//!   Itanium ABI names; the throwing `new`s are naked functions, so that
//!   the new-handler and `std::bad_alloc` never unwind through Rust).
//! - `glibc_ext`: glibc's `<malloc.h>` extensions (`mallinfo2`,
//!   `mallinfo`, `malloc_stats`, `malloc_info`, `mallopt`) with hakmem's
//!   figures, written through the C library's stdio from stack buffers.
//! - `hakmem_api`: `hakmem_stats`, `hakmem_trim`, `hakmem_print_stats`,
//!   `hakmem_option_get` and `hakmem_build`, declared in `include/hakmem.h`.
//!
//! ## May call
//! The facade (`hakmem`) and `libc` (`glibc_ext`: its stdio, `fputs`
//! and `flockfile`); `cxx` also calls libstdc++'s
//! `std::get_new_handler` and `std::__throw_bad_alloc` through weak
//! references.

use core::ffi::c_void;
use core::ptr;

use libc::{c_int, size_t};

mod cxx;
mod glibc_ext;
mod hakmem_api;

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

#[inline]
fn nomem_if_null(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// An allocation of `malloc`'s kind: the fast cache's hit inline
/// ([`facade::malloc_cached`]), else `rest`. With the fast cache (and
/// without `secure`) `rest` is out of line and reached by a tail call, so
/// a hit is a leaf function: no stack frame pushed and popped (a shared
/// tail of hit and miss, which set `errno` after a call, had made every
/// call save a register). In other builds the hit is always null and
/// `rest`, inlined, is all there is.
#[inline(always)]
fn cached_or(size: size_t, rest: fn(size_t) -> *mut c_void) -> *mut c_void {
    let p = facade::malloc_cached(size);
    if !p.is_null() {
        return p.cast();
    }
    rest(size)
}

/// `malloc(3)`: [`cached_or`] [`malloc_uncached`].
#[no_mangle]
pub extern "C" fn malloc(size: size_t) -> *mut c_void {
    cached_or(size, malloc_uncached)
}

/// [`malloc`] past the fast cache's hit.
#[cfg_attr(
    all(feature = "fast-path", not(feature = "secure")),
    cold,
    inline(never)
)]
fn malloc_uncached(size: size_t) -> *mut c_void {
    nomem_if_null(facade::malloc(size))
}

/// `free(3)`: null is ignored; a pointer hakmem never handed out is reported
/// and aborts (or is ignored with `HAKMEM_INVALID_FREE=ignore`).
///
/// # Safety
/// `p` is null or a block from this library, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the caller's contract; invalid pointers are detected there.
    unsafe { facade::free(p.cast()) }
}

/// `free_sized` (C23): frees a block of `malloc`, `calloc` or `realloc`
/// whose requested size is `size`, the class from the size without the
/// lookup (as C++'s sized delete). Null does nothing; size 0 goes through
/// `free`.
///
/// # Safety
/// `p` is null or such a block, with exactly this size, not used
/// afterwards. A wrong size is undefined behaviour (C23) and is not
/// detected: the block joins the wrong class.
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: size_t) {
    // SAFETY: the caller's contract is the facade's free_sized's (the
    // block came from malloc's alignment).
    unsafe { facade::free_sized(p.cast(), size, 1) }
}

/// `free_aligned_sized` (C23): frees a block of `aligned_alloc(align,
/// size)`; a bad alignment, like size 0, goes through `free`.
///
/// # Safety
/// `p` is null or such a block, with exactly this alignment and size, not
/// used afterwards (undetected otherwise, as for [`free_sized`]).
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: size_t, size: size_t) {
    // SAFETY: the caller's contract is the facade's free_sized's.
    unsafe { facade::free_sized(p.cast(), size, align) }
}

/// `cfree(3)`: the same as `free`.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: as for free.
    unsafe { facade::free(p.cast()) }
}

/// `calloc(3)`: zeroed; `n * size` overflowing gives null and `ENOMEM`.
#[no_mangle]
pub extern "C" fn calloc(n: size_t, size: size_t) -> *mut c_void {
    nomem_if_null(facade::calloc(n, size))
}

/// `realloc(3)` as glibc has it: `realloc(NULL, n)` is `malloc(n)`;
/// `realloc(p, 0)` frees `p` and returns null; on failure null with `ENOMEM`
/// and `p` untouched.
///
/// # Safety
/// `p` is null or a live block from this library.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: size_t) -> *mut c_void {
    if !p.is_null() && size == 0 {
        // SAFETY: the caller's contract.
        unsafe { facade::free(p.cast()) };
        return ptr::null_mut();
    }
    // SAFETY: the caller's contract.
    nomem_if_null(unsafe { facade::realloc(p.cast(), size) })
}

/// `reallocarray(3)`: `realloc(p, n * size)` with overflow giving null and
/// `ENOMEM` (and `p` untouched).
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: size_t, size: size_t) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: the caller's contract.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `posix_memalign(3)`: `EINVAL` unless `align` is a power of two multiple
/// of `sizeof(void *)`; `ENOMEM` when memory cannot be had. `errno` is left
/// alone (restored, should a failed system call below have set it); `*out`
/// is written only on success.
///
/// # Safety
/// `out` is valid for a write of a pointer.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    align: size_t,
    size: size_t,
) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let saved = errno();
    let p = facade::aligned_alloc(align, size);
    if p.is_null() {
        set_errno(saved);
        return libc::ENOMEM;
    }
    // SAFETY: the caller's contract.
    unsafe { *out = p.cast() };
    0
}

/// `aligned_alloc(3)`: null with `EINVAL` unless `align` is a power of two
/// (glibc 2.38's rule); null with `ENOMEM` when memory cannot be had.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: size_t, size: size_t) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    nomem_if_null(facade::aligned_alloc(align, size))
}

/// `memalign(3)`: like glibc, an alignment that is not a power of two is
/// rounded up to one.
#[no_mangle]
pub extern "C" fn memalign(align: size_t, size: size_t) -> *mut c_void {
    let Some(align) = align.max(1).checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    };
    nomem_if_null(facade::aligned_alloc(align, size))
}

/// `valloc(3)`: page-aligned.
#[no_mangle]
pub extern "C" fn valloc(size: size_t) -> *mut c_void {
    nomem_if_null(facade::aligned_alloc(facade::page_size(), size))
}

/// `pvalloc(3)`: page-aligned, size rounded up to whole pages (one page for 0).
#[no_mangle]
pub extern "C" fn pvalloc(size: size_t) -> *mut c_void {
    let page = facade::page_size();
    match size.max(1).checked_next_multiple_of(page) {
        Some(rounded) => nomem_if_null(facade::aligned_alloc(page, rounded)),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `malloc_usable_size(3)`: bytes usable at `p`; 0 for null.
///
/// # Safety
/// `p` is null or a live block from this library.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> size_t {
    facade::usable_size(p.cast())
}

/// `malloc_trim(3)`: gives back everything hakmem can; returns 1.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: size_t) -> c_int {
    facade::trim();
    1
}

/// Addresses of functions, for [`EXPORTS`]. Nothing reads them: the
/// linker keeps what they point to.
struct Exports(#[allow(dead_code)] [*const (); 46]);

// SAFETY: the table is never written, and what it holds are the addresses
// of functions, which any thread may read.
unsafe impl Sync for Exports {}

/// Every function of the C ABI, in a `#[used]` static: rustc keeps it in
/// any binary that links the crate (its synthetic `symbols.o` refers to
/// it), and through it every function here, so the linker has them before
/// it reads a C library, or `libc.so.6`, that calls them. Without it, a
/// Rust binary with the `override` feature whose own code calls none of
/// them links the facade's objects first and skips these: a C archive read
/// later binds `malloc` to glibc's, and so does every shared library. (For
/// libhakmem.so and libhakmem.a it changes nothing: everything here is
/// exported there anyway.)
#[used]
static EXPORTS: Exports = Exports([
    malloc as *const (),
    free as *const (),
    free_sized as *const (),
    free_aligned_sized as *const (),
    cfree as *const (),
    calloc as *const (),
    realloc as *const (),
    reallocarray as *const (),
    posix_memalign as *const (),
    aligned_alloc as *const (),
    memalign as *const (),
    valloc as *const (),
    pvalloc as *const (),
    malloc_usable_size as *const (),
    malloc_trim as *const (),
    glibc_ext::mallinfo2 as *const (),
    glibc_ext::mallinfo as *const (),
    glibc_ext::malloc_stats as *const (),
    glibc_ext::malloc_info as *const (),
    glibc_ext::mallopt as *const (),
    hakmem_api::hakmem_stats as *const (),
    hakmem_api::hakmem_trim as *const (),
    hakmem_api::hakmem_print_stats as *const (),
    hakmem_api::hakmem_prof_dump as *const (),
    hakmem_api::hakmem_option_get as *const (),
    hakmem_api::hakmem_build as *const (),
    cxx::_Znwm as *const (),
    cxx::_Znam as *const (),
    cxx::_ZnwmSt11align_val_t as *const (),
    cxx::_ZnamSt11align_val_t as *const (),
    cxx::_ZnwmRKSt9nothrow_t as *const (),
    cxx::_ZnamRKSt9nothrow_t as *const (),
    cxx::_ZnwmSt11align_val_tRKSt9nothrow_t as *const (),
    cxx::_ZnamSt11align_val_tRKSt9nothrow_t as *const (),
    cxx::_ZdlPv as *const (),
    cxx::_ZdaPv as *const (),
    cxx::_ZdlPvm as *const (),
    cxx::_ZdaPvm as *const (),
    cxx::_ZdlPvSt11align_val_t as *const (),
    cxx::_ZdaPvSt11align_val_t as *const (),
    cxx::_ZdlPvmSt11align_val_t as *const (),
    cxx::_ZdaPvmSt11align_val_t as *const (),
    cxx::_ZdlPvRKSt9nothrow_t as *const (),
    cxx::_ZdaPvRKSt9nothrow_t as *const (),
    cxx::_ZdlPvSt11align_val_tRKSt9nothrow_t as *const (),
    cxx::_ZdaPvSt11align_val_tRKSt9nothrow_t as *const (),
]);
