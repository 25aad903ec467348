//! The example of this crate's README.md (`cargo xtask test` checks that
//! the two agree).

use hakmem_fastcache as fastcache;
use hakmem_tiny_box::{class_size, size_to_class};

fn main() {
    fastcache::init();
    let class = size_to_class(48);

    // The first allocation of a class refills this thread's list with a
    // batch from tiny-box; the next ones pop it.
    let p = fastcache::alloc(class);
    assert!(!p.is_null());
    // SAFETY: a block of class_size(class) bytes, handed out above.
    unsafe { p.write_bytes(0, class_size(class)) };
    // SAFETY: a block of this class, not used again.
    unsafe { fastcache::free(p, class) };
    // The list is last in, first out: the block just freed comes back.
    assert_eq!(fastcache::alloc(class), p);
    // SAFETY: as above.
    unsafe { fastcache::free(p, class) };

    let hits = fastcache::class_stats()[class].hits;
    let cached = fastcache::cached_counts()[class];
    println!("{hits} hit(s), {cached} block(s) cached");
    // Hands every cached block back (thread exit does the same).
    fastcache::flush_thread();
}
