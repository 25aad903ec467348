/* c-large SECONDS THREADS SLOTS MIN_SIZE MAX_SIZE SEED
 *
 * Big buffers used whole, the way decoders, compressors and linkers use
 * them: each of THREADS threads keeps SLOTS live buffers of sizes drawn
 * uniformly in MIN_SIZE..=MAX_SIZE (megabytes, far above any size class)
 * and over and over replaces a random one: frees it, mallocs a new size
 * and writes one byte in every 4 KiB of it, so that every page of the
 * buffer is used. What decides the speed is the memory under the blocks:
 * whether freed mappings are reused, and how many page faults (and TLB
 * misses) a fresh one costs. One op is one buffer replaced. */
#include "bench.h"

#include <stdatomic.h>

#define PAGE 4096

struct worker {
    bench_thread t; /* first: bench_run's part */
};

static size_t slots, min_size, max_size;
static uint64_t seed;
static pthread_barrier_t start;
static atomic_int stop;

static void raise_stop(void) { atomic_store(&stop, 1); }

/* Writes one byte in every page of the `size` bytes at `p`, and the last. */
static void use_whole(unsigned char *p, size_t size, unsigned char byte) {
    for (size_t at = 0; at < size; at += PAGE) {
        p[at] = byte;
    }
    p[size - 1] = byte;
}

static void *work(void *arg) {
    struct worker *w = (struct worker *)arg;
    bench_rng rng = bench_rng_new(seed + w->t.index);
    unsigned char **bufs = (unsigned char **)calloc(slots, sizeof *bufs);
    if (bufs == NULL) {
        bench_oom(slots * sizeof *bufs);
    }
    pthread_barrier_wait(&start);
    uint64_t ops = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        size_t k = bench_below(&rng, slots);
        free(bufs[k]);
        size_t size = bench_range(&rng, min_size, max_size);
        bufs[k] = (unsigned char *)malloc(size);
        if (bufs[k] == NULL) {
            bench_oom(size);
        }
        use_whole(bufs[k], size, (unsigned char)ops);
        ops++;
    }
    for (size_t i = 0; i < slots; i++) {
        free(bufs[i]);
    }
    free(bufs);
    w->t.ops = ops;
    return NULL;
}

int main(int argc, char **argv) {
    bench_args(argc, argv, 6, "c-large SECONDS THREADS SLOTS MIN_SIZE MAX_SIZE SEED");
    double seconds = bench_seconds(argv);
    unsigned threads = (unsigned)bench_u64(argv, 1, "THREADS", 1);
    slots = bench_u64(argv, 2, "SLOTS", 1);
    min_size = bench_u64(argv, 3, "MIN_SIZE", 1);
    max_size = bench_u64(argv, 4, "MAX_SIZE", min_size);
    seed = bench_u64(argv, 5, "SEED", 0);

    struct worker *ws = (struct worker *)calloc(threads, sizeof *ws);
    if (ws == NULL) {
        bench_oom(threads * sizeof *ws);
    }
    uint64_t ops;
    double elapsed = bench_run(threads, ws, sizeof *ws, work, &start, raise_stop, seconds, &ops);
    char extra[160];
    snprintf(extra, sizeof extra, "threads=%u slots=%zu sizes=%zu..=%zu", threads, slots,
             min_size, max_size);
    bench_result("c-large", ops, elapsed, extra);
    free(ws);
    return 0;
}
