//! The example of this crate's README.md (`cargo xtask test` checks that
//! the two agree).

use hakmem_tiny_box::{class_size, size_to_class, SelectedBackend, SmallBackend};

fn main() {
    // A request of 100 bytes is served by a class of at least 100 bytes.
    let class = size_to_class(100);
    assert!(class_size(class) >= 100);

    // One block at a time, freed from any thread.
    let p = SelectedBackend::alloc(class);
    assert!(!p.is_null());
    // SAFETY: a block of class_size(class) bytes, handed out above.
    unsafe { p.write_bytes(0, class_size(class)) };
    let addr = p as usize;
    std::thread::spawn(move || {
        // SAFETY: the block is not used again.
        unsafe { SelectedBackend::free(addr as *mut u8) }
    })
    .join()
    .unwrap();

    // Or a batch, the way the per-thread cache above refills and drains.
    let chain = SelectedBackend::refill(class, 32);
    assert!(!chain.is_empty());
    // SAFETY: every block of the chain is of this class and given up.
    unsafe { SelectedBackend::drain(chain, class) };
    println!("{} backend", <SelectedBackend as SmallBackend>::NAME);
}
