//! The thread's table of its own slabs (`own_block`, `free_remembering`):
//! an entry is made by a free of a block of one of the thread's slabs, and
//! leaves when the slab is given back, when the heap is abandoned and when
//! the slab is another thread's; what it knows is exactly the block starts
//! of its slab.

use std::sync::{Mutex, MutexGuard};
use std::thread;

use hakmem_fastcache::{flush_thread, free_remembering, own_block, OWN_SLABS};
use hakmem_superslab::{small_slab_of, SLAB_SIZE};
use hakmem_tiny_box::{class_size, size_class, SelectedBackend, SmallBackend, NUM_CLASSES};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The legacy backend's slabs have no owner, so nothing enters a table;
/// and only caches behind the initial-exec slot have one (feature
/// `initial-exec-tls`, which the workspace's test run gets from
/// `hakmem-preload`).
fn tables_are_kept() -> bool {
    SelectedBackend::NAME == "box" && OWN_SLABS > 0
}

/// Frees `p` (of `class`) the long way, as the facade's `free` does for a
/// pointer its thread's table does not know.
fn free_the_long_way(p: *mut u8, class: usize) {
    let slab = small_slab_of(p).expect("a small block's slab");
    let (found, owner) = hakmem_tiny_box::block_of(slab, p).expect("a block start");
    assert_eq!(found, class);
    // SAFETY: a live block of `slab`, in use, of this class and owner,
    // given up here.
    unsafe { free_remembering(p, class, owner, slab) };
}

/// The class of the block starting at `addr` when its slab is one of this
/// thread's, by the registry and the slab's record.
fn slab_says(addr: usize) -> Option<usize> {
    let slab = small_slab_of(addr as *const u8)?;
    let (class, owner) = hakmem_tiny_box::block_of(slab, addr as *const u8)?;
    (owner == SelectedBackend::owner_token()).then_some(class)
}

#[test]
fn a_free_enters_the_slab_and_the_entry_knows_exactly_its_block_starts() {
    if !tables_are_kept() {
        return;
    }
    let _g = serial();
    thread::spawn(|| {
        for class in [0, 5, 17, 40, NUM_CLASSES - 1] {
            let size = class_size(class);
            let p = hakmem_fastcache::alloc(class);
            let q = hakmem_fastcache::alloc(class);
            assert!(!p.is_null() && !q.is_null());
            let base = p as usize & !(SLAB_SIZE - 1);
            free_the_long_way(q, class);
            if q as usize & !(SLAB_SIZE - 1) != base {
                continue; // (the two came from different slabs)
            }
            // Every block start of the slab, and nothing else in it.
            let capacity = size_class::blocks_per_slab(class);
            for offset in (0..SLAB_SIZE).step_by(8) {
                let want = offset % size == 0 && offset / size < capacity;
                let got = own_block((base + offset) as *const u8).map(|b| b.class());
                assert_eq!(got, want.then_some(class), "class {class} offset {offset}");
            }
            // Unaligned pointers inside the first block are no block's.
            for addr in [base + 1, base + 7] {
                assert!(own_block(addr as *const u8).is_none(), "{addr:#x}");
            }
            // The slab's neighbours share no entry with it: what the table
            // says of them is what their own slabs say.
            for addr in [base - 16, base + SLAB_SIZE] {
                assert_eq!(
                    own_block(addr as *const u8).map(|b| b.class()),
                    slab_says(addr)
                );
            }
            // SAFETY: a live block of this class, given up.
            unsafe { hakmem_fastcache::free(p, class) };
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_slab_given_back_leaves_the_table() {
    if !tables_are_kept() {
        return;
    }
    let _g = serial();
    thread::spawn(|| {
        let class = 30;
        let capacity = size_class::blocks_per_slab(class);
        // Enough blocks for several slabs, every one then freed the long
        // way, so that each of their slabs is in the table.
        let blocks: Vec<*mut u8> = (0..4 * capacity)
            .map(|_| hakmem_fastcache::alloc(class))
            .collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        for &p in &blocks {
            free_the_long_way(p, class);
        }
        assert!(blocks.iter().any(|&p| own_block(p).is_some()));
        // Every block back to its slab, every empty slab back to the
        // superslab.
        flush_thread();
        SelectedBackend::trim();
        let mut released = 0;
        for &p in &blocks {
            if small_slab_of(p).is_none() {
                released += 1;
                assert!(
                    own_block(p).is_none(),
                    "{p:?}: a released slab's entry stayed"
                );
            }
        }
        assert!(released > 0, "no slab was given back");
    })
    .join()
    .unwrap();
}

#[test]
fn an_abandoned_heaps_slabs_are_in_no_table_and_other_threads_slabs_never_enter() {
    if !tables_are_kept() {
        return;
    }
    let _g = serial();
    let class = 12;
    // Another thread's blocks, freed here while it lives: its slab is not
    // this thread's, so nothing enters this thread's table.
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let owner = thread::spawn(move || {
        let p = hakmem_fastcache::alloc(class);
        let q = hakmem_fastcache::alloc(class);
        free_the_long_way(q, class);
        // The owner's own table knows its slab.
        assert!(own_block(p).is_some());
        tx.send(p as usize).unwrap();
        done_rx.recv().unwrap();
    });
    let p = rx.recv().unwrap();
    thread::spawn(move || {
        let p = p as *mut u8;
        free_the_long_way(p, class);
        assert!(
            own_block(p).is_none(),
            "another thread's slab entered the table"
        );
        flush_thread();
    })
    .join()
    .unwrap();
    done_tx.send(()).unwrap();
    owner.join().unwrap();

    // A thread that exits with live blocks abandons its slabs; the thread
    // that adopts one enters it only by its own frees, and a thread that
    // reuses the exited thread's cache starts with an empty table.
    let live = thread::spawn(move || {
        let blocks: Vec<usize> = (0..8)
            .map(|_| hakmem_fastcache::alloc(class) as usize)
            .collect();
        free_the_long_way(blocks[0] as *mut u8, class);
        assert!(own_block(blocks[1] as *const u8).is_some());
        blocks
    })
    .join()
    .unwrap();
    thread::spawn(move || {
        for &p in &live[1..] {
            assert!(own_block(p as *const u8).is_none(), "{p:#x}");
        }
        // Adopted or not, freeing them here is sound.
        for &p in &live[1..] {
            free_the_long_way(p as *mut u8, class);
        }
        flush_thread();
    })
    .join()
    .unwrap();
}

/// What every entry must stay true to: a pointer the table knows is a
/// block start of one of the thread's slabs, of the class it says.
fn table_agrees(addrs: &[usize]) {
    for &addr in addrs {
        if let Some(b) = own_block(addr as *const u8) {
            assert_eq!(Some(b.class()), slab_says(addr), "{addr:#x}");
        }
    }
}

#[test]
fn entries_stay_true_through_random_allocations_frees_flushes_and_trims() {
    if !tables_are_kept() {
        return;
    }
    let _g = serial();
    let workers: Vec<_> = (0..2u64)
        .map(|seed| {
            thread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let mut live: Vec<(usize, usize)> = Vec::new();
                let mut freed: Vec<usize> = Vec::new();
                for step in 0..20_000 {
                    let r = next();
                    if live.len() < 64 || r % 3 != 0 {
                        let class = (r >> 8) as usize % NUM_CLASSES;
                        let p = hakmem_fastcache::alloc(class);
                        assert!(!p.is_null());
                        live.push((p as usize, class));
                    } else {
                        let (p, class) = live.swap_remove((r >> 8) as usize % live.len());
                        free_the_long_way(p as *mut u8, class);
                        freed.push(p);
                    }
                    match step % 2_000 {
                        999 => flush_thread(),
                        1_999 => {
                            flush_thread();
                            SelectedBackend::trim();
                        }
                        _ => {}
                    }
                    if step % 97 == 0 {
                        let known: Vec<usize> = live.iter().map(|&(p, _)| p).collect();
                        table_agrees(&known);
                        table_agrees(&freed[freed.len().saturating_sub(256)..]);
                    }
                }
                for (p, class) in live {
                    free_the_long_way(p as *mut u8, class);
                }
                flush_thread();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}
