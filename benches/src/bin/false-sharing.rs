//! `false-sharing SECONDS OBJECT_SIZE THREADS WRITES`
//!
//! Each thread repeatedly allocates an object of `OBJECT_SIZE` bytes,
//! writes it `WRITES` times, and frees it. Before starting, the main thread
//! allocates one object per thread back to back and hands them out; each
//! thread frees its object first (an allocator that gives that memory to
//! the thread that freed it invites passive false sharing). If objects of
//! different threads share a cache line, the writes make the line bounce
//! between cores and throughput collapses. One op is one object
//! allocated, written `WRITES` times and freed. The line also reports how
//! many pairs of threads were seen writing objects on the same 64-byte
//! line (`shared-lines`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hakmem_benches::args::Args;
use hakmem_benches::{block, print_result, threads};

/// A block handed to another thread.
struct Handed(*mut u8);
// SAFETY: the block is owned by whoever holds the `Handed`; the main
// thread gives it up when it sends it.
unsafe impl Send for Handed {}

fn main() {
    let a = Args::parse("false-sharing SECONDS OBJECT_SIZE THREADS WRITES", 4);
    let seconds = a.get(0, "SECONDS", 1);
    let size = a.get_usize(1, "OBJECT_SIZE", 1);
    let nthreads = a.get_usize(2, "THREADS", 1);
    let writes = a.get_usize(3, "WRITES", 1);

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    // Where each thread's object lay on its first round (0: none yet).
    let seen: Arc<Vec<AtomicUsize>> =
        Arc::new((0..nthreads).map(|_| AtomicUsize::new(0)).collect());
    let handed: Vec<Handed> = (0..nthreads).map(|_| Handed(block::new(size))).collect();

    let start = Instant::now();
    let mut handles = Vec::new();
    for (t, first) in handed.into_iter().enumerate() {
        let (stop, ops, seen) = (Arc::clone(&stop), Arc::clone(&ops), Arc::clone(&seen));
        handles.push(threads::spawn(move || {
            let first = first;
            // SAFETY: the main thread made this block with `size` and gave
            // it up to this thread.
            unsafe { block::free(first.0, size) };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = block::new(size);
                if n == 0 {
                    seen[t].store(p as usize, Ordering::Relaxed);
                }
                for j in 0..writes {
                    // SAFETY: `p` has `size` bytes and `j % size < size`.
                    unsafe { p.add(j % size).write_volatile(j as u8) };
                }
                // SAFETY: `p` was made above with `size` and is given up.
                unsafe { block::free(p, size) };
                n += 1;
            }
            ops.fetch_add(n, Ordering::Relaxed);
        }));
    }
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        threads::join(h);
    }
    let elapsed = start.elapsed();

    let lines: Vec<usize> = seen
        .iter()
        .map(|a| a.load(Ordering::SeqCst) / 64)
        .filter(|&l| l != 0)
        .collect();
    let mut shared = 0;
    for i in 0..lines.len() {
        for j in i + 1..lines.len() {
            shared += usize::from(lines[i] == lines[j]);
        }
    }
    print_result(
        "false-sharing",
        ops.load(Ordering::SeqCst),
        elapsed,
        &format!("threads={nthreads} object={size} writes={writes} shared-lines={shared}"),
    );
}
