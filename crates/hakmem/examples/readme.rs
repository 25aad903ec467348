//! The example of this crate's README.md (`cargo xtask test` checks that
//! the two agree).

use std::collections::HashMap;

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

fn main() {
    // Every allocation of the program now goes through hakmem.
    let words: HashMap<usize, String> = (0..10_000).map(|i| (i, format!("word {i}"))).collect();
    let big = vec![0u8; 8 << 20];
    assert_eq!(words[&42], "word 42");
    drop((words, big));

    // The C-shaped API, as libhakmem.so exports it.
    let p = hakmem::malloc(100);
    assert!(!p.is_null() && hakmem::usable_size(p) >= 100);
    // SAFETY: p came from hakmem::malloc and is not used again.
    unsafe { hakmem::free(p) };

    hakmem::trim();
    let stats = hakmem::stats();
    println!(
        "{}: {} bytes mapped at the peak, {} now",
        hakmem::BUILD_NAME,
        stats.superslab.peak_mapped_bytes,
        stats.superslab.mapped_bytes
    );
}
