//! The override feature in a Rust binary with `#[global_allocator]` whose
//! Rust code calls no C allocation function and which links no C archive:
//! the shared libraries' `malloc` and `free` (here `libc.so.6`'s own
//! `strdup`'s) are still hakmem's, because the binary exports them.

use std::ffi::{c_void, CStr};

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

/// The start of the object (the binary or a shared library) holding `addr`.
fn object_of(addr: *const c_void) -> usize {
    // SAFETY: dladdr fills the struct (zeroed, a valid bit pattern) and
    // reads nothing else.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(addr, &mut info) == 0 {
            return 0;
        }
        info.dli_fbase as usize
    }
}

fn main() -> std::process::ExitCode {
    let binary = object_of(main as *const c_void);
    let mut failed = false;
    for name in [c"malloc", c"free", c"calloc", c"realloc", c"posix_memalign"] {
        // SAFETY: a lookup by a NUL-terminated name.
        let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        if found.is_null() || object_of(found) != binary {
            println!("FAILED: {name:?} is not the binary's");
            failed = true;
        }
    }
    // Rust's own allocations: hakmem's through the global allocator.
    let words: Vec<String> = (0..1000).map(|i| format!("word {i}")).collect();
    // SAFETY: a NUL-terminated string.
    let s = unsafe { libc::strdup(c"copied by libc.so.6".as_ptr()) };
    if s.is_null() || hakmem::usable_size(s.cast()) == 0 {
        // (Left alone: not a block of the `free` this binary calls.)
        println!("FAILED: libc.so.6's strdup is not hakmem's block");
        failed = true;
    } else {
        // SAFETY: a NUL-terminated copy.
        let copy = unsafe { CStr::from_ptr(s) };
        failed |= copy != c"copied by libc.so.6";
        // SAFETY: strdup's block, hakmem's, not used again.
        unsafe { libc::free(s.cast()) };
    }
    failed |= words[999] != "word 999";
    if failed {
        return std::process::ExitCode::FAILURE;
    }
    println!("override ok (shared libraries only)");
    std::process::ExitCode::SUCCESS
}
