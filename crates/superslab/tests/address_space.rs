//! The registry covers the user address space the kernel hands out, and
//! refuses (without harm) what lies beyond; page-granular work uses the
//! kernel's page size. Addresses above 2^47, which aarch64 kernels with
//! 48-bit address spaces hand out, are simulated at the registry's edge.

use hakmem_superslab::registry::{self, ChunkKind};
use hakmem_superslab::{huge, os, CHUNK_SHIFT, CHUNK_SIZE};

#[test]
fn the_registry_covers_at_least_47_bits_and_refuses_beyond_its_end() {
    assert!(registry::ensure());
    let chunks = registry::covered_chunks();
    let end = chunks << CHUNK_SHIFT;
    assert!(end >= 1 << 47, "covers only {end:#x}");
    let here = 0u8;
    assert!(
        (&here as *const u8 as usize) < end,
        "the stack lies beyond the registry"
    );
    // The last chunk it covers (above 2^47 on a 48-bit table) works like
    // any other; no one maps it in this test, and it is cleared at once.
    let last = end - CHUNK_SIZE;
    assert!(registry::set(last, ChunkKind::Huge));
    assert_eq!(registry::kind_of(last + 12345), ChunkKind::Huge);
    assert!(registry::set(last, ChunkKind::Foreign));
    assert_eq!(registry::kind_of(last), ChunkKind::Foreign);
    // Past the end: refused, and reads as foreign.
    for beyond in [end, end + CHUNK_SIZE, 1 << 50, usize::MAX - 4095] {
        assert!(!registry::set(beyond, ChunkKind::Region), "{beyond:#x}");
        assert_eq!(registry::kind_of(beyond), ChunkKind::Foreign);
    }
}

#[test]
fn the_page_size_is_the_kernels() {
    // SAFETY: sysconf has no preconditions.
    let kernel = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    assert_eq!(os::page_size(), kernel);
    // A huge block's mapping is page-granular in the kernel's pages: its
    // block starts on a page boundary of them, or (hardened builds, whose
    // blocks end at a guard page) ends on one.
    let size = (3 << 20) + kernel;
    let b = huge::alloc(size, 16).unwrap().block;
    let at = b.ptr() as usize;
    if cfg!(feature = "secure") {
        assert_eq!((at + size) % kernel, 0, "{at:#x}");
    } else {
        assert_eq!(at % kernel, 0, "{at:#x}");
    }
    // SAFETY: live, freed once.
    unsafe { huge::free(b) }.unwrap();
    huge::release_cached();
}
