//! `prodcons SECONDS BLOCK_SIZE BATCH PAIRS`
//!
//! Producer/consumer: in each of `PAIRS` pairs, the producer allocates
//! blocks of `BLOCK_SIZE` bytes, writes them, and passes them in batches of
//! `BATCH` through a lock-free single-producer single-consumer ring to its
//! consumer, which frees them. Every block is freed by a thread other than
//! the one that allocated it: the remote-free path. One op is one block
//! allocated, passed and freed.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hakmem_benches::args::Args;
use hakmem_benches::{block, print_result, threads};

/// Ring capacity in blocks (a power of two).
const CAPACITY: usize = 4096;

/// A counter alone on its cache lines, so that head and tail do not
/// falsely share.
#[repr(align(128))]
struct Padded(AtomicUsize);

/// A bounded single-producer single-consumer ring of block pointers. The
/// producer owns `tail`, the consumer `head`; slots between them are full.
struct Ring {
    slots: Box<[AtomicPtr<u8>]>,
    head: Padded,
    tail: Padded,
    producer_done: AtomicBool,
}

impl Ring {
    fn new() -> Self {
        Ring {
            slots: (0..CAPACITY).map(|_| AtomicPtr::default()).collect(),
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
            producer_done: AtomicBool::new(false),
        }
    }
}

/// Waits a little: spins first, then yields (the machine may have fewer
/// cores than threads).
fn backoff(spins: &mut u32) {
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
    *spins += 1;
}

fn produce(ring: &Ring, stop: &AtomicBool, size: usize, batch: usize) {
    let mut tail = ring.tail.0.load(Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        let mut spins = 0;
        while tail + batch - ring.head.0.load(Ordering::Acquire) > CAPACITY {
            if stop.load(Ordering::Relaxed) {
                ring.producer_done.store(true, Ordering::Release);
                return;
            }
            backoff(&mut spins);
        }
        for i in 0..batch {
            let p = block::new(size);
            ring.slots[(tail + i) % CAPACITY].store(p, Ordering::Relaxed);
        }
        tail += batch;
        ring.tail.0.store(tail, Ordering::Release);
    }
    ring.producer_done.store(true, Ordering::Release);
}

fn consume(ring: &Ring, size: usize) -> u64 {
    let mut head = ring.head.0.load(Ordering::Relaxed);
    let mut freed = 0u64;
    let mut spins = 0;
    loop {
        // Read `done` before `tail`: if the producer was done, `tail` is final.
        let done = ring.producer_done.load(Ordering::Acquire);
        let tail = ring.tail.0.load(Ordering::Acquire);
        if tail == head {
            if done {
                return freed;
            }
            backoff(&mut spins);
            continue;
        }
        spins = 0;
        for i in head..tail {
            let p = ring.slots[i % CAPACITY].load(Ordering::Relaxed);
            // SAFETY: the producer published this block (Release on `tail`,
            // Acquire above) and gave it up; it has `size` bytes.
            unsafe { block::free(p, size) };
        }
        freed += (tail - head) as u64;
        head = tail;
        ring.head.0.store(head, Ordering::Release);
    }
}

fn main() {
    let a = Args::parse("prodcons SECONDS BLOCK_SIZE BATCH PAIRS", 4);
    let seconds = a.get(0, "SECONDS", 1);
    let size = a.get_usize(1, "BLOCK_SIZE", 1);
    let batch = a.get_usize(2, "BATCH", 1).min(CAPACITY);
    let pairs = a.get_usize(3, "PAIRS", 1);

    let stop = Arc::new(AtomicBool::new(false));
    let freed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..pairs {
        let ring = Arc::new(Ring::new());
        let (r, s) = (Arc::clone(&ring), Arc::clone(&stop));
        handles.push(threads::spawn(move || produce(&r, &s, size, batch)));
        let f = Arc::clone(&freed);
        handles.push(threads::spawn(move || {
            f.fetch_add(consume(&ring, size), Ordering::Relaxed);
        }));
    }
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        threads::join(h);
    }
    let elapsed = start.elapsed();
    print_result(
        "prodcons",
        freed.load(Ordering::SeqCst),
        elapsed,
        &format!("pairs={pairs} block={size} batch={batch}"),
    );
}
