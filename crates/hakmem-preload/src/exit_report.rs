//! `HAKMEM_STATS=1`: a summary of hakmem's accounting on stderr at exit,
//! proof that hakmem served the program. Runs from `.fini_array`, after
//! `main` returns or `exit` is called, and allocates nothing.
//!
//! Programs may close stderr on their way out (GNU coreutils do, from an
//! `atexit` handler), so when the report is asked for, stderr is duplicated
//! at load time (close-on-exec, so children do not inherit it) and the
//! report goes to the duplicate.

use core::sync::atomic::{AtomicI32, Ordering};

/// The descriptor to report to, or -1 when no report was asked for.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// Reads `HAKMEM_STATS` (at load time) and arms the report when it is `1`.
pub(crate) fn arm() {
    // SAFETY: getenv with a NUL-terminated name; no allocation.
    let v = unsafe { libc::getenv(c"HAKMEM_STATS".as_ptr()) };
    // SAFETY: getenv returned a NUL-terminated string when non-null.
    if v.is_null() || unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes() != b"1" {
        return;
    }
    // SAFETY: fcntl on fd 2 has no memory-safety preconditions; a closed
    // stderr gives -1 and no report.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
    REPORT_FD.store(fd, Ordering::Relaxed);
}

extern "C" fn on_exit() {
    let fd = REPORT_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        facade::report::print_stats_summary(fd);
    }
}

#[used]
#[link_section = ".fini_array"]
static ON_EXIT: extern "C" fn() = on_exit;
