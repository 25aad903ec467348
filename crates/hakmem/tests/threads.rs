//! Multi-threaded workloads through the facade; afterwards the allocator's
//! own accounting is back where it started and regions went back to the OS.
//!
//! The test harness itself allocates with the system allocator; only the
//! blocks these tests take come from hakmem, so its counters are exact.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::thread;

use hakmem::HakMem;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy)]
struct Blk(usize, usize, u8);

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Mostly small sizes, some large, a few huge.
fn size_of_draw(r: u64) -> usize {
    match r % 100 {
        0 => (2 << 20) + (r as usize >> 8) % (2 << 20),
        1..=4 => 16385 + (r as usize >> 8) % (600 << 10),
        5..=30 => 1025 + (r as usize >> 8) % 15000,
        _ => 1 + (r as usize >> 8) % 1024,
    }
}

fn alloc(size: usize, tag: u8) -> Blk {
    let p = hakmem::malloc(size);
    assert!(!p.is_null());
    // SAFETY: ours, `size` bytes.
    unsafe { std::ptr::write_bytes(p, tag, size) };
    Blk(p as usize, size, tag)
}

fn free(b: Blk) {
    // SAFETY: written at alloc.
    let bytes = unsafe { std::slice::from_raw_parts(b.0 as *const u8, b.1) };
    // Every byte of small blocks; a sample (ends and a stride) of big ones.
    let stride = if b.1 > 8192 { 61 } else { 1 };
    let ok = bytes.iter().step_by(stride).all(|&x| x == b.2) && bytes[b.1 - 1] == b.2;
    assert!(ok, "block {:#x} corrupted", b.0);
    // SAFETY: a live block, freed once.
    unsafe { hakmem::free(b.0 as *mut u8) };
}

/// Everything went back: no slab, run or huge block in use, no region
/// mapped, no byte mapped but the permanent metadata.
fn assert_everything_returned() {
    hakmem::trim();
    let s = hakmem::stats();
    assert_eq!(s.tiny_box.slabs_held, 0, "{s:#?}");
    assert_eq!(s.superslab.slabs_in_use, 0, "{s:#?}");
    assert_eq!(s.superslab.runs_in_use, 0, "{s:#?}");
    assert_eq!(s.superslab.huge_in_use, 0, "{s:#?}");
    assert_eq!(
        s.superslab.regions_live, 0,
        "regions not returned to the OS: {s:#?}"
    );
    assert_eq!(s.superslab.mapped_bytes, 0, "{s:#?}");
}

#[test]
fn producer_consumer_frees_come_back() {
    let _g = serial();
    let (tx, rx) = mpsc::sync_channel::<Vec<Blk>>(16);
    let producers: Vec<_> = (0..2)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut seed = 0x1234_5678 + t;
                for _ in 0..300 {
                    let batch = (0..50)
                        .map(|i| alloc(size_of_draw(xorshift(&mut seed)), i as u8))
                        .collect();
                    tx.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = thread::spawn(move || rx.into_iter().flatten().map(free).count());
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 2 * 300 * 50);
    assert_everything_returned();
}

#[test]
fn thousands_of_short_lived_threads_lose_nothing() {
    let _g = serial();
    let before = hakmem::stats();
    let mut handed: Vec<Blk> = Vec::new();
    for t in 0..3000u64 {
        let incoming = std::mem::take(&mut handed);
        handed = thread::spawn(move || {
            incoming.into_iter().for_each(free);
            let mut seed = t * 7919 + 1;
            let mut mine: Vec<Blk> = (0..30)
                .map(|i| alloc(1 + xorshift(&mut seed) as usize % 2000, i as u8))
                .collect();
            let keep = mine.split_off(15);
            mine.into_iter().for_each(free);
            keep
        })
        .join()
        .unwrap();
    }
    handed.into_iter().for_each(free);
    let after = hakmem::stats();
    assert!(
        after.superslab.peak_mapped_bytes <= before.superslab.peak_mapped_bytes.max(8 << 20),
        "thread churn grew the footprint: {after:#?}"
    );
    assert_everything_returned();
}

#[test]
fn all_classes_all_threads_at_once() {
    let _g = serial();
    let threads = 4;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<Vec<Blk>>()).unzip();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let txs = txs.clone();
            thread::spawn(move || {
                let mut seed = t as u64 + 99;
                for round in 0..30 {
                    // One block of every small class, plus some large ones.
                    let mut blocks: Vec<Blk> = (0..hakmem_tiny_box::NUM_CLASSES)
                        .map(|c| alloc(hakmem_tiny_box::class_size(c), (round + c) as u8))
                        .collect();
                    blocks.push(alloc(size_of_draw(xorshift(&mut seed)), 7));
                    txs[(t + 1) % threads].send(blocks).unwrap();
                    for theirs in rx.try_iter() {
                        theirs.into_iter().for_each(free);
                    }
                }
                drop(txs);
                rx
            })
        })
        .collect();
    drop(txs);
    // Join every thread before draining: a receiver must outlive its senders.
    let rxs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for rx in rxs {
        rx.try_iter().flatten().for_each(free);
    }
    assert_everything_returned();
}

#[test]
fn rust_layouts_across_threads() {
    let _g = serial();
    let (tx, rx) = mpsc::channel::<Vec<(usize, Layout)>>();
    let producer = thread::spawn(move || {
        for round in 0..200usize {
            let v = (0..40)
                .map(|i| {
                    let l =
                        Layout::from_size_align(1 + (round * 37 + i * 101) % 5000, 1 << (i % 8))
                            .unwrap();
                    // SAFETY: non-zero size.
                    let p = unsafe { HakMem.alloc(l) };
                    assert!(!p.is_null() && (p as usize).is_multiple_of(l.align()));
                    // SAFETY: ours.
                    unsafe { p.write_bytes(i as u8, l.size()) };
                    (p as usize, l)
                })
                .collect();
            tx.send(v).unwrap();
        }
    });
    let consumer = thread::spawn(move || {
        for v in rx {
            for (p, l) in v {
                // SAFETY: allocated with this layout by the producer.
                unsafe {
                    let q = HakMem.realloc(p as *mut u8, l, l.size() * 2);
                    assert!(!q.is_null());
                    HakMem.dealloc(q, Layout::from_size_align(l.size() * 2, l.align()).unwrap());
                }
            }
        }
    });
    producer.join().unwrap();
    consumer.join().unwrap();
    assert_everything_returned();
}

#[test]
fn more_slabs_than_ten_regions_hold() {
    let _g = serial();
    // 16 KiB blocks: four to a slab, so 10 regions (310 slabs) take 1240.
    let blocks: Vec<Blk> = (0..1600)
        .map(|i| alloc(hakmem::SMALL_REQUEST_MAX, i as u8))
        .collect();
    // And large runs of 3 slabs: ten to a region (hardened builds map
    // each large block on its own, between guard pages).
    let runs: Vec<Blk> = (0..120).map(|i| alloc(3 << 16, i as u8)).collect();
    let s = hakmem::stats().superslab;
    if cfg!(feature = "secure") {
        assert!(s.regions_live >= 12 && s.huge_in_use >= 120, "{s:?}");
    } else {
        assert!(s.regions_live >= 20, "{s:?}");
    }
    blocks.into_iter().chain(runs).for_each(free);
    assert_everything_returned();
}
