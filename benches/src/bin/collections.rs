//! `collections SECONDS THREADS ENTRIES HANDOFF_PERCENT`
//!
//! Bulk build-then-drop with the standard collections, the commonest shape
//! of real Rust programs. `THREADS` threads each repeat rounds; a round
//!
//! 1. builds, `ENTRIES` elements each (from a deterministic per-thread
//!    seed): a `HashMap<String, Vec<u64>>` (formatted keys, vectors of 1-8
//!    numbers grown by `push`), a `BTreeMap<u64, String>`, a `Vec<String>`,
//!    a `HashSet<u64>` and a `VecDeque<Vec<u32>>` used as a sliding work
//!    queue (its old entries popped and dropped as new ones arrive);
//! 2. queries them: lookups by key, range scans of the B-tree, a sort and
//!    binary searches of the names, a few joined strings;
//! 3. drops them all at once, or, for `HANDOFF_PERCENT` % of the rounds
//!    (when `THREADS` > 1), sends the whole bundle over a channel to the
//!    next thread, which drops it at the start of its next round: built on
//!    one thread, freed on another. (A full channel means a local drop.)
//!
//! One op is one entry inserted into one of the five collections (a round
//! is 5 x `ENTRIES` ops, so the rate stays comparable across `ENTRIES`;
//! the inner vectors' elements are not counted); the rounds are printed
//! too.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use hakmem_benches::args::Args;
use hakmem_benches::print_result;
use hakmem_benches::rng::Rng;

/// Stack size of the worker threads.
const STACK_SIZE: usize = 1 << 20;
/// The collections of a [`Bundle`], each given `ENTRIES` entries a round.
const COLLECTIONS: u64 = 5;
/// Bundles that may wait in one thread's channel.
const CHANNEL_DEPTH: usize = 2;

/// Everything one round builds.
struct Bundle {
    by_name: HashMap<String, Vec<u64>>,
    by_id: BTreeMap<u64, String>,
    names: Vec<String>,
    seen: HashSet<u64>,
    queue: VecDeque<Vec<u32>>,
}

impl Bundle {
    /// Step 1: `entries` entries into each of the five collections.
    fn build(rng: &mut Rng, entries: usize) -> Bundle {
        let mut b = Bundle {
            by_name: HashMap::new(),
            by_id: BTreeMap::new(),
            names: Vec::new(),
            seen: HashSet::new(),
            queue: VecDeque::new(),
        };
        let window = (entries / 8).max(1);
        for i in 0..entries {
            let id = rng.next_u64();
            let name = format!("user-{:x}-{i}", id >> 40);
            let mut values = Vec::new();
            for _ in 0..rng.range(1, 8) {
                values.push(rng.next_u64() >> 20);
            }
            b.by_name.insert(name.clone(), values);
            b.by_id.insert(id, format!("{name}@{}", i % 97));
            b.names.push(name);
            b.seen.insert(id >> 24);
            let job: Vec<u32> = (0..rng.range(2, 24) as u32).collect();
            b.queue.push_back(job);
            if b.queue.len() > window {
                black_box(b.queue.pop_front());
            }
        }
        b
    }

    /// Step 2; returns a checksum.
    fn query(&mut self, rng: &mut Rng) -> u64 {
        let n = self.names.len();
        let mut sum = 0u64;
        for _ in 0..n / 2 {
            let name = &self.names[rng.below(n)];
            sum = sum.wrapping_add(self.by_name.get(name).map_or(0, |v| v[0]));
            sum += u64::from(self.seen.contains(&(rng.next_u64() >> 24)));
        }
        for _ in 0..n / 64 {
            let from = rng.next_u64();
            sum += self
                .by_id
                .range(from..)
                .take(8)
                .map(|(_, s)| s.len() as u64)
                .sum::<u64>();
        }
        self.names.sort_unstable();
        for _ in 0..n / 8 {
            let probe = format!("user-{:x}", rng.next_u64() >> 40);
            sum += self.names.binary_search(&probe).unwrap_or_else(|i| i) as u64;
        }
        for chunk in self.names.chunks(256) {
            sum += chunk.join(",").len() as u64;
        }
        sum + self.queue.iter().map(|j| j.len() as u64).sum::<u64>()
    }

    /// Touches a bundle received from another thread before it is dropped.
    fn size(&self) -> usize {
        self.by_name.len()
            + self.by_id.len()
            + self.names.len()
            + self.seen.len()
            + self.queue.len()
    }
}

/// The per-thread loop; returns (elements inserted, rounds, bundles handed
/// to the next thread).
fn work(
    seed: u64,
    entries: usize,
    handoff_percent: usize,
    inbox: Receiver<Bundle>,
    next: Option<SyncSender<Bundle>>,
    stop: &AtomicBool,
) -> (u64, u64, u64) {
    let mut rng = Rng::new(seed);
    let (mut inserted, mut rounds, mut handed) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        // Bundles other threads built are freed here.
        while let Ok(b) = inbox.try_recv() {
            black_box(b.size());
        }
        let mut b = Bundle::build(&mut rng, entries);
        black_box(b.query(&mut rng));
        inserted += COLLECTIONS * entries as u64;
        rounds += 1;
        match &next {
            Some(tx) if rng.below(100) < handoff_percent => {
                if tx.try_send(b).is_ok() {
                    handed += 1;
                }
                // A full or closed channel hands the bundle back in the
                // error, dropped here.
            }
            _ => drop(b),
        }
    }
    (inserted, rounds, handed)
}

fn main() {
    let a = Args::parse("collections SECONDS THREADS ENTRIES HANDOFF_PERCENT", 4);
    let seconds = a.get(0, "SECONDS", 1);
    let nthreads = a.get_usize(1, "THREADS", 1);
    let entries = a.get_usize(2, "ENTRIES", 1);
    let handoff_percent = a.get_usize(3, "HANDOFF_PERCENT", 0).min(100);

    let (senders, receivers): (Vec<_>, Vec<_>) = (0..nthreads)
        .map(|_| sync_channel::<Bundle>(CHANNEL_DEPTH))
        .unzip();
    let stop = AtomicBool::new(false);
    let totals = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
    let start = Instant::now();
    std::thread::scope(|s| {
        for (t, inbox) in receivers.into_iter().enumerate() {
            let next = (nthreads > 1).then(|| senders[(t + 1) % nthreads].clone());
            let (stop, totals) = (&stop, &totals);
            let spawned = std::thread::Builder::new()
                .stack_size(STACK_SIZE)
                .spawn_scoped(s, move || {
                    let r = work(
                        0xC0_0000 + t as u64,
                        entries,
                        handoff_percent,
                        inbox,
                        next,
                        stop,
                    );
                    totals[0].fetch_add(r.0, Ordering::Relaxed);
                    totals[1].fetch_add(r.1, Ordering::Relaxed);
                    totals[2].fetch_add(r.2, Ordering::Relaxed);
                });
            if let Err(e) = spawned {
                eprintln!("error: could not create a thread: {e}");
                std::process::exit(1);
            }
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::SeqCst);
    });
    let elapsed = start.elapsed();
    print_result(
        "collections",
        totals[0].load(Ordering::SeqCst),
        elapsed,
        &format!(
            "threads={nthreads} entries={entries} handoff={handoff_percent}% rounds={} handed_off={}",
            totals[1].load(Ordering::SeqCst),
            totals[2].load(Ordering::SeqCst)
        ),
    );
}
