//! A huge request that no cached mapping fits as it is takes one of
//! another length, resized: a longer one is split, a shorter one (of
//! at least a quarter of the request) grows, its pages moving along.
//! (A longer one's tail stays cached, a mapping of its own.) So a
//! program cycling big buffers of varying sizes reuses the pages it already
//! faulted in instead of having the kernel zero fresh ones each time.
//! Hardened builds keep their guarded layouts and do not resize.
//!
//! Alone in its test binary: it reasons about the process's huge cache.
#![cfg(not(feature = "secure"))]

use std::sync::Mutex;

use hakmem_superslab::{huge, lookup, stats, HugeRef, Lookup};

const MIB: usize = 1 << 20;

/// One test at a time: they share the cache and the byte counts.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes `byte` at the start of every 1 MiB of the block's first `len`
/// bytes.
fn stamp(b: HugeRef, len: usize, byte: u8) {
    for at in (0..len).step_by(MIB) {
        // SAFETY: inside the live block.
        unsafe { b.ptr().add(at).write(byte) };
    }
}

/// True when every 1 MiB of the block's first `len` bytes starts with
/// `byte`.
fn stamped(b: HugeRef, len: usize, byte: u8) -> bool {
    (0..len).step_by(MIB).all(|at| {
        // SAFETY: inside the live block.
        (unsafe { b.ptr().add(at).read() }) == byte
    })
}

fn free(b: HugeRef) {
    // SAFETY: live, freed once.
    unsafe { huge::free(b) }.unwrap();
}

#[test]
fn a_shorter_cached_mapping_grows_into_a_longer_request_with_its_pages() {
    let _g = serial();
    huge::release_cached();
    let a = huge::alloc(12 * MIB, 16).unwrap();
    stamp(a.block, 12 * MIB, 0xa5);
    free(a.block);
    let (hits, mapped) = (stats().huge_cache_hits, stats().mapped_bytes);

    let b = huge::alloc(20 * MIB, 16).unwrap();
    assert!(!b.zeroed, "a reused mapping does not read as zero");
    assert_eq!(stats().huge_cache_hits, hits + 1);
    assert!(
        stamped(b.block, 12 * MIB, 0xa5),
        "the first 12 MiB are the old mapping's pages"
    );
    assert_eq!(
        stats().mapped_bytes,
        mapped + 8 * MIB,
        "only the growth is new"
    );
    assert_eq!(huge::cached_mappings().count, 0);
    // The whole block is there, and it is a live huge block where it lies.
    // SAFETY: the block's last byte.
    unsafe { b.block.ptr().add(20 * MIB - 1).write(1) };
    assert!(matches!(lookup(b.block.ptr()), Lookup::Huge(h) if h.ptr() == b.block.ptr()));
    if b.block.ptr() != a.block.ptr() {
        assert!(
            !matches!(lookup(a.block.ptr()), Lookup::Huge(_)),
            "moved: the old address is no block"
        );
    }
    free(b.block);
    huge::release_cached();
}

#[test]
fn a_longer_cached_mapping_is_cut_to_a_shorter_request() {
    let _g = serial();
    huge::release_cached();
    let a = huge::alloc(24 * MIB, 16).unwrap();
    stamp(a.block, 24 * MIB, 0x5a);
    free(a.block);
    let (hits, mapped) = (stats().huge_cache_hits, stats().mapped_bytes);

    // More than twice as short: the plain cache would not take it.
    let b = huge::alloc(8 * MIB, 16).unwrap();
    assert!(!b.zeroed);
    assert_eq!(stats().huge_cache_hits, hits + 1);
    assert_eq!(b.block.ptr(), a.block.ptr(), "cut where it lies");
    assert!(stamped(b.block, 8 * MIB, 0x5a));
    assert_eq!(stats().mapped_bytes, mapped, "the tail stays, resident");
    let tail = huge::cached_mappings();
    assert_eq!((tail.count, tail.bytes), (1, 16 * MIB), "cached on its own");
    // It serves a request of its own length with the old pages.
    let c = huge::alloc(16 * MIB - 4096, 16).unwrap();
    assert!(!c.zeroed);
    assert_eq!(c.block.ptr() as usize, b.block.ptr() as usize + 10 * MIB);
    assert!(stamped(c.block, 14 * MIB, 0x5a));
    assert_eq!(huge::cached_mappings().count, 0);
    free(c.block);
    assert!(b.block.usable_size() >= 8 * MIB && b.block.usable_size() < 10 * MIB);
    free(b.block);
    huge::release_cached();
}

#[test]
fn a_cached_mapping_far_shorter_than_the_request_is_left_alone() {
    let _g = serial();
    huge::release_cached();
    let a = huge::alloc(2 * MIB, 16).unwrap();
    free(a.block);
    let hits = stats().huge_cache_hits;

    let b = huge::alloc(20 * MIB, 16).unwrap();
    assert!(b.zeroed, "fresh from the kernel");
    assert_eq!(stats().huge_cache_hits, hits);
    assert_eq!(
        huge::cached_mappings().count,
        1,
        "the short one stays cached"
    );
    free(b.block);
    huge::release_cached();
}

#[test]
fn a_live_block_grows_by_its_mapping_with_its_bytes_and_no_fresh_mapping() {
    let _g = serial();
    huge::release_cached();
    let a = huge::alloc(4 * MIB, 16).unwrap().block;
    stamp(a, 4 * MIB, 0x3c);
    let (fresh, mapped) = (stats().huge_mapped, stats().mapped_bytes);

    // SAFETY: live, ours, unused meanwhile.
    let b = unsafe { huge::grow(a, 40 * MIB) }.expect("grown");
    assert!(stamped(b, 4 * MIB, 0x3c), "the bytes came along");
    assert!(
        (b.ptr() as usize).is_multiple_of(4096),
        "the block's offset is kept"
    );
    assert!(b.usable_size() >= 40 * MIB);
    // SAFETY: the grown block's last byte.
    unsafe { b.ptr().add(40 * MIB - 1).write(1) };
    assert_eq!(
        stats().huge_mapped,
        fresh,
        "no fresh mapping: the old one grew"
    );
    assert_eq!(
        stats().mapped_bytes,
        mapped + 36 * MIB,
        "6 -> 42 MiB mapped"
    );
    assert!(matches!(lookup(b.ptr()), Lookup::Huge(h) if h == b));
    if b.ptr() != a.ptr() {
        assert!(!matches!(lookup(a.ptr()), Lookup::Huge(_)));
    }
    // Growing within the mapping changes nothing.
    // SAFETY: as above.
    assert_eq!(unsafe { huge::grow(b, 41 * MIB) }, Some(b));
    free(b);
    huge::release_cached();
}

#[test]
fn a_block_aligned_to_a_chunk_is_not_grown_by_its_mapping() {
    let _g = serial();
    let a = huge::alloc(4 * MIB, 2 * MIB).unwrap().block;
    // SAFETY: live, ours.
    assert_eq!(unsafe { huge::grow(a, 40 * MIB) }, None);
    assert!(
        matches!(lookup(a.ptr()), Lookup::Huge(h) if h == a),
        "untouched"
    );
    free(a);
    huge::release_cached();
}

#[test]
fn a_live_block_with_its_neighbour_taken_moves_with_its_pages() {
    let _g = serial();
    huge::release_cached();
    let a = huge::alloc(4 * MIB, 16).unwrap().block;
    stamp(a, 4 * MIB, 0x69);
    // A page of someone else's right after the mapping: it cannot grow
    // where it lies.
    let end = a.ptr() as usize + a.usable_size();
    // SAFETY: a fresh mapping at an address no one of ours uses (refused,
    // not replaced, if someone does).
    let blocker = unsafe {
        libc::mmap(
            end as *mut libc::c_void,
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(blocker as usize, end, "the page after the mapping was free");
    let mapped = stats().mapped_bytes;
    // SAFETY: live, ours, unused meanwhile.
    let b = unsafe { huge::grow(a, 12 * MIB) }.expect("moved");
    assert_ne!(b.ptr(), a.ptr(), "moved");
    assert_eq!(
        b.ptr() as usize % (2 * MIB),
        4096,
        "a chunk's header page, then the block"
    );
    assert!(stamped(b, 4 * MIB, 0x69), "the pages came along");
    assert!(
        !matches!(lookup(a.ptr()), Lookup::Huge(_)),
        "the old address is no block"
    );
    assert!(matches!(lookup(b.ptr()), Lookup::Huge(h) if h == b));
    assert_eq!(stats().mapped_bytes, mapped + 8 * MIB);
    // SAFETY: the blocker page is ours; the block's last byte is.
    unsafe {
        b.ptr().add(12 * MIB - 1).write(1);
        libc::munmap(blocker, 4096);
    }
    free(b);
    huge::release_cached();
}
