//! Process start and exit, for every program hakmem serves: a Rust program
//! with `#[global_allocator]` and a C program under `LD_PRELOAD` alike.
//!
//! - `.init_array` (before `main`, and before the constructors of objects
//!   loaded after hakmem): creates the thread-exit keys in the order that
//!   keeps thread exit cheap, registers `pthread_atfork` handlers around
//!   every allocator lock, reads the options, and — when a report is asked
//!   for — keeps a close-on-exec duplicate of stderr, because programs may
//!   close stderr on their way out (GNU coreutils do, from `atexit`).
//! - `.fini_array` (after `main` returns or `exit` is called): hardened
//!   builds check the poison of the blocks in the exiting thread's
//!   quarantine; the `HAKMEM_STATS` and `HAKMEM_TINY_FAST_STATS` reports.
//!
//! Nothing here is needed for correctness: hakmem works for calls that come
//! before the constructor (from the dynamic loader or another constructor).

use core::sync::atomic::{AtomicI32, Ordering};

/// Where exit reports go, or -1 when none was asked for.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn prefork() {
    crate::prefork();
}

extern "C" fn postfork_parent() {
    crate::postfork_parent();
}

extern "C" fn postfork_child() {
    crate::postfork_child();
}

extern "C" fn on_start() {
    crate::init();
    // The heap profiler (`HAKMEM_PROF=1`) samples from here on.
    crate::prof::init();
    // SAFETY: registering plain extern "C" fns that never unwind.
    unsafe { libc::pthread_atfork(Some(prefork), Some(postfork_parent), Some(postfork_child)) };
    let o = crate::options::get();
    if o.stats || o.fast_stats {
        // SAFETY: fcntl on fd 2 has no memory-safety preconditions; a closed
        // stderr gives -1 and no report.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 100) };
        REPORT_FD.store(fd, Ordering::Relaxed);
    }
}

extern "C" fn on_exit() {
    // A write after free into a block still waiting in the exiting
    // thread's quarantine is reported now rather than never.
    #[cfg(feature = "secure")]
    crate::hardened::check_quarantine();
    // The last heap profile (`HAKMEM_PROF=1`), before the reports.
    crate::prof::at_exit();
    let fd = REPORT_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let o = crate::options::get();
    if o.fast_stats {
        crate::report::print_fast_stats(fd);
    }
    if o.stats {
        crate::report::print_stats_summary(fd);
    }
}

#[used]
#[link_section = ".init_array"]
static ON_START: extern "C" fn() = on_start;

#[used]
#[link_section = ".fini_array"]
static ON_EXIT: extern "C" fn() = on_exit;
