//! C++ `operator new` and `operator delete`, every variant, under their
//! Itanium C++ ABI names (docs/C_ABI.md).
//!
//! Without them libstdc++'s operators call `malloc` and `free`: an extra
//! call layer each way, and a sized delete loses its size. Exported from
//! libhakmem.so, or from a Rust binary built with the `override` feature,
//! they take the place of libstdc++'s.
//!
//! ## Deletes
//! Plain functions: `free`, or the facade's `free_sized` when the size is
//! known (the class from the size, as Rust's `dealloc`, without the lookup).
//! They cannot throw.
//!
//! ## News (x86_64)
//! libstdc++'s semantics: when memory cannot be had, call the installed
//! new-handler (`std::get_new_handler()`) and retry, as long as there is
//! one; with none, throw `std::bad_alloc`. The nothrow forms return null
//! instead, and catch what a handler throws (as libstdc++'s do, by a
//! `catch (...)` around the throwing form).
//!
//! The release profile is `panic = "abort"`, and a C++ exception that
//! unwinds into a Rust frame aborts the process there, `extern "C-unwind"`
//! or not. So each `operator new` is a naked function: its assembly calls
//! a Rust allocation function (which returns, never unwinds), and does
//! itself everything that may throw: the handler call and the throw.
//! Those frames carry hand-written call frame information, so the C++
//! unwinder can pass through them; the nothrow forms also name
//! `__gxx_personality_v0` and a hand-written LSDA, whose one call-site
//! entry (the handler call) catches everything.
//!
//! libstdc++ is reached through weak references: the GOT entries of
//! `std::get_new_handler`, `std::__throw_bad_alloc`, `__cxa_begin_catch`,
//! `__cxa_end_catch` and `__gxx_personality_v0` are null in a process
//! without libstdc++ (a C program), or one that loads it with `dlopen`
//! only (the references are bound at start-up). Such a process has no
//! handler and nothing to throw: a throwing `new` that fails reports "out
//! of memory in operator new" and aborts.
//!
//! ## News (other targets)
//! Plain Rust: no new-handler; a throwing `new` that fails reports and
//! aborts instead of throwing; the nothrow forms return null.

use core::ffi::c_void;

use libc::size_t;

// ---- Allocation: what the naked functions call ----------------------------

/// `operator new(size)`'s allocation: [`facade::malloc`], which gives a
/// unique block for 0, as libstdc++'s `new` does by asking `malloc` for 1.
/// The fast cache's hit inline, the rest out of line, as in the C ABI's
/// `malloc` ([`super::cached_or`]).
extern "C" fn new_block(size: size_t) -> *mut c_void {
    super::cached_or(size, new_block_uncached)
}

/// [`new_block`] past the fast cache's hit.
#[cfg_attr(
    all(feature = "fast-path", not(feature = "secure")),
    cold,
    inline(never)
)]
fn new_block_uncached(size: size_t) -> *mut c_void {
    facade::malloc(size).cast()
}

/// `operator new(size, align)`'s allocation: null for an alignment that
/// is not a power of two (the caller throws without asking the handler).
extern "C" fn new_aligned_block(size: size_t, align: size_t) -> *mut c_void {
    facade::aligned_alloc(align, size).cast()
}

/// A throwing `new` failed, and there is no `std::bad_alloc` to throw
/// (libstdc++ is not loaded, or this target cannot throw from here).
#[cold]
extern "C" fn out_of_memory() -> ! {
    #[cfg(target_arch = "x86_64")]
    const MSG: &[u8] = b"hakmem: out of memory in operator new, and no std::bad_alloc to throw \
                         (libstdc++ was not loaded at start-up); aborting\n";
    #[cfg(not(target_arch = "x86_64"))]
    const MSG: &[u8] = b"hakmem: out of memory in operator new (this build cannot throw \
                         std::bad_alloc); aborting\n";
    // SAFETY: writes a static buffer to stderr; abort takes no arguments.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::abort()
    }
}

// ---- News: x86_64 -----------------------------------------------------------
//
// The frames, at each call (the stack 16-byte aligned there):
// - plain forms: `push rdi` keeps the size for a retry and aligns the
//   stack (CFA = rsp + 16);
// - aligned forms: `push rsi; push rdi; sub rsp, 8` (CFA = rsp + 32),
//   the alignment at [rsp + 16], the size at [rsp + 8].
// The success path of `_Znwm` is push, call, test, jz, pop, ret: the
// stack slot that keeps the size for a retry is the one that aligns the
// stack, so keeping it costs nothing more. (A tail `jmp` to the Rust
// function would return its null straight to the caller; the Rust side
// would then have to tail-call the failure path, which stable Rust cannot
// guarantee: a call leaves a Rust frame for the exception to unwind into.)
//
// rustc emits no `.cfi_startproc` / `.cfi_endproc` for a naked function
// (checked with rustc 1.95: the body is emitted as module-level assembly
// between a label and `.size`), so each body brackets itself.
//
// Labels: numeric ones (2: to 5:) within a body; the nothrow bodies also
// need named ones for the LSDA (`.cfi_lsda` takes a symbol), made unique
// by the function's name.

/// The throwing form, `size` in rdi (`$alloc(size)`).
#[cfg(target_arch = "x86_64")]
macro_rules! new_throwing {
    ($alloc:path) => {
        core::arch::naked_asm!(
            ".weak _ZSt15get_new_handlerv",
            ".weak _ZSt17__throw_bad_allocv",
            ".cfi_startproc",
            "push rdi",
            ".cfi_adjust_cfa_offset 8",
            "2:",
            "call {alloc}",
            "test rax, rax",
            "jz 3f",
            ".cfi_remember_state",
            "pop rcx",
            ".cfi_adjust_cfa_offset -8",
            "ret",
            ".cfi_restore_state",
            // Out of memory: the handler, if there is one, then again.
            "3:",
            "mov rax, qword ptr [rip + _ZSt15get_new_handlerv@GOTPCREL]",
            "test rax, rax",
            "jz 4f",
            "call rax",
            "test rax, rax",
            "jz 4f",
            "call rax",
            "mov rdi, qword ptr [rsp]",
            "jmp 2b",
            // No handler: throw std::bad_alloc.
            "4:",
            "mov rax, qword ptr [rip + _ZSt17__throw_bad_allocv@GOTPCREL]",
            "test rax, rax",
            "jz 5f",
            "call rax",
            "5:",
            "call {oom}",
            "ud2",
            ".cfi_endproc",
            alloc = sym $alloc,
            oom = sym out_of_memory,
        )
    };
}

/// The throwing aligned form, `size` in rdi and `align` in rsi
/// (`$alloc(size, align)`). An alignment that is not a power of two throws
/// at once, without the handler (libstdc++'s rule).
#[cfg(target_arch = "x86_64")]
macro_rules! new_aligned_throwing {
    ($alloc:path) => {
        core::arch::naked_asm!(
            ".weak _ZSt15get_new_handlerv",
            ".weak _ZSt17__throw_bad_allocv",
            ".cfi_startproc",
            "push rsi",
            ".cfi_adjust_cfa_offset 8",
            "push rdi",
            ".cfi_adjust_cfa_offset 8",
            "sub rsp, 8",
            ".cfi_adjust_cfa_offset 8",
            "2:",
            "call {alloc}",
            "test rax, rax",
            "jz 3f",
            ".cfi_remember_state",
            "add rsp, 24",
            ".cfi_adjust_cfa_offset -24",
            "ret",
            ".cfi_restore_state",
            "3:",
            "mov rax, qword ptr [rsp + 16]",
            "test rax, rax",
            "jz 4f",
            "lea rcx, [rax - 1]",
            "test rax, rcx",
            "jnz 4f",
            "mov rax, qword ptr [rip + _ZSt15get_new_handlerv@GOTPCREL]",
            "test rax, rax",
            "jz 4f",
            "call rax",
            "test rax, rax",
            "jz 4f",
            "call rax",
            "mov rdi, qword ptr [rsp + 8]",
            "mov rsi, qword ptr [rsp + 16]",
            "jmp 2b",
            "4:",
            "mov rax, qword ptr [rip + _ZSt17__throw_bad_allocv@GOTPCREL]",
            "test rax, rax",
            "jz 5f",
            "call rax",
            "5:",
            "call {oom}",
            "ud2",
            ".cfi_endproc",
            alloc = sym $alloc,
            oom = sym out_of_memory,
        )
    };
}

/// The LSDA of a nothrow form: one call-site entry, `try_begin` to
/// `try_end` (the handler call), whose landing pad `catch` catches
/// everything; an exception from any other call in the function would
/// terminate (none throws). Landing pads are offsets from `fn`, the
/// function's start (`@LPStart` omitted).
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! nothrow_lsda {
    ($name:ident) => {
        concat!(
            ".pushsection .gcc_except_table,\"a\",@progbits\n",
            ".p2align 2\n",
            ".Lhakmem_lsda_", stringify!($name), ":\n",
            // @LPStart: omitted.
            ".byte 0xff\n",
            // @TType: indirect | pcrel | sdata4, and its offset.
            ".byte 0x9b\n",
            ".uleb128 .Lhakmem_tt_", stringify!($name),
                " - .Lhakmem_ttref_", stringify!($name), "\n",
            ".Lhakmem_ttref_", stringify!($name), ":\n",
            // The call-site table, uleb128 entries: start, length, landing
            // pad, first action record (1-based).
            ".byte 0x1\n",
            ".uleb128 .Lhakmem_cse_", stringify!($name),
                " - .Lhakmem_csb_", stringify!($name), "\n",
            ".Lhakmem_csb_", stringify!($name), ":\n",
            ".uleb128 .Lhakmem_try_begin_", stringify!($name),
                " - .Lhakmem_fn_", stringify!($name), "\n",
            ".uleb128 .Lhakmem_try_end_", stringify!($name),
                " - .Lhakmem_try_begin_", stringify!($name), "\n",
            ".uleb128 .Lhakmem_catch_", stringify!($name),
                " - .Lhakmem_fn_", stringify!($name), "\n",
            ".uleb128 1\n",
            ".Lhakmem_cse_", stringify!($name), ":\n",
            // Action record 1: type filter 1, no next record.
            ".byte 1\n",
            ".byte 0\n",
            // The type table (indexed backwards from its end): type 1 is
            // null, `catch (...)`.
            ".p2align 2\n",
            ".long 0\n",
            ".Lhakmem_tt_", stringify!($name), ":\n",
            ".popsection\n",
        )
    };
}

/// The landing pad of a nothrow form: `catch (...) {}`, then null through
/// label 4 (which pops the frame). The exception object is in rax.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! nothrow_catch {
    ($name:ident) => {
        concat!(
            ".Lhakmem_catch_", stringify!($name), ":\n",
            "mov rdi, rax\n",
            "call qword ptr [rip + __cxa_begin_catch@GOTPCREL]\n",
            "call qword ptr [rip + __cxa_end_catch@GOTPCREL]\n",
            "xor eax, eax\n",
            "jmp 4b\n",
        )
    };
}

/// The start of a nothrow form: the label `fn`, its personality and LSDA.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
macro_rules! nothrow_start {
    ($name:ident) => {
        concat!(
            ".weak _ZSt15get_new_handlerv\n",
            ".weak __cxa_begin_catch\n",
            ".weak __cxa_end_catch\n",
            ".Lhakmem_fn_", stringify!($name), ":\n",
            ".cfi_startproc\n",
            ".cfi_personality 0x9b, hakmem_cxx_personality\n",
            ".cfi_lsda 0x1b, .Lhakmem_lsda_", stringify!($name), "\n",
        )
    };
}

/// The nothrow form (`$name`, `size` in rdi): null when memory cannot be
/// had and there is no handler, or the handler throws.
#[cfg(target_arch = "x86_64")]
macro_rules! new_nothrow {
    ($name:ident, $alloc:path) => {
        core::arch::naked_asm!(
            nothrow_start!($name),
            "push rdi",
            ".cfi_adjust_cfa_offset 8",
            "2:",
            "call {alloc}",
            "test rax, rax",
            "jz 3f",
            // Returns rax: the block, or null.
            "4:",
            ".cfi_remember_state",
            "pop rcx",
            ".cfi_adjust_cfa_offset -8",
            "ret",
            ".cfi_restore_state",
            "3:",
            "mov rax, qword ptr [rip + _ZSt15get_new_handlerv@GOTPCREL]",
            "test rax, rax",
            "jz 4b",
            "call rax",
            "test rax, rax",
            "jz 4b",
            concat!(".Lhakmem_try_begin_", stringify!($name), ":"),
            "call rax",
            concat!(".Lhakmem_try_end_", stringify!($name), ":"),
            "mov rdi, qword ptr [rsp]",
            "jmp 2b",
            nothrow_catch!($name),
            ".cfi_endproc",
            nothrow_lsda!($name),
            alloc = sym $alloc,
        )
    };
}

/// The nothrow aligned form (`$name`, `size` in rdi, `align` in rsi).
#[cfg(target_arch = "x86_64")]
macro_rules! new_aligned_nothrow {
    ($name:ident, $alloc:path) => {
        core::arch::naked_asm!(
            nothrow_start!($name),
            "push rsi",
            ".cfi_adjust_cfa_offset 8",
            "push rdi",
            ".cfi_adjust_cfa_offset 8",
            "sub rsp, 8",
            ".cfi_adjust_cfa_offset 8",
            "2:",
            "call {alloc}",
            "test rax, rax",
            "jz 3f",
            "4:",
            ".cfi_remember_state",
            "add rsp, 24",
            ".cfi_adjust_cfa_offset -24",
            "ret",
            ".cfi_restore_state",
            // A bad alignment: null at once (rax is null).
            "3:",
            "mov rcx, qword ptr [rsp + 16]",
            "test rcx, rcx",
            "jz 4b",
            "lea rdx, [rcx - 1]",
            "test rcx, rdx",
            "jnz 4b",
            "mov rax, qword ptr [rip + _ZSt15get_new_handlerv@GOTPCREL]",
            "test rax, rax",
            "jz 4b",
            "call rax",
            "test rax, rax",
            "jz 4b",
            concat!(".Lhakmem_try_begin_", stringify!($name), ":"),
            "call rax",
            concat!(".Lhakmem_try_end_", stringify!($name), ":"),
            "mov rdi, qword ptr [rsp + 8]",
            "mov rsi, qword ptr [rsp + 16]",
            "jmp 2b",
            nothrow_catch!($name),
            ".cfi_endproc",
            nothrow_lsda!($name),
            alloc = sym $alloc,
        )
    };
}

// The personality of the nothrow forms, through an indirect pointer as
// GCC's `DW.ref.__gxx_personality_v0`: null without libstdc++ (the
// unwinder then skips the frame's handlers; an exception can only come
// from libstdc++'s code anyway).
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".weak __gxx_personality_v0",
    ".pushsection .data.rel.ro.hakmem_cxx_personality,\"aw\",@progbits",
    ".p2align 3",
    ".globl hakmem_cxx_personality",
    ".hidden hakmem_cxx_personality",
    ".type hakmem_cxx_personality, @object",
    ".size hakmem_cxx_personality, 8",
    "hakmem_cxx_personality:",
    ".quad __gxx_personality_v0",
    ".popsection",
);

/// `operator new(size_t)`: never null; on failure the new-handler, then
/// `std::bad_alloc`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _Znwm(size: size_t) -> *mut c_void {
    new_throwing!(new_block)
}

/// `operator new[](size_t)`: as `operator new`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _Znam(size: size_t) -> *mut c_void {
    new_throwing!(new_block)
}

/// `operator new(size_t, std::align_val_t)`: aligned; a bad alignment
/// throws `std::bad_alloc` at once.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_t(size: size_t, align: size_t) -> *mut c_void {
    new_aligned_throwing!(new_aligned_block)
}

/// `operator new[](size_t, std::align_val_t)`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_t(size: size_t, align: size_t) -> *mut c_void {
    new_aligned_throwing!(new_aligned_block)
}

/// `operator new(size_t, const std::nothrow_t &)`: null on failure.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _ZnwmRKSt9nothrow_t(size: size_t, tag: *const c_void) -> *mut c_void {
    new_nothrow!(_ZnwmRKSt9nothrow_t, new_block)
}

/// `operator new[](size_t, const std::nothrow_t &)`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _ZnamRKSt9nothrow_t(size: size_t, tag: *const c_void) -> *mut c_void {
    new_nothrow!(_ZnamRKSt9nothrow_t, new_block)
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t &)`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: size_t,
    align: size_t,
    tag: *const c_void,
) -> *mut c_void {
    new_aligned_nothrow!(_ZnwmSt11align_val_tRKSt9nothrow_t, new_aligned_block)
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t &)`.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: size_t,
    align: size_t,
    tag: *const c_void,
) -> *mut c_void {
    new_aligned_nothrow!(_ZnamSt11align_val_tRKSt9nothrow_t, new_aligned_block)
}

// ---- News: other targets ----------------------------------------------------

/// The throwing forms elsewhere: abort where x86_64 would throw.
#[cfg(not(target_arch = "x86_64"))]
fn or_abort(p: *mut c_void) -> *mut c_void {
    if p.is_null() {
        out_of_memory();
    }
    p
}

/// `operator new(size_t)` (aborts on failure on this target).
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn _Znwm(size: size_t) -> *mut c_void {
    or_abort(new_block(size))
}

/// `operator new[](size_t)` (aborts on failure on this target).
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn _Znam(size: size_t) -> *mut c_void {
    or_abort(new_block(size))
}

/// `operator new(size_t, std::align_val_t)` (aborts on failure on this
/// target).
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_t(size: size_t, align: size_t) -> *mut c_void {
    or_abort(new_aligned_block(size, align))
}

/// `operator new[](size_t, std::align_val_t)` (aborts on failure on this
/// target).
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_t(size: size_t, align: size_t) -> *mut c_void {
    or_abort(new_aligned_block(size, align))
}

/// `operator new(size_t, const std::nothrow_t &)`: null on failure.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn _ZnwmRKSt9nothrow_t(size: size_t, _tag: *const c_void) -> *mut c_void {
    new_block(size)
}

/// `operator new[](size_t, const std::nothrow_t &)`: null on failure.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn _ZnamRKSt9nothrow_t(size: size_t, _tag: *const c_void) -> *mut c_void {
    new_block(size)
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t &)`.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: size_t,
    align: size_t,
    _tag: *const c_void,
) -> *mut c_void {
    new_aligned_block(size, align)
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t &)`.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: size_t,
    align: size_t,
    _tag: *const c_void,
) -> *mut c_void {
    new_aligned_block(size, align)
}

// ---- Deletes ------------------------------------------------------------------

/// `operator delete(void *)`: `free`.
///
/// # Safety
/// `p` is null or a block from this library's `operator new`, not used
/// afterwards (anything else is reported as `free` reports it).
#[no_mangle]
pub unsafe extern "C" fn _ZdlPv(p: *mut c_void) {
    // SAFETY: the caller's contract; invalid pointers are detected there.
    unsafe { facade::free(p.cast()) }
}

/// `operator delete[](void *)`.
///
/// # Safety
/// As for [`_ZdlPv`].
#[no_mangle]
pub unsafe extern "C" fn _ZdaPv(p: *mut c_void) {
    // SAFETY: as for _ZdlPv.
    unsafe { facade::free(p.cast()) }
}

/// `operator delete(void *, size_t)`: the class from the size, without
/// the lookup (null does nothing; size 0 goes through `free`).
///
/// # Safety
/// `p` is null or a block from `operator new(size)` with exactly this
/// `size`, not used afterwards. A wrong size is undefined behaviour in
/// C++ and is not detected (the block joins the wrong class).
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvm(p: *mut c_void, size: size_t) {
    // SAFETY: the caller's contract is free_sized's (alignment 1: the
    // block came from the unaligned operator new, i.e. malloc).
    unsafe { facade::free_sized(p.cast(), size, 1) }
}

/// `operator delete[](void *, size_t)`.
///
/// # Safety
/// As for [`_ZdlPvm`], with `operator new[]`.
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvm(p: *mut c_void, size: size_t) {
    // SAFETY: as for _ZdlPvm.
    unsafe { facade::free_sized(p.cast(), size, 1) }
}

/// `operator delete(void *, std::align_val_t)`.
///
/// # Safety
/// As for [`_ZdlPv`] (the block from the aligned `operator new`).
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvSt11align_val_t(p: *mut c_void, _align: size_t) {
    // SAFETY: as for _ZdlPv.
    unsafe { facade::free(p.cast()) }
}

/// `operator delete[](void *, std::align_val_t)`.
///
/// # Safety
/// As for [`_ZdlPv`] (the block from the aligned `operator new[]`).
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvSt11align_val_t(p: *mut c_void, _align: size_t) {
    // SAFETY: as for _ZdlPv.
    unsafe { facade::free(p.cast()) }
}

/// `operator delete(void *, size_t, std::align_val_t)`: the class from the
/// size and alignment.
///
/// # Safety
/// `p` is null or a block from `operator new(size, align)` with exactly
/// this size and alignment, not used afterwards (undetected otherwise, as
/// for [`_ZdlPvm`]).
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvmSt11align_val_t(p: *mut c_void, size: size_t, align: size_t) {
    // SAFETY: the caller's contract is free_sized's.
    unsafe { facade::free_sized(p.cast(), size, align) }
}

/// `operator delete[](void *, size_t, std::align_val_t)`.
///
/// # Safety
/// As for [`_ZdlPvmSt11align_val_t`], with `operator new[]`.
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvmSt11align_val_t(p: *mut c_void, size: size_t, align: size_t) {
    // SAFETY: as for _ZdlPvmSt11align_val_t.
    unsafe { facade::free_sized(p.cast(), size, align) }
}

/// `operator delete(void *, const std::nothrow_t &)`.
///
/// # Safety
/// As for [`_ZdlPv`].
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvRKSt9nothrow_t(p: *mut c_void, _tag: *const c_void) {
    // SAFETY: as for _ZdlPv.
    unsafe { facade::free(p.cast()) }
}

/// `operator delete[](void *, const std::nothrow_t &)`.
///
/// # Safety
/// As for [`_ZdlPv`].
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvRKSt9nothrow_t(p: *mut c_void, _tag: *const c_void) {
    // SAFETY: as for _ZdlPv.
    unsafe { facade::free(p.cast()) }
}

/// `operator delete(void *, std::align_val_t, const std::nothrow_t &)`.
///
/// # Safety
/// As for [`_ZdlPv`].
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvSt11align_val_tRKSt9nothrow_t(
    p: *mut c_void,
    _align: size_t,
    _tag: *const c_void,
) {
    // SAFETY: as for _ZdlPv.
    unsafe { facade::free(p.cast()) }
}

/// `operator delete[](void *, std::align_val_t, const std::nothrow_t &)`.
///
/// # Safety
/// As for [`_ZdlPv`].
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvSt11align_val_tRKSt9nothrow_t(
    p: *mut c_void,
    _align: size_t,
    _tag: *const c_void,
) {
    // SAFETY: as for _ZdlPv.
    unsafe { facade::free(p.cast()) }
}
