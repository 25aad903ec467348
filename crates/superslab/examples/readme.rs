//! The example of this crate's README.md (`cargo xtask test` checks that
//! the two agree).

use hakmem_superslab::{alloc_run, alloc_slab, free_run, lookup, Lookup, SLAB_SIZE};

fn main() {
    // One 64 KiB slab, for a layer above to cut into small blocks.
    let slab = alloc_slab().expect("the OS refused a mapping").slab;
    let base = slab.base();
    // SAFETY: the slab is ours, SLAB_SIZE bytes from its base.
    unsafe { base.write_bytes(0xa5, SLAB_SIZE) };
    // Any address inside it leads back to it, without touching memory.
    assert_eq!(lookup(base.wrapping_add(100)), Lookup::Slab(slab));

    // A large block: a run of 4 contiguous slabs, found by its first byte.
    let run = alloc_run(4).expect("the OS refused a mapping").slab;
    assert_eq!(lookup(run.base()), Lookup::Run(run));
    assert_eq!(lookup(&0u8), Lookup::Foreign);

    // SAFETY: both came from alloc_slab/alloc_run and nothing in them is
    // in use any more.
    unsafe {
        free_run(slab);
        free_run(run);
    }
}
