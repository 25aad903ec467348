//! Options read once from the environment, without allocating.

use core::sync::atomic::{AtomicU8, Ordering};

/// The options in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `HAKMEM_INVALID_FREE=ignore`: report an invalid free and go on
    /// (default `abort`: report and abort).
    pub ignore_invalid_free: bool,
}

const UNREAD: u8 = 0;
const FLAG_READ: u8 = 1;
const FLAG_IGNORE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNREAD);

fn env_is(name: &core::ffi::CStr, value: &[u8]) -> Option<bool> {
    // SAFETY: getenv reads the environment without allocating; the name is
    // NUL-terminated.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: getenv returns a NUL-terminated string.
    let bytes = unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes();
    Some(bytes == value)
}

#[cold]
fn read() -> u8 {
    let mut bits = FLAG_READ;
    match env_is(c"HAKMEM_INVALID_FREE", b"ignore") {
        Some(true) => bits |= FLAG_IGNORE,
        Some(false) if env_is(c"HAKMEM_INVALID_FREE", b"abort") != Some(true) => {
            crate::report::write_stderr(
                b"hakmem: HAKMEM_INVALID_FREE must be 'abort' or 'ignore'; using 'abort'\n",
            );
        }
        _ => {}
    }
    STATE.store(bits, Ordering::Relaxed);
    bits
}

/// The options, read from the environment on first use.
pub fn get() -> Options {
    let mut bits = STATE.load(Ordering::Relaxed);
    if bits == UNREAD {
        bits = read();
    }
    Options {
        ignore_invalid_free: bits & FLAG_IGNORE != 0,
    }
}
