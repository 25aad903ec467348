//! Helpers shared by the tiny-box test files.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use hakmem_tiny_box::{class_size, SmallBackend};

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests that read the process-wide counters run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes a pattern derived from `tag` over the whole block.
pub fn fill(p: *mut u8, class: usize, tag: u64) {
    let n = class_size(class) / 8;
    for i in 0..n {
        // SAFETY: the block is ours and 8-aligned with class_size bytes.
        unsafe {
            p.cast::<u64>()
                .add(i)
                .write(tag ^ (i as u64).wrapping_mul(0x9E37))
        };
    }
}

/// Checks the pattern written by `fill`.
pub fn verify(p: *mut u8, class: usize, tag: u64) {
    let n = class_size(class) / 8;
    for i in 0..n {
        // SAFETY: as in `fill`.
        let v = unsafe { p.cast::<u64>().add(i).read() };
        assert_eq!(
            v,
            tag ^ (i as u64).wrapping_mul(0x9E37),
            "block {p:p} word {i} corrupted"
        );
    }
}

/// Slabs held once every empty slab reachable was given back.
pub fn settled_held<B: SmallBackend>() -> usize {
    B::trim();
    hakmem_superslab::trim();
    hakmem_tiny_box::stats().slabs_held
}

/// Gives back every empty slab and checks none is left held.
pub fn assert_all_returned<B: SmallBackend>(held_before: usize) {
    B::trim();
    hakmem_superslab::trim();
    let s = hakmem_tiny_box::stats();
    assert_eq!(
        s.slabs_held,
        held_before,
        "{}: slabs still held after every block came back",
        B::NAME
    );
}
