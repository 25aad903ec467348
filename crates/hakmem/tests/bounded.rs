//! Memory goes back by itself: after a phase that allocates and frees
//! 1 GiB of mixed blocks from several threads, what hakmem still maps, and
//! what the process still has resident, is back within a small bound of the
//! baseline — without calling `trim`.
//!
//! The bound (`docs/RELIABILITY.md`): the superslab keeps at most
//! max(2, live/4) empty regions and 16 MiB of free-but-resident slabs; each
//! live thread
//! keeps at most one allocation slab per class; the huge cache keeps at
//! most 8 freed huge mappings, 64 MiB in all.

use std::thread;

const BOUND_MAPPED: usize = 80 << 20;
const BOUND_RESIDENT: usize = 80 << 20;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn a_gigabyte_phase_leaves_memory_within_the_bound() {
    let base_mapped = hakmem::stats().superslab.mapped_bytes;
    let base_rss = resident_bytes();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            thread::spawn(move || {
                let mut seed = t + 1;
                let mut live: Vec<(*mut u8, usize)> = Vec::with_capacity(1 << 16);
                let mut total = 0usize;
                // 256 MiB per thread, live set up to ~64 MiB, then all freed.
                while total < 256 << 20 {
                    let r = xorshift(&mut seed);
                    let size = match r % 50 {
                        0 => (1 << 20) + r as usize % (3 << 20),
                        1..=5 => 16385 + r as usize % (256 << 10),
                        _ => 1 + r as usize % 4096,
                    };
                    let p = hakmem::malloc(size);
                    assert!(!p.is_null());
                    // SAFETY: ours; touch the first and last byte.
                    unsafe {
                        *p = 1;
                        *p.add(size - 1) = 1;
                    }
                    total += size;
                    live.push((p, size));
                    let live_bytes: usize = if live.len().is_multiple_of(256) {
                        live.iter().map(|b| b.1).sum()
                    } else {
                        0
                    };
                    if live_bytes > 64 << 20 {
                        for (q, _) in live.drain(..live.len() / 2) {
                            // SAFETY: live, freed once.
                            unsafe { hakmem::free(q) };
                        }
                    }
                }
                for (q, _) in live {
                    // SAFETY: live, freed once.
                    unsafe { hakmem::free(q) };
                }
                total
            })
        })
        .collect();
    let allocated: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let s = hakmem::stats();
    let mapped = s.superslab.mapped_bytes;
    let rss = resident_bytes();
    eprintln!(
        "after 1 GiB: hakmem maps {} MiB more than before, process resident {} MiB more; \
         peak mapped {} MiB; {:?}",
        mapped.saturating_sub(base_mapped) >> 20,
        rss.saturating_sub(base_rss) >> 20,
        s.superslab.peak_mapped_bytes >> 20,
        s.superslab
    );
    // How far the threads' live sets overlap depends on scheduling (the
    // peak was 194-260 MiB in runs here); what every run guarantees is the
    // 1 GiB in all and one thread's live set past 64 MiB at some point.
    assert!(allocated >= 1 << 30, "the phase was smaller than meant");
    assert!(
        s.superslab.peak_mapped_bytes > 64 << 20,
        "the live set never reached 64 MiB"
    );
    assert!(
        mapped <= base_mapped + BOUND_MAPPED,
        "{mapped} mapped after the phase"
    );
    assert!(
        rss <= base_rss + BOUND_RESIDENT,
        "{rss} resident after the phase"
    );
    hakmem::trim();
    assert_eq!(hakmem::stats().superslab.mapped_bytes, 0);
}
