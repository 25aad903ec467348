//! Starting threads loudly: a thread that cannot be created stops the
//! benchmark with a message and a non-zero exit, never a silently shorter
//! run (the C Larson's failure mode).

use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{Builder, JoinHandle};

/// Stack size of benchmark threads: small, the same for every allocator.
pub const STACK_SIZE: usize = 256 << 10;

/// Set when some thread could not be started; checked by the main thread.
pub static SPAWN_FAILED: AtomicBool = AtomicBool::new(false);

/// Starts `f` on a new thread, or records the failure and returns `None`.
pub fn try_spawn<F>(f: F) -> Option<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    match Builder::new().stack_size(STACK_SIZE).spawn(f) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("error: could not create a thread: {e}");
            SPAWN_FAILED.store(true, Ordering::SeqCst);
            None
        }
    }
}

/// Starts `f` on a new thread, or exits the process with a message.
pub fn spawn<F>(f: F) -> JoinHandle<()>
where
    F: FnOnce() + Send + 'static,
{
    try_spawn(f).unwrap_or_else(|| exit(1))
}

/// Exits with a message if any thread could not be started.
pub fn exit_if_spawn_failed() {
    if SPAWN_FAILED.load(Ordering::SeqCst) {
        eprintln!("error: a thread could not be created; the figures are not valid");
        exit(1);
    }
}

/// Joins a thread, exiting the process if it panicked.
pub fn join(h: JoinHandle<()>) {
    if h.join().is_err() {
        eprintln!("error: a benchmark thread panicked");
        exit(1);
    }
}
