//! tiny-box alone: a batch of blocks taken (`refill(class, n)`) and given
//! back (`drain(chain)`), for the box and the legacy backend, as the
//! fast cache above does it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hakmem_tiny_box::{size_to_class, BoxBackend, LegacyBackend, SmallBackend};

const BATCHES: [usize; 2] = [16, 64];

fn refill_drain<B: SmallBackend>(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("tiny-box/{}/refill+drain", B::NAME));
    for size in [16, 256] {
        let class = size_to_class(size);
        for n in BATCHES {
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(format!("{size}B"), n), &n, |b, &n| {
                b.iter(|| {
                    let chain = B::refill(black_box(class), n);
                    assert!(!chain.is_empty(), "out of memory");
                    // SAFETY: the chain came from this backend, one class,
                    // and nothing holds its blocks.
                    unsafe { B::drain(black_box(chain), class) };
                })
            });
        }
    }
    g.finish();
}

fn backends(c: &mut Criterion) {
    refill_drain::<BoxBackend>(c);
    refill_drain::<LegacyBackend>(c);
}

criterion_group!(benches, backends);
criterion_main!(benches);
