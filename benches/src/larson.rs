//! Larson's server simulation (Larson & Krishnan, "Memory allocation for
//! long-running server applications", ISMM 1998), written afresh.
//!
//! Each worker owns an array of `chunks` live blocks. It `rounds * chunks`
//! times frees a random slot and puts a new block of random size in
//! `min_size..=max_size` there, writing its first and last byte. Then it
//! hands the array to a new thread and exits, until the time is up. Blocks
//! are thus freed by threads other than the ones that allocated them, and
//! threads come and go all the time.
//!
//! Unlike the C original, every finished thread is joined (by a reaper
//! thread), threads are counted, and a thread that cannot be created stops
//! the run with an error instead of silently ending its chain.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::{block, threads};

/// Larson's seven parameters.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long to run, in seconds.
    pub seconds: u64,
    /// Smallest block size.
    pub min_size: usize,
    /// Largest block size (inclusive).
    pub max_size: usize,
    /// Live blocks per worker array.
    pub chunks: usize,
    /// A worker does `rounds * chunks` free/malloc pairs before handing off.
    pub rounds: usize,
    /// Seed of the random streams.
    pub seed: u64,
    /// Number of worker arrays, hence of concurrent threads.
    pub threads: usize,
}

/// What a run measured.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// Free/malloc pairs done by all workers.
    pub ops: u64,
    /// Threads created, the first `threads` workers included.
    pub threads_created: u64,
    /// Threads joined (equal to `threads_created` after a clean run).
    pub threads_joined: u64,
    /// From the start of the first worker to the end of the last.
    pub elapsed: Duration,
}

/// One worker array: live blocks with their sizes, and a random stream.
struct Heap {
    blocks: Vec<(*mut u8, usize)>,
    rng: Rng,
}

// SAFETY: the blocks are owned by the heap alone; whichever thread holds
// the heap is the only one that touches or frees them.
unsafe impl Send for Heap {}

impl Drop for Heap {
    fn drop(&mut self) {
        for &(p, size) in &self.blocks {
            // SAFETY: each slot holds a live block of this size, owned here.
            unsafe { block::free(p, size) };
        }
    }
}

struct Shared {
    config: Config,
    stop: AtomicBool,
    ops: AtomicU64,
    created: AtomicU64,
}

/// The body of one worker thread; hands the heap on to a successor.
fn work(mut heap: Heap, shared: Arc<Shared>, reaper: Sender<JoinHandle<()>>) {
    let c = shared.config;
    let n = c.chunks * c.rounds;
    let mut done = 0u64;
    for _ in 0..n {
        let i = heap.rng.below(c.chunks);
        let (old, old_size) = heap.blocks[i];
        // SAFETY: slot `i` holds a live block of `old_size`, replaced below.
        unsafe { block::free(old, old_size) };
        let size = heap.rng.range(c.min_size, c.max_size);
        heap.blocks[i] = (block::new(size), size);
        done += 1;
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    shared.ops.fetch_add(done, Ordering::Relaxed);
    if shared.stop.load(Ordering::Relaxed) {
        return; // `heap` is dropped: its blocks are freed here.
    }
    let next_shared = Arc::clone(&shared);
    let next_reaper = reaper.clone();
    match threads::try_spawn(move || work(heap, next_shared, next_reaper)) {
        Some(h) => {
            shared.created.fetch_add(1, Ordering::Relaxed);
            // The reaper lives until every sender is gone, so this succeeds.
            let _ = reaper.send(h);
        }
        // The failure is recorded; stop everyone so the run ends now.
        None => shared.stop.store(true, Ordering::SeqCst),
    }
}

/// Runs Larson with `config` and returns what it measured. Exits the
/// process with a message if a thread cannot be created.
pub fn run(config: Config) -> Outcome {
    let shared = Arc::new(Shared {
        config,
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        created: AtomicU64::new(0),
    });
    // The warm-up: the main thread fills every array, as the original does.
    let heaps: Vec<Heap> = (0..config.threads)
        .map(|t| {
            let mut rng = Rng::new(config.seed.wrapping_add(t as u64));
            let blocks = (0..config.chunks)
                .map(|_| {
                    let size = rng.range(config.min_size, config.max_size);
                    (block::new(size), size)
                })
                .collect();
            Heap { blocks, rng }
        })
        .collect();

    let (tx, rx) = channel::<JoinHandle<()>>();
    let reaper = threads::spawn(move || {
        let mut joined = 0u64;
        for h in rx {
            threads::join(h);
            joined += 1;
        }
        JOINED.store(joined, Ordering::SeqCst);
    });

    let start = Instant::now();
    for heap in heaps {
        let s = Arc::clone(&shared);
        let r = tx.clone();
        let h = threads::spawn(move || work(heap, s, r));
        shared.created.fetch_add(1, Ordering::Relaxed);
        let _ = tx.send(h);
    }
    drop(tx);
    let deadline = start + Duration::from_secs(config.seconds);
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
    shared.stop.store(true, Ordering::SeqCst);
    threads::join(reaper);
    let elapsed = start.elapsed();
    threads::exit_if_spawn_failed();
    Outcome {
        ops: shared.ops.load(Ordering::SeqCst),
        threads_created: shared.created.load(Ordering::SeqCst),
        threads_joined: JOINED.load(Ordering::SeqCst),
        elapsed,
    }
}

static JOINED: AtomicU64 = AtomicU64::new(0);

/// Prints a Larson result line: throughput, threads created and joined.
pub fn report(workload: &str, o: &Outcome) {
    let per_thread = o.ops.checked_div(o.threads_created).unwrap_or(0);
    crate::print_result(
        workload,
        o.ops,
        o.elapsed,
        &format!(
            "threads created={} joined={} ops/thread={per_thread}",
            o.threads_created, o.threads_joined
        ),
    );
}
